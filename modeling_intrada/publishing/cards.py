"""Model and dataset cards of a training run, generated with `huggingface_hub` from the package's templates.

A run folder (written by `training/run_intrada.py`) holds what the cards state:

    config.yaml                 every option of the run (the training configuration)
    inter/model, intra/model    G_inter and G_intra (save_pretrained + image processor)
    inter/discriminators/{aux,main}, intra/discriminators/{aux,main}
    ranking/ranking.json        the entropy-ranking statistics (stage 2)
    eval/metrics.json           the mIoU measured on the validation labels

`segmenter_card` writes the card of G_inter or G_intra, whose `model-index` (from `ModelCardData.eval_results`)
carries every mIoU the run measured for that model, per protocol and named by how the snapshot was chosen
(SPEC section 6: the last snapshot; a label-free rule; the "best snapshot on the validation labels" only under
that name). `discriminator_card` and `ranking_card` write the others. Results of
`training/evaluate_miou.py` can be added with `RunSummary.read(..., metrics_files=[...])`.

Built datasets carry their own card, written when they are built (`data.write_dataset_card`);
`built_dataset_card` reads it back and `dataset_terms` quotes its licence terms in the cards here.

The templates ship inside the package (`template_dir()`), like the `evaluate` module.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

STAGES = ("inter", "intra")
LEVELS = ("aux", "main")
CONFIG_FILE = "config.yaml"
RUN_METRICS_FILE = "eval/metrics.json"
RANKING_SUMMARY_FILE = "ranking/ranking.json"
SYNTHETIC = "synthetic"

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


def template_dir() -> Path:
    """The folder of the card templates (`segmenter.md`, `discriminator.md`, `ranking_splits.md`), inside
    the package so that an installed wheel can write cards."""
    return Path(__file__).resolve().parent / "templates"


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

    @property
    def selected_with_validation_labels(self) -> bool:
        return self.selection == "best_val"


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


def _selection_from_title(title: str) -> str:
    lowered = title.lower()
    if "best" in lowered and "validation" in lowered:
        return "best_val"
    if "entropy" in lowered:
        return "min_entropy"
    return "last"


def read_metrics_file(
    path: str | Path, run_config: Mapping[str, Any] | None = None, run_dir: str | Path | None = None
) -> list[MeasuredResult]:
    """The results of a metrics.json: the run's `eval/metrics.json` or an `evaluate_miou.py` output.

    Args:
        path: the file.
        run_config: the run's configuration, which names the validation split of `eval/metrics.json`.
        run_dir: the run folder, to show the file's path relative to it.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is neither format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist")
    data = json.loads(path.read_text())
    source = _shown_path(path, run_dir)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    results = []
    if isinstance(data.get("results"), dict) and isinstance(data.get("dataset"), dict):  # evaluate_miou.py
        dataset = data["dataset"]
        for key, entry in data["results"].items():
            for protocol, scores in entry["scores"].items():
                results.append(
                    MeasuredResult(
                        title=entry.get("title", key),
                        model=str(entry["model"]),
                        stage=_stage_of(str(entry["model"])),
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
                    )
                )
        return results
    config = dict(run_config or {})
    for title, entry in data.items():  # run_intrada.py's eval stage: title -> {"model", scores...}
        if not isinstance(entry, dict) or "mean_iou" not in entry or "model" not in entry:
            raise ValueError(
                f"{path}: entry {title!r} is neither an evaluate_miou.py result nor a run_intrada.py one "
                "(expected 'model' and 'mean_iou')"
            )
        # The eval stage names its rows "G_inter (inter, ...)": reliable even for a G_inter given by Hub id.
        match = re.search(r"\b(inter|intra)\b", title)
        stage = match.group(1) if match else _stage_of(str(entry["model"]))
        # One score set, or one per protocol under "protocols" (e.g. "16" and "13" for SYNTHIA).
        for scores in (entry.get("protocols") or {"": entry}).values():
            results.append(
                MeasuredResult(
                    title=title,
                    model=str(entry["model"]),
                    stage=stage,
                    selection=_selection_from_title(title),
                    iteration=None,
                    protocol=str(scores["protocol"]),
                    mean_iou=_float(scores["mean_iou"]),
                    class_names=tuple(scores["class_names"]),
                    per_class_iou=tuple(scores["per_class_iou"]),
                    dataset=str(config.get("val_dataset") or "validation split"),
                    dataset_config=config.get("val_config"),
                    dataset_split=str(config.get("val_split") or "validation"),
                    num_images=None,
                    first_images=config.get("max_val_images"),
                    source=source,
                )
            )
    return results


@dataclass
class RunSummary:
    """What a run folder says about itself: configuration, ranking statistics, measured results."""

    output_dir: Path
    config: dict
    ranking: dict | None = None
    results: list[MeasuredResult] = field(default_factory=list)

    @classmethod
    def read(cls, output_dir: str | Path, metrics_files: Iterable[str | Path] = ()) -> RunSummary:
        """Read `config.yaml`, `ranking/ranking.json` (if present), `eval/metrics.json` (if present) and
        the extra `metrics_files` (e.g. `evaluate_miou.py` outputs).

        Raises:
            FileNotFoundError: if `output_dir` has no `config.yaml` (it is not a run folder).
        """
        output_dir = Path(output_dir)
        config_path = output_dir / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{output_dir} is not a run folder of training/run_intrada.py: {config_path} is missing"
            )
        config = yaml.safe_load(config_path.read_text()) or {}
        ranking_path = output_dir / RANKING_SUMMARY_FILE
        ranking = json.loads(ranking_path.read_text()) if ranking_path.is_file() else None
        results = []
        run_metrics = output_dir / RUN_METRICS_FILE
        if run_metrics.is_file():
            results += read_metrics_file(run_metrics, config, output_dir)
        for path in metrics_files:
            # Only results on this run's generators count (a stage is read from the model's path).
            own = [r for r in read_metrics_file(path, config, output_dir) if _inside(r.model, output_dir)]
            if not own:
                raise ValueError(
                    f"{path} holds no result of a model of the run {output_dir} (models under "
                    f"{output_dir}/inter or {output_dir}/intra)"
                )
            results += own
        return cls(output_dir, config, ranking, results)

    def model_dir(self, stage: str) -> Path:
        """The folder of a stage's final generator.

        Raises:
            ValueError: for an unknown stage; FileNotFoundError: if the stage did not save its model.
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        path = self.output_dir / stage / "model"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} holds no model (config.json): did stage {stage!r} of the run finish?"
            )
        return path

    def latest_stage(self) -> str:
        """ "intra" when G_intra was saved, else "inter"."""
        for stage in reversed(STAGES):
            if (self.output_dir / stage / "model" / "config.json").is_file():
                return stage
        raise FileNotFoundError(f"{self.output_dir} holds neither inter/model nor intra/model")

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
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: was {folder} written by dataset_scripts/?")
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
    if name == SYNTHETIC:
        from modeling_intrada.data.synthetic import SyntheticConfig, default_synthetic_dir

        counts = config.get("synthetic_num_images") or [400, 200, 100]
        synthetic = SyntheticConfig(int(config.get("synthetic_seed", 0)), *counts)
        return Path(config.get("synthetic_dir") or default_synthetic_dir(synthetic))
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

            text = Path(hf_hub_download(name, "README.md", repo_type="dataset")).read_text()
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
        lines += ["| | " + " | ".join(first.class_names) + f" | mIoU ({protocol}) |"]
        lines += ["|:---|" + "---:|" * (len(first.class_names) + 1)]
        for r in rows:
            cells = [_percent(v) for v in r.per_class_iou] + [f"**{_percent(r.mean_iou)}**"]
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


def _framework_description(config: Mapping[str, Any], stage: str) -> str:
    framework = config.get("intra_framework") if stage == "intra" else None
    framework = framework or config.get("framework", "advent")
    return {
        "advent": "AdvEnt (a discriminator on the weighted self-information maps)",
        "adaptsegnet": "AdaptSegNet (a discriminator on the softmax maps)",
        "minent": "MinEnt (entropy minimisation, no discriminator)",
        "source_only": "supervised training only (no adversarial term)",
    }.get(str(framework), str(framework))


def _stage_description(stage: str) -> str:
    return {
        "inter": "stage 1 of IntraDA, inter-domain adaptation (G_inter, source -> target)",
        "intra": "stage 3 of IntraDA, intra-domain adaptation (G_intra, easy target -> hard target)",
    }[stage]


def training_section(config: Mapping[str, Any], stage: str) -> str:
    """Markdown: what the stage trained on and with which numbers (the full config follows in the card)."""
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
            f"- **Stage:** {_stage_description(stage)}, with {_framework_description(c, stage)}.",
            f"- **Data:** {data}.",
            f"- **Iterations:** {iterations} optimizer steps of batch {c.get('batch_size')} per domain per process "
            f"(gradient accumulation {c.get('gradient_accumulation_steps')}), seed {c.get('seed')}, "
            f"mixed precision {c.get('mixed_precision')}.",
            f"- **Optimisation:** {optimiser}.",
            f"- **Loss weights:** segmentation aux {c.get('seg_aux_weight')} + main 1.0; adversarial aux "
            f"{c.get('adv_aux_weight')}, main {c.get('adv_main_weight')}.",
            f"- **Backbone initialisation:** {c.get('backbone_weights') or 'random (no ImageNet weights)'}.",
        ]
    )


INTENDED_USE = """Research on unsupervised domain adaptation for semantic segmentation: reproducing and comparing
IntraDA (and AdvEnt, its first stage), and a starting point for adapting to similar street-scene domains. The model
labels every pixel with one of its classes and nothing else; it was adapted to the target domain of its run and
its accuracy elsewhere is unknown (the table above is the only measurement). It is not fit for safety-relevant
use such as driving decisions. The scores come from validation labels that were never used for training; how
the reported snapshot was chosen is stated next to each number."""


def _hub_id(name: str | None) -> str | None:
    """`name` when it reads as a Hub id (user/name, not a local path), else None."""
    if not name or name == SYNTHETIC or Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None


# ---------------------------------------------------------------------------------------------------------
# Cards
# ---------------------------------------------------------------------------------------------------------


def _label_space_name(target: str, config: Mapping[str, Any]) -> str:
    """The name of the target dataset's label space, read from its folder; a description when it is not local."""
    folder = _local_dataset_folder(target, config)
    if folder is not None and (folder / "label_space.json").is_file():
        return str(json.loads((folder / "label_space.json").read_text()).get("name", target))
    return f"{target} (target dataset)"


def _model_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _processor_config(folder: Path) -> dict:
    path = folder / "preprocessor_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def segmenter_card(
    run: RunSummary,
    stage: str,
    repo_id: str,
    *,
    ranking_repo_id: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The card of G_inter or G_intra, with the run's measured mIoU in its `model-index`.

    Args:
        run: the run folder's content (`RunSummary.read`).
        stage: "inter" or "intra".
        repo_id: the model repository the card is for (shown in the code examples).
        ranking_repo_id: the ranking-splits dataset repository, when published.
        license: the weights' licence identifier; default apache-2.0 when every dataset of the run is
            under it, else "other" (the card lists the datasets' terms).
    """
    folder = run.model_dir(stage)
    model_config, processor = _model_config(folder), _processor_config(folder)
    names = [name for _, name in _run_datasets(run.config)]
    terms = {name: dataset_terms(name, run.config) for name in names}
    results = run.results_for(stage)
    hub_ids = {name: _hub_id(name) for name in names}
    dataset_ids = [i for i in [*hub_ids.values(), ranking_repo_id if stage == "intra" else None] if i]
    space = run.config.get("label_space") or _label_space_name(
        str(run.config.get("target_dataset", "")), run.config
    )
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license or _model_license(terms.values()),
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=["intrada", "domain-adaptation", "semantic-segmentation", "deeplabv2", f"g_{stage}"],
        datasets=list(dict.fromkeys(dataset_ids)) or None,
        metrics=["mean_iou"],
        eval_results=eval_results(results, hub_ids) or None,
    )
    size = processor.get("size", {})
    summary = (
        f"The {'intra' if stage == 'intra' else 'inter'}-domain segmenter "
        f"({'G_intra, the final IntraDA model' if stage == 'intra' else 'G_inter, the AdvEnt stage of IntraDA'}) "
        "of a run of [IntraDA](https://arxiv.org/abs/2004.07703) (Pan et al., CVPR 2020), trained with the "
        "`intrada-hf` library on the datasets below. The mIoU in the model index and in the table below are "
        "the values that run measured."
    )
    config_yaml = yaml.safe_dump(run.config, sort_keys=False).strip()
    return ModelCard.from_template(
        card_data,
        template_path=str(template_dir() / "segmenter.md"),
        title=f"{repo_id.split('/')[-1]}: IntraDA {'G_intra' if stage == 'intra' else 'G_inter'}",
        summary=summary,
        stage_description=_stage_description(stage),
        backbone=model_config.get("backbone", "?"),
        multi_level=bool(model_config.get("multi_level", True)),
        num_labels=len(model_config.get("id2label", {})),
        label_space=space,
        input_height=size.get("height", "?"),
        input_width=size.get("width", "?"),
        normalization=processor.get("normalization", "?"),
        repo_id=repo_id,
        results_section=results_section(results),
        training_section=training_section(run.config, stage),
        ranking_section=ranking_section(run.ranking, ranking_repo_id)
        if stage == "intra"
        else "G_inter ranked the target images for stage 3:\n\n"
        + ranking_section(run.ranking, ranking_repo_id),
        config_yaml=config_yaml,
        intended_use=INTENDED_USE,
        datasets_section=_datasets_section(run.config, terms),
        citation=INTRADA_CITATION + "\n\n" + ADVENT_CITATION,
    )


def discriminator_card(run: RunSummary, stage: str, level: str, repo_id: str, subfolder: str) -> ModelCard:
    """The card of one discriminator (`<stage>/discriminators/<level>`), published in `subfolder` of `repo_id`.

    Raises:
        ValueError: for an unknown stage or level; FileNotFoundError: if the discriminator was not saved.
    """
    if stage not in STAGES or level not in LEVELS:
        raise ValueError(f"stage must be one of {STAGES} and level one of {LEVELS}, got {stage!r}, {level!r}")
    folder = run.output_dir / stage / "discriminators" / level
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no discriminator (config.json)")
    config = _model_config(folder)
    framework = (run.config.get("intra_framework") if stage == "intra" else None) or run.config.get(
        "framework"
    )
    card_data = ModelCardData(
        license="apache-2.0"
        if _model_license(dataset_terms(n, run.config) for _, n in _run_datasets(run.config)) == "apache-2.0"
        else "other",
        library_name="transformers",
        tags=["intrada", "domain-adaptation", "discriminator", f"g_{stage}", f"level_{level}"],
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_dir() / "discriminator.md"),
        title=f"IntraDA discriminator ({stage}, {level} level)",
        level=level,
        stage_description=_stage_description(stage),
        model_repo_id=repo_id,
        num_channels=config.get("num_channels", "C"),
        input_description="softmax" if framework == "adaptsegnet" else "weighted self-information",
        repo_id=repo_id,
        subfolder=subfolder,
        citation=INTRADA_CITATION + "\n\n" + ADVENT_CITATION,
    )


def ranking_card(run: RunSummary, repo_id: str, *, model_repo_id: str | None = None) -> DatasetCard:
    """The card of the ranking-splits dataset repository (Parquet in `data/`, `ranking.json`, `ranking.png`).

    Raises:
        FileNotFoundError: if the run has no ranking (`ranking/ranking.json`).
    """
    if run.ranking is None:
        raise FileNotFoundError(f"{run.output_dir / RANKING_SUMMARY_FILE} is missing: stage 2 was not run")
    target = str(run.config.get("target_dataset", "?"))
    terms = dataset_terms(target, run.config)
    target_id = _hub_id(target)
    data_files = sorted(p.name for p in (run.output_dir / "ranking" / "data").glob("*.parquet"))
    if not data_files:
        raise FileNotFoundError(f"{run.output_dir / 'ranking' / 'data'} holds no Parquet file")
    with_entropy = _has_column(run.output_dir / "ranking" / "data" / data_files[0], "entropy_map")
    card_data = DatasetCardData(
        pretty_name=f"IntraDA ranking splits of {terms.name}",
        license=terms.license or "other",
        task_categories=["image-segmentation"],
        tags=["intrada", "domain-adaptation", "entropy-ranking", "pseudo-labels"],
        source_datasets=[target_id] if target_id else None,
        configs=[
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
        ],
    )
    licence = f"licence `{terms.license}`" if terms.license else "licence not stated"
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_dir() / "ranking_splits.md"),
        title=f"IntraDA ranking splits of {terms.name}",
        target_description=_split_description(
            target, run.config.get("target_config"), run.config.get("target_split")
        ),
        model_repo_id=model_repo_id,
        statistics_section=ranking_section(run.ranking),
        label_description="the argmax map of G_inter (uint8 train ids, PNG)",
        with_entropy_maps=with_entropy,
        repo_id=repo_id,
        licence_section=f"- **{terms.name}** (`{target}`), {licence}. {terms.terms}",
        citation=INTRADA_CITATION,
    )


def _has_column(parquet_file: Path, column: str) -> bool:
    import pyarrow.parquet as pq

    return column in pq.read_schema(parquet_file).names


def measured_mean_ious(card: ModelCard | str | Path) -> dict[str, float]:
    """metric name -> value of a model card's `model-index` (read back with `huggingface_hub`)."""
    if not isinstance(card, ModelCard):
        card = ModelCard.load(card)
    return {r.metric_name: float(r.metric_value) for r in (card.data.eval_results or [])}
