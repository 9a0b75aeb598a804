"""Images per second of stage 2 (entropy ranking): batched inference, scores on the device, PNG encoding in threads.

    python benchmarks/bench_ranking.py --backbone resnet101 --size 512 1024 --images 32 --batch_size 4 --precision bf16
    python benchmarks/bench_ranking.py --backbone timm:tf_efficientnet_lite0 --size 180 240 --images 62   # CPU

Runs `modeling_intrada.ranking.rank_by_entropy` over random images (the network's cost does not depend on
their content) and reports images/s for the whole call, including the transfers and the pseudo-label encoding.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import environment, peak_memory_mb, report, synchronize

from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
from modeling_intrada.method.ranking import rank_by_entropy

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def batches(count: int, batch_size: int, size: list[int], device: torch.device):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(min(count, batch_size), 3, *size, generator=generator)
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        yield {"pixel_values": images[:n].to(device), "id": [f"im{start + i}" for i in range(n)],
               "index": list(range(start, start + n))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--num_labels", type=int, default=19)
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch_size", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--precision", nargs="+", choices=list(DTYPES), default=["fp32"])
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone=args.backbone, num_labels=args.num_labels)
    )
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=memory_format).eval()
    rows = []
    for precision in args.precision:
        for batch_size in args.batch_size:
            if device.type == "cuda":  # each row its own peak (on a CPU the process peak: order rows upwards)
                torch.cuda.reset_peak_memory_stats(device)
            rank_by_entropy(model, batches(batch_size, batch_size, args.size, device), 0.67,
                            autocast_dtype=DTYPES[precision])  # warm-up  # fmt: skip
            synchronize(device)
            start = time.perf_counter()
            result = rank_by_entropy(
                model,
                batches(args.images, batch_size, args.size, device),
                0.67,
                autocast_dtype=DTYPES[precision],
            )
            synchronize(device)
            seconds = time.perf_counter() - start
            assert len(result.ids) == args.images
            rows.append({
                "backbone": args.backbone, "size": "x".join(map(str, args.size)), "precision": precision,
                "batch_size": batch_size, "images": args.images, "images_per_s": args.images / seconds,
                "peak_memory_mb": peak_memory_mb(device), **environment(device),
            })  # fmt: skip
    report("ranking", rows, ["backbone", "size", "precision", "batch_size", "images_per_s", "peak_memory_mb"])


if __name__ == "__main__":
    main()
