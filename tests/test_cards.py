"""modeling_intrada.publishing.cards: the cards of a real (tiny) run parse back with huggingface_hub and carry the
mIoU the run measured, with every selection rule named as such."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard
from huggingface_hub.repocard import metadata_load

from modeling_intrada import (
    DigitClassifier,
    DigitClassifierConfig,
    FeatureDiscriminator,
    FeatureDiscriminatorConfig,
)
from modeling_intrada.evaluation.evaluator import main as evaluate_main
from modeling_intrada.method.ranking import load_ranking
from modeling_intrada.publishing.cards import (
    REPO_ID_PLACEHOLDER,
    RunSummary,
    built_dataset_card,
    classifier_card,
    dataset_terms,
    discriminator_card,
    eval_results,
    measured_mean_ious,
    ranking_card,
    read_metrics_file,
    segmenter_card,
    write_run_cards,
)

# A real tiny run of run_intrada.py (`tiny`, from conftest), on one torch thread.
pytestmark = pytest.mark.usefixtures("one_thread")


def _save_and_load(card, path: Path):
    card.save(path)
    return type(card).load(path), metadata_load(path)


@pytest.mark.parametrize("stage", ["inter", "intra"])
def test_segmenter_card_parses_back_with_the_measured_miou(tiny, tmp_path, stage):
    run_dir, _ = tiny
    run = RunSummary.read(run_dir)
    card = segmenter_card(run, stage, "user/intrada-tiny", ranking_repo_id="user/intrada-tiny-ranking")
    loaded, metadata = _save_and_load(card, tmp_path / "README.md")

    measured = json.loads((run_dir / "eval" / "metrics.json").read_text())
    expected = measured["results"][f"G_{stage}"]["scores"]["19"]["mean_iou"]
    index = metadata["model-index"][0]
    assert index["name"] == "intrada-tiny"
    (entry,) = index["results"]
    assert entry["task"]["type"] == "image-segmentation"
    assert entry["dataset"]["split"] == "validation" and entry["dataset"]["config"] == "target_val"
    (metric,) = entry["metrics"]
    assert metric["type"] == "mean_iou" and metric["name"] == "mIoU (19 classes, last snapshot)"
    assert metric["value"] == pytest.approx(100 * expected, abs=0.005)  # percent, 2 decimals
    assert measured_mean_ious(loaded) == {"mIoU (19 classes, last snapshot)": metric["value"]}

    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-segmentation"
    assert metadata["license"] == "apache-2.0"  # the synthetic data is Apache-2.0: so may the weights be
    text = loaded.text
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert yaml.safe_dump(config, sort_keys=False).strip() in text  # the full training configuration
    ranking = json.loads((run_dir / "ranking" / "ranking.json").read_text())
    assert (
        f"images ranked: {ranking['num_images']} ({ranking['num_easy']} easy, {ranking['num_hard']} hard)"
        in text
    )
    assert f"lambda (easy fraction): {ranking['lambda_easy']}" in text
    assert "## Intended use and limitations" in text
    assert "licence `apache-2.0`" in text and "no third-party data" in text  # the dataset card's terms
    assert "@inproceedings{pan2020intrada" in text
    assert 'from_pretrained("user/intrada-tiny", trust_remote_code=True)' in text
    assert f"{100 * expected:.1f}" in text  # the per-class table shows the same mIoU


def test_selection_results_are_named_in_the_model_index(tiny, tmp_path):
    run_dir, _ = tiny
    evaluate_main(
        ["--snapshots_dir", str(run_dir / "intra" / "snapshots"), "--selection", "min_entropy", "best_val",
         "--num_workers", "0", "--num_pictures", "0", "--max_images", "3", "--output_dir", str(tmp_path / "e")]
    )  # fmt: skip
    metrics_file = tmp_path / "e" / "metrics.json"
    run = RunSummary.read(run_dir, metrics_files=[metrics_file])
    loaded, _ = _save_and_load(segmenter_card(run, "intra", "user/m"), tmp_path / "README.md")
    values = measured_mean_ious(loaded)
    evaluated = json.loads(metrics_file.read_text())["results"]
    for key, label in [
        ("last", "last snapshot"),
        ("min_entropy", "snapshot of lowest mean target entropy (label-free selection)"),
        ("best_val", "best snapshot on the validation labels (oracle selection)"),
    ]:
        result = evaluated[key]
        name = f"mIoU (19 classes, {label}, iteration {result['iteration']})"
        assert values[name] == pytest.approx(100 * result["scores"]["19"]["mean_iou"], abs=0.005)
    assert "mIoU (19 classes, last snapshot)" in values  # the run's own evaluation is kept
    # The subset evaluation is a different evaluated set in the index, named with its size.
    datasets = {(e.dataset_name, e.dataset_split) for e in loaded.data.eval_results}
    assert datasets == {
        ("data (target_val/validation)", "validation"),
        ("data (target_val/validation, first 3 images)", "validation[:3]"),
    }
    assert "an upper bound of snapshot selection" in loaded.text


def test_metrics_of_another_run_are_refused(tiny, tmp_path):
    run_dir, _ = tiny
    other = tmp_path / "metrics.json"
    other.write_text(
        json.dumps(
            {
                "dataset": {"name": "d", "split": "validation"},
                "results": {
                    "model": {
                        "model": str(tmp_path / "elsewhere" / "intra" / "model"),
                        "scores": {"19": {"mean_iou": 0.5, "class_names": ["a"], "per_class_iou": [0.5]}},
                    }
                },
            }
        )
    )
    with pytest.raises(ValueError, match="holds no result of a model of the run"):
        RunSummary.read(run_dir, metrics_files=[other])
    (tmp_path / "bad.json").write_text(json.dumps({"x": {"y": 1}}))
    with pytest.raises(ValueError, match=r"expected the evaluator's metrics\.json"):
        read_metrics_file(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        RunSummary.read(tmp_path)


def test_discriminator_card(tiny, tmp_path):
    run_dir, _ = tiny
    run = RunSummary.read(run_dir)
    card = discriminator_card(run, "intra", "main", "user/m")
    loaded, metadata = _save_and_load(card, tmp_path / "README.md")
    assert "discriminator" in metadata["tags"] and metadata["library_name"] == "transformers"
    assert 'subfolder="discriminators/main"' in loaded.text and "0 = source, 1 = target" in loaded.text
    assert "channels 19 -> 64" in loaded.text
    with pytest.raises(ValueError, match="level"):
        discriminator_card(run, "intra", "middle", "user/m")


def test_ranking_card(tiny, tmp_path):
    run_dir, _ = tiny
    run = RunSummary.read(run_dir)
    card = ranking_card(run, "user/m-ranking", model_repo_id="user/m")
    loaded, metadata = _save_and_load(card, tmp_path / "README.md")
    assert isinstance(loaded, DatasetCard)
    assert metadata["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
    ]
    assert metadata["license"] == "apache-2.0" and "entropy-ranking" in metadata["tags"]
    ranking = json.loads((run_dir / "ranking" / "ranking.json").read_text())
    assert f"({ranking['num_easy']} easy, {ranking['num_hard']} hard)" in loaded.text
    assert "[`user/m`](https://huggingface.co/user/m)" in loaded.text
    assert 'load_dataset("user/m-ranking", split="train")' in loaded.text
    assert "@inproceedings{pan2020intrada" in loaded.text


def test_built_dataset_card_and_terms(tiny):
    _, data = tiny
    card = built_dataset_card(data)
    assert card.data.license == "apache-2.0" and card.data.configs
    terms = dataset_terms(str(data))
    assert terms.license == "apache-2.0" and "no third-party data" in terms.terms and terms.hub_id is None


def test_terms_of_an_unreadable_hub_dataset_say_so(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: patch the value
    terms = dataset_terms("someone/not-a-local-folder")
    assert (
        terms.license is None and "https://huggingface.co/datasets/someone/not-a-local-folder" in terms.terms
    )


def test_measured_results_of_the_run(tiny):
    run_dir, _ = tiny
    run = RunSummary.read(run_dir)
    assert {r.stage for r in run.results} == {"inter", "intra"}
    assert all(r.selection == "last" and not math.isnan(r.mean_iou) for r in run.results)
    assert run.latest_stage() == "intra"


def test_run_metrics_with_several_protocols(tmp_path):
    """The eval stage of a SYNTHIA run records "16" and "13": both reach the model index, named apart."""

    def scores(protocol: str, miou: float, names: list[str]) -> dict:
        return {
            "protocol": protocol,
            "mean_iou": miou,
            "class_names": names,
            "per_class_iou": [miou] * len(names),
        }

    sixteen, thirteen = scores("16", 0.41, ["road"] * 16), scores("13", 0.47, ["road"] * 13)
    entry = {
        "title": "G_intra (intra, last snapshot)",
        "model": "/runs/synthia/intra/model",
        "stage": "intra",
        "selection": "last",
        "scores": {"16": sixteen, "13": thirteen},
    }
    path = tmp_path / "metrics.json"
    dataset = {"name": "someone/cityscapes", "config": None, "split": "validation"}
    path.write_text(json.dumps({"dataset": dataset, "results": {"G_intra": entry}}))
    results = read_metrics_file(path)
    assert [(r.stage, r.protocol, r.mean_iou) for r in results] == [
        ("intra", "16", 0.41),
        ("intra", "13", 0.47),
    ]
    index = eval_results(results, {"someone/cityscapes": "someone/cityscapes"})
    assert {(e.metric_name, e.metric_value, e.dataset_type) for e in index} == {
        ("mIoU (16 classes, last snapshot)", 41.0, "someone/cityscapes"),
        ("mIoU (13 classes, last snapshot)", 47.0, "someone/cityscapes"),
    }


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("snapshots", "predictions", "README.md"))
    return copy


def test_write_run_cards_writes_every_artifact_folder(tiny, tmp_path):
    run_dir, _ = tiny
    run_copy = _copy_run(run_dir, tmp_path)
    written = write_run_cards(run_copy)
    folders = [
        f"{stage}/{part}"
        for stage in ("inter", "intra")
        for part in ("model", "discriminators/aux", "discriminators/main")
    ]
    assert sorted(written) == sorted(run_copy / folder / "README.md" for folder in [*folders, "ranking"])

    measured = json.loads((run_copy / "eval" / "metrics.json").read_text())
    for stage in ("inter", "intra"):
        card = ModelCard.load(run_copy / stage / "model" / "README.md")
        (value,) = measured_mean_ious(card).values()
        assert value == pytest.approx(
            100 * measured["results"][f"G_{stage}"]["scores"]["19"]["mean_iou"], abs=0.005
        )
        assert f'from_pretrained("{REPO_ID_PLACEHOLDER}", trust_remote_code=True)' in card.text
        assert card.data.model_name == "run"  # the run folder names the model index until it is published
    discriminator = ModelCard.load(run_copy / "intra" / "discriminators" / "aux" / "README.md")
    assert 'from_pretrained("<this folder>", trust_remote_code=True)' in discriminator.text
    assert "goes to the `discriminators/aux` subfolder" in discriminator.text

    # The ranking folder is a dataset with its card: load_dataset reads its `configs`, stage 3 its splits.
    ranking = DatasetCard.load(run_copy / "ranking" / "README.md")
    assert ranking.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    g_inter = json.loads((run_copy / "ranking" / "ranking.json").read_text())["model"]  # the original run's
    assert f"G_inter (`{g_inter}`)" in ranking.text and "@inproceedings{pan2020intrada" in ranking.text
    assert load_ranking(run_copy / "ranking").lambda_easy == pytest.approx(0.5)

    # With the repository ids (as a push writes them): the named stage's cards name them, the other's do not.
    write_run_cards(run_copy, repo_id="user/m", ranking_repo_id="user/m-ranking")
    intra = (run_copy / "intra" / "model" / "README.md").read_text()
    run = RunSummary.read(run_copy)
    assert intra == str(segmenter_card(run, "intra", "user/m", ranking_repo_id="user/m-ranking")) + "\n"
    assert REPO_ID_PLACEHOLDER in (run_copy / "inter" / "model" / "README.md").read_text()
    assert (
        'subfolder="discriminators/main"'
        in (run_copy / "intra" / "discriminators" / "main" / "README.md").read_text()
    )
    assert 'load_dataset("user/m-ranking", split="train")' in (run_copy / "ranking" / "README.md").read_text()
    assert not list(run_copy.rglob(".README.md.incomplete"))


def _digits_run(tmp_path: Path, metrics: dict) -> Path:
    """A digits run folder: config, a classifier in intra/model, its feature discriminator, digits metrics."""
    run_dir = tmp_path / "digits"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump({"task": "digits", "framework": "feature", "seed": 0})
    )
    DigitClassifier(DigitClassifierConfig(architecture="lenet")).save_pretrained(run_dir / "intra" / "model")
    discriminator = FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=500))
    discriminator.save_pretrained(run_dir / "intra" / "discriminators" / "main")
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_run_cards_of_a_digits_run(tmp_path):
    """The feature-level discriminator gets its card; the classifier's comes from classifier_card."""
    run_dir = _digits_run(tmp_path, {"models": {"IntraDA": {"stage": "intra", "target_accuracy": 97.0}}})
    (written,) = write_run_cards(run_dir)
    assert written == run_dir / "intra" / "discriminators" / "main" / "README.md"
    text = written.read_text()
    assert (
        "fully connected network (500 -> 500 -> 500 -> 1" in text
        and "the classifier's 500-d features" in text
    )
    assert "0 = source, 1 = target** (in stage 3: easy, hard)" in text


@pytest.mark.parametrize(
    ("stage", "framework", "augmentation", "expected"),
    [
        ("intra", "scores", "random affine of the labelled training images: rotation up to 10 degrees",
         ["IntraDA stage 3", "feature-level CyCADA on class scores", "10 class scores, as CyCADA's released ADDA code",
          "- feature-level-cycada", "random affine of the labelled training images"]),
        ("inter", "feature", "none", ["a discriminator on the classifier's 500-d features", "**Training augmentation:** none."]),
        ("source", "source_only", "none", ["no adaptation: no adaptation term", "- source-only"]),
    ],
)  # fmt: skip
def test_classifier_card(tmp_path, stage, framework, augmentation, expected):
    folder = tmp_path / "model"
    DigitClassifier(DigitClassifierConfig(architecture="lenet")).save_pretrained(folder)
    card = classifier_card(
        folder,
        name="IntraDA (G_intra, feature-level CyCADA)",
        stage=stage,
        framework=framework,
        source_dataset="data/mnist",
        target_dataset="data/usps",
        augmentation=augmentation,
        seed=3,
        accuracies={"target: usps (test, 2007 images)": 97.891, "source: mnist (test, 10000 images)": 99.0},
    )
    loaded, metadata = _save_and_load(card, tmp_path / "README.md")
    assert metadata["pipeline_tag"] == "image-classification" and metadata["metrics"] == ["accuracy"]
    text = loaded.text
    assert "# lenet digit classifier, mnist -> usps: IntraDA (G_intra, feature-level CyCADA)" in text
    assert "| target: usps (test, 2007 images) | 97.89 |" in text and "- **Seed:** 3." in text
    assert "input 1x28x28" in text and "@inproceedings{pan2020intrada" in text
    assert all(phrase in str(card) for phrase in expected), str(card)
    with pytest.raises(ValueError, match="framework one of"):
        classifier_card(folder, name="x", stage=stage, framework="cycle", source_dataset="a", target_dataset="b",
                        augmentation="none", seed=0, accuracies={})  # fmt: skip
