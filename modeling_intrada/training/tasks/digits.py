"""Digits (paper section 4.3, SPEC section 8): the three stages on classifiers, after a source-only stage.

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
    eval     accuracy of every trained model on the target (and source) test sets, and a card for each
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from modeling_intrada import (
    DigitClassifier,
    DigitClassifierConfig,
    FeatureDiscriminator,
    FeatureDiscriminatorConfig,
)
from modeling_intrada.data.dataset_card import write_card
from modeling_intrada.data.digits import DigitsSplit, load_digits
from modeling_intrada.evaluation.segmentation import sharded_batches
from modeling_intrada.labels import DIGITS
from modeling_intrada.method.adaptation import ClassificationTask
from modeling_intrada.method.ranking import RankingResult, load_ranking
from modeling_intrada.publishing.cards import CLASSIFIER_FRAMEWORK_NAMES, classifier_card
from modeling_intrada.run_layout import CARD_FILE
from modeling_intrada.training.arguments import TASK_STAGES, Arguments, DigitsArguments
from modeling_intrada.training.stage_loop import StageSettings
from modeling_intrada.training.tasks.base import Run


class DigitsRun(Run):
    """The resolved inputs of a digits run: the classifier's input and the datasets."""

    model_class = DigitClassifier

    def __init__(self, args: Arguments) -> None:
        super().__init__(args)
        self.classifier_config = DigitClassifierConfig(
            architecture=args.digits.architecture, id2label=DIGITS.id2label
        )

    @property
    def stages(self) -> tuple[str, ...]:
        """Every stage; without the source stage when `source_num_iterations` is 0."""
        stages = TASK_STAGES["digits"]
        return stages if self.args.digits.source_num_iterations > 0 else stages[1:]

    # ------------------------------------------------------------------------------------ data
    def digits(self, which: str, split: str, with_labels: bool, max_samples: int | None) -> DigitsSplit:
        """`which` = source or target, at the classifier's input size."""
        c = self.classifier_config
        name = self.args.run.source_dataset if which == "source" else self.args.run.target_dataset
        return load_digits(
            name, split, c.image_size, c.num_channels, with_labels=with_labels, max_samples=max_samples
        )

    def training_digits(self, which: str, with_labels: bool) -> DigitsSplit:
        """The source or the target training split (its first `max_*_samples` rows)."""
        run, digits = self.args.run, self.args.digits
        if which == "source":
            return self.digits("source", run.source_split, with_labels, digits.max_source_samples)
        return self.digits("target", run.target_split, with_labels, digits.max_target_samples)

    def test_digits(self, which: str) -> DigitsSplit:
        """The labelled evaluation split (`val_split`) of the source or the target."""
        return self.digits(which, self.args.run.val_split, True, self.args.run.max_val_images)

    def for_training(self, split: DigitsSplit, stage: str, labelled: bool = True) -> DigitsSplit:
        """`split` with the run's augmentation, if any applies to this stream (the unlabelled stream only
        with --augment_target); the draws depend on the run's seed, the stage and the stream."""
        digits = self.args.digits
        if not digits.augments(stage, labelled):
            return split
        seed = self.args.settings.seed * 100 + TASK_STAGES["digits"].index(stage) * 10 + int(not labelled)
        return split.augmented(digits.random_affine(), seed=seed)

    # ------------------------------------------------------------------------------- training
    def new_classifier(self, seed: int) -> DigitClassifier:
        set_seed(seed)
        return DigitClassifier(self.classifier_config)

    def training_inputs(
        self, stage: str, settings: StageSettings
    ) -> tuple[DigitClassifier, DigitsSplit, DigitsSplit | None]:
        seed = self.args.settings.seed
        if stage == "source":
            if settings.num_iterations == 0:
                raise ValueError("--stage source with source_num_iterations 0 trains nothing")
            generator = self.new_classifier(seed)
            return generator, self.for_training(self.training_digits("source", True), "source"), None
        if stage == "inter":
            init = self.args.digits.inter_init
            generator = self.load_model("source") if init == "source" else self.new_classifier(seed)
            source = self.for_training(self.training_digits("source", with_labels=True), "inter")
            target = self.training_digits("target", with_labels=False)  # its labels never reach training
            return generator, source, self.for_training(target, "inter", labelled=False)
        easy, hard = self.ranked_splits()
        init = self.args.run.intra_init
        generator = self.new_classifier(seed + 2) if init == "scratch" else self.load_model(init)
        return generator, self.for_training(easy, "intra"), self.for_training(hard, "intra", labelled=False)

    def ranked_splits(self) -> tuple[DigitsSplit, DigitsSplit]:
        """Stage 3's streams: the easy target images with their pseudo labels, the hard ones unlabelled."""
        ranking = load_ranking(self.args.run.ranking or self.layout.ranking_dir)
        target = self.training_digits("target", with_labels=False)
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
        return easy, target.subset([row_of[i] for i in ranking.hard_ids], name="hard")

    def new_discriminators(self, framework: str) -> list[FeatureDiscriminator]:
        set_seed(self.args.settings.seed + 1)
        c = self.classifier_config
        # feature: the classifier's features; scores / advent / adaptsegnet: a vector over the classes.
        size = c.feature_size if framework == "feature" else c.num_labels
        return [FeatureDiscriminator(FeatureDiscriminatorConfig(input_size=size))]

    def loop_task(self, stage: str, framework: str) -> ClassificationTask:
        return ClassificationTask(framework=framework, adv_weight=self.adv_main_weight(stage))

    # -------------------------------------------------------------------------------- ranking
    def ranking_images(self) -> DigitsSplit:
        return self.training_digits("target", with_labels=False)

    def ranking_options(self) -> dict[str, Any]:
        return {"predict": classifier_logits}

    def target_description(self) -> str:
        return f"{self.args.run.target_dataset} ({self.args.run.target_split})"

    def ranking_report(
        self, result: RankingResult, images: DigitsSplit, model: DigitClassifier, device: torch.device
    ) -> dict[str, Any]:
        check = self.label_check(result, model, device)
        print(
            f"ranking: G_inter accuracy on the easy part {check['easy_accuracy']:.2f} %, on the hard part "
            f"{check['hard_accuracy']:.2f} % (target labels read for this report only)"
        )
        return {"target_label_check": check}

    @torch.inference_mode()
    def label_check(
        self, result: RankingResult, model: DigitClassifier, device: torch.device
    ) -> dict[str, float]:
        """How right G_inter is on the easy part (its pseudo labels) and on the hard part, in %.

        This reads the target training labels, **for the report only**: nothing of it reaches training. It
        shows whether the entropy ranking separates reliable predictions from unreliable ones.
        """
        labelled = self.training_digits("target", with_labels=True)
        row_of = {image_id: row for row, image_id in enumerate(labelled.ids)}
        easy = [
            (row_of[i], p) for i, p, s in zip(result.ids, result.pseudo_labels, result.splits) if s == "easy"
        ]
        hard_rows = [row_of[i] for i, s in zip(result.ids, result.splits) if s == "hard"]
        easy_correct = sum(int(labelled.labels[row]) == int(label) for row, label in easy)
        hard = labelled.subset(hard_rows, labelled.labels[hard_rows].tolist()) if hard_rows else None
        batch_size = self.args.run.eval_batch_size
        hard_correct = count_correct(model, hard, batch_size, device) if hard is not None else 0
        return {
            "easy_accuracy": 100.0 * easy_correct / max(len(easy), 1),
            "hard_accuracy": 100.0 * hard_correct / len(hard_rows) if hard_rows else float("nan"),
            "num_easy": len(easy),
            "num_hard": len(hard_rows),
        }

    # ----------------------------------------------------------------------------- evaluation
    def write_card(self, name: str, row: dict, metrics: dict) -> Path:
        """The README.md of one trained classifier, with its measured accuracy (`publishing.cards`)."""
        stage, run = row["stage"], self.args.run
        card = classifier_card(
            self.layout.model_dir(stage),
            name=name,
            stage=stage,
            framework=self.settings(stage).framework,
            source_dataset=run.source_dataset,
            target_dataset=run.target_dataset,
            augmentation=augmentation_summary(self.args.digits, stage),
            seed=self.args.settings.seed,
            accuracies={
                f"target: {metrics['target_test']}": row["target_accuracy"],
                f"source: {metrics['source_test']}": row["source_accuracy"],
            },
        )
        return write_card(card, self.layout.model_dir(stage) / CARD_FILE)

    def model_rows(self) -> list[tuple[str, str]]:
        """(name, stage) of every model this run has trained, in pipeline order."""
        run, settings = self.args.run, self.args.settings
        framework = CLASSIFIER_FRAMEWORK_NAMES[settings.framework]
        intra_framework = CLASSIFIER_FRAMEWORK_NAMES[run.intra_framework or settings.framework]
        candidates = [
            ("source only", "source"),
            (f"inter-domain only (G_inter, {framework})", "inter"),
            (f"IntraDA (G_intra, {intra_framework})", "intra"),
        ]
        return [
            (name, stage)
            for name, stage in candidates
            if (stage == "inter" and run.inter_model) or self.layout.has_model(stage)
        ]

    def evaluate(self) -> dict[str, dict]:
        """Accuracy of every trained model on the target test set (and the source test set, as a check)."""
        run = self.args.run
        accelerator = Accelerator(mixed_precision=run.mixed_precision)
        target_test, source_test = self.test_digits("target"), self.test_digits("source")
        results = {}
        for name, stage in self.model_rows():
            model = self.load_model(stage).to(accelerator.device)
            results[name] = {
                "stage": stage,
                "target_accuracy": accuracy(model, target_test, accelerator, run.eval_batch_size),
                "source_accuracy": accuracy(model, source_test, accelerator, run.eval_batch_size),
            }
        if accelerator.is_main_process and results:
            self.layout.eval_dir.mkdir(parents=True, exist_ok=True)
            metrics = {
                "target_test": f"{run.target_dataset} ({run.val_split}, {len(target_test)} images)",
                "source_test": f"{run.source_dataset} ({run.val_split}, {len(source_test)} images)",
                "seed": self.args.settings.seed,
                "models": results,
            }
            self.layout.metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
            for name, row in results.items():
                if not (row["stage"] == "inter" and run.inter_model):
                    self.write_card(name, row, metrics)
            table = accuracy_table(results)
            self.layout.results_file.write_text(
                f"# Accuracy: {run.source_dataset} -> {run.target_dataset}, seed {self.args.settings.seed}\n\n"
                f"Target test: {metrics['target_test']}; source test: {metrics['source_test']}. "
                "Last iterate of each stage (no selection on test labels).\n\n" + table + "\n"
            )
            print("\n" + table)
        accelerator.wait_for_everyone()
        return results


def classifier_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The class scores (batch, C) the ranking scores: R is their mean self-information over classes."""
    return model(pixel_values=pixel_values).logits


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


def accuracy_table(results: dict[str, dict]) -> str:
    """Markdown: one row per model, target and source test accuracy in %."""
    lines = ["| model | target test accuracy (%) | source test accuracy (%) |", "|---|---:|---:|"]
    lines += [
        f"| {n} | {r['target_accuracy']:.2f} | {r['source_accuracy']:.2f} |" for n, r in results.items()
    ]
    return "\n".join(lines)


def augmentation_summary(digits: DigitsArguments, stage: str) -> str:
    """The augmentation of `stage`'s training images in words, for cards."""
    if not digits.augments(stage):
        return "none"
    low, high = digits.affine_scale
    streams = "all training images" if digits.augment_target else "the labelled training images"
    return (
        f"random affine of {streams}: rotation up to {digits.affine_degrees:g} degrees, zoom {low:g} to "
        f"{high:g}, shift up to {digits.affine_translate:.0%} of the side"
    )
