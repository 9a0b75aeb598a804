"""mIoU over a confusion matrix (SPEC section 6): hand-made values, agreement with a plain numpy reference
and with the official `cityscapesscripts` evaluation on random and real label maps, protocols, bad
inputs, the `evaluate` module and the reduction over processes."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_utils import accelerator_kwargs, run_on_processes
from PIL import Image

from modeling_intrada.evaluation.metrics import (
    PROTOCOLS,
    MeanIoU,
    Protocol,
    SegmentationScores,
    _count,  # private: the counting step, to test its off-CPU path on CPU values
    confusion_matrix,
    evaluate_module_path,
    get_protocol,
    markdown_table,
    scores_from_confusion_matrix,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6


# --- references written here, independent of the library --------------------------------------------------


def numpy_confusion(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> np.ndarray:
    """The plain numpy bincount confusion matrix (the authors' `fast_hist`): rows ground truth."""
    references, predictions = references.ravel().astype(np.int64), predictions.ravel().astype(np.int64)
    keep = (references >= 0) & (references < num_labels)
    counts = np.bincount(num_labels * references[keep] + predictions[keep], minlength=num_labels**2)
    return counts.reshape(num_labels, num_labels)


def numpy_ious(confusion: np.ndarray) -> np.ndarray:
    confusion = confusion.astype(np.float64)
    diag = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        return diag / (confusion.sum(0) + confusion.sum(1) - diag)


def assert_close(actual: list[float] | float, expected: list[float] | float) -> None:
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=0, atol=TOLERANCE)


def random_maps(
    rng: np.random.Generator, shape: tuple[int, ...], num_labels: int, ignore_fraction: float = 0.1
):
    """Blocky random label maps (like segmentations) and predictions that agree on about half the pixels."""
    h, w = shape[-2:]
    coarse = rng.integers(0, num_labels, (*shape[:-2], h // 4 + 1, w // 4 + 1))
    references = coarse.repeat(4, axis=-2).repeat(4, axis=-1)[..., :h, :w]
    predictions = np.where(
        rng.random(references.shape) < 0.5, references, rng.integers(0, num_labels, references.shape)
    )
    references = np.where(rng.random(references.shape) < ignore_fraction, 255, references)
    return predictions.astype(np.int64), references.astype(np.int64)


# --- the cityscapesscripts evaluation, driven on label maps written as Cityscapes label-id PNGs -------------


@pytest.fixture(scope="module")
def cityscapes_eval():
    """(evaluate(pairs, tmp_dir) -> its result dict, train_id -> label id, train_id -> class name)."""
    pytest.importorskip("cityscapesscripts", reason="cityscapesscripts is a test dependency")
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official
    from cityscapesscripts.helpers.labels import labels

    train_to_id = np.zeros(256, np.uint8)  # trainId 255 -> id 0 ("unlabeled", ignored in evaluation)
    names = {}
    for label in labels:
        if 0 <= label.trainId < 19:
            train_to_id[label.trainId] = label.id
            names[label.trainId] = label.name

    def evaluate_files(pairs: list[tuple[np.ndarray, np.ndarray]], folder: Path) -> dict:
        """Write (prediction ids, ground-truth ids) pairs as PNGs and run the official evaluation on them."""
        folder.mkdir(parents=True, exist_ok=True)
        prediction_files, label_files = [], []
        for i, (prediction_ids, label_ids) in enumerate(pairs):
            prediction_files.append(str(folder / f"{i}_pred.png"))
            label_files.append(str(folder / f"{i}_gtFine_labelIds.png"))
            Image.fromarray(prediction_ids.astype(np.uint8)).save(prediction_files[-1])
            Image.fromarray(label_ids.astype(np.uint8)).save(label_files[-1])
        args = copy.copy(official.args)
        args.evalInstLevelScore = (
            False  # instance-weighted IoU needs instance maps; pixel IoU is what we compare
        )
        args.evalPixelAccuracy = False
        args.JSONOutput = False
        args.quiet = True
        return official.evaluateImgLists(prediction_files, label_files, args)

    return evaluate_files, train_to_id, names


def assert_matches_cityscapes(
    scores: SegmentationScores, official: dict, class_names: dict[int, str]
) -> None:
    for index, iou in zip(scores.class_indices, scores.per_class_iou, strict=True):
        expected = official["classScores"][class_names[index]]
        assert math.isnan(iou) == math.isnan(expected), (class_names[index], iou, expected)
        if not math.isnan(iou):
            assert_close(iou, expected)
    assert_close(scores.mean_iou, official["averageScoreClasses"])


# --- hand-made example ---------------------------------------------------------------------------------------


def test_hand_made_three_class_example():
    references = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    predictions = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    # Labelled pixels (ref -> pred): 0->0, 0->1, 1->1, 1->1, 2->2, 2->0, 1->1; the 255 pixel is left out.
    expected_matrix = [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    # IoU = tp / (row + col - tp): class 0: 1 / (2 + 2 - 1); class 1: 3 / (3 + 4 - 3); class 2: 1 / (2 + 1 - 1)
    expected_iou = [1 / 3, 3 / 4, 1 / 2]
    metric = MeanIoU(num_labels=3)
    metric.update(predictions, references)
    scores = metric.compute(id2label={0: "road", 1: "car", 2: "sky"})

    assert metric.confusion_matrix().tolist() == expected_matrix
    assert_close(scores.per_class_iou, expected_iou)
    assert_close(scores.mean_iou, (1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert_close(scores.pixel_accuracy, 5 / 7)
    assert_close(scores.per_class_accuracy, [1 / 2, 3 / 3, 1 / 2])
    assert scores.num_pixels == 7
    assert scores.class_names == ["road", "car", "sky"]
    assert scores.iou_by_name()["car"] == pytest.approx(0.75)


def test_absent_class_is_nan_and_left_out_of_the_mean():
    # Class 2 is neither labelled nor predicted; class 1 is predicted but never labelled (IoU 0, kept).
    references = torch.tensor([0, 0, 0, 255])
    predictions = torch.tensor([0, 0, 1, 2])
    metric = MeanIoU(3)
    metric.update(predictions, references)
    scores = metric.compute()
    assert_close(scores.per_class_iou[:2], [2 / 3, 0.0])
    assert math.isnan(scores.per_class_iou[2])
    assert_close(scores.mean_iou, (2 / 3 + 0.0) / 2)
    assert math.isnan(scores.per_class_accuracy[1])
    assert scores.to_dict()["per_class_iou"][2] is None
    json.dumps(scores.to_dict(), allow_nan=False)  # JSON-ready


# --- agreement with the plain numpy reference ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.int32])
def test_accumulated_matrix_equals_numpy_bincount(dtype):
    rng = np.random.default_rng(1)
    metric = MeanIoU(num_labels=19)
    expected = np.zeros((19, 19), np.int64)
    for _ in range(3):  # batches of different sizes
        predictions, references = random_maps(rng, (2, 64, 96), 19)
        metric.update(torch.from_numpy(predictions).to(dtype), torch.from_numpy(references).to(dtype))
        expected += numpy_confusion(predictions, references, 19)
    np.testing.assert_array_equal(metric.confusion_matrix().numpy(), expected)
    scores = metric.compute()
    ious = numpy_ious(expected)
    assert_close(scores.per_class_iou, ious)
    assert_close(scores.mean_iou, np.nanmean(ious))
    assert_close(scores.pixel_accuracy, np.trace(expected) / expected.sum())


def test_fixed_size_counting_used_off_the_cpu_equals_bincount():
    # Off the CPU the counts go through scatter_add_ (no host copy); check that path on CPU values.
    index = torch.from_numpy(np.random.default_rng(0).integers(0, 441, 10_000)).int()
    np.testing.assert_array_equal(
        _count(index, 441, fixed_size=True).numpy(), _count(index, 441, fixed_size=False).numpy()
    )


def test_one_shot_confusion_matrix_accepts_numpy_and_lists():
    rng = np.random.default_rng(2)
    predictions, references = random_maps(rng, (40, 50), 5)
    expected = numpy_confusion(predictions, references, 5)
    np.testing.assert_array_equal(confusion_matrix(predictions, references, 5).numpy(), expected)
    np.testing.assert_array_equal(
        confusion_matrix(predictions.tolist(), references.tolist(), 5).numpy(), expected
    )


@pytest.mark.parametrize("ignore_index", [-100, 1000])
def test_other_ignore_indices(ignore_index):
    rng = np.random.default_rng(3)
    predictions, references = random_maps(rng, (30, 40), 7)
    references = np.where(references == 255, ignore_index, references)
    metric = MeanIoU(7, ignore_index=ignore_index)
    metric.update(torch.from_numpy(predictions), torch.from_numpy(references))
    np.testing.assert_array_equal(
        metric.confusion_matrix().numpy(), numpy_confusion(predictions, references, 7)
    )
    with pytest.raises(ValueError, match=f"values other than 0..6 or the ignore index {ignore_index}"):
        # 255 is then an ordinary invalid value
        confusion_matrix(torch.tensor([0]), torch.tensor([255]), 7, ignore_index=ignore_index)


# --- agreement with cityscapesscripts -----------------------------------------------------------------------


def test_random_maps_match_cityscapes_evaluation(cityscapes_eval, tmp_path):
    evaluate_files, train_to_id, names = cityscapes_eval
    rng = np.random.default_rng(4)
    metric, pairs = MeanIoU(19), []
    for _ in range(3):
        predictions, references = random_maps(rng, (96, 128), 19)
        # Leave some classes out entirely so that both sides must agree on NaN classes too.
        predictions = np.where(np.isin(predictions, [16, 17]), 0, predictions)
        references = np.where(np.isin(references, [16, 17]), 255, references)
        metric.update(torch.from_numpy(predictions), torch.from_numpy(references))
        pairs.append((train_to_id[predictions], train_to_id[references]))
    scores = metric.compute(protocol="19")
    assert math.isnan(scores.per_class_iou[16]) and math.isnan(scores.per_class_iou[17])
    assert_matches_cityscapes(scores, evaluate_files(pairs, tmp_path), names)


def perturb(
    rng: np.random.Generator, label_map: np.ndarray, num_labels: int, fraction: float = 0.1
) -> np.ndarray:
    """A prediction-like copy of a real label map: shifted by a few pixels, with some pixels replaced."""
    shifted = np.roll(label_map, shift=(3, -5), axis=(0, 1)).astype(np.int64)
    noise = rng.random(shifted.shape) < fraction
    shifted = np.where(noise, rng.integers(0, num_labels, shifted.shape), shifted)
    # Real maps hold void/ignore pixels; a prediction is a class everywhere.
    return np.where(shifted >= num_labels, rng.integers(0, num_labels, shifted.shape), shifted)


# CamVid's 11 classes (sky, building, pole, road, sidewalk, tree, sign, fence, car, pedestrian, bicyclist)
# sent to distinct Cityscapes trainIds so that the official script can score them.
CAMVID_TO_TRAIN_ID = np.array([10, 2, 5, 0, 1, 8, 7, 4, 13, 11, 18] + [255] * 245, np.uint8)


def test_real_camvid_maps_match_numpy_and_cityscapes_evaluation(shared_data, cityscapes_eval, tmp_path):
    evaluate_files, train_to_id, names = cityscapes_eval
    folder = shared_data / "camvid"
    if not (folder / "testannot").is_dir():
        pytest.skip(f"{folder / 'testannot'} is absent")
    files = sorted((folder / "testannot").glob("*.png"))[::40][:5]
    rng = np.random.default_rng(5)
    metric, pairs, expected = MeanIoU(11), [], np.zeros((11, 11), np.int64)
    for file in files:
        label = np.array(Image.open(file)).astype(np.int64)  # 0..10, 11 = void
        assert label.max() <= 11, file
        references = np.where(label == 11, 255, label)
        predictions = perturb(rng, label, 11)
        metric.update(torch.from_numpy(predictions), torch.from_numpy(references))
        expected += numpy_confusion(predictions, references, 11)
        pairs.append(
            (train_to_id[CAMVID_TO_TRAIN_ID[predictions]], train_to_id[CAMVID_TO_TRAIN_ID[references]])
        )
    scores = metric.compute()
    assert 0.3 < scores.mean_iou < 0.95  # a real, imperfect prediction
    assert_close(scores.per_class_iou, numpy_ious(expected))
    names_by_camvid_class = {c: names[int(CAMVID_TO_TRAIN_ID[c])] for c in range(11)}
    assert_matches_cityscapes(scores, evaluate_files(pairs, tmp_path), names_by_camvid_class)


def test_real_cityscapes_sample_matches_numpy_and_cityscapes_evaluation(
    shared_data, cityscapes_eval, tmp_path
):
    evaluate_files, train_to_id, names = cityscapes_eval
    from cityscapesscripts.helpers.labels import labels

    stem = (
        shared_data / "cityscapes_sample" / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_"
    )
    if not Path(f"{stem}labelIds.png").is_file():
        pytest.skip(f"{stem}labelIds.png is absent")
    # The official script reads the real label-id file; we read the same ids mapped to trainIds.
    label_ids = np.array(Image.open(f"{stem}labelIds.png"))
    id_to_train = np.full(256, 255, np.int64)
    for label in labels:
        if 0 <= label.id < 256 and 0 <= label.trainId < 19:
            id_to_train[label.id] = label.trainId
    references = id_to_train[label_ids]
    # The prediction: the sample's own trainId file (resampled separately, so not identical), perturbed.
    predictions = perturb(
        np.random.default_rng(6), np.array(Image.open(f"{stem}labelTrainIds.png")), 19, 0.05
    )
    metric = MeanIoU(19)
    metric.update(torch.from_numpy(predictions), torch.from_numpy(references))
    scores = metric.compute(protocol="19")
    assert_close(scores.per_class_iou, numpy_ious(numpy_confusion(predictions, references, 19)))
    official = evaluate_files([(train_to_id[predictions], label_ids)], tmp_path)
    assert_matches_cityscapes(scores, official, names)
    assert sum(not math.isnan(v) for v in scores.per_class_iou) >= 8  # the frame has many classes


# --- ignore handling and bad inputs -------------------------------------------------------------------------


def test_ignored_pixels_do_not_count_whatever_the_prediction():
    references = torch.tensor([0, 1, 255, 255, 255])
    with_ignored = torch.tensor([0, 1, 0, 1, 255])  # predictions on ignored pixels (even 255) are irrelevant
    np.testing.assert_array_equal(confusion_matrix(with_ignored, references, 2).numpy(), [[1, 0], [0, 1]])


def test_prediction_of_the_ignore_index_on_a_labelled_pixel_is_an_error():
    with pytest.raises(ValueError, match="1 labelled pixels are predicted as the ignore index 255"):
        confusion_matrix(torch.tensor([0, 255]), torch.tensor([0, 1]), 2)


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ([0, 1], [0, 2], "1 reference pixels have values other than 0..1 or the ignore index 255"),
        ([0, 7], [0, 1], "1 predicted pixels have values other than 0..1"),
        ([-1, 0], [0, 1], "1 predicted pixels"),
        ([0, 0], [-3, 254], "2 reference pixels"),
        ([0, 0], [0, 2**40], "1 reference pixels"),  # must not wrap around into a class
    ],
)
def test_out_of_range_values_are_errors(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(torch.tensor(predictions), torch.tensor(references), 2)
    with pytest.raises(ValueError, match=message):
        MeanIoU(2).update(torch.tensor(predictions), torch.tensor(references))


def test_invalid_values_in_a_later_update_are_reported_by_compute_with_the_call_number():
    metric = MeanIoU(3)
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    metric.update(torch.tensor([0, 9]), torch.tensor([0, 1]))  # no host synchronisation: checked later
    with pytest.raises(ValueError, match=r"first met in update call 3 .*1 predicted pixels"):
        metric.compute()
    metric.reset()
    metric.update(torch.tensor([2]), torch.tensor([2]))
    assert metric.compute().mean_iou == 1.0


def test_bad_arguments_raise_with_a_clear_message():
    with pytest.raises(TypeError, match=r"integer class indices.*argmax"):
        MeanIoU(3).update(torch.rand(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        MeanIoU(3).update(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="num_labels must be a positive integer"):
        MeanIoU(0)
    with pytest.raises(ValueError, match="ignore_index 1 is a class index"):
        MeanIoU(3, ignore_index=1)
    with pytest.raises(ValueError, match="square"):
        scores_from_confusion_matrix(np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="negative"):
        scores_from_confusion_matrix(-np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match="whole numbers"):
        scores_from_confusion_matrix(np.eye(3) / 2)
    with pytest.raises(ValueError, match=r"no name for class indices \[2\]"):
        scores_from_confusion_matrix(np.eye(3, dtype=np.int64), id2label={0: "a", 1: "b"})


# --- protocols ----------------------------------------------------------------------------------------------


def test_protocol_class_sets():
    assert PROTOCOLS["19"].class_indices == tuple(range(19))
    assert PROTOCOLS["16"].class_indices == tuple(range(16))
    assert PROTOCOLS["13"].class_indices == (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    assert PROTOCOLS["13"].num_labels == 16


def test_protocols_average_subsets_of_the_same_per_class_ious():
    rng = np.random.default_rng(7)
    matrix = rng.integers(0, 50, (16, 16)) + np.diag(rng.integers(50, 500, 16))
    matrix[5, :] = 0  # pole never labelled ...
    matrix[:, 5] = 0  # ... nor predicted: NaN in the 16-class mean, outside the 13 anyway
    names = {i: f"class{i}" for i in range(16)}
    iou16 = scores_from_confusion_matrix(matrix, "16", names)
    iou13 = scores_from_confusion_matrix(matrix, "13", names)
    ious = numpy_ious(matrix)
    assert_close(iou16.mean_iou, np.nanmean(ious))
    assert_close(iou13.mean_iou, np.mean(ious[[0, 1, 2, *range(6, 16)]]))
    # The 13 reuse the 16-class IoUs (false positives from wall/fence/pole pixels still count).
    assert iou13.iou_by_name() == {
        k: v for k, v in iou16.iou_by_name().items() if k not in {"class3", "class4", "class5"}
    }
    assert iou13.pixel_accuracy == iou16.pixel_accuracy
    assert (iou16.protocol, iou13.protocol) == ("16", "13")


def test_protocol_must_fit_the_matrix_size():
    with pytest.raises(
        ValueError, match="Protocol '13' is defined over 16 classes, but the confusion matrix has 19"
    ):
        scores_from_confusion_matrix(np.eye(19, dtype=np.int64), "13")
    with pytest.raises(ValueError, match="Unknown protocol '17'"):
        get_protocol("17", 17)
    with pytest.raises(ValueError, match=r"outside 0\.\.10"):
        Protocol("camvid", 11, (0, 11))
    custom = scores_from_confusion_matrix(
        np.eye(11, dtype=np.int64), Protocol("camvid-no-sky", 11, tuple(range(1, 11)))
    )
    assert custom.class_indices == list(range(1, 11)) and custom.mean_iou == 1.0


# --- markdown table -----------------------------------------------------------------------------------------


def test_markdown_table_like_table_1():
    names = {0: "road", 1: "car", 2: "sky"}
    a = scores_from_confusion_matrix(np.array([[3, 1, 0], [0, 4, 0], [0, 0, 0]]), id2label=names)
    b = scores_from_confusion_matrix(np.eye(3, dtype=np.int64), id2label=names)
    table = markdown_table({"AdvEnt": a, "IntraDA": b})
    lines = table.splitlines()
    assert lines[0] == "|  | road | car | sky | mIoU (3) |"
    assert lines[2] == "| AdvEnt | 75.0 | 80.0 | n/a | 77.5 |"
    assert lines[3] == "| IntraDA | 100.0 | 100.0 | 100.0 | 100.0 |"
    other = scores_from_confusion_matrix(np.eye(3, dtype=np.int64))
    with pytest.raises(ValueError, match="different classes"):
        markdown_table({"a": a, "b": other})


# --- the evaluate module -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluate_lib():
    return pytest.importorskip("evaluate")


def test_evaluate_module_from_the_repository_root_and_elsewhere(evaluate_lib, tmp_path, monkeypatch):
    rng = np.random.default_rng(8)
    pairs = [random_maps(rng, (20, 30), 16) for _ in range(3)]
    names = {i: f"c{i}" for i in range(16)}
    metric = MeanIoU(16)
    for predictions, references in pairs:
        metric.update(torch.from_numpy(predictions), torch.from_numpy(references))
    expected = metric.compute(protocol="13", id2label=names).to_dict()

    monkeypatch.chdir(PROJECT_ROOT)
    from_root = evaluate_lib.load("modeling_intrada/evaluation/intrada_mean_iou")
    monkeypatch.chdir(tmp_path)
    from_elsewhere = evaluate_lib.load(evaluate_module_path())
    for module in (from_root, from_elsewhere):
        for predictions, references in pairs:
            module.add_batch(predictions=[predictions], references=[references])
        result = module.compute(num_labels=16, protocol="13", id2label=names)
        assert result.pop("confusion_matrix") == metric.confusion_matrix().tolist()
        assert {key: result[key] for key in expected} == expected  # evaluate's keys beside ours
        assert set(result) == set(expected) | EVALUATE_KEYS

    by_matrix = evaluate_lib.load(evaluate_module_path(), "confusion_matrix")
    halves = [confusion_matrix(p, r, 16).tolist() for p, r in pairs]
    result = by_matrix.compute(confusion_matrix=halves, protocol="13", id2label=names)
    result.pop("confusion_matrix")
    assert {key: result[key] for key in expected} == expected
    assert set(result) == set(expected) | EVALUATE_KEYS


# --- evaluate's mean_iou, written here from its documented formulas (evaluate/metrics/mean_iou) -------------

EVALUATE_KEYS = {"mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy"}


def evaluate_mean_iou(
    predictions, references, num_labels, ignore_index, nan_to_num=None, label_map=None, reduce_labels=False
) -> dict:
    """evaluate's `mean_iou`: per image, map the labels, drop ignored pixels, histogram the intersection,
    the prediction and the label over `num_labels` bins; sum; IoU = intersect / union, accuracy =
    intersect / label; nanmeans; `overall_accuracy` = total intersect / total label."""
    total_intersect = total_union = total_pred = total_label = np.zeros(num_labels, np.float64)
    for pred_label, label in zip(predictions, references, strict=True):
        label = np.array(label)
        if label_map is not None:
            for old_id, new_id in label_map.items():
                label[label == old_id] = new_id
        pred_label = np.array(pred_label)
        if reduce_labels:
            label[label == 0] = 255
            label = label - 1
            label[label == 254] = 255
        mask = np.not_equal(label, ignore_index)
        pred_label, label = pred_label[mask], label[mask]
        intersect = pred_label[pred_label == label]
        area_intersect = np.histogram(intersect, bins=num_labels, range=(0, num_labels - 1))[0]
        area_pred = np.histogram(pred_label, bins=num_labels, range=(0, num_labels - 1))[0]
        area_label = np.histogram(label, bins=num_labels, range=(0, num_labels - 1))[0]
        total_intersect = total_intersect + area_intersect
        total_union = total_union + area_pred + area_label - area_intersect
        total_pred = total_pred + area_pred
        total_label = total_label + area_label
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = total_intersect / total_union
        accuracy = total_intersect / total_label
        metrics = {
            "mean_iou": np.nanmean(iou),
            "mean_accuracy": np.nanmean(accuracy),
            "overall_accuracy": total_intersect.sum() / total_label.sum(),
            "per_category_iou": iou,
            "per_category_accuracy": accuracy,
        }
    if nan_to_num is not None:
        metrics = {key: np.nan_to_num(value, nan=nan_to_num) for key, value in metrics.items()}
    return metrics


def assert_same_as_evaluate(result: dict, expected: dict) -> None:
    for key in EVALUATE_KEYS:
        assert type(result[key]) is type(expected[key]), (key, type(result[key]), type(expected[key]))
        np.testing.assert_allclose(result[key], expected[key], rtol=0, atol=1e-12, err_msg=key)
    for key in ("per_category_iou", "per_category_accuracy"):
        assert result[key].dtype == np.float64


@pytest.mark.parametrize(
    "options",
    [
        {"ignore_index": 255},
        {"ignore_index": 255, "nan_to_num": 0.0},
        {"ignore_index": 255, "nan_to_num": -1.0, "reduce_labels": True},
        {"ignore_index": 0},  # a class index, as in the transformers semantic-segmentation examples
        {"ignore_index": 255, "label_map": {7: 255, 3: 5}},
        {"ignore_index": 255, "label_map": {1: 2, 2: 3}},  # entries applied one after another
    ],
)
def test_evaluate_module_equals_evaluate_mean_iou(evaluate_lib, options):
    rng = np.random.default_rng(11)
    num_labels = 8
    pairs = [random_maps(rng, (24, 20), num_labels) for _ in range(3)]
    predictions = [p for p, _ in pairs]
    # Class 6 never labelled nor predicted: NaN entries, so that nan_to_num has work.
    predictions = [np.where(p == 6, 1, p) for p in predictions]
    references = [np.where(r == 6, 255, r) for _, r in pairs]
    if options["ignore_index"] == 0:  # class 0 is the unlabelled "background"
        references = [np.where(r == 255, 0, r) for r in references]
    if options.get("reduce_labels"):  # label 0 is "other", classes are 1..C
        references = [np.where(r == 255, 255, np.minimum(r + 1, num_labels)) for r in references]
    module = evaluate_lib.load(evaluate_module_path())
    result = module.compute(predictions=predictions, references=references, num_labels=num_labels, **options)
    assert_same_as_evaluate(result, evaluate_mean_iou(predictions, references, num_labels, **options))
    assert result["pixel_accuracy"] == pytest.approx(result["overall_accuracy"])
    assert len(result["per_class_iou"]) == num_labels  # the extras, beside evaluate's keys


def test_evaluate_module_accepts_pil_images_and_add_batch(evaluate_lib):
    rng = np.random.default_rng(12)
    pairs = [random_maps(rng, (16, 24), 5) for _ in range(2)]
    as_images = [(Image.fromarray(p.astype(np.uint8)), Image.fromarray(r.astype(np.uint8))) for p, r in pairs]
    expected = evaluate_mean_iou([p for p, _ in pairs], [r for _, r in pairs], 5, 255)
    module = evaluate_lib.load(evaluate_module_path())
    result = module.compute(
        predictions=[p for p, _ in as_images],
        references=[r for _, r in as_images],
        num_labels=5,
        ignore_index=255,
    )
    assert_same_as_evaluate(result, expected)
    for prediction, reference in as_images:
        module.add_batch(predictions=[prediction], references=[reference])
    assert_same_as_evaluate(module.compute(num_labels=5, ignore_index=255), expected)
    module.add(prediction=as_images[0][0], reference=as_images[0][1])
    module.add(prediction=as_images[1][0], reference=as_images[1][1])
    assert_same_as_evaluate(module.compute(num_labels=5, ignore_index=255), expected)


def test_confusion_matrix_configuration_gives_evaluate_keys(evaluate_lib):
    rng = np.random.default_rng(13)
    predictions, references = random_maps(rng, (30, 30), 6)
    expected = evaluate_mean_iou([predictions], [references], 6, 255, nan_to_num=0.0)
    by_matrix = evaluate_lib.load(evaluate_module_path(), "confusion_matrix")
    result = by_matrix.compute(
        confusion_matrix=[confusion_matrix(predictions, references, 6).tolist()], nan_to_num=0.0
    )
    assert_same_as_evaluate(result, expected)
    with pytest.raises(ValueError, match="label_map and reduce_labels apply to label maps"):
        by_matrix.compute(confusion_matrix=[np.eye(3, dtype=np.int64).tolist()], reduce_labels=True)


def test_evaluate_module_errors(evaluate_lib):
    module = evaluate_lib.load(evaluate_module_path())
    with pytest.raises(ValueError, match=r"1 reference pixels have values other than 0\.\.2"):
        module.compute(predictions=[[[0, 1]]], references=[[[0, 3]]], num_labels=3)
    with pytest.raises(ValueError, match="num_labels is required"):
        module.compute(predictions=[[[0, 1]]], references=[[[0, 1]]])
    by_matrix = evaluate_lib.load(evaluate_module_path(), "confusion_matrix")
    with pytest.raises(ValueError, match="num_labels=4 but the confusion matrices are"):
        by_matrix.compute(confusion_matrix=[np.eye(3, dtype=np.int64).tolist()], num_labels=4)
    with pytest.raises(ValueError, match="Unknown configuration"):
        evaluate_lib.load(evaluate_module_path(), "label_maps")


# --- reduction over processes (2 CPU processes, gloo) -------------------------------------------------------


def _distributed_worker(rank: int, batches: list, out_dir: str) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(**accelerator_kwargs())
    assert accelerator.num_processes == 2
    metric, idle = MeanIoU(19), MeanIoU(19)
    for predictions, references in batches[rank::2]:
        metric.update(torch.from_numpy(predictions), torch.from_numpy(references))
    results = {
        "distributed": [str(accelerator.distributed_type), torch.distributed.get_world_size()],
        "accelerate": metric.compute(accelerator=accelerator).to_dict(),
        # Again, through the process group Accelerate started: computing twice must not double the counts.
        "torch_distributed": metric.compute().to_dict(),
        "matrix": metric.confusion_matrix(accelerator).tolist(),
        # A process that saw no batch still joins the sum.
        "idle": idle.confusion_matrix(accelerator).tolist(),
    }
    bad = MeanIoU(19)
    bad.update(torch.tensor([0]), torch.tensor([0]))
    if rank == 1:
        bad.update(torch.tensor([40]), torch.tensor([0]))
    try:
        bad.compute(accelerator=accelerator)
    except ValueError as error:  # every process raises, none is left waiting in a collective
        results["error"] = str(error)
    Path(out_dir, f"{rank}.json").write_text(json.dumps(results))
    accelerator.end_training()


def test_reduction_over_two_processes(tmp_path):
    rng = np.random.default_rng(9)
    batches = [random_maps(rng, (2, 24, 32), 19) for _ in range(5)]
    single = MeanIoU(19)
    for predictions, references in batches:
        single.update(torch.from_numpy(predictions), torch.from_numpy(references))
    expected = single.compute().to_dict()

    run_on_processes(_distributed_worker, 2, batches, str(tmp_path))
    for rank in range(2):
        results = json.loads((tmp_path / f"{rank}.json").read_text())
        assert results["distributed"] == ["DistributedType.MULTI_CPU", 2]
        assert results["accelerate"] == expected
        assert results["torch_distributed"] == expected
        assert results["matrix"] == single.confusion_matrix().tolist()
        assert results["idle"] == np.zeros((19, 19), int).tolist()
        suffix = "first met in update call 2 of this process" if rank == 1 else "on another process"
        assert suffix in results["error"] and "1 predicted pixels" in results["error"]
