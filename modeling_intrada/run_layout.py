"""Where a run keeps its outputs: the one definition of the run-folder layout.

    <output_dir>/
        config.yaml                         every option of the run, written after validation
        logs/                               tracker logs (TensorBoard)
        <stage>/                            a training stage: source (digits), inter, intra
            model/                          G (save_pretrained + image processor + README.md)
            discriminators/<level>/         one D per output level (aux, main; digits: main)
            checkpoints/checkpoint-<N>/     accelerate save_state, for --resume_from_checkpoint
            snapshots/iter_<NNNNNN>/        G every --snapshot_steps
            DONE                            the stage's completed step count, written last
        ranking/                            the ranking-splits dataset (Parquet + README.md + ranking.json)
        eval/                               metrics.json, results.md, predictions/, figures/

Training, evaluation, cards and publishing all read these names from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
LOGS_DIR = "logs"
MODEL_DIR = "model"
DISCRIMINATORS_DIR = "discriminators"
CHECKPOINTS_DIR = "checkpoints"
SNAPSHOTS_DIR = "snapshots"
DONE_FILE = "DONE"
RANKING_DIR = "ranking"
RANKING_SUMMARY_FILE = "ranking.json"
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
RESULTS_FILE = "results.md"
PREDICTIONS_DIR = "predictions"
FIGURES_DIR = "figures"
CARD_FILE = "README.md"

# `checkpoint-<step>` as in the Accelerate and diffusers examples; `checkpoint_<000020>` is read too, so that
# runs saved under that name still resume.
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_NAME_PATTERN = re.compile(r"^checkpoint(?:-|_)(\d+)$")

TRAINING_STAGES = ("source", "inter", "intra")
LEVELS = ("aux", "main")


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint saved after `step` optimizer steps: `checkpoint-<step>`."""
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder name (`checkpoint-20` or `checkpoint_000020`), or None for another name."""
    match = CHECKPOINT_NAME_PATTERN.match(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (nothing is created: these are names)."""

    output_dir: Path

    def __init__(self, output_dir: str | Path) -> None:
        object.__setattr__(self, "output_dir", Path(output_dir))

    @property
    def config_file(self) -> Path:
        return self.output_dir / CONFIG_FILE

    @property
    def logs_dir(self) -> Path:
        return self.output_dir / LOGS_DIR

    def stage_dir(self, stage: str) -> Path:
        """The folder of a training stage (`source`, `inter`, `intra`)."""
        return self.output_dir / stage

    def model_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / MODEL_DIR

    def discriminator_dir(self, stage: str, level: str) -> Path:
        return self.stage_dir(stage) / DISCRIMINATORS_DIR / level

    def checkpoints_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / CHECKPOINTS_DIR

    def snapshots_dir(self, stage: str) -> Path:
        return self.stage_dir(stage) / SNAPSHOTS_DIR

    def done_file(self, stage: str) -> Path:
        return self.stage_dir(stage) / DONE_FILE

    def has_model(self, stage: str) -> bool:
        """Whether the stage saved its G (a `config.json` in its model folder)."""
        return (self.model_dir(stage) / "config.json").is_file()

    @property
    def ranking_dir(self) -> Path:
        return self.output_dir / RANKING_DIR

    @property
    def ranking_summary(self) -> Path:
        return self.ranking_dir / RANKING_SUMMARY_FILE

    @property
    def eval_dir(self) -> Path:
        return self.output_dir / EVAL_DIR

    @property
    def metrics_file(self) -> Path:
        return self.eval_dir / METRICS_FILE

    @property
    def results_file(self) -> Path:
        return self.eval_dir / RESULTS_FILE
