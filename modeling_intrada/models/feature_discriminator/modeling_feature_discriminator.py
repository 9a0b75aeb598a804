"""The feature-level discriminator of ADDA/CyCADA (SPEC section 8): one per stage of the digits experiments."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_feature_discriminator import FeatureDiscriminatorConfig


class FeatureDiscriminator(PreTrainedModel):
    """Maps vectors `(batch, input_size)` to domain logits `(batch, 1)` (0 = source / easy, 1 = target / hard).

    fc `input_size` -> `hidden_size` -> ReLU -> fc `hidden_size` -> ReLU -> fc 1.
    """

    config_class = FeatureDiscriminatorConfig
    base_model_prefix = "discriminator"
    main_input_name = "features"

    def __init__(self, config: FeatureDiscriminatorConfig):
        super().__init__(config)
        self.layers = nn.Sequential(
            nn.Linear(config.input_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, 1),
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default Linear init: CyCADA's ADDA code never re-initialises its discriminator."""
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(module.weight.shape[1])
            init.uniform_(module.bias, -bound, bound)

    def forward(self, features: torch.Tensor, **kwargs) -> torch.Tensor:
        """Domain logits for `features` of shape (batch, input_size)."""
        if features.dim() != 2 or features.shape[1] != self.config.input_size:
            raise ValueError(
                f"FeatureDiscriminator expects vectors of shape (batch, {self.config.input_size}), "
                f"got {tuple(features.shape)}"
            )
        return self.layers(features)
