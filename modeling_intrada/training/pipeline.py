"""IntraDA's stages as one Accelerate program, for every task.

    accelerate launch training/run_intrada.py [--config FILE.yaml] [--task segmentation|digits] [--stage S] [overrides]

With no arguments it runs the whole segmentation pipeline on the embedded synthetic default (built on first
use) with a small backbone and prints the table of mIoU per stage. `task: digits` (paper section 4.3) runs
the same stages on digit classifiers, after a source-only stage. A task (`modeling_intrada.training.tasks`)
says how to build G and D, which data each stage reads, how to rank and to evaluate; the stages are here.
Outputs under `--output_dir` (`modeling_intrada.run_layout`):

    config.yaml               every option of the run (re-runnable with --config)
    source/model/             digits: the source-only classifier
    inter/model/              G_inter (save_pretrained; segmentation: + image processor), inter/discriminators/
    inter/checkpoints/, inter/snapshots/iter_XXXXXX/
    ranking/                  the ranking-splits dataset (Parquet + card + ranking.json + ranking.png)
    intra/model/ ...          G_intra, as inter/
    eval/                     metrics.json, results.md (segmentation: predictions of the first images)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs

from modeling_intrada.atomic import atomic_folder, write_text_atomically
from modeling_intrada.errors import MissingInputError, NonFiniteLossError, UsageError
from modeling_intrada.evaluation.segmentation import sharded_batches
from modeling_intrada.method.ranking import check_ranking_folder, rank_by_entropy, save_ranking
from modeling_intrada.publishing.cards import write_run_cards
from modeling_intrada.publishing.hub import push_run_to_hub
from modeling_intrada.run_layout import TRAINING_STAGES
from modeling_intrada.training.arguments import parse_arguments, run_config
from modeling_intrada.training.cpu_allocator import keep_freed_memory
from modeling_intrada.training.cpu_threads import cpu_threads_for_run
from modeling_intrada.training.stage_loop import AdaptationStage, list_checkpoints
from modeling_intrada.training.tasks import Run, make_run, process_state

logger = get_logger(__name__)


def make_accelerator(run: Run, stage: str, framework: str) -> Accelerator:
    """The training stage's Accelerator. With `feature`, the adversarial loss never reaches the classifier's
    last layer, so in multi-process runs DDP must be told that some parameters get no gradient in the
    synchronising backward (their source gradients, accumulated under `no_sync`, are still reduced)."""
    args = run.args
    project = args.run.tracker_project_name
    logging_dir = run.layout.output_dir / args.run.logging_dir  # an absolute --logging_dir stays as given
    accelerator = Accelerator(
        mixed_precision=args.run.mixed_precision,
        gradient_accumulation_steps=args.settings.gradient_accumulation_steps,
        log_with=args.run.report_to,
        # One folder per stage either way: each stage counts its steps from 0.
        project_dir=str(logging_dir if project is None else logging_dir / stage),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=framework == "feature")],
    )
    if args.run.report_to:
        config = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in run_config(args).items()
        }
        init_kwargs = {} if project is None else {"wandb": {"name": stage}}
        accelerator.init_trackers(project or stage, config=config, init_kwargs=init_kwargs)
    return accelerator


def evaluation_scalars(document: dict) -> dict[str, float]:
    """The evaluation's numbers as tracker scalars: per result, each protocol's mIoU and per-class IoUs
    (`eval/<result>/<protocol>/mean_iou`, `.../iou/<class>`), and any other number of a result (digits'
    accuracies)."""
    rows = document.get("results", document)
    scalars: dict[str, float] = {}
    for key, row in rows.items():
        if not isinstance(row, dict):
            continue
        for protocol, scores in (row.get("scores") or {}).items():
            prefix = f"eval/{key}/{protocol}"
            if scores.get("mean_iou") is not None:
                scalars[f"{prefix}/mean_iou"] = float(scores["mean_iou"])
            for name, iou in zip(scores.get("class_names", []), scores.get("per_class_iou", [])):
                if iou is not None:
                    scalars[f"{prefix}/iou/{name}"] = float(iou)
        for name, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "iteration":
                scalars[f"eval/{key}/{name}"] = float(value)
    return scalars


def log_evaluation(run: Run, document: dict) -> None:
    """Send the evaluation's mIoU and per-class IoU to the trackers of --report_to, as the run "eval"."""
    if not run.args.run.report_to:
        return
    accelerator = make_accelerator(run, "eval", framework="")
    accelerator.log(evaluation_scalars(document), step=0)
    for tracker in accelerator.trackers:  # not `end_training`: it would also end the process group
        tracker.finish()


def adaptation_stage(run: Run, stage: str) -> Path:
    """A training stage (digits' source stage, stage 1 or stage 3) through the one loop; then G (+ processor),
    the discriminators with save_pretrained and DONE, in that order."""
    settings = run.settings(stage)
    generator, source, target = run.training_inputs(stage, settings)
    if stage == "intra" and settings.uses_target and len(target) == 0:
        raise ValueError(
            f"lambda_easy={run.args.run.lambda_easy} leaves no hard image; use intra_framework source_only "
            "(self-training only) or a smaller lambda"
        )
    layout, batch_size = run.layout, run.args.run.batch_size
    accelerator = make_accelerator(run, stage, settings.framework)
    discriminators = run.new_discriminators(settings.framework) if settings.uses_discriminators else []
    loop = AdaptationStage(
        accelerator,
        run.loop_task(stage, settings.framework),
        generator,
        discriminators,
        source=(source, batch_size),
        target=(target, batch_size) if settings.uses_target else None,
        settings=settings,
        output_dir=layout.stage_dir(stage),
        save_generator=run.save_generator,
        picture=run.picture,
        num_workers=run.args.run.num_workers,
    )
    resume = run.args.run.resume_from_checkpoint
    if resume == "latest" and not list_checkpoints(layout.checkpoints_dir(stage)):
        resume = None  # nothing of this stage to resume: start it
    loop.run(resume_from_checkpoint=resume)
    # The last update comes after the last loss checked: refuse to save weights it made non-finite.
    generator = accelerator.unwrap_model(loop.generator)
    if not all(torch.isfinite(p).all() for p in generator.parameters()):
        raise NonFiniteLossError(
            f"stage {stage}, step {loop.completed_steps}: G's weights are not finite after the last update "
            "(training diverged; no model saved): lower --learning_rate"
        )
    if accelerator.is_main_process:
        # Each folder whole or not at all: a crash keeps the previous model and discriminators readable.
        with atomic_folder(layout.model_dir(stage)) as staging:
            run.save_generator(generator, staging)
        names = loop.task.level_names
        if loop.discriminators:
            with atomic_folder(layout.discriminator_dir(stage, names[0]).parent) as staging:
                for name, d in zip(names, loop.discriminators):
                    accelerator.unwrap_model(d).save_pretrained(staging / name)
        write_text_atomically(layout.done_file(stage), f"{loop.completed_steps}\n")
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # not `end_training`: it would also end the process group
        tracker.finish()
    return layout.model_dir(stage)


def rank_stage(run: Run) -> Path:
    """Stage 2: score the target training images with G_inter and write the ranking splits."""
    options = run.args.run
    accelerator = Accelerator(mixed_precision=options.mixed_precision)
    model = run.load_model("inter").to(accelerator.device)
    images = run.ranking_images()
    batches = sharded_batches(
        images,
        options.eval_batch_size,
        accelerator.process_index,
        accelerator.num_processes,
        options.num_workers,
    )
    result = rank_by_entropy(
        model,
        batches,
        lambda_easy=options.lambda_easy,
        device=accelerator.device,
        # The Accelerator's precision: the option when given, else the launcher's (accelerate launch, config).
        autocast_dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision),
        accelerator=accelerator,
        **run.ranking_options(),
    )
    folder = run.layout.ranking_dir
    if accelerator.is_main_process:
        # Written beside the old ranking and renamed into place: stage 3 never reads a mix of the two.
        with atomic_folder(folder) as staging:
            save_ranking(
                result,
                staging,
                target_dataset=run.target_description(),
                model_name=run.model_path("inter"),
                image_loader=images.image,
            )
            report = run.ranking_report(result, images, model, accelerator.device)
            if report:
                summary_file = staging / run.layout.ranking_summary.name
                summary = json.loads(summary_file.read_text())
                summary_file.write_text(json.dumps({**summary, **report}, indent=2) + "\n")
        print(
            f"ranking: {result.num_easy} easy / {result.num_hard} hard (lambda {result.lambda_easy}) -> {folder}"
        )
    accelerator.wait_for_everyone()
    return folder


def write_config(run: Run) -> None:
    """config.yaml: every option of the run, validated; written whole or not at all."""
    write_text_atomically(run.layout.config_file, yaml.safe_dump(run_config(run.args), sort_keys=False))


def stages_to_run(run: Run) -> list[str]:
    """The stages this command runs: with `--stage all --resume_from_checkpoint`, finished training stages
    are skipped."""
    options = run.args.run
    stages = []
    for stage in run.stages if options.stage == "all" else (options.stage,):
        finished = stage in TRAINING_STAGES and run.layout.done_file(stage).is_file()
        if finished and options.stage == "all" and options.resume_from_checkpoint:
            print(f"{stage}: already complete in {run.layout.stage_dir(stage)}, skipped")
            continue
        stages.append(stage)
    return stages


def check_not_finished(run: Run, stages: Sequence[str]) -> None:
    """A finished training stage runs again only with `--overwrite` (its model would be replaced)."""
    for stage in stages:
        if stage in TRAINING_STAGES and run.layout.done_file(stage).is_file() and not run.args.run.overwrite:
            raise UsageError(
                f"stage {stage} already finished in {run.layout.stage_dir(stage)}: pass --overwrite to train it "
                "again (replacing its model), or --resume_from_checkpoint latest with --stage all to skip it"
            )


def models_needed(run: Run, stage: str) -> list[str]:
    """The stages whose saved G `stage` starts from or reads."""
    options = run.args.run
    if stage == "rank":
        return ["inter"]
    if stage == "intra" and options.intra_init in ("inter", "source"):
        return [options.intra_init]
    if stage == "inter" and options.task == "digits" and run.args.digits.inter_init == "source":
        return ["source"]
    return []


def check_stage_inputs(run: Run, stages: Sequence[str]) -> None:
    """Refuse, before anything is written, a stage whose inputs neither exist nor come from an earlier stage
    of this command: G_inter for the ranking and stage 3, the ranking for stage 3."""
    options = run.args.run
    for index, stage in enumerate(stages):
        earlier = stages[:index]
        for needed in models_needed(run, stage):
            if needed not in earlier:
                # raises, saying which stage to run first, or why the saved model does not fit this run
                run.check_saved_model(run.model_path(needed), needed)
        if stage == "intra" and options.ranking and Path(options.ranking).expanduser().exists():
            check_ranking_folder(options.ranking)
        ranking_missing = not options.ranking and not run.layout.ranking_summary.is_file()
        if stage == "intra" and "rank" not in earlier and ranking_missing:
            raise MissingInputError(
                f"stage 3 reads the ranking, which is not at {run.layout.ranking_dir}: run --stage rank "
                "first or pass --ranking"
            )


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse the options, save config.yaml, run the stages asked for; returns the eval results (if run)."""
    logging.basicConfig(level=logging.INFO if os.environ.get("INTRADA_VERBOSE") else logging.WARNING)
    args = parse_arguments(argv)
    options = args.run
    state = process_state()
    threads = cpu_threads_for_run(options.num_threads, state.device.type, state.num_processes)
    if threads is not None:
        torch.set_num_threads(threads)
    logger.info(
        f"torch CPU threads: {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"
    )
    if options.keep_freed_memory and state.device.type == "cpu":
        keep_freed_memory()  # glibc would return freed pages and fault them in again every iteration
    run = make_run(args)
    stages = stages_to_run(run)
    check_stage_inputs(run, stages)
    check_not_finished(run, stages)
    previous_config = run.layout.config_file.read_text() if run.layout.config_file.is_file() else None
    if process_state().is_main_process:
        write_config(run)  # only now: every option and input above is checked
    finished: list[str] = []
    try:
        return run_stages(run, stages, finished)
    except BaseException:
        if process_state().is_main_process and previous_config is not None and not finished:
            # A command that failed before finishing a stage replaced no output: keep the record that
            # describes them.
            write_text_atomically(run.layout.config_file, previous_config)
        raise


def run_stages(run: Run, stages: Sequence[str], finished: list[str]) -> dict:
    """Run `stages` in order, the cards after each, then the push; returns the eval results (if run).
    Each finished stage is appended to `finished`."""
    options = run.args.run
    results: dict = {}
    for stage in stages:
        if stage == "rank":
            rank_stage(run)
        elif stage == "eval":
            results = run.evaluate()
            log_evaluation(run, results)
        else:
            adaptation_stage(run, stage)
        finished.append(stage)
        if process_state().is_main_process:
            # After every stage, so that each saved folder carries its README.md even if a later stage fails.
            write_run_cards(run.layout.output_dir)
    if options.push_to_hub and process_state().is_main_process:
        # The model and the ranking splits; a failure keeps the outputs and names the retry command.
        ranking_repo_id = f"{options.hub_model_id}-ranking" if run.layout.ranking_summary.is_file() else None
        push_run_to_hub(
            run.layout.output_dir,
            options.hub_model_id,
            ranking_repo_id=ranking_repo_id,
            private=options.hub_private_repo,
            token=options.hub_token,
        )
    return results
