"""`run_intrada.py` with G of another family than DeepLab-v2: every stage runs, saves, reloads with the Auto
classes (and `pipeline`) where this library is not installed, evaluates and writes its cards; the plug-in use
(`--inter_model`) on a SegFormer this project did not train; and the refusals, before anything is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from segmenter_configs import WITH_AUXILIARY_HEAD, tiny_config, write_tiny_config
from test_auto_classes import run_python
from test_bad_inputs import _refused
from transformers import AutoModelForSemanticSegmentation, SegformerImageProcessor

from modeling_intrada.data.synthetic import build_synthetic_dataset
from modeling_intrada.labels import get_label_space
from modeling_intrada.publishing.hub import push_run_to_hub
from modeling_intrada.training import pipeline

RUN_CLASSES = list(get_label_space("synthetic").class_names)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("any-segmenter-data")
    return build_synthetic_dataset(
        root, seed=0, num_source=4, num_target_train=6, num_target_val=4, height=64, width=128
    )


def run_arguments(run_dir: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--output_dir", str(run_dir),
        "--source_dataset", str(data), "--target_dataset", str(data), "--val_dataset", str(data),
        "--source_size", "64", "128", "--target_size", "64", "128",
        "--num_iterations", "2", "--max_iters", "10", "--batch_size", "2", "--eval_batch_size", "4",
        "--num_workers", "0", "--lambda_easy", "0.5", "--log_steps", "1",
        *extra,
    ]  # fmt: skip


def run(argv: list[str]) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only wait for each other on a shared machine
    try:
        return pipeline.main(argv)
    finally:
        torch.set_num_threads(threads)


def saved_segformer(folder: Path, class_names: list[str], seed: int = 7) -> Path:
    """A SegFormer saved as another project would (weights, config, processor): not trained by this one."""
    torch.manual_seed(seed)
    config = tiny_config("segformer")
    config.id2label = dict(enumerate(class_names))
    config.label2id = {name: i for i, name in enumerate(class_names)}
    AutoModelForSemanticSegmentation.from_config(config).save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 128}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["segformer", "upernet", "mobilevit"])
def test_every_stage_with_a_new_model_of_the_family(family, data, tmp_path):
    run_dir = tmp_path / "run"
    config = write_tiny_config(family, tmp_path)
    run(run_arguments(run_dir, data, "--generator_config", str(config)))

    levels = ["aux", "main"] if family in WITH_AUXILIARY_HEAD else ["main"]
    for stage in ("inter", "intra"):
        model_dir = run_dir / stage / "model"
        saved = json.loads((model_dir / "config.json").read_text())
        assert saved["model_type"] == family and list(saved["id2label"].values()) == RUN_CLASSES
        assert sorted(p.name for p in (run_dir / stage / "discriminators").iterdir()) == levels
        card = (model_dir / "README.md").read_text()
        assert saved["architectures"][0] in card and "trust_remote_code" not in card
        assert ("(one output level)" in card) == (family not in WITH_AUXILIARY_HEAD)
    assert (
        "random, a new model of the configuration" in (run_dir / "inter" / "model" / "README.md").read_text()
    )
    assert (run_dir / "ranking" / "README.md").is_file()
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert {"G_inter", "G_intra"} <= set(json.dumps(metrics).replace('"', " ").split())
    # transformers' own class: published without modeling code, `trust_remote_code` not needed
    plans = push_run_to_hub(run_dir, "someone/g", ranking_repo_id="someone/g-ranking", dry_run=True)
    assert "intra/model/model.safetensors" in plans["model"] and ".py" not in plans["model"]

    # A user with transformers alone: the Auto classes and the pipeline load G_intra, no remote code.
    Image.fromarray(np.full((64, 128, 3), 90, np.uint8)).save(tmp_path / "street.png")
    result = run_python(
        f"""
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline
        folder = {str(run_dir / "intra" / "model")!r}
        model = AutoModelForSemanticSegmentation.from_pretrained(folder)
        processor = AutoImageProcessor.from_pretrained(folder)
        print(type(model).__name__, processor(images=[__import__("PIL.Image").Image.open("street.png")],
              return_tensors="pt")["pixel_values"].shape[-2:])
        segments = pipeline("image-segmentation", model=folder)("street.png")
        print(sorted(s["label"] for s in segments)[:1])
        """,
        tmp_path,
        with_package=False,
    )
    assert result.returncode == 0, result.stderr
    assert saved["architectures"][0] in result.stdout and "[64,128]" in result.stdout.replace(" ", "")


def test_plug_in_ranking_and_stage_3_on_a_segformer_trained_elsewhere(data, tmp_path):
    order = list(np.random.default_rng(2).permutation(len(RUN_CLASSES)))
    theirs = saved_segformer(tmp_path / "theirs", [RUN_CLASSES[i].title() for i in order])
    run_dir = tmp_path / "run"
    plug_in = ["--inter_model", str(theirs), "--intra_init", "inter"]
    for stage in ("rank", "intra", "eval"):
        run(run_arguments(run_dir, data, *plug_in, "--stage", stage))

    summary = json.loads((run_dir / "ranking" / "ranking.json").read_text())
    assert summary["num_easy"] + summary["num_hard"] == 6
    g_intra = json.loads((run_dir / "intra" / "model" / "config.json").read_text())
    assert list(g_intra["id2label"].values()) == RUN_CLASSES  # mapped by name to the run's order
    # G_intra started from their model with its classifier rows in the run's order.
    start = load_file(theirs / "model.safetensors")["decode_head.classifier.weight"]
    trained = load_file(run_dir / "intra" / "model" / "model.safetensors")["decode_head.classifier.weight"]
    inverse = [order.index(i) for i in range(len(order))]
    assert (trained - start[inverse]).abs().max() < 0.05 < (trained - start).abs().max()
    results = (run_dir / "eval" / "results.md").read_text()
    assert "G_inter" in results and "G_intra" in results
    assert (
        f"**Initialisation of G:** G_inter, `{theirs}`"
        in (run_dir / "intra" / "model" / "README.md").read_text()
    )


def test_stage_1_from_a_trained_segformer(data, tmp_path):
    theirs = saved_segformer(tmp_path / "theirs", RUN_CLASSES)
    run_dir = tmp_path / "run"
    run(run_arguments(run_dir, data, "--generator", str(theirs), "--stage", "inter"))
    start = load_file(theirs / "model.safetensors")
    trained = load_file(run_dir / "inter" / "model" / "model.safetensors")
    assert start.keys() == trained.keys()
    assert any(not torch.equal(start[k], trained[k]) for k in start)
    processor = json.loads((run_dir / "inter" / "model" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 64, "width": 128} and processor["image_mean"] == [
        0.485,
        0.456,
        0.406,
    ]


def _refusal_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    mask = tmp_path / "mask2former.json"
    mask.write_text(json.dumps({"model_type": "mask2former"}))
    broken = tmp_path / "mobilevit.json"
    broken.write_text(json.dumps({**tiny_config("mobilevit").to_dict(), "atrous_rates": [2, 4]}))
    other_classes = saved_segformer(tmp_path / "other", [*RUN_CLASSES[:-1], "lamp post"])
    segformer = write_tiny_config("segformer", tmp_path)
    return {
        "mask model": (["--generator_config", str(mask)], "set of masks"),
        "unbuildable config": (["--generator_config", str(broken)], "cannot build a model"),
        "other classes": (["--generator", str(other_classes)], r"lacks \['bicycle'\]"),
        "backbone with a generator": (
            ["--generator_config", str(segformer), "--backbone", "resnet50"],
            "build a new DeepLab-v2",
        ),
        "both generators": (
            ["--generator_config", str(segformer), "--generator", str(other_classes)],
            "not both",
        ),
        "oblong DPT": (
            ["--generator_config", str(write_tiny_config("dpt", tmp_path)), "--source_size", "64", "128"],
            "square inputs",
        ),
        "normalisation against the processor": (
            ["--generator_config", str(segformer), "--normalization", "caffe"],
            "normalises as 'imagenet'",
        ),
        "plug-in with a new DeepLab-v2 for stage 3": (
            ["--inter_model", str(saved_segformer(tmp_path / "ok", RUN_CLASSES)), "--intra_init", "imagenet"],
            "--intra_init inter",
        ),
        "UperNet with one image per batch": (
            ["--generator_config", str(write_tiny_config("upernet", tmp_path)), "--batch_size", "1"],
            "--batch_size 2 or more",
        ),
        "reference duplicates": (
            ["--generator_config", str(segformer), "--reference_duplicate_params"],
            "reference_duplicate_params",
        ),
    }


CASES = (
    "mask model",
    "unbuildable config",
    "other classes",
    "backbone with a generator",
    "both generators",
    "oblong DPT",
    "normalisation against the processor",
    "plug-in with a new DeepLab-v2 for stage 3",
    "reference duplicates",
    "UperNet with one image per batch",
)


@pytest.mark.parametrize("case", CASES)
def test_refused_before_anything_is_written(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    argv, message = _refusal_cases(tmp_path)[case]
    _refused(capsys, pipeline.main, [*argv, "--output_dir", str(tmp_path / "out")], message, tmp_path / "out")


def test_evaluate_miou_reads_any_family_and_matches_classes_by_name(data, tmp_path):
    from modeling_intrada.evaluation import evaluator

    ours = saved_segformer(tmp_path / "ours", RUN_CLASSES)
    # The same network with its classes stored in another order: the same predictions, class by class.
    order = list(np.random.default_rng(3).permutation(len(RUN_CLASSES)))
    model = AutoModelForSemanticSegmentation.from_pretrained(ours)
    with torch.no_grad():
        model.decode_head.classifier.weight.copy_(model.decode_head.classifier.weight[order])
        model.decode_head.classifier.bias.copy_(model.decode_head.classifier.bias[order])
    model.config.id2label = {i: RUN_CLASSES[j] for i, j in enumerate(order)}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    model.save_pretrained(tmp_path / "theirs")
    SegformerImageProcessor(size={"height": 64, "width": 128}).save_pretrained(tmp_path / "theirs")

    scores = {}
    for name in ("ours", "theirs"):
        out = tmp_path / f"eval-{name}"
        argv = ["--model", str(tmp_path / name), "--dataset", str(data), "--dataset_config", "target_val",
                "--split", "validation", "--output_dir", str(out), "--num_workers", "0"]  # fmt: skip
        evaluator.main(argv)
        document = json.loads((out / "metrics.json").read_text())
        assert document["dataset"]["normalization"] == "imagenet" and document["dataset"]["input_size"] == [
            64,
            128,
        ]
        scores[name] = next(iter(document["results"].values()))["scores"]
    assert scores["ours"] == scores["theirs"]


def test_a_deeplabv2_config_as_generator_config(data, tmp_path):
    from modeling_intrada import DeepLabV2Config

    config = tmp_path / "deeplabv2.json"
    config.write_text(
        DeepLabV2Config(backbone="timm:mobilenetv3_small_050", multi_level=False).to_json_string()
    )
    run_dir = tmp_path / "run"
    run(run_arguments(run_dir, data, "--generator_config", str(config), "--stage", "inter"))
    processor = json.loads((run_dir / "inter" / "model" / "preprocessor_config.json").read_text())
    assert processor["normalization"] == "imagenet"  # a timm backbone's, from the configuration
    assert sorted(p.name for p in (run_dir / "inter" / "discriminators").iterdir()) == ["main"]


PLUG_IN_FROM_THE_HUB = """
import sys
from huggingface_hub import HfApi
from modeling_intrada.training.pipeline import main

folder, arguments = sys.argv[1], sys.argv[2:]
HfApi().create_repo("someone/segformer")
HfApi().upload_folder(repo_id="someone/segformer", folder_path=folder)
for stage in ("rank", "intra"):
    main([*arguments, "--inter_model", "someone/segformer", "--intra_init", "inter", "--stage", stage])
"""


@pytest.mark.slow
def test_plug_in_on_a_hub_model(data, tmp_path):
    """`--inter_model user/name` through the Hub's code path (a loopback Hub): config, processor, weights."""
    from hub_server import FakeHub
    from test_hub import _environment, _run

    hub = FakeHub()
    hub.start()
    try:
        theirs = saved_segformer(tmp_path / "theirs", RUN_CLASSES)
        (tmp_path / "plug_in.py").write_text(PLUG_IN_FROM_THE_HUB)
        run_dir = tmp_path / "run"
        finished = _run(
            [sys.executable, str(tmp_path / "plug_in.py"), str(theirs), *run_arguments(run_dir, data)],
            _environment(hub, tmp_path / "hf_home"),
        )
    finally:
        hub.stop()
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert not hub.unhandled, hub.unhandled
    g_intra = json.loads((run_dir / "intra" / "model" / "config.json").read_text())
    assert g_intra["model_type"] == "segformer" and (run_dir / "ranking" / "ranking.json").is_file()
    processor = json.loads((run_dir / "intra" / "model" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 64, "width": 128}


def test_evaluate_miou_asks_for_a_size_when_the_processor_has_none(data, tmp_path, capsys, monkeypatch):
    from transformers import MobileViTImageProcessor

    from modeling_intrada.evaluation import evaluator

    monkeypatch.delenv("INTRADA_DEBUG", raising=False)
    AutoModelForSemanticSegmentation.from_config(tiny_config("mobilevit")).save_pretrained(tmp_path / "m")
    MobileViTImageProcessor().save_pretrained(tmp_path / "m")  # resizes the shortest edge to 224
    argv = ["--model", str(tmp_path / "m"), "--dataset", str(data), "--dataset_config", "target_val"]
    _refused(
        capsys,
        evaluator.main,
        [*argv, "--output_dir", str(tmp_path / "out")],
        "pass --input_size",
        tmp_path / "out",
    )
