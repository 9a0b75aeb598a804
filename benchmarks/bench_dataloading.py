"""Decoded and transformed samples per second: a built dataset (Parquet) vs the raw PNG folders, N workers.

    python benchmarks/bench_dataloading.py                      # CamVid from ../shared/data, built once to a tmp folder
    python benchmarks/bench_dataloading.py --built data/camvid --raw ../shared/data/camvid --workers 0 1 2 4

Both paths decode the same PNGs and apply the same transform (`modeling_intrada.data.SegmentationTransform`:
bicubic/nearest resize, normalisation); the built path reads the bytes from Parquet through `datasets`, the raw
path opens the files listed in CamVid's train.txt. Reported: samples/s over whole epochs after one warm-up epoch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, report
from PIL import Image

from modeling_intrada.data.datasets import SegmentationDataset, SegmentationTransform, load_split


class RawCamVid(torch.utils.data.Dataset):
    """The raw SegNet files of one split, decoded with PIL, 11 (void) -> 255 as the builder does."""

    def __init__(self, root: Path, split: str, transform: SegmentationTransform) -> None:
        lines = (root / f"{split}.txt").read_text().split("\n")
        self.pairs = [
            tuple(root / Path(p).parent.name / Path(p).name for p in line.split())
            for line in lines
            if line.strip()
        ]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.pairs[index]
        image = Image.open(image_path).convert("RGB")
        label = Image.open(label_path).point(lambda v: 255 if v == 11 else v)
        pixel_values, labels = self.transform(image, label, image_path.stem)
        return {"pixel_values": pixel_values, "labels": labels}


def samples_per_second(
    dataset: torch.utils.data.Dataset, workers: int, batch_size: int, epochs: int
) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0, shuffle=False,
        collate_fn=lambda items: torch.stack([i["pixel_values"] for i in items]),
    )  # fmt: skip
    for _ in loader:  # warm-up epoch: worker start-up, page cache, datasets' Arrow cache
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            pass
    return epochs * len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "data" / "camvid")
    parser.add_argument(
        "--built", type=Path, default=None, help="built CamVid folder (default: build to a tmp dir)"
    )
    parser.add_argument("--size", type=int, nargs=2, default=[180, 240])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if not (args.raw / "train.txt").is_file():
        raise SystemExit(f"{args.raw} is not the CamVid SegNet folder (train.txt missing)")
    built = args.built
    if built is None:
        built = Path(tempfile.mkdtemp()) / "camvid"
        subprocess.run(
            [sys.executable, str(ROOT / "dataset_scripts" / "camvid.py"), "--data_dir", str(args.raw),
             "--output_dir", str(built)],
            check=True, capture_output=True,
        )  # fmt: skip
    transform = SegmentationTransform(size=tuple(args.size), normalization="imagenet")
    candidates = {
        "built (Parquet, datasets)": SegmentationDataset(load_split(built, "full", "train"), transform),
        "raw PNG folders": RawCamVid(args.raw, "train", transform),
    }
    rows = []
    for workers in args.workers:
        for name, dataset in candidates.items():
            rate = samples_per_second(dataset, workers, args.batch_size, args.epochs)
            rows.append({"source": name, "workers": workers, "samples": len(dataset), "samples_per_s": rate})
    report("dataloading", rows, ["source", "workers", "samples", "samples_per_s"])


if __name__ == "__main__":
    main()
