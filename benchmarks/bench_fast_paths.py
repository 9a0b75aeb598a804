"""Each candidate fast path's stage-1 step time, as a ratio to our fp32 eager step and to the authors' step.

    python benchmarks/bench_fast_paths.py --candidates fp32_eager space_to_batch fused_optimizers
    python benchmarks/bench_fast_paths.py --device cuda --source_size 720 1280 --target_size 512 1024 \\
        --candidates bf16_channels_last bf16_cuda_graphs --run bf16
    python benchmarks/bench_fast_paths.py --summarize results.jsonl      # one table over several runs

One process ("run") builds the authors' step (`reference`: benchmarks/reference_deeplab.py, plain PyTorch, fp32,
eager) and each candidate of `--candidates` (ours: `AdaptationStage` with the options of `CANDIDATES`), warms
each up, then times them in turn step by step, so that a noisy machine affects all alike. Every row has its
ratio to the reference of its own run and, when the run has `fp32_eager`, to that.

Accelerate keeps one mixed precision per process, so the candidates of one run share a precision, and fp32 and
bf16 candidates run in two processes. `--summarize` then gives each candidate's ratio to fp32 eager chained
through the authors' step, which every run times: (candidate / reference in its run) x (fp32 eager / reference
in the fp32 run). Compiled candidates are best run one per process: torch.compile's caches are per process,
and a per-process time limit then stops one slow compilation alone.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import environment, median, peak_memory_mb, report, synchronize
from bench_train_step import build_ours, build_reference

from modeling_intrada.training.cpu_allocator import keep_freed_memory

# name -> the options of bench_train_step.py that differ from our fp32 eager step.
CANDIDATES: dict[str, dict] = {
    "fp32_eager": {},
    "space_to_batch": {"atrous_implementation": "space_to_batch"},
    "space_to_batch_backbone": {"atrous_implementation": "space_to_batch_backbone"},
    "foreach_optimizers": {"optimizer_implementation": "foreach"},
    "fused_optimizers": {"optimizer_implementation": "fused"},
    "compiled_discriminator_input": {"compile_discriminator_input": True},
    "fp32_compiled": {"compile": True},
    "fp32_cuda_graphs": {"compile": True, "compile_mode": "reduce-overhead"},
    "bf16_channels_last": {"precision": "bf16", "channels_last": True},
    "bf16_channels_last_fp32_batchnorm": {"precision": "bf16", "channels_last": True, "autocast_policy": "fp32_batchnorm"},
    "bf16_channels_last_space_to_batch": {"precision": "bf16", "channels_last": True, "atrous_implementation": "space_to_batch"},
    "bf16_eager_all": {
        "precision": "bf16", "channels_last": True, "autocast_policy": "fp32_batchnorm",
        "atrous_implementation": "space_to_batch", "optimizer_implementation": "fused",
        "compile_discriminator_input": True,
    },
    "bf16_compiled": {"precision": "bf16", "channels_last": True, "compile": True},
    "bf16_cuda_graphs": {"precision": "bf16", "channels_last": True, "compile": True, "compile_mode": "reduce-overhead"},
    "bf16_cuda_graphs_all": {
        "precision": "bf16", "channels_last": True, "compile": True, "compile_mode": "reduce-overhead",
        "autocast_policy": "fp32_batchnorm", "optimizer_implementation": "fused",
    },
}  # fmt: skip
DEFAULTS = {
    "precision": "fp32", "channels_last": False, "compile": False, "compile_mode": None,
    "atrous_implementation": "dilated", "compile_discriminator_input": False, "optimizer_implementation": "default",
    "autocast_policy": "default",
}  # fmt: skip
REFERENCE = "reference"


def candidate_arguments(base: argparse.Namespace, name: str) -> argparse.Namespace:
    """`base` (sizes, backbone, device) with the options of candidate `name`."""
    return argparse.Namespace(**{**vars(base), **DEFAULTS, **CANDIDATES[name]})


def run(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Build, warm up, then time the reference and the candidates in turn; one row per implementation."""
    names = list(dict.fromkeys(args.candidates))
    precisions = {CANDIDATES[name].get("precision", "fp32") for name in names}
    if len(precisions) > 1:
        raise SystemExit(
            f"the candidates of one run share a precision (Accelerate's is per process): {names}"
        )
    steps, build_seconds = {}, {}
    reference_args = argparse.Namespace(**{**vars(args), **DEFAULTS})
    for name in [REFERENCE, *names]:
        start = time.perf_counter()
        if name == REFERENCE:
            steps[name] = build_reference(reference_args, device)
        else:
            steps[name] = build_ours(candidate_arguments(args, name), device)
        for _ in range(args.warmup):
            steps[name]()
        synchronize(device)
        build_seconds[name] = time.perf_counter() - start
        print(f"{name}: built and warmed up in {build_seconds[name]:.1f} s", flush=True)
    seconds = {name: [] for name in steps}
    for _ in range(args.iterations):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    reference = median(seconds[REFERENCE])
    eager = median(seconds["fp32_eager"]) if "fp32_eager" in seconds else None
    rows = []
    for name, values in seconds.items():
        options = DEFAULTS if name == REFERENCE else {**DEFAULTS, **CANDIDATES[name]}
        rows.append({
            "run": args.run, "candidate": name, "backbone": args.backbone,
            "source": "x".join(map(str, args.source_size)), "target": "x".join(map(str, args.target_size)),
            **options, "s_per_iter_median": median(values), "s_per_iter_min": min(values),
            "build_and_warmup_s": build_seconds[name], "iterations": len(values),
            "over_reference": median(values) / reference,
            "over_fp32_eager": median(values) / eager if eager else None,
            **environment(device),
        })  # fmt: skip
    rows[-1]["peak_memory_mb_process"] = peak_memory_mb(device)
    return rows


def summarize(path: Path) -> list[dict]:
    """Rows of several runs: ratios to fp32 eager chained through each run's reference where needed."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    rows = [row for row in rows if row.get("benchmark") == "fast_paths"]
    eager = next((row for row in rows if row["candidate"] == "fp32_eager"), None)
    eager_over_reference = eager["over_reference"] if eager else None
    table = []
    for row in rows:
        same_run = row["over_fp32_eager"]
        chained = row["over_reference"] / eager_over_reference if eager_over_reference else None
        table.append({
            "run": row["run"], "candidate": row["candidate"], "s_per_iter_median": row["s_per_iter_median"],
            "over_fp32_eager": same_run if same_run is not None else chained,
            "how": "same run" if same_run is not None else ("via the reference" if chained else ""),
            "over_reference": row["over_reference"],
        })  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=["fp32_eager"])
    parser.add_argument("--run", default="run", help="a name for this process's rows")
    parser.add_argument("--summarize", type=Path, default=None, help="a file of JSON lines of earlier runs")
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--num_labels", type=int, default=19)
    parser.add_argument("--source_size", type=int, nargs=2, default=[144, 256], metavar=("H", "W"))
    parser.add_argument("--target_size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"))
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args()
    args.framework, args.single_level = "advent", False
    columns = ["run", "candidate", "s_per_iter_median", "over_fp32_eager", "how", "over_reference"]
    if args.summarize:
        table = summarize(args.summarize)
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for row in table:
            print(
                "| "
                + " | ".join(f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns)
                + " |"
            )
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the stage loop and the authors' code
    rows = run(args, device)
    report("fast_paths", rows, ["run", "candidate", "precision", "s_per_iter_median", "s_per_iter_min",
                                "build_and_warmup_s", "over_fp32_eager", "over_reference"])  # fmt: skip


if __name__ == "__main__":
    main()
