"""dataset_scripts/digits.py: MNIST (IDX), USPS (HDF5) and SVHN (.mat) on fixtures and on real data."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.io import savemat

import modeling_intrada.data.building as _builder
from dataset_scripts import digits
from modeling_intrada.data.datasets import load_split, read_id2label

# The canonical class counts (digits 0..9) of the real files.
MNIST_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
USPS_COUNTS = {
    "train": [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644],
    "test": [359, 264, 198, 166, 200, 160, 170, 147, 166, 177],
}


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_mnist(root: Path, compress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    truth = {}
    for split, prefix, count in (("train", "train", 5), ("test", "t10k", 3)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        truth[split] = (images, labels)
    return truth


def rows(output_dir: Path, split: str) -> list[dict]:
    return [
        r
        for shard in sorted((output_dir / "default").glob(f"{split}-*.parquet"))
        for r in pq.read_table(shard).to_pylist()
    ]


def image_of(row: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx(tmp_path, compress):
    truth = make_mnist(tmp_path / "raw", compress)
    result = digits.main(
        ["--dataset", "mnist", "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")]
    )
    assert result.splits == {"default": {"train": 5, "test": 3}}
    for split, (images, labels) in truth.items():
        built = rows(tmp_path / "out", split)
        assert [r["id"] for r in built] == [f"{split}_{i:05d}" for i in range(len(images))]
        assert [r["label"] for r in built] == labels.tolist()
        assert all(np.array_equal(image_of(r), image) for r, image in zip(built, images, strict=True))
    loaded = load_split(tmp_path / "out", split="train", cache_dir=tmp_path / "cache")
    assert loaded.features["label"].names == [str(d) for d in range(10)]
    assert read_id2label(tmp_path / "out") == {d: str(d) for d in range(10)}


def test_mnist_bad_inputs(tmp_path):
    args = ["--dataset", "mnist", "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(FileNotFoundError, match=r"raw does not exist; expected the raw mnist files"):
        digits.main(args)
    truth = make_mnist(tmp_path / "raw")
    (tmp_path / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        _builder.BuildError, match=r"no t10k-labels-idx1-ubyte\.gz or .*expected the MNIST IDX files"
    ):
        digits.main(args)
    make_mnist(tmp_path / "raw")
    write_idx(tmp_path / "raw" / "train-labels-idx1-ubyte.gz", np.array([1, 2, 10, 3, 4], dtype=np.uint8))
    with pytest.raises(
        _builder.BuildError,
        match=r"train-labels-idx1-ubyte\.gz: label values \[10\] are outside the coding 0\.\.9",
    ):
        digits.main(args)
    make_mnist(tmp_path / "raw")
    (tmp_path / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(_builder.BuildError, match=r"train-images-idx3-ubyte\.gz: cannot read"):
        digits.main(args)
    images = truth["train"][0]
    data = bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 28, 28) + images.tobytes()[:-100]
    (tmp_path / "raw" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    with pytest.raises(
        _builder.BuildError, match=r"header declares shape \(5, 28, 28\) but the file holds 3820 values"
    ):
        digits.main(args)
    write_idx(tmp_path / "raw" / "train-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8))
    write_idx(tmp_path / "raw" / "train-labels-idx1-ubyte.gz", np.zeros(0, np.uint8))
    with pytest.raises(_builder.BuildError, match=r"the mnist train split is empty"):
        digits.main(args)


def test_usps_hdf5(tmp_path):
    (tmp_path / "raw").mkdir()
    rng = np.random.default_rng(1)
    truth = {}
    with h5py.File(tmp_path / "raw" / "usps.h5", "w") as file:
        for split, count in (("train", 4), ("test", 2)):
            data = rng.random((count, 256)).astype(np.float32)
            target = rng.integers(0, 10, size=count)
            file.create_group(split)
            file[split].create_dataset("data", data=data)
            file[split].create_dataset("target", data=target)
            truth[split] = (data, target)
    digits.main(
        ["--dataset", "usps", "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")]
    )
    for split, (data, target) in truth.items():
        built = rows(tmp_path / "out", split)
        assert [r["label"] for r in built] == target.tolist()
        for row, values in zip(built, data, strict=True):
            assert np.array_equal(image_of(row), np.rint(values * 255).astype(np.uint8).reshape(16, 16))
    with h5py.File(tmp_path / "raw" / "usps.h5", "a") as file:
        file["test"]["data"][0, 0] = 2.5
    with pytest.raises(
        _builder.BuildError, match=r"usps\.h5: test pixel values span \[.*2\.5\]; expected \[0, 1\]"
    ):
        digits.main(
            ["--dataset", "usps", "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "o2")]
        )


def test_svhn_mat(tmp_path):
    (tmp_path / "raw").mkdir()
    rng = np.random.default_rng(2)
    truth = {}
    for split, count in (("train", 4), ("test", 3)):
        images = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
        labels = np.array([10, 1, 9, 10][:count], dtype=np.uint8).reshape(-1, 1)
        savemat(tmp_path / "raw" / f"{split}_32x32.mat", {"X": images, "y": labels})
        truth[split] = (images, labels)
    digits.main(
        ["--dataset", "svhn", "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")]
    )
    for split, (images, labels) in truth.items():
        built = rows(tmp_path / "out", split)
        assert [r["label"] for r in built] == [0 if v == 10 else int(v) for v in labels.ravel()]  # 10 means 0
        for index, row in enumerate(built):
            assert np.array_equal(image_of(row), images[:, :, :, index])
    savemat(
        tmp_path / "raw" / "test_32x32.mat", {"X": truth["test"][0], "y": np.array([[0], [1], [2]], np.uint8)}
    )
    with pytest.raises(
        _builder.BuildError, match=r"test_32x32\.mat:y: label values \[0\] are outside the coding 1\.\.10"
    ):
        digits.main(
            ["--dataset", "svhn", "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "o2")]
        )
    savemat(tmp_path / "raw" / "test_32x32.mat", {"images": truth["test"][0]})
    with pytest.raises(_builder.BuildError, match=r"expected keys 'X' and 'y', found \['images'\]"):
        digits.main(
            ["--dataset", "svhn", "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "o2")]
        )


def test_real_mnist_counts(shared_data):
    for split, expected in MNIST_COUNTS.items():
        images, labels = digits.load_split("mnist", shared_data / "mnist", split)
        assert images.shape == ((60_000 if split == "train" else 10_000), 28, 28)
        assert np.bincount(labels, minlength=10).tolist() == expected
    digits.load_split.cache_clear()  # free the arrays


def test_real_usps_build(shared_data, tmp_path):
    digits.main(
        ["--dataset", "usps", "--data_dir", str(shared_data / "usps"), "--output_dir", str(tmp_path / "out")]
    )
    for split, expected in USPS_COUNTS.items():
        built = load_split(tmp_path / "out", split=split, cache_dir=tmp_path / "cache")
        assert len(built) == (7_291 if split == "train" else 2_007)
        assert np.bincount(built["label"], minlength=10).tolist() == expected
        assert built[0]["image"].size == (16, 16)
