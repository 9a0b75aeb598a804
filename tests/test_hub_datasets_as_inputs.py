"""Datasets of other publishers (Parquet on the Hub, with an image column and a label-map column in label ids or
train ids, under their own names) as inputs: written here in that layout from the synthetic pair, they give the
same rows, labels and scores as the dataset built by this project."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from modeling_intrada.data.datasets import (
    ColumnLayout,
    build_segmentation_dataset,
    is_built_dataset,
    load_split,
)
from modeling_intrada.evaluation.evaluator import main as evaluate_main
from modeling_intrada.evaluation.segmentation import EvaluationSplit
from modeling_intrada.labels import CITYSCAPES_LABEL_ID_TO_TRAIN_ID

TRAIN_ID_TO_LABEL_ID = np.full(256, 0, np.uint8)  # 0 "unlabeled", an ignored label id
for label_id, train_id in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
    if 0 <= train_id < 19:
        TRAIN_ID_TO_LABEL_ID[train_id] = label_id

LAYOUT = ColumnLayout(
    image_column="img", label_column="semantic_segmentation", label_ids="cityscapes_label_ids"
)


def write_in_hub_layout(built, folder, config, split):
    """The built split re-written as another publisher would: `data/<split>-*.parquet`, columns `img` and
    `semantic_segmentation` (Cityscapes label ids), no `id`, no label_space.json."""
    rows = load_split(built, config, split)
    labels = [TRAIN_ID_TO_LABEL_ID[np.asarray(label)] for label in rows["label"]]
    table = datasets.Dataset.from_dict(
        {"img": rows["image"], "semantic_segmentation": [datasets.Image().encode_example(a) for a in labels]},
        features=datasets.Features({"img": datasets.Image(), "semantic_segmentation": datasets.Image()}),
    )
    (folder / "data").mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))


@pytest.fixture(scope="module")
def hub_layout(tiny, tmp_path_factory):
    _, built = tiny
    folder = tmp_path_factory.mktemp("hub_layout")
    write_in_hub_layout(built, folder, "target_val", "validation")
    return built, folder


def test_rows_and_labels_equal_the_built_dataset(hub_layout):
    built, folder = hub_layout
    assert is_built_dataset(built) and not is_built_dataset(folder)
    ours = build_segmentation_dataset(
        built, "target_val", "validation", size=(32, 64), normalization="imagenet"
    )
    theirs = build_segmentation_dataset(
        folder, "default", "validation", size=(32, 64), normalization="imagenet", layout=LAYOUT
    )
    assert len(ours) == len(theirs) == 4
    for i in range(len(ours)):
        a, b = ours[i], theirs[i]
        assert b["id"] == f"validation_{i:06d}"
        assert np.array_equal(a["pixel_values"].numpy(), b["pixel_values"].numpy())
        assert np.array_equal(a["labels"].numpy(), b["labels"].numpy())  # label ids -> train ids, 255 kept
    evaluation = EvaluationSplit(folder, "default", "validation", (32, 64), "imagenet", layout=LAYOUT)
    assert np.array_equal(evaluation[0]["labels"].numpy(), ours[0]["labels"].numpy())


def test_unknown_columns_and_codings_are_refused():
    with pytest.raises(ValueError, match="label_ids must be one of"):
        ColumnLayout(label_ids="label_map")
    table = datasets.Dataset.from_dict({"picture": [0]})
    with pytest.raises(ValueError, match="--image_column_name"):
        ColumnLayout(image_column="img").adapt(table, "train")


def test_evaluate_miou_on_a_hub_layout_dataset_scores_as_on_the_built_one(tiny, hub_layout, tmp_path):
    run_dir, _ = tiny
    built, folder = hub_layout
    model = str(run_dir / "intra" / "model")
    common = ["--model", model, "--num_pictures", "0", "--num_workers", "0", "--batch_size", "4"]
    ours = evaluate_main(
        [*common, "--dataset", str(built), "--dataset_config", "target_val", "--split", "validation",
         "--output_dir", str(tmp_path / "ours")]
    )  # fmt: skip
    theirs = evaluate_main(
        [*common, "--dataset", str(folder), "--dataset_config", "default", "--split", "validation",
         "--image_column_name", "img", "--label_column_name", "semantic_segmentation",
         "--label_ids", "cityscapes_label_ids", "--output_dir", str(tmp_path / "theirs")]
    )  # fmt: skip
    matrix = ours["results"]["model"]["confusion_matrix"]
    assert theirs["results"]["model"]["confusion_matrix"] == matrix and np.sum(matrix) > 0
    assert (
        theirs["results"]["model"]["scores"]["19"]["mean_iou"]
        == ours["results"]["model"]["scores"]["19"]["mean_iou"]
    )


def test_training_reads_a_hub_layout_source(tiny, tmp_path):
    import json

    from tiny_run import tiny_run_arguments

    from modeling_intrada.training.pipeline import main

    _, built = tiny
    source = tmp_path / "gta5_like"
    write_in_hub_layout(built, source, "source", "train")
    options = ["--source_dataset", str(source), "--source_config", "default", "--image_column_name", "img"]
    options += ["--label_column_name", "semantic_segmentation", "--label_ids", "cityscapes_label_ids"]
    options += ["--stage", "inter", "--num_iterations", "1", "--checkpointing_steps", "1"]
    main([*tiny_run_arguments(tmp_path / "run", built), *options])
    state = json.loads(
        (tmp_path / "run" / "inter" / "checkpoints" / "checkpoint-1" / "loop_state.json").read_text()
    )
    assert state["iteration"] == 1
