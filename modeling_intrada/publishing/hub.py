"""Publish a training run on the Hugging Face Hub: the segmenter (+ discriminators) and the ranking splits.

`push_run_to_hub(output_dir, hub_model_id, ...)` makes up to two commits, each in one piece:

- the **model repository** `hub_model_id`: G_intra (or G_inter) as saved by the run (`model.safetensors`,
  `config.json` with its `auto_map` and the modeling files, so `trust_remote_code=True` works, the image
  processor), its card (`cards.segmenter_card`, with the measured mIoU in the model index), the run's
  `config.yaml` and metrics under `run/`, and, with `push_discriminators=True`, the stage's discriminators in
  `discriminators/{aux,main}/` with their cards;
- the **dataset repository** `ranking_repo_id`: the ranking splits (`data/*.parquet`, whose pseudo labels are
  PNG bytes inside the Parquet files, `ranking.json`, `ranking.png`) with the card of `cards.ranking_card`.

Everything is checked and every card generated before anything is written. Then the cards of what is pushed
are written into their folders (README.md, as `cards.write_run_cards` writes them, now naming the repositories)
and the folders' files are uploaded as they are on disk: the card on the Hub is the card in the run folder.
Nothing else local is written, moved or deleted, so a failed upload loses nothing, and `PushError` says what
was pushed and what to retry.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub.repocard import RepoCard
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

from modeling_intrada.data.dataset_card import write_card
from modeling_intrada.errors import MissingInputError
from modeling_intrada.method.ranking import DATA_FILES as RANKING_DATA_FILES
from modeling_intrada.publishing.cards import RunSummary, run_cards
from modeling_intrada.run_layout import CARD_FILE, DISCRIMINATORS_DIR, LEVELS

MODEL_FILES_REQUIRED = ("config.json", "model.safetensors", "preprocessor_config.json")


class PushError(RuntimeError):
    """An upload failed. Nothing local was changed; the message names what to retry and how.

    Attributes:
        pushed: what was uploaded before the failure ("model" / "ranking splits") -> commit URL.
        failed: what failed -> the error's text.
        retry_command: a `training/push_to_hub.py` command that pushes only what failed.
    """

    def __init__(self, message: str, pushed: dict[str, str], failed: dict[str, str], retry_command: str):
        super().__init__(message)
        self.pushed, self.failed, self.retry_command = pushed, failed, retry_command


@dataclass
class UploadPlan:
    """One commit: the repository and its files (path in the repository -> local file), among them the cards,
    which are written into the run folder just before the upload."""

    what: str
    repo_id: str
    repo_type: str
    files: dict[str, Path] = field(default_factory=dict)
    cards: dict[Path, RepoCard] = field(default_factory=dict)

    def add_card(self, name: str, path: Path, cards: Mapping[Path, RepoCard]) -> None:
        """Upload the card of `path` (`cards[path]`) as `name`, from `path`, where it is written first."""
        self.files[name] = path
        self.cards[path] = cards[path]

    def describe(self) -> str:
        """One line per file: path in the repository <- where it comes from."""
        lines = [f"{self.what}: {self.repo_type} repository {self.repo_id}"]
        for name, source in sorted(self.files.items()):
            card = self.cards.get(source)
            written = f" (card, written before the upload: {len(str(card))} characters)" if card else ""
            lines.append(f"  {name} <- {source}{written}")
        return "\n".join(lines)


def _folder_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every file under `folder` (recursively), keyed by its path in the repository."""
    return {
        prefix + path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.name != ".DS_Store"
    }


def check_model_folder(folder: Path) -> None:
    """Refuse a model folder that would not load from the Hub: this project's models need their code
    (`auto_map`, for `trust_remote_code`), transformers' own classes (a SegFormer G) load without it.

    Raises:
        FileNotFoundError: a required file or a modeling file named by `auto_map` is missing.
        ValueError: `config.json` of this project's model has no `auto_map`.
    """
    missing = [name for name in MODEL_FILES_REQUIRED if not (folder / name).is_file()]
    if missing:
        raise MissingInputError(f"{folder} lacks {missing}: expected a folder written by save_pretrained")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES:
        return
    auto_map = config.get("auto_map")
    if not auto_map:
        raise ValueError(
            f"{folder / 'config.json'} has no auto_map: save the model with `modeling_intrada` imported, so "
            "that its code travels with it (trust_remote_code)"
        )
    modules = {reference.split(".")[0] for reference in auto_map.values()}
    absent = sorted(m + ".py" for m in modules if not (folder / f"{m}.py").is_file())
    if absent:
        raise MissingInputError(f"{folder}: auto_map names {absent}, which are not in the folder")


def plan_model_upload(
    run: RunSummary,
    repo_id: str,
    cards: Mapping[Path, RepoCard],
    *,
    stage: str,
    push_discriminators: bool = False,
) -> UploadPlan:
    """The files of the model repository: the stage's generator, its card, the run's files and, with
    `push_discriminators`, the stage's discriminators with theirs (`cards`: `cards.run_cards`)."""
    layout = run.layout
    folder = run.model_dir(stage)
    check_model_folder(folder)
    plan = UploadPlan("model", repo_id, "model", _folder_files(folder))
    plan.add_card(CARD_FILE, folder / CARD_FILE, cards)
    for path in (layout.config_file, layout.metrics_file, layout.results_file):
        if path.is_file():
            plan.files[f"run/{path.name}"] = path
    if push_discriminators:
        levels = [
            level for level in LEVELS if (layout.discriminator_dir(stage, level) / "config.json").is_file()
        ]
        if not levels:
            raise MissingInputError(
                f"push_discriminators: {layout.stage_dir(stage) / DISCRIMINATORS_DIR} holds no discriminator "
                "(aux/ or main/)"
            )
        for level in levels:
            folder, subfolder = layout.discriminator_dir(stage, level), f"{DISCRIMINATORS_DIR}/{level}"
            plan.files.update(_folder_files(folder, subfolder + "/"))
            # transformers looks for the `auto_map` code of `from_pretrained(repo, subfolder=...)` at the
            # repository root (transformers 5.x), so the discriminator's modeling files go there as well.
            for code in sorted(folder.glob("*.py")):
                plan.files.setdefault(code.name, code)
            plan.add_card(f"{subfolder}/{CARD_FILE}", folder / CARD_FILE, cards)
    return plan


def plan_ranking_upload(run: RunSummary, repo_id: str, cards: Mapping[Path, RepoCard]) -> UploadPlan:
    """The files of the ranking-splits dataset repository: Parquet, statistics, picture and card."""
    folder = run.layout.ranking_dir
    if not run.layout.ranking_summary.is_file() or not list(folder.glob(RANKING_DATA_FILES)):
        raise MissingInputError(
            f"{folder} is not a ranking-splits folder ({run.layout.ranking_summary.name} and {RANKING_DATA_FILES})"
        )
    plan = UploadPlan("ranking splits", repo_id, "dataset", _folder_files(folder))
    plan.add_card(CARD_FILE, folder / CARD_FILE, cards)
    return plan


def upload(
    plan: UploadPlan, *, private: bool = False, token: str | None = None, commit_message: str = ""
) -> str:
    """Create the repository if needed and commit every file of `plan` at once; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=private, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(source))
        for name, source in sorted(plan.files.items())
    ]
    info = api.create_commit(
        plan.repo_id,
        operations,
        commit_message=commit_message or f"Upload the IntraDA {plan.what}",
        repo_type=plan.repo_type,
    )
    return str(info.commit_url)


def _retry_command(
    output_dir: Path,
    hub_model_id: str | None,
    ranking_repo_id: str | None,
    failed: Sequence[str],
    *,
    stage: str,
    private: bool,
    push_discriminators: bool,
    metrics_files: Sequence[str | Path],
) -> str:
    words = ["python", "training/push_to_hub.py", "--output_dir", str(output_dir), "--stage", stage]
    if hub_model_id:
        words += ["--hub_model_id", hub_model_id]
    if "model" not in failed:
        words.append("--skip_model")
    if ranking_repo_id and "ranking splits" in failed:
        words += ["--ranking_repo_id", ranking_repo_id]
    if private:
        words.append("--private")
    if push_discriminators and "model" in failed:
        words.append("--push_discriminators")
    for path in metrics_files:
        words += ["--metrics_file", str(path)]
    return shlex.join(words)


def push_run_to_hub(
    output_dir: str | Path,
    hub_model_id: str | None,
    *,
    ranking_repo_id: str | None = None,
    stage: str | None = None,
    private: bool = False,
    push_discriminators: bool = False,
    push_model: bool = True,
    metrics_files: Iterable[str | Path] = (),
    token: str | None = None,
    commit_message: str = "",
    dry_run: bool = False,
) -> dict[str, str]:
    """Publish a run folder: the model repository and, with `ranking_repo_id`, the ranking-splits dataset.

    Args:
        output_dir: the run folder (`config.yaml`, `inter/`, `intra/`, `ranking/`, `eval/`).
        hub_model_id: the model repository ("user/name"); it also names the model in the ranking card.
        ranking_repo_id: the dataset repository for the ranking splits (None: not pushed).
        stage: "intra" or "inter": which generator is the model (default: G_intra when the run saved it).
        private: create the repositories private (an existing repository keeps its visibility).
        push_discriminators: also upload the stage's discriminators into `discriminators/{aux,main}/`.
        push_model: False to push only the ranking splits (e.g. to retry them alone).
        metrics_files: `evaluate_miou.py` outputs whose results on this run's models join the card.
        token: a Hub token (default: the one `huggingface_hub` finds).
        commit_message: the commits' message (default: "Upload the IntraDA model" / "... ranking splits").
        dry_run: plan and generate everything but write and upload nothing; the result maps each part to its
            plan.

    Returns:
        What was pushed ("model", "ranking splits") -> the commit URL (or the plan, for a dry run).

    Raises:
        FileNotFoundError / ValueError: the run folder lacks what was asked for (checked before any upload).
        PushError: an upload failed; the message says what was pushed and gives the command to retry the rest.
    """
    output_dir = Path(output_dir)
    metrics_files = list(metrics_files)
    if push_model and not hub_model_id:
        raise ValueError("hub_model_id is required unless push_model=False")
    if not push_model and not ranking_repo_id:
        raise ValueError("nothing to push: push_model=False and no ranking_repo_id")
    run = RunSummary.read(output_dir, metrics_files)
    stage = stage or run.latest_stage()
    # Everything is checked and generated before anything is written.
    cards = run_cards(run, repo_id=hub_model_id, stage=stage, ranking_repo_id=ranking_repo_id)
    plans = []
    if push_model:
        plans.append(
            plan_model_upload(run, hub_model_id, cards, stage=stage, push_discriminators=push_discriminators)
        )
    if ranking_repo_id:
        plans.append(plan_ranking_upload(run, ranking_repo_id, cards))
    if dry_run:
        return {plan.what: plan.describe() for plan in plans}
    for plan in plans:
        for path, card in plan.cards.items():
            write_card(card, path)
    pushed: dict[str, str] = {}
    failed: dict[str, str] = {}
    for plan in plans:
        try:
            pushed[plan.what] = upload(plan, private=private, token=token, commit_message=commit_message)
        except Exception as error:  # any failure of the network or the Hub: report it with the retry command
            failed[plan.what] = f"{type(error).__name__}: {error}"
    if failed:
        retry = _retry_command(
            output_dir,
            hub_model_id,
            ranking_repo_id,
            list(failed),
            stage=stage,
            private=private,
            push_discriminators=push_discriminators,
            metrics_files=metrics_files,
        )
        lines = [f"Upload of the {what} failed: {error}" for what, error in failed.items()]
        lines += [f"Pushed: the {what} -> {url}" for what, url in pushed.items()]
        lines += [
            f"Nothing local was changed but the pushed cards (README.md), which name their repositories: "
            f"{output_dir} is intact.",
            f"Retry what failed with: {retry}",
        ]
        raise PushError("\n".join(lines), pushed, failed, retry)
    return pushed
