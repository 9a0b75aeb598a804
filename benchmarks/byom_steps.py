"""Seconds and peak memory of one stage-1 step for G of several families, at two sizes, with the figures at a
larger size extrapolated from them: the table of docs/bring_your_own_model.md.

    python benchmarks/byom_steps.py --threads 1                      # CPU, 128x256 and 256x512 -> 512x1024
    python benchmarks/byom_steps.py --device cuda --precision bf16 --sizes 512 1024 --target 512 1024

Each model and size runs `bench_train_step.py` in its own process (peak memory is per process). Time is fitted
as `a * pixels ** k` through the two sizes (k = 1 where cost follows the pixel count; SegFormer's attention
makes it grow faster), memory as `a + b * pixels` (weights and optimizer state plus activations).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> (bench_train_step options, batch size): UperNet's pyramid pooling needs two images per batch.
MODELS = {
    "SegFormer MiT-B5": (["--generator_config", "benchmarks/configs/segformer_mit_b5.json"], 1),
    "UperNet ConvNeXt-T": (["--generator_config", "benchmarks/configs/upernet_convnext_tiny.json"], 2),
    "DeepLab-v2 ResNet-101": (["--backbone", "resnet101"], 1),
}


def measure(options: list[str], size: tuple[int, int], batch_size: int, args: argparse.Namespace) -> dict:
    """One `bench_train_step.py` run: its JSON line."""
    command = [
        sys.executable, str(ROOT / "benchmarks" / "bench_train_step.py"), *options,
        "--source_size", str(size[0]), str(size[1]), "--target_size", str(size[0]), str(size[1]),
        "--batch_size", str(batch_size), "--warmup", str(args.warmup), "--iterations", str(args.iterations),
        "--device", args.device, "--precision", args.precision,
        *(["--threads", str(args.threads)] if args.threads else []),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))


def extrapolate(points: list[tuple[int, float]], pixels: int, power: bool) -> float:
    """The value at `pixels` through two (pixels, value) points: a power law, or a straight line."""
    (p1, v1), (p2, v2) = points
    if power:
        exponent = math.log(v2 / v1) / math.log(p2 / p1)
        return v2 * (pixels / p2) ** exponent
    return v2 + (v2 - v1) / (p2 - p1) * (pixels - p2)


def table(results: dict[str, list[dict]], target: tuple[int, int]) -> str:
    """The markdown table: measured figures per size, and the extrapolation to `target`."""
    sizes = [r["source"] for r in next(iter(results.values()))]
    head = ["model", "images per step"]
    for size in sizes:
        head += [f"s/step {size}", f"peak MB {size}"]
    head += [
        f"s/step {target[0]}x{target[1]} (extrapolated)",
        f"peak MB {target[0]}x{target[1]} (extrapolated)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rows in results.items():
        pixels = [math.prod(int(v) for v in r["source"].split("x")) for r in rows]
        seconds = [r["s_per_iter_median"] for r in rows]
        memory = [r["peak_memory_mb"] for r in rows]
        cells = [name, str(MODELS[name][1])]
        for s, m in zip(seconds, memory):
            cells += [f"{s:.2f}", f"{m:,.0f}"]
        wanted = target[0] * target[1]
        cells += [
            f"{extrapolate(list(zip(pixels, seconds))[:2], wanted, power=True):.0f}",
            f"{extrapolate(list(zip(pixels, memory))[:2], wanted, power=False):,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs=4, default=[128, 256, 256, 512], metavar=("H1", "W1", "H2", "W2")
    )
    parser.add_argument("--target", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = [tuple(args.sizes[:2]), tuple(args.sizes[2:])]
    results = {}
    for name in args.models:
        options, batch_size = MODELS[name]
        results[name] = [measure(options, size, batch_size, args) for size in sizes]
        for row in results[name]:
            print(json.dumps({"model": name, **row}), flush=True)
    print()
    print(table(results, tuple(args.target)))


if __name__ == "__main__":
    main()
