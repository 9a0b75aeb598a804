"""benchmarks/digits_study.py: the table it writes into the docs, from the runs' metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmarks import digits_study


def fake_run(
    root: Path, setting: str, seed: int, accuracies: tuple[float, float, float], on_source: float = 99.0
) -> None:
    out = root / setting / f"seed_{seed}"
    (out / "eval").mkdir(parents=True)
    models = {
        name: {"stage": stage, "target_accuracy": value, "source_accuracy": on_source}
        for (stage, name, _), value in zip(digits_study.ROWS, accuracies)
    }
    (out / "eval" / "metrics.json").write_text(json.dumps({"models": models}))
    (out / "wall_time_s.txt").write_text("300.0\n")


def test_study_reads_runs_and_writes_the_table(tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    for seed, values in ((1, (70.0, 90.0, 95.0)), (2, (72.0, 92.0, 97.0))):
        fake_run(outputs, "mnist_to_usps", seed, values)
    docs = tmp_path / "digits.md"
    docs.write_text(f"# Digits\n\nbefore\n{digits_study.BEGIN}\nold table\n{digits_study.END}\nafter\n")
    for name in ("mnist", "usps"):  # built datasets: nothing to build
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "README.md").write_text("built")
    monkeypatch.setattr(digits_study.subprocess, "run", lambda *a, **k: pytest.fail("must not re-run"))
    argv = ["--settings", "mnist_to_usps", "--seeds", "1", "2"]
    argv += ["--data_dir", str(tmp_path / "data"), "--output_dir", str(outputs), "--docs", str(docs)]
    study = digits_study.main(argv)
    assert [run["accuracy"]["intra"] for run in study["mnist_to_usps"]] == [95.0, 97.0]
    text = docs.read_text()
    assert text.startswith("# Digits\n\nbefore\n") and text.endswith(f"{digits_study.END}\nafter\n")
    assert "old table" not in text
    # mean ± sample std of (70, 72) = 71.0 ± 1.4; the paper's numbers beside ours
    assert "| source only | 71.0 ± 1.4 | 82.2 ± 0.8 (source only) |" in text
    assert "| IntraDA (G_intra) | 96.0 ± 1.4 | 95.8 ± 0.1 (IntraDA) |" in text
    assert "seed 2: 72.00 / 92.00 / 97.00 (5.0 min)" in text
    assert "target only" not in text  # needs the reverse setting
    assert json.loads((outputs / "study.json").read_text())["mnist_to_usps"][0]["seed"] == 1


def test_study_errors(tmp_path):
    docs = tmp_path / "digits.md"
    docs.write_text("no markers\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        digits_study.write_between_markers(docs, "table")
    with pytest.raises(FileNotFoundError, match="raw files"):
        digits_study.ensure_dataset("usps", tmp_path / "raw", tmp_path / "data")
    with pytest.raises(SystemExit):
        digits_study.parse_args(["--seeds", "1"])


def test_study_runs_missing_seeds_in_parallel_jobs(tmp_path, monkeypatch):
    outputs, docs = tmp_path / "outputs", tmp_path / "digits.md"
    docs.write_text(f"{digits_study.BEGIN}\n{digits_study.END}\n")
    for name in ("usps", "mnist"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "README.md").write_text("built")
    fake_run(outputs, "usps_to_mnist", 1, (60.0, 90.0, 96.0))  # done before: read, not re-run
    launched = []

    def pipeline(command, cwd, env, stdout, stderr):  # stands in for one run_intrada.py process
        seed = int(command[command.index("--seed") + 1])
        launched.append(seed)
        stdout.write(f"training seed {seed}\n")
        out = Path(command[command.index("--output_dir") + 1])
        models = {
            n: {"stage": s, "target_accuracy": 90.0 + seed, "source_accuracy": 99.0}
            for s, n, _ in digits_study.ROWS
        }
        (out / "eval").mkdir(parents=True)
        (out / "eval" / "metrics.json").write_text(json.dumps({"models": models}))
        return digits_study.subprocess.CompletedProcess(command, 3 if seed == 9 else 0)

    monkeypatch.setattr(digits_study.subprocess, "run", pipeline)
    argv = ["--settings", "usps_to_mnist", "--data_dir", str(tmp_path / "data"), "--output_dir", str(outputs)]
    argv += ["--docs", str(docs), "--jobs", "2", "--seeds"]
    study = digits_study.main([*argv, "1", "2", "3"])
    assert sorted(launched) == [2, 3]
    assert [run["seed"] for run in study["usps_to_mnist"]] == [1, 2, 3]  # in the order asked, not finished
    assert [run["accuracy"]["intra"] for run in study["usps_to_mnist"]] == [96.0, 92.0, 93.0]
    assert (outputs / "usps_to_mnist" / "seed_3" / "run.log").read_text() == "training seed 3\n"
    with pytest.raises(RuntimeError, match=r"seed 9 failed \(exit 3\); see .*seed_9/run.log"):
        digits_study.main([*argv, "1", "9"])
    # A finished run is read only if its config.yaml is what the command resolves to now.
    seed_2 = outputs / "usps_to_mnist" / "seed_2"
    command = json.loads((outputs / "study.json").read_text())["usps_to_mnist"][1]["command"].split()
    options = digits_study.resolved_options(command)
    assert options["seed"] == 2 and options["adv_main_weight"] == 1.0  # the shipped USPS->MNIST config
    del options["augment_target"]  # as if the run predated that option: it counts as its default
    (seed_2 / "config.yaml").write_text(yaml.safe_dump(options))
    assert digits_study.main([*argv, "2", "3"])["usps_to_mnist"][0]["accuracy"]["intra"] == 92.0
    with pytest.raises(ValueError, match=r"other options \(adv_main_weight: 1.0 there, 0.5 now\)"):
        digits_study.main([*argv, "2", "3", "--", "--adv_main_weight", "0.5"])
    options["augment_target"] = True
    (seed_2 / "config.yaml").write_text(yaml.safe_dump(options))
    with pytest.raises(ValueError, match="augment_target: True there, False now"):
        digits_study.main([*argv, "2", "3"])
    # Without augmentation its parameters do nothing: a run from before `augmentation_stages` existed, or
    # with other ones, matches a command that turns the augmentation off.
    options.update(augmentation="none", augment_target=False, affine_degrees=30.0)
    del options["augmentation_stages"]
    (seed_2 / "config.yaml").write_text(yaml.safe_dump(options))
    assert len(digits_study.main([*argv, "2", "3", "--", "--augmentation", "none"])["usps_to_mnist"]) == 2
    with pytest.raises(ValueError, match="augmentation: 'none' there, 'affine' now"):
        digits_study.main([*argv, "2", "3"])
    (seed_2 / "config.yaml").unlink()  # a run without config.yaml is read as it is
    # --marker writes between other markers of the same file, leaving the default table alone.
    begin, end = digits_study.markers("digits-study-ablation")
    docs.write_text(f"{digits_study.BEGIN}\nmain\n{digits_study.END}\n{begin}\n{end}\n")
    digits_study.main([*argv, "2", "3", "--marker", "digits-study-ablation"])
    text = docs.read_text()
    assert (
        f"{digits_study.BEGIN}\nmain\n{digits_study.END}" in text and "| 92.5 ± 0.7 |" in text.split(begin)[1]
    )
    with pytest.raises(SystemExit):
        digits_study.parse_args(["--jobs", "0"])


def test_target_only_row_comes_from_the_reverse_setting(tmp_path):
    outputs = tmp_path / "outputs"
    for seed, on_source in ((1, 96.0), (2, 97.0)):  # USPS-trained models on the USPS test set
        fake_run(outputs, "usps_to_mnist", seed, (60.0, 90.0, 95.0), on_source=on_source)
        fake_run(outputs, "mnist_to_usps", seed, (70.0, 90.0, 94.0), on_source=99.0)
    docs = tmp_path / "digits.md"
    docs.write_text(f"{digits_study.BEGIN}\n{digits_study.END}\n")
    for name in ("mnist", "usps"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "README.md").write_text("built")
    argv = ["--settings", "mnist_to_usps", "usps_to_mnist", "--seeds", "1", "2", "--docs", str(docs)]
    digits_study.main([*argv, "--data_dir", str(tmp_path / "data"), "--output_dir", str(outputs)])
    row = "| target only: supervised on the target's labels (an upper reference) | 96.5 ± 0.7 | – | 99.0 ± 0.0 | – |"
    assert row in docs.read_text()
