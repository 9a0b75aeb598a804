"""What the shared stages (`modeling_intrada.training.pipeline`) ask of a task, and what every task shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from transformers import PreTrainedModel

from modeling_intrada.errors import MissingInputError, UsageError, load_pretrained
from modeling_intrada.method.adaptation import ClassificationTask, SegmentationTask
from modeling_intrada.method.ranking import RankingResult
from modeling_intrada.run_layout import RunLayout
from modeling_intrada.training.arguments import TASK_STAGES, Arguments, stage_settings
from modeling_intrada.training.stage_loop import StageSettings


def process_state() -> PartialState:
    """This process's place in the group, set up as `Accelerator` would: `ACCELERATE_USE_CPU=1` means CPU
    processes (a bare `PartialState()` ignores that flag and would leave every process thinking it is alone)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


class Run(ABC):
    """One run of one task: its options and folders, and how the task builds, trains, ranks and evaluates.

    The pipeline runs the stages; a task says, for each, what it is made of:

    - `stages`: the stages of `--stage all`, in order;
    - `training_inputs`, `new_discriminators`, `loop_task`, `save_generator`, `picture`: a training stage
      (G, its two streams, D, what the loop sees of G);
    - `ranking_images`, `ranking_options`, `ranking_report`, `target_description`: stage 2;
    - `evaluate`: the evaluation, its files and the cards.
    """

    model_class: ClassVar[type[PreTrainedModel]]
    picture: Callable[..., Any] | None = None  # (source batch, target batch, outputs) -> HxWx3 uint8

    def __init__(self, args: Arguments) -> None:
        self.args = args
        self.layout = RunLayout(args.run.output_dir)

    # ------------------------------------------------------------------------------------ shared
    @property
    def stages(self) -> tuple[str, ...]:
        """The stages `--stage all` runs, in order."""
        return TASK_STAGES[self.args.run.task]

    def settings(self, stage: str) -> StageSettings:
        """The numbers of a training stage (`arguments.stage_settings`)."""
        return stage_settings(self.args, stage)

    def adv_main_weight(self, stage: str) -> float:
        """The main level's adversarial weight of `stage` (stage 3: `intra_adv_main_weight` when given)."""
        run = self.args.run
        if stage == "intra" and run.intra_adv_main_weight is not None:
            return run.intra_adv_main_weight
        return run.adv_main_weight

    def model_path(self, stage: str) -> str:
        """Where the model a finished stage saved is (`inter` honours --inter_model)."""
        if stage == "inter" and self.args.run.inter_model:
            return self.args.run.inter_model
        if not self.layout.has_model(stage):
            hint = " or pass --inter_model" if stage == "inter" else ""
            raise MissingInputError(
                f"the {stage} model is not at {self.layout.model_dir(stage)}: run --stage {stage} first{hint}"
            )
        return str(self.layout.model_dir(stage))

    def load_model(self, stage: str) -> PreTrainedModel:
        """The model a finished stage saved (`inter`: or --inter_model)."""
        option = "--inter_model" if stage == "inter" and self.args.run.inter_model else f"the {stage} model"
        path = self.model_path(stage)
        self.check_saved_model(path, option)
        return load_pretrained(self.model_class.from_pretrained, path, option)

    def check_saved_model(self, path: str, option: str) -> dict[str, Any]:
        """Refuse a saved model of another architecture or label space, before anything is written; returns
        its config dict."""
        config, _ = load_pretrained(self.model_class.config_class.get_config_dict, path, option)
        self.check_model_type(config, f"{option} {path}")
        self.check_model_labels(config, f"{option} {path}")
        return config

    def check_model_type(self, config: dict[str, Any], where: str) -> None:
        """The task's architecture: from_pretrained would load nothing into a model of another one, and say so
        only in a log."""
        expected = self.model_class.config_class.model_type
        if config.get("model_type") != expected:
            raise UsageError(
                f"{where}: a {config.get('model_type')!r} model, expected {expected!r} (this run's "
                "architecture); pass a model saved by this task's stage"
            )

    def check_model_labels(self, config: dict[str, Any], where: str) -> None:
        """Refuse a saved model whose classes are not the run's (a task with a label space checks it)."""
        return None

    def save_generator(self, model: PreTrainedModel, folder: Path) -> None:
        """G as `from_pretrained` loads it (segmentation adds its image processor)."""
        model.save_pretrained(folder)

    # -------------------------------------------------------------------------------- per task
    @abstractmethod
    def training_inputs(
        self, stage: str, settings: StageSettings
    ) -> tuple[PreTrainedModel, torch.utils.data.Dataset, torch.utils.data.Dataset | None]:
        """G at the start of `stage`, its labelled stream and its unlabelled one."""

    @abstractmethod
    def new_discriminators(self, framework: str) -> list[PreTrainedModel]:
        """One new discriminator per output level, seeded from the run's seed."""

    @abstractmethod
    def loop_task(self, stage: str, framework: str) -> SegmentationTask | ClassificationTask:
        """What the stage loop sees of G (`SegmentationTask` or `ClassificationTask`)."""

    @abstractmethod
    def ranking_images(self) -> torch.utils.data.Dataset:
        """The unlabelled target training images stage 2 scores (with `.image(index)` for pictures)."""

    @abstractmethod
    def ranking_options(self) -> dict[str, Any]:
        """The task's keyword arguments of `rank_by_entropy`."""

    @abstractmethod
    def target_description(self) -> str:
        """The target training split, in words, for the ranking's card."""

    def ranking_report(
        self,
        result: RankingResult,
        images: torch.utils.data.Dataset,
        model: PreTrainedModel,
        device: torch.device,
    ) -> dict[str, Any]:
        """Entries to add to `ranking.json` (and print) on the main process; none by default."""
        return {}

    @abstractmethod
    def evaluate(self) -> dict[str, dict]:
        """The eval stage: score the trained models, write `eval/` (and cards); returns the results."""
