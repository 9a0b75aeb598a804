"""DeepLab-v2: architecture facts of SPEC section 1, persistence, Auto classes, remote code, bad inputs."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSemanticSegmentation
from weights import assert_same_weights

from modeling_intrada import (
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    DeepLabV2ImageProcessor,
    logits_size,
)
from modeling_intrada.models.deeplabv2.loss_deeplabv2 import deeplab_loss


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def resnet101() -> DeepLabV2ForSemanticSegmentation:
    torch.manual_seed(0)
    return DeepLabV2ForSemanticSegmentation(DeepLabV2Config())


@pytest.fixture
def small_model() -> DeepLabV2ForSemanticSegmentation:
    return DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="resnet50", num_labels=5)).eval()


def test_parameter_counts_match_spec(resnet101):
    assert count(resnet101) == 44_601_560
    assert count(resnet101.backbone) == 42_500_160
    assert count(resnet101.aux_head) == 700_492
    assert count(resnet101.main_head) == 1_400_908
    single = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(multi_level=False))
    assert count(single) == 43_901_068
    assert single.aux_head is None


def test_caffe_style_blocks(resnet101):
    block = resnet101.backbone.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert resnet101.backbone.layer3[5].conv2.dilation == (2, 2) and resnet101.backbone.layer3[
        5
    ].conv2.padding == (2, 2)
    assert resnet101.backbone.layer4[2].conv2.dilation == (4, 4)
    assert all(getattr(resnet101.backbone, f"layer{i}")[0].downsample is not None for i in range(1, 5))
    assert resnet101.backbone.maxpool.ceil_mode
    assert [conv.dilation[0] for conv in resnet101.main_head.convs] == [6, 12, 18, 24]
    assert all(conv.bias is not None for conv in resnet101.main_head.convs)
    assert not any(m.bias is not None for m in resnet101.backbone.modules() if isinstance(m, torch.nn.Conv2d))


def test_logit_shape_at_paper_sizes_on_meta_device():
    # The meta device propagates shapes without computing: the real ResNet-101 at 512x1024 and 720x1280.
    with torch.device("meta"):
        model = DeepLabV2ForSemanticSegmentation(DeepLabV2Config())
        out = model(torch.empty(1, 3, 512, 1024))
        assert tuple(out.logits.shape) == (1, 19, 65, 129)
        assert tuple(out.aux_logits.shape) == (1, 19, 65, 129)
        assert tuple(model(torch.empty(1, 3, 720, 1280)).logits.shape[-2:]) == (91, 161)
    assert logits_size(512, 1024) == (65, 129)
    assert logits_size(720, 1280) == (91, 161)


@pytest.mark.parametrize("size", [(64, 128), (65, 97), (33, 50), (100, 37)])
def test_logits_size_formula_matches_forward(small_model, size):
    with torch.no_grad():
        logits = small_model(torch.randn(1, 3, *size)).logits
    assert tuple(logits.shape[-2:]) == logits_size(*size)


def test_reference_init(resnet101):
    head = resnet101.main_head.convs[0]
    assert abs(head.weight.std().item() - 0.01) < 1e-3
    assert torch.count_nonzero(head.bias) == 0
    assert abs(resnet101.backbone.layer3[0].conv2.weight.std().item() - 0.01) < 1e-3
    bn = resnet101.backbone.bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_batchnorm_affine_never_trained(resnet101):
    for module in resnet101.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert not module.weight.requires_grad and not module.bias.requires_grad


def test_bn_modes(small_model):
    x = torch.randn(2, 3, 48, 48)
    reference = small_model.train()
    before = reference.backbone.bn1.running_mean.clone()
    reference(x)
    assert not torch.equal(before, reference.backbone.bn1.running_mean)
    assert reference.backbone.bn1.training

    frozen = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone="resnet50", num_labels=5, bn_mode="frozen")
    )
    frozen.train()
    assert frozen.training and not frozen.backbone.bn1.training and frozen.main_head.training
    before = frozen.backbone.bn1.running_mean.clone()
    frozen(x)
    assert torch.equal(before, frozen.backbone.bn1.running_mean)


def test_loss_is_spec_section_3(small_model):
    x = torch.randn(2, 3, 64, 64)
    labels = torch.randint(0, 5, (2, 64, 64))
    labels[:, :10] = 255
    out = small_model(x, labels=labels)
    main = torch.nn.functional.cross_entropy(
        torch.nn.functional.interpolate(out.logits, size=(64, 64), mode="bilinear", align_corners=True),
        labels,
        ignore_index=255,
    )
    aux = torch.nn.functional.cross_entropy(
        torch.nn.functional.interpolate(out.aux_logits, size=(64, 64), mode="bilinear", align_corners=True),
        labels,
        ignore_index=255,
    )
    torch.testing.assert_close(out.loss, main + 0.1 * aux)
    torch.testing.assert_close(deeplab_loss(out.logits, out.aux_logits, labels, ignore_index=255), out.loss)


def test_save_load_round_trip_is_exact_and_safetensors_only(small_model, tmp_path):
    small_model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pth", ".pt")) for f in files)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert type(loaded) is DeepLabV2ForSemanticSegmentation
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(small_model(x).logits, loaded(x).logits)
        torch.testing.assert_close(small_model(x).aux_logits, loaded(x).aux_logits)
    assert_same_weights(small_model, loaded)
    assert type(AutoConfig.from_pretrained(tmp_path)) is DeepLabV2Config
    assert type(AutoModel.from_pretrained(tmp_path)) is DeepLabV2ForSemanticSegmentation


def test_trust_remote_code_in_a_fresh_interpreter(small_model, tmp_path):
    small_model.save_pretrained(tmp_path)
    DeepLabV2ImageProcessor(size={"height": 64, "width": 96}).save_pretrained(tmp_path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.save({"x": x, "y": small_model(x).logits}, tmp_path / "io.pt")
    code = f"""
import sys, torch
from transformers import AutoModelForSemanticSegmentation, AutoImageProcessor
model = AutoModelForSemanticSegmentation.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
assert "modeling_intrada" not in sys.modules, "the package was imported"
io = torch.load({str(tmp_path / "io.pt")!r})
with torch.no_grad():
    torch.testing.assert_close(model(io["x"]).logits, io["y"])
print("OK", type(model).__module__, type(processor).__name__)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path.parent, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OK transformers_modules" in result.stdout and "DeepLabV2ImageProcessor" in result.stdout


def test_parameter_groups(resnet101):
    groups = resnet101.parameter_groups(2.5e-4)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert groups[0]["lr"] == 2.5e-4 and groups[1]["lr"] == pytest.approx(2.5e-3)
    assert groups[1]["lr_multiplier"] == 10.0
    backbone_ids = {id(p) for p in groups[0]["params"]}
    assert len(backbone_ids) == len(groups[0]["params"])
    bn_params = {
        id(p) for m in resnet101.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()
    }
    assert not backbone_ids & bn_params
    assert sum(p.numel() for p in groups[0]["params"]) == sum(
        m.weight.numel() for m in resnet101.backbone.modules() if isinstance(m, torch.nn.Conv2d)
    )
    assert sum(p.numel() for p in groups[1]["params"]) == 700_492 + 1_400_908


def test_reference_duplicates_knob(resnet101):
    params = resnet101.parameter_groups(1.0, reference_duplicates=True)[0]["params"]
    multiplicity = {}
    for p in params:
        multiplicity[id(p)] = multiplicity.get(id(p), 0) + 1
    backbone = resnet101.backbone
    assert multiplicity[id(backbone.conv1.weight)] == 1  # appended directly, no ancestors
    assert multiplicity[id(backbone.layer1[0].conv1.weight)] == 3  # layer1, layer1.0, conv1
    assert multiplicity[id(backbone.layer3[7].conv2.weight)] == 3
    assert multiplicity[id(backbone.layer2[0].downsample[0].weight)] == 4  # + downsample Sequential
    assert set(multiplicity) == {id(p) for p in resnet101.backbone_parameters()}


def test_reference_duplicates_step_tensors_several_times():
    # Plain SGD: a tensor listed k times moves k times as far, which is the reference's effective backbone lr.
    model = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="resnet50", num_labels=3))
    weight = model.backbone.layer1[0].conv1.weight
    weight.grad = torch.ones_like(weight)
    before = weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = torch.optim.SGD(model.parameter_groups(0.1, reference_duplicates=True)[:1], lr=0.1)
    optimizer.step()
    torch.testing.assert_close(before - weight.detach(), torch.full_like(weight, 0.3))


@pytest.mark.parametrize(
    "bad_input, message",
    [
        (torch.randn(1, 4, 32, 32), "3 channels"),
        (torch.randn(3, 32, 32), "shape"),
        (torch.randn(1, 1, 3, 32, 32), "shape"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "must be a float tensor .* got torch.uint8"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.float64), "must be a float tensor .* got torch.float64"),
    ],
)
def test_bad_pixel_values(small_model, bad_input, message):
    with pytest.raises(ValueError, match=message):
        small_model(bad_input)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "vgg16"}, "Unknown backbone"),
        ({"backbone": "timm:"}, "Unknown backbone"),
        ({"bn_mode": "sync"}, "bn_mode"),
        ({"num_labels": 0}, "num_labels must be at least 1"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepLabV2Config(**kwargs)


def test_unknown_timm_backbone():
    with pytest.raises(ValueError, match="timm"):
        DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone="timm:no_such_network_exists"))


def batch_norm_affine(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [
        p
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for p in m.parameters()
    ]


@pytest.mark.parametrize(
    "backbone, num_backbone_tensors", [("resnet50", 53), ("timm:mobilenetv3_small_050", None)]
)
def test_batchnorm_affine_stays_frozen_after_from_pretrained(backbone, num_backbone_tensors, tmp_path):
    fresh = DeepLabV2ForSemanticSegmentation(DeepLabV2Config(backbone=backbone, num_labels=3))
    fresh.save_pretrained(tmp_path)
    loaded_models = [
        DeepLabV2ForSemanticSegmentation.from_pretrained(tmp_path),
        AutoModelForSemanticSegmentation.from_pretrained(tmp_path),
        DeepLabV2ForSemanticSegmentation.from_pretrained(tmp_path, output_loading_info=True)[0],
    ]
    fresh_groups = [len(g["params"]) for g in fresh.parameter_groups(0.1)]
    fresh_duplicates = len(fresh.parameter_groups(0.1, reference_duplicates=True)[0]["params"])
    if num_backbone_tensors is not None:
        assert fresh_groups[0] == num_backbone_tensors  # the convs only
    for loaded in loaded_models:
        affine = batch_norm_affine(loaded.backbone)
        assert affine and not any(p.requires_grad for p in affine)
        assert [len(g["params"]) for g in loaded.parameter_groups(0.1)] == fresh_groups
        assert len(loaded.parameter_groups(0.1, reference_duplicates=True)[0]["params"]) == fresh_duplicates
