"""Shared test fixtures: the real-data folder beside the project, and deterministic torch settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

# 2 threads on the 2-core CI machine; INTRADA_TEST_THREADS=1 where other jobs share the cores (OpenMP threads
# that wait on busy cores slow small convolutions down by an order of magnitude).
torch.set_num_threads(int(os.environ.get("INTRADA_TEST_THREADS", "2")))


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data` from the project root; tests that need it skip when it is absent (users, maybe CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps its state (mixed precision, ...) in a process-wide singleton: reset it after each test."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def one_thread():
    """Tiny tensors: on a shared 2-core machine a second intra-op thread only waits (several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A real run of `run_intrada.py` at 32x64, 2 iterations per stage (see tests/tiny_run.py), built once."""
    from tiny_run import build_tiny_run

    return build_tiny_run(tmp_path_factory.getbasetemp() / "tiny_run")
