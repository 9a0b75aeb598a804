"""The fully convolutional discriminator (SPEC section 2): one per output level (aux and main)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_fc_discriminator import FCDiscriminatorConfig


class FCDiscriminator(PreTrainedModel):
    """Maps a (batch, C, H, W) map to (batch, 1, ~H/32, ~W/32) domain logits (0 = source, 1 = target).

    `layers` is a Sequential with the reference's indices (`layers.0`, `layers.2`, ..., `layers.8`), so the
    authors' checkpoints (`0.weight`, ...) convert by adding a prefix.
    """

    config_class = FCDiscriminatorConfig
    base_model_prefix = "discriminator"
    main_input_name = "pixel_values"

    def __init__(self, config: FCDiscriminatorConfig):
        super().__init__(config)
        channels = [config.num_channels] + [config.ndf * 2**i for i in range(4)]
        layers: list[nn.Module] = []
        for in_channels, out_channels in itertools.pairwise(channels):
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
                nn.LeakyReLU(config.negative_slope, inplace=True),
            ]
        layers.append(nn.Conv2d(channels[-1], 1, kernel_size=4, stride=2, padding=1))
        self.layers = nn.Sequential(*layers)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default conv init (the reference never re-initialises the discriminator)."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(module.bias, -bound, bound)

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """Domain logits for a map of shape (batch, num_channels, height, width)."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"FCDiscriminator expects a map of shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        return self.layers(pixel_values)
