"""Evaluate a segmenter's mIoU on a labelled split at full label resolution (SPEC section 6).

    python training/evaluate_miou.py --model outputs/intrada-synthetic/intra/model --dataset synthetic \\
        --dataset_config target_val --split validation --output_dir eval-intra
    accelerate launch --num_processes 4 training/evaluate_miou.py --model <user>/intrada-gta5 \\
        --dataset <user>/cityscapes --split validation --output_dir eval-cityscapes
    python training/evaluate_miou.py --snapshots_dir outputs/intrada-synthetic/intra/snapshots \\
        --selection last min_entropy best_val --output_dir eval-snapshots

Images are resized to the model's input size (its image processor's, or `--input_size`), the logits
upsampled bilinearly to each label map's own size (Cityscapes: 1024x512 input, 2048x1024 labels) and
counted in one confusion matrix, summed over processes. Writes into `--output_dir`:

    metrics.json        per result: model, iteration, how it was selected, scores per protocol, confusion matrix
    results.md          one Table-1-style markdown table per protocol, with the selection of each row said
    predictions/<result>/NNNN_<id>.png   image | prediction | ground truth, colour-coded, first K images
    snapshots.json      with --snapshots_dir: every snapshot's mean target entropy (and mIoU for best_val)

Model selection (`--snapshots_dir`, SPEC section 6): the **last** snapshot is always reported;
`min_entropy` adds the snapshot with the lowest mean prediction entropy on the unlabelled target training
images (label-free); `best_val` adds the snapshot with the best mIoU on the evaluation labels themselves,
an oracle choice that is named as such everywhere it appears.

Several processes (`accelerate launch`): batch b runs on process b mod W (`evaluation.sharded_batches`),
never through a prepared DataLoader, whose default `even_batches=True` would repeat images to fill the
last batch and count them twice; the confusion matrices are summed with `accelerator.reduce`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation, HfArgumentParser

import modeling_intrada  # noqa: F401  (registers the models with the Auto classes)
from modeling_intrada.atomic import write_text_atomically
from modeling_intrada.data.datasets import DatasetColumnArguments, is_built_dataset, read_label_space
from modeling_intrada.data.synthetic import resolve_dataset_name
from modeling_intrada.errors import (
    MissingInputError,
    UsageError,
    check_model_reference,
    load_pretrained,
    user_input,
)
from modeling_intrada.evaluation.metrics import (
    PROTOCOLS,
    MeanIoU,
    Protocol,
    SegmentationScores,
    get_protocol,
    markdown_table,
    scores_from_confusion_matrix,
)
from modeling_intrada.evaluation.pictures import segmentation_figure
from modeling_intrada.evaluation.segmentation import EvaluationSplit, evaluate_segmentation, mean_entropy
from modeling_intrada.labels import LabelSpace, class_name_table, colorize, get_label_space, same_class_name
from modeling_intrada.method.segmenters import align_classes, class_permutation, normalization_of
from modeling_intrada.models.deeplabv2.image_transforms import NORMALIZATIONS
from modeling_intrada.run_layout import (
    CONFIG_FILE,
    DONE_FILE,
    FIGURES_DIR,
    METRICS_FILE,
    MODEL_DIR,
    PREDICTIONS_DIR,
    RESULTS_FILE,
    SNAPSHOTS_DIR,
)

logger = logging.getLogger("evaluate_miou")

SELECTIONS = ("last", "min_entropy", "best_val")
SNAPSHOT_PATTERN = re.compile(r"^iter_(\d+)$")
SNAPSHOTS_FILE = "snapshots.json"


@dataclass
class EvaluationArguments(DatasetColumnArguments):
    """What to evaluate, on what, and how the reported snapshots are chosen."""

    model: str | None = field(
        default=None, metadata={"help": "model folder (save_pretrained) or Hub id; or use --snapshots_dir"}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision of --model"})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "load --model with its own code (auto_map) instead of this package's"},
    )
    snapshots_dir: str | None = field(
        default=None,
        metadata={
            "help": "a stage's snapshots folder (<run>/intra/snapshots, or the stage folder <run>/intra): "
            "evaluate its snapshots and its final model, reported per --selection"
        },
    )
    selection: list[str] = field(
        default_factory=lambda: ["last"],
        metadata={
            "help": "with --snapshots_dir: last (always reported) | min_entropy (label-free) | best_val "
            "(oracle: the best mIoU on the evaluation labels, labelled as such)"
        },
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "labelled dataset: built folder, Hub id or 'synthetic' (default with --snapshots_dir: the "
            "run's val_dataset from its config.yaml)"
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "configuration of --dataset (None: the card's default)"}
    )
    split: str = field(default="validation")
    max_images: int | None = field(default=None, metadata={"help": "evaluate the first N images only"})
    input_size: list[int] | None = field(
        default=None, metadata={"help": "HEIGHT WIDTH of the model input (default: its image processor's)"}
    )
    normalization: str | None = field(
        default=None,
        metadata={"help": "caffe | imagenet | inception | unit_bgr (default: the model's image processor's)"},
    )
    label_space: str | None = field(
        default=None,
        metadata={
            "help": "class space of the model's predictions (e.g. synthia16 for a SYNTHIA model on Cityscapes "
            "labels: dataset classes are mapped by name, the others ignored); default: the run's (with "
            "--snapshots_dir), else the dataset's"
        },
    )
    protocols: list[str] | None = field(
        default=None,
        metadata={"help": "19 | 16 | 13 | all (default: 19 for 19 classes, 16 and 13 for 16, else all)"},
    )
    selection_dataset: str | None = field(
        default=None,
        metadata={"help": "unlabelled images for min_entropy (default: the run's target_dataset)"},
    )
    selection_config: str | None = field(default=None)
    selection_split: str | None = field(default=None)
    selection_max_images: int | None = field(default=None)
    batch_size: int = field(default=1, metadata={"help": "images per process per forward pass"})
    num_workers: int = field(default=2, metadata={"help": "data-loading workers"})
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no | fp16 | bf16 (default: what `accelerate launch --mixed_precision` or the saved "
            "`accelerate config` set, else no)"
        },
    )
    num_pictures: int = field(default=8, metadata={"help": "colour-coded predictions of the first K images"})
    output_dir: str = field(default="evaluation")


# ------------------------------------------------------------------------------------------- inputs
@dataclass
class Candidate:
    """A generator to evaluate: a model folder and, for snapshots, the iteration it was saved at.

    `name`, `title` and `stage` are how a stage's model given by name (the pipeline's G_inter, G_intra) is
    reported: the key of its result in metrics.json, its row in the tables, and the stage that trained it
    (such a model is the stage's last snapshot).
    """

    path: str
    iteration: int | None = None
    name: str | None = None
    title: str | None = None
    stage: str | None = None

    @property
    def label(self) -> str:
        return f"iteration {self.iteration}" if self.iteration is not None else Path(self.path).name


def find_snapshots(folder: str | Path) -> tuple[list[Candidate], Path]:
    """The snapshots of one stage, oldest first, and the stage folder.

    `folder` is `<run>/<stage>/snapshots` or the stage folder `<run>/<stage>`. The stage's final model
    (`<stage>/model`, its iteration read from the `DONE` file) is the last candidate when it is newer
    than the last snapshot or when its iteration is unknown.

    Raises:
        FileNotFoundError: if the folder does not exist or holds no snapshot and no final model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(
            f"--snapshots_dir {folder}: no such folder (expected <run>/<stage>/snapshots)"
        )
    if (folder / SNAPSHOTS_DIR).is_dir() or (folder / MODEL_DIR / "config.json").is_file():
        stage_dir, folder = folder, folder / SNAPSHOTS_DIR
    else:
        stage_dir = folder.parent
    candidates = []
    for path in sorted(folder.glob("iter_*")) if folder.is_dir() else []:
        match = SNAPSHOT_PATTERN.match(path.name)
        if match and (path / "generator" / "config.json").is_file():
            candidates.append(Candidate(str(path / "generator"), int(match.group(1))))
    candidates.sort(key=lambda c: c.iteration)
    final = stage_dir / MODEL_DIR
    if (final / "config.json").is_file():
        iteration = stage_iteration(stage_dir)
        if not candidates or iteration is None or iteration > candidates[-1].iteration:
            candidates.append(Candidate(str(final), iteration))
    if not candidates:
        raise MissingInputError(
            f"no snapshot in {folder} (iter_XXXXXX/generator/config.json) and no final model in {final}: "
            "train with --snapshot_steps N to save snapshots"
        )
    return candidates, stage_dir


def stage_iteration(stage_dir: Path) -> int | None:
    """The step count a finished stage recorded in its DONE file (None while it has none)."""
    done = stage_dir / DONE_FILE
    return int(done.read_text().split()[0]) if done.is_file() else None


def read_run_config(stage_dir: Path | None) -> dict:
    """The `config.yaml` of the run that a stage folder belongs to, or {} when there is none."""
    if stage_dir is None:
        return {}
    path = stage_dir.parent / CONFIG_FILE
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def resolve_dataset(name: str, run_config: dict) -> str:
    """A dataset folder or Hub id; `synthetic` is the embedded default, built (or reused) as the run did."""
    return resolve_dataset_name(name, run_config)


def load_segmenter(
    path: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    class_names: Sequence[str] | None = None,
) -> torch.nn.Module:
    """A semantic-segmentation model from a folder or the Hub, in eval mode; with `class_names`, its classes
    put in that order (matched by name, `segmenters.align_classes`)."""
    model = load_pretrained(
        AutoModelForSemanticSegmentation.from_pretrained,
        path,
        "model",
        revision=revision,
        trust_remote_code=trust_remote_code,
    )
    if class_names is not None:
        align_classes(model, class_names, f"model {path}")
    return model.eval()


def input_settings(
    path: str, revision: str | None, input_size: Sequence[int] | None, normalization: str | None
) -> tuple[tuple[int, int], str]:
    """(height, width) and normalisation: the arguments, else the model's saved image processor."""
    if input_size is not None and normalization is not None:
        return (int(input_size[0]), int(input_size[1])), normalization
    try:
        processor = AutoImageProcessor.from_pretrained(path, revision=revision)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path} has no image processor (preprocessor_config.json): pass --input_size HEIGHT WIDTH "
            f"and --normalization {'|'.join(NORMALIZATIONS)}"
        ) from error
    if input_size is None:
        height, width = processor.size.get("height"), processor.size.get("width")
        if not height or not width:
            raise ValueError(
                f"{path}: its image processor resizes to {dict(processor.size)}, not to a height and width: "
                "pass --input_size HEIGHT WIDTH"
            )
        input_size = (height, width)
    size = (int(input_size[0]), int(input_size[1]))
    return size, normalization or normalization_of(processor, f"model {path}")


def default_protocols(num_labels: int) -> list[str | None]:
    """19 classes: "19"; 16: "16" and "13" (SYNTHIA); otherwise all classes (None)."""
    if num_labels == 19:
        return ["19"]
    if num_labels == 16:
        return ["16", "13"]
    return [None]


def parse_protocols(values: Sequence[str] | None, num_labels: int) -> list[str | None]:
    """The protocols to report, checked against the model's number of classes."""
    if not values:
        return default_protocols(num_labels)
    protocols: list[str | None] = []
    for value in values:
        if value == "all":
            protocols.append(None)
        elif value not in PROTOCOLS:
            raise ValueError(
                f"--protocols: unknown protocol {value!r}; expected one of {sorted(PROTOCOLS)} or all"
            )
        elif PROTOCOLS[value].num_labels != num_labels:
            raise ValueError(
                f"--protocols {value} is defined over {PROTOCOLS[value].num_labels} classes but the model "
                f"predicts {num_labels}"
            )
        else:
            protocols.append(value)
    return protocols


def label_mapping(
    dataset_space: LabelSpace, evaluation_space: LabelSpace
) -> tuple[dict[int, int] | None, list[str]]:
    """Dataset train id -> evaluation class, matched by name, and the dataset classes left out.

    Dataset classes absent from the evaluation space become the ignore index (e.g. terrain, truck and
    train for a SYNTHIA model on Cityscapes labels: the mapping is then `CITYSCAPES_TO_SYNTHIA_16`). None
    when the spaces have the same classes.

    Raises:
        ValueError: if an evaluation class has no counterpart in the dataset.
    """
    if tuple(dataset_space.class_names) == tuple(evaluation_space.class_names):
        return None, []
    mapping, missing = class_name_table(dataset_space.class_names, evaluation_space.class_names)
    if missing:
        raise ValueError(
            f"the model's classes {missing} ({evaluation_space.name}) are not classes of the dataset "
            f"({dataset_space.name}: {list(dataset_space.class_names)}): no label mapping"
        )
    _, dropped = class_name_table(evaluation_space.class_names, dataset_space.class_names)
    return mapping, dropped


def labelled_classes(dataset_space: LabelSpace, evaluation_space: LabelSpace) -> list[int] | None:
    """The evaluation classes the dataset labels, when it labels only some of them (else None).

    A dataset that draws a few of a space's classes (`labelled_train_ids`: the synthetic pair's 9 of the 19
    Cityscapes classes) is reported over those classes; matched by name, as `label_mapping` does.
    """
    labelled = dataset_space.labelled_train_ids or range(dataset_space.num_classes)
    names = {same_class_name(dataset_space.class_names[i]) for i in labelled}
    indices = [i for i, name in enumerate(evaluation_space.class_names) if same_class_name(name) in names]
    return indices if len(indices) < evaluation_space.num_classes else None


# --------------------------------------------------------------------------------------- evaluation
@dataclass
class Result:
    """One reported row: a candidate, how it was chosen, its scores and the first predictions."""

    key: str
    title: str
    candidate: Candidate
    selection: str
    rule: str
    scores: dict[str, SegmentationScores]
    confusion: np.ndarray
    predictions: list[tuple[int, np.ndarray]] = field(default_factory=list)

    @property
    def selected_with_validation_labels(self) -> bool:
        return self.selection == "best_val"


class Evaluator:
    """Evaluates candidates on one labelled split, with one Accelerator, the same for every candidate.

    The candidates are `--model`, the snapshots of `--snapshots_dir`, or, from a program, named models
    (`candidates`, e.g. a run's G_inter and G_intra) evaluated one by one; `run_config` gives the options
    of the run they belong to (datasets, label space) when no config.yaml sits next to them.
    """

    def __init__(
        self,
        args: EvaluationArguments,
        accelerator: Accelerator,
        candidates: Sequence[Candidate] | None = None,
        run_config: dict | None = None,
    ) -> None:
        self.args, self.accelerator = args, accelerator
        self.stage_dir: Path | None = None
        if candidates:
            self.candidates = list(candidates)
        elif args.snapshots_dir:
            self.candidates, self.stage_dir = find_snapshots(args.snapshots_dir)
        else:
            self.candidates = [Candidate(args.model, name="model")]
        self.run_config = run_config if run_config is not None else read_run_config(self.stage_dir)
        first = self.candidates[-1]
        self.size, self.normalization = input_settings(
            first.path, args.revision, args.input_size, args.normalization
        )
        config = AutoConfig.from_pretrained(
            first.path, revision=args.revision, trust_remote_code=args.trust_remote_code
        )
        self.num_labels = int(config.num_labels)
        self.model_id2label = {int(k): v for k, v in config.id2label.items()}
        self.protocols = parse_protocols(args.protocols, self.num_labels)

        dataset, config, split = self._dataset_names()
        self.dataset_name, self.dataset_config, self.split_name = dataset, config, split
        self.dataset_path = resolve_dataset(dataset, self.run_config)
        self.layout = None
        if is_built_dataset(self.dataset_path):
            dataset_space = read_label_space(self.dataset_path)
        else:  # another publisher's dataset: its columns from the options, its classes the model's space
            self.layout = args.column_layout()
            dataset_space = get_label_space(
                args.label_space or self.run_config.get("label_space") or "cityscapes"
            )
        space_name = args.label_space or self.run_config.get("label_space")  # e.g. synthia16
        self.label_space = get_label_space(space_name) if space_name else dataset_space
        if self.label_space.num_classes != self.num_labels:
            raise ValueError(
                f"the model predicts {self.num_labels} classes but the label space {self.label_space.name!r} has "
                f"{self.label_space.num_classes}: pass --label_space with the model's classes"
            )
        # Classes matched by name: a model with the classes in another order is reordered when loaded.
        model_names = [self.model_id2label[i] for i in range(self.num_labels)]
        class_permutation(model_names, self.label_space.class_names, f"model {first.path}")
        self.model_id2label = dict(enumerate(self.label_space.class_names))
        mapping, self.dropped_classes = label_mapping(dataset_space, self.label_space)
        self.dataset_label_space = dataset_space
        self.labelled_classes = labelled_classes(dataset_space, self.label_space)
        self.rows = EvaluationSplit(
            self.dataset_path,
            config,
            split,
            self.size,
            self.normalization,
            args.max_images,
            label_mapping=mapping,
            layout=self.layout,
        )

    def _dataset_names(self) -> tuple[str, str | None, str]:
        a, run = self.args, self.run_config
        if a.dataset:
            return a.dataset, a.dataset_config, a.split
        if run.get("val_dataset"):  # the run's own validation split
            return run["val_dataset"], run.get("val_config"), run.get("val_split", "validation")
        raise ValueError("pass --dataset (a built folder, Hub id or 'synthetic')")

    def evaluate(self, candidate: Candidate, what: str, keep: bool) -> tuple[dict, np.ndarray, list]:
        """Scores per protocol, the summed confusion matrix, and this process's first predictions."""
        a, acc = self.args, self.accelerator
        model = load_segmenter(
            candidate.path, a.revision, a.trust_remote_code, self.label_space.class_names
        ).to(acc.device)
        metric = MeanIoU(self.num_labels)
        _, predictions = evaluate_segmentation(
            model,
            self.rows,
            self.num_labels,
            accelerator=acc,
            batch_size=a.batch_size,
            mixed_precision=acc.mixed_precision,  # the option, else the launcher's setting
            num_workers=a.num_workers,
            keep_predictions=a.num_pictures if keep else 0,
            progress=f"{what}: {candidate.label}",
            metric=metric,
        )
        confusion = metric.confusion_matrix(acc)  # every process takes part in the sum
        scores = {
            _protocol_name(p, self.num_labels): scores_from_confusion_matrix(
                confusion, p, self.model_id2label
            )
            for p in self.protocols
        }
        return scores, confusion.numpy(), predictions

    def selection_rows(self) -> tuple[EvaluationSplit, str]:
        """The unlabelled images min_entropy scores, and how they are described in the outputs."""
        a, run = self.args, self.run_config
        name = a.selection_dataset or run.get("target_dataset")
        if not name:
            raise ValueError(
                "--selection min_entropy needs unlabelled target images: pass --selection_dataset (no run "
                "config.yaml was found next to --snapshots_dir)"
            )
        config = a.selection_config or (run.get("target_config") if not a.selection_dataset else None)
        split = a.selection_split or (
            run.get("target_split", "train") if not a.selection_dataset else "train"
        )
        rows = EvaluationSplit(
            resolve_dataset(name, run),
            config,
            split,
            self.size,
            self.normalization,
            a.selection_max_images,
            with_labels=False,
        )
        return rows, f"{name} ({config or 'default'}/{split}, {len(rows)} images, labels unused)"

    def run(self) -> tuple[list[Result], list[dict]]:
        """Evaluate what the arguments ask for; returns the reported results and the per-snapshot table."""
        a = self.args
        selections = ["last"] + [s for s in SELECTIONS if s in a.selection and s != "last"]
        last = self.candidates[-1]
        table = [{"iteration": c.iteration, "model": c.path} for c in self.candidates]
        results: list[Result] = []
        if not a.snapshots_dir:
            for candidate in self.candidates:
                scores, confusion, predictions = self.evaluate(candidate, "evaluate", keep=True)
                title = candidate.title or candidate.path
                selection, rule = (
                    ("given", "the model given")
                    if candidate.stage is None
                    else ("last", f"the last snapshot of stage {candidate.stage}, no selection")
                )
                key = candidate.name or "model"
                results.append(Result(key, title, candidate, selection, rule, scores, confusion, predictions))
            return results, []

        chosen: dict[str, tuple[Candidate, str]] = {
            "last": (last, f"the last snapshot ({last.label}), no selection")
        }
        if "min_entropy" in selections:
            rows, described = self.selection_rows()
            for entry, candidate in zip(table, self.candidates):
                model = load_segmenter(
                    candidate.path, a.revision, a.trust_remote_code, self.label_space.class_names
                ).to(self.accelerator.device)
                entry["mean_entropy"] = mean_entropy(
                    model,
                    rows,
                    accelerator=self.accelerator,
                    batch_size=a.batch_size,
                    num_workers=a.num_workers,
                    progress=f"entropy: {candidate.label}",
                )
            best = min(range(len(table)), key=lambda i: (table[i]["mean_entropy"], i))
            chosen["min_entropy"] = (
                self.candidates[best],
                f"lowest mean prediction entropy on {described}: {table[best]['mean_entropy']:.6f} (label-free)",
            )
        evaluated: dict[int, tuple[dict, np.ndarray, list]] = {}
        if "best_val" in selections:
            first = _protocol_name(self.protocols[0], self.num_labels)
            reported = {self.candidates.index(c) for c, _ in chosen.values()}
            for i, candidate in enumerate(self.candidates):
                scores, confusion, predictions = self.evaluate(candidate, "best_val", keep=True)
                table[i]["mean_iou"] = {name: s.to_dict()["mean_iou"] for name, s in scores.items()}
                evaluated[i] = (scores, confusion, predictions)
                # Keep the pictures of the rows reported (and of the best so far), not of every snapshot.
                keep = reported | {_best(evaluated, first)}
                evaluated = {j: v if j in keep else (v[0], v[1], []) for j, v in evaluated.items()}
            best = _best(evaluated, first)
            value = evaluated[best][0][first].mean_iou
            chosen["best_val"] = (
                self.candidates[best],
                f"highest mIoU ({first}) on the evaluation labels themselves, {100 * value:.2f}: an oracle "
                "choice, not available without target labels",
            )
        for selection in selections:
            candidate, rule = chosen[selection]
            index = self.candidates.index(candidate)
            if index not in evaluated:
                evaluated[index] = self.evaluate(candidate, selection, keep=True)
            scores, confusion, predictions = evaluated[index]
            results.append(
                Result(
                    selection,
                    _title(selection, candidate),
                    candidate,
                    selection,
                    rule,
                    scores,
                    confusion,
                    predictions,
                )
            )
        return results, table


def _best(evaluated: dict[int, tuple[dict, np.ndarray, list]], protocol: str) -> int:
    """The index with the highest mIoU under `protocol` (the earliest on ties; NaN counts as lowest)."""

    def key(i: int) -> tuple[float, int]:
        value = evaluated[i][0][protocol].mean_iou
        return (-np.inf if np.isnan(value) else value, -i)

    return max(evaluated, key=key)


def _protocol_name(protocol: str | None, num_labels: int) -> str:
    """The protocol's reported name ("19", "16", "13"; all classes: the number of classes)."""
    return get_protocol(protocol, num_labels).name


def _title(selection: str, candidate: Candidate) -> str:
    return {
        "last": f"last snapshot ({candidate.label})",
        "min_entropy": f"lowest target entropy ({candidate.label}, label-free)",
        "best_val": f"best snapshot on the validation labels ({candidate.label}, oracle)",
    }[selection]


# ------------------------------------------------------------------------------------------ outputs
def save_pictures(
    rows: EvaluationSplit,
    predictions: list[tuple[int, np.ndarray]],
    space: LabelSpace,
    folder: Path,
    figures_folder: Path | None = None,
    title: str | None = None,
) -> None:
    """image | prediction | ground truth into `folder`, colour-coded with the label space's palette, at label
    resolution (pixel for pixel); and into `figures_folder` the same panels titled, with a legend of the
    classes present."""
    folder.mkdir(parents=True, exist_ok=True)
    if figures_folder is not None:
        figures_folder.mkdir(parents=True, exist_ok=True)
    for index, prediction in predictions:
        height, width = prediction.shape
        image = np.asarray(rows.image(index).resize((width, height), Image.BICUBIC))
        label = rows[index]["labels"].numpy().astype(np.uint8)  # mapped into the model's classes
        panel = np.concatenate([image, colorize(prediction, space), colorize(label, space)], axis=1)
        image_id = str(rows.dataset[int(index)]["id"])
        safe_id = re.sub(r"[^\w.-]", "_", image_id)
        name = f"{int(index):04d}_{safe_id}.png"
        Image.fromarray(panel).save(folder / name)
        if figures_folder is not None:
            caption = f"{title}: {image_id}" if title else image_id
            figure = segmentation_figure(image, prediction, space, label=label, title=caption)
            Image.fromarray(figure).save(figures_folder / name)


def metrics_document(evaluator: Evaluator, results: list[Result], snapshots: list[dict]) -> dict:
    """The content of metrics.json."""
    return {
        "dataset": {
            "name": evaluator.dataset_name,
            "path": evaluator.dataset_path,
            "config": evaluator.dataset_config,
            "split": evaluator.split_name,
            "num_images": len(evaluator.rows),
            "max_images": evaluator.args.max_images,
            "input_size": list(evaluator.size),
            "normalization": evaluator.normalization,
            "label_space": evaluator.label_space.name,
            "dataset_classes_ignored": evaluator.dropped_classes,
            "dataset_classes_labelled": (
                None
                if evaluator.labelled_classes is None
                else [evaluator.label_space.class_names[i] for i in evaluator.labelled_classes]
            ),
            "resolution": "predictions upsampled to each label map's own size",
        },
        "protocols": [_protocol_name(p, evaluator.num_labels) for p in evaluator.protocols],
        "results": {
            r.key: {
                "title": r.title,
                "model": r.candidate.path,
                "stage": r.candidate.stage,
                "iteration": r.candidate.iteration,
                "selection": r.selection,
                "selection_rule": r.rule,
                "selected_with_validation_labels": r.selected_with_validation_labels,
                "scores": {name: s.to_dict() for name, s in r.scores.items()},
                "confusion_matrix": r.confusion.tolist(),
            }
            for r in results
        },
        "snapshots": snapshots,
    }


def results_markdown(evaluator: Evaluator, results: list[Result], snapshots: list[dict]) -> str:
    """results.md: per protocol a table like the paper's Table 1, and how every row was chosen."""
    e = evaluator
    lines = [
        f"# mIoU on {e.dataset_name} ({e.dataset_config or 'default'}/{e.split_name}), {len(e.rows)} images",
        "",
        f"Input {e.size[0]}x{e.size[1]} ({e.normalization}), predictions upsampled to the full label resolution; "
        f"classes of `{e.label_space.name}`"
        + (f"; dataset classes ignored: {', '.join(e.dropped_classes)}" if e.dropped_classes else "")
        + ".",
        "",
    ]
    for protocol in e.protocols:
        name = _protocol_name(protocol, e.num_labels)
        lines += [f"## Protocol {name}", "", *protocol_table(e, protocol, results)]
    lines += ["## How each row was chosen", ""]
    lines += [f"- **{r.title}**: {r.rule}. Model: `{r.candidate.path}`." for r in results]
    if any(r.selected_with_validation_labels for r in results):
        lines += [
            "",
            "The best snapshot on the validation labels is picked with the labels it is scored on (as the "
            "reference code does): it is an upper bound of snapshot selection, not a result an unsupervised "
            "method can claim. Report the last snapshot, or a label-free rule, as the result.",
        ]
    if snapshots:
        lines += ["", "## Snapshots", "", "| iteration | mean target entropy | mIoU (validation labels) |"]
        lines += ["|---:|---:|---:|"]
        first = _protocol_name(e.protocols[0], e.num_labels)
        for s in snapshots:
            entropy = f"{s['mean_entropy']:.6f}" if "mean_entropy" in s else "-"
            miou = s.get("mean_iou", {}).get(first)
            lines.append(
                f"| {s['iteration'] if s['iteration'] is not None else '?'} | {entropy} | "
                f"{'-' if miou is None else f'{100 * miou:.2f}'} |"
            )
    return "\n".join(lines) + "\n"


def protocol_table(evaluator: Evaluator, protocol: str | None, results: list[Result]) -> list[str]:
    """The markdown lines of one protocol's table: the protocol's classes, or, when the dataset labels only
    some of them, those classes with their own mean beside the protocol's (no columns that can only say n/a).
    """
    e = evaluator
    chosen = get_protocol(protocol, e.num_labels)
    shown = [i for i in chosen.class_indices if e.labelled_classes is None or i in e.labelled_classes]
    if len(shown) == len(chosen.class_indices):
        return [markdown_table({r.title: r.scores[chosen.name] for r in results})]
    own = Protocol(f"{e.dataset_label_space.name}, {len(shown)} classes", e.num_labels, tuple(shown))
    table = markdown_table(
        {r.title: scores_from_confusion_matrix(r.confusion, own, e.model_id2label) for r in results},
        extra_columns={f"mIoU ({chosen.name})": [r.scores[chosen.name].mean_iou for r in results]},
    )
    note = (
        f"Columns: the {len(shown)} classes `{e.dataset_label_space.name}` labels; `mIoU ({own.name})` averages "
        f"them. `mIoU ({chosen.name})` is protocol {chosen.name}'s mean over its {len(chosen.class_indices)} "
        "classes, where a class the dataset never labels counts 0 when predicted and is left out otherwise."
    )
    return [note, "", table]


def write_outputs(
    evaluator: Evaluator, results: list[Result], snapshots: list[dict], output_dir: Path
) -> None:
    """metrics.json, results.md and snapshots.json (main process only)."""
    # Each file whole or not at all, metrics.json (what the cards read) last.
    document = metrics_document(evaluator, results, snapshots)
    write_text_atomically(output_dir / RESULTS_FILE, results_markdown(evaluator, results, snapshots))
    if snapshots:
        write_text_atomically(output_dir / SNAPSHOTS_FILE, json.dumps(snapshots, indent=2) + "\n")
    write_text_atomically(output_dir / METRICS_FILE, json.dumps(document, indent=2) + "\n")


def parse_arguments(argv: Sequence[str] | None = None) -> EvaluationArguments:
    """Parse and check the command line."""
    (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses(args=argv)
    if bool(args.model) == bool(args.snapshots_dir):
        raise UsageError("pass exactly one of --model (one model) and --snapshots_dir (a stage's snapshots)")
    unknown = sorted(set(args.selection) - set(SELECTIONS))
    if unknown:
        raise UsageError(f"--selection: unknown rules {unknown}; expected some of {SELECTIONS}")
    if args.model and args.selection != ["last"]:
        raise UsageError("--selection chooses among snapshots: it needs --snapshots_dir")
    if args.input_size is not None and (len(args.input_size) != 2 or min(args.input_size) < 1):
        raise UsageError(f"--input_size takes HEIGHT WIDTH, got {args.input_size}")
    if args.normalization not in (None, *NORMALIZATIONS):
        raise UsageError(
            f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {args.normalization!r}"
        )
    if args.mixed_precision not in (None, "no", "fp16", "bf16"):
        raise UsageError(f"--mixed_precision must be no, fp16 or bf16, got {args.mixed_precision!r}")
    for name in ("max_images", "selection_max_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(
                f"--{name} must be at least 1 (or unset: every image), got {getattr(args, name)}"
            )
    if args.batch_size < 1 or args.num_pictures < 0:
        raise UsageError("--batch_size must be at least 1 and --num_pictures at least 0")
    if args.model:
        check_model_reference(args.model, "--model")
    return args


def evaluate_and_write(
    args: EvaluationArguments,
    accelerator: Accelerator,
    candidates: Sequence[Candidate] | None = None,
    run_config: dict | None = None,
) -> dict:
    """The evaluation of `evaluate_miou.py` and of the pipeline's eval stage: evaluate, write
    metrics.json, results.md and the pictures into `args.output_dir`, print the tables.

    Returns the metrics.json content (on every process).
    """
    with user_input():  # the model, the dataset and their label spaces, as the user named them
        evaluator = Evaluator(args, accelerator, candidates, run_config)
    results, snapshots = evaluator.run()
    output_dir = Path(args.output_dir)
    # Every process saves the pictures of the first rows it evaluated (no gathering of full-size maps).
    for result in results:
        save_pictures(
            evaluator.rows,
            result.predictions,
            evaluator.label_space,
            output_dir / PREDICTIONS_DIR / result.key,
            figures_folder=output_dir / FIGURES_DIR / result.key,
            title=result.title,
        )
    document = metrics_document(evaluator, results, snapshots)
    if accelerator.is_main_process:
        write_outputs(evaluator, results, snapshots, output_dir)
        print(results_markdown(evaluator, results, snapshots))
    accelerator.wait_for_everyone()
    return document


def main(argv: Sequence[str] | None = None) -> dict:
    """`training/evaluate_miou.py`: parse the command line, then `evaluate_and_write`."""
    logging.basicConfig(level=logging.WARNING)
    args = parse_arguments(argv)
    return evaluate_and_write(args, Accelerator(mixed_precision=args.mixed_precision))
