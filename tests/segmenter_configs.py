"""Tiny, randomly initialised configurations of transformers' per-pixel segmenters, for the tests of G of any
family: a few thousand parameters each, so that a forward pass on a 32x64 image takes milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import (
    BeitConfig,
    ConvNextConfig,
    DPTConfig,
    MobileViTConfig,
    MobileViTV2Config,
    PreTrainedConfig,
    SegformerConfig,
    SwinConfig,
    UperNetConfig,
)

from modeling_intrada.labels import get_label_space

# The families the issue names, each with the attribute of its auxiliary head when it has one.
FAMILIES = ("segformer", "upernet", "upernet-swin", "mobilevit", "mobilevitv2", "beit", "dpt")
WITH_AUXILIARY_HEAD = ("upernet", "upernet-swin", "beit", "dpt")


def tiny_config(family: str) -> PreTrainedConfig:
    """A tiny config of `family` (a model type, or `upernet-swin`: UperNet on Swin instead of ConvNeXt), with
    the classes of the synthetic label space (Cityscapes' 19)."""
    configs = {
        "segformer": lambda: SegformerConfig(
            num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
            patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2], decoder_hidden_size=16,
        ),
        "upernet": lambda: UperNetConfig(
            backbone_config=ConvNextConfig(
                hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                out_features=["stage1", "stage2", "stage3", "stage4"],
            ),
            hidden_size=16, auxiliary_in_channels=24, auxiliary_channels=8, use_auxiliary_head=True, pool_scales=[1, 2],
        ),
        "upernet-swin": lambda: UperNetConfig(
            backbone_config=SwinConfig(
                image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=2,
                out_features=["stage1", "stage2", "stage3", "stage4"],
            ),
            hidden_size=16, auxiliary_in_channels=32, auxiliary_channels=8, use_auxiliary_head=True, pool_scales=[1, 2],
        ),
        "mobilevit": lambda: MobileViTConfig(
            image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 48],
            num_attention_heads=2, aspp_out_channels=16, atrous_rates=[2, 4, 6], conv_kernel_size=3, patch_size=2,
        ),
        "mobilevitv2": lambda: MobileViTV2Config(
            image_size=64, width_multiplier=0.25, aspp_out_channels=16, atrous_rates=[2, 4, 6]
        ),
        "beit": lambda: BeitConfig(
            image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=37, out_indices=[1, 2, 3, 4], use_auxiliary_head=True, auxiliary_channels=8,
            pool_scales=[1, 2], use_relative_position_bias=True,
        ),
        "dpt": lambda: DPTConfig(
            image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=37, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 16],
            fusion_hidden_size=16, use_auxiliary_head=True,
        ),
    }  # fmt: skip
    config = configs[family]()
    names = list(get_label_space("synthetic").class_names)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    return config


def write_tiny_config(family: str, folder: Path) -> Path:
    """`family`'s tiny config as a JSON file, what `--generator_config` takes."""
    path = folder / f"{family}.json"
    path.write_text(json.dumps(tiny_config(family).to_dict()))
    return path
