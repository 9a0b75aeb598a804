"""What the adversarial stage loop needs to know about a model and a framework (SPEC sections 3 and 5).

The loop (`modeling_intrada/training/stage_loop.py`) is written once for stage 1 and stage 3, for segmentation and for
digit classification. A *task* tells it how to run the generator (one output per level: aux and main for
DeepLab-v2, one for a classifier), the supervised loss, and what the discriminator of each level sees,
which is the only thing the frameworks differ in:

- `advent`: the weighted self-information map `-p log2 p / log2 C` (C channels), the paper's default;
- `adaptsegnet`: the softmax;
- `feature`: the generator's features (feature-level alignment, as for digits);
- `scores`: a classifier's raw class scores (the logits), what CyCADA's released ADDA code feeds its
  discriminator (classifiers only);
- `minent`: no discriminator, the entropy itself is minimised;
- `source_only`: no adaptation term.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modeling_intrada.labels import IGNORE_INDEX
from modeling_intrada.method.losses import (
    entropy_loss,
    segmentation_loss,
    upsample_logits,
    weighted_self_information,
)

FRAMEWORKS = ("advent", "adaptsegnet", "minent", "source_only", "feature", "scores")
DISCRIMINATOR_FRAMEWORKS = ("advent", "adaptsegnet", "feature", "scores")
CLASSIFIER_FRAMEWORKS = ("feature", "scores")  # what a classifier's output has, not a segmentation map's
# Domain labels of the discriminators: 0 = source (or easy split), 1 = target (or hard split).
SOURCE_LABEL = 0.0
TARGET_LABEL = 1.0


def check_framework(framework: str) -> str:
    """Return `framework` if known, else raise with the list of known ones."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
    return framework


def poly_learning_rate(base_lr: float, iteration: int, max_iters: int, power: float = 0.9) -> float:
    """The poly schedule `base_lr * (1 - iteration / max_iters) ** power` (SPEC 3), in optimizer steps."""
    if max_iters <= 0:
        raise ValueError(f"max_iters must be positive, got {max_iters}")
    progress = min(max(iteration, 0), max_iters) / max_iters
    return base_lr * (1.0 - progress) ** power


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Set every group's lr to `learning_rate` times its `lr_multiplier` (1 when absent; heads have 10)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_multiplier", 1.0)


@dataclass
class LevelOutput:
    """One output level of the generator: class scores, and the features feature-level alignment uses."""

    logits: torch.Tensor
    features: torch.Tensor | None = None

    def detach(self) -> LevelOutput:
        """The same output cut from the graph (what the discriminator step sees)."""
        return LevelOutput(
            self.logits.detach(), self.features.detach() if self.features is not None else None
        )


@dataclass
class SegmentationTask:
    """DeepLab-v2 in the stage loop: levels (aux, main), losses and discriminator inputs of SPEC 3.

    Args:
        framework: one of `FRAMEWORKS` except `feature`.
        multi_level: whether the generator has the auxiliary head.
        seg_weights: supervised weights (aux, main) = (0.1, 1.0).
        adv_weights: adversarial (or MinEnt) weights (aux, main) = (0.0002, 0.001).
        ignore_index: label value without a class.
        align_corners: how logits are upsampled to the input size: True for DeepLab-v2 (the reference),
            False for transformers' segmenters (`segmenters.uses_align_corners`).
    """

    framework: str = "advent"
    multi_level: bool = True
    seg_weights: tuple[float, float] = (0.1, 1.0)
    adv_weights: tuple[float, float] = (0.0002, 0.001)
    ignore_index: int = IGNORE_INDEX
    align_corners: bool = True

    def __post_init__(self) -> None:
        check_framework(self.framework)
        if self.framework in CLASSIFIER_FRAMEWORKS:
            raise ValueError(
                f"the {self.framework!r} framework is for classifiers; segmentation aligns output maps "
                "(advent or adaptsegnet)"
            )

    @property
    def level_names(self) -> list[str]:
        """`["aux", "main"]` or `["main"]`."""
        return ["aux", "main"] if self.multi_level else ["main"]

    def level_weights(self, weights: Sequence[float]) -> list[float]:
        return list(weights) if self.multi_level else [weights[-1]]

    def forward(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> list[LevelOutput]:
        """Run the generator; logits upsampled (bilinear) to the input size, as the reference."""
        output = model(pixel_values=pixel_values)
        size = tuple(pixel_values.shape[-2:])
        levels = [output.get("aux_logits"), output.logits] if self.multi_level else [output.logits]
        if any(level is None for level in levels):
            raise ValueError("multi_level is set but the generator returned no aux_logits")
        return [LevelOutput(upsample_logits(level, size, self.align_corners)) for level in levels]

    def supervised_loss(self, outputs: Sequence[LevelOutput], labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of every level, weighted: main 1.0 + aux 0.1."""
        weights = self.level_weights(self.seg_weights)
        return sum(
            w * segmentation_loss(o.logits, labels, self.ignore_index) for w, o in zip(weights, outputs)
        )

    def discriminator_input(self, output: LevelOutput) -> torch.Tensor:
        """What a discriminator sees of one level, in float32."""
        return discriminator_input(output, self.framework)

    def minent_loss(self, outputs: Sequence[LevelOutput]) -> torch.Tensor:
        """MinEnt's weighted entropy of the target outputs."""
        weights = self.level_weights(self.adv_weights)
        return sum(w * entropy_loss(o.logits) for w, o in zip(weights, outputs))

    def adversarial_weights(self) -> list[float]:
        return self.level_weights(self.adv_weights)


def discriminator_input(output: LevelOutput, framework: str) -> torch.Tensor:
    """The map (or vector) a discriminator receives under `framework`, computed in float32."""
    if framework == "advent":
        return weighted_self_information(output.logits)
    if framework == "adaptsegnet":
        return F.softmax(output.logits.float(), dim=1)
    if framework == "feature":
        if output.features is None:
            raise ValueError("the 'feature' framework needs a generator that returns features")
        return output.features.float()
    if framework == "scores":
        return output.logits.float()
    raise ValueError(f"framework {framework!r} has no discriminator")


@dataclass
class ClassificationTask:
    """A digit classifier in the stage loop (SPEC 8): one level, cross-entropy, and what D sees.

    With `framework="feature"` (ADDA-like, the feature-level part of CyCADA) the discriminator judges the
    classifier's `features`; `scores` gives it the (batch, C) logits themselves (as CyCADA's released ADDA
    code does), `advent` and `adaptsegnet` their weighted self-information or softmax, and `minent` /
    `source_only` work as for segmentation.

    Args:
        framework: one of `FRAMEWORKS`; `feature` for the paper's digits experiments.
        adv_weight: weight of the adversarial (or MinEnt) term in G's loss.
        supervised_weight: weight of the cross-entropy on the source (stage 3: the pseudo labels).
    """

    framework: str = "feature"
    adv_weight: float = 1.0
    supervised_weight: float = 1.0

    def __post_init__(self) -> None:
        check_framework(self.framework)

    @property
    def level_names(self) -> list[str]:
        """A classifier has one output level."""
        return ["main"]

    def forward(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> list[LevelOutput]:
        """Run the classifier: logits (batch, C) and its feature vectors."""
        output = model(pixel_values=pixel_values)
        features = getattr(output, "features", None)
        if self.framework == "feature" and features is None:
            raise ValueError("the 'feature' framework needs a classifier whose output has `features`")
        return [LevelOutput(output.logits, features)]

    def supervised_loss(self, outputs: Sequence[LevelOutput], labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the class scores against integer labels (batch,)."""
        if labels.dim() != 1:
            raise ValueError(f"class labels must have shape (batch,), got {tuple(labels.shape)}")
        return self.supervised_weight * F.cross_entropy(outputs[0].logits.float(), labels.long())

    def discriminator_input(self, output: LevelOutput) -> torch.Tensor:
        """The vector a discriminator sees, in float32: features, the logits, or a function of them."""
        return discriminator_input(output, self.framework)

    def minent_loss(self, outputs: Sequence[LevelOutput]) -> torch.Tensor:
        """MinEnt on classifier outputs: the weighted mean normalised entropy."""
        return self.adv_weight * entropy_loss(outputs[0].logits)

    def adversarial_weights(self) -> list[float]:
        return [self.adv_weight]
