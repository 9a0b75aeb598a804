"""IntraDA mean IoU as an `evaluate` module: a thin wrapper over `modeling_intrada.evaluation.metrics` (one definition).

Load it offline from the repository folder (see README.md beside this file)::

    import evaluate
    from modeling_intrada.evaluation.metrics import evaluate_module_path

    miou = evaluate.load(evaluate_module_path())  # or evaluate.load("modeling_intrada/evaluation/intrada_mean_iou") from the repo root
    miou.compute(predictions=[pred], references=[label], num_labels=19, protocol="19")

    miou_cm = evaluate.load(evaluate_module_path(), "confusion_matrix")
    miou_cm.compute(confusion_matrix=[matrix], protocol="19")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import datasets
import evaluate
import numpy as np
from PIL import Image

from modeling_intrada.evaluation.metrics import (
    MeanIoU,
    Protocol,
    evaluate_mean_iou_results,
    scores_from_confusion_matrix,
)
from modeling_intrada.labels import IGNORE_INDEX

_CITATION = """\
@inproceedings{pan2020unsupervised,
  title={Unsupervised Intra-domain Adaptation for Semantic Segmentation through Self-Supervision},
  author={Pan, Fei and Shin, Inkyu and Rameau, Francois and Lee, Seokju and Kweon, In So},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2020}
}
"""

_DESCRIPTION = """\
Mean intersection-over-union of semantic segmentation over a confusion matrix (rows ground truth,
columns prediction) of the labelled pixels (the ignore index, 255 by default, is left out), with the
class protocols of the IntraDA and AdvEnt papers: "19" (Cityscapes), "16" (SYNTHIA) and "13" (SYNTHIA
without wall, fence and pole). Classes absent from both labels and predictions have IoU NaN and are
left out of the mean. The results of evaluate's `mean_iou` (same keys, types, values and arguments) come
first, this project's extras beside them. Two input modes: label maps (the default configuration) or
already accumulated confusion matrices (configuration "confusion_matrix"), which are summed.
"""

_KWARGS_DESCRIPTION = """
Args (default configuration, label maps):
    predictions (list of 2-D integer arrays or PIL images): predicted class indices 0..num_labels-1.
    references (list of 2-D integer arrays or PIL images): ground-truth class indices, the same shapes;
        `ignore_index` marks unlabelled pixels.
    num_labels (int): the number of classes C.
    ignore_index (int, default 255): the label value left out (after `label_map` and `reduce_labels`); it
        may be a class index, as in evaluate's `mean_iou` (that class is then never labelled).
    label_map (dict, optional): old label id -> new label id, applied to the references first, entry after
        entry, as evaluate's `mean_iou` does.
    reduce_labels (bool, default False): references 0 become 255 and the others are lowered by one (the
        ADE20k convention), as evaluate's `mean_iou` does.
Args (configuration "confusion_matrix"):
    confusion_matrix (list of C x C integer arrays): accumulated confusion matrices, summed.
    num_labels (int, optional): checked against the matrices' size.
Args (both):
    nan_to_num (float, optional): replaces NaN in evaluate's five results (`np.nan_to_num`).
    protocol (str, optional): "19", "16" or "13"; all C classes when omitted.
    id2label (dict, optional): class names by index, for `class_names`.
Returns:
    As evaluate's `mean_iou`, over all C classes: mean_iou, mean_accuracy, overall_accuracy (np.float64),
    per_category_iou and per_category_accuracy (float64 arrays of length C). Under a protocol, mean_iou
    and mean_accuracy average the protocol's classes instead.
    Beside them: pixel_accuracy, num_pixels, protocol, class_indices, class_names, per_class_iou and
    per_class_accuracy (lists in protocol order; None where NaN), confusion_matrix (C x C list of lists).
Examples:
    >>> import evaluate
    >>> from modeling_intrada.evaluation.metrics import evaluate_module_path
    >>> miou = evaluate.load(evaluate_module_path())
    >>> miou.compute(predictions=[[[0, 1], [1, 2]]], references=[[[0, 1], [2, 255]]], num_labels=3)["mean_iou"]
    np.float64(0.5)
"""

_CONFIGURATIONS = ("default", "confusion_matrix")

# Internal ignore value when the caller's ignore_index is a class index (evaluate's mean_iou allows that).
_INTERNAL_IGNORE = -1


def _as_array(value: Any) -> Any:
    """A PIL image as a numpy array (evaluate's features cannot encode PIL images); anything else as given."""
    return np.asarray(value) if isinstance(value, Image.Image) else value


def _as_arrays(values: Any) -> Any:
    if values is None or isinstance(values, Image.Image):
        return _as_array(values)
    return [_as_array(v) for v in values]


def _map_references(
    reference: Any,
    num_labels: int,
    ignore_index: int,
    label_map: Mapping[int, int] | None,
    reduce_labels: bool,
) -> tuple[np.ndarray, int]:
    """Apply evaluate's `label_map` and `reduce_labels` to a reference map; return it and the ignore value.

    When `ignore_index` is a class index its pixels are recoded to an internal value outside the classes,
    since `MeanIoU` keeps classes and the ignore value apart.
    """
    label = np.array(reference, dtype=np.int64)
    if label_map is not None:
        for old_id, new_id in label_map.items():  # one entry after another, as evaluate's mean_iou
            label[label == int(old_id)] = int(new_id)
    if reduce_labels:
        label[label == 0] = 255
        label = label - 1
        label[label == 254] = 255
    if 0 <= ignore_index < num_labels:
        if (label == _INTERNAL_IGNORE).any():
            raise ValueError(
                f"references hold the value {_INTERNAL_IGNORE}, which is neither a class 0..{num_labels - 1} "
                f"nor the ignore index {ignore_index}"
            )
        label[label == ignore_index] = _INTERNAL_IGNORE
        return label, _INTERNAL_IGNORE
    return label, ignore_index


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IntradaMeanIoU(evaluate.Metric):
    """Mean IoU over label maps or confusion matrices, computed by `modeling_intrada.evaluation.metrics`."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in _CONFIGURATIONS:
            raise ValueError(f"Unknown configuration {self.config_name!r}: expected one of {_CONFIGURATIONS}")
        matrix = datasets.List(datasets.List(datasets.Value("int64")))
        if self.config_name == "confusion_matrix":
            features = datasets.Features({"confusion_matrix": matrix})
        else:
            features = datasets.Features({"predictions": matrix, "references": matrix})
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=features,
            reference_urls=["https://arxiv.org/abs/2004.07703"],
        )

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs) -> None:
        """`evaluate.Metric.add`, accepting PIL images."""
        super().add(prediction=_as_array(prediction), reference=_as_array(reference), **kwargs)

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs) -> None:
        """`evaluate.Metric.add_batch`, accepting PIL images."""
        super().add_batch(predictions=_as_arrays(predictions), references=_as_arrays(references), **kwargs)

    def compute(self, *, predictions: Any = None, references: Any = None, **kwargs) -> dict[str, Any] | None:
        """`evaluate.Metric.compute`, accepting PIL images."""
        return super().compute(
            predictions=_as_arrays(predictions), references=_as_arrays(references), **kwargs
        )

    def _compute(
        self,
        predictions: Sequence[Any] | None = None,
        references: Sequence[Any] | None = None,
        confusion_matrix: Sequence[Any] | None = None,
        num_labels: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        nan_to_num: float | None = None,
        label_map: Mapping[int, int] | None = None,
        reduce_labels: bool = False,
        protocol: str | Protocol | None = None,
        id2label: Mapping[int, str] | None = None,
    ) -> dict[str, Any]:
        if self.config_name == "confusion_matrix":
            if not confusion_matrix:
                raise ValueError("No confusion matrix given: pass confusion_matrix=[matrix, ...]")
            if label_map is not None or reduce_labels:
                raise ValueError(
                    "label_map and reduce_labels apply to label maps: the confusion_matrix configuration "
                    "takes matrices already in the label space scored"
                )
            matrices = [np.asarray(m, dtype=np.int64) for m in confusion_matrix]
            shapes = {m.shape for m in matrices}
            if len(shapes) != 1:
                raise ValueError(f"The confusion matrices have different shapes: {sorted(shapes)}")
            total = np.sum(matrices, axis=0)
            if num_labels is not None and total.shape != (num_labels, num_labels):
                raise ValueError(f"num_labels={num_labels} but the confusion matrices are {total.shape}")
        else:
            if num_labels is None:
                raise ValueError("num_labels is required with label maps (the number of classes C)")
            accumulator = None
            for prediction, reference in zip(predictions, references, strict=True):
                reference, ignore = _map_references(
                    reference, num_labels, ignore_index, label_map, reduce_labels
                )
                if accumulator is None:
                    accumulator = MeanIoU(num_labels, ignore_index=ignore)
                accumulator.update(np.asarray(prediction), reference)
            if accumulator is None:
                raise ValueError("No label maps given: pass predictions=[...] and references=[...]")
            total = accumulator.confusion_matrix().numpy()
        scores = scores_from_confusion_matrix(total, protocol=protocol, id2label=id2label)
        results = evaluate_mean_iou_results(total, nan_to_num=nan_to_num)
        if protocol is not None:  # the protocol's classes are averaged, as the extras say
            means = {"mean_iou": scores.mean_iou, "mean_accuracy": scores.mean_accuracy}
            for key, value in means.items():
                results[key] = np.float64(
                    value if nan_to_num is None else np.nan_to_num(value, nan=nan_to_num)
                )
        return {
            **results,
            **{k: v for k, v in scores.to_dict().items() if k not in results},
            "confusion_matrix": total.tolist(),
        }
