"""The image and label transforms shared by the image processor, the dataset builders and training.

One definition of each: images are resized bicubic and labels nearest (SPEC section 3), then the
image is normalised the reference way (RGB -> BGR minus the Caffe mean, no scaling), the ImageNet way
(scale to [0, 1], minus mean, over std) for timm backbones, or as another segmenter's image processor does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The per-channel mean of the Caffe ResNet-101 that DeepLab-v2 and the authors' code start from, in BGR order.
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_height_width(size: Sequence[int] | dict[str, int]) -> tuple[int, int]:
    if isinstance(size, dict):
        if not {"height", "width"} <= set(size):
            raise ValueError(f"size must have 'height' and 'width', got {size!r}")
        height, width = size["height"], size["width"]
    else:
        if len(size) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
        height, width = size
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"size must be positive, got height={height}, width={width}")
    return int(height), int(width)


def resize_image(image: Image.Image, size: Sequence[int] | dict[str, int]) -> Image.Image:
    """Resize an RGB image to `size` = (height, width) with bicubic interpolation."""
    height, width = _as_height_width(size)
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


def resize_label(label: Image.Image, size: Sequence[int] | dict[str, int]) -> Image.Image:
    """Resize a label map to `size` = (height, width) with nearest-neighbour interpolation."""
    height, width = _as_height_width(size)
    if label.size == (width, height):
        return label
    return label.resize((width, height), Image.Resampling.NEAREST)


@dataclass(frozen=True)
class Normalization:
    """How pixel values are made from RGB bytes: `(bytes[, channels reversed] / divisor - mean) / std`."""

    divisor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False


# The image normalisations of the segmenters this project trains. Each is written so that its arithmetic is
# exact where it should be (caffe: a subtraction only), and each matches an image processor's settings:
NORMALIZATIONS_BY_NAME = {
    # the reference: RGB -> BGR minus the Caffe mean, values stay in [0, 255]
    "caffe": Normalization(1.0, CAFFE_BGR_MEAN, (1.0, 1.0, 1.0), bgr=True),
    # timm backbones, SegFormer, UperNet (ConvNeXt, Swin)
    "imagenet": Normalization(255.0, IMAGENET_MEAN, IMAGENET_STD),
    # mean = std = 0.5: BEiT, Data2Vec-vision, DPT, MobileNetV2
    "inception": Normalization(255.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # scaled to [0, 1] and channels reversed, no mean: MobileViT and MobileViTV2
    "unit_bgr": Normalization(255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), bgr=True),
}
NORMALIZATIONS = tuple(NORMALIZATIONS_BY_NAME)


def _normalization(name: str) -> Normalization:
    if name not in NORMALIZATIONS_BY_NAME:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {name!r}")
    return NORMALIZATIONS_BY_NAME[name]


def normalize(image: Image.Image | np.ndarray, normalization: str = "caffe") -> np.ndarray:
    """Turn an RGB image (PIL or uint8 HxWx3 array) into float32 CxHxW pixel values.

    `normalization` names one of `NORMALIZATIONS_BY_NAME`: `caffe` (RGB -> BGR, minus `CAFFE_BGR_MEAN`, values
    in [0, 255]: the reference code), `imagenet` (scaled to [0, 1], minus `IMAGENET_MEAN`, over `IMAGENET_STD`),
    `inception` (scaled, minus 0.5, over 0.5) or `unit_bgr` (scaled, channels reversed).
    """
    rule = _normalization(normalization)
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (height, width, 3), got shape {array.shape}")
    array = array.astype(np.float32)
    if rule.bgr:
        array = array[:, :, ::-1]
    if rule.divisor != 1.0:
        array = array / rule.divisor
    array = array - np.asarray(rule.mean, dtype=np.float32)
    if rule.std != (1.0, 1.0, 1.0):
        array = array / np.asarray(rule.std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def denormalize(pixel_values: np.ndarray, normalization: str = "caffe") -> np.ndarray:
    """Invert `normalize`: float CxHxW pixel values back to a uint8 HxWx3 RGB array (for pictures)."""
    rule = _normalization(normalization)
    array = np.asarray(pixel_values, dtype=np.float32).transpose(1, 2, 0)
    array = (
        array * np.asarray(rule.std, dtype=np.float32) + np.asarray(rule.mean, dtype=np.float32)
    ) * rule.divisor
    if rule.bgr:
        array = array[:, :, ::-1]
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def label_to_array(label: Image.Image | np.ndarray) -> np.ndarray:
    """A label map as an int64 HxW array (255 = ignore)."""
    array = np.asarray(label)
    if array.ndim != 2:
        raise ValueError(
            f"expected a single-channel label map of shape (height, width), got shape {array.shape}"
        )
    return array.astype(np.int64)


def random_crop(
    image: Image.Image, label: Image.Image | None, size: Sequence[int], rng: random.Random
) -> tuple[Image.Image, Image.Image | None]:
    """Crop the same random `size` = (height, width) window from an image and its label."""
    height, width = _as_height_width(size)
    if image.height < height or image.width < width:
        raise ValueError(f"crop size {height}x{width} is larger than the image {image.height}x{image.width}")
    top = rng.randint(0, image.height - height)
    left = rng.randint(0, image.width - width)
    box = (left, top, left + width, top + height)
    return image.crop(box), (label.crop(box) if label is not None else None)


def random_hflip(
    image: Image.Image, label: Image.Image | None, rng: random.Random
) -> tuple[Image.Image, Image.Image | None]:
    """Flip an image and its label left-right with probability 1/2."""
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        label = label.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if label is not None else None
    return image, label
