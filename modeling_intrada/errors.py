"""Mistakes a user can make, and how every program reports them: one line, exit status 2.

    error: <what was expected, what was given, what to do>

A `UsageError` is raised for a bad option, a missing or unreadable input, or a refused request (re-running
a finished stage without `--overwrite`). `run_program` wraps every program's entry point: it prints a
`UsageError` as that one line on stderr and exits with status 2 (argparse's convention), without a
traceback; a training stopped by a signal (`TrainingStopped`) exits with 128 + the signal's number.
Anything else is a bug and keeps its traceback. `INTRADA_DEBUG=1` shows the traceback of a `UsageError` too.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

DEBUG_VARIABLE = "INTRADA_DEBUG"
USAGE_EXIT_CODE = 2

T = TypeVar("T")


class UsageError(ValueError):
    """A mistake a user can make: an option, an input path or file, a request. Its message is one line
    that says what was expected, what was given and what to do."""


class MissingInputError(UsageError, FileNotFoundError):
    """An input the user named (a folder, a file, a stage's output) does not exist; also a FileNotFoundError."""


class NonFiniteLossError(UsageError):
    """Training diverged: a loss became NaN or infinite (usually a learning rate too high)."""


class TrainingStopped(UsageError):
    """Training was asked to stop (SIGTERM, SIGINT or the launcher gone) and stopped at a step boundary.

    Reported like every `UsageError`, as one line, but with the shell's exit status for the signal,
    128 + its number (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + signal_number


class StopSignals:
    """While active (a `with` block, in the main thread), SIGTERM and SIGINT are recorded instead of ending the
    process, so that a loop can stop between two steps and write nothing half; a second signal ends it at once.

    `requested` is the first signal's number, or None. The previous handlers come back on exit.
    """

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _record(self, number: int, frame: object) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(number).name}: stopping now")
        self.requested = number

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def debugging() -> bool:
    """Whether `INTRADA_DEBUG` asks for tracebacks of user errors."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def run_program(main: Callable[[Sequence[str] | None], T], argv: Sequence[str] | None = None) -> T:
    """Run a program's `main(argv)`; a `UsageError` becomes `error: <message>` on stderr and exit status 2."""
    try:
        return main(argv)
    except UsageError as error:
        if debugging():
            raise
        message = " ".join(str(error).split())  # one line, whatever the message held
        sys.stderr.write(f"error: {message}\n")  # one write: the lines of several processes stay whole
        sys.stderr.flush()
        raise SystemExit(getattr(error, "exit_status", USAGE_EXIT_CODE)) from None


@contextmanager
def user_input(what: str = "") -> Iterator[None]:
    """Turn the errors raised while checking a user's input (`ValueError`, `TypeError`, a missing file) into
    `UsageError`s, prefixed with `what` when given. Only for code that reads what the user gave."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as error:
        message = f"{what}: {error}" if what else str(error)
        raise (MissingInputError if isinstance(error, FileNotFoundError) else UsageError)(message) from error


# A Hub repository id: `name` or `user/name`.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def check_model_reference(reference: str, option: str) -> str:
    """A model given as a local folder or a Hub id: refuse a local path that does not exist or is not a
    saved model, rather than look it up on the Hub (whose error is about repository-id syntax)."""
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            kind = "a file" if path.is_file() else "a folder without config.json"
            raise UsageError(
                f"{option} {reference}: expected a saved model folder (save_pretrained, with config.json), got "
                f"{kind}; pass the model folder of a finished stage or a Hub id"
            )
        return reference
    if not HUB_ID.match(reference) or reference.startswith((".", "~")):
        raise MissingInputError(
            f"{option} {reference}: no such folder; pass an existing model folder or a Hub id user/name"
        )
    return reference


def check_finite(value: float, what: str) -> None:
    """Refuse a NaN or infinite number (a loss, a score), naming it."""
    if not math.isfinite(value):
        raise NonFiniteLossError(f"{what} is {value}")


def corrupt_weight_files(folder: str | Path) -> list[Path]:
    """The `*.safetensors` files in `folder` whose header cannot be read (truncated or not safetensors)."""
    from safetensors import safe_open

    corrupt = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception:  # safetensors raises its own SafetensorError, or OSError on a short file
            corrupt.append(path)
    return corrupt


def load_pretrained(load: Callable[..., T], reference: str, option: str, **kwargs: object) -> T:
    """`load(reference, **kwargs)` (a `from_pretrained`) on a model the user named with `option`: a missing
    folder, a folder that is not a saved model and an unreadable weights file are `UsageError`s that name
    the option and the file."""
    from safetensors import SafetensorError

    check_model_reference(reference, option)
    try:
        return load(reference, **kwargs)
    except (OSError, ValueError, SafetensorError) as error:
        corrupt = corrupt_weight_files(reference) if Path(reference).is_dir() else []
        if corrupt:
            raise UsageError(
                f"{option} {reference}: cannot read the weights file {corrupt[0]} ({error}); it is truncated "
                "or not a safetensors file: save the model again"
            ) from error
        raise UsageError(
            f"{option} {reference}: cannot load a model ({error}); pass a folder written by save_pretrained "
            "or a Hub id you can access"
        ) from error
