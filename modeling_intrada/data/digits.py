"""Digits splits in memory, at the classifier's input size (SPEC section 8).

A digits dataset is the folder (or Hub id) that `dataset_scripts/digits.py` writes: `image` (PNG), `label`
(ClassLabel 0..9) and `id`. A whole split is decoded once into a uint8 tensor at the network's input size:
decoding PNGs at every step would dominate a CPU run, and MNIST's 60,000 digits take 47 MB this way.

Bringing each dataset to the classifier's input, as CyCADA's digit loader does (`get_transform` in its
`cycada/data/data_loader.py`: `Resize(image_size)` on PIL images, PIL grey <-> RGB, `Normalize(0.5, 0.5)`):

- size: images whose side differs from `image_size` are resized with PIL's **bilinear** filter (the default
  of `torchvision.transforms.Resize` on PIL images, so CyCADA's interpolation). USPS (16x16) becomes
  28x28 for the LeNet variant and MNIST (28x28) becomes 32x32 for the DTN. The whole frame is resized (no padding): USPS digits fill their 16x16 frame
  while MNIST digits sit in a 20x20 box inside 28x28, and that difference of scale is part of the domain
  shift the adaptation must close. The result is rounded back to uint8, as a PIL resize does (at most
  0.5/255 off).
- channels: grey images are replicated to RGB for a 3-channel network (MNIST for the DTN); RGB images are
  converted to grey with PIL's ITU-R 601 luma for a 1-channel network.
- values: `pixel_values = (x / 255 - 0.5) / 0.5`, in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from modeling_intrada.data.datasets import load_split
from modeling_intrada.errors import MissingInputError

IMAGE_MEAN = 0.5
IMAGE_STD = 0.5
REQUIRED_COLUMNS = ("image", "label", "id")


def to_network_input(images: Sequence[Image.Image], image_size: int, num_channels: int) -> torch.Tensor:
    """uint8 tensor (N, num_channels, image_size, image_size) of `images`, resized bilinearly (module doc)."""
    if num_channels not in (1, 3):
        raise ValueError(f"digit classifiers take 1 or 3 channels, got num_channels={num_channels}")
    mode = "L" if num_channels == 1 else "RGB"
    out = np.empty((len(images), image_size, image_size, num_channels), dtype=np.uint8)
    for i, image in enumerate(images):
        image = image.convert(mode) if image.mode != mode else image
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(image).reshape(image_size, image_size, num_channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 in [-1, 1]: `(x / 255 - IMAGE_MEAN) / IMAGE_STD`."""
    return (images.float() / 255.0 - IMAGE_MEAN) / IMAGE_STD


@dataclasses.dataclass(frozen=True)
class RandomAffine:
    """A random rotation, scaling and translation of a digit, drawn per image (training augmentation).

    The angle is uniform in [-degrees, degrees], the zoom factor uniform in `scale`, and the shift uniform in
    [-translate, translate] of the image side on each axis. The image is resampled bilinearly and the pixels
    that come from outside the frame repeat its border (the background, for centred digits).

    Args:
        degrees: largest rotation, in degrees.
        translate: largest shift, as a fraction of the side.
        scale: (smallest, largest) zoom factor; above 1 enlarges the digit.
    """

    degrees: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        if self.degrees < 0 or not 0 <= self.translate < 1:
            raise ValueError(
                f"RandomAffine needs degrees >= 0 and 0 <= translate < 1, got {self.degrees}, {self.translate}"
            )
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"RandomAffine scale must be (low, high) with 0 < low <= high, got {self.scale}")

    def draw(self, rng: random.Random) -> torch.Tensor:
        """The (2, 3) matrix of `F.affine_grid` for one draw: output coordinates -> input coordinates."""
        angle = math.radians(rng.uniform(-self.degrees, self.degrees))
        zoom = rng.uniform(*self.scale)
        shift_x, shift_y = (2 * rng.uniform(-self.translate, self.translate) for _ in range(2))
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        return torch.tensor([[cos, -sin, -shift_x], [sin, cos, -shift_y]], dtype=torch.float32)

    def __call__(self, image: torch.Tensor, rng: random.Random) -> torch.Tensor:
        """`image` (C, H, W) float, transformed by one draw of `rng`."""
        theta = self.draw(rng).unsqueeze(0)
        grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
        return F.grid_sample(
            image.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=False
        ).squeeze(0)


class DigitsSplit(torch.utils.data.Dataset):
    """Digits in memory: rows `{"pixel_values", "labels" (when labelled), "id", "index"}`.

    Args:
        images: uint8 (N, C, H, W) at the network's input size.
        labels: int64 (N,) or None for an unlabelled view (the target's training images).
        ids: the dataset ids of the rows.
        name: what the split is, for messages and cards.
        augmentation: a `RandomAffine` applied to every row, or None. Its draw depends only on
            (`seed`, the epoch of `set_epoch`, the row's id), as the segmentation crops do, so a resumed
            or multi-process run sees the same images.
        seed: the augmentation's seed.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        ids: Sequence[str],
        name: str = "",
        augmentation: RandomAffine | None = None,
        seed: int = 0,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(ids) != len(images) or (labels is not None and len(labels) != len(images)):
            raise ValueError(
                f"{name}: {len(images)} images, {len(ids)} ids and "
                f"{'no' if labels is None else len(labels)} labels do not match"
            )
        self.images, self.labels, self.ids, self.name = images, labels, list(ids), name
        self.augmentation, self.seed, self.epoch = augmentation, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Change the epoch that the augmentation's draws depend on."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        values = pixel_values(self.images[index])
        if self.augmentation is not None:
            values = self.augmentation(values, random.Random(f"{self.seed}/{self.epoch}/{self.ids[index]}"))
        item = {"pixel_values": values, "id": self.ids[index], "index": int(index)}
        if self.labels is not None:
            item["labels"] = int(self.labels[index])
        return item

    def without_labels(self) -> DigitsSplit:
        """The same images with no labels (what the target's training split is during adaptation)."""
        return DigitsSplit(self.images, None, self.ids, self.name, self.augmentation, self.seed)

    def augmented(self, augmentation: RandomAffine | None, seed: int) -> DigitsSplit:
        """The same rows with `augmentation` (None: without)."""
        return DigitsSplit(self.images, self.labels, self.ids, self.name, augmentation, seed)

    def subset(self, rows: Sequence[int], labels: Sequence[int] | None = None, name: str = "") -> DigitsSplit:
        """Rows `rows` (re-indexed from 0), with `labels` (e.g. pseudo labels) or none; not augmented."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        new_labels = torch.as_tensor(list(labels), dtype=torch.long) if labels is not None else None
        return DigitsSplit(self.images[index], new_labels, [self.ids[i] for i in index.tolist()], name)

    def image(self, index: int) -> Image.Image:
        """Row `index` as a PIL image at the network's input size (for pictures)."""
        array = self.images[int(index)].permute(1, 2, 0).numpy()
        return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


@functools.lru_cache(maxsize=8)
def _decoded(source: str, split: str, image_size: int, num_channels: int, max_samples: int | None):
    dataset = load_split(source, None, split)
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{source} ({split}) has no column(s) {missing}; expected a digits dataset written by "
            "dataset_scripts/digits.py (image, label, id)"
        )
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    import datasets

    # Decode the PNG bytes here, once, rather than through `datasets`' per-row image decoding.
    raw = dataset.cast_column("image", datasets.Image(decode=False))
    images = [Image.open(io.BytesIO(row["bytes"])) for row in raw["image"]]
    tensor = to_network_input(images, image_size, num_channels)
    labels = torch.as_tensor(np.asarray(dataset["label"], dtype=np.int64))
    return tensor, labels, list(dataset["id"])


def load_digits(
    source: str | Path,
    split: str,
    image_size: int,
    num_channels: int,
    *,
    with_labels: bool = True,
    max_samples: int | None = None,
) -> DigitsSplit:
    """One split of a built digits dataset at the network's input size (cached per process).

    Args:
        source: the folder written by `dataset_scripts/digits.py`, or a Hub dataset id.
        split: `train` or `test`.
        image_size, num_channels: the classifier's input (its config's `image_size`, `num_channels`).
        with_labels: False for the target's training images, whose labels must never reach training.
        max_samples: keep the first N rows (quick runs and tests).
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    path = Path(source).expanduser()
    # "data/mnist" could be a Hub id too: a missing path whose parent folder exists here is a local one.
    looks_local = path.is_absolute() or str(source).startswith((".", "~")) or path.parent.is_dir()
    if not path.exists() and looks_local and str(path.parent) != ".":
        raise MissingInputError(
            f"digits dataset {path} does not exist; build it first, e.g. `python dataset_scripts/digits.py "
            f"--dataset mnist --data_dir RAW/mnist --output_dir {path}`"
        )
    images, labels, ids = _decoded(str(source), split, int(image_size), int(num_channels), max_samples)
    if len(images) == 0:
        raise ValueError(f"{source} ({split}) is empty")
    return DigitsSplit(images, labels if with_labels else None, ids, name=f"{source} ({split})")
