"""A single CPU process uses the machine's cores under `accelerate launch`, unless the user chose a thread count
(`--num_threads`, `accelerate launch --num_cpu_threads_per_process`, or `OMP_NUM_THREADS` set by the user)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modeling_intrada.training.cpu_threads import Launcher, cpu_threads_for_run, machine_cores

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "run_intrada.py"

LAUNCHED = {"ACCELERATE_DYNAMO_BACKEND": "NO", "OMP_NUM_THREADS": "1"}  # what `accelerate launch` passes on
USER = Launcher(environ={"PATH": "/usr/bin"}, cmdline=["accelerate", "launch", "training/run_intrada.py"])


def test_the_users_choice_wins_and_the_launchers_default_does_not():
    cores = machine_cores()
    assert cpu_threads_for_run(3, "cpu", 1, LAUNCHED, USER) == 3  # --num_threads
    assert cpu_threads_for_run(None, "cpu", 1, LAUNCHED, USER) == cores  # the launcher's default 1
    with_env = Launcher({"OMP_NUM_THREADS": "1"}, USER.cmdline)
    assert cpu_threads_for_run(None, "cpu", 1, LAUNCHED, with_env) is None  # OMP_NUM_THREADS=1 accelerate ...
    for flag in (["--num_cpu_threads_per_process", "1"], ["--num_cpu_threads_per_process=1"]):
        given = Launcher(USER.environ, ["accelerate", "launch", *flag, "training/run_intrada.py"])
        assert cpu_threads_for_run(None, "cpu", 1, LAUNCHED, given) is None
    assert cpu_threads_for_run(None, "cpu", 1, {"OMP_NUM_THREADS": "1"}, USER) is None  # not accelerate's
    assert cpu_threads_for_run(None, "cpu", 1, LAUNCHED, Launcher(None, None)) is None  # no trace to read
    assert cpu_threads_for_run(None, "cpu", 2, LAUNCHED, USER) is None  # processes share the cores
    assert cpu_threads_for_run(None, "cuda", 1, LAUNCHED, USER) is None
    assert 1 <= cores <= (os.cpu_count() or 1)


TINY = [
    "--stage", "inter",
    "--backbone", "timm:mobilenetv3_small_050",
    "--source_size", "32", "64",
    "--target_size", "32", "64",
    "--synthetic_num_images", "2", "2", "2",
    "--num_iterations", "1",
    "--max_iters", "1",
    "--batch_size", "1",
    "--num_workers", "0",
]  # fmt: skip


def launched_threads(tmp_path: Path, launcher: list[str], user_threads: str | None) -> tuple[int, str]:
    """(torch threads, OMP_NUM_THREADS) that `accelerate launch <launcher> run_intrada.py` reports, with the
    user's OMP_NUM_THREADS set or not."""
    env = {**os.environ, "INTRADA_VERBOSE": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("ACCELERATE_USE_CPU", None)
    if user_threads is not None:
        env["OMP_NUM_THREADS"] = user_threads
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", *launcher, str(SCRIPT), *TINY,
        "--output_dir", str(tmp_path / "out"), "--synthetic_dir", str(tmp_path / "synthetic"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"torch CPU threads: (\d+) \(OMP_NUM_THREADS=(\w+)\)", done.stderr)
    assert match, done.stderr[-3000:]
    return int(match.group(1)), match.group(2)


@pytest.mark.slow
@pytest.mark.skipif(machine_cores() < 2, reason="one core: the default and a choice of 1 look the same")
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the launcher's environment is read via /proc"
)
def test_accelerate_launch_on_cpu(tmp_path):
    # accelerate passes OMP_NUM_THREADS=1 by default; the program uses the cores.
    assert launched_threads(tmp_path / "default", [], None) == (machine_cores(), "1")
    # The user's choice, through the launcher's flag or the environment, is kept.
    assert launched_threads(tmp_path / "flag", ["--num_cpu_threads_per_process", "1"], None) == (1, "1")
    assert launched_threads(tmp_path / "env", [], "1") == (1, "1")
