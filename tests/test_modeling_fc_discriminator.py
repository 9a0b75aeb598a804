"""The fully convolutional discriminator of SPEC section 2."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel
from weights import assert_same_weights

from modeling_intrada import FCDiscriminator, FCDiscriminatorConfig


def test_parameter_count_and_output_size():
    discriminator = FCDiscriminator(FCDiscriminatorConfig(num_channels=19))
    assert sum(p.numel() for p in discriminator.parameters()) == 2_781_121
    with torch.device("meta"):
        meta = FCDiscriminator(FCDiscriminatorConfig(num_channels=19))
        assert tuple(meta(torch.empty(1, 19, 512, 1024)).shape) == (1, 1, 16, 32)
    assert tuple(discriminator(torch.randn(2, 19, 64, 128)).shape) == (2, 1, 2, 4)


def test_architecture():
    layers = FCDiscriminator(FCDiscriminatorConfig(num_channels=7)).layers
    convs = [m for m in layers if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert [type(m).__name__ for m in layers].count("LeakyReLU") == 4
    assert all(m.negative_slope == 0.2 for m in layers if isinstance(m, torch.nn.LeakyReLU))
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Sigmoid)) for m in layers)
    assert [k for k in FCDiscriminator(FCDiscriminatorConfig()).state_dict()][:4] == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.2.weight",
        "layers.2.bias",
    ]


def test_round_trip(tmp_path):
    discriminator = FCDiscriminator(FCDiscriminatorConfig(num_channels=5)).eval()
    discriminator.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    x = torch.randn(1, 5, 64, 64)
    assert type(loaded) is FCDiscriminator
    assert_same_weights(discriminator, loaded)
    torch.testing.assert_close(discriminator(x), loaded(x))


def test_bad_input():
    discriminator = FCDiscriminator(FCDiscriminatorConfig(num_channels=5))
    with pytest.raises(ValueError, match=r"\(batch, 5, height, width\)"):
        discriminator(torch.randn(1, 19, 64, 64))
    with pytest.raises(ValueError, match="positive"):
        FCDiscriminatorConfig(num_channels=0)
