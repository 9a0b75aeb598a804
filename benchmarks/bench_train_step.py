"""Seconds per stage-1 iteration and peak memory, ours (Accelerate loop + transformers models) or the reference.

    python benchmarks/bench_train_step.py --backbone resnet101 --source_size 144 256 --target_size 128 256
    python benchmarks/bench_train_step.py --implementation both          # ours and the plain re-statement
    python benchmarks/bench_train_step.py --device cuda --precision bf16 --channels_last --compile

`ours` runs `AdaptationStage.adversarial_iteration` + `optimizer_step` (training/stage_loop.py) on
`DeepLabV2ForSemanticSegmentation`; `reference` runs the authors' iteration re-stated in plain PyTorch
(benchmarks/reference_deeplab.py: no Accelerate, no transformers). With `both`, the two alternate iteration by
iteration, so that a noisy machine affects both alike, and the ratio measures what Accelerate and the model
wrappers cost. Inputs are random tensors already on the device (data loading: bench_dataloading.py).
"""

from __future__ import annotations

import argparse
import gc

import torch
from _common import environment, median, peak_memory_mb, report, synchronize
from accelerate import Accelerator
from stage_loop import AdaptationStage, StageSettings

from modeling_intrada import (
    DeepLabV2Config,
    DeepLabV2ForSemanticSegmentation,
    FCDiscriminator,
    FCDiscriminatorConfig,
)
from modeling_intrada.adaptation import SegmentationTask

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class Tensors(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        raise RuntimeError("the benchmark feeds tensors directly")


def build_ours(args, device: torch.device):
    torch.manual_seed(0)
    accelerator = Accelerator(mixed_precision=PRECISIONS[args.precision], cpu=device.type == "cpu")
    generator = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone=args.backbone, num_labels=args.num_labels, multi_level=not args.single_level)
    )
    levels = 1 if args.single_level else 2
    discriminators = [
        FCDiscriminator(FCDiscriminatorConfig(num_channels=args.num_labels)) for _ in range(levels)
    ]
    settings = StageSettings(
        framework=args.framework, num_iterations=1, max_iters=250_000, channels_last=args.channels_last,
        torch_compile=args.compile, snapshot_steps=None,
    )  # fmt: skip
    stage = AdaptationStage(
        accelerator, SegmentationTask(framework=args.framework, multi_level=not args.single_level), generator,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--implementation", choices=["ours", "reference", "both"], default="ours")
    parser.add_argument("--backbone", default="resnet101")
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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    names = ["ours", "reference"] if args.implementation == "both" else [args.implementation]
    steps, memory = {}, {}
    for name in names:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps[name] = (build_ours if name == "ours" else build_reference)(args, device)
        for _ in range(args.warmup):
            steps[name]()
        synchronize(device)
        memory[name] = peak_memory_mb(device)
        gc.collect()
    seconds = {name: [] for name in names}
    import time

    for _ in range(args.iterations):
        for name in names:  # alternate: a noisy neighbour slows both alike
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    rows = []
    for name in names:
        rows.append(
            {
                "implementation": name,
                "backbone": args.backbone,
                "source": "x".join(map(str, args.source_size)),
                "target": "x".join(map(str, args.target_size)),
                "framework": args.framework,
                "precision": args.precision,
                "channels_last": args.channels_last,
                "compile": args.compile,
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
    columns = ["implementation", "backbone", "precision", "channels_last", "compile", "s_per_iter_median",
               "s_per_iter_min", "peak_memory_mb", "ours_over_reference"]  # fmt: skip
    report("train_step", rows, columns)
    if device.type == "cpu" and len(names) == 2:
        print("\nCPU peak memory is the process peak RSS, measured after each implementation's warm-up: "
              "the second figure includes the first's allocations.")  # fmt: skip


if __name__ == "__main__":
    main()
