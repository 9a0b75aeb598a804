"""The built-dataset write path and the training read path (modeling_intrada.data.datasets)."""

from __future__ import annotations

import io
import shutil

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from modeling_intrada.data.dataset_card import DatasetDescription, write_dataset_card
from modeling_intrada.data.datasets import (
    SegmentationDataset,
    SegmentationTransform,
    StreamingSegmentationDataset,
    build_segmentation_dataset,
    encode_label_png,
    encode_png,
    load_split,
    local_cache_dir,
    read_id2label,
    read_label_space,
    segmentation_features,
    shard_file_name,
    write_label_space,
    write_parquet_file,
)
from modeling_intrada.labels import CAMVID
from modeling_intrada.models.deeplabv2 import image_transforms as transforms

HEIGHT, WIDTH = 12, 20


def _example(index: int, with_label: bool = True) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    label = rng.choice([0, 3, 10, 255], size=(HEIGHT, WIDTH)).astype(np.uint8)
    row = {"image": {"bytes": encode_png(Image.fromarray(image)), "path": None}}
    if with_label:
        row["label"] = {"bytes": encode_label_png(label), "path": None}
    row["id"] = f"frame_{index:03d}"
    return row, image, label


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small built dataset: `default` train (2 shards, 6 rows) and validation; `unlabelled` train."""
    root = tmp_path_factory.mktemp("built") / "tiny"
    features = segmentation_features()
    write_parquet_file(
        root / shard_file_name("default", "train", 0, 2), [_example(i)[0] for i in range(3)], features
    )
    write_parquet_file(
        root / shard_file_name("default", "train", 1, 2), [_example(i)[0] for i in range(3, 6)], features
    )
    write_parquet_file(
        root / shard_file_name("default", "validation", 0, 1), [_example(i)[0] for i in range(6, 8)], features
    )
    write_parquet_file(
        root / shard_file_name("unlabelled", "train", 0, 1),
        [_example(i, with_label=False)[0] for i in range(8, 10)],
        segmentation_features(with_label=False),
    )
    write_label_space(root, CAMVID, {"dataset": "tiny"})
    write_dataset_card(
        root,
        DatasetDescription(
            pretty_name="tiny",
            license="apache-2.0",
            summary="test data",
            source_terms="none",
            how_built="by the test",
            splits={"default": {"train": 6, "validation": 2}, "unlabelled": {"train": 2}},
            label_space=CAMVID,
            default_config="default",
        ),
    )
    return root


def test_written_files_and_card(built):
    table = pq.read_table(built / "default" / "train-00000-of-00002.parquet")
    assert table.num_rows == 3
    # The features travel in the Parquet schema, so any reader gets Image columns back.
    assert datasets.Features.from_arrow_schema(table.schema) == segmentation_features()
    card = (built / "README.md").read_text()
    assert (
        "config_name: default" in card
        and "default: true" in card
        and "path: default/train-*-of-00002.parquet" in card
    )
    assert (
        "| 5 | tree | (128, 128, 0) |  |" in card
        and "| 6 | sign | (192, 128, 128) | yes |" in card
        and "| `unlabelled` | `train` | 2 |" in card
    )
    assert read_id2label(built) == CAMVID.id2label
    assert read_label_space(built) == CAMVID


def test_write_rejects_an_empty_split(tmp_path):
    with pytest.raises(ValueError, match=r"no rows to write to .*empty\.parquet: the split is empty"):
        write_parquet_file(tmp_path / "empty.parquet", [], segmentation_features())
    assert not list(tmp_path.iterdir())  # no half-written file left behind


def test_card_requires_shards(tmp_path):
    card = DatasetDescription("x", "mit", "", "", "", {"default": {"train": 1}}, CAMVID, "default")
    with pytest.raises(FileNotFoundError, match="no Parquet shard for config 'default' split 'train'"):
        write_dataset_card(tmp_path, card)


def test_load_split_reads_every_row_in_order(built, tmp_path):
    train = load_split(built, "default", "train", cache_dir=tmp_path)
    assert train.column_names == ["image", "label", "id"]
    assert train["id"] == [f"frame_{i:03d}" for i in range(6)]
    row = train[4]
    _, image, label = _example(4)
    assert np.array_equal(np.asarray(row["image"]), image) and np.array_equal(np.asarray(row["label"]), label)
    assert len(load_split(built, split="validation", cache_dir=tmp_path)) == 2  # default config


def test_load_split_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset folder .*nowhere does not exist"):
        load_split(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_id2label(tmp_path)


def test_segmentation_dataset_items(built, tmp_path):
    dataset = build_segmentation_dataset(
        built, "default", "train", size=(6, 10), normalization="imagenet", cache_dir=tmp_path
    )
    assert isinstance(dataset, SegmentationDataset) and len(dataset) == 6
    item = dataset[2]
    assert set(item) == {"pixel_values", "labels", "id", "index"}
    assert item["pixel_values"].dtype == torch.float32 and item["pixel_values"].shape == (3, 6, 10)
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (6, 10)
    assert item["id"] == "frame_002" and item["index"] == 2
    _, image, label = _example(2)
    expected_image = transforms.normalize(
        transforms.resize_image(Image.fromarray(image), (6, 10)), "imagenet"
    )
    expected_label = transforms.label_to_array(transforms.resize_label(Image.fromarray(label), (6, 10)))
    assert np.array_equal(item["pixel_values"].numpy(), expected_image)
    assert np.array_equal(item["labels"].numpy(), expected_label)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 6, 10) and batch["labels"].shape == (4, 6, 10)


def test_labels_can_be_kept_out(built, tmp_path):
    train = load_split(built, "default", "train", cache_dir=tmp_path)
    # A split whose label column exists still yields no labels when told so, and the wrapped
    # dataset no longer holds the column at all.
    blind = SegmentationDataset(train, with_labels=False)
    assert all("labels" not in blind[i] for i in range(len(blind)))
    assert "label" not in blind.dataset.column_names
    unlabelled = load_split(built, "unlabelled", "train", cache_dir=tmp_path)
    assert "labels" not in SegmentationDataset(unlabelled)[0]
    with pytest.raises(ValueError, match="has no 'label' column"):
        SegmentationDataset(unlabelled, with_labels=True)
    streamed = load_split(built, "default", "train", streaming=True)
    assert all("labels" not in item for item in StreamingSegmentationDataset(streamed, with_labels=False))


def test_crop_and_flip_are_deterministic_per_seed_epoch_and_row(built, tmp_path):
    train = load_split(built, "default", "train", cache_dir=tmp_path)
    transform = SegmentationTransform(crop_size=(8, 8), hflip=True, seed=3)
    first, again = SegmentationDataset(train, transform), SegmentationDataset(train, transform)
    pairs = [(first[i], again[i]) for i in range(6)]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in pairs)
    assert all(a["pixel_values"].shape == (3, 8, 8) and a["labels"].shape == (8, 8) for a, _ in pairs)
    again.set_epoch(1)
    assert any(not torch.equal(first[i]["pixel_values"], again[i]["pixel_values"]) for i in range(6))
    # The crop cuts image and label at the same place.
    _, image, label = _example(0)
    crop_image, crop_label = transform(Image.fromarray(image), Image.fromarray(label), "frame_000")
    np_image = transforms.denormalize(crop_image.numpy(), "caffe")
    found = [
        (top, left, flip)
        for top in range(HEIGHT - 7)
        for left in range(WIDTH - 7)
        for flip in (False, True)
        if np.array_equal(
            np_image,
            (image[top : top + 8, left : left + 8])[:, ::-1]
            if flip
            else image[top : top + 8, left : left + 8],
        )
    ]
    assert len(found) == 1
    top, left, flip = found[0]
    window = label[top : top + 8, left : left + 8]
    assert np.array_equal(crop_label.numpy(), window[:, ::-1] if flip else window)


def test_image_label_size_mismatch_without_resize(built):
    transform = SegmentationTransform()
    with pytest.raises(ValueError, match=r"row x: image is \(20, 12\) but its label is \(10, 12\)"):
        transform(Image.new("RGB", (20, 12)), Image.new("L", (10, 12)), "x")
    with pytest.raises(ValueError, match="normalization must be one of"):
        SegmentationTransform(normalization="zscore")


def test_streaming_matches_map_style_and_splits_by_rank(built, tmp_path):
    mapped = build_segmentation_dataset(built, "default", "train", size=(6, 10), cache_dir=tmp_path)
    streamed = build_segmentation_dataset(built, "default", "train", size=(6, 10), streaming=True)
    assert isinstance(streamed, StreamingSegmentationDataset)
    items = list(streamed)
    assert [item["id"] for item in items] == [mapped[i]["id"] for i in range(6)]
    assert all(torch.equal(item["pixel_values"], mapped[i]["pixel_values"]) for i, item in enumerate(items))
    assert all(torch.equal(item["labels"], mapped[i]["labels"]) for i, item in enumerate(items))
    split = load_split(built, "default", "train", streaming=True)
    ranks = [
        [item["id"] for item in StreamingSegmentationDataset(split, rank=r, world_size=2)] for r in (0, 1)
    ]
    assert sorted(ranks[0] + ranks[1]) == [f"frame_{i:03d}" for i in range(6)] and not set(ranks[0]) & set(
        ranks[1]
    )
    batch = next(iter(torch.utils.data.DataLoader(streamed, batch_size=3)))
    assert batch["pixel_values"].shape == (3, 3, 6, 10)


def test_moved_folder_still_loads(built, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(built, moved)
    row = load_split(moved, "default", "validation", cache_dir=tmp_path / "cache")[0]
    _, image, _ = _example(6)
    assert np.array_equal(np.asarray(row["image"]), image)
    # The image bytes are embedded, not paths to the original files.
    raw = pq.read_table(moved / "default" / "validation-00000-of-00001.parquet").to_pylist()[0]
    assert raw["image"]["path"] is None and Image.open(io.BytesIO(raw["image"]["bytes"])).size == (
        WIDTH,
        HEIGHT,
    )


def test_a_rewritten_folder_leaves_one_cache(tmp_path):
    folder = tmp_path / "ranking"
    folder.mkdir()
    (folder / "data.parquet").write_bytes(b"first")
    first = local_cache_dir(folder, tmp_path / "cache")
    first.mkdir(parents=True)
    (folder / "data.parquet").write_bytes(b"second, longer")
    second = local_cache_dir(folder, tmp_path / "cache")
    assert second != first and not first.exists()
    other = local_cache_dir(tmp_path, tmp_path / "cache")  # another folder keeps its own cache
    second.mkdir()
    assert local_cache_dir(folder, tmp_path / "cache") == second and second.exists() and other != second
