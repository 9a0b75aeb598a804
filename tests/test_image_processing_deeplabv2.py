"""The image processor: resize, the two normalisations, label maps, post-processing, the HF pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, pipeline

from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation, DeepLabV2ImageProcessor
from modeling_intrada.models.deeplabv2.image_transforms import CAFFE_BGR_MEAN, IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))


def test_caffe_normalization_is_bgr_minus_mean_without_scaling(image):
    processor = DeepLabV2ImageProcessor(do_resize=False)
    pixels = processor(image, return_tensors="np")["pixel_values"][0]
    rgb = np.asarray(image).astype(np.float32)
    np.testing.assert_allclose(pixels[0], rgb[:, :, 2] - CAFFE_BGR_MEAN[0], rtol=0, atol=1e-4)
    np.testing.assert_allclose(pixels[2], rgb[:, :, 0] - CAFFE_BGR_MEAN[2], rtol=0, atol=1e-4)


def test_imagenet_normalization(image):
    pixels = DeepLabV2ImageProcessor(do_resize=False, normalization="imagenet")(image)["pixel_values"][0]
    rgb = np.asarray(image).astype(np.float32) / 255
    np.testing.assert_allclose(pixels[1], (rgb[:, :, 1] - IMAGENET_MEAN[1]) / IMAGENET_STD[1], atol=1e-5)


def test_resize_bicubic_images_and_nearest_labels(image):
    label = Image.fromarray(np.random.default_rng(1).choice([0, 3, 255], (40, 60)).astype(np.uint8))
    batch = DeepLabV2ImageProcessor(size={"height": 32, "width": 48})(
        [image, image], segmentation_maps=[label, label], return_tensors="pt"
    )
    assert tuple(batch["pixel_values"].shape) == (2, 3, 32, 48)
    assert tuple(batch["labels"].shape) == (2, 32, 48) and batch["labels"].dtype == torch.int64
    assert set(batch["labels"].unique().tolist()) <= {0, 3, 255}  # nearest: no new values
    expected = np.asarray(image.resize((48, 32), Image.Resampling.BICUBIC)).astype(np.float32)
    np.testing.assert_allclose(
        batch["pixel_values"][0, 2].numpy(), expected[:, :, 0] - CAFFE_BGR_MEAN[2], atol=1e-4
    )


def test_post_process_to_any_size():
    processor = DeepLabV2ImageProcessor()
    logits = torch.randn(2, 4, 9, 17)
    maps = processor.post_process_semantic_segmentation(
        {"logits": logits}, target_sizes=[(64, 128), (20, 30)]
    )
    assert [tuple(m.shape) for m in maps] == [(64, 128), (20, 30)]
    corner = torch.nn.functional.interpolate(logits[:1], size=(64, 128), mode="bilinear", align_corners=True)
    assert torch.equal(maps[0], corner[0].argmax(0))
    assert tuple(processor.post_process_semantic_segmentation({"logits": logits})[1].shape) == (9, 17)


def test_bad_inputs(image):
    processor = DeepLabV2ImageProcessor()
    with pytest.raises(ValueError, match="normalization"):
        DeepLabV2ImageProcessor(normalization="zscore")
    with pytest.raises(ValueError, match="RGB"):
        processor(np.zeros((10, 10, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        processor(image, segmentation_maps=np.full((40, 60), 300))
    with pytest.raises(ValueError, match="segmentation maps"):
        processor([image, image], segmentation_maps=[np.zeros((40, 60))])


def test_save_load_and_pipeline_returns_per_class_masks(tmp_path, image):
    config = DeepLabV2Config(backbone="resnet50", id2label={0: "road", 1: "car", 2: "sky"})
    DeepLabV2ForSemanticSegmentation(config).save_pretrained(tmp_path)
    DeepLabV2ImageProcessor(size={"height": 48, "width": 64}).save_pretrained(tmp_path)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), DeepLabV2ImageProcessor)
    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    result = segmenter(image)
    assert result and {r["label"] for r in result} <= {"road", "car", "sky"}
    masks = [np.asarray(r["mask"]) for r in result]
    assert all(m.shape == (40, 60) for m in masks)
    coverage = sum((m == 255).astype(int) for m in masks)
    assert np.all(coverage == 1)  # every pixel in exactly one class mask


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((8, 8, 3), np.nan, dtype=np.float32), "NaN or infinite"),
        (np.zeros((0, 0, 3), dtype=np.uint8), "at least 1x1 pixels"),
    ],
)
def test_nan_and_empty_images_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        DeepLabV2ImageProcessor()(image)
