"""Mean intersection-over-union over a confusion matrix (SPEC section 6).

The confusion matrix has one row per ground-truth class and one column per predicted class, over the
labelled pixels only (labels 0..C-1; the ignore index, 255 by default, is left out). From it:

- IoU of class c = diag[c] / (rowsum[c] + colsum[c] - diag[c]); NaN when the class appears neither in
  the labels nor in the predictions (the denominator is 0);
- mIoU = the mean over the protocol's classes of the non-NaN IoUs;
- pixel accuracy = trace / total; per-class accuracy = diag[c] / rowsum[c] (NaN for absent classes).

Protocols are subsets of class indices averaged over the same matrix: "19" (Cityscapes trainIds, GTA5
and Synscapes sources), "16" (the SYNTHIA 16-class space) and "13" (those 16 minus wall, fence and
pole). As in the authors' code, the per-class IoUs are computed once over the whole matrix and the
protocol only selects which of them are averaged.

`MeanIoU` accumulates batches on the tensors' own device without a host synchronisation per batch,
and sums the counts over processes (Accelerate or torch.distributed) when the scores are computed::

    metric = MeanIoU(num_labels=19)
    for batch in dataloader:
        metric.update(logits.argmax(dim=1), batch["labels"])
    scores = metric.compute(protocol="19", id2label=model.config.id2label, accelerator=accelerator)
    print(scores.mean_iou, markdown_table({"IntraDA": scores}))

This module is standalone on purpose (torch and numpy only): class names come from the caller.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling_intrada.labels import IGNORE_INDEX


@dataclass(frozen=True)
class Protocol:
    """A set of class indices over which the mIoU is averaged.

    Args:
        name: How the protocol is reported ("19", "16", "13", or a name of the caller's choice).
        num_labels: The number of classes C of the label space the indices refer to; a confusion matrix
            must be C x C to be scored under this protocol.
        class_indices: The classes averaged, as indices into that label space, in reporting order.
    """

    name: str
    num_labels: int
    class_indices: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.num_labels < 1:
            raise ValueError(f"Protocol {self.name!r}: num_labels must be >= 1, got {self.num_labels}")
        if not self.class_indices:
            raise ValueError(f"Protocol {self.name!r}: class_indices is empty")
        bad = [i for i in self.class_indices if not 0 <= i < self.num_labels]
        if bad:
            raise ValueError(
                f"Protocol {self.name!r}: class indices {bad} are outside 0..{self.num_labels - 1}"
            )
        if len(set(self.class_indices)) != len(self.class_indices):
            raise ValueError(f"Protocol {self.name!r}: class_indices has duplicates: {self.class_indices}")


# SYNTHIA's 16-class space (SPEC section 7) puts wall, fence and pole at indices 3, 4 and 5.
SYNTHIA_13_EXCLUDED = (3, 4, 5)

PROTOCOLS: dict[str, Protocol] = {
    "19": Protocol("19", 19, tuple(range(19))),
    "16": Protocol("16", 16, tuple(range(16))),
    "13": Protocol("13", 16, tuple(i for i in range(16) if i not in SYNTHIA_13_EXCLUDED)),
}


def get_protocol(protocol: str | Protocol | None, num_labels: int) -> Protocol:
    """Resolve `protocol` for a C x C confusion matrix with C = `num_labels`.

    Args:
        protocol: A key of `PROTOCOLS` ("19", "16", "13"), a `Protocol`, or None for all C classes.
        num_labels: The number of classes of the confusion matrix.

    Raises:
        ValueError: If the protocol is unknown or was defined for a label space of another size.
    """
    if protocol is None:
        return Protocol(str(num_labels), num_labels, tuple(range(num_labels)))
    if isinstance(protocol, str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {protocol!r}: expected one of {sorted(PROTOCOLS)} or None")
        protocol = PROTOCOLS[protocol]
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a str, a Protocol or None, got {type(protocol).__name__}")
    if protocol.num_labels != num_labels:
        raise ValueError(
            f"Protocol {protocol.name!r} is defined over {protocol.num_labels} classes, but the confusion "
            f"matrix has {num_labels}: evaluate a {protocol.num_labels}-class model with its labels mapped "
            f"to that class space"
        )
    return protocol


def _as_label_tensor(values: Any, what: str) -> torch.Tensor:
    """Turn a label map (tensor, numpy array, nested list) into an integer tensor, or raise."""
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        hint = " (take logits.argmax(dim=1) first)" if what == "predictions" else ""
        raise TypeError(f"{what} must hold integer class indices, got dtype {tensor.dtype}{hint}")
    return tensor


@functools.lru_cache(maxsize=16)
def _code_tables(
    num_labels: int, ignore_index: int, device: torch.device
) -> tuple[int, int, torch.Tensor, torch.Tensor]:
    """(low, high, reference_codes, prediction_codes) for `_extended_counts`.

    `codes[clamp(v, low, high) - low]` is the code of a label value v: v for a class, C for the ignore
    index, C + 1 for anything else; reference codes are premultiplied by the row length C + 2.
    """
    low, high = min(0, ignore_index) - 1, max(num_labels - 1, ignore_index) + 1
    values = torch.arange(low, high + 1)
    codes = torch.where(values == ignore_index, num_labels, num_labels + 1)
    codes = torch.where((values >= 0) & (values < num_labels), values, codes)
    codes = codes.to(device=device, dtype=torch.int32)
    return low, high, codes * (num_labels + 2), codes


def _extended_counts(
    predictions: torch.Tensor, references: torch.Tensor, num_labels: int, ignore_index: int
) -> torch.Tensor:
    """Count pixels in a (C + 2) x (C + 2) matrix, flattened, without a host synchronisation.

    Each map is coded per pixel as its class 0..C-1, C for the ignore index or C + 1 for any other
    value, so the top-left C x C block is the confusion matrix and the extra rows and columns count
    ignored and invalid pixels, to be checked when the scores are computed. Values are clamped to a
    small range and looked up in a table, in int32 (fewer and narrower passes than comparisons).
    """
    size = num_labels + 2
    low, high, reference_codes, prediction_codes = _code_tables(num_labels, ignore_index, references.device)

    def code(labels: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        # Clamp before narrowing an int64 map, so that huge values cannot wrap around into a class.
        if labels.dtype == torch.int64:
            shifted = labels.clamp(low, high).to(torch.int32)
        else:
            shifted = labels.to(torch.int32, copy=True).clamp_(low, high)
        return codes.index_select(0, shifted.sub_(low).flatten())

    index = code(references, reference_codes).add_(code(predictions, prediction_codes))
    return _count(index, size * size, fixed_size=index.device.type != "cpu")


def _count(index: torch.Tensor, length: int, fixed_size: bool) -> torch.Tensor:
    """How many times each value 0..length-1 occurs in `index` (int64 counts)."""
    if not fixed_size:
        return torch.bincount(index, minlength=length)
    # torch.bincount sizes its output from the input's maximum, which off the CPU costs a
    # device-to-host copy per call; scatter_add_ into a fixed-size vector does not.
    index = index.long()
    counts = torch.zeros(length, dtype=torch.int64, device=index.device)
    return counts.scatter_add_(0, index, torch.ones_like(index))


def _check_pair(predictions: torch.Tensor, references: torch.Tensor) -> None:
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must have the same shape, got {tuple(predictions.shape)} and "
            f"{tuple(references.shape)} (upsample the logits to the label size before the argmax)"
        )
    if predictions.device != references.device:
        raise ValueError(
            f"predictions and references must be on the same device, got {predictions.device} and "
            f"{references.device}"
        )


def _check_extended(extended: torch.Tensor, num_labels: int, ignore_index: int, where: str) -> None:
    """Raise if the extended counts hold invalid values; `where` says where they came from."""
    c = num_labels
    bad_references = int(extended[c + 1, :].sum())
    bad_predictions = int(extended[:, c + 1].sum())
    ignored_predictions = int(extended[:c, c].sum())
    valid = f"0..{c - 1} or the ignore index {ignore_index}"
    problems = []
    if bad_references:
        problems.append(f"{bad_references} reference pixels have values other than {valid}")
    if bad_predictions:
        problems.append(f"{bad_predictions} predicted pixels have values other than {valid}")
    if ignored_predictions:
        # A C x C matrix has no column for "no prediction", and dropping such pixels would hide misses.
        problems.append(
            f"{ignored_predictions} labelled pixels are predicted as the ignore index {ignore_index}: "
            f"a prediction must be a class 0..{c - 1} wherever the reference is labelled"
        )
    if problems:
        raise ValueError(f"Invalid label maps {where}: " + "; ".join(problems))


def confusion_matrix(
    predictions: Any, references: Any, num_labels: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The C x C confusion matrix (rows ground truth, columns prediction) of one batch of label maps.

    Computed on the inputs' device and returned there as int64. This function checks the values
    at once (one host synchronisation); use `MeanIoU` to accumulate many batches without one.

    Args:
        predictions: Predicted class indices, any shape (a tensor, numpy array or nested list).
        references: Ground-truth class indices, the same shape; `ignore_index` marks unlabelled pixels.
        num_labels: The number of classes C.
        ignore_index: The label value left out of the matrix.

    Raises:
        TypeError: If a map does not hold integers (e.g. logits instead of their argmax).
        ValueError: If the shapes differ, or a value is neither a class nor the ignore index, or a
            labelled pixel is predicted as the ignore index.
    """
    _check_num_labels(num_labels, ignore_index)
    predictions = _as_label_tensor(predictions, "predictions")
    references = _as_label_tensor(references, "references")
    _check_pair(predictions, references)
    extended = _extended_counts(predictions, references, num_labels, ignore_index).view(
        num_labels + 2, num_labels + 2
    )
    _check_extended(extended.cpu(), num_labels, ignore_index, "given to confusion_matrix")
    return extended[:num_labels, :num_labels].clone()


def _check_num_labels(num_labels: int, ignore_index: int) -> None:
    if int(num_labels) != num_labels or num_labels < 1:
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
    if 0 <= ignore_index < num_labels:
        raise ValueError(
            f"ignore_index {ignore_index} is a class index: it must be outside 0..{num_labels - 1}"
        )


def _nan_to_none(values: Sequence[float]) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


@dataclass
class SegmentationScores:
    """Scores of a confusion matrix under one protocol; IoUs and accuracies are fractions in [0, 1].

    Attributes:
        protocol: The protocol's name ("19", "16", "13", ...).
        class_indices: The protocol's class indices, in reporting order.
        class_names: Their names (from the caller's id2label, else the indices as strings).
        per_class_iou: IoU of each protocol class; NaN for a class absent from labels and predictions.
        mean_iou: Mean of the non-NaN `per_class_iou` (NaN if all are NaN).
        per_class_accuracy: Fraction of each class's labelled pixels predicted as that class (NaN if none).
        mean_accuracy: Mean of the non-NaN `per_class_accuracy`.
        pixel_accuracy: Correct pixels over all labelled pixels of the C-class matrix (all classes,
            whatever the protocol; NaN if no pixel is labelled).
        num_pixels: The number of labelled pixels counted.
    """

    protocol: str
    class_indices: list[int]
    class_names: list[str]
    per_class_iou: list[float]
    mean_iou: float
    per_class_accuracy: list[float]
    mean_accuracy: float
    pixel_accuracy: float
    num_pixels: int

    def iou_by_name(self) -> dict[str, float]:
        """The per-class IoUs keyed by class name."""
        return dict(zip(self.class_names, self.per_class_iou, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN written as None, since JSON has no NaN)."""
        return {
            "protocol": self.protocol,
            "mean_iou": None if math.isnan(self.mean_iou) else self.mean_iou,
            "mean_accuracy": None if math.isnan(self.mean_accuracy) else self.mean_accuracy,
            "pixel_accuracy": None if math.isnan(self.pixel_accuracy) else self.pixel_accuracy,
            "num_pixels": self.num_pixels,
            "class_indices": list(self.class_indices),
            "class_names": list(self.class_names),
            "per_class_iou": _nan_to_none(self.per_class_iou),
            "per_class_accuracy": _nan_to_none(self.per_class_accuracy),
        }


def _class_names(id2label: Mapping[int, str] | Mapping[str, str] | None, indices: Sequence[int]) -> list[str]:
    if id2label is None:
        return [str(i) for i in indices]
    # Configs read back from JSON have string keys ("0": "road"); accept both.
    names = {int(k): str(v) for k, v in id2label.items()}
    missing = [i for i in indices if i not in names]
    if missing:
        raise ValueError(f"id2label has no name for class indices {missing}")
    return [names[i] for i in indices]


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def scores_from_confusion_matrix(
    confusion: Any,
    protocol: str | Protocol | None = None,
    id2label: Mapping[int, str] | Mapping[str, str] | None = None,
) -> SegmentationScores:
    """Per-class IoU, mIoU and accuracies of a C x C confusion matrix (rows ground truth).

    Args:
        confusion: The matrix, as a tensor, numpy array or nested list of non-negative integers.
        protocol: "19", "16", "13", a `Protocol`, or None for all C classes.
        id2label: Class names by index, for reporting (e.g. `model.config.id2label`).

    Raises:
        ValueError: If the matrix is not square, holds negative or non-integer counts, or does not
            fit the protocol.
    """
    matrix = _checked_matrix(confusion)
    chosen = get_protocol(protocol, matrix.shape[0])
    diag = np.diag(matrix)
    rows, cols = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (rows + cols - diag)  # 0 / 0 = NaN: class absent from labels and predictions
        accuracy = diag / rows
    indices = list(chosen.class_indices)
    total = matrix.sum()
    return SegmentationScores(
        protocol=chosen.name,
        class_indices=indices,
        class_names=_class_names(id2label, indices),
        per_class_iou=[float(v) for v in iou[indices]],
        mean_iou=_nanmean(iou[indices]),
        per_class_accuracy=[float(v) for v in accuracy[indices]],
        mean_accuracy=_nanmean(accuracy[indices]),
        pixel_accuracy=float(diag.sum() / total) if total else math.nan,
        num_pixels=int(total),
    )


def _checked_matrix(confusion: Any) -> np.ndarray:
    """The confusion matrix as float64 numpy, or a ValueError saying what is wrong with it."""
    matrix = (
        confusion.detach().cpu().numpy() if isinstance(confusion, torch.Tensor) else np.asarray(confusion)
    )
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(
            f"A confusion matrix must be a non-empty square C x C array, got shape {matrix.shape}"
        )
    # Counts may arrive as floats (e.g. summed by a JSON round trip); they must still be whole numbers.
    whole = np.issubdtype(matrix.dtype, np.integer) or (
        np.issubdtype(matrix.dtype, np.floating)
        and bool(np.all(np.isfinite(matrix) & (matrix == np.round(matrix))))
    )
    if not whole:
        raise ValueError(f"A confusion matrix holds pixel counts (whole numbers), got dtype {matrix.dtype}")
    if (matrix < 0).any():
        raise ValueError("A confusion matrix holds pixel counts: found negative entries")
    return matrix.astype(np.float64)


def evaluate_mean_iou_results(confusion: Any, nan_to_num: float | None = None) -> dict[str, Any]:
    """The five results of `evaluate.load("mean_iou")`, with its names and types, from a C x C confusion matrix.

    Over all C classes (evaluate has no protocol): `mean_iou` and `mean_accuracy` (nanmeans, `np.float64`),
    `overall_accuracy` (correct over labelled pixels), `per_category_iou` and `per_category_accuracy`
    (float64 arrays of length C, NaN for a class absent from labels and predictions, resp. never labelled).

    Args:
        confusion: The matrix (rows ground truth), as in `scores_from_confusion_matrix`.
        nan_to_num: When given, every NaN in the five results is replaced by it (`np.nan_to_num`), as
            evaluate does.
    """
    matrix = _checked_matrix(confusion)
    diag = np.diag(matrix)
    rows, cols = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (rows + cols - diag)
        accuracy = diag / rows
        overall = diag.sum() / rows.sum()
    results = {
        "mean_iou": np.float64(_nanmean(iou)),
        "mean_accuracy": np.float64(_nanmean(accuracy)),
        "overall_accuracy": np.float64(overall),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }
    if nan_to_num is not None:
        results = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in results.items()}
    return results


class MeanIoU:
    """Accumulate a confusion matrix over batches and score it (mIoU, SPEC section 6).

    `update` runs on the inputs' device with no host synchronisation after the first call (which
    checks the values once, so that a wrong label coding fails at once); values found invalid later
    are counted on the device and reported by `compute` with the number of the `update` call that
    first met them. `compute` sums the counts over processes; every process must call it.

    Args:
        num_labels: The number of classes C.
        ignore_index: The label value left out (unlabelled pixels).
    """

    def __init__(self, num_labels: int, ignore_index: int = IGNORE_INDEX) -> None:
        _check_num_labels(num_labels, ignore_index)
        self.num_labels = int(num_labels)
        self.ignore_index = int(ignore_index)
        self.reset()

    def reset(self) -> None:
        """Forget all counts."""
        self._counts: torch.Tensor | None = None
        self._first_invalid_update: torch.Tensor | None = None
        self._num_updates = 0

    @property
    def device(self) -> torch.device | None:
        """Where the counts live (the device of the first batch), or None before the first update."""
        return None if self._counts is None else self._counts.device

    def update(self, predictions: Any, references: Any) -> None:
        """Add a batch of label maps: predicted class indices and ground truth of the same shape.

        Raises:
            TypeError: If a map does not hold integers (e.g. logits instead of their argmax).
            ValueError: If the shapes or devices differ, or (first call only; later calls defer this
                to `compute`) a value is invalid.
        """
        predictions = _as_label_tensor(predictions, "predictions")
        references = _as_label_tensor(references, "references")
        _check_pair(predictions, references)
        if self._counts is not None and predictions.device != self._counts.device:
            raise ValueError(
                f"This MeanIoU accumulates on {self._counts.device}, got a batch on {predictions.device}"
            )
        counts = _extended_counts(predictions, references, self.num_labels, self.ignore_index)
        size = self.num_labels + 2
        if self._counts is None:
            _check_extended(
                counts.view(size, size).cpu(), self.num_labels, self.ignore_index, "in update call 1"
            )
            self._counts = counts
            self._first_invalid_update = torch.zeros((), dtype=torch.int64, device=counts.device)
        else:
            invalid = _invalid_count(counts.view(size, size), self.num_labels)
            # Remember the first call that met invalid values, on the device (no synchronisation).
            self._first_invalid_update = torch.where(
                (self._first_invalid_update == 0) & (invalid > 0),
                torch.full_like(self._first_invalid_update, self._num_updates + 1),
                self._first_invalid_update,
            )
            self._counts += counts
        self._num_updates += 1

    def extended_counts(self, accelerator: Any = None) -> torch.Tensor:
        """The (C + 2) x (C + 2) counts summed over processes, on CPU, checked for invalid values.

        Rows are ground truth and columns predictions; index C stands for the ignore index and C + 1
        for any invalid value, so the top-left C x C block is the confusion matrix.
        """
        size = self.num_labels + 2
        counts = self._counts
        if counts is None:
            # A process that saw no batch still takes part in the reduction, on the common device.
            device = accelerator.device if accelerator is not None else "cpu"
            counts = torch.zeros(size * size, dtype=torch.int64, device=device)
        extended = _sum_over_processes(counts, accelerator).view(size, size).cpu()
        if int(_invalid_count(extended, self.num_labels)):
            # Every process sees the summed counts, so all raise together (none waits in a collective).
            first = 0 if self._first_invalid_update is None else int(self._first_invalid_update)
            where = f"first met in update call {first} of this process" if first else "on another process"
            _check_extended(extended, self.num_labels, self.ignore_index, where)
        return extended

    def confusion_matrix(self, accelerator: Any = None) -> torch.Tensor:
        """The accumulated C x C matrix (rows ground truth, columns prediction), summed over processes, on CPU.

        Args:
            accelerator: An `accelerate.Accelerator`, whose `reduce` sums the counts; without one, the
                counts are summed with torch.distributed when a process group of several processes is
                initialised. Either way every process must call this.

        Raises:
            ValueError: If some batch held invalid values (see `confusion_matrix`).
        """
        extended = self.extended_counts(accelerator)
        return extended[: self.num_labels, : self.num_labels].clone()

    def compute(
        self,
        protocol: str | Protocol | None = None,
        id2label: Mapping[int, str] | Mapping[str, str] | None = None,
        accelerator: Any = None,
    ) -> SegmentationScores:
        """Score the accumulated matrix, summed over processes (see `confusion_matrix`).

        Args:
            protocol: "19", "16", "13", a `Protocol`, or None for all classes.
            id2label: Class names by index, for reporting.
            accelerator: An `accelerate.Accelerator` to sum the counts across processes.
        """
        return scores_from_confusion_matrix(self.confusion_matrix(accelerator), protocol, id2label)


def _invalid_count(extended: torch.Tensor, num_labels: int) -> torch.Tensor:
    c = num_labels
    return extended[c + 1, :].sum() + extended[: c + 1, c + 1].sum() + extended[:c, c].sum()


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _sum_over_processes(tensor: torch.Tensor, accelerator: Any) -> torch.Tensor:
    if accelerator is not None:
        return accelerator.reduce(tensor, reduction="sum")
    tensor = tensor.clone()
    if _distributed_world_size() > 1:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def evaluate_module_path() -> str:
    """The absolute path of the `evaluate` module that ships inside this package (`intrada_mean_iou/`).

    `evaluate.load` reads a relative path from the working directory and otherwise looks it up on the
    Hub, so `evaluate.load(evaluate_module_path())` is the form that works from any directory, offline.
    """
    return str(Path(__file__).resolve().parent / "intrada_mean_iou")


def _format_percent(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.{digits}f}"


def markdown_table(
    results: SegmentationScores | Mapping[str, SegmentationScores],
    digits: int = 1,
    extra_columns: Mapping[str, Sequence[float]] | None = None,
) -> str:
    """A markdown table like the paper's Table 1: one row per named result, classes as columns, mIoU last.

    IoUs are in percent; a class absent from labels and predictions shows as "n/a".

    Args:
        results: One `SegmentationScores`, or several keyed by the row name (e.g. "AdvEnt", "IntraDA").
        digits: Decimals shown.
        extra_columns: Further columns after the mIoU, header -> one fraction per row (e.g. the mIoU of
            another protocol).

    Raises:
        ValueError: If the results do not share the same classes (same protocol and names).
    """
    if isinstance(results, SegmentationScores):
        results = {"": results}
    if not results:
        raise ValueError("markdown_table needs at least one result")
    first_name, first = next(iter(results.items()))
    for name, scores in results.items():
        if scores.class_names != first.class_names:
            raise ValueError(
                f"Results {first_name!r} and {name!r} have different classes (protocols {first.protocol!r} "
                f"and {scores.protocol!r}): make one table per protocol"
            )
    extra_columns = dict(extra_columns or {})
    for header, values in extra_columns.items():
        if len(values) != len(results):
            raise ValueError(f"Column {header!r} has {len(values)} values for {len(results)} rows")
    header = ["", *first.class_names, f"mIoU ({first.protocol})", *extra_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row, (name, scores) in enumerate(results.items()):
        extras = [values[row] for values in extra_columns.values()]
        cells = [_format_percent(v, digits) for v in [*scores.per_class_iou, scores.mean_iou, *extras]]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines) + "\n"
