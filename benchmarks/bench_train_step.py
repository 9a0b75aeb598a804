"""Seconds per stage-1 iteration and peak memory, ours (Accelerate loop + transformers models) or the reference.

    python benchmarks/bench_train_step.py --backbone resnet101 --source_size 144 256 --target_size 128 256
    python benchmarks/bench_train_step.py --implementation both          # ours and the plain re-statement
    python benchmarks/bench_train_step.py --device cuda --precision bf16 --channels_last --compile
    python benchmarks/bench_train_step.py --generator_config benchmarks/configs/segformer_mit_b5.json

`ours` runs `AdaptationStage.adversarial_iteration` + `optimizer_step` (modeling_intrada/training/stage_loop.py) on
`DeepLabV2ForSemanticSegmentation`; `reference` runs the authors' iteration re-stated in plain PyTorch
(benchmarks/reference_deeplab.py: no Accelerate, no transformers). With `both`, the two alternate iteration by
iteration, so that a noisy machine affects both alike, and the ratio measures what Accelerate and the model
wrappers cost. Inputs are random tensors already on the device (data loading: bench_dataloading.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import environment, median, peak_memory_mb, report, synchronize
from accelerate import Accelerator
from transformers import AutoConfig, AutoModelForSemanticSegmentation

from modeling_intrada import (
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    FCDiscriminator,
    FCDiscriminatorConfig,
)
from modeling_intrada.method.adaptation import SegmentationTask
from modeling_intrada.method.segmenters import has_auxiliary_level, prepare_generator, uses_align_corners
from modeling_intrada.training.cpu_allocator import keep_freed_memory
from modeling_intrada.training.stage_loop import AdaptationStage, StageSettings

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class Tensors(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        raise RuntimeError("the benchmark feeds tensors directly")


def build_generator(args) -> torch.nn.Module:
    """DeepLab-v2 of `--backbone`, or a new model of `--generator_config` set up as the pipeline does."""
    if not args.generator_config:
        return DeepLabV2ForSemanticSegmentation(
            DeepLabV2Config(
                backbone=args.backbone, num_labels=args.num_labels, multi_level=not args.single_level,
                atrous_implementation=args.atrous_implementation,
            )
        )  # fmt: skip
    config = AutoConfig.for_model(**json.loads(Path(args.generator_config).read_text()))
    config.id2label = {i: f"class {i}" for i in range(args.num_labels)}
    config.label2id = {name: i for i, name in config.id2label.items()}
    generator = AutoModelForSemanticSegmentation.from_config(config)
    prepare_generator(generator, multi_level=not args.single_level)
    return generator


def build_ours(args, device: torch.device):
    torch.manual_seed(0)
    accelerator = Accelerator(mixed_precision=PRECISIONS[args.precision], cpu=device.type == "cpu")
    generator = build_generator(args)
    levels = 2 if has_auxiliary_level(generator) and not args.single_level else 1
    task = SegmentationTask(
        framework=args.framework, multi_level=levels == 2, align_corners=uses_align_corners(generator)
    )
    discriminators = [
        FCDiscriminator(FCDiscriminatorConfig(num_channels=args.num_labels)) for _ in range(levels)
    ]
    settings = StageSettings(
        framework=args.framework, num_iterations=1, max_iters=250_000, channels_last=args.channels_last,
        torch_compile=args.compile, torch_compile_mode=args.compile_mode, snapshot_steps=None,
        compile_discriminator_input=args.compile_discriminator_input,
        optimizer_implementation=args.optimizer_implementation, autocast_policy=args.autocast_policy,
    )  # fmt: skip
    stage = AdaptationStage(
        accelerator, task, generator,
        discriminators if settings.uses_discriminators else [], (Tensors(), args.batch_size),
        (Tensors(), args.batch_size), settings, output_dir="/tmp/bench_train_step",
    )  # fmt: skip
    stage.generator.train()
    source, target = batch(args, device)
    source, target = stage._to_device(source), stage._to_device(target)

    def step() -> None:
        stage.set_learning_rates(0)
        stage.adversarial_iteration(source, target)
        stage.optimizer_step()

    return step


def build_reference(args, device: torch.device):
    from reference_deeplab import ReferenceAdvEnt, RefResNetMulti

    if (
        args.backbone not in ("resnet101", "resnet50")
        or args.framework != "advent"
        or args.precision != "fp32"
    ):
        raise SystemExit(
            "--implementation reference re-states the authors' AdvEnt on the ResNets in fp32 only"
        )
    torch.manual_seed(0)
    layers = (3, 4, 23, 3) if args.backbone == "resnet101" else (3, 4, 6, 3)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    trainer = ReferenceAdvEnt(RefResNetMulti(layers, args.num_labels, multi_level=True), args.num_labels)
    trainer.to(device, memory_format)
    source, target = batch(args, device)
    images_source = source["pixel_values"].contiguous(memory_format=memory_format)
    images_target = target["pixel_values"].contiguous(memory_format=memory_format)
    return lambda: trainer.step(images_source, source["labels"], images_target)


def batch(args, device: torch.device) -> tuple[dict, dict]:
    generator = torch.Generator().manual_seed(1)
    source = {
        "pixel_values": torch.randn(args.batch_size, 3, *args.source_size, generator=generator).to(device),
        "labels": torch.randint(
            0, args.num_labels, (args.batch_size, *args.source_size), generator=generator
        ).to(device),
    }
    target = {
        "pixel_values": torch.randn(args.batch_size, 3, *args.target_size, generator=generator).to(device)
    }
    return source, target


def add_step_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe one training step (network, sizes, precision, fast paths, device), shared by
    the benchmarks that time or profile it."""
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument(
        "--generator_config", default=None,
        help="a config.json of any transformers segmenter (SegFormer, UperNet, ...) as G instead of DeepLab-v2",
    )  # fmt: skip
    parser.add_argument("--num_labels", type=int, default=19)
    parser.add_argument("--single_level", action="store_true")
    parser.add_argument("--source_size", type=int, nargs=2, default=[144, 256], metavar=("H", "W"))
    parser.add_argument("--target_size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"))
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument(
        "--framework", default="advent", choices=["advent", "adaptsegnet", "minent", "source_only"]
    )
    parser.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    add_fast_path_options(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def add_fast_path_options(parser: argparse.ArgumentParser) -> None:
    """The candidate fast paths of ours (StageSettings and DeepLabV2Config options), off by default."""
    parser.add_argument(
        "--atrous_implementation",
        choices=["dilated", "space_to_batch", "space_to_batch_backbone"],
        default="dilated",
    )
    parser.add_argument("--compile_mode", default=None, help="torch.compile mode, e.g. reduce-overhead")
    parser.add_argument("--compile_discriminator_input", action="store_true")
    parser.add_argument(
        "--optimizer_implementation", choices=["default", "foreach", "fused"], default="default"
    )
    parser.add_argument("--autocast_policy", choices=["default", "fp32_batchnorm"], default="default")


def fast_path_options(args: argparse.Namespace) -> dict:
    """The fast-path options of `args`, for the JSON lines."""
    names = ("atrous_implementation", "compile_mode", "compile_discriminator_input", "optimizer_implementation",
             "autocast_policy")  # fmt: skip
    return {name: getattr(args, name) for name in names}


RAW = "raw-seconds: "


def other(name: str) -> str:
    return "reference" if name == "ours" else "ours"


def measure(args, names: list[str], device: torch.device) -> tuple[dict, dict]:
    """Build the implementations in `names` order, warm each up, then time them alternately.

    Peak memory: on a CPU the process's peak after the warm-up (the caller keeps the figure of the
    implementation built first); on CUDA the largest allocation peak over the timed steps, each step's peak
    measured on its own (the other implementation's weights and optimizer state stay resident). The warm-up's CUDA peak means nothing: cudnn.benchmark (set by both, as the authors' code
    does) tries algorithms with workspaces as large as the free memory (137 GB on an H200).
    """
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    steps, memory = {}, {}
    for name in names:
        steps[name] = (build_ours if name == "ours" else build_reference)(args, device)
        for _ in range(args.warmup):
            steps[name]()
        synchronize(device)
        memory[name] = 0.0 if cuda else peak_memory_mb(device)
        gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    seconds = {name: [] for name in names}
    for _ in range(args.iterations):
        for name in names:  # alternate: a noisy neighbour slows both alike
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
            if cuda:
                memory[name] = max(memory[name], peak_memory_mb(device))
    return seconds, memory


def both_orders(argv: list[str]) -> tuple[dict, dict]:
    """`both`: two child processes, one building ours first, one the reference first.

    On a CPU with glibc's default allocator, which of two implementations in one process pays for page
    faults depends on the heap's history, so on the build order (14 % in one trial; the allocator, not the
    code), and one order alone can favour either. Each child alternates the two iteration by iteration; the
    times of both children are pooled, and each implementation's peak memory is taken from the child that
    built it first (the process peak then holds it alone).
    """
    seconds, memory = {"ours": [], "reference": []}, {}
    for first in ("ours", "reference"):
        result = subprocess.run(
            [sys.executable, __file__, *argv, "--first", first, "--raw"],
            check=True, stdout=subprocess.PIPE, text=True,  # the child's errors reach stderr
        )  # fmt: skip
        line = next(line for line in result.stdout.splitlines() if line.startswith(RAW))
        child = json.loads(line[len(RAW) :])
        for name in seconds:
            seconds[name] += child["seconds"][name]
        memory[first] = child["memory"][first]
    return seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--implementation", choices=["ours", "reference", "both"], default="ours")
    add_step_options(parser)
    parser.add_argument(
        "--allocator", choices=["keep", "default"], default="keep",
        help="CPU: keep = keep_freed_memory() as run_intrada.py does (no page faults), default = glibc as is",
    )  # fmt: skip
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--first", choices=["ours", "reference"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu" and args.allocator == "keep":
        keep_freed_memory()  # for both implementations alike

    if args.implementation == "both" and args.first is None:
        seconds, memory = both_orders(sys.argv[1:])
    else:
        names = [args.implementation] if args.implementation != "both" else [args.first, other(args.first)]
        seconds, memory = measure(args, names, device)
    if args.raw:  # one order of `both`, run as a child process
        print(RAW + json.dumps({"seconds": seconds, "memory": memory}))
        return
    names = list(seconds)
    rows = []
    for name in names:
        rows.append(
            {
                "implementation": name,
                "backbone": Path(args.generator_config).stem if args.generator_config else args.backbone,
                "source": "x".join(map(str, args.source_size)),
                "target": "x".join(map(str, args.target_size)),
                "framework": args.framework,
                "precision": args.precision,
                "channels_last": args.channels_last,
                "compile": args.compile,
                **fast_path_options(args),
                "allocator": args.allocator if device.type == "cpu" else "cuda",
                "s_per_iter_median": median(seconds[name]),
                "s_per_iter_min": min(seconds[name]),
                "peak_memory_mb": memory[name],
                **environment(device),
            }
        )
    if len(names) == 2:
        ratio = median(seconds["ours"]) / median(seconds["reference"])
        for row in rows:
            row["ours_over_reference"] = ratio
    columns = ["implementation", "backbone", "precision", "channels_last", "compile", "allocator",
               "s_per_iter_median", "s_per_iter_min", "peak_memory_mb", "ours_over_reference"]  # fmt: skip
    report("train_step", rows, columns)
    if len(names) == 2:
        print(f"\n{len(seconds['ours'])} iterations each, pooled over two processes (ours built first, then "
              "the reference built first); peak memory from the process that built it first.")  # fmt: skip


if __name__ == "__main__":
    main()
