"""Time the project's mIoU against the official `cityscapesscripts` evaluation and a plain numpy bincount.

All three score the same synthetic label maps (blocky, like segmentations, with ignored blocks and a
prediction that is wrong on part of the pixels), 19 classes, and must agree on the mIoU. Timed:

- `intrada`: `modeling_intrada.metrics.MeanIoU.update` per map on CPU tensors, then `compute`;
- `numpy`: the authors' `fast_hist` recipe (mask, `np.bincount`, reshape) per map, then the IoUs;
- `cityscapesscripts`: `evaluateImgLists` over PNG files of Cityscapes label ids (how that tool
  works: it reads files), pixel-level IoU only; the time it spends decoding the PNGs is measured
  apart and reported too (`cityscapesscripts_png_decode`). Uses the package's compiled extension when
  installed, else its numpy fallback (reported as `cityscapesscripts_cython`).

Writing the PNGs and making the maps are not timed. Prints one JSON line, then a table.

    python benchmarks/bench_miou.py            # 100 maps of 512 x 1024 (about a minute on 2 cores)
    python benchmarks/bench_miou.py --full     # 500 maps of 1024 x 2048, the Cityscapes val set size
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modeling_intrada.evaluation.metrics import MeanIoU, scores_from_confusion_matrix

NUM_LABELS = 19
IGNORE_INDEX = 255


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num_images", type=int, default=100, help="label maps scored (default 100)")
    parser.add_argument("--height", type=int, default=512, help="map height (default 512)")
    parser.add_argument("--width", type=int, default=1024, help="map width (default 1024)")
    parser.add_argument("--full", action="store_true", help="500 maps of 1024 x 2048 (overrides the sizes)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: numpy and cityscapesscripts are single-threaded too)",
    )
    parser.add_argument(
        "--skip_cityscapes", action="store_true", help="leave the cityscapesscripts evaluation out"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.full:
        args.num_images, args.height, args.width = 500, 1024, 2048
    if args.num_images < 1 or args.height < 16 or args.width < 16:
        parser.error("need --num_images >= 1 and maps of at least 16 x 16 pixels")
    return args


def make_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, label) as uint8 trainId maps: 16 x 16 blocks, about 5 % ignored, 20 % of pixels wrong."""
    coarse = rng.integers(0, NUM_LABELS + 1, (height // 16 + 1, width // 16 + 1), dtype=np.uint8)
    coarse[coarse == NUM_LABELS] = IGNORE_INDEX
    label = coarse.repeat(16, axis=0).repeat(16, axis=1)[:height, :width]
    prediction = np.where(label == IGNORE_INDEX, 0, label)
    wrong = rng.random((height, width)) < 0.2
    prediction = np.where(wrong, rng.integers(0, NUM_LABELS, (height, width), dtype=np.uint8), prediction)
    return prediction.astype(np.uint8), np.ascontiguousarray(label)


def numpy_confusion(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The plain reference (the authors' `fast_hist`)."""
    keep = label != IGNORE_INDEX
    counts = np.bincount(
        NUM_LABELS * label[keep].astype(np.int64) + prediction[keep], minlength=NUM_LABELS**2
    )
    return counts.reshape(NUM_LABELS, NUM_LABELS)


def numpy_miou(confusion: np.ndarray) -> float:
    diag = np.diag(confusion).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nanmean(diag / (confusion.sum(0) + confusion.sum(1) - diag)))


def run_cityscapes(prediction_files: list[str], label_files: list[str]) -> tuple[float, float, float, bool]:
    """(seconds, seconds decoding the PNGs alone, mIoU, whether the compiled extension was used)."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = copy.copy(official.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    start = time.perf_counter()
    result = official.evaluateImgLists(prediction_files, label_files, args)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    for file in (*prediction_files, *label_files):
        np.array(Image.open(file))
    decode = time.perf_counter() - start
    return seconds, decode, float(result["averageScoreClasses"]), bool(official.CSUPPORT)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    train_to_id = np.zeros(256, np.uint8)  # trainId 255 -> id 0, "unlabeled"
    if not args.skip_cityscapes:
        from cityscapesscripts.helpers.labels import labels

        for label in labels:
            if 0 <= label.trainId < NUM_LABELS:
                train_to_id[label.trainId] = label.id

    seconds = {"intrada": 0.0, "numpy": 0.0}
    metric = MeanIoU(NUM_LABELS)
    numpy_total = np.zeros((NUM_LABELS, NUM_LABELS), np.int64)
    with tempfile.TemporaryDirectory(prefix="bench_miou_") as folder:
        prediction_files, label_files = [], []
        for i in range(args.num_images):
            prediction, label = make_pair(rng, args.height, args.width)

            start = time.perf_counter()
            metric.update(torch.from_numpy(prediction), torch.from_numpy(label))
            seconds["intrada"] += time.perf_counter() - start

            start = time.perf_counter()
            numpy_total += numpy_confusion(prediction, label)
            seconds["numpy"] += time.perf_counter() - start

            if not args.skip_cityscapes:
                prediction_files.append(str(Path(folder, f"{i:04d}_pred.png")))
                label_files.append(str(Path(folder, f"{i:04d}_gtFine_labelIds.png")))
                Image.fromarray(train_to_id[prediction]).save(prediction_files[-1], compress_level=1)
                Image.fromarray(train_to_id[label]).save(label_files[-1], compress_level=1)

        start = time.perf_counter()
        intrada_miou = metric.compute().mean_iou
        seconds["intrada"] += time.perf_counter() - start
        start = time.perf_counter()
        miou = {"intrada": intrada_miou, "numpy": numpy_miou(numpy_total)}
        seconds["numpy"] += time.perf_counter() - start

        cython = None
        if not args.skip_cityscapes:
            seconds["cityscapesscripts"], decode, miou["cityscapesscripts"], cython = run_cityscapes(
                prediction_files, label_files
            )
            seconds["cityscapesscripts_png_decode"] = decode

    assert np.array_equal(metric.confusion_matrix().numpy(), numpy_total), "confusion matrices differ"
    assert scores_from_confusion_matrix(numpy_total).mean_iou == intrada_miou
    agreement = max(abs(v - miou["intrada"]) for v in miou.values())
    report = {
        "num_images": args.num_images,
        "height": args.height,
        "width": args.width,
        "torch_threads": args.threads,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "ms_per_image": {k: round(1000 * v / args.num_images, 2) for k, v in seconds.items()},
        "ratio_to_intrada": {k: round(v / seconds["intrada"], 2) for k, v in seconds.items()},
        "mean_iou": miou,
        "max_abs_mean_iou_difference": agreement,
        "cityscapesscripts_cython": cython,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    print(json.dumps(report))
    print(f"\n{args.num_images} label maps of {args.height} x {args.width}, {NUM_LABELS} classes")
    print(f"{'method':<30} {'seconds':>9} {'ms/map':>8} {'x intrada':>10}")
    for name, value in seconds.items():
        per_map = 1000 * value / args.num_images
        print(f"{name:<30} {value:>9.2f} {per_map:>8.2f} {value / seconds['intrada']:>10.2f}")
    print(f"mIoU agreement (max abs difference): {agreement:.2e}")
    if agreement > 1e-6:
        raise SystemExit(f"The methods disagree on the mIoU: {miou}")


if __name__ == "__main__":
    main()
