"""The losses and maps of the paper, as plain functions over logits (SPEC sections 3 and 4).

Everything that involves a logarithm of a probability is computed in float32, whatever the autocast
precision: the self-information of a confident pixel underflows in half precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
# The reference adds this inside log2(p + eps); in float32 it only matters where p underflows to 0.
LOG_EPS = 1e-30


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling with `align_corners=True` (the reference's `nn.Upsample` convention)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Cross-entropy of eq. (1), averaged over the labelled pixels; logits are upsampled to the label size.

    Written as sum / count so that no host synchronisation is needed, and a batch without a single
    labelled pixel gives a zero loss that still carries a graph (not NaN).
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must have shape (batch, height, width), got {tuple(labels.shape)}")
    logits = upsample_logits(logits, tuple(labels.shape[-2:])).float()
    labels = labels.long()
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


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


def deeplab_loss(
    logits: torch.Tensor,
    aux_logits: torch.Tensor | None,
    labels: torch.Tensor,
    aux_weight: float = 0.1,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """The multi-level segmentation loss: main 1.0 + aux `aux_weight` (SPEC 3)."""
    loss = segmentation_loss(logits, labels, ignore_index)
    if aux_logits is not None and aux_weight:
        loss = loss + aux_weight * segmentation_loss(aux_logits, labels, ignore_index)
    return loss
