"""The program end to end on the embedded synthetic default, at a reduced size, and its option checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSemanticSegmentation

import modeling_intrada.training.pipeline as run_intrada
from modeling_intrada import (
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    FCDiscriminator,
    FCDiscriminatorConfig,
)
from modeling_intrada.errors import NonFiniteLossError, UsageError
from modeling_intrada.method.ranking import load_ranking
from modeling_intrada.training.arguments import DEFAULT_CONFIG, parse_arguments
from modeling_intrada.training.tasks.segmentation import SegmentationRun

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "run_intrada.py"

SMALL = [
    "--backbone", "timm:mobilenetv3_small_050",
    "--source_size", "48", "96",
    "--target_size", "48", "96",
    "--synthetic_num_images", "48", "40", "12",
    "--num_iterations", "8",
    "--max_iters", "8",
    "--batch_size", "4",
    "--num_workers", "0",
    "--eval_batch_size", "12",
    "--log_steps", "10",
]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    argv = [*SMALL, "--output_dir", str(root / "out"), "--synthetic_dir", str(root / "synthetic")]
    results = run_intrada.main(argv)
    return root / "out", results


def test_default_pipeline_runs_end_to_end(finished_run):
    out, results = finished_run
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["backbone"] == "timm:mobilenetv3_small_050" and config["num_iterations"] == 8
    assert config["framework"] == "advent" and config["lambda_easy"] == 0.67  # from the default YAML
    assert config["task"] == "segmentation" and "architecture" not in config  # the options of its task only
    for stage in ("inter", "intra"):
        model = AutoModelForSemanticSegmentation.from_pretrained(out / stage / "model")
        assert model.config.num_labels == 19 and model.config.id2label[0] == "road"
        for level in ("aux", "main"):
            assert isinstance(
                FCDiscriminator.from_pretrained(out / stage / "discriminators" / level), FCDiscriminator
            )
        assert (out / stage / "DONE").read_text().strip() == "8"
    assert (out / "ranking" / "ranking.png").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics["results"]) == set(results["results"]) == {"G_inter", "G_intra"}
    for result in metrics["results"].values():
        scores = result["scores"]["19"]
        assert 0.0 < scores["mean_iou"] <= 1.0
    assert "mIoU" in (out / "eval" / "results.md").read_text()
    assert len(list((out / "eval" / "predictions").rglob("*.png"))) == 8


def test_ranking_finds_the_hard_images(tmp_path):
    # G_inter of the default network trained briefly on the synthetic source (all 400 images); its ranking of
    # the target training images must put the severe conditions in the hard split. (Measured: easy 0.386,
    # hard 0.731 mean condition; 0.5 each would be chance.)
    common = [
        "--synthetic_num_images", "400", "100", "12", "--synthetic_dir", str(tmp_path / "synthetic"),
        "--output_dir", str(tmp_path / "out"), "--num_workers", "0", "--eval_batch_size", "16",
    ]  # fmt: skip
    run_intrada.main([*common, "--stage", "inter", "--framework", "source_only", "--num_iterations", "100",
                      "--max_iters", "100", "--batch_size", "8"])  # fmt: skip
    run_intrada.main([*common, "--stage", "rank"])
    summary = json.loads((tmp_path / "out" / "ranking" / "ranking.json").read_text())
    assert (summary["num_easy"], summary["num_hard"]) == (67, 33)
    condition = summary["mean_condition"]
    assert condition["easy"] + 0.15 < condition["hard"]


def test_target_training_labels_never_reach_training(tmp_path, monkeypatch):
    # The synthetic target validation split HAS labels: used as the training target, they must be dropped.
    seen = {}

    class Capture(Exception):
        pass

    def capture(self, *args, **kwargs):
        seen["target"] = kwargs["target"][0]
        raise Capture

    monkeypatch.setattr(run_intrada.AdaptationStage, "__init__", capture)
    argv = [
        *SMALL, "--output_dir", str(tmp_path / "out"), "--synthetic_dir", str(tmp_path / "synthetic"),
        "--target_config", "target_val", "--target_split", "validation", "--stage", "inter",
    ]  # fmt: skip
    with pytest.raises(Capture):
        run_intrada.main(argv)
    target = seen["target"]
    assert "label" not in target.dataset.column_names and not target.with_labels
    assert "labels" not in target[0]


@pytest.mark.parametrize(
    "argv, error, message",
    [
        (["--lambda_easy", "1.5"], ValueError, r"\(0, 1\]"),
        (["--framework", "fda"], ValueError, "unknown framework"),
        (["--stage", "train"], ValueError, "--stage"),
        (["--target_size", "64"], ValueError, "HEIGHT WIDTH"),
        (["--config", "missing.yaml"], FileNotFoundError, "no such file"),
        (["--no_such_option", "1"], ValueError, "no_such_option"),
    ],
)
def test_bad_options_are_refused(argv, error, message):
    with pytest.raises(error, match=message):
        parse_arguments(argv)


def test_the_word_none_unsets_an_optional_option():
    args = parse_arguments(["--val_dataset", "None", "--max_val_images", "3"])
    assert args.segmentation.val_dataset is None and args.run.max_val_images == 3


def test_unknown_yaml_option_is_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("backbone: resnet101\nlearning_rte: 0.1\n")
    with pytest.raises(ValueError, match="learning_rte"):
        parse_arguments(["--config", str(config)])


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    argv = [*SMALL, "--source_dataset", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_intrada.main(argv)


@pytest.mark.parametrize(
    "name",
    [
        "synthetic_default",
        "synthetic_full",
        "gta5_to_cityscapes",
        "gta5_to_cityscapes_norm",
        "synthia_to_cityscapes",
        "synscapes_to_cityscapes",
        "camvid_day_to_dusk",
    ],
)
def test_shipped_configs_parse(name):
    path = DEFAULT_CONFIG if name == "synthetic_default" else ROOT / "training" / "configs" / f"{name}.yaml"
    args = parse_arguments(["--config", str(path)])
    settings, data_args = args.settings, args.segmentation
    assert args.run.task == "segmentation"
    if name.startswith("gta5"):
        assert (settings.num_iterations, settings.max_iters, settings.learning_rate) == (
            120_000,
            250_000,
            2.5e-4,
        )
        assert [data_args.source_size, data_args.target_size] == [[720, 1280], [512, 1024]]
        assert data_args.normalize_entropy == name.endswith("norm")
    if name == "synthia_to_cityscapes":
        assert data_args.eval_protocols == ["16", "13"] and settings.num_iterations == 90_000
    if name == "synscapes_to_cityscapes":
        assert settings.framework == "adaptsegnet"
    if name == "synthetic_full":
        assert data_args.backbone == "timm:mobilenetv3_large_100" and settings.num_iterations == 200
        assert [data_args.source_size, data_args.target_size] == [[96, 192], [96, 192]]


def test_stage_three_reads_a_ranking_from_another_folder(finished_run, tmp_path):
    out, _ = finished_run
    argv = [
        *SMALL, "--output_dir", str(tmp_path / "elsewhere"), "--synthetic_dir", str(out.parent / "synthetic"),
        "--stage", "intra", "--inter_model", str(out / "inter" / "model"), "--ranking", str(out / "ranking"),
        "--num_iterations", "1", "--max_iters", "1",
    ]  # fmt: skip
    run_intrada.main(argv)
    assert (tmp_path / "elsewhere" / "intra" / "model" / "model.safetensors").is_file()
    with pytest.raises(FileNotFoundError, match="ranking-splits"):
        run_intrada.main([*argv[:-6], "--ranking", str(tmp_path)])


def test_rank_stage_from_the_command_line(finished_run, tmp_path):
    import subprocess
    import sys

    out, _ = finished_run
    command = [
        sys.executable, str(SCRIPT), *SMALL, "--output_dir", str(tmp_path / "r"), "--stage", "rank",
        "--synthetic_dir", str(out.parent / "synthetic"), "--inter_model", str(out / "inter" / "model"),
        "--lambda_easy", "0.5",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "r" / "ranking" / "ranking.json").read_text())
    assert summary["lambda_easy"] == 0.5 and summary["num_easy"] == 20


def test_two_cpu_processes_with_accelerate_launch(tmp_path):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`, the whole pipeline, checkpoints."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT),
        *SMALL, "--batch_size", "2", "--num_iterations", "4", "--max_iters", "4", "--checkpointing_steps", "2",
        "--output_dir", str(tmp_path / "out"), "--synthetic_dir", str(tmp_path / "synthetic"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    assert (out / "inter" / "DONE").read_text().strip() == "4" and (out / "intra" / "DONE").is_file()
    checkpoint = out / "inter" / "checkpoints" / "checkpoint-4"
    assert json.loads((checkpoint / "loop_state.json").read_text())["num_processes"] == 2
    summary = json.loads((out / "ranking" / "ranking.json").read_text())
    assert summary["num_images"] == 40  # every target image scored once, across the two processes
    assert len(json.loads((out / "eval" / "metrics.json").read_text())["results"]) == 2


def _run_program(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """The program in a fresh interpreter, as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("INTRADA_DEBUG", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.mark.parametrize(
    "config, argv, message",
    [
        ("source_size: 5\n", [], "option source_size takes a list, got 5"),
        ("- learning_rate\n- 0.1\n", [], "must hold a mapping of option: value, got a list"),
        (None, ["--disc_betas", "0.9"], r"disc_betas takes two numbers, got \[0.9\]"),
        (
            None,
            ["--stage", "rank", "--inter_model", "no/such/model"],
            "--inter_model no/such/model: no such folder",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(tmp_path, config, argv, message):
    if config is not None:
        (tmp_path / "bad.yaml").write_text(config)
        argv = ["--config", str(tmp_path / "bad.yaml"), *argv]
    done = _run_program([*argv, "--output_dir", str(tmp_path / "out")], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert re.search(message, done.stderr) and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_finished_stage_needs_overwrite_and_keeps_its_record(finished_run):
    out, _ = finished_run
    record, weights = (
        (out / "config.yaml").read_bytes(),
        (out / "inter" / "model" / "model.safetensors").stat(),
    )
    argv = [*SMALL, "--output_dir", str(out), "--synthetic_dir", str(out.parent / "synthetic")]
    with pytest.raises(UsageError, match=r"stage inter already finished .*pass --overwrite"):
        run_intrada.main([*argv, "--stage", "inter", "--learning_rate", "0.5"])
    with pytest.raises(UsageError, match="num_iterations must be >= 0"):
        run_intrada.main([*argv, "--stage", "inter", "--num_iterations", "-5", "--overwrite"])
    assert (out / "config.yaml").read_bytes() == record
    assert (out / "inter" / "model" / "model.safetensors").stat().st_mtime_ns == weights.st_mtime_ns


def test_missing_stage_inputs_are_refused_before_anything_is_written(finished_run, tmp_path):
    out, _ = finished_run
    argv = [*SMALL, "--output_dir", str(tmp_path / "new"), "--synthetic_dir", str(out.parent / "synthetic")]
    with pytest.raises(FileNotFoundError, match=r"the inter model is not at .*run --stage inter first"):
        run_intrada.main([*argv, "--stage", "rank"])
    with pytest.raises(
        FileNotFoundError, match=r"stage 3 reads the ranking, which is not at .*run --stage rank first"
    ):
        run_intrada.main([*argv, "--stage", "intra", "--inter_model", str(out / "inter" / "model")])
    assert not (tmp_path / "new").exists()


def test_a_diverged_stage_stops_and_saves_no_model(finished_run, tmp_path):
    out, _ = finished_run
    argv = [*SMALL, "--output_dir", str(tmp_path / "o"), "--synthetic_dir", str(out.parent / "synthetic")]
    with pytest.raises(NonFiniteLossError, match=r"stage inter, step \d+: .* is (nan|inf)"):
        run_intrada.main([*argv, "--stage", "inter", "--learning_rate", "1e35", "--num_iterations", "3"])
    assert (
        not (tmp_path / "o" / "inter" / "model").exists() and not (tmp_path / "o" / "inter" / "DONE").exists()
    )


def test_a_crash_while_writing_the_ranking_keeps_the_earlier_one(finished_run, tmp_path, monkeypatch):
    out, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = (copy / "ranking" / "ranking.json").read_bytes()

    def crash(result, folder, **kwargs):
        (Path(folder) / "data-00000.parquet").write_bytes(b"half a file")
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(run_intrada, "save_ranking", crash)
    argv = [*SMALL, "--output_dir", str(copy), "--synthetic_dir", str(out.parent / "synthetic")]
    with pytest.raises(RuntimeError, match="killed while writing"):
        run_intrada.main([*argv, "--stage", "rank"])
    assert (copy / "ranking" / "ranking.json").read_bytes() == before
    assert len(load_ranking(copy / "ranking").easy_ids) == json.loads(before)["num_easy"]
    assert not list(copy.glob("*.incomplete"))


def test_a_crash_while_saving_the_model_keeps_the_earlier_one(finished_run, tmp_path, monkeypatch):
    out, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    weights = (copy / "inter" / "model" / "model.safetensors").read_bytes()
    record = (copy / "config.yaml").read_bytes()

    def crash(self, model, folder):
        (Path(folder) / "model.safetensors").write_bytes(b"half a file")
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(SegmentationRun, "save_generator", crash)
    argv = [*SMALL, "--output_dir", str(copy), "--synthetic_dir", str(out.parent / "synthetic")]
    with pytest.raises(RuntimeError, match="killed while saving"):
        run_intrada.main(
            [*argv, "--stage", "inter", "--overwrite", "--num_iterations", "1", "--max_iters", "1"]
        )
    assert (copy / "inter" / "model" / "model.safetensors").read_bytes() == weights
    assert (copy / "config.yaml").read_bytes() == record  # the failed command left the run's record
    AutoModelForSemanticSegmentation.from_pretrained(copy / "inter" / "model")


def test_label_spaces_and_architectures_must_agree(finished_run, tmp_path):
    out, _ = finished_run
    argv = [*SMALL, "--output_dir", str(tmp_path / "o"), "--synthetic_dir", str(out.parent / "synthetic")]
    with pytest.raises(
        UsageError, match=r"--rare_train_ids \[99\] are not classes of 'synthetic' \(train ids 0..18\)"
    ):
        run_intrada.main([*argv, "--rare_train_ids", "99"])
    with pytest.raises(
        UsageError, match=r"labelled in 'synthetic' \(19 classes\), which lacks the run's classes \['tree'"
    ):
        run_intrada.main([*argv, "--label_space", "camvid"])
    FCDiscriminator(FCDiscriminatorConfig(num_channels=19, ndf=4)).save_pretrained(tmp_path / "d")
    with pytest.raises(
        UsageError, match=r"a 'intrada_fc_discriminator' model is not a semantic-segmentation model"
    ):
        run_intrada.main([*argv, "--stage", "rank", "--inter_model", str(tmp_path / "d")])
    config = DeepLabV2Config(backbone="timm:mobilenetv3_small_050", num_labels=5)
    DeepLabV2ForSemanticSegmentation(config).save_pretrained(tmp_path / "g5")
    with pytest.raises(UsageError, match=r"the model's 5 classes do not match the run's 19 by name"):
        run_intrada.main([*argv, "--stage", "rank", "--inter_model", str(tmp_path / "g5")])
    assert not (tmp_path / "o" / "ranking").exists()


def _stop_mid_training(tmp_path: Path, num_processes: int, send: signal.Signals) -> tuple[int, str, float]:
    """Start a long stage 1, send `send` to the program (the launcher with several processes) once a
    checkpoint is written, and return (exit status, stderr, seconds from the signal to the exit)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    env.pop("INTRADA_DEBUG", None)
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ] if num_processes > 1 else [sys.executable]  # fmt: skip
    argv = [
        *SMALL, "--batch_size", "2", "--num_iterations", "100000", "--max_iters", "100000",
        "--checkpointing_steps", "3", "--output_dir", str(tmp_path / "out"), "--synthetic_dir", str(tmp_path / "s"),
    ]  # fmt: skip
    process = subprocess.Popen(
        [*launcher, str(SCRIPT), *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    checkpoint = tmp_path / "out" / "inter" / "checkpoints" / "checkpoint-3"
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.is_dir() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert checkpoint.is_dir(), "no checkpoint within 240 s"
        process.send_signal(send)
        sent = time.monotonic()
        _, stderr = process.communicate(timeout=120)  # the workers hold stderr open until they exit
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr, time.monotonic() - sent


def _assert_stopped_cleanly(out: Path) -> None:
    assert not (out / "inter" / "model").exists() and not (out / "inter" / "DONE").exists()
    assert not list(out.rglob("*.incomplete"))  # no half checkpoint
    checkpoints = sorted((out / "inter" / "checkpoints").iterdir())
    assert checkpoints and all((c / "loop_state.json").is_file() for c in checkpoints)


def test_sigterm_stops_training_at_a_step_boundary(tmp_path):
    status, stderr, seconds = _stop_mid_training(tmp_path, 1, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: stage inter stopped by SIGTERM after step \d+ of 100000; nothing was half written, the stage's "
        r"model was not saved: resume from .*checkpoint-\d+ with --resume_from_checkpoint latest",
        last,
    ), last
    assert "Traceback" not in stderr and seconds < 30
    _assert_stopped_cleanly(tmp_path / "out")


@pytest.mark.parametrize("send", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_accelerate_launch_stops_every_process(tmp_path, send):
    # SIGTERM: the launcher passes it on; SIGKILL: the workers see their launcher gone (as SIGHUP).
    status, stderr, seconds = _stop_mid_training(tmp_path, 2, send)
    assert status != 0 and seconds < 60
    expected = "SIGTERM" if send == signal.SIGTERM else "SIGHUP"
    steps = re.findall(rf"error: stage inter stopped by {expected} after step (\d+) of 100000", stderr)
    assert len(steps) == 2, stderr[-3000:]  # one line from each process
    assert steps[0] == steps[1]  # the same step boundary
    _assert_stopped_cleanly(tmp_path / "out")


def test_a_source_labelled_in_another_class_order_is_mapped_by_name(finished_run, tmp_path):
    out, _ = finished_run
    synthetic = out.parent / "synthetic"
    built = next(p.parent for p in synthetic.rglob("label_space.json"))
    reordered = tmp_path / "source"
    shutil.copytree(built, reordered)
    space = json.loads((reordered / "label_space.json").read_text())
    id2label = space["id2label"]
    id2label["0"], id2label["1"] = id2label["1"], id2label["0"]  # its label 0 is sidewalk, 1 road
    (reordered / "label_space.json").write_text(json.dumps(space))
    argv = [*SMALL, "--output_dir", str(tmp_path / "o"), "--synthetic_dir", str(synthetic)]
    plain = SegmentationRun(parse_arguments(argv)).training_split("source", True)[0]["labels"]
    mapped = SegmentationRun(parse_arguments([*argv, "--source_dataset", str(reordered)]))
    labels = mapped.training_split("source", True)[0]["labels"]
    swapped = plain.clone()
    swapped[plain == 0], swapped[plain == 1] = 1, 0
    assert (plain <= 1).any() and torch.equal(labels, swapped)
