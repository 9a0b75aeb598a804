"""Image processor of DeepLab-v2: resize, normalise the reference way (or ImageNet's), post-process logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .image_transforms import NORMALIZATIONS, label_to_array, normalize, resize_image, resize_label
from .loss_deeplabv2 import upsample_logits


def _to_pil(image: Any, mode: str) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert(mode) if mode == "RGB" else image
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if mode == "RGB" and array.ndim == 3 and array.shape[0] == 3 and array.shape[2] != 3:
        array = array.transpose(1, 2, 0)  # channels-first
    if mode == "RGB" and (array.ndim != 3 or array.shape[2] != 3):
        raise ValueError(
            f"expected an RGB image (H x W x 3 or 3 x H x W), got an array of shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"expected an image of at least 1x1 pixels, got an array of shape {array.shape}")
    if mode == "RGB" and array.dtype != np.uint8:
        if not np.isfinite(array).all():
            raise ValueError(
                "the image holds NaN or infinite values: expected pixel values in 0..255 or 0..1"
            )
        if array.size and float(array.max()) <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if mode == "L":
        if array.ndim != 2:
            raise ValueError(
                f"expected a label map of shape (height, width), got an array of shape {array.shape}"
            )
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"label values must lie in 0..255 (255 = ignore), got {array.min()}..{array.max()}"
            )
        array = array.astype(np.uint8)
    return Image.fromarray(array)


def _as_list(images: Any) -> list:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


class DeepLabV2ImageProcessor(BaseImageProcessor):
    r"""
    Prepares images (and optionally label maps) for [`DeepLabV2ForSemanticSegmentation`].

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Resize images (bicubic) and label maps (nearest) to `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 512, "width": 1024}`):
            Target size; the paper's Cityscapes input is 1024x512, GTA5's 1280x720.
        normalization (`str`, *optional*, defaults to `"caffe"`):
            `"caffe"`: RGB -> BGR minus the Caffe mean, values left in [0, 255] (the reference ResNet-101).
            `"imagenet"`: scale to [0, 1], ImageNet mean/std (timm backbones).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | None = None,
        normalization: str = "caffe",
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        auto_map = kwargs.pop("auto_map", None)
        super().__init__(**kwargs)
        if auto_map is not None:
            self.auto_map = auto_map
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.do_resize = bool(do_resize)
        self.size = dict(size) if size is not None else {"height": 512, "width": 1024}
        self.normalization = normalization

    def to_dict(self) -> dict[str, Any]:
        output = {
            "do_resize": self.do_resize,
            "size": dict(self.size),
            "normalization": self.normalization,
            "image_processor_type": type(self).__name__,
        }
        if getattr(self, "auto_map", None):  # set by save_pretrained for trust_remote_code loading
            output["auto_map"] = self.auto_map
        return output

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any | None = None,
        do_resize: bool | None = None,
        size: dict[str, int] | None = None,
        normalization: str | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Return `pixel_values` (batch, 3, H, W) float32 and, with `segmentation_maps`, `labels` (batch, H, W).

        Images may be PIL images, HxWx3 uint8 arrays or tensors; label maps PIL images or HxW arrays with
        values 0..C-1 and 255 = ignore.
        """
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else size
        normalization = self.normalization if normalization is None else normalization
        images = [_to_pil(image, "RGB") for image in _as_list(images)]
        if do_resize:
            images = [resize_image(image, size) for image in images]
        if len({image.size for image in images}) > 1:
            raise ValueError("images of different sizes cannot be batched: pass do_resize=True or one size")
        data = {"pixel_values": np.stack([normalize(image, normalization) for image in images])}
        if segmentation_maps is not None:
            maps = [_to_pil(label, "L") for label in _as_list(segmentation_maps)]
            if len(maps) != len(images):
                raise ValueError(f"got {len(images)} images but {len(maps)} segmentation maps")
            if do_resize:
                maps = [resize_label(label, size) for label in maps]
            data["labels"] = np.stack([label_to_array(label) for label in maps])
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images: Any, segmentation_maps: Any | None = None, **kwargs) -> BatchFeature:
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def post_process_semantic_segmentation(
        self, outputs: Any, target_sizes: Sequence[Sequence[int]] | None = None
    ) -> list[torch.Tensor]:
        """Turn model outputs into one (height, width) map of class indices per image.

        With `target_sizes` (one (height, width) per image) the logits are upsampled bilinearly
        (align_corners=True, the reference's convention) before the argmax; without, the maps keep the
        logits' resolution.
        """
        logits = outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"got {len(logits)} images but {len(target_sizes)} target sizes")
        maps = []
        for index in range(len(logits)):
            item = logits[index : index + 1]
            if target_sizes is not None:
                item = upsample_logits(item.float(), tuple(int(s) for s in target_sizes[index]))
            maps.append(item[0].argmax(dim=0))
        return maps
