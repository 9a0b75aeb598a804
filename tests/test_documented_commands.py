"""The documentation cannot go stale: its runnable shell commands run, and the files it names exist.

Convention (docs/architecture.md, "Documented commands"): a fenced `bash` block directly preceded by the line

    <!-- runnable: OPTIONS -->

(or `<!-- runnable -->` without options) is run by this test, each command with OPTIONS appended (before
a trailing `# comment`), so that a documented full-size command runs here at a tiny size. Lines joined by
a trailing backslash are one command. The runnable blocks of one page run in page order in one fresh
working directory (a later block may use what an earlier one wrote, e.g. `outputs/tiny`), where
`training/`, `dataset_scripts/` and `benchmarks/` are reachable as in the repository root; `python` and
`accelerate` are the test's interpreter's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*runnable(?::\s*(?P<options>.*?))?\s*-->\s*$")
# Placeholders a reader replaces (`<user>`, `[--num_proc N]`, `RAW/...`) cannot run.
PLACEHOLDER = re.compile(r"<\w+>|\s\[|\bRAW\b|\bFILE\b|\bUSER/")
TRAILING_COMMENT = re.compile(r"\s+#\s.*$")


def runnable_blocks(page: Path) -> list[tuple[int, list[str]]]:
    """(line number of the marker, the block's commands with their tiny options appended) of one page."""
    lines = page.read_text().splitlines()
    blocks = []
    for index, line in enumerate(lines):
        match = MARKER.match(line)
        if not match:
            continue
        fence = lines[index + 1] if index + 1 < len(lines) else ""
        assert fence.strip() == "```bash", (
            f"{page.name}:{index + 1}: a runnable marker must be directly followed by a ```bash block"
        )
        body = []
        for code in lines[index + 2 :]:
            if code.strip() == "```":
                break
            body.append(code)
        options = match.group("options") or ""
        blocks.append((index + 1, [with_options(command, options) for command in commands_of(body)]))
    return blocks


SET_UP = re.compile(r"^python3 -m venv .*? pip install [^&]*&&\s*")


def commands_of(body: list[str]) -> list[str]:
    """The commands of a block: backslash continuations joined, blank and comment-only lines dropped."""
    commands, current = [], ""
    for line in body:
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip() and not current.lstrip().startswith("#"):
            # A one-line "set up and run" command: the test runs in the environment already set up.
            commands.append(SET_UP.sub("", " ".join(current.split())))
        current = ""
    return commands


def with_options(command: str, options: str) -> str:
    """`command` with `options` appended before its trailing comment, which is dropped."""
    command = TRAILING_COMMENT.sub("", command)
    return f"{command} {options}".strip()


def documented_pages() -> list[Path]:
    return [page for page in PAGES if runnable_blocks(page)]


def test_the_convention_is_used_where_it_matters():
    """The main command, the evaluator, a dataset builder and accelerate launch are covered, with no
    placeholder left in what runs."""
    commands = [command for page in PAGES for _, block in runnable_blocks(page) for command in block]
    assert any(c.startswith("python training/run_intrada.py --") for c in commands)
    assert any(c.startswith("python training/evaluate_miou.py") for c in commands)
    assert any(c.startswith("python dataset_scripts/") for c in commands)
    assert any(c.startswith("accelerate launch") for c in commands)
    readme = runnable_blocks(ROOT / "README.md")
    assert readme and readme[0][1][0].startswith("python training/run_intrada.py"), "README's main command"
    for command in commands:
        assert not PLACEHOLDER.search(command), f"a runnable command has a placeholder: {command}"


@pytest.mark.parametrize("page", documented_pages(), ids=lambda page: page.name)
def test_runnable_commands_run(tmp_path, page):
    for folder in ("training", "dataset_scripts", "benchmarks"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("INTRADA_TEST_THREADS", "2"),
        "ACCELERATE_USE_CPU": "1",
    }
    for line, commands in runnable_blocks(page):
        script = "set -euo pipefail\n" + "\n".join(commands)
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (
            f"{page.name}:{line}: the documented commands failed:\n{script}\n{done.stderr[-3000:]}"
        )


# Paths inside the repository that prose and messages cite: `training/run_intrada.py`, `docs/models.md`, ...
CITED_PATH = re.compile(
    r"(?<![\w/.~-])((?:modeling_intrada|training|dataset_scripts|benchmarks|tests|docs|\.ci)/[\w./-]*\w)"
    r"(?![\w<*{])"
)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def test_cited_paths_exist():
    """Every repository path named in the docs, the library and the programs exists, and every relative
    Markdown link resolves (card templates aside: their links are relative to the card they render)."""
    pages = [*PAGES, ROOT / "benchmarks" / "README.md"]
    pages += [p for p in (ROOT / "modeling_intrada").rglob("*.md") if "templates" not in p.parts]
    sources = [p for folder in ("modeling_intrada", "training", "dataset_scripts", "benchmarks", "tests")
               for p in (ROOT / folder).rglob("*.py")]  # fmt: skip
    missing = []
    for path in pages + sources:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            missing += [f"{where}: {m}" for m in CITED_PATH.findall(line) if not (ROOT / m).exists()]
            if path.suffix == ".md":
                links = [m for m in MARKDOWN_LINK.findall(line) if "://" not in m]
                missing += [f"{where}: link {m}" for m in links if not (path.parent / m).exists()]
    assert not missing, "cited but absent:\n" + "\n".join(missing)
