"""A real adaptation study on a CPU: CamVid day -> dusk, EfficientNet-Lite0 (ImageNet, from PyPI), IntraDA.

    python benchmarks/camvid_study.py --seeds 3                       # the full study, written into docs/camvid.md
    python benchmarks/camvid_study.py --seeds 1 --iterations 100 --no_ablations --output_dir /tmp/quick
    python benchmarks/camvid_study.py --seeds 3 --no_ablations --bn_mode reference   # BatchNorm in training mode

Per seed, with `training/configs/camvid_day_to_dusk.yaml` (240x180, batch 2, every stage `--iterations` steps):
source only; stage 1 AdvEnt (G_inter); the ranking (lambda 0.67); stage 3 IntraDA from ImageNet; and the
ablations: lambda in {0.5, 0.8, 1.0} (1.0 = every target image easy: self-training only), the rare-class
entropy normalisation, and stage 3 initialised from G_inter. Every model is scored (mIoU, 11 classes) on the
31 labelled dusk validation frames and on the 171 daylight test frames.

The ranking's quality is measured directly: G_inter's pixel accuracy and mIoU against the real labels of the
62 dusk training frames, separately on the easy and the hard split. Those labels are read here, from the
`full` configuration, for this measurement only; training reads `target_train`, which has no label column.

Writes `<output_dir>/study.json`, `<output_dir>/table.md`, pictures (predictions of each stage on the same
dusk frames; the ranking gallery), and the table into docs/camvid.md between its markers (with `--bn_mode`,
those of that mode's own section, and `<output_dir>` defaults to outputs/camvid_study_bn_<mode>).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import modeling_intrada.training.pipeline as run_intrada
from modeling_intrada import DeepLabV2ForSemanticSegmentation
from modeling_intrada.evaluation.metrics import MeanIoU
from modeling_intrada.evaluation.segmentation import EvaluationSplit, evaluate_segmentation
from modeling_intrada.labels import colorize, get_label_space
from modeling_intrada.method.ranking import load_ranking

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "camvid_day_to_dusk.yaml"
DOCS = ROOT / "docs" / "camvid.md"
BN_MODES = ("frozen", "reference")
CAMVID = get_label_space("camvid")


def build_dataset(raw: Path, built: Path) -> Path:
    if not (built / "README.md").is_file():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "dataset_scripts" / "camvid.py"),
                "--data_dir",
                str(raw),
                "--output_dir",
                str(built),
            ],
            check=True,
        )
    return built


def run(argv: list[str]) -> None:
    print("$ run_intrada.py " + " ".join(argv), flush=True)
    run_intrada.main(argv)


def score(model_dir: Path, data: Path, config: str, split: str) -> dict:
    model = DeepLabV2ForSemanticSegmentation.from_pretrained(model_dir).eval()
    dataset = EvaluationSplit(data, config, split, (180, 240), "imagenet")
    scores, _ = evaluate_segmentation(
        model, dataset, CAMVID.num_classes, batch_size=8, id2label=CAMVID.id2label
    )
    return {
        "mean_iou": scores.mean_iou,
        "pixel_accuracy": scores.pixel_accuracy,
        "per_class_iou": scores.to_dict()["per_class_iou"],
    }


@torch.inference_mode()
def ranking_quality(model_dir: Path, ranking_dir: Path, data: Path) -> dict:
    """G_inter against the real labels of the dusk training frames, per split (measurement only)."""
    ranking = load_ranking(ranking_dir)
    split_of = {i: "easy" for i in ranking.easy_ids} | {i: "hard" for i in ranking.hard_ids}
    frames = EvaluationSplit(data, "full", "train", (180, 240), "imagenet")
    keep = [i for i, image_id in enumerate(frames.dataset["id"]) if image_id in split_of]
    model = DeepLabV2ForSemanticSegmentation.from_pretrained(model_dir).eval()
    metrics = {"easy": MeanIoU(CAMVID.num_classes), "hard": MeanIoU(CAMVID.num_classes)}
    for index in keep:
        item = frames[index]
        logits = model(pixel_values=item["pixel_values"][None]).logits
        labels = item["labels"]
        prediction = torch.nn.functional.interpolate(
            logits, size=tuple(labels.shape), mode="bilinear", align_corners=True
        ).argmax(1)[0]
        metrics[split_of[item["id"]]].update(prediction, labels)
    result = {}
    for split, metric in metrics.items():
        s = metric.compute(id2label=CAMVID.id2label)
        result[split] = {"images": sum(1 for v in split_of.values() if v == split), "pixel_accuracy": s.pixel_accuracy,
                         "mean_iou": s.mean_iou}  # fmt: skip
    return result


def predictions_picture(models: dict[str, Path], data: Path, path: Path, frames: int = 4) -> None:
    from PIL import Image

    dataset = EvaluationSplit(data, "target_val", "validation", (180, 240), "imagenet")
    rows = []
    for index in range(0, len(dataset), max(1, len(dataset) // frames))[:frames]:
        item = dataset[index]
        row = [np.asarray(dataset.image(index)), colorize(item["labels"].numpy().astype(np.uint8), CAMVID)]
        for model_dir in models.values():
            model = DeepLabV2ForSemanticSegmentation.from_pretrained(model_dir).eval()
            with torch.inference_mode():
                logits = model(pixel_values=item["pixel_values"][None]).logits
            prediction = torch.nn.functional.interpolate(logits, size=tuple(item["labels"].shape), mode="bilinear",
                                                         align_corners=True).argmax(1)[0]  # fmt: skip
            row.append(colorize(prediction.numpy().astype(np.uint8), CAMVID))
        rows.append(np.concatenate(row, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def one_seed(seed: int, args, data: Path) -> dict:
    out = args.output_dir / f"seed{seed}"
    base = ["--config", str(CONFIG), "--seed", str(seed), "--num_iterations", str(args.iterations),
            "--max_iters", str(args.iterations), "--num_workers", str(args.num_workers),
            "--source_dataset", str(data), "--target_dataset", str(data), "--val_dataset", str(data),
            *(["--bn_mode", args.bn_mode] if args.bn_mode else [])]  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}

    def timed(name: str, argv: list[str]) -> None:
        folder, stage = Path(argv[argv.index("--output_dir") + 1]), argv[argv.index("--stage") + 1]
        done = folder / ("ranking/ranking.json" if stage == "rank" else f"{stage}/DONE")
        if done.is_file():  # resumable: a finished stage of an interrupted study is not run again
            return
        start = time.perf_counter()
        run(argv)
        (folder / f"{stage}_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")

    # Source only and stage 1 (AdvEnt).
    timed(
        "source_only",
        [*base, "--output_dir", str(out / "source_only"), "--stage", "inter", "--framework", "source_only"],
    )
    timed("advent", [*base, "--output_dir", str(out / "advent"), "--stage", "inter"])
    g_inter = out / "advent" / "inter" / "model"
    variants = {"IntraDA (lambda 0.67)": ["--lambda_easy", "0.67"]}
    if not args.no_ablations and seed < args.first_seed + args.ablation_seeds:
        variants.update({
            "lambda 0.5": ["--lambda_easy", "0.5"],
            "lambda 0.8": ["--lambda_easy", "0.8"],
            "lambda 1.0 (self-training only)": ["--lambda_easy", "1.0", "--intra_framework", "source_only"],
            "+ entropy normalisation": ["--lambda_easy", "0.67", "--normalize_entropy", "true"],
            "G_intra from G_inter": ["--lambda_easy", "0.67", "--intra_init", "inter"],
        })  # fmt: skip
    ranking_report = {}
    for name, extra in variants.items():
        folder = out / name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "plus")
        common = [*base, *extra, "--output_dir", str(folder), "--inter_model", str(g_inter)]
        timed(f"rank: {name}", [*common, "--stage", "rank"])
        timed(name, [*common, "--stage", "intra"])
        if name.startswith("IntraDA") or name.startswith("+ entropy"):
            ranking_report[name] = ranking_quality(g_inter, folder / "ranking", data)
        results[name] = folder / "intra" / "model"
    models = {"source only": out / "source_only" / "inter" / "model", "AdvEnt (G_inter)": g_inter, **results}
    scores = {
        name: {
            "dusk_val": score(path, data, "target_val", "validation"),
            "day_test": score(path, data, "day_test", "test"),
        }
        for name, path in models.items()
    }
    main_models = {k: models[k] for k in ("source only", "AdvEnt (G_inter)", "IntraDA (lambda 0.67)")}
    predictions_picture(main_models, data, out / "predictions.png")
    shutil.copy(out / "IntraDA_lambda_0.67" / "ranking" / "ranking.png", out / "ranking_gallery.png")
    return {"seed": seed, "scores": scores, "ranking": ranking_report, "seconds": seed_seconds(out)}


MAIN_RUNS = ("source_only", "advent", "IntraDA_lambda_0.67")


def seed_seconds(out: Path) -> dict[str, float]:
    """Wall time of every finished stage of one seed, `<run folder>/<stage>` -> seconds.

    Recorded by `timed` in `<run folder>/<stage>_seconds.txt`; a stage that ran before those records
    existed gets its time from its files (the run's config.yaml is written when a stage starts, DONE when it
    ends), and a ranking without a record is left out (about a minute).
    """
    seconds = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        for stage in ("inter", "rank", "intra"):
            record, done = folder / f"{stage}_seconds.txt", folder / stage / "DONE"
            if record.is_file():
                seconds[f"{folder.name}/{stage}"] = float(record.read_text())
            elif done.is_file():
                seconds[f"{folder.name}/{stage}"] = (
                    done.stat().st_mtime - (folder / "config.yaml").stat().st_mtime
                )
    return seconds


def table(per_seed: list[dict], iterations: int, bn_mode: str | None = None) -> str:
    names = list(dict.fromkeys(name for r in per_seed for name in r["scores"]))

    def cell(values: list[float]) -> str:
        values = [100 * v for v in values]
        if len(values) == 1:
            return f"{values[0]:.1f}" + (" (1 seed)" if len(per_seed) > 1 else "")
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    bn = f", BatchNorm `{bn_mode}`" if bn_mode else ""
    lines = [f"{len(per_seed)} seed(s), {iterations} iterations per stage, batch 2 per domain, 240x180{bn} "
             "(mean ± std over the seeds that ran a row).", "",
             "| model | mIoU dusk val (31) | mIoU day test (171) |", "|---|---:|---:|"]  # fmt: skip
    for name in names:
        dusk = [r["scores"][name]["dusk_val"]["mean_iou"] for r in per_seed if name in r["scores"]]
        day = [r["scores"][name]["day_test"]["mean_iou"] for r in per_seed if name in r["scores"]]
        lines.append(f"| {name} | {cell(dusk)} | {cell(day)} |")
    lines += ["", "Ranking quality: G_inter against the real labels of the 62 dusk training frames (measurement only).",
              "", "| ranking | split | images | pixel accuracy | mIoU |", "|---|---|---:|---:|---:|"]  # fmt: skip
    for name in dict.fromkeys(name for r in per_seed for name in r["ranking"]):
        for split in ("easy", "hard"):
            accuracy = [r["ranking"][name][split]["pixel_accuracy"] for r in per_seed if name in r["ranking"]]
            miou = [r["ranking"][name][split]["mean_iou"] for r in per_seed if name in r["ranking"]]
            images = per_seed[0]["ranking"][name][split]["images"]
            lines.append(f"| {name} | {split} | {images} | {cell(accuracy)} | {cell(miou)} |")
    lines += ["", "Wall time per seed (training and ranking; the main runs are source only, AdvEnt, ranking and "
              "IntraDA, the ablations the rest):", ""]  # fmt: skip
    for r in per_seed:
        main = sum(v for k, v in r["seconds"].items() if k.split("/")[0] in MAIN_RUNS)
        ablations = sum(v for k, v in r["seconds"].items() if k.split("/")[0] not in MAIN_RUNS)
        lines.append(
            f"- seed {r['seed']}: main {main / 60:.0f} min"
            + (f", ablations {ablations / 60:.0f} min" if ablations else "")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--no_ablations", action="store_true")
    parser.add_argument(
        "--ablation_seeds", type=int, default=3, help="run the ablations for the first N seeds"
    )
    parser.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument("--built", type=Path, default=ROOT / "data" / "camvid")
    parser.add_argument(
        "--bn_mode", choices=BN_MODES, default=None, help="override the config's BatchNorm mode (frozen)"
    )
    parser.add_argument(
        "--output_dir", type=Path, default=None, help="default outputs/camvid_study[_bn_<mode>]"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading workers per stream")
    parser.add_argument(
        "--summarize_only", action="store_true",
        help="run nothing: write the table of the seeds already finished in output_dir (seeds run apart)",
    )  # fmt: skip
    parser.add_argument("--no_docs", action="store_true", help="do not write the table into docs/camvid.md")
    args = parser.parse_args()
    if args.output_dir is None:
        args.output_dir = ROOT / "outputs" / study_name(args.bn_mode)
    per_seed = []
    if args.summarize_only:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result_file = args.output_dir / f"seed{seed}" / "result.json"
            if result_file.is_file():
                per_seed.append(
                    {**json.loads(result_file.read_text()), "seconds": seed_seconds(result_file.parent)}
                )
        if per_seed:
            write_outputs(per_seed, args)
        return
    data = build_dataset(args.raw, args.built)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        result_file = args.output_dir / f"seed{seed}" / "result.json"
        if result_file.is_file():  # resumable: a finished seed (or one run apart) is read, not run again
            result = {**json.loads(result_file.read_text()), "seconds": seed_seconds(result_file.parent)}
        else:
            result = one_seed(seed, args, data)
            result_file.write_text(json.dumps(result, indent=2))
        per_seed.append(result)
        write_outputs(per_seed, args)  # after every seed: an interrupted study still leaves its table


def write_outputs(per_seed: list[dict], args) -> None:
    markdown = table(per_seed, args.iterations, args.bn_mode)
    (args.output_dir / "study.json").write_text(json.dumps(per_seed, indent=2))
    (args.output_dir / "table.md").write_text(markdown + "\n")
    print(markdown)
    if not args.no_docs and DOCS.is_file():
        text = DOCS.read_text()
        begin, end = markers(args.bn_mode)
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            DOCS.write_text(head + begin + "\n" + markdown + "\n" + end + rest.split(end, 1)[1])


def study_name(bn_mode: str | None) -> str:
    """`camvid_study`, or `camvid_study_bn_<mode>` for the study with another BatchNorm mode."""
    return "camvid_study" + (f"_bn_{bn_mode}" if bn_mode else "")


def markers(bn_mode: str | None) -> tuple[str, str]:
    """The docs/camvid.md markers of that study's section (`camvid-study-bn-reference`, ...)."""
    name = study_name(bn_mode).replace("_", "-")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


if __name__ == "__main__":
    main()
