"""The segmenter's supervised loss (SPEC sections 1 and 3): cross-entropy at the label size, main + aux.

It lives beside the model because saved folders carry the model's code for `trust_remote_code=True`, and
that code may import only files of its own folder. The adaptation losses build on it
(`modeling_intrada.method.losses`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_logits(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear upsampling, with `align_corners=True` by default (the reference's `nn.Upsample` convention)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
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


def deeplab_loss(
    logits: torch.Tensor,
    aux_logits: torch.Tensor | None,
    labels: torch.Tensor,
    ignore_index: int,
    aux_weight: float = 0.1,
) -> torch.Tensor:
    """The multi-level segmentation loss: main 1.0 + aux `aux_weight` (SPEC 3)."""
    loss = segmentation_loss(logits, labels, ignore_index)
    if aux_logits is not None and aux_weight:
        loss = loss + aux_weight * segmentation_loss(aux_logits, labels, ignore_index)
    return loss
