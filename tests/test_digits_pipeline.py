"""The digits task (modeling_intrada/training/tasks/digits.py): ranking on a classifier, the task in the loop, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from digits_fixtures import build, raw_mnist, raw_svhn, raw_usps

from modeling_intrada import DigitClassifier, DigitClassifierConfig
from modeling_intrada.method.adaptation import ClassificationTask, LevelOutput
from modeling_intrada.method.losses import weighted_self_information
from modeling_intrada.method.ranking import load_ranking, rank_by_entropy, save_ranking
from modeling_intrada.training.arguments import parse_arguments
from modeling_intrada.training.pipeline import main as run_intrada_main

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
TINY = [
    "--source_num_iterations", "4",
    "--num_iterations", "4",
    "--intra_num_iterations", "4",
    "--batch_size", "8",
    "--eval_batch_size", "16",
    "--log_steps", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("digits_pipeline")
    counts = {"train": 40, "test": 20}
    build("mnist", raw_mnist(root / "raw_mnist", counts), root / "mnist")
    build("usps", raw_usps(root / "raw_usps", counts), root / "usps")
    raw_svhn(root / "raw_svhn", counts)
    build("svhn", root / "raw_svhn", root / "svhn")
    return root


class LookupClassifier(torch.nn.Module):
    """Returns fixed logits per image: row i of `table` for the image whose first pixel is i."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[pixel_values[:, 0, 0, 0].long()])


def test_ranking_on_a_classifier_gives_the_expected_split(tmp_path):
    # Ten images whose logits get less and less peaked: image i has confidence 10 - i on class (3 * i) % 10.
    table = torch.zeros(10, 10)
    for i in range(10):
        table[i, (3 * i) % 10] = 10.0 - i
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))  # images in a shuffled order
    batches = [
        {
            "pixel_values": order[s : s + 4].float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2),
            "id": [f"img{int(i)}" for i in order[s : s + 4]],
            "index": [int(i) for i in order[s : s + 4]],
        }
        for s in range(0, 10, 4)
    ]
    result = rank_by_entropy(
        LookupClassifier(table), batches, lambda_easy=0.8, predict=lambda m, x: m(x).logits, device="cpu"
    )
    # R = mean self-information over classes: ascending = most confident first.
    assert result.ids == [f"img{i}" for i in range(10)]
    expected_scores = weighted_self_information(table).mean(dim=1)
    assert np.allclose(result.scores, expected_scores.numpy(), atol=1e-6)
    assert result.splits == ["easy"] * 8 + ["hard"] * 2  # int(10 * 0.8)
    assert result.pseudo_labels == [(3 * i) % 10 for i in range(8)] + [None, None]
    assert all(type(label) is int for label in result.pseudo_labels[:8])

    save_ranking(result, tmp_path / "ranking")
    ranking = load_ranking(tmp_path / "ranking")
    assert ranking.easy_ids == [f"img{i}" for i in range(8)] and ranking.hard_ids == ["img8", "img9"]
    assert ranking.pseudo_label("img4") == 2
    assert str(ranking.table.features["pseudo_label"].dtype) == "int64"


def test_classification_task():
    model = DigitClassifier(DigitClassifierConfig()).eval()
    task = ClassificationTask(framework="feature", adv_weight=0.3)
    (output,) = task.forward(model, torch.randn(4, 1, 28, 28))
    assert task.level_names == ["main"] and task.adversarial_weights() == [0.3]
    assert task.discriminator_input(output).shape == (4, 500)
    advent = ClassificationTask(framework="advent").discriminator_input(output)
    assert advent.shape == (4, 10) and torch.allclose(advent, weighted_self_information(output.logits))
    scores = ClassificationTask(framework="scores").discriminator_input(output)  # CyCADA's ADDA: the logits
    assert torch.equal(scores, output.logits)
    loss = task.supervised_loss([output], torch.tensor([1, 2, 3, 4]))
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(output.logits, torch.tensor([1, 2, 3, 4])))
    assert task.minent_loss([output]).ndim == 0
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        task.supervised_loss([output], torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="features"):
        task.discriminator_input(LevelOutput(output.logits))


def test_pipeline_end_to_end_mnist_to_usps(datasets_dir, tmp_path, one_thread):
    out = tmp_path / "run"
    argv = [
        "--config", str(CONFIGS / "digits_mnist_to_usps.yaml"),
        "--source_dataset", str(datasets_dir / "mnist"),
        "--target_dataset", str(datasets_dir / "usps"),
        "--output_dir", str(out),
        *TINY,
    ]  # fmt: skip
    results = run_intrada_main(argv)  # `task: digits` in the config
    assert set(results) == {
        "source only",
        "inter-domain only (G_inter, feature-level CyCADA on class scores)",
        "IntraDA (G_intra, feature-level CyCADA on class scores)",
    }
    for stage in ("source", "inter", "intra"):
        assert (out / stage / "model" / "config.json").is_file() and (
            out / stage / "DONE"
        ).read_text() == "4\n"
    assert not (out / "source" / "discriminators").exists()
    assert (out / "inter" / "discriminators" / "main" / "config.json").is_file()
    summary = json.loads((out / "ranking" / "ranking.json").read_text())
    assert (summary["num_easy"], summary["num_hard"]) == (32, 8)  # int(40 * 0.8)
    assert 0 <= summary["target_label_check"]["easy_accuracy"] <= 100
    ranking = load_ranking(out / "ranking")
    assert all(0 <= ranking.pseudo_label(i) <= 9 for i in ranking.easy_ids)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "(test, 20 images)" in metrics["target_test"]
    for row in metrics["models"].values():
        assert 0 <= row["target_accuracy"] <= 100 and 0 <= row["source_accuracy"] <= 100
    assert "| source only |" in (out / "eval" / "results.md").read_text()
    card = (out / "intra" / "model" / "README.md").read_text()
    assert "feature-level CyCADA" in card and "IntraDA stage 3" in card and "| target:" in card
    assert "10 class scores, as CyCADA's released ADDA code" in card and "- feature-level-cycada" in card
    assert "random affine of the labelled training images: rotation up to 10 degrees, zoom 0.9 to 1.1" in card
    source_card = (out / "source" / "model" / "README.md").read_text()
    assert "no adaptation: no adaptation term" in source_card and "- source-only" in source_card

    # config.yaml holds every option and runs again: here the evaluation alone.
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["task"] == "digits" and saved["lambda_easy"] == 0.8 and saved["num_iterations"] == 4
    assert "architecture" in saved and "backbone" not in saved  # the options of its task only
    again = run_intrada_main(["--config", str(out / "config.yaml"), "--stage", "eval"])
    assert again == results


def test_pipeline_svhn_to_mnist_on_mat_fixture(datasets_dir, tmp_path, one_thread):
    out = tmp_path / "svhn"
    argv = [
        "--config", str(CONFIGS / "digits_svhn_to_mnist.yaml"),
        "--source_dataset", str(datasets_dir / "svhn"),
        "--target_dataset", str(datasets_dir / "mnist"),
        "--output_dir", str(out),
        "--lambda_easy", "0.5",
        *TINY,
        "--source_num_iterations", "2", "--num_iterations", "2", "--intra_num_iterations", "2",  # the DTN is big
        "--batch_size", "4",
        "--augmentation", "affine", "--augment_target",  # RGB images, both streams augmented
        "--augmentation_stages", "inter", "intra",
    ]  # fmt: skip
    results = run_intrada_main(argv)
    assert len(results) == 3
    model = DigitClassifier.from_pretrained(out / "intra" / "model")
    assert model.config.architecture == "dtn" and model.config.num_channels == 3
    summary = json.loads((out / "ranking" / "ranking.json").read_text())
    assert (summary["num_easy"], summary["num_hard"]) == (20, 20)
    card = (out / "inter" / "model" / "README.md").read_text()
    assert "a discriminator on the classifier's 512-d features" in card
    assert "random affine of all training images" in card
    assert "**Training augmentation:** none." in (out / "source" / "model" / "README.md").read_text()


def test_shipped_configs():
    expected = {  # the discriminator's input and weight as measured best per setting (docs/digits.md)
        "digits_mnist_to_usps.yaml": ("lenet", "mnist", "usps", "scores", 0.3),
        "digits_usps_to_mnist.yaml": ("lenet", "usps", "mnist", "feature", 1.0),  # stage 3: scores, 0.3
        "digits_svhn_to_mnist.yaml": ("dtn", "svhn", "mnist", "feature", 0.1),
    }
    for name, (architecture, source, target, framework, adv_weight) in expected.items():
        args = parse_arguments(["--config", str(CONFIGS / name)])
        assert args.digits.architecture == architecture
        assert args.run.source_dataset.endswith(source) and args.run.target_dataset.endswith(target)
        assert (args.settings.framework, args.run.adv_main_weight, args.run.lambda_easy) == (
            framework,
            adv_weight,
            0.8,
        )
        assert "feature-level CyCADA" in (CONFIGS / name).read_text()
        assert args.digits.augmentation == ("none" if architecture == "dtn" else "affine")
    args = parse_arguments(["--config", str(CONFIGS / "digits_usps_to_mnist.yaml")])
    assert (args.run.intra_framework, args.run.intra_adv_main_weight, args.digits.augmentation_stages) == (
        "scores",
        0.3,
        ["intra"],
    )


def test_option_errors(tmp_path, datasets_dir):
    config = tmp_path / "bad.yaml"
    config.write_text("task: digits\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown options \['learning_rat'\]"):
        parse_arguments(["--config", str(config)])
    config.write_text("task: segmentation\narchitecture: lenet\n")  # a digits option in a segmentation config
    with pytest.raises(ValueError, match="architecture is an option of the digits task"):
        parse_arguments(["--config", str(config)])
    base = ["--config", str(CONFIGS / "digits_mnist_to_usps.yaml")]
    with pytest.raises(ValueError, match="lambda_easy"):
        parse_arguments([*base, "--lambda_easy", "1.5"])
    with pytest.raises(ValueError, match="intra_init"):
        parse_arguments([*base, "--intra_init", "imagenet"])
    with pytest.raises(ValueError, match="max_val_images must be at least 1"):
        parse_arguments([*base, "--max_val_images", "0"])
    with pytest.raises(ValueError, match="source_num_iterations is 0"):
        parse_arguments([*base, "--source_num_iterations", "0"])
    with pytest.raises(
        ValueError, match=r"augmentation_stages takes source, inter and/or intra, got \['rank'\]"
    ):
        parse_arguments([*base, "--augmentation_stages", "inter", "rank"])
    with pytest.raises(ValueError, match="augmentation must be one of"):
        parse_arguments([*base, "--augmentation", "mixup"])
    with pytest.raises(ValueError, match="affine_scale takes two numbers"):
        parse_arguments([*base, "--augmentation", "affine", "--affine_scale", "1.1"])
    with pytest.raises(ValueError, match="0 < low <= high"):
        parse_arguments([*base, "--augmentation", "affine", "--affine_scale", "1.2", "0.9"])
    with pytest.raises(FileNotFoundError, match="run --stage source first"):
        run_intrada_main([*base, "--stage", "inter", "--output_dir", str(tmp_path / "empty"), *TINY[:2]])


def test_task_comes_from_the_config_or_the_command_line(tmp_path):
    args = parse_arguments(["--config", str(CONFIGS / "digits_mnist_to_usps.yaml")])  # `task: digits`
    assert args.run.task == "digits" and args.settings.disc_betas == [0.5, 0.999]
    args = parse_arguments(["--task", "digits"])  # no config: the digits defaults
    assert (args.run.source_dataset, args.run.lambda_easy, args.settings.max_iters) == (
        "data/mnist",
        0.8,
        None,
    )
    assert parse_arguments([]).run.task == "segmentation"  # the embedded default
    config = tmp_path / "digits.yaml"
    config.write_text("task: digits\nlambda_easy: 0.5\n")
    args = parse_arguments(["--config", str(config), "--task", "segmentation"])  # the command line wins
    assert (args.run.task, args.run.lambda_easy, args.segmentation.backbone) == (
        "segmentation",
        0.5,
        "resnet101",
    )
    with pytest.raises(ValueError, match=r"task must be one of \('segmentation', 'digits'\), got 'ocr'"):
        parse_arguments(["--task", "ocr"])
    with pytest.raises(ValueError, match="--stage must be one of"):
        parse_arguments(["--stage", "source"])  # segmentation has no source stage


def test_old_option_names_are_refused_with_the_new_name(tmp_path):
    config = tmp_path / "old.yaml"
    renamed = {
        "betas: [0.5, 0.999]": "disc_betas",
        "intra_supervised_loss: false": "intra_segmentation_loss",
        "adv_weight: 0.3": "adv_main_weight",
        "intra_adv_weight: 0.3": "intra_adv_main_weight",
        "train_split: train": "source_split and target_split",
        "test_split: test": "val_split",
        "max_test_samples: 10": "max_val_images",
    }
    for line, new in renamed.items():
        config.write_text(f"task: digits\n{line}\n")
        with pytest.raises(ValueError, match=f"option '{line.split(':')[0]}' is now called {new}; rename it"):
            parse_arguments(["--config", str(config)])
    with pytest.raises(ValueError, match="option 'betas' is now called disc_betas"):
        parse_arguments(["--task", "digits", "--betas", "0.5", "0.999"])
    # The options of the other task are refused, from the command line as from the config.
    with pytest.raises(
        ValueError, match="backbone is an option of the segmentation task, and this run's task is"
    ):
        parse_arguments(["--task", "digits", "--backbone", "resnet50"])
    with pytest.raises(ValueError, match="augmentation is an option of the digits task"):
        parse_arguments(["--augmentation", "affine"])


@pytest.mark.slow
def test_two_cpu_processes_with_accelerate_launch(datasets_dir, tmp_path, one_thread):
    """`accelerate launch` with 2 CPU processes: sharded streams, ranking and evaluation, checkpoints; the
    ranking and the accuracies equal a one-process recomputation with the same models. With the `feature`
    framework (USPS->MNIST's) DDP must be told that the adversarial loss never reaches the last layer."""
    import os
    import subprocess
    import sys

    script = CONFIGS.parent / "run_intrada.py"
    out = tmp_path / "two"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    options = [
        "--config", str(CONFIGS / "digits_mnist_to_usps.yaml"),
        "--source_dataset", str(datasets_dir / "mnist"),
        "--target_dataset", str(datasets_dir / "usps"),
        "--max_target_samples", "39",  # odd: the processes get different numbers of ranking batches
        "--output_dir", str(out),
        "--framework", "feature",
        *TINY,
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
        *options, "--checkpointing_steps", "2",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = out / "inter" / "checkpoints" / "checkpoint-4"
    assert json.loads((checkpoint / "loop_state.json").read_text())["num_processes"] == 2
    two_ranking = load_ranking(out / "ranking")
    assert len(two_ranking.easy_ids) + len(two_ranking.hard_ids) == 39
    two_metrics = json.loads((out / "eval" / "metrics.json").read_text())

    run_intrada_main([*options, "--stage", "rank"])  # one process, the same G_inter
    one_ranking = load_ranking(out / "ranking")
    assert (one_ranking.easy_ids, one_ranking.hard_ids) == (two_ranking.easy_ids, two_ranking.hard_ids)
    assert run_intrada_main([*options, "--stage", "eval"]) == two_metrics["models"]
