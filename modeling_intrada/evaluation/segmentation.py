"""Evaluation of a segmenter on a labelled split at full label resolution (SPEC section 6).

Images are resized to the model's input size; logits are upsampled bilinearly (`align_corners` True for
DeepLab-v2, False for transformers' segmenters: `segmenters.uses_align_corners`) to each label map's own
size (Cityscapes: 1024x512 input, 2048x1024 labels). Batches are sharded across processes (batch b on
process b mod W) and the confusion matrices summed with Accelerate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from modeling_intrada.data.datasets import ColumnLayout, load_split
from modeling_intrada.evaluation.metrics import MeanIoU, SegmentationScores
from modeling_intrada.labels import build_lut
from modeling_intrada.method.losses import entropy_map, upsample_logits
from modeling_intrada.method.segmenters import uses_align_corners
from modeling_intrada.models.deeplabv2.image_transforms import label_to_array, normalize, resize_image


class EvaluationSplit(torch.utils.data.Dataset):
    """Rows of a labelled split: `pixel_values` at `size`, `labels` at the label's own resolution."""

    def __init__(
        self,
        source: str | Path,
        config: str | None,
        split: str,
        size: Sequence[int],
        normalization: str,
        max_images: int | None = None,
        with_labels: bool = True,
        label_mapping: Mapping[int, int] | None = None,
        layout: ColumnLayout | None = None,
    ) -> None:
        dataset = load_split(source, config, split, layout=layout)
        # e.g. Cityscapes' 19 train ids -> SYNTHIA's 16 classes for a SYNTHIA-trained model; others -> 255.
        self.label_lut = build_lut(label_mapping, 256) if label_mapping is not None else None
        coding = layout.label_lut() if layout is not None else None
        if coding is not None:  # label ids -> train ids first, then the mapping between spaces
            self.label_lut = coding if self.label_lut is None else self.label_lut[coding]
        if with_labels and "label" not in dataset.column_names:
            raise ValueError(
                f"{source} ({config or 'default'}/{split}) has no 'label' column: evaluation needs a labelled split"
            )
        if max_images is not None:
            dataset = dataset.select(range(min(max_images, len(dataset))))
        columns = (
            ["image", "id"]
            + (["label"] if with_labels else [])
            + (["condition"] if "condition" in dataset.column_names else [])
        )
        self.dataset = dataset.select_columns(columns)
        self.size, self.normalization, self.with_labels = tuple(size), normalization, with_labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[int(index)]
        image = resize_image(row["image"].convert("RGB"), self.size)
        item = {
            "pixel_values": torch.from_numpy(normalize(image, self.normalization)),
            "id": row["id"],
            "index": index,
        }
        if self.with_labels:
            labels = label_to_array(row["label"])
            if self.label_lut is not None:
                labels = self.label_lut[labels].astype(np.int64)
            item["labels"] = torch.from_numpy(labels)
        if "condition" in row:
            item["condition"] = float(row["condition"])
        return item

    def image(self, index: int) -> Image.Image:
        return self.dataset[int(index)]["image"].convert("RGB")


def _collate(items: Sequence[dict]) -> dict:
    batch = {"pixel_values": torch.stack([i["pixel_values"] for i in items])}
    if "labels" in items[0]:
        batch["labels"] = [i["labels"] for i in items]  # sizes may differ: kept as a list
    for key in ("id", "index", "condition"):
        if key in items[0]:
            batch[key] = [i[key] for i in items]
    return batch


def sharded_batches(
    dataset: torch.utils.data.Dataset, batch_size: int, rank: int, world_size: int, num_workers: int = 0
) -> Iterator[dict]:
    """Batch b = rows [b*B, (b+1)*B) goes to process b mod W: the same batches as on one process."""
    batches = [list(range(s, min(s + batch_size, len(dataset)))) for s in range(0, len(dataset), batch_size)]
    mine = batches[rank::world_size]
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=mine, num_workers=num_workers, collate_fn=_collate
    )
    return iter(loader)


def _progress_bar(batches, dataset, batch_size: int, world: int, rank: int, accelerator, label: str | None):
    """`batches` wrapped in a tqdm bar on the local main process when `label` is given."""
    if label is None:
        return batches
    num_batches = len(range(rank, -(-len(dataset) // batch_size), world))
    main = accelerator.is_local_main_process if accelerator is not None else True
    return tqdm(batches, total=num_batches, desc=label, unit="batch", disable=not main)


def _autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)


@torch.inference_mode()
def evaluate_segmentation(
    model: torch.nn.Module,
    dataset: EvaluationSplit,
    num_labels: int,
    *,
    accelerator=None,
    batch_size: int = 1,
    protocol: str | None = None,
    id2label: Mapping[int, str] | None = None,
    mixed_precision: str = "no",
    num_workers: int = 0,
    keep_predictions: int = 0,
    progress: str | None = None,
    metric: MeanIoU | None = None,
) -> tuple[SegmentationScores, list[tuple[int, np.ndarray]]]:
    """mIoU of `model` on `dataset`, and the predictions (index, map) of rows 0..keep_predictions-1.

    Each process keeps the predictions of those first rows that it evaluated (with several processes
    they are spread over the processes: batch b runs on process b mod W). `progress` is the label of a
    progress bar over this process's batches, shown on the local main process only (None: no bar).
    `metric`: an empty `MeanIoU(num_labels)` to accumulate into, to score the same counts afterwards
    under other protocols (`metric.confusion_matrix(accelerator)`, on every process).
    """
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    model.eval()
    align_corners = uses_align_corners(model)
    metric = MeanIoU(num_labels) if metric is None else metric
    kept: list[tuple[int, np.ndarray]] = []
    dtype = _autocast_dtype(mixed_precision)
    batches = sharded_batches(dataset, batch_size, rank, world, num_workers)
    for batch in _progress_bar(batches, dataset, batch_size, world, rank, accelerator, progress):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
        for j, labels in enumerate(batch["labels"]):
            labels = labels.to(device)
            prediction = upsample_logits(logits[j : j + 1].float(), tuple(labels.shape), align_corners)
            prediction = prediction.argmax(dim=1)[0]
            metric.update(prediction, labels)
            if batch["index"][j] < keep_predictions:
                kept.append((batch["index"][j], prediction.to(torch.uint8).cpu().numpy()))
    return metric.compute(protocol=protocol, id2label=id2label, accelerator=accelerator), kept


@torch.inference_mode()
def mean_entropy(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    accelerator=None,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: str | None = None,
) -> float:
    """Mean normalised prediction entropy over `dataset` (label-free snapshot selection)."""
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    batches = sharded_batches(dataset, batch_size, rank, world, num_workers)
    for batch in _progress_bar(batches, dataset, batch_size, world, rank, accelerator, progress):
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits
        values = entropy_map(logits).flatten(1).mean(dim=1)
        total += torch.stack([values.sum().double(), torch.tensor(float(len(values)), device=device)])
    if accelerator is not None:
        total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1].clamp(min=1))
