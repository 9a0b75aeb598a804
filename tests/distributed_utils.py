"""Run a test function on several CPU processes (gloo), as `accelerate launch` would, with a short timeout."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, function: Callable, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
    )  # fmt: skip
    torch.set_num_threads(1)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # the forked child may inherit the parent's
    function(rank, *args)


def accelerator_kwargs() -> dict:
    """CPU, and a short rendezvous timeout: a broken run fails the test instead of hanging it."""
    from accelerate import InitProcessGroupKwargs

    return {"cpu": True, "kwargs_handlers": [InitProcessGroupKwargs(timeout=timedelta(seconds=60))]}


def run_on_processes(function: Callable, world_size: int, *args) -> None:
    """Call `function(rank, *args)` on `world_size` forked processes that form one process group."""
    torch.multiprocessing.start_processes(
        _worker, args=(world_size, free_port(), function, args), nprocs=world_size, start_method="fork"
    )
