"""The adversarial stage loop, one implementation for stage 1 (source vs target) and stage 3 (easy vs hard).

`AdaptationStage.adversarial_iteration` is SPEC section 3 in the order it happens, on one screen. Everything around it
(learning rates, mixed precision with two optimizers, gradient accumulation, checkpoints, snapshots,
logging) lives in the other methods.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from tqdm.auto import tqdm

from modeling_intrada.atomic import atomic_folder
from modeling_intrada.errors import MissingInputError, NonFiniteLossError, StopSignals, TrainingStopped
from modeling_intrada.method.adaptation import (
    DISCRIMINATOR_FRAMEWORKS,
    SOURCE_LABEL,
    TARGET_LABEL,
    check_framework,
    poly_learning_rate,
    set_learning_rate,
)
from modeling_intrada.method.losses import adversarial_loss
from modeling_intrada.method.segmenters import generator_parameter_groups
from modeling_intrada.run_layout import CHECKPOINTS_DIR, SNAPSHOTS_DIR, checkpoint_name, checkpoint_step

# Accelerate's adapter: the loop's messages once, from the main process, not once per process.
logger = get_logger(__name__)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZER_IMPLEMENTATIONS = ("default", "foreach", "fused")
AUTOCAST_POLICIES = ("default", "fp32_batchnorm")
STATE_FILE = "loop_state.json"


@dataclass
class StageSettings:
    """The numbers of one adaptation stage (SPEC 3; every default is the paper's).

    `HfArgumentParser` fills it from the options of `run_intrada.py` as stage 1's settings; the other stages
    are `dataclasses.replace` of it (`modeling_intrada.training.arguments.stage_settings`).

    Args:
        framework: advent | adaptsegnet | minent | source_only | feature | scores.
        segmentation_loss: supervised loss on the source (stage 3: the pseudo labels); False is the
            "adversarial only" ablation of Table 2.
        num_iterations: optimizer steps to run (the early stop, 120,000).
        max_iters: length of the poly schedule (250,000); None: the stage's own `num_iterations`.
        learning_rate, momentum, weight_decay: G's SGD (heads at `head_lr_multiplier` x).
        generator_optimizer: "sgd" (the paper) or "adam" (betas as the discriminators').
        head_lr_multiplier: learning-rate factor of the heads, for generators with `parameter_groups`.
        reference_duplicate_params: list the backbone tensors with the reference code's repetitions.
        disc_learning_rate, disc_betas: the discriminators' Adam.
        lr_power: exponent of the poly schedule.
        gradient_accumulation_steps: micro-batches per optimizer step.
        max_grad_norm: clip G's gradient norm (None: no clipping, as the paper).
        checkpointing_steps: `save_state` every N steps (None: never); checkpoints_total_limit keeps the last K.
        snapshot_steps: `save_pretrained` snapshots of G and D every N steps (None: never).
        log_steps: losses to trackers and the progress bar every N steps (the only host syncs).
        image_log_steps: a picture (image, prediction, entropy) to TensorBoard every N steps (0: never).
        seed: data order and initialisation.
        channels_last: NHWC memory format for the networks and inputs (faster convolutions on GPUs).
        torch_compile: `torch.compile` the generator and the discriminators.
        torch_compile_mode: the `mode` of `torch.compile` (None: its default); `reduce-overhead` replays the
            static-shape graphs as CUDA graphs (each iteration is marked as a new CUDA-graph step).
        compile_discriminator_input: `torch.compile` the map the discriminators see (softmax and
            self-information at full resolution), so that it runs as fused kernels.
        optimizer_implementation: default (PyTorch's choice) | foreach | fused, for G's and D's optimizers.
        autocast_policy: default | fp32_batchnorm: under mixed precision, the generator's BatchNorm layers
            compute (and keep their statistics) in float32 while convolutions run in the lower precision;
            the self-information and the losses are float32 in both.
    """

    framework: str = field(
        default="advent",
        metadata={
            "help": "stage 1: advent | adaptsegnet | minent | source_only; digits also feature (D on the "
            "features) | scores (D on the class scores)"
        },
    )
    segmentation_loss: bool = field(
        default=True, metadata={"help": "stage 1 supervised loss on the source (see intra_segmentation_loss)"}
    )
    num_iterations: int = field(default=120_000, metadata={"help": "optimizer steps of stage 1 (early stop)"})
    max_iters: int | None = field(
        default=250_000, metadata={"help": "length of the poly schedule (None: each stage's own length)"}
    )
    learning_rate: float = 2.5e-4
    momentum: float = field(default=0.9, metadata={"help": "SGD only"})
    weight_decay: float = field(default=5e-4, metadata={"help": "SGD only"})
    generator_optimizer: str = field(default="sgd", metadata={"help": "sgd (paper) | adam"})
    head_lr_multiplier: float = 10.0
    reference_duplicate_params: bool = field(
        default=False,
        metadata={
            "help": "list backbone tensors with the reference code's repetitions (~3x backbone lr, the plain "
            "per-tensor SGD loop on every device); for comparison"
        },
    )
    disc_learning_rate: float = 1e-4
    disc_betas: list[float] = field(
        default_factory=lambda: [0.9, 0.99], metadata={"help": "Adam betas of D (and of G with adam)"}
    )
    lr_power: float = field(default=0.9, metadata={"help": "poly decay exponent (0: constant)"})
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = None
    checkpointing_steps: int | None = field(
        default=None, metadata={"help": "accelerate save_state every N steps"}
    )
    checkpoints_total_limit: int | None = None
    snapshot_steps: int | None = field(
        default=2000, metadata={"help": "save_pretrained snapshots every N steps"}
    )
    log_steps: int = 10
    image_log_steps: int = 0
    seed: int = 1234
    channels_last: bool = field(default=False, metadata={"help": "NHWC memory format (faster on GPUs)"})
    torch_compile: bool = field(
        default=False, metadata={"help": "torch.compile the generator and discriminators"}
    )
    torch_compile_mode: str | None = field(
        default=None,
        metadata={"help": f"with torch_compile: {' | '.join(COMPILE_MODES)} (None: torch's default)"},
    )
    compile_discriminator_input: bool = field(
        default=False, metadata={"help": "torch.compile the discriminator input (softmax + self-information)"}
    )
    optimizer_implementation: str = field(
        default="default",
        metadata={"help": f"{' | '.join(OPTIMIZER_IMPLEMENTATIONS)} (G's and D's optimizers)"},
    )
    autocast_policy: str = field(
        default="default",
        metadata={"help": "default | fp32_batchnorm (BatchNorm in float32 under bf16/fp16 autocast)"},
    )

    def __post_init__(self) -> None:
        check_framework(self.framework)
        if self.generator_optimizer not in ("sgd", "adam"):
            raise ValueError(f"generator_optimizer must be 'sgd' or 'adam', got {self.generator_optimizer!r}")
        if self.num_iterations < 0 or (self.max_iters is not None and self.max_iters < 1):
            raise ValueError("num_iterations must be >= 0 and max_iters >= 1")
        if self.num_iterations > self.schedule_length:
            raise ValueError(
                f"num_iterations ({self.num_iterations}) exceeds the schedule length max_iters ({self.max_iters})"
            )
        if self.gradient_accumulation_steps < 1:
            raise ValueError("gradient_accumulation_steps must be at least 1")
        if self.log_steps < 1:
            raise ValueError(f"log_steps must be at least 1, got {self.log_steps}")
        for name in ("checkpointing_steps", "checkpoints_total_limit", "snapshot_steps", "image_log_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 or None: never), got {getattr(self, name)}")
        if len(self.disc_betas) != 2:
            raise ValueError(f"disc_betas takes two numbers, got {self.disc_betas}")
        if not self.segmentation_loss and self.framework == "source_only":
            raise ValueError("source_only without the segmentation loss trains nothing")
        if self.torch_compile_mode is not None and self.torch_compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"torch_compile_mode must be one of {COMPILE_MODES}, got {self.torch_compile_mode!r}"
            )
        if self.torch_compile_mode is not None and not self.torch_compile:
            raise ValueError("torch_compile_mode is set but torch_compile is not: add --torch_compile true")
        if self.optimizer_implementation not in OPTIMIZER_IMPLEMENTATIONS:
            raise ValueError(
                f"optimizer_implementation must be one of {OPTIMIZER_IMPLEMENTATIONS}, "
                f"got {self.optimizer_implementation!r}"
            )
        if self.optimizer_implementation != "default" and self.reference_duplicate_params:
            raise ValueError(
                "reference_duplicate_params compares against the plain per-tensor update; use it with "
                "optimizer_implementation default"
            )
        if self.autocast_policy not in AUTOCAST_POLICIES:
            raise ValueError(
                f"autocast_policy must be one of {AUTOCAST_POLICIES}, got {self.autocast_policy!r}"
            )

    @property
    def schedule_length(self) -> int:
        """The poly schedule's length: `max_iters`, or the stage's own length when it is None."""
        return self.max_iters if self.max_iters is not None else max(self.num_iterations, 1)

    @property
    def uses_discriminators(self) -> bool:
        return self.framework in DISCRIMINATOR_FRAMEWORKS

    @property
    def uses_target(self) -> bool:
        return self.framework != "source_only"


def batchnorm_in_float32(model: torch.nn.Module) -> None:
    """Under autocast, run every BatchNorm of `model` on a float32 copy of its input, output cast back.

    Autocast leaves batch norm in its input's precision; with these hooks the batch statistics, the running
    statistics and the normalisation are float32, while the convolutions around stay in the autocast dtype.
    Without autocast the hooks do nothing.
    """

    def to_float32(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = inputs[0]
        if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float32:
            return (x.float(), *inputs[1:])
        return inputs

    def to_autocast_dtype(
        module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        device_type = output.device.type
        if torch.is_autocast_enabled(device_type):
            return output.to(torch.get_autocast_dtype(device_type))
        return output

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(to_float32)
            module.register_forward_hook(to_autocast_dtype)


def set_requires_grad(modules: Sequence[torch.nn.Module], flag: bool) -> None:
    for module in modules:
        for parameter in module.parameters():
            parameter.requires_grad_(flag)


@dataclass
class StageResult:
    iterations: int
    output_dir: Path
    last_losses: dict[str, float] = field(default_factory=dict)


class AdaptationStage:
    """Train G (and one discriminator per level) for one stage.

    Args:
        accelerator: an `Accelerator` made with this stage's `gradient_accumulation_steps` and precision.
        task: a `SegmentationTask` or `ClassificationTask` (how G's levels are read, what D sees).
        generator: G: a segmenter (its groups from `segmenters.generator_parameter_groups`) or a classifier.
        discriminators: one per level of `task` (empty for minent / source_only).
        source, target: `(dataset, batch_size)`; source rows carry `labels`, target rows none.
        settings: the stage's numbers.
        output_dir: where checkpoints/, snapshots/ and the final model go.
        save_generator: `(model, folder)` writer for snapshots (G + image processor).
        picture: optional `(source_batch, target_batch, outputs) -> HxWx3 uint8` for TensorBoard.
        num_workers: data-loading workers per stream.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        task,
        generator: torch.nn.Module,
        discriminators: Sequence[torch.nn.Module],
        source: tuple[torch.utils.data.Dataset, int],
        target: tuple[torch.utils.data.Dataset, int] | None,
        settings: StageSettings,
        output_dir: str | Path,
        save_generator: Callable[[torch.nn.Module, Path], None] | None = None,
        picture: Callable[..., object] | None = None,
        num_workers: int = 0,
    ) -> None:
        self.accelerator, self.task, self.settings = accelerator, task, settings
        self.output_dir = Path(output_dir)
        self.save_generator = save_generator
        self.picture = picture
        self.num_workers = num_workers
        if settings.uses_discriminators and len(discriminators) != len(task.level_names):
            raise ValueError(
                f"framework {settings.framework!r} needs one discriminator per level {task.level_names}, "
                f"got {len(discriminators)}"
            )
        if settings.uses_target and target is None:
            raise ValueError(f"framework {settings.framework!r} needs target data")
        self.source, self.target = source, target
        discriminators = list(discriminators) if settings.uses_discriminators else []
        if accelerator.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: pick the fastest kernels once
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        generator = generator.to(memory_format=self.memory_format)
        discriminators = [d.to(memory_format=self.memory_format) for d in discriminators]
        if settings.autocast_policy == "fp32_batchnorm":
            batchnorm_in_float32(generator)

        self.generator_optimizer = self._generator_optimizer(generator)
        self.discriminator_optimizers = [
            torch.optim.Adam(
                d.parameters(),
                lr=settings.disc_learning_rate,
                betas=tuple(settings.disc_betas),
                **self._optimizer_options(),
            )
            for d in discriminators
        ]
        # Only the models are prepared: learning rates are set by hand from the global step (a prepared
        # scheduler would step once per process), and the optimizers step under one shared GradScaler.
        prepared = accelerator.prepare(generator, *discriminators)
        prepared = prepared if isinstance(prepared, tuple) else (prepared,)
        self.generator, self.discriminators = prepared[0], list(prepared[1:])
        if settings.torch_compile:
            # Compiled wrappers around the prepared modules; state dicts and `unwrap_model` see the originals.
            # Static shapes: source and target sizes differ, and the default (dynamic=None) answers the second
            # size with one dynamic-shape graph, which compiles for minutes.
            mode = settings.torch_compile_mode
            self.generator = torch.compile(self.generator, dynamic=False, mode=mode)
            self.discriminators = [torch.compile(d, dynamic=False, mode=mode) for d in self.discriminators]
        self.discriminator_input = (
            torch.compile(task.discriminator_input, dynamic=False)
            if settings.compile_discriminator_input
            else task.discriminator_input
        )
        for optimizer in self.optimizers:
            accelerator.register_for_checkpointing(optimizer)
        self.completed_steps = 0
        self.micro_step = 0

    # ---------------------------------------------------------------------------------------- setup
    def _generator_optimizer(self, generator: torch.nn.Module) -> torch.optim.Optimizer:
        s = self.settings
        groups = generator_parameter_groups(
            generator,
            s.learning_rate,
            s.head_lr_multiplier,
            reference_duplicates=s.reference_duplicate_params,
        )
        options = self._optimizer_options()
        if s.generator_optimizer == "adam":
            return torch.optim.Adam(groups, lr=s.learning_rate, betas=tuple(s.disc_betas), **options)
        return torch.optim.SGD(
            groups, lr=s.learning_rate, momentum=s.momentum, weight_decay=s.weight_decay, **options
        )

    def _optimizer_options(self) -> dict[str, bool]:
        """G's optimizer loop: `foreach=True` or `fused=True` for `optimizer_implementation`, PyTorch's
        default otherwise, and always the plain per-tensor loop with `reference_duplicate_params`."""
        s = self.settings
        if s.reference_duplicate_params:
            # A tensor listed k times is stepped k times by the plain per-tensor loop (torch 0.4.1's update,
            # 3x / 4x the backbone lr); the foreach loop, CUDA's default, reads stale values for the repeats
            # (3.32x / 4.65x). Forcing the plain loop gives the knob the same meaning on every device.
            return {"foreach": False}
        return {} if s.optimizer_implementation == "default" else {s.optimizer_implementation: True}

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.generator_optimizer, *self.discriminator_optimizers]

    def _streams(self) -> tuple[Iterator[dict], Iterator[dict] | None]:
        from modeling_intrada.training.streams import stream_loader

        acc, s = self.accelerator, self.settings
        pin = acc.device.type == "cuda"

        def stream(data: tuple[torch.utils.data.Dataset, int], offset: int) -> Iterator[dict]:
            dataset, batch_size = data
            return stream_loader(
                dataset,
                batch_size,
                s.seed + offset,
                acc.process_index,
                acc.num_processes,
                self.micro_step,
                self.num_workers,
                pin,
            )

        return stream(self.source, 0), (stream(self.target, 1) if self.settings.uses_target else None)

    def _to_device(self, batch: dict) -> dict:
        device = self.accelerator.device
        moved = {
            k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }
        moved["pixel_values"] = moved["pixel_values"].contiguous(memory_format=self.memory_format)
        return moved

    # ------------------------------------------------------------------------------------ one iteration
    def adversarial_iteration(self, source: dict, target: dict | None) -> dict[str, torch.Tensor]:
        """One micro-batch of SPEC 3: segmentation, adversarial on target with D frozen, D on detached maps."""
        acc, task, s = self.accelerator, self.task, self.settings
        generator, discriminators = self.generator, self.discriminators
        losses: dict[str, torch.Tensor] = {}
        if s.torch_compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the last iteration's graph outputs are consumed
        set_requires_grad(discriminators, False)

        # 1. Segmentation on the source (stage 3: easy images with pseudo labels). Without a target pass to
        #    follow, this backward is the one that synchronises G's gradients across processes.
        with torch.no_grad() if not s.segmentation_loss else nullcontext(), acc.autocast():
            source_out = task.forward(generator, source["pixel_values"])
        if s.segmentation_loss:
            losses["loss_seg"] = task.supervised_loss(source_out, source["labels"])
            with acc.no_sync(generator) if s.uses_target else nullcontext():
                acc.backward(losses["loss_seg"])

        # 2. Adversarial on the target: G tries to make D call target maps "source" (MinEnt: lower entropy).
        if s.uses_target:
            with acc.autocast():
                target_out = task.forward(generator, target["pixel_values"])
                if s.framework == "minent":
                    losses["loss_ent"] = task.minent_loss(target_out)
                else:
                    target_maps = [
                        self.discriminator_input(o) for o in target_out
                    ]  # computed once, reused in 3.
                    frozen = [
                        acc.unwrap_model(d) for d in discriminators
                    ]  # a fixed function here, no DDP sync
                    losses["loss_adv"] = sum(
                        w * adversarial_loss(d(m), SOURCE_LABEL)
                        for w, d, m in zip(task.adversarial_weights(), frozen, target_maps)
                    )
            acc.backward(losses.get("loss_adv", losses.get("loss_ent")))

        # 3. Discriminators on detached maps: source -> 0, target -> 1, each halved.
        if s.uses_discriminators:
            set_requires_grad(discriminators, True)
            with acc.autocast():
                source_maps = [self.discriminator_input(o.detach()) for o in source_out]
                losses["loss_d_source"] = sum(
                    adversarial_loss(d(m), SOURCE_LABEL) / 2 for d, m in zip(discriminators, source_maps)
                )
            acc.backward(losses["loss_d_source"])
            with acc.autocast():
                losses["loss_d_target"] = sum(
                    adversarial_loss(d(m.detach()), TARGET_LABEL) / 2
                    for d, m in zip(discriminators, target_maps)
                )
            acc.backward(losses["loss_d_target"])
        self._last_outputs = (source_out, target_out if s.uses_target else None)
        return losses

    # ------------------------------------------------------------------------------------------ steps
    def set_learning_rates(self, iteration: int) -> dict[str, float]:
        """Poly schedule of the global optimizer step, identical on every process and any accumulation."""
        s = self.settings
        lr_g = poly_learning_rate(s.learning_rate, iteration, s.schedule_length, s.lr_power)
        lr_d = poly_learning_rate(s.disc_learning_rate, iteration, s.schedule_length, s.lr_power)
        set_learning_rate(self.generator_optimizer, lr_g)
        for optimizer in self.discriminator_optimizers:
            set_learning_rate(optimizer, lr_d)
        return {"lr": lr_g, "lr_d": lr_d}

    def optimizer_step(self) -> None:
        """Step G, then both D; in fp16 one GradScaler serves all optimizers and updates once."""
        scaler = self.accelerator.scaler
        if self.settings.max_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(self.generator_optimizer)
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), self.settings.max_grad_norm)
        for optimizer in self.optimizers:
            if scaler is not None:
                scaler.step(optimizer)
            else:
                optimizer.step()
        if scaler is not None:
            scaler.update()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------------------------------- the run
    def run(self, resume_from_checkpoint: str | None = None) -> StageResult:
        acc, s = self.accelerator, self.settings
        if resume_from_checkpoint:
            self.load_checkpoint(resume_from_checkpoint)
        source_stream, target_stream = self._streams()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.generator.train()
        for d in self.discriminators:
            d.train()
        progress = tqdm(
            total=s.num_iterations,
            initial=self.completed_steps,
            disable=not acc.is_local_main_process,
            desc=self.output_dir.name,
            dynamic_ncols=True,
        )
        totals: dict[str, torch.Tensor] = {}
        last: dict[str, float] = {}
        with StopSignals() as stop:
            launcher = os.getppid()
            while self.completed_steps < s.num_iterations:
                learning_rates = self.set_learning_rates(self.completed_steps)
                for _ in range(s.gradient_accumulation_steps):
                    source = self._to_device(next(source_stream))
                    target = self._to_device(next(target_stream)) if target_stream is not None else None
                    with acc.accumulate(self.generator, *self.discriminators):
                        losses = self.adversarial_iteration(source, target)
                    self.micro_step += 1
                    for name, value in losses.items():
                        totals[name] = totals.get(name, 0) + value.detach() / s.gradient_accumulation_steps
                self.optimizer_step()
                self.completed_steps += 1
                progress.update(1)
                logged = self.completed_steps % s.log_steps == 0 or self.completed_steps == s.num_iterations
                if logged:
                    last = self._log(totals, learning_rates, progress)
                elif self._saves_at(self.completed_steps):
                    self._check_finite(self._reduce(totals))  # never save the weights of a diverged run
                totals = {}
                if s.image_log_steps and self.completed_steps % s.image_log_steps == 0:
                    self._log_picture(source, target)
                if s.checkpointing_steps and self.completed_steps % s.checkpointing_steps == 0:
                    self.save_checkpoint()
                if s.snapshot_steps and self.completed_steps % s.snapshot_steps == 0:
                    self.save_snapshot(self.output_dir / SNAPSHOTS_DIR / f"iter_{self.completed_steps:06d}")
                requested = self._stop_requested(stop, launcher)
                if requested:
                    progress.close()
                    raise self._stopped(requested)
        progress.close()
        acc.wait_for_everyone()
        return StageResult(self.completed_steps, self.output_dir, last)

    # ------------------------------------------------------------------------------------- stopping
    def _stop_requested(self, stop: StopSignals, launcher: int) -> int:
        """The signal that asks this run to stop (0: none), agreed by all processes at a step boundary.

        SIGTERM and SIGINT are recorded by `stop`. A worker of several processes whose parent changed has
        lost its launcher (killed without passing the signal on), counted as SIGHUP; one process alone keeps
        going when its shell goes (`nohup`). All processes stop after the same step, or the ones that go on
        would wait for the others in the next gradient all-reduce.
        """
        several = self.accelerator.num_processes > 1 and torch.distributed.is_initialized()
        orphaned = several and os.getppid() != launcher
        requested = stop.requested or (signal.SIGHUP if orphaned else 0)
        if several:
            flag = torch.tensor([int(requested)], device=self.accelerator.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            requested = int(flag.item())
        return int(requested)

    def _stopped(self, signal_number: int) -> TrainingStopped:
        checkpoints = list_checkpoints(self.checkpoint_dir())
        resume = (
            f"resume from {checkpoints[-1]} with --resume_from_checkpoint latest"
            if checkpoints
            else "no checkpoint was saved yet (--checkpointing_steps N makes a stopped stage resumable)"
        )
        return TrainingStopped(
            f"stage {self.output_dir.name} stopped by {signal.Signals(signal_number).name} after step "
            f"{self.completed_steps} of {self.settings.num_iterations}; nothing was half written, the stage's "
            f"model was not saved: {resume}",
            signal_number,
        )

    # -------------------------------------------------------------------------------------- logging
    def _log(
        self, totals: dict[str, torch.Tensor], learning_rates: dict[str, float], progress
    ) -> dict[str, float]:
        # The one host synchronisation: losses averaged over processes, every `log_steps` steps.
        values = self._reduce(totals)
        self._check_finite(values)
        values.update(learning_rates)
        self.accelerator.log(values, step=self.completed_steps)
        progress.set_postfix(
            {k: f"{v:.4g}" for k, v in values.items() if k.startswith("loss")}, refresh=False
        )
        return values

    def _reduce(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """The step's losses averaged over processes (a collective: every process gets the same numbers)."""
        return {
            name: float(self.accelerator.reduce(v.float(), reduction="mean")) for name, v in totals.items()
        }

    def _saves_at(self, step: int) -> bool:
        s = self.settings
        return bool(
            (s.checkpointing_steps and step % s.checkpointing_steps == 0)
            or (s.snapshot_steps and step % s.snapshot_steps == 0)
        )

    def _check_finite(self, values: dict[str, float]) -> None:
        """Stop on a NaN or infinite loss: the weights are lost, and training on would save them."""
        bad = {name: v for name, v in values.items() if not math.isfinite(v)}
        if bad:
            name, value = next(iter(bad.items()))
            raise NonFiniteLossError(
                f"stage {self.output_dir.name}, step {self.completed_steps}: {name} is {value} (training "
                "diverged; nothing of this step was saved): lower --learning_rate or resume from an earlier "
                "checkpoint"
            )

    def _log_picture(self, source: dict, target: dict | None) -> None:
        if self.picture is None or not self.accelerator.is_main_process:
            return
        try:
            tracker = self.accelerator.get_tracker("tensorboard", unwrap=True)
        except (ValueError, AttributeError):
            return
        if tracker is None or not hasattr(tracker, "add_image"):
            return
        panel = self.picture(source, target, self._last_outputs)
        tracker.add_image("prediction", panel, self.completed_steps, dataformats="HWC")

    # ----------------------------------------------------------------------------------- persistence
    def checkpoint_dir(self) -> Path:
        return self.output_dir / CHECKPOINTS_DIR

    def save_checkpoint(self) -> Path:
        """`save_state` (models, optimizers, scaler, RNG) plus the loop position into `checkpoint-<step>`,
        written under a temporary name and renamed into place.

        Not Accelerate's `ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=K)`: it numbers
        folders by save count (`checkpoint_<k>`), not by step, writes them in place, so that a run killed
        mid-save leaves a partial folder that `load_state()` would then pick as the latest, and counts
        such a folder against `total_limit`. Here only complete checkpoints (with `loop_state.json`) are
        listed, resumed from and kept (`checkpoints_total_limit`).
        """
        acc = self.accelerator
        final = self.checkpoint_dir() / checkpoint_name(self.completed_steps)
        temporary = final.with_name(final.name + ".incomplete")
        acc.save_state(str(temporary))
        acc.wait_for_everyone()  # every process writes its RNG state there: all must be done before the rename
        if acc.is_main_process:
            state = {
                "iteration": self.completed_steps,
                "micro_step": self.micro_step,
                "num_processes": acc.num_processes,
                "mixed_precision": acc.mixed_precision,  # the option, else the launcher's setting
            }
            (temporary / STATE_FILE).write_text(json.dumps(state) + "\n")
            if final.exists():
                shutil.rmtree(final)
            temporary.rename(final)
            self._prune_checkpoints()
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self) -> None:
        limit = self.settings.checkpoints_total_limit
        if not limit:
            return
        for old in list_checkpoints(self.checkpoint_dir())[:-limit]:
            shutil.rmtree(old)

    def load_checkpoint(self, which: str) -> None:
        path = resolve_checkpoint(which, self.checkpoint_dir())
        state = json.loads((path / STATE_FILE).read_text())
        if state["num_processes"] != self.accelerator.num_processes:
            logger.warning(
                "resuming a %d-process checkpoint on %d processes: the data order differs from an "
                "uninterrupted run",
                state["num_processes"],
                self.accelerator.num_processes,
            )
        self.accelerator.load_state(str(path))
        self.completed_steps, self.micro_step = int(state["iteration"]), int(state["micro_step"])
        if self.accelerator.is_main_process:
            self._prune_checkpoints()  # a smaller --checkpoints_total_limit applies from the resume on
        logger.info("resumed from %s at iteration %d", path, self.completed_steps)

    def save_snapshot(self, folder: Path) -> None:
        """G (+ image processor) and the discriminators with `save_pretrained`, loadable with `from_pretrained`."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            with atomic_folder(folder) as staging:  # a killed save leaves no half snapshot to select
                generator = acc.unwrap_model(self.generator)
                if self.save_generator is not None:
                    self.save_generator(generator, staging / "generator")
                else:
                    generator.save_pretrained(staging / "generator")
                for name, d in zip(self.task.level_names, self.discriminators):
                    acc.unwrap_model(d).save_pretrained(staging / f"discriminator_{name}")
        acc.wait_for_everyone()


def list_checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints in `folder` (`checkpoint-<step>`; `checkpoint_<step>` is read too), by step."""
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir() if checkpoint_step(p.name) is not None and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: checkpoint_step(p.name))  # by step: "checkpoint-100" after "-20"


def resolve_checkpoint(which: str, folder: Path) -> Path:
    """`latest` -> the newest complete checkpoint in `folder`; otherwise `which` must be a checkpoint folder."""
    if which == "latest":
        found = list_checkpoints(folder)
        if not found:
            raise MissingInputError(f"--resume_from_checkpoint latest: no checkpoint in {folder}")
        return found[-1]
    path = Path(which)
    if not (path / STATE_FILE).is_file():
        raise MissingInputError(
            f"{path} is not a checkpoint folder (expected {STATE_FILE} written by save_state)"
        )
    return path
