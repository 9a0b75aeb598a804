"""The digit classifier of the paper's digits experiments (SPEC section 8): CyCADA's LeNet variant and DTN.

Blocks first, model last: the two feature extractors (convs + the fc layer whose output the feature-level
discriminator sees), then `DigitClassifier`, which adds ReLU -> dropout -> fc `num_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_digit_classifier import DigitClassifierConfig


def lenet_features(config: DigitClassifierConfig) -> nn.Sequential:
    """conv 5x5 20 -> max-pool 2 -> ReLU -> conv 5x5 50 -> channel dropout -> max-pool 2 -> ReLU -> flatten -> fc."""
    side = config.feature_map_size
    return nn.Sequential(
        nn.Conv2d(config.num_channels, 20, kernel_size=5),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(20, 50, kernel_size=5),
        nn.Dropout2d(config.conv_dropout[0]),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(50 * side * side, config.feature_size),
    )


def dtn_features(config: DigitClassifierConfig) -> nn.Sequential:
    """Three (conv 5x5 stride 2 -> BatchNorm -> channel dropout -> ReLU), 64/128/256 -> flatten -> fc -> BatchNorm."""
    layers: list[nn.Module] = []
    channels = [config.num_channels, 64, 128, 256]
    for in_channels, out_channels, dropout in zip(channels[:-1], channels[1:], config.conv_dropout):
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=5, stride=2, padding=2),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
            nn.ReLU(),
        ]
    side = config.feature_map_size
    layers += [
        nn.Flatten(),
        nn.Linear(256 * side * side, config.feature_size),
        nn.BatchNorm1d(config.feature_size),
    ]
    return nn.Sequential(*layers)


FEATURE_EXTRACTORS = {"lenet": lenet_features, "dtn": dtn_features}


@dataclass
class DigitClassifierOutput(ModelOutput):
    """Output of [`DigitClassifier`].

    Args:
        loss: cross-entropy of `logits` against `labels`, when `labels` are given.
        logits: class scores `(batch, num_labels)`.
        features: the vector before the classifier's ReLU `(batch, feature_size)`: what the feature-level
            discriminator sees.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


class DigitClassifierPreTrainedModel(PreTrainedModel):
    config_class = DigitClassifierConfig
    base_model_prefix = "digit_classifier"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """CyCADA's init of its digit classifiers (`init_weights` in `cycada/models/util.py`): Xavier-normal
        conv and fc weights, zero biases, BatchNorm reset. Written with `transformers.initialization`, so
        tensors loaded from a checkpoint are skipped."""
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.xavier_normal_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    def save_pretrained(self, save_directory: str | PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with `AutoModel` in the saved `auto_map` beside the task class.

        `register_for_auto_class` records one Auto class per model class, and a folder loaded with
        `trust_remote_code=True` in a Python without this package should answer `AutoModel` as well.
        """
        if self._auto_class is not None and self._auto_class != "AutoModel":
            reference = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": reference}
        return super().save_pretrained(save_directory, *args, **kwargs)


class DigitClassifier(DigitClassifierPreTrainedModel):
    """G_inter / G_intra of the digits experiments: `forward(pixel_values, labels=None)` returns
    [`DigitClassifierOutput`] with `logits` and the `features` of the feature-level alignment."""

    def __init__(self, config: DigitClassifierConfig):
        super().__init__(config)
        self.features = FEATURE_EXTRACTORS[config.architecture](config)
        self.classifier = nn.Sequential(
            nn.ReLU(),
            nn.Dropout(config.classifier_dropout),
            nn.Linear(config.feature_size, config.num_labels),
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DigitClassifierOutput | tuple:
        c = self.config
        expected = (c.num_channels, c.image_size, c.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {', '.join(map(str, expected))}) for the {c.architecture} "
                f"classifier, got {tuple(pixel_values.shape)}"
            )
        features = self.features(pixel_values)
        logits = self.classifier(features)
        loss = F.cross_entropy(logits.float(), labels.long()) if labels is not None else None
        return_dict = return_dict if return_dict is not None else c.return_dict
        if not return_dict:
            return tuple(v for v in (loss, logits, features) if v is not None)
        return DigitClassifierOutput(loss=loss, logits=logits, features=features)
