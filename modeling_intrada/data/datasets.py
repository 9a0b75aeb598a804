"""Built datasets: writing them (Parquet shards, label space) and reading them for training.

A built dataset is a folder (or a Hub dataset repository) in the layout `datasets.load_dataset`
reads: `<config>/<split>-00000-of-000NN.parquet` files whose rows hold the PNG bytes of `image`
and, for labelled splits, `label` (uint8 train ids, 255 ignore), a stable `id` and metadata
columns; a `README.md` card whose YAML header lists the configurations (written by
`modeling_intrada.data.dataset_card`); and `label_space.json` / `id2label.json` with the
classes. `dataset_scripts/` writes them from raw downloads, `modeling_intrada.data.synthetic` writes
the embedded default, and training reads them with `SegmentationDataset` (map-style) or
`StreamingSegmentationDataset` (iterable, for large sets).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from modeling_intrada.errors import MissingInputError
from modeling_intrada.labels import CITYSCAPES_LABEL_ID_TO_TRAIN_ID, LabelSpace, build_lut
from modeling_intrada.models.deeplabv2.image_transforms import (
    NORMALIZATIONS,
    label_to_array,
    normalize,
    random_crop,
    random_hflip,
    resize_image,
    resize_label,
)

LABEL_SPACE_FILE = "label_space.json"
ID2LABEL_FILE = "id2label.json"

# Row groups of at most this many rows or bytes: small enough that streaming reads little at a
# time, large enough that Parquet overhead stays negligible.
ROW_GROUP_MAX_ROWS = 100
ROW_GROUP_MAX_BYTES = 64 * 2**20

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def segmentation_features(
    with_label: bool = True, metadata: Mapping[str, datasets.Value] | None = None
) -> datasets.Features:
    """The features of a segmentation split: `image`, optional `label`, `id`, then metadata columns."""
    columns: dict[str, object] = {"image": datasets.Image()}
    if with_label:
        columns["label"] = datasets.Image()
    columns["id"] = datasets.Value("string")
    columns.update(metadata or {})
    return datasets.Features(columns)


def encode_label_png(train_ids: np.ndarray) -> bytes:
    """PNG bytes of a uint8 train-id map (mode L), the `label` column's content."""
    array = np.asarray(train_ids)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (height, width) train-id map, got {array.dtype} {array.shape}")
    return encode_png(Image.fromarray(array, mode="L"))


def encode_png(image: Image.Image, compress_level: int = 6) -> bytes:
    """PNG bytes of a PIL image (deterministic for a given Pillow/zlib and `compress_level`, 0..9)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def shard_file_name(config: str, split: str, shard_index: int, num_shards: int) -> str:
    """The relative path of one Parquet shard, e.g. `source/train-00000-of-00002.parquet`."""
    return f"{config}/{split}-{shard_index:05d}-of-{num_shards:05d}.parquet"


def _row_bytes(row: Mapping) -> int:
    size = 0
    for value in row.values():
        if isinstance(value, dict) and isinstance(value.get("bytes"), bytes | bytearray):
            size += len(value["bytes"])
        elif isinstance(value, str | bytes):
            size += len(value)
        else:
            size += 8
    return size


def write_parquet_file(path: str | Path, rows: Iterable[Mapping], features: datasets.Features) -> int:
    """Write `rows` (dicts matching `features`) to one Parquet file, a row group at a time.

    Only one row group is held in memory. The file is written under a temporary name and renamed
    at the end, so a crash never leaves a truncated shard behind. Images may be given as
    `{"bytes": ..., "path": None}`, PNG bytes, PIL images or arrays (`datasets.Image` encodes them).

    Returns:
        The number of rows written.

    Raises:
        ValueError: `rows` is empty (an empty shard means an empty split upstream).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = features.arrow_schema
    temporary = path.with_name(path.name + ".incomplete")
    count = 0
    batch: list[dict] = []
    batch_bytes = 0
    try:
        with pq.ParquetWriter(temporary, schema) as writer:
            for row in rows:
                encoded = features.encode_example(dict(row))
                batch.append(encoded)
                batch_bytes += _row_bytes(encoded)
                count += 1
                if len(batch) >= ROW_GROUP_MAX_ROWS or batch_bytes >= ROW_GROUP_MAX_BYTES:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch, batch_bytes = [], 0
            if batch:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if count == 0:
        temporary.unlink()
        raise ValueError(f"no rows to write to {path}: the split is empty")
    os.replace(temporary, path)
    return count


def write_label_space(output_dir: str | Path, label_space: LabelSpace, extra: Mapping | None = None) -> None:
    """Write `label_space.json` (classes, palette, rare classes, plus `extra`) and `id2label.json`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    content = label_space.to_dict()
    content.update(extra or {})
    (output_dir / LABEL_SPACE_FILE).write_text(json.dumps(content, indent=2) + "\n")
    id2label = {str(i): name for i, name in label_space.id2label.items()}
    (output_dir / ID2LABEL_FILE).write_text(json.dumps(id2label, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _local_path(source: str | Path) -> Path | None:
    """`source` as a local folder, None when it names a Hub repository, or an error."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; expected a built dataset folder or a Hub dataset id")
    if isinstance(source, Path) or text.startswith((".", "/", "~")) or not _REPO_ID.match(text):
        raise MissingInputError(
            f"dataset folder {path} does not exist (expected a folder written by dataset_scripts/ "
            "or a Hub dataset id such as 'user/name')"
        )
    return None


# How label maps of a dataset not built here code the classes: train ids as written by dataset_scripts/, or the
# Cityscapes label ids (0..33, also GTA5's), mapped to train ids when read.
LABEL_CODINGS = {"train_ids": None, "cityscapes_label_ids": CITYSCAPES_LABEL_ID_TO_TRAIN_ID}


@dataclass(frozen=True)
class ColumnLayout:
    """How a dataset that `dataset_scripts/` did not build (e.g. a Parquet dataset on the Hub) names its columns
    and codes its label maps; reading renames the columns to `image` and `label` and adds a row `id`.

    Args:
        image_column: the column of the images.
        label_column: the column of the label maps (images); absent in unlabelled splits.
        label_ids: "train_ids" (class indices, 255 ignore) or "cityscapes_label_ids" (the Cityscapes and
            GTA5 label ids, mapped to the 19 train ids, others to 255).
    """

    image_column: str = "image"
    label_column: str = "label"
    label_ids: str = "train_ids"

    def __post_init__(self) -> None:
        if self.label_ids not in LABEL_CODINGS:
            raise ValueError(f"label_ids must be one of {sorted(LABEL_CODINGS)}, got {self.label_ids!r}")

    def label_lut(self) -> np.ndarray | None:
        """The label value -> train id table, or None for train ids."""
        table = LABEL_CODINGS[self.label_ids]
        return build_lut(table, 256) if table is not None else None

    def adapt(
        self, dataset: datasets.Dataset | datasets.IterableDataset, split: str
    ) -> datasets.Dataset | datasets.IterableDataset:
        """The split with `image`, `label` (when labelled) and `id` columns."""
        columns = list(dataset.column_names or [])
        if self.image_column not in columns and "image" not in columns:
            raise ValueError(
                f"no image column {self.image_column!r} in {columns}: pass the dataset's --image_column_name"
            )
        for name, ours in ((self.image_column, "image"), (self.label_column, "label")):
            if name != ours and name in columns:
                if ours in columns:
                    dataset = dataset.remove_columns(ours)
                dataset = dataset.rename_column(name, ours)
        if "id" not in columns:
            dataset = dataset.map(lambda _, index: {"id": f"{split}_{index:06d}"}, with_indices=True)
        return dataset


@dataclass
class DatasetColumnArguments:
    """The options that say how to read a dataset not built by `dataset_scripts/` (e.g. a Hub Parquet dataset):
    shared by the pipeline's and the evaluator's arguments."""

    image_column_name: str = field(
        default="image",
        metadata={
            "help": "image column of datasets not built by dataset_scripts/ (e.g. Hub Parquet datasets)"
        },
    )
    label_column_name: str = field(
        default="label", metadata={"help": "label-map column of datasets not built by dataset_scripts/"}
    )
    label_ids: str = field(
        default="train_ids",
        metadata={
            "help": "how label maps of datasets not built by dataset_scripts/ code classes: train_ids | "
            "cityscapes_label_ids (Cityscapes and GTA5 label ids, mapped to the 19 train ids)"
        },
    )

    def column_layout(self) -> ColumnLayout:
        """The `ColumnLayout` these options describe."""
        return ColumnLayout(self.image_column_name, self.label_column_name, self.label_ids)


def load_split(
    source: str | Path,
    config: str | None = None,
    split: str = "train",
    *,
    streaming: bool = False,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    layout: ColumnLayout | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Open one split of a built dataset from a local folder or a Hub dataset id.

    Args:
        source: the folder written by a builder, or a Hub repository id.
        config: the configuration (None: the card's default one).
        split: the split name, e.g. "train" or "validation".
        streaming: read lazily from the Parquet shards (no Arrow copy in the cache).
        cache_dir: where `datasets` keeps its Arrow cache (its default when None).
        revision: a Hub revision (branch, tag or commit).
        layout: for a dataset not built by `dataset_scripts/`: its column names (renamed to `image` and
            `label`; an `id` is added when absent).

    Raises:
        FileNotFoundError: a local-looking `source` does not exist.
    """
    local = _local_path(source)
    if local is not None and not streaming:
        cache_dir = local_cache_dir(local, cache_dir)
    dataset = datasets.load_dataset(
        str(local if local is not None else source),
        config,
        split=split,
        streaming=streaming,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        revision=revision,
    )
    return layout.adapt(dataset, split) if layout is not None else dataset


def is_built_dataset(source: str | Path, revision: str | None = None) -> bool:
    """Whether `source` was written by `dataset_scripts/` (it has `label_space.json`), not another publisher."""
    local = _local_path(source)
    if local is not None:
        return (local / LABEL_SPACE_FILE).is_file()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:  # a download, not an existence query, so that the offline cache answers too
        hf_hub_download(str(source), LABEL_SPACE_FILE, repo_type="dataset", revision=revision)
    except EntryNotFoundError:
        return False
    return True


def local_cache_dir(folder: str | Path, cache_dir: str | Path | None = None) -> Path:
    """An Arrow cache folder of its own for one local dataset folder, keyed by its path and files.

    `datasets` keys the cache of a local folder by the folder's name and its card's `configs`, not by its
    path or content: two different folders both named e.g. `ranking` would read each other's cached
    rows. Keying by the resolved path and every file's size and modification time avoids that, and a
    rewritten folder gets a fresh cache.
    """
    folder = Path(folder).resolve()
    place = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    digest = hashlib.sha256(str(folder).encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    root = (
        Path(cache_dir)
        if cache_dir is not None
        else Path(datasets.config.HF_DATASETS_CACHE) / "intrada_local"
    )
    cache = root / f"{place}-{digest.hexdigest()[:20]}"
    # The caches of earlier contents of the same folder (a rewritten ranking) are never read again.
    for stale in root.glob(f"{place}-*") if root.is_dir() else []:
        if stale != cache:
            shutil.rmtree(stale, ignore_errors=True)
    return cache


def _read_metadata_file(source: str | Path, filename: str, revision: str | None) -> dict:
    local = _local_path(source)
    if local is not None:
        path = local / filename
        if not path.is_file():
            raise MissingInputError(f"{path} is missing: was {local} written by dataset_scripts/?")
    else:
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(str(source), filename, repo_type="dataset", revision=revision))
    return json.loads(path.read_text())


def read_label_space(source: str | Path, revision: str | None = None) -> LabelSpace:
    """The label space (classes, palette, rare classes) stored with a built dataset."""
    return LabelSpace.from_dict(_read_metadata_file(source, LABEL_SPACE_FILE, revision))


def read_id2label(source: str | Path, revision: str | None = None) -> dict[int, str]:
    """The `id2label` of a built dataset (from its `id2label.json`), keys as ints."""
    return {int(k): v for k, v in _read_metadata_file(source, ID2LABEL_FILE, revision).items()}


@dataclass(frozen=True)
class SegmentationTransform:
    """Turn a decoded row into model inputs: resize, optional crop and flip, normalise.

    Args:
        size: (height, width) to resize to (images bicubic, labels nearest; SPEC section 3), or None.
        normalization: "caffe" (the reference: BGR minus the Caffe mean) or "imagenet".
        crop_size: (height, width) of a random crop taken after resizing, or None.
        hflip: flip left-right with probability 1/2.
        seed: base seed; the crop/flip of a row depend only on (seed, epoch, row key).
        label_lut: label value -> train id (`ColumnLayout.label_lut`), for label maps in other ids.
    """

    size: tuple[int, int] | None = None
    normalization: str = "caffe"
    crop_size: tuple[int, int] | None = None
    hflip: bool = False
    seed: int = 0
    label_lut: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")

    def __call__(
        self, image: Image.Image, label: Image.Image | None, key: str, epoch: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return `pixel_values` (float32 CxHxW) and `labels` (int64 HxW, or None without a label)."""
        image = image.convert("RGB")
        if label is not None and self.size is None and label.size != image.size:
            raise ValueError(
                f"row {key}: image is {image.size} but its label is {label.size} (width, height)"
            )
        if self.size is not None:
            image = resize_image(image, self.size)
            label = resize_label(label, self.size) if label is not None else None
        if self.crop_size is not None or self.hflip:
            rng = random.Random(f"{self.seed}/{epoch}/{key}")
            if self.crop_size is not None:
                image, label = random_crop(image, label, self.crop_size, rng)
            if self.hflip:
                image, label = random_hflip(image, label, rng)
        pixel_values = torch.from_numpy(normalize(image, self.normalization))
        labels = None
        if label is not None:
            array = label_to_array(label)
            if self.label_lut is not None:
                array = self.label_lut[array.clip(0, len(self.label_lut) - 1)].astype(np.int64)
            labels = torch.from_numpy(array)
        return pixel_values, labels


def _resolve_with_labels(column_names: Sequence[str] | None, with_labels: bool | None, where: str) -> bool:
    has_label = column_names is not None and "label" in column_names
    if with_labels is None:
        return has_label
    if with_labels and not has_label:
        raise ValueError(
            f"{where} has no 'label' column (columns: {column_names}); it is an unlabelled split"
        )
    return with_labels


class SegmentationDataset(torch.utils.data.Dataset):
    """A map-style dataset over one split: dicts of `pixel_values`, `labels`, `id`, `index`.

    Args:
        dataset: the split, as returned by `load_split(..., streaming=False)`.
        transform: resize/crop/flip/normalisation.
        with_labels: None yields labels when the split has a `label` column; False drops the
            column before anything reads it, so a target-training split's labels can never reach
            training even if the column exists; True requires it.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        transform: SegmentationTransform | None = None,
        with_labels: bool | None = None,
    ) -> None:
        if "image" not in dataset.column_names or "id" not in dataset.column_names:
            raise ValueError(f"expected 'image' and 'id' columns, got {dataset.column_names}")
        self.with_labels = _resolve_with_labels(dataset.column_names, with_labels, "this split")
        keep = ["image", "id"] + (["label"] if self.with_labels else [])
        self.dataset = dataset.select_columns(keep)
        self.transform = transform or SegmentationTransform()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the epoch that random crops and flips depend on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[int(index)]
        pixel_values, labels = self.transform(row["image"], row.get("label"), row["id"], self.epoch)
        item = {"pixel_values": pixel_values, "id": row["id"], "index": int(index)}
        if self.with_labels:
            item["labels"] = labels
        return item


class StreamingSegmentationDataset(torch.utils.data.IterableDataset):
    """An iterable dataset over a streamed split: dicts of `pixel_values`, `labels`, `id`.

    Rows are read shard by shard without an Arrow copy; with a `DataLoader` of several workers,
    each worker reads its own Parquet shards (`datasets` splits them). There is no global `index`
    in a stream, so rows carry only their `id`.

    Args:
        dataset: the split, as returned by `load_split(..., streaming=True)`.
        transform, with_labels: as for `SegmentationDataset`.
        shuffle_buffer: when > 0, shuffle shards and rows through a buffer of this many rows.
        rank, world_size: give this process its part of the shards (`split_dataset_by_node`).
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        transform: SegmentationTransform | None = None,
        with_labels: bool | None = None,
        shuffle_buffer: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        columns = dataset.column_names
        if columns is None:
            raise ValueError("the streamed split does not declare its columns; was it written by a builder?")
        self.with_labels = _resolve_with_labels(columns, with_labels, "this streamed split")
        self.transform = transform or SegmentationTransform()
        stream = dataset.select_columns(["image", "id"] + (["label"] if self.with_labels else []))
        if shuffle_buffer > 0:
            stream = stream.shuffle(seed=self.transform.seed, buffer_size=shuffle_buffer)
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.dataset = stream
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the epoch (reshuffles the stream and the random crops/flips)."""
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        for row in self.dataset:
            pixel_values, labels = self.transform(row["image"], row.get("label"), row["id"], self.epoch)
            item = {"pixel_values": pixel_values, "id": row["id"]}
            if self.with_labels:
                item["labels"] = labels
            yield item


def build_segmentation_dataset(
    source: str | Path,
    config: str | None = None,
    split: str = "train",
    *,
    size: tuple[int, int] | None = None,
    normalization: str = "caffe",
    crop_size: tuple[int, int] | None = None,
    hflip: bool = False,
    with_labels: bool | None = None,
    streaming: bool = False,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    layout: ColumnLayout | None = None,
    label_lut: np.ndarray | None = None,
) -> SegmentationDataset | StreamingSegmentationDataset:
    """Open a split and wrap it for training in one call (see `load_split`, `SegmentationTransform`);
    `label_lut` maps a built dataset's train ids to the run's (a layout brings its own)."""
    if label_lut is not None and layout is not None:
        raise ValueError("label_lut is for built datasets; a layout maps its labels itself")
    transform = SegmentationTransform(
        size=tuple(size) if size is not None else None,
        normalization=normalization,
        crop_size=tuple(crop_size) if crop_size is not None else None,
        hflip=hflip,
        seed=seed,
        label_lut=layout.label_lut() if layout is not None else label_lut,
    )
    split_data = load_split(source, config, split, streaming=streaming, cache_dir=cache_dir, layout=layout)
    if streaming:
        return StreamingSegmentationDataset(split_data, transform, with_labels)
    return SegmentationDataset(split_data, transform, with_labels)
