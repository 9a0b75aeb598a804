"""Artifacts written whole or not at all: a file or a folder is written beside its target under a
temporary name (`<name>.incomplete`) and renamed into place when complete, so a crash or a kill leaves the
earlier artifact (or nothing), never a mix. Readers never look at `*.incomplete`.

The stage loop's checkpoints, the built datasets, the cards, `config.yaml`, the ranking, the saved models
and discriminators, the evaluation outputs and the converter's output are all written this way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INCOMPLETE_SUFFIX = ".incomplete"
REPLACED_SUFFIX = ".replaced"


def incomplete_path(target: str | Path) -> Path:
    """Where `target` is written before it is complete: beside it, on the same file system."""
    target = Path(target)
    return target.with_name(target.name + INCOMPLETE_SUFFIX)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write a whole text file or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = incomplete_path(path)
    with open(temporary, "w", newline="", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)
    return path


def replace_folder(temporary: str | Path, target: str | Path) -> Path:
    """Put the complete folder `temporary` in the place of `target` (which may exist): the old folder moves
    aside, the new one is renamed in, the old one is removed."""
    temporary, target = Path(temporary), Path(target)
    replaced = target.with_name(target.name + REPLACED_SUFFIX)
    if replaced.exists():
        shutil.rmtree(replaced)
    if target.exists():
        target.rename(replaced)
    temporary.rename(target)
    if replaced.exists():
        shutil.rmtree(replaced)
    return target


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target` to write into; when the block ends without an
    error, the folder replaces `target`; on an error it is removed and `target` is left as it was."""
    target = Path(target)
    temporary = incomplete_path(target)
    if temporary.exists():
        shutil.rmtree(temporary)  # the remains of a write that was killed
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    replace_folder(temporary, target)
