"""Multi-seed digits study: source only, inter-domain only and IntraDA, mean +- std next to the paper's Table 4.

For every setting and seed it runs the digits pipeline once (`training/run_intrada.py --config
training/configs/digits_<setting>.yaml --seed S`): that one run trains the source-only classifier, G_inter
(feature-level CyCADA) and G_intra (IntraDA), and its evaluation reports all three on the target test set.
It then writes a markdown table (mean +- sample standard deviation over the seeds, the per-seed values and
each run's wall time) between the markers of `docs/digits.md` (`<!-- digits-study:begin -->` and its `end`;
`--marker NAME` writes between `<!-- NAME:begin -->` and `<!-- NAME:end -->` instead), and `study.json` in the
output folder.

    python benchmarks/digits_study.py --settings mnist_to_usps usps_to_mnist --seeds 1 2 3

Datasets missing under `--data_dir` are built first from `--raw_dir` with `dataset_scripts/digits.py`. Runs
whose `eval/metrics.json` exists are read, not re-run (`--overwrite` re-runs them); a run whose
`config.yaml` differs from what the command resolves to (another config file, other options) is refused
rather than read. Extra options after `--` go to every pipeline run, e.g. `-- --num_threads 1`. `--jobs N`
runs N pipelines at once, each writing its output to `run.log` in its folder; give each one thread
(`-- --num_threads 1`) so N jobs share N cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from modeling_intrada.run_layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MARKER = "digits-study"


def markers(name: str = DEFAULT_MARKER) -> tuple[str, str]:
    """The HTML comments that delimit a study table in the docs."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


BEGIN, END = markers()
SETTINGS = {
    "mnist_to_usps": ("mnist", "usps", "MNIST→USPS"),
    "usps_to_mnist": ("usps", "mnist", "USPS→MNIST"),
    "svhn_to_mnist": ("svhn", "mnist", "SVHN→MNIST"),
}
# Table 4 of the paper: accuracy %, mean and std.
PAPER = {
    "source only": {"mnist_to_usps": (82.2, 0.8), "usps_to_mnist": (69.6, 3.8), "svhn_to_mnist": (67.1, 0.6)},
    "ADDA": {"mnist_to_usps": (89.4, 0.2), "usps_to_mnist": (90.1, 0.8), "svhn_to_mnist": (76.0, 1.8)},
    "CyCADA": {"mnist_to_usps": (95.6, 0.2), "usps_to_mnist": (96.5, 0.1), "svhn_to_mnist": (90.4, 0.4)},
    "IntraDA": {"mnist_to_usps": (95.8, 0.1), "usps_to_mnist": (97.8, 0.1), "svhn_to_mnist": (95.1, 0.3)},
}
# The setting whose source-only model is trained on the labelled target of another: a "target only" row.
TARGET_ONLY = {"mnist_to_usps": "usps_to_mnist", "usps_to_mnist": "mnist_to_usps"}
# Our rows (eval stage names, by the stage that trained them) and the paper row each is compared with.
ROWS = (
    ("source", "source only", "source only"),
    ("inter", "inter-domain only: feature-level CyCADA (G_inter)", "CyCADA"),
    ("intra", "IntraDA (G_intra)", "IntraDA"),
)
# What the augmentation is made of: options that change nothing with `augmentation: none`.
AUGMENTATION_OPTIONS = (
    "augmentation_stages",
    "augment_target",
    "affine_degrees",
    "affine_translate",
    "affine_scale",
)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", nargs="+", default=["mnist_to_usps", "usps_to_mnist"], choices=SETTINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--raw_dir", type=Path, default=ROOT.parent / "shared" / "data", help="raw downloads")
    parser.add_argument("--data_dir", type=Path, default=ROOT / "data", help="built datasets")
    parser.add_argument("--output_dir", type=Path, default=ROOT / "outputs" / "digits-study")
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs" / "digits.md", help="file with the markers"
    )
    parser.add_argument(
        "--marker",
        default=DEFAULT_MARKER,
        help="the table goes between <!-- MARKER:begin --> and <!-- MARKER:end --> in --docs",
    )
    parser.add_argument("--overwrite", action="store_true", help="re-run seeds that already have results")
    parser.add_argument(
        "--jobs", type=int, default=1, help="pipeline runs at once (each logs to its run.log)"
    )
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error("a standard deviation needs at least two seeds")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return args, extra


def ensure_dataset(name: str, raw_dir: Path, data_dir: Path) -> Path:
    """The built dataset folder `data_dir/name`, built from `raw_dir/name` when missing."""
    built = data_dir / name
    if (built / "README.md").is_file():
        return built
    raw = raw_dir / name
    if not raw.is_dir():
        raise FileNotFoundError(
            f"{built} is not built and the raw files {raw} are missing (see docs/digits.md)"
        )
    command = [sys.executable, str(ROOT / "dataset_scripts" / "digits.py"), "--dataset", name]
    subprocess.run([*command, "--data_dir", str(raw), "--output_dir", str(built)], check=True)
    return built


def run_seed(setting: str, seed: int, args: argparse.Namespace, extra: list[str]) -> dict:
    """One pipeline run (all stages) for `setting` and `seed`; returns its metrics and wall time.

    With `--jobs` above 1 the run's output goes to `run.log` in its folder rather than to the terminal.
    """
    source, target, _ = SETTINGS[setting]
    out = args.output_dir / setting / f"seed_{seed}"
    metrics_file, time_file = RunLayout(out).metrics_file, out / "wall_time_s.txt"
    command = [
        sys.executable, str(ROOT / "training" / "run_intrada.py"),
        "--config", str(ROOT / "training" / "configs" / f"digits_{setting}.yaml"),
        "--source_dataset", str(args.data_dir / source),
        "--target_dataset", str(args.data_dir / target),
        "--output_dir", str(out),
        "--seed", str(seed),
        *extra,
    ]  # fmt: skip
    if not args.overwrite and metrics_file.is_file():
        check_same_options(out, command)
    if args.overwrite or not metrics_file.is_file():
        print(f"[digits study] {setting} seed {seed}: {' '.join(command)}", flush=True)
        start = time.perf_counter()
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if args.jobs == 1:
            subprocess.run(command, check=True, cwd=ROOT, env=env)
        else:
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "run.log", "w") as log:
                done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(
                    f"{setting} seed {seed} failed (exit {done.returncode}); see {out / 'run.log'}"
                )
        time_file.write_text(f"{time.perf_counter() - start:.1f}\n")
    metrics = json.loads(metrics_file.read_text())
    by_stage = {row["stage"]: row["target_accuracy"] for row in metrics["models"].values()}
    on_source = {row["stage"]: row["source_accuracy"] for row in metrics["models"].values()}
    wall = float(time_file.read_text()) if time_file.is_file() else float("nan")
    return {
        "seed": seed,
        "accuracy": by_stage,
        "source_test_accuracy": on_source,
        "wall_time_s": wall,
        "command": " ".join(command),
    }


def resolved_options(command: list[str]) -> dict:
    """Every option a `run_intrada.py` digits command line resolves to (what its config.yaml will hold)."""
    from modeling_intrada.training.arguments import parse_arguments, run_config

    return run_config(parse_arguments(command[2:]))


def comparable_options(config: dict) -> dict:
    """A run's options (its config.yaml) as they bear on what it trains: old option names under their new
    ones, the options it lacks (added to the program since) at their digits defaults; without the output
    folder, and without the augmentation's own options when it has none."""
    from modeling_intrada.training.arguments import RENAMED_OPTIONS, parse_arguments, run_config

    renamed = {new: value for key, value in config.items() for new in RENAMED_OPTIONS.get(key, (key,))}
    options = {**run_config(parse_arguments(["--task", "digits"])), **renamed}
    left_out = {"output_dir", *(AUGMENTATION_OPTIONS if options["augmentation"] == "none" else ())}
    return {key: value for key, value in options.items() if key not in left_out}


def check_same_options(out: Path, command: list[str]) -> None:
    """Refuse to read the finished run in `out` if its config.yaml differs from what `command` resolves to
    (another config file, other options), as `comparable_options` compares them. A run without config.yaml
    is read."""
    saved_file = RunLayout(out).config_file
    if not saved_file.is_file():
        print(f"[digits study] {out}: no config.yaml to compare with, read as it is", flush=True)
        return
    import yaml

    saved = comparable_options(yaml.safe_load(saved_file.read_text()))
    wanted = comparable_options(resolved_options(command))
    differing = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
    if differing:
        details = ", ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} now" for k in differing)
        raise ValueError(
            f"{out} holds a run made with other options ({details}); pass --overwrite to re-run it, or "
            "use another --output_dir"
        )


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def markdown(study: dict, settings: list[str], argv: list[str]) -> str:
    """The table of the study (ours vs paper per setting), the per-seed values, how it was made."""
    header = (
        "| method | " + " | ".join(f"{SETTINGS[s][2]} ours | {SETTINGS[s][2]} paper" for s in settings) + " |"
    )
    lines = [header, "|---|" + "---:|---:|" * len(settings)]
    for stage, name, paper_row in ROWS:
        cells = []
        for setting in settings:
            values = [run["accuracy"][stage] for run in study[setting]]
            paper_mean, paper_std = PAPER[paper_row][setting]
            cells.append(f"{mean_std(values)} | {paper_mean} ± {paper_std} ({paper_row})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    target_only = [TARGET_ONLY.get(s) for s in settings]
    has_target_only = all(other in study for other in target_only)
    if has_target_only:
        # The reverse setting's source-only model is trained on this setting's target, labels included.
        cells = [
            f"{mean_std([run['source_test_accuracy']['source'] for run in study[other]])} | –"
            for other in target_only
        ]
        lines.append(
            "| target only: supervised on the target's labels (an upper reference) | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "Per seed (target test accuracy %, source only / G_inter / G_intra; wall time of the run):",
        "",
    ]
    for setting in settings:
        for run in study[setting]:
            a = run["accuracy"]
            lines.append(
                f"- {SETTINGS[setting][2]}, seed {run['seed']}: {a['source']:.2f} / {a['inter']:.2f} / "
                f"{a['intra']:.2f} ({run['wall_time_s'] / 60:.1f} min)"
            )
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    lines += [
        "",
        f"Produced by `python benchmarks/digits_study.py {' '.join(argv)}` on {machine}, "
        f"{time.strftime('%Y-%m-%d')}. Mean ± sample standard deviation over {len(study[settings[0]])} seeds; "
        "last iterate of every stage, no selection on test labels. The paper's middle row is CyCADA with its "
        "pixel-level part; ours is the feature-level part only."
        + (
            " The target-only row is the other direction's source-only model (trained with labels on this "
            "target's training set, same steps) on this target's test set; the paper has no such row."
            if has_target_only
            else ""
        ),
    ]
    return "\n".join(lines)


def write_between_markers(path: Path, text: str, marker: str = DEFAULT_MARKER) -> None:
    """Replace what lies between `<!-- marker:begin -->` and `<!-- marker:end -->` in `path` with `text`."""
    content = path.read_text()
    begin, end = markers(marker)
    if begin not in content or end not in content:
        raise ValueError(f"{path} lacks the markers {begin} ... {end} that delimit the study table")
    before, rest = content.split(begin, 1)
    after = rest.split(end, 1)[1]
    path.write_text(f"{before}{begin}\n{text}\n{end}{after}")


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parse_args(argv)
    args.data_dir, args.output_dir = args.data_dir.resolve(), args.output_dir.resolve()
    for setting in args.settings:
        for name in SETTINGS[setting][:2]:
            ensure_dataset(name, args.raw_dir, args.data_dir)
    runs = [(setting, seed) for setting in args.settings for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda run: run_seed(*run, args, extra), runs))
    study = {setting: [r for (s, _), r in zip(runs, results) if s == setting] for setting in args.settings}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    table = markdown(study, args.settings, argv)
    write_between_markers(args.docs, table, args.marker)
    print(table)
    return study


if __name__ == "__main__":
    main()
