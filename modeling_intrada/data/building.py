"""What every dataset builder shares: the command line, reading raw files, sharded writing, the card, the push.

A builder script (`gta5.py`, `cityscapes.py`, ...) only knows its raw layout and label coding: it
lists its examples into `SplitPlan`s, gives a function that turns one example into a row, and
describes its card. `build_dataset` does the rest:

1. checks that no split is empty;
2. cuts every split into Parquet shards of about `--max_shard_size` MB of raw files, in a fixed
   order (so the output does not depend on `--num_proc`);
3. writes the shards, `--num_proc` at a time, each row group streamed to disk (nothing holds a
   whole split in memory) into `<output_dir>.incomplete`, renamed to `<output_dir>` at the end;
4. writes `label_space.json`, `id2label.json` and the `README.md` card (`data.dataset_card`), with
   the row counts and what happened on the way (e.g. GTA5 pairs whose label was resized);
5. optionally uploads the folder to the Hub (`--push_to_hub`, private unless `--public`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import png
from PIL import Image

from modeling_intrada.data.dataset_card import DatasetDescription, write_dataset_card
from modeling_intrada.data.datasets import (
    LABEL_SPACE_FILE,
    encode_label_png,
    encode_png,
    shard_file_name,
    write_label_space,
    write_parquet_file,
)
from modeling_intrada.errors import MissingInputError, UsageError
from modeling_intrada.labels import LabelSpace, map_label_ids


class BuildError(UsageError):
    """The raw data is not what the builder expects (layout, pairing, file content)."""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _bounded_int(text, 0)


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def build_argument_parser(description: str, needs_data_dir: bool = True) -> argparse.ArgumentParser:
    """The options every builder takes; a builder adds its own before parsing."""
    parser = argparse.ArgumentParser(description=description)
    if needs_data_dir:
        parser.add_argument(
            "--data_dir", type=Path, required=True, help="the raw download, in its official layout"
        )
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="the folder to write the built dataset to"
    )
    parser.add_argument(
        "--push_to_hub", metavar="REPO_ID", help="also upload the folder to this Hub dataset repo"
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="make a newly created Hub repo public (default private: check the source's licence first)",
    )
    parser.add_argument(
        "--num_proc", type=positive_int, default=1, help="processes writing shards in parallel"
    )
    parser.add_argument(
        "--max_shard_size",
        type=non_negative_int,
        default=500,
        help="MB of raw files per Parquet shard (0: one row per shard)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing built dataset in output_dir"
    )
    return parser


# ---------------------------------------------------------------------------------------------
# Raw files
# ---------------------------------------------------------------------------------------------


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a clear error naming it and what it should hold."""
    if not path.exists():
        raise MissingInputError(f"{path} does not exist; expected {what}")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder; expected {what}")
    return path


def list_files(folder: Path, pattern: str, what: str) -> list[Path]:
    """Files under `folder` matching `pattern` (recursive glob), sorted; an empty result is an error."""
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise BuildError(
            f"no files matching {pattern!r} under {folder}: the split is empty (expected {what})"
        )
    return files


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise BuildError(
            f"{path}: cannot decode the image ({error}); expected a valid PNG/JPEG file"
        ) from error
    return image


def read_rgb_image(path: Path) -> tuple[bytes, tuple[int, int]]:
    """The bytes to store for an image and its (width, height), after decoding it fully once.

    An RGB file is stored as its original bytes (lossless, no re-encoding); any other mode is
    converted to RGB and stored as PNG.
    """
    image = _open_image(path)
    if image.mode == "RGB":
        return path.read_bytes(), image.size
    return encode_png(image.convert("RGB")), image.size


def read_label_ids(path: Path, modes: Sequence[str] = ("L", "P")) -> np.ndarray:
    """The raw label ids of a single-channel label image (palette indices for mode P)."""
    image = _open_image(path)
    if image.mode not in modes:
        raise BuildError(
            f"{path}: label image has mode {image.mode}; expected {' or '.join(modes)} "
            "(one label id per pixel, not a colour rendering)"
        )
    return np.asarray(image)


def read_png16_channel(path: Path, channel: int = 0) -> np.ndarray:
    """One channel of a 16-bit (grey, grey + alpha, RGB or RGBA) PNG as uint16, e.g. SYNTHIA's class ids.

    Pillow decodes 16-bit colour PNGs down to 8 bits, so the file is read with pypng, which returns
    every sample at the file's own bit depth (any filter, interlaced or not). pypng is pure Python:
    about a second for a 1280x760 RGB label, which `--num_proc` spreads over processes.
    """
    try:
        width, height, rows, info = png.Reader(filename=str(path)).read_flat()
    except (png.Error, zlib.error, OSError, ValueError) as error:
        raise BuildError(f"{path}: cannot decode the image ({error}); expected a 16-bit PNG") from error
    planes = info["planes"]
    if info["bitdepth"] != 16:
        kind = "a palette" if info.get("palette") else ("an L", "an LA", "an RGB", "an RGBA")[planes - 1]
        raise BuildError(
            f"{path}: is {kind} PNG with {info['bitdepth']} bits per channel; expected 16 bits per channel"
        )
    if channel >= planes:
        raise BuildError(f"{path}: has {planes} channels, no channel {channel}")
    samples = np.frombuffer(rows, dtype=np.uint16).reshape(height, width, planes)
    return samples[:, :, channel].copy()


@dataclass(frozen=True)
class Example:
    """One raw example: a stable id, the image file, the label file (None if unlabelled), metadata."""

    id: str
    image: Path
    label: Path | None = None
    metadata: dict = field(default_factory=dict)


def segmentation_row(
    example: Example,
    read_train_ids: Callable[[Path], np.ndarray],
    resize_mismatched_label: bool = False,
) -> tuple[dict, dict[str, list[str]]]:
    """The row of one segmentation example and its notable events (event name -> ids).

    Args:
        example: the raw files.
        read_train_ids: reads a label file into a uint8 train-id map (raises on bad values).
        resize_mismatched_label: when the label's size differs from the image's, resize the label
            to the image size with nearest neighbour and note it as "label_resized" (GTA5);
            otherwise such a pair is an error.
    """
    image_bytes, (width, height) = read_rgb_image(example.image)
    row: dict = {"image": {"bytes": image_bytes, "path": None}}
    events: dict[str, list[str]] = {}
    if example.label is not None:
        train_ids = read_train_ids(example.label)
        if train_ids.shape != (height, width):
            label_size = f"{train_ids.shape[1]}x{train_ids.shape[0]}"
            if not resize_mismatched_label:
                raise BuildError(
                    f"{example.label}: label is {label_size} but its image {example.image} is {width}x{height}"
                )
            train_ids = np.asarray(
                Image.fromarray(train_ids).resize((width, height), Image.Resampling.NEAREST)
            )
            events["label_resized"] = [f"{example.id} ({label_size} -> {width}x{height})"]
        row["label"] = {"bytes": encode_label_png(train_ids), "path": None}
    row["id"] = example.id
    row.update(example.metadata)
    return row, events


def mapped_label_reader(
    path: Path, table: dict[int, int], num_label_ids: int, modes: Sequence[str] = ("L", "P")
) -> np.ndarray:
    """Read a single-channel label image and map its ids with `table` (values outside the coding raise)."""
    return map_label_ids(read_label_ids(path, modes), table, num_label_ids, source=str(path))


def pair_by_stem(
    images: Sequence[Path], labels: Sequence[Path], image_suffix: str = "", label_suffix: str = ""
) -> list[tuple[str, Path, Path]]:
    """Pair image and label files by their stem (minus the given suffixes); unpaired files raise."""

    def key(path: Path, suffix: str) -> str:
        return path.stem[: -len(suffix)] if suffix and path.stem.endswith(suffix) else path.stem

    image_by_key = {key(p, image_suffix): p for p in images}
    label_by_key = {key(p, label_suffix): p for p in labels}
    missing_labels = sorted(set(image_by_key) - set(label_by_key))
    if missing_labels:
        shown = ", ".join(str(image_by_key[k]) for k in missing_labels[:5])
        raise BuildError(
            f"{len(missing_labels)} image(s) without a label, e.g. {shown}; expected a label file for every image"
        )
    missing_images = sorted(set(label_by_key) - set(image_by_key))
    if missing_images:
        shown = ", ".join(str(label_by_key[k]) for k in missing_images[:5])
        raise BuildError(f"{len(missing_images)} label(s) without an image, e.g. {shown}")
    return [(k, image_by_key[k], label_by_key[k]) for k in sorted(image_by_key)]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@dataclass
class SplitPlan:
    """One split to write: where it goes, what it holds and how to turn an item into a row.

    Args:
        config, split: the configuration and split names.
        items: the examples, in the order rows are written (must be picklable).
        features: the columns of the rows.
        make_row: item -> (row, events), a module-level function or `functools.partial`
            (it runs in worker processes).
        item_bytes: item -> estimated size in bytes, for cutting shards.
    """

    config: str
    split: str
    items: Sequence
    features: datasets.Features
    make_row: Callable[[object], tuple[dict, dict[str, list[str]]]]
    item_bytes: Callable[[object], int]


@dataclass
class BuildResult:
    """What `build_dataset` wrote: rows per config/split and the events seen (event -> ids)."""

    output_dir: Path
    splits: dict[str, dict[str, int]]
    events: dict[tuple[str, str], dict[str, list[str]]]

    def event_ids(self, event: str) -> list[str]:
        """Every id noted under `event`, over all splits."""
        return [i for per_split in self.events.values() for i in per_split.get(event, [])]


def example_bytes(example: Example) -> int:
    """The size of an example's raw files (for cutting shards)."""
    return example.image.stat().st_size + (example.label.stat().st_size if example.label is not None else 0)


def _cut_shards(plan: SplitPlan, max_shard_bytes: int) -> list[Sequence]:
    shards: list[list] = [[]]
    size = 0
    for item in plan.items:
        item_size = plan.item_bytes(item)
        if shards[-1] and size + item_size > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item_size
    return shards


def _write_shard(job: tuple) -> tuple[int, int, dict[str, list[str]]]:
    plan_index, path, items, features, make_row = job
    events: dict[str, list[str]] = {}

    def rows() -> Iterator[dict]:
        for item in items:
            row, item_events = make_row(item)
            for name, ids in item_events.items():
                events.setdefault(name, []).extend(ids)
            yield row

    count = write_parquet_file(path, rows(), features)
    return plan_index, count, events


def _prepare_output(output_dir: Path, overwrite: bool) -> Path:
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir} exists and is not empty; pass --overwrite or choose another folder"
            )
        if not (output_dir / LABEL_SPACE_FILE).is_file():
            raise FileExistsError(
                f"{output_dir} is not a built dataset (no {LABEL_SPACE_FILE}); refusing to delete it with --overwrite"
            )
    staging = output_dir.with_name(output_dir.name + ".incomplete")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _write_plans(
    staging: Path, plans: Sequence[SplitPlan], num_proc: int, max_shard_bytes: int
) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], dict[str, list[str]]]]:
    """Write every plan's shards (in parallel when asked); return rows per config/split and events."""
    jobs = []
    for plan_index, plan in enumerate(plans):
        shards = _cut_shards(plan, max_shard_bytes)
        for shard_index, items in enumerate(shards):
            path = staging / shard_file_name(plan.config, plan.split, shard_index, len(shards))
            jobs.append((plan_index, path, items, plan.features, plan.make_row))
    counts = [0] * len(plans)
    events: dict[tuple[str, str], dict[str, list[str]]] = {(p.config, p.split): {} for p in plans}

    def collect(result: tuple[int, int, dict[str, list[str]]]) -> None:
        plan_index, count, shard_events = result
        counts[plan_index] += count
        split_events = events[plans[plan_index].config, plans[plan_index].split]
        for name, ids in shard_events.items():
            split_events.setdefault(name, []).extend(ids)

    if num_proc == 1 or len(jobs) == 1:
        for job in jobs:
            collect(_write_shard(job))
    else:
        with multiprocessing.get_context().Pool(min(num_proc, len(jobs))) as pool:
            for result in pool.imap_unordered(_write_shard, jobs):
                collect(result)
    for split_events in events.values():
        for ids in split_events.values():
            ids.sort()  # shards finish in any order; the card should not
    splits: dict[str, dict[str, int]] = {}
    for plan, count in zip(plans, counts):
        splits.setdefault(plan.config, {})[plan.split] = count
    return splits, events


def build_dataset(
    output_dir: Path,
    plans: Sequence[SplitPlan],
    label_space: LabelSpace,
    make_card: Callable[[BuildResult], DatasetDescription],
    *,
    num_proc: int = 1,
    max_shard_size_mb: int = 500,
    overwrite: bool = False,
    label_space_extra: dict | None = None,
) -> BuildResult:
    """Write every plan as Parquet shards, then the label space and the card (see module docstring).

    Raises:
        BuildError: a split is empty, or a worker met bad raw data (the message names the file).
        FileExistsError: `output_dir` is not empty and `overwrite` is false.
    """
    for plan in plans:
        if len(plan.items) == 0:
            raise BuildError(f"config {plan.config!r} split {plan.split!r} is empty: no examples found")
    if num_proc < 1:
        raise ValueError(f"--num_proc must be at least 1, got {num_proc}")
    if max_shard_size_mb < 0:
        raise ValueError(
            f"--max_shard_size must be at least 0 (MB; 0: one row per shard), got {max_shard_size_mb}"
        )
    output_dir = Path(output_dir)
    staging = _prepare_output(output_dir, overwrite)
    try:
        splits, events = _write_plans(staging, plans, num_proc, max_shard_size_mb * 2**20)
        result = BuildResult(output_dir, splits, events)
        write_label_space(staging, label_space, label_space_extra)
        write_dataset_card(staging, make_card(result))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # leave nothing half-built behind
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir)
    staging.rename(output_dir)
    return result


def events_summary(result: BuildResult, event: str, what: str, max_ids: int = 20) -> str:
    """A card line: how many rows had `event`, and which (up to `max_ids`)."""
    ids = result.event_ids(event)
    if not ids:
        return f"0 {what}"
    shown = ", ".join(ids[:max_ids]) + (f", ... ({len(ids) - max_ids} more)" if len(ids) > max_ids else "")
    return f"{len(ids)} {what}: {shown}"


def push_to_hub(output_dir: Path, repo_id: str, private: bool = True) -> str:
    """Upload a built dataset folder to a Hub dataset repository (created if needed); return its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        repo_type="dataset",
        commit_message=f"Upload {Path(output_dir).name} built by intrada-hf dataset_scripts",
    )
    return f"https://huggingface.co/datasets/{repo_id}"


def finish(args: argparse.Namespace, result: BuildResult) -> None:
    """Print what was built and push it when `--push_to_hub` was given."""
    for config, splits in result.splits.items():
        for split, count in splits.items():
            print(f"{config}/{split}: {count:,} rows")
    print(f"wrote {result.output_dir}")
    if args.push_to_hub:
        print(f"uploaded to {push_to_hub(result.output_dir, args.push_to_hub, private=not args.public)}")


def build_from_arguments(
    args: argparse.Namespace,
    plans: Sequence[SplitPlan],
    label_space: LabelSpace,
    make_card: Callable[[BuildResult], DatasetDescription],
    **label_space_extra: object,
) -> BuildResult:
    """A builder program's whole job after parsing: `build_dataset` with the common options of
    `build_argument_parser`, then `finish` (summary, push)."""
    result = build_dataset(
        args.output_dir,
        plans,
        label_space,
        make_card,
        num_proc=args.num_proc,
        max_shard_size_mb=args.max_shard_size,
        overwrite=args.overwrite,
        label_space_extra=label_space_extra,
    )
    finish(args, result)
    return result
