"""The embedded default dataset (modeling_intrada.data.synthetic)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from modeling_intrada.data.datasets import build_segmentation_dataset, load_split, read_label_space
from modeling_intrada.data.synthetic import (
    PARAMS_FILE,
    SyntheticConfig,
    build_synthetic_dataset,
    default_synthetic_dir,
)
from modeling_intrada.labels import CITYSCAPES, SYNTHETIC, SYNTHETIC_RARE_TRAIN_IDS, SYNTHETIC_TRAIN_IDS

SMALL = {"num_source": 6, "num_target_train": 6, "num_target_val": 6, "height": 48, "width": 96}


@pytest.fixture(scope="module")
def default_build(tmp_path_factory):
    """The default-size dataset, built once for this module; its build time is printed."""
    start = time.perf_counter()
    path = build_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "default", seed=0)
    print(f"synthetic default built in {time.perf_counter() - start:.1f} s")
    return path


def _file_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = build_synthetic_dataset(tmp_path / "a", seed=7, **SMALL)
    second = build_synthetic_dataset(tmp_path / "b", seed=7, **SMALL)
    other = build_synthetic_dataset(tmp_path / "c", seed=8, **SMALL)
    first_files = _file_bytes(first)
    assert first_files == _file_bytes(second)
    assert any(name.endswith(".parquet") for name in first_files)
    other_files = _file_bytes(other)
    parquet = [name for name in first_files if name.endswith(".parquet")]
    assert all(first_files[name] != other_files[name] for name in parquet)


def test_reuse_and_parameter_mismatch(tmp_path):
    path = build_synthetic_dataset(tmp_path / "synthetic", seed=1, **SMALL)
    stamp = (path / PARAMS_FILE).stat().st_mtime_ns
    assert build_synthetic_dataset(path, seed=1, **SMALL) == path
    assert (path / PARAMS_FILE).stat().st_mtime_ns == stamp  # reused, not rebuilt
    with pytest.raises(FileExistsError, match=r"other parameters.*'seed': \(1, 2\)"):
        build_synthetic_dataset(path, seed=2, **SMALL)
    build_synthetic_dataset(path, seed=2, overwrite=True, **SMALL)
    assert '"seed": 2' in (path / PARAMS_FILE).read_text()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not a synthetic dataset"):
        build_synthetic_dataset(foreign, overwrite=True, **SMALL)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="num_source must be at least 1"):
        SyntheticConfig(num_source=0)
    assert default_synthetic_dir(cache_dir=tmp_path).name == "synthetic-v4.2-seed0-96x192-400-200-100"


def test_content(default_build, tmp_path):
    source = load_split(default_build, "source", "train", cache_dir=tmp_path)
    target_train = load_split(default_build, "target_train", "train", cache_dir=tmp_path)
    target_val = load_split(default_build, "target_val", "validation", cache_dir=tmp_path)
    assert (len(source), len(target_train), len(target_val)) == (400, 200, 100)
    assert "label" not in target_train.column_names and "condition" not in source.column_names
    assert source[0]["image"].size == (192, 96) and source[0]["image"].mode == "RGB"
    assert len(set(source["id"]) | set(target_train["id"]) | set(target_val["id"])) == 700
    assert read_label_space(default_build) == SYNTHETIC and SYNTHETIC.id2label == CITYSCAPES.id2label
    # Conditions cover [0, 1] evenly: one per stratum of width 1/N.
    for split in (target_train, target_val):
        conditions = np.sort(np.asarray(split["condition"]))
        assert np.all(np.floor(conditions * len(conditions)) == np.arange(len(conditions)))
    labels = np.stack([np.asarray(row["label"]) for row in source])
    counts = np.bincount(labels.ravel(), minlength=256)
    assert set(np.flatnonzero(counts)) == set(SYNTHETIC_TRAIN_IDS)  # every class drawn, nothing else
    share = counts / labels.size
    present = np.array([[np.any(image == i) for i in SYNTHETIC_TRAIN_IDS] for image in labels]).mean(0)
    for index, train_id in enumerate(SYNTHETIC_TRAIN_IDS):
        if train_id in SYNTHETIC_RARE_TRAIN_IDS:  # the claim made in labels.py
            assert share[train_id] < 0.02 and present[index] < 0.9
        else:
            assert share[train_id] > 0.02


def _tiny_segmenter(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(16, num_classes, 3, padding=1),
    )


def _stack(dataset):
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x["pixel_values"] for x in items]), torch.stack([x["labels"] for x in items])


def test_severe_target_images_are_harder_for_a_source_only_model(default_build, tmp_path):
    options = {"size": (48, 96), "normalization": "imagenet", "cache_dir": tmp_path}
    images, labels = _stack(build_segmentation_dataset(default_build, "source", "train", **options))
    val_images, val_labels = _stack(
        build_segmentation_dataset(default_build, "target_val", "validation", **options)
    )
    conditions = np.asarray(
        load_split(default_build, "target_val", "validation", cache_dir=tmp_path)["condition"]
    )
    torch.manual_seed(0)
    model = _tiny_segmenter(SYNTHETIC.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):  # about two seconds on two cores
        batch = torch.randint(0, len(images), (8,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        source_accuracy = (model(images[:100]).argmax(1) == labels[:100]).float().mean().item()
        accuracy = (model(val_images).argmax(1) == val_labels).float().mean((1, 2)).numpy()
    order = np.argsort(conditions)
    third = len(order) // 3
    mild, severe = accuracy[order[:third]].mean(), accuracy[order[-third:]].mean()
    print(f"pixel accuracy: source {source_accuracy:.3f}, target mild {mild:.3f}, target severe {severe:.3f}")
    assert source_accuracy > 0.85  # the model did learn the source
    assert mild > severe + 0.08  # a real intra-domain gap between mild and severe conditions
    assert np.corrcoef(conditions, accuracy)[0, 1] < -0.5
