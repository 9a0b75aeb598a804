"""How many CPU threads a run uses: the user's choice, else the machine's cores, also under `accelerate launch`.

`accelerate launch` starts the program with `OMP_NUM_THREADS` set to `--num_cpu_threads_per_process`, which
defaults to the launcher's own `OMP_NUM_THREADS`, else to 1 (with `--cpu`, to the physical cores divided
among the processes). A single CPU process would then compute on one thread of a many-core machine. The
program cannot tell that 1 from a 1 the
user asked for by the child's environment alone, since the launcher sets the variable either way; the trace
is in the launcher process itself, which keeps the user's environment and command line: the user chose when
the launcher was given `--num_cpu_threads_per_process` or ran with `OMP_NUM_THREADS` set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

# Set in the environment of the processes that `accelerate launch` starts, and by nothing else.
LAUNCHED_BY_ACCELERATE = "ACCELERATE_DYNAMO_BACKEND"
LAUNCHER_THREADS_FLAG = "--num_cpu_threads_per_process"


@dataclass(frozen=True)
class Launcher:
    """What the process that started this one was given: its environment and command line (None: unreadable)."""

    environ: Mapping[str, str] | None
    cmdline: Sequence[str] | None


def machine_cores() -> int:
    """The physical cores this process may run on: the CPUs of its affinity mask, at most the physical cores
    (hyperthreads slow convolutions down rather than up)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or available
    return max(1, min(available, physical))


def parent_launcher() -> Launcher:
    """The parent process's environment and command line, None where the system does not show them."""
    try:
        parent = psutil.Process().parent()
        if parent is None:
            return Launcher(None, None)
        return Launcher(parent.environ(), parent.cmdline())
    except (psutil.Error, OSError):
        return Launcher(None, None)


def launcher_chose_threads_by_default(environ: Mapping[str, str], launcher: Launcher) -> bool:
    """True when `accelerate launch` set `OMP_NUM_THREADS` by its own default, not as the user asked.

    Args:
        environ: this process's environment.
        launcher: the parent process's environment and command line.
    """
    if LAUNCHED_BY_ACCELERATE not in environ or "OMP_NUM_THREADS" not in environ:
        return False
    if launcher.environ is None or launcher.cmdline is None:
        return False  # no trace to read: keep what the launcher set
    given_flag = any(arg == LAUNCHER_THREADS_FLAG or arg.startswith(LAUNCHER_THREADS_FLAG + "=")
                     for arg in launcher.cmdline)  # fmt: skip
    return not given_flag and "OMP_NUM_THREADS" not in launcher.environ


def cpu_threads_for_run(
    num_threads: int | None,
    device_type: str,
    num_processes: int,
    environ: Mapping[str, str] | None = None,
    launcher: Launcher | None = None,
) -> int | None:
    """The torch CPU threads a run should set, or None to leave torch's setting as it is.

    Args:
        num_threads: the program's `--num_threads` (None: not given).
        device_type: the device the run computes on (`cpu`, `cuda`, ...).
        num_processes: the processes of the run.
        environ: this process's environment (default: `os.environ`).
        launcher: the parent process (default: read with psutil).

    Returns:
        `num_threads` when given; the machine's cores for a single CPU process whose `OMP_NUM_THREADS` is
        `accelerate launch`'s default; None otherwise (a thread count the user set through
        `OMP_NUM_THREADS` or `--num_cpu_threads_per_process`, several processes sharing the cores, a GPU).
    """
    if num_threads is not None:
        return num_threads
    if device_type != "cpu" or num_processes != 1:
        return None
    environ = os.environ if environ is None else environ
    if launcher_chose_threads_by_default(environ, parent_launcher() if launcher is None else launcher):
        return machine_cores()
    return None
