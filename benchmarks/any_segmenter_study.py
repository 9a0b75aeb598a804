"""IntraDA's ranking and stage 3 plugged onto stage-1 models of two families, DeepLab-v2 and SegFormer, 3 seeds.

    OMP_NUM_THREADS=1 python benchmarks/any_segmenter_study.py        # the study, into docs/any_segmenter_study.md
    python benchmarks/any_segmenter_study.py --seeds 1 --num_iterations 2 --output_dir /tmp/quick --no_docs \\
        -- --synthetic_num_images 16 12 6

Every run is the embedded default (`modeling_intrada/training/default_config.yaml`: the synthetic pair, 96x192,
batch 2, Adam at 1e-3, 200 steps per stage) with G a new, randomly initialised model of one of two families:
DeepLab-v2 with the default's MobileNetV3-small backbone (no extra option), or a MiT-b0-sized SegFormer
(`--generator_config training/configs/segformer_small.json`). Nothing is tuned per family. Per model and seed:

1. stage 1 alone (`--stage inter`, AdvEnt) into `<output_dir>/<model>-<seed>/stage1`: G_inter;
2. the plug-in path into `<output_dir>/<model>-<seed>/plugin`: `--inter_model <stage1>/inter/model
   --intra_init inter` with `--stage rank`, then `--stage intra`, then `--stage eval`.

From the plug-in run it reads the mIoU of G_inter and G_intra (eval/metrics.json: the mean over the classes the
synthetic target labels, and protocol 19's), the ranking's mean target `condition` on the easy and the hard
split (ranking/ranking.json), and the wall seconds of every stage. It writes `<output_dir>/study.json` and
`<output_dir>/table.md`, and, unless `--no_docs`, the per-run results to
`benchmarks/results/any_segmenter_study.json` and the table between the markers of
`docs/any_segmenter_study.md`.

A stage finished by an earlier call with the same command is read, not run again (an interrupted study goes on
where it stopped); one finished with another command is refused, or run again with `--overwrite`. Options
after `--` go to every run (e.g. the synthetic dataset's size, for a quick check).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

import modeling_intrada.training.pipeline as run_intrada
from modeling_intrada.atomic import write_text_atomically
from modeling_intrada.run_layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "any_segmenter_study.md"
RESULTS = ROOT / "benchmarks" / "results" / "any_segmenter_study.json"
MARKER = "any-segmenter-study"
SEEDS = (1234, 1, 2)
# The embedded default's steps per stage (default_config.yaml).
NUM_ITERATIONS = 200
# Stage-1 models: name in the output folders -> (name in the table, the options that choose G).
MODELS = {
    "deeplabv2": ("DeepLab-v2 (MobileNetV3-small)", []),
    "segformer": (
        "SegFormer (MiT-b0 size)",
        ["--generator_config", str(ROOT / "training" / "configs" / "segformer_small.json")],
    ),
}
STAGES = ("inter", "rank", "intra", "eval")
STAGE_TITLES = {"inter": "stage 1", "rank": "ranking", "intra": "stage 3", "eval": "eval"}


def markers(name: str = MARKER) -> tuple[str, str]:
    """The HTML comments that delimit the study's table in the docs."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The study's options, and the run options given after `--`."""
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--num_iterations", type=int, default=NUM_ITERATIONS, help="steps of each stage")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "any_segmenter_study")
    parser.add_argument("--num_threads", type=int, default=1, help="torch CPU threads of every run")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading workers per stream")
    parser.add_argument("--overwrite", action="store_true", help="run every stage again")
    parser.add_argument(
        "--no_docs", action="store_true", help="write the table and results under output_dir only"
    )
    parser.add_argument("--docs", type=Path, default=DOCS, help="the page with the table's markers")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the per-run results go")
    args = parser.parse_args(argv)
    if args.num_iterations < 1:
        parser.error(f"--num_iterations must be at least 1, got {args.num_iterations}")
    return args, extra


# ------------------------------------------------------------------------------------------------ runs
def run_stage(folder: Path, stage: str, argv: list[str], overwrite: bool) -> dict:
    """Run one stage of `run_intrada.py` in `folder` and record its command and wall seconds there
    (`<stage>_run.json`); a stage recorded with the same command is read instead."""
    record = folder / f"{stage}_run.json"
    if record.is_file() and not overwrite:
        done = json.loads(record.read_text())
        if done["argv"] != argv:
            raise ValueError(
                f"{record} records stage {stage} run with another command ({' '.join(done['argv'])}); pass "
                "--overwrite to run it again, or use another --output_dir"
            )
        return done
    argv = [*argv, "--overwrite"] if overwrite else argv
    print("$ run_intrada.py " + " ".join(argv), flush=True)
    start = time.perf_counter()
    run_intrada.main(argv)
    done = {"argv": argv, "seconds": round(time.perf_counter() - start, 1)}
    write_text_atomically(record, json.dumps(done, indent=2) + "\n")
    return done


def one_run(model: str, seed: int, args: argparse.Namespace, extra: list[str]) -> dict:
    """Stage 1 of `model`, then the ranking, stage 3 and the evaluation plugged onto its G_inter; returns
    what `read_result` reads of them."""
    out = args.output_dir / f"{model}-{seed}"
    stage1, plugin = RunLayout(out / "stage1"), RunLayout(out / "plugin")
    steps = str(args.num_iterations)
    base = ["--seed", str(seed), "--num_iterations", steps, "--max_iters", steps,
            "--num_threads", str(args.num_threads), "--num_workers", str(args.num_workers), *extra]  # fmt: skip
    records = {
        "inter": run_stage(
            stage1.output_dir,
            "inter",
            [*base, *MODELS[model][1], "--output_dir", str(stage1.output_dir), "--stage", "inter"],
            args.overwrite,
        )
    }
    g_inter = stage1.model_dir("inter")
    common = [*base, "--output_dir", str(plugin.output_dir),
              "--inter_model", str(g_inter), "--intra_init", "inter"]  # fmt: skip
    for stage in ("rank", "intra", "eval"):
        records[stage] = run_stage(plugin.output_dir, stage, [*common, "--stage", stage], args.overwrite)
    return read_result(model, seed, plugin, records)


def read_result(model: str, seed: int, plugin: RunLayout, records: dict[str, dict]) -> dict:
    """One run's result: the mIoUs of the plug-in run's eval/metrics.json, the ranking's mean condition per
    split, the stages' wall seconds and commands."""
    metrics = json.loads(plugin.metrics_file.read_text())
    ranking = json.loads(plugin.ranking_summary.read_text())
    protocol = metrics["protocols"][0]
    mean_iou, labelled_name = {}, None
    for name in ("G_inter", "G_intra"):
        labelled_name, labelled = labelled_mean_iou(metrics, name, protocol)
        mean_iou[name] = {"labelled_classes": labelled, "protocol": metrics["results"][name]["scores"][protocol]["mean_iou"]}  # fmt: skip
    return {
        "model": model,
        "seed": seed,
        "mean_iou": mean_iou,
        "labelled_classes": labelled_name,
        "protocol": protocol,
        "mean_condition": ranking.get("mean_condition", {}),
        "seconds": {stage: records[stage]["seconds"] for stage in STAGES},
        "commands": {stage: "run_intrada.py " + " ".join(records[stage]["argv"]) for stage in STAGES},
    }


def labelled_mean_iou(metrics: dict, name: str, protocol: str) -> tuple[str, float]:
    """The mIoU of result `name` over the classes the dataset labels, as results.md reports it (`mIoU
    (synthetic, 9 classes)`), with that column's name; the protocol's own when the dataset labels them all."""
    scores = metrics["results"][name]["scores"][protocol]
    labelled = metrics["dataset"]["dataset_classes_labelled"]
    if labelled is None:
        return f"protocol {protocol}", scores["mean_iou"]
    ious = dict(zip(scores["class_names"], scores["per_class_iou"]))
    # A class absent from both labels and predictions has no IoU (null) and is left out of the mean.
    values = [ious[c] for c in labelled if ious[c] is not None and not math.isnan(ious[c])]
    return f"{metrics['dataset']['label_space']}, {len(labelled)} classes", statistics.fmean(values)


# ----------------------------------------------------------------------------------------------- table
def table(results: list[dict]) -> str:
    """The markdown table of the study: per stage-1 model, mean ± sample std over its seeds (when it has
    several), then each seed."""
    labelled, protocol = results[0]["labelled_classes"], results[0]["protocol"]
    header = [
        "stage-1 model", "seed", f"G_inter mIoU ({labelled})", f"G_intra mIoU ({labelled})", "G_intra − G_inter",
        f"G_inter mIoU ({protocol})", f"G_intra mIoU ({protocol})", "mean condition easy", "mean condition hard",
        *(f"{STAGE_TITLES[stage]} s" for stage in STAGES),
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for model in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == model]
        if len(runs) > 1:
            columns = zip(*(row_values(r) for r in runs))
            cells = [mean_std(values, digits) for values, digits in zip(columns, COLUMN_DIGITS)]
            lines.append(
                f"| {MODELS[model][0]} | mean ± std ({len(runs)} seeds) | " + " | ".join(cells) + " |"
            )
        for r in runs:
            cells = [f"{v:.{digits}f}" for v, digits in zip(row_values(r), COLUMN_DIGITS)]
            lines.append(f"| {MODELS[model][0]} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Decimals of each value column of `table`: mIoUs in %, conditions in [0, 1], seconds.
COLUMN_DIGITS = (1, 1, 1, 1, 1, 2, 2, *(0 for _ in STAGES))


def row_values(result: dict) -> list[float]:
    """The table's value columns for one run (mIoUs in %)."""
    inter, intra = result["mean_iou"]["G_inter"], result["mean_iou"]["G_intra"]
    condition = result["mean_condition"]
    return [
        100 * inter["labelled_classes"],
        100 * intra["labelled_classes"],
        100 * (intra["labelled_classes"] - inter["labelled_classes"]),
        100 * inter["protocol"],
        100 * intra["protocol"],
        condition.get("easy", math.nan),
        condition.get("hard", math.nan),
        *(result["seconds"][stage] for stage in STAGES),
    ]


def mean_std(values: tuple[float, ...], digits: int) -> str:
    """`mean ± sample standard deviation`, with `digits` decimals."""
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def provenance(results: list[dict], args: argparse.Namespace, argv: list[str]) -> str:
    """How the table was made: the command, the machine, the versions, the time it took."""
    command = "python benchmarks/any_segmenter_study.py" + "".join(f" {a}" for a in argv)
    if "OMP_NUM_THREADS" in os.environ:
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    seconds = sum(sum(r["seconds"].values()) for r in results)
    seeds = list(dict.fromkeys(r["seed"] for r in results))
    return (
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}), {args.num_iterations} steps per stage; mIoU in % "
        "on the labelled target validation split, last snapshot of each stage; seconds of wall time per stage. "
        f"Produced by `{command}` on {cpu_model()} ({os.cpu_count()} CPU threads, {args.num_threads} torch "
        f"thread(s) per run, one run at a time), torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {time.strftime('%Y-%m-%d')}; the stages took {seconds / 60:.0f} min in all."
    )


def cpu_model() -> str:
    """The processor's model name, as `lscpu` shows it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def check_markers(path: Path, name: str = MARKER) -> str:
    """The text of `path`, which must hold the markers `<!-- name:begin -->` and `<!-- name:end -->`."""
    content = path.read_text()
    begin, end = markers(name)
    if begin not in content or end not in content:
        raise ValueError(f"{path} lacks the markers {begin} ... {end} that delimit the study table")
    return content


def write_between_markers(path: Path, text: str, name: str = MARKER) -> None:
    """Replace what lies between `<!-- name:begin -->` and `<!-- name:end -->` in `path` with `text`."""
    begin, end = markers(name)
    before, rest = check_markers(path, name).split(begin, 1)
    write_text_atomically(path, f"{before}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")


def write_outputs(results: list[dict], args: argparse.Namespace, argv: list[str]) -> str:
    """study.json and table.md in the output folder; unless `--no_docs`, the results file and the docs."""
    markdown = table(results) + "\n\n" + provenance(results, args, argv)
    document = json.dumps(results, indent=2) + "\n"
    write_text_atomically(args.output_dir / "study.json", document)
    write_text_atomically(args.output_dir / "table.md", markdown + "\n")
    if not args.no_docs:
        write_text_atomically(args.results, document)
        write_between_markers(args.docs, markdown)
    return markdown


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parse_args(argv)
    args.output_dir = args.output_dir.resolve()
    if not args.no_docs:
        check_markers(args.docs)  # before the runs, not after half an hour of them
    results = []
    for seed in args.seeds:
        for model in args.models:
            results.append(one_run(model, seed, args, extra))
            # After every run: an interrupted study still leaves the table of what finished.
            markdown = write_outputs(results, args, argv)
    print(markdown)
    return results


if __name__ == "__main__":
    main()
