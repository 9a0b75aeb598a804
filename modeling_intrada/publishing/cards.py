"""Every card of the package, written with `huggingface_hub` (`ModelCard` / `DatasetCard.from_template` and
their card-data classes) from the templates in `templates/`: the one card writer.

| card | function | template |
|---|---|---|
| G_inter, G_intra (model-index with every mIoU the run measured) | `segmenter_card` | `segmenter.md` |
| a discriminator (entropy-map or feature-level) | `discriminator_card` | `discriminator.md` |
| a digit classifier | `classifier_card` | `classifier.md` |
| the ranking splits (stage 2) | `ranking_card` | `ranking_splits.md` |
| a built dataset | `dataset_card.write_dataset_card` | `dataset.md` |

`write_run_cards(output_dir)` writes the README.md of every model, discriminator and ranking folder of a run
(`RunLayout`), with what the run measured so far (`eval/metrics.json`); `hub.push_run_to_hub` uploads the same
files. Before a push, a card names its repository `REPO_ID_PLACEHOLDER` ("<this folder or repo id>"); the push
rewrites the cards it uploads with the real repository ids, then uploads those files, so the card on disk and
the card on the Hub are the same text.

The model-index of a segmenter carries every mIoU per protocol, named by how the snapshot was chosen (SPEC
section 6: the last snapshot; a label-free rule; the "best snapshot on the validation labels" only under that
name). Results of `training/evaluate_miou.py` join with `RunSummary.read(..., metrics_files=[...])`. The
licence terms of the datasets are quoted from their own cards (`dataset_terms`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import RepoCard
from transformers import AutoImageProcessor

from modeling_intrada import FeatureDiscriminatorConfig
from modeling_intrada.data.dataset_card import REPO_ID_PLACEHOLDER, write_card
from modeling_intrada.data.datasets import LABEL_SPACE_FILE
from modeling_intrada.data.synthetic import SYNTHETIC_DATASET, synthetic_dir_of
from modeling_intrada.errors import MissingInputError
from modeling_intrada.method.adaptation import CLASSIFIER_FRAMEWORKS
from modeling_intrada.method.ranking import DATA_FILES as RANKING_DATA_FILES
from modeling_intrada.method.segmenters import (
    DEEPLABV2,
    has_auxiliary_level,
    normalization_of,
    supported_model_types,
)
from modeling_intrada.run_layout import CARD_FILE, DISCRIMINATORS_DIR, LEVELS, TRAINING_STAGES, RunLayout

STAGES = ("inter", "intra")  # the stages whose G is a segmenter

# ---------------------------------------------------------------------------------------------------------
# What the cards say in the same words
# ---------------------------------------------------------------------------------------------------------

INTRADA_CITATION = """@inproceedings{pan2020intrada,
  title     = {Unsupervised Intra-domain Adaptation for Semantic Segmentation through Self-Supervision},
  author    = {Pan, Fei and Shin, Inkyu and Rameau, Francois and Lee, Seokju and Kweon, In So},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2020}
}"""
ADVENT_CITATION = """@inproceedings{vu2019advent,
  title     = {ADVENT: Adversarial Entropy Minimization for Domain Adaptation in Semantic Segmentation},
  author    = {Vu, Tuan-Hung and Jain, Himalaya and Bucher, Maxime and Cord, Matthieu and P{\\'e}rez, Patrick},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}"""

# How each selection rule is named in the cards (SPEC section 6: the oracle choice only under its name).
SELECTION_NAMES = {
    "last": "last snapshot",
    "given": "model as given",
    "min_entropy": "snapshot of lowest mean target entropy (label-free selection)",
    "best_val": "best snapshot on the validation labels (oracle selection)",
}

SEGMENTER_STAGES = {
    "inter": "stage 1 of IntraDA, inter-domain adaptation (G_inter, source -> target)",
    "intra": "stage 3 of IntraDA, intra-domain adaptation (G_intra, easy target -> hard target)",
}
SEGMENTER_FRAMEWORKS = {
    "advent": "AdvEnt (a discriminator on the weighted self-information maps)",
    "adaptsegnet": "AdaptSegNet (a discriminator on the softmax maps)",
    "minent": "MinEnt (entropy minimisation, no discriminator)",
    "source_only": "supervised training only (no adversarial term)",
}
SEGMENTER_INTENDED_USE = """Research on unsupervised domain adaptation for semantic segmentation: reproducing and comparing
IntraDA (and AdvEnt, its first stage), and a starting point for adapting to similar street-scene domains. The model
labels every pixel with one of its classes and nothing else; it was adapted to the target domain of its run and
its accuracy elsewhere is unknown (the table above is the only measurement). It is not fit for safety-relevant
use such as driving decisions. The scores come from validation labels that were never used for training; how
the reported snapshot was chosen is stated next to each number."""

# The digits experiments (paper section 4.3): each framework's name and what its discriminator sees.
CLASSIFIER_FRAMEWORK_NAMES = {
    "feature": "feature-level CyCADA",
    "scores": "feature-level CyCADA on class scores",
    "advent": "AdvEnt on class scores",
    "adaptsegnet": "softmax alignment",
    "minent": "MinEnt",
    "source_only": "no adaptation",
}
CLASSIFIER_FRAMEWORK_DETAILS = {
    "feature": "a discriminator on the classifier's {feature_size}-d features (ADDA-like); CyCADA's "
    "pixel-level (CycleGAN) part is not implemented",
    "scores": "a discriminator on the classifier's {num_labels} class scores, as CyCADA's released ADDA "
    "code; CyCADA's pixel-level (CycleGAN) part is not implemented",
    "advent": "a discriminator on the weighted self-information of the class scores",
    "adaptsegnet": "a discriminator on the softmax of the class scores",
    "minent": "entropy minimisation on the target, no discriminator",
    "source_only": "no adaptation term",
}
CLASSIFIER_STAGES = {
    "source": "trained on the labelled source only (the baseline, and the start of stage 1)",
    "inter": "IntraDA stage 1 (G_inter): source vs target, {framework}",
    "intra": "IntraDA stage 3 (G_intra): easy target images with G_inter's pseudo labels vs hard ones, {framework}",
}
# What a feature-level discriminator reads, by framework (n: its input size).
FEATURE_DISCRIMINATOR_INPUTS = {
    "feature": "the classifier's {n}-d features",
    "scores": "the classifier's {n} class scores",
    "advent": "the weighted self-information of the {n} class scores",
    "adaptsegnet": "the softmax of the {n} class scores",
}


# ---------------------------------------------------------------------------------------------------------
# What the run measured
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredResult:
    """One mIoU measurement of one model under one protocol.

    Attributes:
        title: how the row is named in the file it comes from.
        model: the evaluated folder or Hub id.
        stage: "inter" or "intra" when the model is a stage's generator of the run, else None.
        selection: "last", "given", "min_entropy" or "best_val" (how the snapshot was chosen).
        iteration: the snapshot's iteration, when known.
        protocol: the protocol's name ("19", "16", "13", "all 11", ...).
        mean_iou: the mIoU as a fraction (NaN when no class is defined).
        class_names, per_class_iou: the protocol's classes and their IoUs (None where undefined).
        dataset, dataset_config, dataset_split: the labelled split it was measured on.
        num_images: how many images were evaluated, when known.
        first_images: N when only the first N images of the split were evaluated, else None.
        source: the metrics file it was read from.
        labelled_classes: the classes the evaluated dataset labels when it labels only some of the
            protocol's (the synthetic pair's 9), else None; the card's table shows those.
    """

    title: str
    model: str
    stage: str | None
    selection: str
    iteration: int | None
    protocol: str
    mean_iou: float
    class_names: tuple[str, ...]
    per_class_iou: tuple[float | None, ...]
    dataset: str
    dataset_config: str | None
    dataset_split: str
    num_images: int | None
    first_images: int | None
    source: str
    labelled_classes: tuple[str, ...] | None = None

    @property
    def selected_with_validation_labels(self) -> bool:
        return self.selection == "best_val"


def template_path(name: str) -> Path:
    """A card template of the package (`templates/<name>`), shipped inside the wheel."""
    return Path(__file__).resolve().parent / "templates" / name


def _stage_of(model: str) -> str | None:
    """The run stage a model folder belongs to (`<run>/intra/model`, `<run>/inter/snapshots/...`)."""
    parts = Path(model).parts
    for part in reversed(parts[:-1]):
        if part in STAGES:
            return part
    return None


def _shown_path(path: Path, output_dir: str | Path | None) -> str:
    """`path` relative to the run folder when it lies inside it, else its name."""
    if output_dir:
        try:
            return str(path.resolve().relative_to(Path(output_dir).resolve()))
        except ValueError:
            pass
    return path.name


def _inside(model: str, output_dir: Path) -> bool:
    try:
        Path(model).resolve().relative_to(output_dir.resolve())
    except ValueError:
        return False
    return _stage_of(model) is not None


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def read_metrics_file(path: str | Path, run_dir: str | Path | None = None) -> list[MeasuredResult]:
    """The results of a metrics.json written by the evaluator (the run's `eval/metrics.json` or an
    `evaluate_miou.py` output: the same schema).

    Args:
        path: the file.
        run_dir: the run folder, to show the file's path relative to it.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not the evaluator's format.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"metrics file {path} does not exist")
    data = json.loads(path.read_text())
    if not (
        isinstance(data, dict)
        and isinstance(data.get("results"), dict)
        and isinstance(data.get("dataset"), dict)
    ):
        raise ValueError(
            f"{path}: expected the evaluator's metrics.json (keys 'dataset' and 'results'); write it with "
            "run_intrada.py --stage eval or evaluate_miou.py"
        )
    source, dataset = _shown_path(path, run_dir), data["dataset"]
    return [
        MeasuredResult(
            title=entry.get("title", key),
            model=str(entry["model"]),
            stage=entry.get("stage") or _stage_of(str(entry["model"])),
            selection=entry.get("selection", key),
            iteration=entry.get("iteration"),
            protocol=str(protocol),
            mean_iou=_float(scores["mean_iou"]),
            class_names=tuple(scores["class_names"]),
            per_class_iou=tuple(scores["per_class_iou"]),
            dataset=str(dataset["name"]),
            dataset_config=dataset.get("config"),
            dataset_split=str(dataset["split"]),
            num_images=dataset.get("num_images"),
            first_images=dataset.get("max_images"),
            source=source,
            labelled_classes=(
                tuple(dataset["dataset_classes_labelled"])
                if dataset.get("dataset_classes_labelled")
                else None
            ),
        )
        for key, entry in data["results"].items()
        for protocol, scores in entry["scores"].items()
    ]


@dataclass
class RunSummary:
    """What a run folder says about itself: configuration, ranking statistics, measured results."""

    output_dir: Path
    config: dict
    ranking: dict | None = None
    results: list[MeasuredResult] = field(default_factory=list)

    @classmethod
    def read(
        cls, output_dir: str | Path, metrics_files: Iterable[str | Path] = (), *, with_results: bool = True
    ) -> RunSummary:
        """Read `config.yaml`, `ranking/ranking.json` (if present) and, with `with_results`, the mIoU of
        `eval/metrics.json` (if present) and of the extra `metrics_files` (e.g. `evaluate_miou.py` outputs).

        Raises:
            FileNotFoundError: if `output_dir` has no `config.yaml` (it is not a run folder).
        """
        layout = RunLayout(output_dir)
        output_dir = layout.output_dir
        if not layout.config_file.is_file():
            raise MissingInputError(
                f"{output_dir} is not a run folder of training/run_intrada.py: {layout.config_file} is missing"
            )
        config = yaml.safe_load(layout.config_file.read_text()) or {}
        ranking = json.loads(layout.ranking_summary.read_text()) if layout.ranking_summary.is_file() else None
        results = []
        if with_results and layout.metrics_file.is_file():
            results += read_metrics_file(layout.metrics_file, output_dir)
        for path in metrics_files if with_results else ():
            # Only results on this run's generators count (a stage is read from the model's path).
            own = [r for r in read_metrics_file(path, output_dir) if _inside(r.model, output_dir)]
            if not own:
                raise ValueError(
                    f"{path} holds no result of a model of the run {output_dir} (models under "
                    f"{output_dir}/inter or {output_dir}/intra)"
                )
            results += own
        return cls(output_dir, config, ranking, results)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.output_dir)

    def model_dir(self, stage: str) -> Path:
        """The folder of a stage's final generator.

        Raises:
            ValueError: for an unknown stage; FileNotFoundError: if the stage did not save its model.
        """
        if stage not in TRAINING_STAGES:
            raise ValueError(f"stage must be one of {TRAINING_STAGES}, got {stage!r}")
        if not self.layout.has_model(stage):
            raise MissingInputError(
                f"{self.layout.model_dir(stage)} holds no model (config.json): did stage {stage!r} of the "
                "run finish?"
            )
        return self.layout.model_dir(stage)

    def latest_stage(self) -> str:
        """ "intra" when G_intra was saved, else "inter"."""
        for stage in reversed(STAGES):
            if self.layout.has_model(stage):
                return stage
        raise MissingInputError(f"{self.output_dir} holds neither inter/model nor intra/model")

    def results_for(self, stage: str) -> list[MeasuredResult]:
        """The results measured on a stage's generator (its final model or its snapshots)."""
        return [r for r in self.results if r.stage == stage]


# ---------------------------------------------------------------------------------------------------------
# Datasets and their terms
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetTerms:
    """What a card says about a dataset: its name, Hub id (when it is one), licence and terms."""

    name: str
    hub_id: str | None
    license: str | None
    terms: str


def built_dataset_card(folder: str | Path) -> DatasetCard:
    """The card of a built dataset (`README.md`, written by `data.write_dataset_card`), read with `huggingface_hub`.

    Raises:
        FileNotFoundError: if the folder has no README.md.
        ValueError: if its YAML header lacks the licence or the configurations.
    """
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise MissingInputError(f"{path} is missing: was {folder} written by dataset_scripts/?")
    card = DatasetCard.load(path)
    missing = [key for key in ("license", "configs") if not card.data.get(key)]
    if missing:
        raise ValueError(f"{path}: the card's YAML header has no {missing}")
    return card


def _section(text: str, heading: str) -> str | None:
    """The text of a `## heading` section of a markdown document, or None."""
    match = re.search(rf"^## {re.escape(heading)}\s*\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    return match.group(1).strip() if match else None


def _local_dataset_folder(name: str, config: Mapping[str, Any]) -> Path | None:
    if name == SYNTHETIC_DATASET:
        return synthetic_dir_of(config)
    path = Path(name).expanduser()
    return path if path.exists() or name.startswith((".", "/", "~")) else None


def dataset_terms(name: str, config: Mapping[str, Any] | None = None) -> DatasetTerms:
    """The licence terms of a dataset the run used, from its card.

    A local folder's card is read from disk; a Hub id's with `hf_hub_download`. When a card cannot be
    read, the terms say so and where to look (a card never claims terms it did not read).
    """
    config = config or {}
    folder = _local_dataset_folder(name, config)
    if folder is None:
        try:
            from huggingface_hub import hf_hub_download

            text = Path(hf_hub_download(name, CARD_FILE, repo_type="dataset")).read_text()
            card = DatasetCard(text)
        except Exception as error:  # offline, private or missing: the card says what to check instead
            return DatasetTerms(
                name,
                name,
                None,
                f"Not read when this card was written ({type(error).__name__}): see the card "
                f"of https://huggingface.co/datasets/{name}.",
            )
        return DatasetTerms(
            str(card.data.get("pretty_name") or name),
            name,
            card.data.get("license"),
            _section(card.text, "Licence of the source data") or "See the dataset's card.",
        )
    try:
        card = built_dataset_card(folder)
    except (FileNotFoundError, ValueError) as error:
        return DatasetTerms(
            name, None, None, f"Not read when this card was written: {str(error).rstrip('.?')}."
        )
    return DatasetTerms(
        str(card.data.get("pretty_name") or name),
        None,
        card.data.get("license"),
        _section(card.text, "Licence of the source data") or "The dataset's card states no terms.",
    )


def _split_description(name: str, config: str | None, split: str | None) -> str:
    shown = Path(name).name if Path(name).is_absolute() else name
    return f"`{shown}` ({config or 'default'}/{split or 'train'})"


def _run_datasets(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, dataset name) of the run's datasets, each name once."""
    roles = [
        ("source (labelled)", config.get("source_dataset")),
        ("target (unlabelled training images)", config.get("target_dataset")),
        ("validation (target, labelled)", config.get("val_dataset")),
    ]
    merged: dict[str, list[str]] = {}
    for role, name in roles:
        if name:
            merged.setdefault(str(name), []).append(role)
    return [(", ".join(role), name) for name, role in merged.items()]


def _datasets_section(config: Mapping[str, Any], terms: Mapping[str, DatasetTerms]) -> str:
    lines = []
    for role, name in _run_datasets(config):
        t = terms[name]
        licence = f"licence `{t.license}`" if t.license else "licence not stated"
        lines += [f"- **{t.name}** (`{name}`; {role}), {licence}. {t.terms}"]
    return "\n".join(lines) if lines else "The run's configuration names no dataset."


def _model_license(terms: Iterable[DatasetTerms]) -> str:
    """apache-2.0 (the code's) when every training dataset is under it, else "other" (stated in the card)."""
    licences = {t.license for t in terms}
    return "apache-2.0" if licences == {"apache-2.0"} else "other"


# ---------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"
    )


def _evaluation_set(r: MeasuredResult) -> str:
    """How the evaluated split is named: dataset (config/split), and "first N images" for a subset."""
    subset = f", first {r.first_images} images" if r.first_images else ""
    return f"{Path(r.dataset).name} ({r.dataset_config or 'default'}/{r.dataset_split}{subset})"


def _result_name(r: MeasuredResult) -> str:
    name = SELECTION_NAMES.get(r.selection, r.selection)
    return name + (f", iteration {r.iteration}" if r.iteration is not None else "")


def results_section(results: Sequence[MeasuredResult]) -> str:
    """Markdown: one table per protocol and evaluated split (classes as columns, mIoU last), every row
    named by how its snapshot was selected."""
    if not results:
        return (
            "No evaluation was recorded for this model in the run (no `eval/metrics.json` entry): the model "
            "index carries no result."
        )
    lines = []
    groups = dict.fromkeys((r.protocol, _evaluation_set(r)) for r in results)
    for protocol, evaluation_set in groups:
        rows = [r for r in results if (r.protocol, _evaluation_set(r)) == (protocol, evaluation_set)]
        first = rows[0]
        count = f", {first.num_images} images" if first.num_images else ""
        lines += [
            f"Protocol **{protocol}**, on `{evaluation_set}`{count}, predictions at the full label resolution:",
            "",
        ]
        shown = [
            c for c in first.class_names if first.labelled_classes is None or c in first.labelled_classes
        ]
        own = [] if len(shown) == len(first.class_names) else [f"mIoU ({len(shown)} classes)"]
        if own:
            lines += [
                f"Columns: the {len(shown)} classes the dataset labels; mIoU ({protocol}) averages the "
                f"protocol's {len(first.class_names)} classes (a class never labelled counts 0 when predicted).",
                "",
            ]
        lines += ["| | " + " | ".join([*shown, *own]) + f" | mIoU ({protocol}) |"]
        lines += ["|:---|" + "---:|" * (len(shown) + len(own) + 1)]
        for r in rows:
            ious = dict(zip(r.class_names, r.per_class_iou, strict=True))
            cells = [_percent(ious[c]) for c in shown]
            if own:
                defined = [ious[c] for c in shown if ious[c] is not None and not math.isnan(ious[c])]
                cells.append(_percent(sum(defined) / len(defined) if defined else None))
            cells.append(f"**{_percent(r.mean_iou)}**")
            lines.append(f"| {_result_name(r)} | " + " | ".join(cells) + " |")
        lines.append("")
    if any(r.selected_with_validation_labels for r in results):
        lines += [
            "The *best snapshot on the validation labels* is chosen with the labels it is scored on (as the "
            "reference code does): an upper bound of snapshot selection, not a result an unsupervised method "
            "can claim. The last snapshot is the result of this model.",
            "",
        ]
    sources = ", ".join(f"`{s}`" for s in dict.fromkeys(r.source for r in results))
    lines.append(
        f"IoU in percent; n/a: a class absent from both the labels and the predictions. From {sources}."
    )
    return "\n".join(lines)


def eval_results(
    results: Sequence[MeasuredResult], dataset_hub_ids: Mapping[str, str | None]
) -> list[EvalResult]:
    """The `model-index` entries: one mIoU (in percent, 2 decimals) per result and protocol.

    Results with an undefined mIoU (NaN) are left out of the index (the results table shows them).
    """
    entries = []
    for r in results:
        if math.isnan(r.mean_iou):
            continue
        hub_id = dataset_hub_ids.get(r.dataset)
        dataset_type = hub_id or Path(r.dataset).name
        entries.append(
            EvalResult(
                task_type="image-segmentation",
                task_name="Semantic Segmentation",
                dataset_type=dataset_type,
                dataset_name=_evaluation_set(r)
                if hub_id is None
                else f"{hub_id} " + _evaluation_set(r).split(" ", 1)[1],
                dataset_config=r.dataset_config,
                # The `datasets` slice notation keeps a subset apart from the full split in the model index.
                dataset_split=f"{r.dataset_split}[:{r.first_images}]" if r.first_images else r.dataset_split,
                metric_type="mean_iou",
                metric_name=f"mIoU ({r.protocol} classes, {_result_name(r)})",
                metric_value=round(100 * r.mean_iou, 2),
                metric_config=r.protocol,
                verified=False,
            )
        )
    return entries


def ranking_section(ranking: Mapping[str, Any] | None, ranking_repo_id: str | None = None) -> str:
    """Markdown: lambda, normalisation, easy/hard counts, score range and histogram of stage 2."""
    if ranking is None:
        return "The run folder holds no ranking (`ranking/ranking.json`): stage 2 was not run in it."
    normalisation = (
        f"on (rare train ids {ranking.get('rare_train_ids')}): score = R * ((K - n_rare) / K + 0.5)"
        if ranking.get("normalize")
        else "off: score = R"
    )
    lines = [
        f"- images ranked: {ranking['num_images']} ({ranking['num_easy']} easy, {ranking['num_hard']} hard)",
        f"- lambda (easy fraction): {ranking['lambda_easy']}",
        f"- entropy normalisation: {normalisation}",
        f"- score range: {ranking['score_min']:.6f} - {ranking['score_max']:.6f}"
        + (
            f"; the hardest easy image scores {ranking['easy_max_score']:.6f}"
            if ranking.get("easy_max_score") is not None
            else ""
        ),
    ]
    if ranking.get("mean_condition"):
        condition = ", ".join(f"{k} {v:.3f}" for k, v in ranking["mean_condition"].items())
        lines.append(f"- mean degradation level of the target images (synthetic data): {condition}")
    if ranking_repo_id:
        lines.append(
            f"- the splits and pseudo labels: [`{ranking_repo_id}`](https://huggingface.co/datasets/{ranking_repo_id})"
        )
    lines += ["", "| score | images |", "|---|---:|"]
    lines += [f"| {low:.4f} - {high:.4f} | {count} |" for low, high, count in ranking.get("histogram", [])]
    return "\n".join(lines)


def _framework(config: Mapping[str, Any], stage: str) -> str:
    """The framework key of a stage (stage 3 may have its own)."""
    return str(
        (config.get("intra_framework") if stage == "intra" else None) or config.get("framework", "advent")
    )


def training_section(config: Mapping[str, Any], stage: str, multi_level: bool = True) -> str:
    """Markdown: what the stage trained on and with which numbers (the full config follows in the card);
    `multi_level`: whether G had the auxiliary level."""
    c = config
    if stage == "inter":
        data = (
            f"labelled source {_split_description(c.get('source_dataset', '?'), c.get('source_config'), c.get('source_split'))} "
            f"at {c.get('source_size')} against the unlabelled target "
            f"{_split_description(c.get('target_dataset', '?'), c.get('target_config'), c.get('target_split'))} "
            f"at {c.get('target_size')} (height, width)"
        )
        iterations = c.get("num_iterations")
    else:
        data = (
            "the easy target images with G_inter's pseudo labels as the source against the hard target images "
            f"(ranking of {_split_description(c.get('target_dataset', '?'), c.get('target_config'), c.get('target_split'))}, "
            f"lambda {c.get('lambda_easy')}), initialised from "
            + ("G_inter" if c.get("intra_init") == "inter" else "the backbone's initial weights")
        )
        iterations = c.get("intra_num_iterations") or c.get("num_iterations")
    optimiser = (
        f"{str(c.get('generator_optimizer', 'sgd')).upper()} lr {c.get('learning_rate')} (heads x{c.get('head_lr_multiplier')}), "
        f"momentum {c.get('momentum')}, weight decay {c.get('weight_decay')}, poly schedule power {c.get('lr_power')} "
        f"over {c.get('max_iters')} iterations; discriminators Adam lr {c.get('disc_learning_rate')}, betas {c.get('disc_betas')}"
    )
    return "\n".join(
        [
            f"- **Stage:** {SEGMENTER_STAGES[stage]}, with "
            f"{SEGMENTER_FRAMEWORKS.get(_framework(c, stage), _framework(c, stage))}.",
            f"- **Data:** {data}.",
            f"- **Iterations:** {iterations} optimizer steps of batch {c.get('batch_size')} per domain per process "
            f"(gradient accumulation {c.get('gradient_accumulation_steps')}), seed {c.get('seed')}, "
            f"mixed precision {c.get('mixed_precision')}.",
            f"- **Optimisation:** {optimiser}.",
            f"- **Loss weights:** {_loss_weights(c, multi_level)}.",
            f"- **Initialisation of G:** {_initialisation(c, stage)}.",
        ]
    )


def _loss_weights(c: Mapping[str, Any], multi_level: bool) -> str:
    if not multi_level:
        return f"segmentation 1.0, adversarial {c.get('adv_main_weight')} (one output level)"
    return (
        f"segmentation aux {c.get('seg_aux_weight')} + main 1.0; adversarial aux {c.get('adv_aux_weight')}, "
        f"main {c.get('adv_main_weight')}"
    )


def _initialisation(c: Mapping[str, Any], stage: str) -> str:
    if stage == "intra" and c.get("intra_init") == "inter":
        return f"G_inter, `{c['inter_model']}`" if c.get("inter_model") else "G_inter of this run"
    if c.get("generator"):
        return f"the trained segmenter `{c['generator']}`"
    if c.get("generator_config"):
        return f"random, a new model of the configuration `{c['generator_config']}`"
    return (
        f"backbone from {c['backbone_weights']}"
        if c.get("backbone_weights")
        else "random (no ImageNet weights)"
    )


def _hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub id (user/name, not a local path), else None."""
    if (
        not name
        or name == SYNTHETIC_DATASET
        or Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
    ):
        return None
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None


# ---------------------------------------------------------------------------------------------------------
# Cards
# ---------------------------------------------------------------------------------------------------------


def _label_space_name(target: str, config: Mapping[str, Any]) -> str:
    """The name of the target dataset's label space, read from its folder; a description when it is not local."""
    folder = _local_dataset_folder(target, config)
    if folder is not None and (folder / LABEL_SPACE_FILE).is_file():
        return str(json.loads((folder / LABEL_SPACE_FILE).read_text()).get("name", target))
    return f"{target} (target dataset)"


def _model_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _processor_config(folder: Path) -> dict:
    path = folder / "preprocessor_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _run_license(run: RunSummary) -> str:
    return _model_license(dataset_terms(name, run.config) for _, name in _run_datasets(run.config))


def segmenter_card(
    run: RunSummary,
    stage: str,
    repo_id: str | None = None,
    *,
    ranking_repo_id: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The card of G_inter or G_intra, with the run's measured mIoU in its `model-index`.

    Args:
        run: the run folder's content (`RunSummary.read`).
        stage: "inter" or "intra".
        repo_id: the model repository the card is for (shown in the code examples); None before it is
            published (`REPO_ID_PLACEHOLDER`, and the model index is named after the run folder).
        ranking_repo_id: the ranking-splits dataset repository, when published.
        license: the weights' licence identifier; default apache-2.0 when every dataset of the run is
            under it, else "other" (the card lists the datasets' terms).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    folder = run.model_dir(stage)
    model_config, processor = _model_config(folder), _processor_config(folder)
    model_type = str(model_config.get("model_type"))
    remote_code = model_type == DEEPLABV2
    if remote_code:
        architecture = (
            f"DeepLab-v2 (`{model_config.get('backbone', '?')}` backbone, ASPP heads"
            f"{', multi-level' if model_config.get('multi_level', True) else ''})"
        )
        normalization = processor.get("normalization", "?")
    else:
        architecture = (
            f"`{(model_config.get('architectures') or [model_type])[0]}` (transformers' `{model_type}`)"
        )
        normalization = normalization_of(AutoImageProcessor.from_pretrained(folder), str(folder))
    names = [name for _, name in _run_datasets(run.config)]
    terms = {name: dataset_terms(name, run.config) for name in names}
    results = run.results_for(stage)
    hub_ids = {name: _hub_id(name) for name in names}
    dataset_ids = [i for i in [*hub_ids.values(), ranking_repo_id if stage == "intra" else None] if i]
    space = run.config.get("label_space") or _label_space_name(
        str(run.config.get("target_dataset", "")), run.config
    )
    model_name = repo_id.split("/")[-1] if repo_id else run.output_dir.resolve().name
    card_data = ModelCardData(
        model_name=model_name,
        license=license or _model_license(terms.values()),
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=["intrada", "domain-adaptation", "semantic-segmentation", model_type, f"g_{stage}"],
        datasets=list(dict.fromkeys(dataset_ids)) or None,
        metrics=["mean_iou"],
        eval_results=eval_results(results, hub_ids) or None,
    )
    size = processor.get("size", {})
    ranking = ranking_section(run.ranking, ranking_repo_id)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("segmenter.md")),
        title=f"{model_name}: IntraDA G_{stage}",
        stage=stage,
        stage_description=SEGMENTER_STAGES[stage],
        architecture=architecture,
        remote_code=remote_code,
        model_class=(model_config.get("architectures") or [model_type])[0],
        num_labels=len(model_config.get("id2label", {})),
        label_space=space,
        input_height=size.get("height", "?"),
        input_width=size.get("width", "?"),
        normalization=normalization,
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        results_section=results_section(results),
        training_section=training_section(
            run.config,
            stage,
            bool(run.config.get("multi_level", True)) and has_auxiliary_level(model_config),
        ),
        ranking_section=ranking
        if stage == "intra"
        else "G_inter ranked the target images for stage 3:\n\n" + ranking,
        config_yaml=yaml.safe_dump(run.config, sort_keys=False).strip(),
        intended_use=SEGMENTER_INTENDED_USE,
        datasets_section=_datasets_section(run.config, terms),
        citation=INTRADA_CITATION + "\n\n" + ADVENT_CITATION,
    )


def discriminator_card(run: RunSummary, stage: str, level: str, repo_id: str | None = None) -> ModelCard:
    """The card of one discriminator (`<stage>/discriminators/<level>`): an entropy-map discriminator of a
    segmenter, or a feature-level one of a digit classifier. Published with its generator, it lies in the
    `discriminators/<level>` subfolder of the model repository `repo_id` (None before it is published).

    Raises:
        ValueError: for an unknown stage or level; FileNotFoundError: if the discriminator was not saved.
    """
    if stage not in TRAINING_STAGES or level not in LEVELS:
        raise ValueError(
            f"stage must be one of {TRAINING_STAGES} and level one of {LEVELS}, got {stage!r}, {level!r}"
        )
    folder = run.layout.discriminator_dir(stage, level)
    if not (folder / "config.json").is_file():
        raise MissingInputError(f"{folder} holds no discriminator (config.json)")
    config = _model_config(folder)
    framework = _framework(run.config, stage)
    feature_level = config.get("model_type") == FeatureDiscriminatorConfig.model_type
    if feature_level:
        inputs = FEATURE_DISCRIMINATOR_INPUTS.get(framework, "the classifier's output ({n} values)")
        input_description = inputs.format(n=config.get("input_size"))
    else:
        input_description = "softmax" if framework == "adaptsegnet" else "weighted self-information"
    card_data = ModelCardData(
        license=_run_license(run),
        library_name="transformers",
        tags=["intrada", "domain-adaptation", "discriminator", f"g_{stage}", f"level_{level}"],
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("discriminator.md")),
        title=f"IntraDA discriminator ({stage}, {level} level)",
        level=level,
        stage=stage,
        stage_description=SEGMENTER_STAGES.get(stage, stage),
        feature_level=feature_level,
        config=config,
        input_description=input_description,
        repo_id=repo_id,
        subfolder=f"{DISCRIMINATORS_DIR}/{level}",
        citation=INTRADA_CITATION if feature_level else INTRADA_CITATION + "\n\n" + ADVENT_CITATION,
    )


def classifier_card(
    model_dir: str | Path,
    *,
    name: str,
    stage: str,
    framework: str,
    source_dataset: str,
    target_dataset: str,
    augmentation: str,
    seed: int,
    accuracies: Mapping[str, float],
    repo_id: str | None = None,
) -> ModelCard:
    """The card of a digit classifier of the digits experiments (paper section 4.3).

    Args:
        model_dir: the saved classifier; its `config.json` gives the architecture and input.
        name: the model's name in the results ("source only", "IntraDA (G_intra, feature-level CyCADA)").
        stage: "source", "inter" or "intra".
        framework: the stage's framework ("feature", "scores", "advent", "adaptsegnet", "minent",
            "source_only").
        source_dataset, target_dataset: the datasets (folders or Hub ids; the card shows their names).
        augmentation: the stage's training augmentation in words ("none" without).
        seed: the run's seed.
        accuracies: test set -> top-1 accuracy in percent, e.g. {"target: usps (test, 2007 images)": 97.9}.
        repo_id: the model repository, when published.

    Raises:
        ValueError: for an unknown stage or framework.
    """
    if stage not in CLASSIFIER_STAGES or framework not in CLASSIFIER_FRAMEWORK_NAMES:
        raise ValueError(
            f"stage must be one of {list(CLASSIFIER_STAGES)} and framework one of "
            f"{list(CLASSIFIER_FRAMEWORK_NAMES)}, got {stage!r}, {framework!r}"
        )
    config = _model_config(Path(model_dir))
    framework_name = CLASSIFIER_FRAMEWORK_NAMES[framework]
    tag = "feature-level-cycada" if framework in CLASSIFIER_FRAMEWORKS else framework.replace("_", "-")
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["intrada", "domain-adaptation", "digits", tag],
        metrics=["accuracy"],
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path("classifier.md")),
        title=f"{config['architecture']} digit classifier, {Path(source_dataset).name} -> "
        f"{Path(target_dataset).name}: {name}",
        stage_description=CLASSIFIER_STAGES[stage].format(framework=framework_name),
        framework=framework_name,
        framework_details=CLASSIFIER_FRAMEWORK_DETAILS[framework].format(
            feature_size=config.get("feature_size"), num_labels=len(config.get("id2label", {}))
        ),
        config=config,
        augmentation=augmentation,
        seed=seed,
        accuracies=accuracies,
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        citation=INTRADA_CITATION,
    )


def ranking_card(
    run: RunSummary, repo_id: str | None = None, *, model_repo_id: str | None = None
) -> DatasetCard:
    """The card of the ranking splits (`ranking/`: Parquet in `data/`, `ranking.json`, `ranking.png`), a
    dataset repository `repo_id` once published (None before), beside the model repository `model_repo_id`.

    Raises:
        FileNotFoundError: if the run has no ranking (`ranking/ranking.json` and `ranking/data/*.parquet`).
    """
    layout = run.layout
    data_files = sorted(layout.ranking_dir.glob(RANKING_DATA_FILES))
    if run.ranking is None or not data_files:
        raise MissingInputError(
            f"{layout.ranking_dir} is not a ranking-splits folder (ranking.json and {RANKING_DATA_FILES}): "
            "stage 2 was not run"
        )
    schema = pq.read_schema(data_files[0])
    segmentation = not pa.types.is_integer(schema.field("pseudo_label").type)  # PNG maps, or classes
    target = str(run.config.get("target_dataset", "?"))
    terms = dataset_terms(target, run.config)
    target_id = _hub_id(target)
    g_inter = str(run.ranking.get("model") or "")  # a folder, shown inside the run when it is, or a Hub id
    if g_inter and _inside(g_inter, run.output_dir):
        g_inter = _shown_path(Path(g_inter), run.output_dir)
    card_data = DatasetCardData(
        pretty_name=f"IntraDA ranking splits of {terms.name}",
        license=terms.license or "other",
        task_categories=["image-segmentation" if segmentation else "image-classification"],
        tags=["intrada", "domain-adaptation", "entropy-ranking", "pseudo-labels"],
        source_datasets=[target_id] if target_id else None,
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": RANKING_DATA_FILES}]}],
    )
    licence = f"licence `{terms.license}`" if terms.license else "licence not stated"
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path("ranking_splits.md")),
        title=f"IntraDA ranking splits of {terms.name}",
        target_description=_split_description(
            target, run.config.get("target_config"), run.config.get("target_split")
        ),
        g_inter=g_inter,
        model_repo_id=model_repo_id,
        statistics_section=ranking_section(run.ranking),
        segmentation=segmentation,
        label_description="the argmax map of G_inter (uint8 train ids, PNG)"
        if segmentation
        else "the argmax class of G_inter",
        with_entropy_maps="entropy_map" in schema.names,
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        licence_section=f"- **{terms.name}** (`{target}`), {licence}. {terms.terms}",
        citation=INTRADA_CITATION,
    )


def measured_mean_ious(card: ModelCard | str | Path) -> dict[str, float]:
    """metric name -> value of a model card's `model-index` (read back with `huggingface_hub`)."""
    if not isinstance(card, ModelCard):
        card = ModelCard.load(card)
    return {r.metric_name: float(r.metric_value) for r in (card.data.eval_results or [])}


# ---------------------------------------------------------------------------------------------------------
# The cards of a run folder
# ---------------------------------------------------------------------------------------------------------


def _model_type(layout: RunLayout, stage: str) -> str | None:
    return _model_config(layout.model_dir(stage)).get("model_type") if layout.has_model(stage) else None


def run_cards(
    run: RunSummary,
    *,
    repo_id: str | None = None,
    stage: str | None = None,
    ranking_repo_id: str | None = None,
) -> dict[Path, RepoCard]:
    """The card of every artifact folder of a run, keyed by the README.md it belongs in: the segmenters
    (`<stage>/model`), every discriminator (`<stage>/discriminators/<level>`) and the ranking splits.

    A digit classifier's folder is left out: its card states the task's facts (framework, augmentation,
    accuracies), which the pipeline gives to `classifier_card`.

    Args:
        run: the run folder's content (`RunSummary.read`, with the results the cards should carry).
        repo_id: the model repository of `stage`'s G and its discriminators (the other stages' cards keep
            `REPO_ID_PLACEHOLDER`).
        stage: the stage `repo_id` holds (default: the latest segmenter stage of the run).
        ranking_repo_id: the dataset repository of the ranking splits.
    """
    layout = run.layout
    if repo_id and stage is None:
        stage = run.latest_stage()
    cards: dict[Path, RepoCard] = {}
    for s in TRAINING_STAGES:
        named = repo_id if s == stage else None
        if _model_type(layout, s) in supported_model_types():
            card = segmenter_card(run, s, named, ranking_repo_id=ranking_repo_id)
            cards[layout.model_dir(s) / CARD_FILE] = card
        for level in LEVELS:
            if (layout.discriminator_dir(s, level) / "config.json").is_file():
                card = discriminator_card(run, s, level, named)
                cards[layout.discriminator_dir(s, level) / CARD_FILE] = card
    if run.ranking is not None:
        card = ranking_card(run, ranking_repo_id, model_repo_id=repo_id)
        cards[layout.ranking_dir / CARD_FILE] = card
    return cards


def write_run_cards(
    output_dir: str | Path,
    *,
    repo_id: str | None = None,
    stage: str | None = None,
    ranking_repo_id: str | None = None,
    metrics_files: Iterable[str | Path] = (),
) -> list[Path]:
    """Write the README.md of every model, discriminator and ranking folder of a run (`run_cards`), with the
    mIoU measured so far (`eval/metrics.json` and `metrics_files`); returns the files written.

    Before a push the cards name their repository `REPO_ID_PLACEHOLDER`; `hub.push_run_to_hub` rewrites the
    cards it uploads as `write_run_cards(output_dir, repo_id=..., stage=..., ranking_repo_id=...)` would,
    then uploads those files: the card on disk and the card on the Hub are the same text.

    Raises:
        FileNotFoundError: `output_dir` is not a run folder (no `config.yaml`).
    """
    layout = RunLayout(output_dir)
    segmenters = any(_model_type(layout, s) in supported_model_types() for s in TRAINING_STAGES)
    run = RunSummary.read(output_dir, metrics_files, with_results=segmenters)
    cards = run_cards(run, repo_id=repo_id, stage=stage, ranking_repo_id=ranking_repo_id)
    return [write_card(card, path) for path, card in cards.items()]
