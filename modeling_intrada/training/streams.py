"""Endless, resumable, sharded data streams for the stage loop, and the stage-3 views of the target split.

The stage loop draws batch after batch from a seeded shuffle that never ends (epoch after epoch). Micro-step
t of process r reads the samples at global positions `[(t * W + r) * B, (t * W + r + 1) * B)` of that
shuffle, so a run resumed at micro-step t reads exactly what an uninterrupted run would have, whatever the
number of workers, and processes never read the same sample in the same step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from modeling_intrada.data.datasets import SegmentationDataset
from modeling_intrada.method.ranking import RankingSplits


class EndlessShardedSampler(torch.utils.data.Sampler):
    """Batches of `(index, epoch)` keys from an endless seeded shuffle, for one process, from `start_step`."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        if num_items < 1:
            raise ValueError("cannot stream from an empty dataset")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.start_step, self.shuffle = rank, world_size, start_step, shuffle
        self._permutations: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 2:
                self._permutations.pop(min(self._permutations))
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
                self._permutations[epoch] = torch.randperm(self.num_items, generator=generator).numpy()
            else:
                self._permutations[epoch] = np.arange(self.num_items)
        return self._permutations[epoch]

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        """The `(index, epoch)` keys that this process reads at micro-step `step`."""
        first = (step * self.world_size + self.rank) * self.batch_size
        keys = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.num_items)
            keys.append((int(self._order(epoch)[offset]), epoch))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch_at(step)
            step += 1


class EpochKeyed(torch.utils.data.Dataset):
    """Index a dataset with `(index, epoch)` keys so that random crops/flips follow the stream's epoch."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def collate(items: Sequence[dict]) -> dict:
    """Stack tensors; keep ids and indices as lists."""
    batch = {"pixel_values": torch.stack([item["pixel_values"] for item in items])}
    if "labels" in items[0]:
        labels = [item["labels"] for item in items]
        if isinstance(labels[0], torch.Tensor):
            if len({tuple(label.shape) for label in labels}) > 1:
                raise ValueError(
                    "label maps of different sizes in one batch: resize them or use batch size 1"
                )
            batch["labels"] = torch.stack(labels)
        else:
            batch["labels"] = torch.as_tensor(labels)
    batch["id"] = [item["id"] for item in items]
    batch["index"] = [int(item["index"]) for item in items]
    return batch


def stream_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    seed: int,
    rank: int,
    world_size: int,
    start_step: int,
    num_workers: int,
    pin_memory: bool = False,
) -> Iterator[dict]:
    """An endless iterator of collated batches (see `EndlessShardedSampler`), loaded by `num_workers`."""
    sampler = EndlessShardedSampler(len(dataset), batch_size, seed, rank, world_size, start_step)
    loader = torch.utils.data.DataLoader(
        EpochKeyed(dataset),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    return iter(loader)


def _row_of_id(dataset: SegmentationDataset) -> dict[str, int]:
    ids = dataset.dataset["id"]
    if len(set(ids)) != len(ids):
        raise ValueError("the target split has duplicate ids; the ranking cannot refer to its images")
    return {image_id: row for row, image_id in enumerate(ids)}


class EasySplit(torch.utils.data.Dataset):
    """Stage 3's "source": the easy target images with their pseudo labels (SPEC 5).

    The images come from the target training split opened **without** labels; the labels are the
    ranking's pseudo labels, transformed jointly with the image (resize nearest, optional crop/flip).
    """

    def __init__(self, target: SegmentationDataset, ranking: RankingSplits) -> None:
        if target.with_labels:
            raise ValueError("the target training split must be opened with with_labels=False")
        rows = _row_of_id(target)
        missing = [image_id for image_id in ranking.easy_ids if image_id not in rows]
        if missing:
            raise ValueError(
                f"{len(missing)} easy ids of the ranking are not in the target split, e.g. {missing[:3]}"
            )
        self.target, self.ranking = target, ranking
        self.rows = [rows[image_id] for image_id in ranking.easy_ids]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.target.dataset[self.rows[index]]
        image_id = row["id"]
        pseudo = self.ranking.pseudo_label(image_id)
        image = row["image"]
        label = Image.fromarray(np.asarray(pseudo, dtype=np.uint8), mode="L")
        if label.size != image.size:
            # Pseudo labels live at the ranking's input size; bring them to the image's own size first.
            label = label.resize(image.size, Image.Resampling.NEAREST)
        pixel_values, labels = self.target.transform(image, label, image_id, self.epoch)
        return {"pixel_values": pixel_values, "labels": labels, "id": image_id, "index": index}


class HardSplit(torch.utils.data.Dataset):
    """Stage 3's "target": the hard target images, unlabelled."""

    def __init__(self, target: SegmentationDataset, ranking: RankingSplits) -> None:
        if target.with_labels:
            raise ValueError("the target training split must be opened with with_labels=False")
        rows = _row_of_id(target)
        missing = [image_id for image_id in ranking.hard_ids if image_id not in rows]
        if missing:
            raise ValueError(
                f"{len(missing)} hard ids of the ranking are not in the target split, e.g. {missing[:3]}"
            )
        self.target = target
        self.rows = [rows[image_id] for image_id in ranking.hard_ids]

    def set_epoch(self, epoch: int) -> None:
        self.target.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        item = self.target[self.rows[index]]
        return {**item, "index": index}
