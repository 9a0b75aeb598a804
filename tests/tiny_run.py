"""A tiny but real run folder for the evaluation and publishing tests: `run_intrada.py` end to end.

The synthetic default at 32x64 (4 source, 6 target, 4 validation images), a MobileNetV3-small backbone and
2 iterations per stage with a snapshot at every step: about 15 s on 2 cores. Built once per test session
(under pytest's base temporary folder) and shared by the test modules that ask for it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from modeling_intrada.data.synthetic import build_synthetic_dataset

TINY_BACKBONE = "timm:mobilenetv3_small_100"


def build_tiny_run(root: Path) -> tuple[Path, Path]:
    """(run folder, dataset folder) under `root`, built on the first call and reused afterwards."""
    data = build_synthetic_dataset(
        root / "data", seed=0, num_source=4, num_target_train=6, num_target_val=4, height=32, width=64
    )
    run_dir = root / "run"
    if (run_dir / "eval" / "metrics.json").is_file():
        return run_dir, data
    from modeling_intrada.training.pipeline import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other on a shared machine
    try:
        main(tiny_run_arguments(run_dir, data))
    finally:
        torch.set_num_threads(threads)
    return run_dir, data


def tiny_run_arguments(run_dir: Path, data: Path) -> list[str]:
    """The command line of the tiny run (without a stage: all of them)."""
    return [
        "--output_dir", str(run_dir),
        "--source_dataset", str(data),
        "--target_dataset", str(data),
        "--val_dataset", str(data),
        "--backbone", TINY_BACKBONE,
        "--source_size", "32", "64",
        "--target_size", "32", "64",
        "--num_iterations", "2",
        "--max_iters", "10",
        "--snapshot_steps", "1",
        "--batch_size", "2",
        "--eval_batch_size", "4",
        "--num_workers", "0",
        "--lambda_easy", "0.5",
        "--log_steps", "1",
    ]  # fmt: skip
