"""The adaptation losses and maps of the paper, as plain functions over logits (SPEC sections 3 and 4).

The supervised cross-entropy of eq. (1) is the segmenter's own loss (`loss_deeplabv2`); it is imported here so
that the method's losses have one address.

Everything that involves a logarithm of a probability is computed in float32, whatever the autocast
precision: the self-information of a confident pixel underflows in half precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from modeling_intrada.models.deeplabv2.loss_deeplabv2 import segmentation_loss, upsample_logits

__all__ = [
    "adversarial_loss",
    "entropy_loss",
    "entropy_map",
    "segmentation_loss",
    "upsample_logits",
    "weighted_self_information",
]

# The reference adds this inside log2(p + eps); in float32 it only matters where p underflows to 0.
LOG_EPS = 1e-30


def weighted_self_information(logits: torch.Tensor) -> torch.Tensor:
    """The map the AdvEnt discriminator sees: `-p * log2(p + 1e-30) / log2(C)` per class (SPEC 3).

    Shape (batch, C, height, width), in float32; summed over C it is the normalised entropy of eq. (2).
    """
    num_classes = logits.shape[1]
    probs = F.softmax(logits.float(), dim=1)
    return -probs * torch.log2(probs + LOG_EPS) / math.log2(num_classes)


def entropy_map(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel normalised entropy (eq. 2 divided by log2 C), shape (batch, height, width), in [0, 1]."""
    return weighted_self_information(logits).sum(dim=1)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """MinEnt's loss: the weighted self-information summed over classes, averaged over pixels and batch."""
    return entropy_map(logits).mean()


def adversarial_loss(discriminator_logits: torch.Tensor, domain_label: float) -> torch.Tensor:
    """BCE with logits against a constant hard domain label (0 = source, 1 = target; SPEC 3)."""
    target = torch.full_like(discriminator_logits, float(domain_label), dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(discriminator_logits.float(), target)
