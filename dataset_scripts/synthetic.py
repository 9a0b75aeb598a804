"""Build the embedded default dataset (procedural street scenes, two domains) into a folder.

Training generates it by itself on first use (`modeling_intrada.data.synthetic`); this script is for
building it explicitly, at another size, or for pushing it to the Hub. Nothing is downloaded and
the same `--seed` and sizes give byte-identical files. See `docs/datasets.md`.

    python dataset_scripts/synthetic.py --output_dir OUT/synthetic [--seed 0] [--push_to_hub REPO_ID]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from modeling_intrada.data.building import push_to_hub
from modeling_intrada.data.synthetic import SyntheticConfig, build_synthetic_dataset
from modeling_intrada.errors import run_program


def main(argv: Sequence[str] | None = None) -> Path:
    """Parse the command line, build (or reuse) the dataset, optionally push it."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="the folder to write the built dataset to"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num_source", type=int, default=defaults.num_source)
    parser.add_argument("--num_target_train", type=int, default=defaults.num_target_train)
    parser.add_argument("--num_target_val", type=int, default=defaults.num_target_val)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument(
        "--push_to_hub", metavar="REPO_ID", help="also upload the folder to this Hub dataset repo"
    )
    parser.add_argument("--public", action="store_true", help="make a newly created Hub repo public")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a synthetic dataset built with other parameters"
    )
    args = parser.parse_args(argv)
    output_dir = build_synthetic_dataset(
        args.output_dir,
        args.seed,
        num_source=args.num_source,
        num_target_train=args.num_target_train,
        num_target_val=args.num_target_val,
        height=args.height,
        width=args.width,
        overwrite=args.overwrite,
    )
    for shard in sorted(output_dir.glob("*/*.parquet")):
        print(f"{shard.relative_to(output_dir)}: {pq.ParquetFile(shard).metadata.num_rows:,} rows")
    print(f"wrote {output_dir}")
    if args.push_to_hub:
        print(f"uploaded to {push_to_hub(output_dir, args.push_to_hub, private=not args.public)}")
    return output_dir


if __name__ == "__main__":
    run_program(main)
