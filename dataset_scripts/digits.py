"""Build a digits dataset (MNIST, USPS or SVHN) as a Hugging Face image-classification dataset.

Features: `image` (PNG; grey for MNIST/USPS, RGB for SVHN), `label` (ClassLabel "0".."9"), `id`
(`<split>_<index>`, the index in the raw file). Splits `train` and `test`.

Raw layouts:
- `--dataset mnist`: the IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each gzipped (`.gz`) or not; 60,000 train
  and 10,000 test 28x28 images.
- `--dataset usps`: `usps.h5` with groups `train` (7,291) and `test` (2,007), each holding `data`
  (N, 256) floats in [0, 1] (16x16 row-major images, stored as round(255 x)) and `target` (N,).
- `--dataset svhn`: `train_32x32.mat` and `test_32x32.mat` (keys `X` 32x32x3xN uint8, `y` Nx1
  with 1..10 where 10 means the digit 0); `--include_extra` adds `extra_32x32.mat` as split `extra`.

Labels outside the coding (MNIST/USPS 0..9, SVHN 1..10) are an error.

    python dataset_scripts/digits.py --dataset mnist --data_dir RAW/mnist --output_dir OUT/mnist
"""

from __future__ import annotations

import functools
import gzip
import struct
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from modeling_intrada.data import building
from modeling_intrada.data.dataset_card import DatasetDescription
from modeling_intrada.data.datasets import encode_png
from modeling_intrada.errors import run_program
from modeling_intrada.labels import DIGITS

DATASETS = ("mnist", "usps", "svhn")
FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(DIGITS.class_names)),
        "id": datasets.Value("string"),
    }
)
MNIST_FILES = {"train": "train", "test": "t10k"}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array of its declared shape."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise building.BuildError(
            f"{path}: cannot read ({error}); expected an IDX file, gzipped or not"
        ) from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise building.BuildError(
            f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()}, expected 000008xx)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    array = np.frombuffer(data, dtype=IDX_DTYPES[data[2]], offset=header)
    if array.size != int(np.prod(shape)):
        raise building.BuildError(
            f"{path}: header declares shape {shape} but the file holds {array.size} values"
        )
    return array.reshape(shape)


def _find_idx(data_dir: Path, prefix: str, kind: str) -> Path:
    names = [
        f"{prefix}-{kind}-ubyte.gz",
        f"{prefix}-{kind}-ubyte",
        f"{prefix}-{kind.replace('-', '.')}-ubyte",
    ]
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise building.BuildError(
        f"{data_dir}: no {' or '.join(names)}; expected the MNIST IDX files (wrong layout?)"
    )


def _check_labels(labels: np.ndarray, low: int, high: int, source: str) -> None:
    bad = np.unique(labels[(labels < low) | (labels > high)])
    if bad.size:
        raise building.BuildError(
            f"{source}: label values {bad[:10].tolist()} are outside the coding {low}..{high}"
        )


def _load_mnist(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_find_idx(data_dir, MNIST_FILES[split], "images-idx3"))
    labels_path = _find_idx(data_dir, MNIST_FILES[split], "labels-idx1")
    labels = read_idx(labels_path).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise building.BuildError(
            f"{data_dir}: MNIST {split} has images {images.shape} but labels {labels.shape}"
        )
    _check_labels(labels, 0, 9, str(labels_path))
    return images, labels


def _load_usps(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    path = data_dir / "usps.h5"
    if not path.is_file():
        raise building.BuildError(
            f"{path} does not exist; expected the USPS HDF5 file (groups train/test with data, target)"
        )
    try:
        with h5py.File(path, "r") as file:
            if split not in file or "data" not in file[split] or "target" not in file[split]:
                raise building.BuildError(
                    f"{path}: expected a group {split!r} with datasets 'data' and 'target'"
                )
            data, labels = file[split]["data"][()], file[split]["target"][()].astype(np.int64)
    except OSError as error:
        raise building.BuildError(f"{path}: cannot read ({error}); expected an HDF5 file") from error
    if data.ndim != 2 or data.shape[1] != 256 or labels.shape != (len(data),):
        raise building.BuildError(
            f"{path}: {split} has data {data.shape} and target {labels.shape}; expected (N, 256) and (N,)"
        )
    if data.min() < -1e-6 or data.max() > 1 + 1e-6:
        raise building.BuildError(
            f"{path}: {split} pixel values span [{data.min()}, {data.max()}]; expected [0, 1]"
        )
    _check_labels(labels, 0, 9, f"{path}:{split}/target")
    return np.rint(np.clip(data, 0, 1) * 255).astype(np.uint8).reshape(-1, 16, 16), labels


def _load_svhn(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from scipy.io import loadmat

    path = data_dir / SVHN_FILES[split]
    if not path.is_file():
        raise building.BuildError(
            f"{path} does not exist; expected the SVHN cropped-digits file {SVHN_FILES[split]}"
        )
    try:
        mat = loadmat(path)
    except (OSError, ValueError) as error:
        raise building.BuildError(f"{path}: cannot read ({error}); expected a MATLAB .mat file") from error
    if "X" not in mat or "y" not in mat:
        raise building.BuildError(
            f"{path}: expected keys 'X' and 'y', found {sorted(k for k in mat if not k.startswith('__'))}"
        )
    images, labels = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != len(labels):
        raise building.BuildError(
            f"{path}: X has shape {images.shape} and y {mat['y'].shape}; expected 32x32x3xN and Nx1"
        )
    _check_labels(labels, 1, 10, f"{path}:y")
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), np.where(labels == 10, 0, labels)


LOADERS = {"mnist": _load_mnist, "usps": _load_usps, "svhn": _load_svhn}


@functools.lru_cache(maxsize=4)
def load_split(dataset: str, data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) or (N, H, W, 3) uint8 and labels (N,) 0..9 of one raw split (cached per process)."""
    return LOADERS[dataset](data_dir, split)


def make_row(item: tuple[str, int], dataset: str, data_dir: Path) -> tuple[dict, dict[str, list[str]]]:
    """One digit: PNG image, class label and id."""
    split, index = item
    images, labels = load_split(dataset, data_dir, split)
    image = Image.fromarray(images[index])
    return {
        "image": {"bytes": encode_png(image), "path": None},
        "label": int(labels[index]),
        "id": f"{split}_{index:05d}",
    }, {}


def list_plans(dataset: str, data_dir: Path, include_extra: bool = False) -> list[building.SplitPlan]:
    """One plan per split; the raw arrays are read (and checked) here, once."""
    building.require_dir(data_dir, f"the raw {dataset} files")
    load_split.cache_clear()  # read the files as they are now, not as an earlier build saw them
    splits = ["train", "test"] + (["extra"] if include_extra and dataset == "svhn" else [])
    row_maker = functools.partial(make_row, dataset=dataset, data_dir=data_dir)
    plans = []
    for split in splits:
        images, _ = load_split(dataset, data_dir, split)
        if len(images) == 0:
            raise building.BuildError(f"{data_dir}: the {dataset} {split} split is empty")
        item_size = int(np.prod(images.shape[1:]))
        items = [(split, i) for i in range(len(images))]
        plans.append(
            building.SplitPlan("default", split, items, FEATURES, row_maker, lambda _, size=item_size: size)
        )
    return plans


SOURCES = {
    "mnist": (
        "MNIST",
        "Handwritten digits, 28x28 grey (LeCun et al., 1998).",
        "MNIST is distributed by Yann LeCun, Corinna Cortes and Christopher Burges "
        "(http://yann.lecun.com/exdb/mnist/); it is commonly redistributed under CC BY-SA 3.0.",
    ),
    "usps": (
        "USPS",
        "Handwritten zip-code digits from the US Postal Service, 16x16 grey (Hull, 1994).",
        "USPS comes without an explicit licence; it is widely redistributed for research "
        "(this build reads the common HDF5 copy). Check before redistributing.",
    ),
    "svhn": (
        "SVHN (cropped digits)",
        "House-number digits from Google Street View, 32x32 RGB (Netzer et al., 2011).",
        "SVHN is for non-commercial use only (http://ufldl.stanford.edu/housenumbers/).",
    ),
}


def card(result: building.BuildResult, dataset: str) -> DatasetDescription:
    """The card of a digits build."""
    name, summary, terms = SOURCES[dataset]
    return DatasetDescription(
        pretty_name=name,
        license="other",
        summary=f"{summary} Used by the digits experiments of IntraDA (paper section 4.3).",
        source_terms=terms,
        how_built=(
            f"`python dataset_scripts/digits.py --dataset {dataset} --data_dir RAW --output_dir OUT`. "
            "Each image is stored as PNG in its raw resolution; rows keep the raw file order."
            + (" USPS floats in [0, 1] become round(255 x)." if dataset == "usps" else "")
            + (" SVHN label 10 becomes 0." if dataset == "svhn" else "")
        ),
        splits=result.splits,
        label_space=DIGITS,
        default_config="default",
        columns={
            "image": "the digit, PNG.",
            "label": "ClassLabel 0..9.",
            "id": "`<split>_<index>` in the raw file.",
        },
        task="image-classification",
    )


def main(argv: Sequence[str] | None = None) -> building.BuildResult:
    """Parse the command line, build the dataset, optionally push it."""
    parser = building.build_argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--include_extra", action="store_true", help="SVHN only: also build extra_32x32.mat")
    args = parser.parse_args(argv)
    return building.build_from_arguments(
        args,
        list_plans(args.dataset, args.data_dir, args.include_extra),
        DIGITS,
        functools.partial(card, dataset=args.dataset),
        dataset=args.dataset,
    )


if __name__ == "__main__":
    run_program(main)
