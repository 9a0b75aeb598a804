"""IntraDA on digits (paper section 4.3, SPEC section 8): the three stages on classifiers.

    python training/run_intrada.py --config training/configs/digits_mnist_to_usps.yaml [--stage S] [overrides]
    accelerate launch training/run_intrada.py --config training/configs/digits_mnist_to_usps.yaml

`run_intrada.py` hands every config with `task: digits` to `main` here. The stages run through the same
adversarial loop (`stage_loop.AdaptationStage`) and the same ranking (`modeling_intrada.method.ranking`) as the
segmentation program; only the task differs (`ClassificationTask`: the discriminator sees features).

The framework is **feature-level CyCADA**: a feature discriminator (fc 500 -> 500 -> 500 -> 1) on the
classifier's 500-d features (ADDA-like), trained jointly with the source cross-entropy in the stage loop,
with one encoder shared by both domains. CyCADA's pixel-level part (CycleGAN image translation and its
semantic-consistency loss) is not implemented. Like CyCADA and ADDA, adaptation starts from a classifier
trained on the source alone, which is also the "source only" row of the results.

Stages (`--stage all` runs them in this order):

    source   G on the labelled source only (the baseline, and the start of stage 1)
    inter    stage 1: source vs target, feature-level CyCADA -> G_inter
    rank     stage 2: R(X_t) = mean self-information of G_inter's softmax for every target training image,
             ascending; the first int(N * lambda) (lambda = 0.8) are easy and keep their argmax as pseudo label
    intra    stage 3: the same loop with easy (pseudo labels) vs hard, a new discriminator -> G_intra
    eval     accuracy of every trained model on the target (and source) test sets

Outputs under `--output_dir`:

    config.yaml                    every option (re-runnable with --config)
    source/model/                  the source-only classifier (save_pretrained)
    inter/model/, inter/discriminators/main/, inter/checkpoints/, inter/snapshots/
    ranking/                       the ranking-splits dataset (Parquet + card + ranking.json + ranking.png)
    intra/model/ ...               as inter/
    eval/metrics.json, eval/results.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env, set_seed
from transformers import HfArgumentParser

from modeling_intrada import (
    DigitClassifier,
    DigitClassifierConfig,
    FeatureDiscriminator,
    FeatureDiscriminatorConfig,
)
from modeling_intrada.data.digits import DigitsSplit, RandomAffine, load_digits
from modeling_intrada.evaluation.segmentation import sharded_batches
from modeling_intrada.labels import DIGITS
from modeling_intrada.method.adaptation import CLASSIFIER_FRAMEWORKS, ClassificationTask, check_framework
from modeling_intrada.method.ranking import check_lambda, load_ranking, rank_by_entropy, save_ranking
from modeling_intrada.training.stage_loop import AdaptationStage, StageSettings, list_checkpoints

logger = logging.getLogger("digits_pipeline")
TASK = "digits"
STAGES = ("source", "inter", "rank", "intra", "eval", "all")
AUGMENTATIONS = ("none", "affine")
AUGMENTED_STAGES = ("source", "inter", "intra")  # the stages that train on labelled images
# What the augmentation is made of: options that change nothing with `augmentation: none`.
AUGMENTATION_OPTIONS = (
    "augmentation_stages",
    "augment_target",
    "affine_degrees",
    "affine_translate",
    "affine_scale",
)
DONE_FILE = "DONE"
FRAMEWORK_NAMES = {
    "feature": "feature-level CyCADA",
    "scores": "feature-level CyCADA on class scores",
    "advent": "AdvEnt on class scores",
    "adaptsegnet": "softmax alignment",
    "minent": "MinEnt",
    "source_only": "no adaptation",
}


@dataclass
class DigitsModelArguments:
    """The classifier and where each stage starts from."""

    architecture: str = field(
        default="lenet",
        metadata={"help": "lenet (MNIST<->USPS, 28x28 grey) | dtn (SVHN->MNIST, 32x32 RGB)"},
    )
    inter_init: str = field(
        default="source",
        metadata={"help": "start of stage 1: source (the source-only model, as CyCADA/ADDA) | scratch"},
    )
    intra_init: str = field(
        default="inter",
        metadata={"help": "start of G_intra: inter (G_inter) | source (the source-only model) | scratch"},
    )
    inter_model: str | None = field(
        default=None,
        metadata={"help": "G_inter to use instead of <output_dir>/inter/model (folder or Hub id)"},
    )


@dataclass
class DigitsDataArguments:
    """Built digits datasets (`dataset_scripts/digits.py` folders or Hub ids)."""

    source_dataset: str = field(default="data/mnist", metadata={"help": "labelled source"})
    target_dataset: str = field(
        default="data/usps",
        metadata={"help": "target: its train split unlabelled for training, its test split for evaluation"},
    )
    train_split: str = field(default="train")
    test_split: str = field(default="test")
    max_source_samples: int | None = field(default=None, metadata={"help": "first N source training rows"})
    max_target_samples: int | None = field(default=None, metadata={"help": "first N target training rows"})
    max_test_samples: int | None = field(default=None, metadata={"help": "first N rows of each test split"})


@dataclass
class DigitsTrainingArguments:
    """Stages, frameworks and optimisation."""

    output_dir: str = field(default="outputs/digits")
    stage: str = field(default="all", metadata={"help": "source | inter | rank | intra | eval | all"})
    framework: str = field(
        default="feature",
        metadata={
            "help": "stage 1: feature (feature-level CyCADA: D on the features) | scores (D on the class scores, "
            "as CyCADA's code) | advent | adaptsegnet | minent | source_only"
        },
    )
    intra_framework: str | None = field(default=None, metadata={"help": "stage 3 (default: as stage 1)"})
    intra_supervised_loss: bool = field(
        default=True,
        metadata={"help": "stage 3 cross-entropy on the pseudo labels (False: adversarial only)"},
    )
    source_num_iterations: int = field(
        default=1500, metadata={"help": "steps of the source-only stage (0: no source stage)"}
    )
    num_iterations: int = field(default=2000, metadata={"help": "steps of stage 1"})
    intra_num_iterations: int | None = field(
        default=None, metadata={"help": "steps of stage 3 (default: same)"}
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "G's learning rate (stages 1 and 3)"})
    source_learning_rate: float | None = field(
        default=None, metadata={"help": "G's learning rate in the source-only stage (default: learning_rate)"}
    )
    generator_optimizer: str = field(default="adam", metadata={"help": "adam | sgd"})
    momentum: float = field(default=0.9, metadata={"help": "SGD only"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD only"})
    disc_learning_rate: float = field(default=2e-4)
    betas: list[float] = field(
        default_factory=lambda: [0.5, 0.999], metadata={"help": "Adam betas of G and D"}
    )
    lr_power: float = field(default=0.9, metadata={"help": "poly decay over each stage (0: constant)"})
    adv_weight: float = field(default=0.1, metadata={"help": "weight of the adversarial term in G's loss"})
    intra_adv_weight: float | None = field(default=None, metadata={"help": "stage 3 (default: adv_weight)"})
    lambda_easy: float = field(default=0.8, metadata={"help": "easy fraction of the ranking (paper: 0.8)"})
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
    batch_size: int = field(default=64, metadata={"help": "images per domain per process per step"})
    eval_batch_size: int = field(default=500)
    gradient_accumulation_steps: int = field(default=1)
    max_grad_norm: float | None = field(default=None)
    mixed_precision: str = field(default="no", metadata={"help": "no | fp16 | bf16"})
    seed: int = field(default=0)
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (None: torch's)"})
    checkpointing_steps: int | None = field(default=None)
    checkpoints_total_limit: int | None = field(default=None)
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "latest | PATH"})
    snapshot_steps: int | None = field(default=None)
    log_steps: int = field(default=50)
    report_to: str | None = field(default=None, metadata={"help": "tensorboard (or another tracker)"})


ALL_ARGUMENTS = (DigitsModelArguments, DigitsDataArguments, DigitsTrainingArguments)


def default_options() -> dict:
    """Every option of the digits pipeline at its default, plus `task: digits` (as `DigitsRun.config`)."""
    fields = [f for arguments in ALL_ARGUMENTS for f in dataclasses.fields(arguments)]
    defaults = {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for f in fields
    }
    return {"task": TASK, **defaults}


def comparable_options(config: dict) -> dict:
    """A run's options (its config.yaml) as they bear on what it trains: the options it lacks (added to the
    pipeline since) at their defaults; without the output folder, and without the augmentation's own
    options when it has none."""
    options = {**default_options(), **config}
    left_out = {"output_dir", *(AUGMENTATION_OPTIONS if options["augmentation"] == "none" else ())}
    return {key: value for key, value in options.items() if key not in left_out}


def parse_digits_arguments(
    argv: Sequence[str],
) -> tuple[DigitsModelArguments, DigitsDataArguments, DigitsTrainingArguments]:
    """`--config FILE.yaml` (with `task: digits`) gives defaults; other options override it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(list(argv))
    parser = HfArgumentParser(ALL_ARGUMENTS)
    parser.add_argument("--config", default=None, help="YAML file with `task: digits` and any option below")
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of option: value, got {type(values).__name__}")
        task = values.pop("task", TASK)
        if task != TASK:
            raise ValueError(f"{path}: task is {task!r}; the digits pipeline runs `task: {TASK}` configs")
        known_fields = {f.name for cls in ALL_ARGUMENTS for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known_fields)
        if unknown:
            raise ValueError(
                f"{path}: unknown options {unknown}; see `run_intrada.py --config {path} --help`"
            )
        parser.set_defaults(**values)
    model_args, data_args, args = parser.parse_args_into_dataclasses(args=rest)[:3]
    validate(model_args, data_args, args)
    return model_args, data_args, args


def validate(
    model_args: DigitsModelArguments, data_args: DigitsDataArguments, args: DigitsTrainingArguments
) -> None:
    """Refuse inconsistent settings early, saying what was expected."""
    DigitClassifierConfig(architecture=model_args.architecture)  # raises on an unknown architecture
    if args.stage not in STAGES:
        raise ValueError(f"--stage must be one of {STAGES}, got {args.stage!r}")
    check_framework(args.framework)
    if args.intra_framework is not None:
        check_framework(args.intra_framework)
    check_lambda(args.lambda_easy)
    if model_args.inter_init not in ("source", "scratch"):
        raise ValueError(f"--inter_init must be source or scratch, got {model_args.inter_init!r}")
    if model_args.intra_init not in ("inter", "source", "scratch"):
        raise ValueError(f"--intra_init must be inter, source or scratch, got {model_args.intra_init!r}")
    if min(args.source_num_iterations, args.num_iterations, args.intra_num_iterations or 0) < 0:
        raise ValueError("iteration counts must be >= 0")
    for name in ("max_source_samples", "max_target_samples", "max_test_samples"):
        if getattr(data_args, name) is not None and getattr(data_args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(data_args, name)}")
    if args.source_num_iterations == 0 and "source" in (model_args.inter_init, model_args.intra_init):
        raise ValueError(
            "source_num_iterations is 0 (no source stage) but inter_init or intra_init is 'source'"
        )
    if args.mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {args.mixed_precision!r}")
    if args.batch_size < 1 or args.eval_batch_size < 1:
        raise ValueError("batch sizes must be at least 1")
    if len(args.betas) != 2:
        raise ValueError(f"--betas takes two numbers, got {args.betas}")
    if args.num_threads is not None and args.num_threads < 1:
        raise ValueError(f"--num_threads must be at least 1, got {args.num_threads}")
    if args.augmentation not in AUGMENTATIONS:
        raise ValueError(f"--augmentation must be one of {AUGMENTATIONS}, got {args.augmentation!r}")
    if args.augmentation == "affine":
        affine_augmentation(args)  # raises on out-of-range parameters
    unknown = sorted(set(args.augmentation_stages) - set(AUGMENTED_STAGES))
    if unknown:
        raise ValueError(f"--augmentation_stages takes source, inter and/or intra, got {unknown}")


def augments(args: DigitsTrainingArguments, stage: str, labelled: bool = True) -> bool:
    """Whether `stage` augments its labelled stream (`labelled`) or its unlabelled one."""
    return (
        args.augmentation != "none"
        and stage in args.augmentation_stages
        and (labelled or args.augment_target)
    )


def affine_augmentation(args: DigitsTrainingArguments) -> RandomAffine:
    """The `RandomAffine` of `--augmentation affine`, from the `affine_*` options."""
    if len(args.affine_scale) != 2:
        raise ValueError(f"--affine_scale takes two numbers (low high), got {args.affine_scale}")
    return RandomAffine(args.affine_degrees, args.affine_translate, tuple(args.affine_scale))


class DigitsRun:
    """The resolved inputs of one digits run: the classifier's input, the datasets, the folders."""

    def __init__(
        self, model_args: DigitsModelArguments, data_args: DigitsDataArguments, args: DigitsTrainingArguments
    ) -> None:
        self.model_args, self.data_args, self.args = model_args, data_args, args
        self.output_dir = Path(args.output_dir)
        self.classifier_config = DigitClassifierConfig(
            architecture=model_args.architecture, id2label=DIGITS.id2label
        )

    def config(self) -> dict:
        """Every option of the run, plus `task: digits`, for config.yaml and the trackers."""
        values = {"task": TASK}
        for arguments in (self.model_args, self.data_args, self.args):
            values.update(dataclasses.asdict(arguments))
        return values

    def stage_dir(self, stage: str) -> Path:
        return self.output_dir / stage

    def digits(self, which: str, split: str, with_labels: bool) -> DigitsSplit:
        """`which` = source or target, at the classifier's input size."""
        d, c = self.data_args, self.classifier_config
        source = d.source_dataset if which == "source" else d.target_dataset
        limit = (
            d.max_test_samples
            if split == d.test_split
            else (d.max_source_samples if which == "source" else d.max_target_samples)
        )
        return load_digits(
            source, split, c.image_size, c.num_channels, with_labels=with_labels, max_samples=limit
        )

    def for_training(self, split: DigitsSplit, stage: str, labelled: bool = True) -> DigitsSplit:
        """`split` with the run's augmentation, if any applies to this stream (the unlabelled stream only
        with --augment_target); the draws depend on the run's seed, the stage and the stream."""
        if not augments(self.args, stage, labelled):
            return split
        seed = self.args.seed * 100 + STAGES.index(stage) * 10 + int(not labelled)
        return split.augmented(affine_augmentation(self.args), seed=seed)

    def new_classifier(self, seed: int) -> DigitClassifier:
        set_seed(seed)
        return DigitClassifier(self.classifier_config)

    def load_classifier(self, stage: str) -> DigitClassifier:
        """The model a finished stage saved (`inter` honours --inter_model)."""
        if stage == "inter" and self.model_args.inter_model:
            return DigitClassifier.from_pretrained(self.model_args.inter_model)
        path = self.stage_dir(stage) / "model"
        if not (path / "config.json").is_file():
            hint = " or pass --inter_model" if stage == "inter" else ""
            raise FileNotFoundError(f"the {stage} model is not at {path}: run --stage {stage} first{hint}")
        return DigitClassifier.from_pretrained(path)

    def settings(self, stage: str) -> StageSettings:
        a = self.args
        framework, iterations, supervised = {
            "source": ("source_only", a.source_num_iterations, True),
            "inter": (a.framework, a.num_iterations, True),
            "intra": (
                a.intra_framework or a.framework,
                a.num_iterations if a.intra_num_iterations is None else a.intra_num_iterations,
                a.intra_supervised_loss,
            ),
        }[stage]
        return StageSettings(
            framework=framework,
            segmentation_loss=supervised,
            num_iterations=iterations,
            max_iters=max(iterations, 1),  # the poly schedule spans the stage
            learning_rate=a.source_learning_rate
            if stage == "source" and a.source_learning_rate is not None
            else a.learning_rate,
            momentum=a.momentum,
            weight_decay=a.weight_decay,
            generator_optimizer=a.generator_optimizer,
            disc_learning_rate=a.disc_learning_rate,
            disc_betas=tuple(a.betas),
            lr_power=a.lr_power,
            gradient_accumulation_steps=a.gradient_accumulation_steps,
            max_grad_norm=a.max_grad_norm,
            checkpointing_steps=a.checkpointing_steps,
            checkpoints_total_limit=a.checkpoints_total_limit,
            snapshot_steps=a.snapshot_steps,
            log_steps=a.log_steps,
            seed=a.seed,
        )

    def task(self, stage: str, framework: str) -> ClassificationTask:
        a = self.args
        weight = a.intra_adv_weight if stage == "intra" and a.intra_adv_weight is not None else a.adv_weight
        return ClassificationTask(framework=framework, adv_weight=weight)

    def new_discriminator(self, framework: str, seed: int) -> FeatureDiscriminator:
        set_seed(seed + 1)
        c = self.classifier_config
        # feature: the classifier's features; scores / advent / adaptsegnet: a vector over the classes.
        size = c.feature_size if framework == "feature" else c.num_labels
        return FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=size))


def make_accelerator(run: DigitsRun, stage: str, framework: str) -> Accelerator:
    """The stage's Accelerator. With `feature`, the adversarial loss never reaches the classifier's last
    layer, so in multi-process runs DDP must be told that some parameters get no gradient in the
    synchronising backward (their source gradients, accumulated under `no_sync`, are still reduced)."""
    args = run.args
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
        project_dir=str(run.output_dir / "logs"),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=framework == "feature")],
    )
    if args.report_to:
        config = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in run.config().items()
        }
        accelerator.init_trackers(f"digits-{stage}", config=config)
    return accelerator


# ------------------------------------------------------------------------------------------------ stages
def adaptation_stage(
    run: DigitsRun, stage: str, generator: DigitClassifier, source: DigitsSplit, target: DigitsSplit | None
) -> Path:
    """The source stage, stage 1 or stage 3 through the one loop; saves G and D with save_pretrained."""
    folder = run.stage_dir(stage)
    settings = run.settings(stage)
    accelerator = make_accelerator(run, stage, settings.framework)
    discriminators = (
        [run.new_discriminator(settings.framework, run.args.seed)] if settings.uses_discriminators else []
    )
    loop = AdaptationStage(
        accelerator,
        run.task(stage, settings.framework),
        generator,
        discriminators,
        source=(source, run.args.batch_size),
        target=(target, run.args.batch_size) if settings.uses_target else None,
        settings=settings,
        output_dir=folder,
    )
    resume = run.args.resume_from_checkpoint
    if resume == "latest" and not list_checkpoints(folder / "checkpoints"):
        resume = None  # nothing of this stage to resume: start it
    loop.run(resume_from_checkpoint=resume)
    if accelerator.is_main_process:
        accelerator.unwrap_model(loop.generator).save_pretrained(folder / "model")
        for name, d in zip(loop.task.level_names, loop.discriminators):
            accelerator.unwrap_model(d).save_pretrained(folder / "discriminators" / name)
        (folder / DONE_FILE).write_text(f"{loop.completed_steps}\n")
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # not `end_training`: it would also end the process group
        tracker.finish()
    return folder / "model"


def source_stage(run: DigitsRun) -> Path:
    """G trained on the labelled source alone: the source-only baseline and CyCADA's starting point."""
    if run.args.source_num_iterations == 0:
        raise ValueError("--stage source with source_num_iterations 0 trains nothing")
    generator = run.new_classifier(run.args.seed)
    source = run.for_training(run.digits("source", run.data_args.train_split, True), "source")
    return adaptation_stage(run, "source", generator, source, None)


def inter_stage(run: DigitsRun) -> Path:
    """Stage 1: labelled source vs unlabelled target training images (their labels never reach training)."""
    d = run.data_args
    if run.model_args.inter_init == "source":
        generator = run.load_classifier("source")
    else:
        generator = run.new_classifier(run.args.seed)
    source = run.for_training(run.digits("source", d.train_split, with_labels=True), "inter")
    target = run.for_training(run.digits("target", d.train_split, with_labels=False), "inter", labelled=False)
    return adaptation_stage(run, "inter", generator, source, target)


def classifier_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The class scores (batch, C) the ranking scores: R is their mean self-information over classes."""
    return model(pixel_values=pixel_values).logits


def _autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)


def rank_stage(run: DigitsRun) -> Path:
    """Stage 2: score every target training image with G_inter, split easy/hard, write the ranking splits."""
    a, d = run.args, run.data_args
    accelerator = Accelerator(mixed_precision=a.mixed_precision)
    model = run.load_classifier("inter").to(accelerator.device)
    images = run.digits("target", d.train_split, with_labels=False)
    batches = sharded_batches(images, a.eval_batch_size, accelerator.process_index, accelerator.num_processes)
    result = rank_by_entropy(
        model,
        batches,
        lambda_easy=a.lambda_easy,
        predict=classifier_logits,
        device=accelerator.device,
        autocast_dtype=_autocast_dtype(a.mixed_precision),
        accelerator=accelerator,
    )
    folder = run.stage_dir("ranking")
    if accelerator.is_main_process:
        save_ranking(
            result,
            folder,
            target_dataset=f"{d.target_dataset} ({d.train_split})",
            model_name=run.model_args.inter_model or str(run.stage_dir("inter") / "model"),
            image_loader=images.image,
        )
        check = label_check(run, result, model, accelerator.device)
        summary = json.loads((folder / "ranking.json").read_text())
        summary["target_label_check"] = check
        (folder / "ranking.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(
            f"ranking: {result.num_easy} easy / {result.num_hard} hard (lambda {result.lambda_easy}); "
            f"G_inter accuracy on the easy part {check['easy_accuracy']:.2f} %, on the hard part "
            f"{check['hard_accuracy']:.2f} % (target labels read for this report only) -> {folder}"
        )
    accelerator.wait_for_everyone()
    return folder


@torch.inference_mode()
def label_check(run: DigitsRun, result, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
    """How right G_inter is on the easy part (its pseudo labels) and on the hard part, in %.

    This reads the target training labels, **for the report only**: nothing of it reaches training. It shows
    whether the entropy ranking separates reliable predictions from unreliable ones.
    """
    labelled = run.digits("target", run.data_args.train_split, with_labels=True)
    row_of = {image_id: row for row, image_id in enumerate(labelled.ids)}
    easy = [(row_of[i], p) for i, p, s in zip(result.ids, result.pseudo_labels, result.splits) if s == "easy"]
    hard_rows = [row_of[i] for i, s in zip(result.ids, result.splits) if s == "hard"]
    easy_correct = sum(int(labelled.labels[row]) == int(label) for row, label in easy)
    hard = labelled.subset(hard_rows, labelled.labels[hard_rows].tolist()) if hard_rows else None
    hard_correct = count_correct(model, hard, run.args.eval_batch_size, device) if hard is not None else 0
    return {
        "easy_accuracy": 100.0 * easy_correct / max(len(easy), 1),
        "hard_accuracy": 100.0 * hard_correct / len(hard_rows) if hard_rows else float("nan"),
        "num_easy": len(easy),
        "num_hard": len(hard_rows),
    }


@torch.inference_mode()
def count_correct(model: torch.nn.Module, split: DigitsSplit, batch_size: int, device: torch.device) -> int:
    """Correct argmax predictions of `model` (eval mode) on a labelled split, on one process."""
    model.eval()
    correct = 0
    for start in range(0, len(split), batch_size):
        rows = range(start, min(start + batch_size, len(split)))
        pixel_values = torch.stack([split[i]["pixel_values"] for i in rows]).to(device)
        labels = split.labels[start : start + len(rows)].to(device)
        correct += int((model(pixel_values=pixel_values).logits.argmax(dim=1) == labels).sum())
    return correct


def intra_stage(run: DigitsRun) -> Path:
    """Stage 3: easy target images with their pseudo labels as "source", hard ones as "target" (SPEC 5)."""
    ranking = load_ranking(run.stage_dir("ranking"))
    target = run.digits("target", run.data_args.train_split, with_labels=False)
    row_of = {image_id: row for row, image_id in enumerate(target.ids)}
    unknown = [i for i in ranking.easy_ids + ranking.hard_ids if i not in row_of]
    if unknown:
        raise ValueError(
            f"{len(unknown)} ids of the ranking are not in the target training split, e.g. {unknown[:3]}: "
            "was the ranking computed on another dataset or subset?"
        )
    pseudo = dict(zip(ranking.table["id"], ranking.table["pseudo_label"]))  # one read, not one per image
    easy = target.subset(
        [row_of[i] for i in ranking.easy_ids], [int(pseudo[i]) for i in ranking.easy_ids], name="easy"
    )
    easy = run.for_training(easy, "intra")
    hard = run.for_training(target.subset([row_of[i] for i in ranking.hard_ids], name="hard"), "intra", False)
    settings = run.settings("intra")
    if settings.uses_target and len(hard) == 0:
        raise ValueError(
            f"lambda_easy={run.args.lambda_easy} leaves no hard image; use intra_framework source_only "
            "(self-training only) or a smaller lambda"
        )
    init = run.model_args.intra_init
    generator = run.new_classifier(run.args.seed + 2) if init == "scratch" else run.load_classifier(init)
    return adaptation_stage(run, "intra", generator, easy, hard if settings.uses_target else None)


@torch.inference_mode()
def accuracy(model: torch.nn.Module, split: DigitsSplit, accelerator: Accelerator, batch_size: int) -> float:
    """Top-1 accuracy in % over `split`, batches sharded across processes and the counts summed."""
    device = accelerator.device
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in sharded_batches(split, batch_size, accelerator.process_index, accelerator.num_processes):
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits
        labels = torch.as_tensor(batch["labels"], device=device)
        counts += torch.stack(
            [(logits.argmax(dim=1) == labels).sum().double(), counts.new_tensor(len(labels))]
        )
    counts = accelerator.reduce(counts, reduction="sum")
    return float(100.0 * counts[0] / counts[1].clamp(min=1))


def model_rows(run: DigitsRun) -> list[tuple[str, str]]:
    """(name, stage) of every model this run has trained, in pipeline order."""
    framework = FRAMEWORK_NAMES[run.args.framework]
    intra_framework = FRAMEWORK_NAMES[run.args.intra_framework or run.args.framework]
    candidates = [
        ("source only", "source"),
        (f"inter-domain only (G_inter, {framework})", "inter"),
        (f"IntraDA (G_intra, {intra_framework})", "intra"),
    ]
    rows = []
    for name, stage in candidates:
        given = stage == "inter" and run.model_args.inter_model
        if given or (run.stage_dir(stage) / "model" / "config.json").is_file():
            rows.append((name, stage))
    return rows


def eval_stage(run: DigitsRun) -> dict[str, dict]:
    """Accuracy of every trained model on the target test set (and the source test set, as a check)."""
    a, d = run.args, run.data_args
    accelerator = Accelerator(mixed_precision=a.mixed_precision)
    target_test = run.digits("target", d.test_split, with_labels=True)
    source_test = run.digits("source", d.test_split, with_labels=True)
    results = {}
    for name, stage in model_rows(run):
        model = run.load_classifier(stage).to(accelerator.device)
        results[name] = {
            "stage": stage,
            "target_accuracy": accuracy(model, target_test, accelerator, a.eval_batch_size),
            "source_accuracy": accuracy(model, source_test, accelerator, a.eval_batch_size),
        }
    if accelerator.is_main_process and results:
        folder = run.stage_dir("eval")
        folder.mkdir(parents=True, exist_ok=True)
        metrics = {
            "target_test": f"{d.target_dataset} ({d.test_split}, {len(target_test)} images)",
            "source_test": f"{d.source_dataset} ({d.test_split}, {len(source_test)} images)",
            "seed": a.seed,
            "models": results,
        }
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        for name, row in results.items():
            if not (row["stage"] == "inter" and run.model_args.inter_model):
                card = model_card(run, name, row, metrics)
                (run.stage_dir(row["stage"]) / "model" / "README.md").write_text(card)
        table = accuracy_table(results)
        (folder / "results.md").write_text(
            f"# Accuracy: {d.source_dataset} -> {d.target_dataset}, seed {a.seed}\n\n"
            f"Target test: {metrics['target_test']}; source test: {metrics['source_test']}. "
            "Last iterate of each stage (no selection on test labels).\n\n" + table + "\n"
        )
        print("\n" + table)
    accelerator.wait_for_everyone()
    return results


FRAMEWORK_DETAILS = {
    "feature": "a discriminator on the classifier's {c.feature_size}-d features (ADDA-like); CyCADA's "
    "pixel-level (CycleGAN) part is not implemented",
    "scores": "a discriminator on the classifier's {c.num_labels} class scores, as CyCADA's released ADDA "
    "code; CyCADA's pixel-level (CycleGAN) part is not implemented",
    "advent": "a discriminator on the weighted self-information of the class scores",
    "adaptsegnet": "a discriminator on the softmax of the class scores",
    "minent": "entropy minimisation on the target, no discriminator",
    "source_only": "no adaptation term",
}
STAGE_DESCRIPTIONS = {
    "source": "trained on the labelled source only (the baseline, and the start of stage 1)",
    "inter": "IntraDA stage 1 (G_inter): source vs target, {framework}",
    "intra": "IntraDA stage 3 (G_intra): easy target images with G_inter's pseudo labels vs hard ones, {framework}",
}


def augmentation_summary(args: DigitsTrainingArguments, stage: str) -> str:
    """The augmentation of `stage`'s training images in words, for cards."""
    if not augments(args, stage):
        return "none"
    low, high = args.affine_scale
    streams = "all training images" if args.augment_target else "the labelled training images"
    return (
        f"random affine of {streams}: rotation up to {args.affine_degrees:g} degrees, zoom {low:g} to "
        f"{high:g}, shift up to {args.affine_translate:.0%} of the side"
    )


def model_card(run: DigitsRun, name: str, row: dict, metrics: dict) -> str:
    """A model card (README.md) for one trained classifier, with its measured accuracy."""
    a, d, c = run.args, run.data_args, run.classifier_config
    framework_key = run.settings(row["stage"]).framework
    framework = FRAMEWORK_NAMES[framework_key]
    stage = STAGE_DESCRIPTIONS[row["stage"]].format(framework=framework)
    source, target = Path(d.source_dataset).name, Path(d.target_dataset).name
    tag = (
        "feature-level-cycada" if framework_key in CLASSIFIER_FRAMEWORKS else framework_key.replace("_", "-")
    )
    return f"""---
library_name: transformers
pipeline_tag: image-classification
tags:
- intrada
- domain-adaptation
- digits
- {tag}
metrics:
- accuracy
---

# {c.architecture} digit classifier, {source} -> {target}: {name}

Unsupervised domain adaptation of digit classifiers with IntraDA (Pan et al., CVPR 2020, section 4.3),
as implemented by the `intrada-hf` project (`modeling_intrada/training/digits.py`, docs/digits.md).

- **Stage:** {stage}.
- **Framework:** {framework}: {FRAMEWORK_DETAILS[framework_key].format(c=c)}.
- **Architecture:** `DigitClassifier` ({c.architecture}), input {c.num_channels}x{c.image_size}x{c.image_size},
  `pixel_values = (x / 255 - 0.5) / 0.5`. USPS 16x16 digits are resized bilinearly to the input size.
- **Training augmentation:** {augmentation_summary(a, row["stage"])}.
- **Seed:** {a.seed}.

## Evaluation

Last iterate of the stage, no selection on test labels.

| test set | accuracy (%) |
|---|---:|
| target: {metrics["target_test"]} | {row["target_accuracy"]:.2f} |
| source: {metrics["source_test"]} | {row["source_accuracy"]:.2f} |

## Use

```python
import modeling_intrada  # or trust_remote_code=True
from transformers import AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("<this folder or repo id>").eval()
prediction = model(pixel_values=pixel_values).logits.argmax(-1)
```

The run's options are in its `config.yaml`.
"""


def accuracy_table(results: dict[str, dict]) -> str:
    """Markdown: one row per model, target and source test accuracy in %."""
    lines = ["| model | target test accuracy (%) | source test accuracy (%) |", "|---|---:|---:|"]
    lines += [
        f"| {n} | {r['target_accuracy']:.2f} | {r['source_accuracy']:.2f} |" for n, r in results.items()
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse the options, save config.yaml, run the stages asked for; returns the eval results (if run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, args = parse_digits_arguments(argv)
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    run = DigitsRun(model_args, data_args, args)
    # As `Accelerator` would: ACCELERATE_USE_CPU=1 (accelerate launch --cpu) means CPU processes.
    if PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        (run.output_dir / "config.yaml").write_text(yaml.safe_dump(run.config(), sort_keys=False))
    if args.stage == "all":
        stages = ["inter", "rank", "intra", "eval"]
        if args.source_num_iterations > 0:
            stages.insert(0, "source")
    else:
        stages = [args.stage]
    results: dict = {}
    for stage in stages:
        done = (run.stage_dir(stage) / DONE_FILE).is_file()
        if (
            args.stage == "all"
            and stage in ("source", "inter", "intra")
            and done
            and args.resume_from_checkpoint
        ):
            print(f"{stage}: already complete in {run.stage_dir(stage)}, skipped")
            continue
        if stage == "source":
            source_stage(run)
        elif stage == "inter":
            inter_stage(run)
        elif stage == "rank":
            rank_stage(run)
        elif stage == "intra":
            intra_stage(run)
        else:
            results = eval_stage(run)
    return results
