"""The program end to end on the embedded synthetic default, at a reduced size, and its option checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForSemanticSegmentation

import modeling_intrada.training.pipeline as run_intrada
from modeling_intrada import FCDiscriminator
from modeling_intrada.training.arguments import DEFAULT_CONFIG, parse_arguments

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
