"""The digit classifier (LeNet variant / DTN) and the feature discriminator of SPEC section 8."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification
from weights import assert_same_weights

from modeling_intrada import (
    DigitClassifier,
    DigitClassifierConfig,
    DigitClassifierOutput,
    FeatureDiscriminator,
    FeatureDiscriminatorConfig,
)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lenet_architecture_and_size():
    model = DigitClassifier(DigitClassifierConfig(architecture="lenet"))
    kinds = [type(m).__name__ for m in model.features]
    # conv 5x5 20 -> pool -> ReLU -> conv 5x5 50 -> dropout -> pool -> ReLU -> fc 500 (SPEC 8)
    assert kinds == [
        "Conv2d",
        "MaxPool2d",
        "ReLU",
        "Conv2d",
        "Dropout2d",
        "MaxPool2d",
        "ReLU",
        "Flatten",
        "Linear",
    ]
    assert [type(m).__name__ for m in model.classifier] == ["ReLU", "Dropout", "Linear"]
    conv1, conv2 = model.features[0], model.features[3]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size) == (1, 20, (5, 5))
    assert (conv2.out_channels, conv2.kernel_size) == (50, (5, 5))
    # 1*20*25+20 + 20*50*25+50 + 800*500+500 + 500*10+10
    assert count(model) == 520 + 25_050 + 400_500 + 5_010 == 431_080
    output = model(pixel_values=torch.randn(3, 1, 28, 28), labels=torch.tensor([0, 1, 2]))
    assert isinstance(output, DigitClassifierOutput)
    assert output.logits.shape == (3, 10) and output.features.shape == (3, 500)
    assert output.loss is not None and output.loss.ndim == 0


def test_dtn_architecture_and_size():
    model = DigitClassifier(DigitClassifierConfig(architecture="dtn"))
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    assert all(c.stride == (2, 2) and c.kernel_size == (5, 5) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 3
    assert isinstance(model.features[-1], nn.BatchNorm1d)
    # convs + BN, fc 4096 -> 512 + BN1d, fc 512 -> 10
    expected = 4_864 + 128 + 204_928 + 256 + 819_456 + 512 + 2_097_664 + 1_024 + 5_130
    assert count(model) == expected == 3_133_962
    output = model.eval()(pixel_values=torch.randn(2, 3, 32, 32))
    assert output.logits.shape == (2, 10) and output.features.shape == (2, 512) and output.loss is None


def test_config_defaults_and_errors():
    config = DigitClassifierConfig()
    assert (config.architecture, config.num_channels, config.image_size, config.feature_size) == (
        "lenet",
        1,
        28,
        500,
    )
    assert config.num_labels == 10 and config.feature_map_size == 4
    assert DigitClassifierConfig(architecture="dtn").feature_map_size == 4
    assert DigitClassifierConfig(architecture="lenet", image_size=32).feature_map_size == 5
    with pytest.raises(ValueError, match="Unknown architecture 'vgg'"):
        DigitClassifierConfig(architecture="vgg")
    with pytest.raises(ValueError, match="too small"):
        DigitClassifierConfig(image_size=8)
    with pytest.raises(ValueError, match="conv dropout"):
        DigitClassifierConfig(architecture="dtn", conv_dropout=[0.1])
    with pytest.raises(ValueError, match="positive"):
        FeatureDiscriminatorConfig(input_size=0)


def test_classifier_refuses_wrong_input():
    model = DigitClassifier(DigitClassifierConfig())
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\) for the lenet"):
        model(pixel_values=torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="FeatureDiscriminator expects"):
        FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=500))(torch.randn(2, 512))


def test_reference_init():
    # Classifier: CyCADA's Xavier-normal weights and zero biases; discriminator: PyTorch's default.
    model = DigitClassifier(DigitClassifierConfig())
    fc = model.features[-1]
    xavier_std = math.sqrt(2.0 / (fc.in_features + fc.out_features))
    assert abs(fc.weight.std().item() - xavier_std) < 0.05 * xavier_std
    assert fc.weight.abs().max() > 2 * xavier_std  # normal, not uniform within a small bound
    assert all(m.bias.abs().max() == 0 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    disc = FeatureDiscriminator(FeatureDiscriminatorConfig())
    first = disc.layers[0]
    bound = 1 / math.sqrt(500)
    assert first.weight.abs().max() <= bound and first.weight.std() > 0.9 * bound / math.sqrt(3)
    assert 0 < first.bias.abs().max() <= bound


def test_feature_discriminator():
    disc = FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=500))
    # fc 500 -> 500 -> 500 -> 1 with ReLU (SPEC 8)
    assert [type(m).__name__ for m in disc.layers] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert count(disc) == 250_500 + 250_500 + 501
    assert disc(torch.randn(4, 500)).shape == (4, 1)
    assert FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=512))(torch.randn(2, 512)).shape == (
        2,
        1,
    )


@pytest.mark.parametrize("architecture", ["lenet", "dtn"])
def test_classifier_round_trip_and_auto(tmp_path, architecture):
    model = DigitClassifier(DigitClassifierConfig(architecture=architecture)).eval()
    c = model.config
    x = torch.randn(2, c.num_channels, c.image_size, c.image_size)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DigitClassifierConfig)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is DigitClassifier and loaded.config.architecture == architecture
    assert_same_weights(model, loaded)
    torch.testing.assert_close(model(pixel_values=x).logits, loaded(pixel_values=x).logits)
    torch.testing.assert_close(model(pixel_values=x).features, loaded(pixel_values=x).features)
    assert type(AutoModel.from_pretrained(tmp_path)) is DigitClassifier
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageClassification"].endswith("DigitClassifier")
    assert (tmp_path / "modeling_digit_classifier.py").is_file()


def test_discriminator_round_trip(tmp_path):
    disc = FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=512, hidden_size=64))
    disc.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is FeatureDiscriminator and loaded.config.hidden_size == 64
    x = torch.randn(3, 512)
    assert_same_weights(disc, loaded)
    torch.testing.assert_close(disc(x), loaded(x))
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"].endswith(
        "FeatureDiscriminator"
    )
