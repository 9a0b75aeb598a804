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

from modeling_intrada.evaluation.metrics import MeanIoU, Protocol, scores_from_confusion_matrix
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
left out of the mean. Two input modes: label maps (the default configuration) or already accumulated
confusion matrices (configuration "confusion_matrix"), which are summed.
"""

_KWARGS_DESCRIPTION = """
Args (default configuration, label maps):
    predictions (list of 2-D integer arrays): predicted class indices 0..num_labels-1, one map per image.
    references (list of 2-D integer arrays): ground-truth class indices, the same shapes; `ignore_index`
        marks unlabelled pixels.
    num_labels (int): the number of classes C.
    ignore_index (int, default 255): the label value left out.
Args (configuration "confusion_matrix"):
    confusion_matrix (list of C x C integer arrays): accumulated confusion matrices, summed.
    num_labels (int, optional): checked against the matrices' size.
Args (both):
    protocol (str, optional): "19", "16" or "13"; all C classes when omitted.
    id2label (dict, optional): class names by index, for `class_names` and `per_class_iou` keys.
Returns:
    mean_iou (float or None), mean_accuracy, pixel_accuracy, num_pixels, protocol, class_indices,
    class_names, per_class_iou and per_class_accuracy (lists in protocol order; None where NaN),
    confusion_matrix (C x C list of lists).
Examples:
    >>> import evaluate
    >>> from modeling_intrada.evaluation.metrics import evaluate_module_path
    >>> miou = evaluate.load(evaluate_module_path())
    >>> miou.compute(predictions=[[[0, 1], [1, 2]]], references=[[[0, 1], [2, 255]]], num_labels=3)["mean_iou"]
    0.5
"""

_CONFIGURATIONS = ("default", "confusion_matrix")


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

    def _compute(
        self,
        predictions: Sequence[Any] | None = None,
        references: Sequence[Any] | None = None,
        confusion_matrix: Sequence[Any] | None = None,
        num_labels: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        protocol: str | Protocol | None = None,
        id2label: Mapping[int, str] | None = None,
    ) -> dict[str, Any]:
        if self.config_name == "confusion_matrix":
            if not confusion_matrix:
                raise ValueError("No confusion matrix given: pass confusion_matrix=[matrix, ...]")
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
            accumulator = MeanIoU(num_labels, ignore_index=ignore_index)
            for prediction, reference in zip(predictions, references, strict=True):
                accumulator.update(np.asarray(prediction), np.asarray(reference))
            total = accumulator.confusion_matrix().numpy()
        scores = scores_from_confusion_matrix(total, protocol=protocol, id2label=id2label)
        return {**scores.to_dict(), "confusion_matrix": total.tolist()}
