"""The layout's rules (docs/architecture.md): imports go one way, nothing edits sys.path, and each model
folder imports only its own files (saved folders carry that code for `trust_remote_code=True`)."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = PROJECT_ROOT / "modeling_intrada"
# A package may import only from packages at its level or to its left.
LAYERS = {
    "labels": 0,
    "run_layout": 0,
    "errors": 0,
    "atomic": 0,
    "models": 1,
    "data": 2,
    "method": 3,
    "evaluation": 4,
    "publishing": 5,
    "training": 6,
}
IMPORT = re.compile(r"^\s*(?:from|import) modeling_intrada\.(\w+)", re.M)


def _layer(path: Path) -> tuple[str, int] | None:
    parts = path.relative_to(PACKAGE).parts
    name = parts[0] if len(parts) > 1 else path.stem
    return (name, LAYERS[name]) if name in LAYERS else None


def test_imports_go_one_way():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        own = _layer(path)
        if own is None:
            continue
        for imported in IMPORT.findall(path.read_text()):
            if LAYERS[imported] > own[1]:
                wrong.append(f"{path.relative_to(PROJECT_ROOT)} ({own[0]}) imports {imported}")
    assert not wrong, wrong


def test_model_folders_import_only_their_own_files():
    # The converter is a program, not part of a saved folder.
    for path in (PACKAGE / "models").rglob("*.py"):
        if path.name != "__init__.py" and not path.name.startswith("convert_"):
            text = path.read_text()
            assert not re.search(r"^\s*(?:from|import) modeling_intrada", text, re.M), path
            assert not re.search(r"^\s*from \.\.", text, re.M), path


def test_nothing_edits_sys_path():
    folders = ("modeling_intrada", "training", "dataset_scripts", "benchmarks", "tests")
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for folder in folders
        for path in (PROJECT_ROOT / folder).rglob("*.py")
        if re.search(r"sys\.path\.(insert|append)", path.read_text()) and path != Path(__file__)
    ]
    assert not offenders, offenders
