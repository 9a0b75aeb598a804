"""Settings that come from `accelerate launch` or a saved `accelerate config` win unless the program's option is
given explicitly: the run's Accelerator reports the launcher's precision, and an explicit option overrides it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modeling_intrada.training.arguments import parse_arguments

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "run_intrada.py"

TINY = [
    "--stage", "inter",
    "--backbone", "timm:mobilenetv3_small_050",
    "--source_size", "32", "64",
    "--target_size", "32", "64",
    "--synthetic_num_images", "4", "4", "2",
    "--num_iterations", "1",
    "--max_iters", "1",
    "--checkpointing_steps", "1",
    "--batch_size", "1",
    "--num_workers", "0",
]  # fmt: skip


def test_mixed_precision_is_not_given_by_default():
    assert parse_arguments([]).run.mixed_precision is None
    assert parse_arguments(["--mixed_precision", "bf16"]).run.mixed_precision == "bf16"
    with pytest.raises(ValueError, match="--mixed_precision must be no, fp16 or bf16"):
        parse_arguments(["--mixed_precision", "fp8"])


@pytest.fixture(scope="module")
def saved_config(tmp_path_factory) -> Path:
    """A saved `accelerate config` (what `accelerate config` writes) asking for bf16 on one CPU process."""
    path = tmp_path_factory.mktemp("accelerate") / "default_config.yaml"
    config = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "NO",
        "mixed_precision": "bf16",
        "num_machines": 1,
        "num_processes": 1,
        "use_cpu": True,
        "dynamo_config": {},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def launch(tmp_path: Path, launcher: list[str], program: list[str]) -> dict:
    """`accelerate launch <launcher> run_intrada.py <program>` on CPU; the stage's checkpoint loop state."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *launcher, str(SCRIPT), *TINY, *program,
        "--output_dir", str(out), "--synthetic_dir", str(tmp_path / "synthetic"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load((out / "config.yaml").read_text())
    state = json.loads((out / "inter" / "checkpoints" / "checkpoint-1" / "loop_state.json").read_text())
    return {"option": config["mixed_precision"], "used": state["mixed_precision"]}


@pytest.mark.parametrize("source", ["saved config", "launcher flag"])
def test_the_launcher_sets_the_precision(tmp_path, saved_config, source):
    if source == "saved config":
        launcher = ["--config_file", str(saved_config)]
    else:
        launcher = ["--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "bf16"]
        launcher += ["--dynamo_backend", "no"]
    assert launch(tmp_path, launcher, []) == {"option": None, "used": "bf16"}


def test_an_explicit_option_wins_over_the_launcher(tmp_path, saved_config):
    launcher = ["--config_file", str(saved_config), "--mixed_precision", "bf16"]
    assert launch(tmp_path, launcher, ["--mixed_precision", "no"]) == {"option": "no", "used": "no"}
