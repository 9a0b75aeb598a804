"""Raw digits files in their official formats (MNIST IDX, USPS HDF5, SVHN .mat), built into datasets.

The images are drawn from a few fixed class templates plus noise, so that a classifier can learn them in a
few dozen steps; the datasets are built with `dataset_scripts/digits.py`, the one definition of the format.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import h5py
import numpy as np
from scipy.io import savemat

from dataset_scripts import digits as digits_builder


def templates(side: int, seed: int = 0) -> np.ndarray:
    """Ten distinct random blob patterns (10, side, side) in [0, 1]."""
    rng = np.random.default_rng(seed)
    return (rng.random((10, side, side)) > 0.6).astype(np.float64)


def digit_images(labels: np.ndarray, side: int, seed: int) -> np.ndarray:
    """uint8 (N, side, side): the class template of each label with noise."""
    rng = np.random.default_rng(seed)
    base = templates(side)[labels]
    return np.clip((0.8 * base + 0.2 * rng.random(base.shape)) * 255, 0, 255).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def raw_mnist(root: Path, counts: dict[str, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = np.arange(counts[split]) % 10
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", digit_images(labels, 28, seed=len(split)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def raw_usps(root: Path, counts: dict[str, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "usps.h5", "w") as file:
        for split in ("train", "test"):
            labels = np.arange(counts[split]) % 10
            images = digit_images(labels, 16, seed=len(split) + 7).astype(np.float32) / 255.0
            group = file.create_group(split)
            group["data"] = images.reshape(len(labels), 256)
            group["target"] = labels
    return root


def raw_svhn(root: Path, counts: dict[str, int]) -> dict[str, np.ndarray]:
    """`{split}_32x32.mat` with X 32x32x3xN uint8 and y Nx1 in 1..10 (10 = digit 0); returns the digits."""
    root.mkdir(parents=True, exist_ok=True)
    digits = {}
    for split in ("train", "test"):
        labels = np.arange(counts[split]) % 10
        grey = digit_images(labels, 32, seed=len(split) + 3)
        rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)  # (N, 32, 32, 3)
        official = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)
        savemat(root / f"{split}_32x32.mat", {"X": rgb.transpose(1, 2, 3, 0), "y": official})
        digits[split] = labels
    return digits


def build(dataset: str, raw: Path, output: Path) -> Path:
    digits_builder.main(["--dataset", dataset, "--data_dir", str(raw), "--output_dir", str(output)])
    return output
