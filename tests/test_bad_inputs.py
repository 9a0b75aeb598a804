"""Bad input, as a careful user would try it: every case exits with status 2, says what is wrong on stderr
without a traceback, and writes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dataset_scripts import gta5
from modeling_intrada.errors import run_program
from modeling_intrada.evaluation import evaluator
from modeling_intrada.models.deeplabv2 import convert_reference_checkpoint
from modeling_intrada.training import pipeline

DIGITS = ["--task", "digits"]

RUN_INTRADA = {
    "lambda above 1": (["--lambda_easy", "1.5"], r"\(0, 1\]"),
    "lambda 0": (["--lambda_easy", "0"], r"\(0, 1\]"),
    "unknown framework": (["--framework", "fda"], "unknown framework"),
    "unknown stage": (["--stage", "train"], "--stage must be one of"),
    "one size number": (["--target_size", "64"], "HEIGHT WIDTH"),
    "zero size": (["--source_size", "0", "10"], "HEIGHT WIDTH"),
    "missing config": (["--config", "missing.yaml"], "no such file"),
    "unknown precision": (["--mixed_precision", "fp8"], "no, fp16 or bf16"),
    "batch 0": (["--batch_size", "0"], "batch sizes must be at least 1"),
    "eval batch 0": (["--eval_batch_size", "0"], "batch sizes must be at least 1"),
    "max_val_images 0": (["--max_val_images", "0"], "max_val_images must be at least 1"),
    "threads 0": (["--num_threads", "0"], "num_threads must be at least 1"),
    "push without repo": (["--push_to_hub"], "needs --hub_model_id"),
    "segmentation intra_init": (["--intra_init", "scratch"], "intra_init must be imagenet or inter"),
    "normalization": (["--normalization", "bgr"], "caffe, imagenet, inception, unit_bgr"),
    "negative intra steps": (["--intra_num_iterations", "-1"], "intra_num_iterations must be >= 0"),
    "negative steps": (["--num_iterations", "-5"], "num_iterations must be >= 0"),
    "steps beyond schedule": (["--num_iterations", "20", "--max_iters", "10"], "exceeds the schedule"),
    "accumulation 0": (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps"),
    "one beta": (["--disc_betas", "0.9"], "disc_betas takes two numbers"),
    "log_steps 0": (["--log_steps", "0"], "log_steps must be at least 1"),
    "checkpointing -1": (["--checkpointing_steps", "-1"], "checkpointing_steps must be >= 0"),
    "snapshots -1": (["--snapshot_steps", "-1"], "snapshot_steps must be >= 0"),
    "limit -1": (["--checkpoints_total_limit", "-1"], "checkpoints_total_limit must be >= 0"),
    "image log -1": (["--image_log_steps", "-1"], "image_log_steps must be >= 0"),
    "optimizer": (["--generator_optimizer", "rmsprop"], "generator_optimizer must be"),
    "classifier framework": (["--framework", "feature"], "is for classifiers"),
    "classifier intra framework": (["--intra_framework", "scores"], "is for classifiers"),
    "digits option": (["--architecture", "dtn"], "architecture is an option of the digits task"),
    "missing inter_model": (["--inter_model", "./nowhere/model"], "no such folder"),
    "renamed option": (["--betas", "0.9", "0.99"], "is now called disc_betas"),
    "unknown task": (["--task", "nope"], "task must be one of"),
    "nothing to train": (["--framework", "source_only", "--segmentation_loss", "False"], "trains nothing"),
    "digits augmentation": ([*DIGITS, "--augmentation", "mixup"], "augmentation must be one of"),
    "digits inter_init": ([*DIGITS, "--inter_init", "foo"], "inter_init must be source or scratch"),
    "digits source steps": ([*DIGITS, "--source_num_iterations", "-1"], "source_num_iterations must be >= 0"),
    "digits push": ([*DIGITS, "--push_to_hub", "--hub_model_id", "a/b"], "segmentation runs only"),
    "digits subset 0": ([*DIGITS, "--max_source_samples", "0"], "max_source_samples must be at least 1"),
    "digits affine scale": ([*DIGITS, "--augmentation", "affine", "--affine_scale", "1.1"], "two numbers"),
    "digits segmentation option": ([*DIGITS, "--backbone", "resnet50"], "option of the segmentation task"),
}

CONFIGS = {
    "scalar for a list": ("source_size: 5\n", "option source_size takes a list, got 5"),
    "list at the top": ("- a\n- b\n", "must hold a mapping of option: value, got a list"),
    "not YAML": ("a: [1, 2\n", "is not valid YAML"),
    "unknown option": ("learning_rte: 0.1\n", "unknown options"),
    "removed option": ("val_label_mapping: x\n", "option 'val_label_mapping' is gone"),
}

EVALUATE = {
    "no model": ([], "exactly one"),
    "model and snapshots": (["--model", "m", "--snapshots_dir", "s"], "exactly one"),
    "unknown rule": (["--snapshots_dir", "s", "--selection", "best"], "unknown rules"),
    "selection of one model": (["--model", "m", "--selection", "min_entropy"], "needs --snapshots_dir"),
    "one size number": (["--model", "m", "--input_size", "512"], "HEIGHT WIDTH"),
    "normalization": (["--model", "m", "--normalization", "bgr"], "caffe, imagenet, inception, unit_bgr"),
    "max_images 0": (["--model", "m", "--max_images", "0"], "max_images must be at least 1"),
    "batch 0": (["--model", "m", "--batch_size", "0"], "batch_size must be at least 1"),
    "precision": (["--model", "m", "--mixed_precision", "fp8"], "no, fp16 or bf16"),
    "missing model folder": (["--model", "./nowhere/model"], "no such folder"),
    "missing snapshots": (["--snapshots_dir", "./nowhere"], "no such folder"),
}

BUILDER = {
    "missing raw folder": ([], "nowhere"),
    "negative shard size": (["--max_shard_size", "-1"], "must be at least 0"),
    "no processes": (["--num_proc", "0"], "must be at least 1"),
}


def _refused(capsys, program, argv: list[str], message: str, output: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_program(program, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and re.search(message, err), err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") or ": error: " in last, err  # ours, or argparse's own
    assert not output.exists()


@pytest.mark.parametrize("case", sorted(RUN_INTRADA))
def test_run_intrada_refuses(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    argv, message = RUN_INTRADA[case]
    _refused(capsys, pipeline.main, [*argv, "--output_dir", str(tmp_path / "out")], message, tmp_path / "out")


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_run_intrada_refuses_config(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    text, message = CONFIGS[case]
    (tmp_path / "bad.yaml").write_text(text)
    argv = ["--config", str(tmp_path / "bad.yaml"), "--output_dir", str(tmp_path / "out")]
    _refused(capsys, pipeline.main, argv, message, tmp_path / "out")


@pytest.mark.parametrize("case", sorted(EVALUATE))
def test_evaluate_refuses(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    argv, message = EVALUATE[case]
    _refused(
        capsys, evaluator.main, [*argv, "--output_dir", str(tmp_path / "out")], message, tmp_path / "out"
    )


@pytest.mark.parametrize("case", sorted(BUILDER))
def test_builder_refuses(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    argv, message = BUILDER[case]
    (tmp_path / "raw").mkdir()
    data_dir = tmp_path / ("nowhere" if case == "missing raw folder" else "raw")
    full = ["--data_dir", str(data_dir), "--output_dir", str(tmp_path / "out"), *argv]
    _refused(capsys, gta5.main, full, message, tmp_path / "out")


@pytest.mark.parametrize("case", ["missing checkpoint", "output is a file", "not a checkpoint"])
def test_converter_refuses(case, tmp_path, capsys):
    checkpoint, output = tmp_path / "model.pth", tmp_path / "out"
    if case == "output is a file":
        torch.save({"w": torch.zeros(1)}, checkpoint)
        output.write_text("mine")
    if case == "not a checkpoint":
        checkpoint.write_bytes(b"not a torch file")
    with pytest.raises(SystemExit) as exit_info:
        convert_reference_checkpoint.main(["--checkpoint", str(checkpoint), "--output_dir", str(output)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert output.is_file() if case == "output is a file" else not output.exists()
