"""training/evaluate_miou.py: full-resolution mIoU against an independent computation, protocols, label
mapping, pictures, snapshot selection (last / min_entropy / best_val) and two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_run import TINY_BACKBONE

from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation, DeepLabV2ImageProcessor
from modeling_intrada.data.datasets import load_split
from modeling_intrada.evaluation.evaluator import (
    find_snapshots,
    label_mapping,
    main,
    parse_arguments,
    resolve_dataset,
)
from modeling_intrada.evaluation.segmentation import EvaluationSplit, mean_entropy
from modeling_intrada.labels import (
    CITYSCAPES,
    CITYSCAPES_TO_SYNTHIA_16,
    SYNTHIA_16,
    SYNTHIA_16_TO_13,
    build_lut,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


# A real tiny run of run_intrada.py (`tiny`, from conftest), on one torch thread.
pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_confusion(model_dir: Path, data: Path, size: tuple[int, int], num_labels: int, table=None):
    """Confusion matrix the plain way: processor -> model -> interpolate to the label size -> numpy bincount."""
    model = DeepLabV2ForSemanticSegmentation.from_pretrained(model_dir).eval()
    processor = DeepLabV2ImageProcessor.from_pretrained(model_dir)
    rows = load_split(data, "target_val", "validation")
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    for row in rows:
        label = np.asarray(row["label"], dtype=np.int64)
        if table is not None:
            label = table[label]
        inputs = processor(
            row["image"].convert("RGB"), size={"height": size[0], "width": size[1]}, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = model(**inputs).logits
        logits = F.interpolate(logits, size=label.shape, mode="bilinear", align_corners=True)
        prediction = logits.argmax(1)[0].numpy()
        valid = label != 255
        confusion += np.bincount(
            num_labels * label[valid] + prediction[valid], minlength=num_labels**2
        ).reshape(num_labels, num_labels)
    return confusion


def test_model_at_full_label_resolution_matches_a_plain_computation(tiny, tmp_path):
    run_dir, data = tiny
    model_dir = run_dir / "intra" / "model"
    out = tmp_path / "eval"
    # A 16x32 input for 32x64 labels: the logits must be upsampled to the label size, not the labels shrunk.
    document = main(
        [
            "--model", str(model_dir),
            "--dataset", str(data), "--dataset_config", "target_val", "--split", "validation",
            "--input_size", "16", "32",
            "--num_pictures", "2", "--num_workers", "0", "--batch_size", "3",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(document))
    result = written["results"]["model"]
    assert result["selection"] == "given" and result["selected_with_validation_labels"] is False
    confusion = np.asarray(result["confusion_matrix"])
    reference = _reference_confusion(model_dir, data, (16, 32), 19)
    np.testing.assert_array_equal(confusion, reference)
    labels = [np.asarray(r["label"]) for r in load_split(data, "target_val", "validation")]
    assert confusion.sum() == sum(int((label != 255).sum()) for label in labels)  # every labelled pixel once

    diag, rows, cols = np.diag(reference), reference.sum(1), reference.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = diag / (rows + cols - diag)
    scores = result["scores"]["19"]
    assert scores["mean_iou"] == pytest.approx(np.nanmean(iou), abs=1e-12)
    assert written["protocols"] == ["19"]
    assert written["dataset"]["num_images"] == 4 and written["dataset"]["input_size"] == [16, 32]

    table = (out / "results.md").read_text()
    assert "| road |" in table.replace("|  | road |", "| road |") and "mIoU (19)" in table
    pictures = sorted((out / "predictions" / "model").glob("*.png"))
    assert [p.name[:4] for p in pictures] == ["0000", "0001"]
    panel = np.asarray(Image.open(pictures[0]))
    assert panel.shape == (32, 3 * 64, 3)  # image | prediction | ground truth, at label resolution


def test_same_model_same_data_as_the_run_eval_stage(tiny, tmp_path):
    run_dir, data = tiny
    stage_results = json.loads((run_dir / "eval" / "metrics.json").read_text())
    ours = main(
        ["--model", str(run_dir / "inter" / "model"), "--dataset", str(data), "--dataset_config", "target_val",
         "--num_workers", "0", "--num_pictures", "0", "--output_dir", str(tmp_path)]
    )  # fmt: skip
    expected = stage_results["results"]["G_inter"]["scores"]["19"]["mean_iou"]
    assert ours["results"]["model"]["scores"]["19"]["mean_iou"] == pytest.approx(expected, abs=1e-12)


def test_snapshot_selection_rules(tiny, tmp_path):
    run_dir, data = tiny
    out = tmp_path / "selection"
    document = main(
        ["--snapshots_dir", str(run_dir / "inter" / "snapshots"), "--selection", "min_entropy", "best_val",
         "--num_workers", "0", "--num_pictures", "1", "--batch_size", "2", "--output_dir", str(out)]
    )  # fmt: skip
    results, snapshots = document["results"], document["snapshots"]
    assert list(results) == ["last", "min_entropy", "best_val"]
    assert [s["iteration"] for s in snapshots] == [1, 2]  # final model = last snapshot (DONE says 2)
    # The run's config.yaml supplies the validation split (dataset) and the unlabelled target images.
    assert document["dataset"]["config"] == "target_val" and document["dataset"]["num_images"] == 4

    assert results["last"]["iteration"] == 2 and results["last"]["selected_with_validation_labels"] is False
    entropies = [s["mean_entropy"] for s in snapshots]
    assert results["min_entropy"]["iteration"] == snapshots[int(np.argmin(entropies))]["iteration"]
    assert "label-free" in results["min_entropy"]["selection_rule"]
    assert results["min_entropy"]["selected_with_validation_labels"] is False
    mious = [s["mean_iou"]["19"] for s in snapshots]
    best = results["best_val"]
    assert best["iteration"] == snapshots[int(np.argmax(mious))]["iteration"]
    assert best["scores"]["19"]["mean_iou"] == max(mious)
    assert best["selected_with_validation_labels"] is True
    assert "validation labels" in best["title"] and "oracle" in best["title"]

    # The entropy is that of evaluation.mean_entropy on the run's target training split, labels unused.
    snapshot = DeepLabV2ForSemanticSegmentation.from_pretrained(snapshots[0]["model"])
    rows = EvaluationSplit(data, "target_train", "train", (32, 64), "imagenet", with_labels=False)
    assert mean_entropy(snapshot, rows, batch_size=2) == pytest.approx(entropies[0], rel=1e-5)

    markdown = (out / "results.md").read_text()
    assert "best snapshot on the validation labels (iteration" in markdown and "upper bound" in markdown
    assert json.loads((out / "snapshots.json").read_text()) == snapshots
    for key in results:
        assert (out / "predictions" / key / "0000_target_val_00000.png").is_file()


def test_sixteen_class_model_maps_labels_by_name_and_reports_16_and_13(tiny, tmp_path):
    _, data = tiny
    model_dir = tmp_path / "synthia_model"
    config = DeepLabV2Config(backbone=TINY_BACKBONE, id2label=SYNTHIA_16.id2label)
    DeepLabV2ForSemanticSegmentation(config).save_pretrained(model_dir)
    DeepLabV2ImageProcessor(size={"height": 32, "width": 64}, normalization="imagenet").save_pretrained(
        model_dir
    )
    document = main(
        ["--model", str(model_dir), "--dataset", str(data), "--dataset_config", "target_val",
         "--label_space", "synthia16", "--num_workers", "0", "--num_pictures", "1", "--output_dir", str(tmp_path / "o")]
    )  # fmt: skip
    assert document["protocols"] == ["16", "13"]
    assert document["dataset"]["dataset_classes_ignored"] == ["terrain", "truck", "train"]
    result = document["results"]["model"]
    mapping, _ = label_mapping(CITYSCAPES, SYNTHIA_16)
    table = build_lut(mapping, 256)
    np.testing.assert_array_equal(
        np.asarray(result["confusion_matrix"]), _reference_confusion(model_dir, data, (32, 64), 16, table)
    )
    iou16 = np.array([np.nan if v is None else v for v in result["scores"]["16"]["per_class_iou"]])
    kept = list(SYNTHIA_16_TO_13)
    assert result["scores"]["13"]["mean_iou"] == pytest.approx(np.nanmean(iou16[kept]), abs=1e-12)
    assert result["scores"]["13"]["class_names"] == [SYNTHIA_16.class_names[i] for i in kept]


def test_label_mapping():
    mapping, dropped = label_mapping(CITYSCAPES, SYNTHIA_16)
    assert dropped == ["terrain", "truck", "train"]
    assert mapping == dict(CITYSCAPES_TO_SYNTHIA_16)  # by name, the table the SYNTHIA configs use
    assert label_mapping(CITYSCAPES, CITYSCAPES) == (None, [])
    with pytest.raises(ValueError, match="not classes of the dataset"):
        label_mapping(SYNTHIA_16, CITYSCAPES)


def test_find_snapshots_accepts_the_stage_folder_and_refuses_an_empty_one(tiny, tmp_path):
    run_dir, _ = tiny
    from_stage, stage_dir = find_snapshots(run_dir / "intra")
    from_snapshots, _ = find_snapshots(run_dir / "intra" / "snapshots")
    assert from_stage == from_snapshots and stage_dir == run_dir / "intra"
    assert [c.iteration for c in from_stage] == [1, 2]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_snapshots(tmp_path / "absent")
    (tmp_path / "empty" / "snapshots").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="snapshot_steps"):
        find_snapshots(tmp_path / "empty" / "snapshots")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "m", "--snapshots_dir", "s"], "exactly one"),
        ([], "exactly one"),
        (["--snapshots_dir", "s", "--selection", "best"], "unknown rules"),
        (["--model", "m", "--selection", "min_entropy"], "needs --snapshots_dir"),
        (["--model", "m", "--input_size", "512"], "HEIGHT WIDTH"),
        (["--model", "m", "--normalization", "bgr"], "caffe, imagenet, inception, unit_bgr"),
        (["--model", "m", "--max_images", "0"], "max_images must be at least 1"),
    ],
)
def test_argument_errors(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_arguments(argv)


def test_protocol_must_match_the_model(tiny, tmp_path):
    run_dir, data = tiny
    with pytest.raises(ValueError, match="defined over 16 classes"):
        main(["--model", str(run_dir / "intra" / "model"), "--dataset", str(data), "--protocols", "13",
              "--output_dir", str(tmp_path)])  # fmt: skip


def test_two_processes_count_every_image_once(tiny, tmp_path):
    """accelerate launch with 2 CPU processes and 4 images in batches of 3: the second process gets one
    batch of 1, the matrix is summed, nothing is repeated (no even_batches padding)."""
    run_dir, data = tiny
    common = ["--model", str(run_dir / "intra" / "model"), "--dataset", str(data), "--dataset_config",
              "target_val", "--batch_size", "3", "--num_workers", "0", "--num_pictures", "4"]  # fmt: skip
    single = main([*common, "--output_dir", str(tmp_path / "one")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PROJECT_ROOT / "training"))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(PROJECT_ROOT / "training" / "evaluate_miou.py"), *common, "--output_dir", str(tmp_path / "two"),
    ]  # fmt: skip
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert double["results"]["model"]["confusion_matrix"] == single["results"]["model"]["confusion_matrix"]
    names = sorted(p.name[:4] for p in (tmp_path / "two" / "predictions" / "model").glob("*.png"))
    assert names == ["0000", "0001", "0002", "0003"]  # rows 0-2 from process 0, row 3 from process 1


def test_synthetic_resolves_to_the_runs_dataset(tmp_path):
    config = {"synthetic_seed": 3, "synthetic_num_images": [2, 1, 1], "synthetic_dir": str(tmp_path / "s")}
    folder = Path(resolve_dataset("synthetic", config))
    assert folder == tmp_path / "s"
    assert json.loads((folder / "synthetic_params.json").read_text())["num_source"] == 2
    assert resolve_dataset("someone/cityscapes", config) == "someone/cityscapes"


def test_tables_show_the_classes_the_dataset_labels_and_name_the_protocol(tiny):
    run_dir, _ = tiny
    document = json.loads((run_dir / "eval" / "metrics.json").read_text())
    labelled = document["dataset"]["dataset_classes_labelled"]
    assert len(labelled) == 9 and "truck" not in labelled  # the synthetic pair draws 9 Cityscapes classes
    table = (run_dir / "eval" / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("|  |"))
    assert header == "|  | " + " | ".join(labelled) + " | mIoU (synthetic, 9 classes) | mIoU (19) |"
    for result in document["results"].values():
        scores = result["scores"]["19"]  # metrics.json keeps the protocol's scores over its 19 classes
        ious = dict(zip(scores["class_names"], scores["per_class_iou"], strict=True))
        own = np.nanmean([np.nan if ious[name] is None else ious[name] for name in labelled])
        row = next(line for line in table.splitlines() if line.startswith(f"| {result['title']} |"))
        cells = row.strip("|").split("|")
        assert (
            cells[-2].strip() == f"{100 * own:.1f}" and cells[-1].strip() == f"{100 * scores['mean_iou']:.1f}"
        )
    card = (run_dir / "intra" / "model" / "README.md").read_text()
    assert "| | " + " | ".join(labelled) + " | mIoU (9 classes) | mIoU (19) |" in card


def test_missing_model_folder_is_one_line_exit_2(tmp_path):
    command = [sys.executable, str(PROJECT_ROOT / "training" / "evaluate_miou.py")]
    done = subprocess.run(
        [*command, "--model", str(tmp_path / "runs" / "model"), "--output_dir", str(tmp_path / "eval")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: --model ") and "no such folder" in done.stderr
    assert not (tmp_path / "eval").exists()


def test_a_finished_run_holds_no_half_written_artifact(tiny):
    run_dir, _ = tiny
    assert (run_dir / "intra" / "snapshots" / "iter_000002" / "generator" / "config.json").is_file()
    assert not list(run_dir.rglob("*.incomplete")) and not list(run_dir.rglob("*.replaced"))
