"""Stage 2: entropy ranking of the target images into an easy and a hard split (SPEC section 4).

`rank_by_entropy` runs G_inter in eval mode over the whole target training split and scores every image
by R, the mean of the weighted self-information map of SPEC 3 over pixels and classes (the paper's
eq. (4) divided by C: the same order), optionally normalised by the rare classes in its prediction:
`R * ((K - n_rare) / K + 0.5)`. Ascending sort; the first `int(N * lambda)` images are easy and keep their
argmax prediction as pseudo label, the rest are hard.

Sharding: batch b goes to process b mod W, so every image is computed in exactly the batch it would be
in on one process, and the gathered result is identical to a one-process run.

The artifact ("ranking splits") is a Hugging Face dataset folder: `data/train-*.parquet` (id, index,
score, raw_score, num_rare_classes, rank, split, pseudo_label for easy rows, optionally an 8-bit entropy
map), `ranking.json` and a `ranking.png` picture; `publishing.cards` writes its `README.md` card.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modeling_intrada.errors import MissingInputError, NonFiniteLossError, UsageError
from modeling_intrada.method.losses import upsample_logits, weighted_self_information
from modeling_intrada.method.segmenters import uses_align_corners

RANKING_FILE = "ranking.json"
PICTURE_FILE = "ranking.png"
DATA_FILE = "data/train-00000-of-00001.parquet"
DATA_FILES = "data/train-*.parquet"  # every shard, as the card's `configs` names them
EASY, HARD = "easy", "hard"


def check_lambda(lambda_easy: float) -> float:
    """lambda is the easy fraction |X_te| / |X_t|: it must lie in (0, 1]."""
    if not isinstance(lambda_easy, (int, float)) or not 0.0 < float(lambda_easy) <= 1.0:
        raise ValueError(
            f"lambda_easy must lie in (0, 1] (the fraction of easy target images), got {lambda_easy!r}"
        )
    return float(lambda_easy)


def normalization_factor(num_rare: torch.Tensor | int, num_rare_classes: int) -> torch.Tensor | float:
    """`(K - n_rare) / K + 0.5`: images predicting more rare classes get lower scores (SPEC 4)."""
    if num_rare_classes <= 0:
        raise ValueError("entropy normalisation needs a non-empty rare-class list")
    return (num_rare_classes - num_rare) / num_rare_classes + 0.5


def mean_per_image(values: torch.Tensor) -> torch.Tensor:
    """The mean of each image's values (batch, C, ...) over classes and pixels, in float32.

    Summed image by image, class by class, in float64: one image's sum does not depend on its batch
    neighbours, the batch size or the number of CPU threads. A mean over the whole flattened image lets the
    CPU split one sum across threads (or a GPU across blocks by batch shape), and its last bits then depend
    on how many processes share the cores, so one and several processes would not write the same ranking.
    """
    means = []
    for image in values:
        per_class = image.reshape(len(image), -1).sum(dim=1, dtype=torch.float64)
        means.append(per_class.sum() / image.numel())
    if not means:
        return values.new_zeros(0)
    return torch.stack(means).float()


def score_logits(
    logits: torch.Tensor, rare_train_ids: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score a batch of logits (batch, C, ...) on their device.

    Returns `raw_score` (batch,) = the mean over classes and pixels of the weighted self-information,
    `num_rare` (batch,) = how many of `rare_train_ids` appear in the argmax (0 without a list), the
    `entropy` map (batch, ...) summed over classes, in [0, 1], and the argmax `prediction` (batch, ...).
    """
    information = weighted_self_information(logits)
    raw = mean_per_image(information)
    prediction = logits.argmax(dim=1)
    if rare_train_ids:
        rare = torch.as_tensor(list(rare_train_ids), device=logits.device)
        present = (prediction.flatten(1).unsqueeze(-1) == rare).any(dim=1)
        num_rare = present.sum(dim=1)
    else:
        num_rare = torch.zeros(len(logits), dtype=torch.int64, device=logits.device)
    return raw, num_rare, information.sum(dim=1), prediction


def split_by_score(scores: Sequence[float], keys: Sequence[int], lambda_easy: float) -> tuple[list[int], int]:
    """Ascending order of `scores` (ties broken by `keys`) and the number of easy images, int(N * lambda)."""
    lambda_easy = check_lambda(lambda_easy)
    bad = [key for score, key in zip(scores, keys) if not math.isfinite(score)]
    if bad:
        raise NonFiniteLossError(
            f"{len(bad)} of {len(scores)} images score NaN or infinity (e.g. image {bad[0]}): the model's "
            "predictions are not finite; retrain it (its weights or inputs hold NaN)"
        )
    num_easy = int(len(scores) * lambda_easy)
    if num_easy == 0:
        raise UsageError(
            f"lambda_easy={lambda_easy} leaves no easy image among {len(scores)}: stage 3 needs pseudo labels; "
            f"use a lambda_easy of at least {1 / max(len(scores), 1):.3g}"
        )
    order = sorted(range(len(scores)), key=lambda i: (scores[i], keys[i]))
    return order, num_easy


def segmentation_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The main head's logits upsampled to the input size (the ranking's default prediction function)."""
    logits = model(pixel_values=pixel_values).logits
    if logits.dim() != 4:
        return logits
    return upsample_logits(logits, tuple(pixel_values.shape[-2:]), uses_align_corners(model))


@dataclass
class RankingResult:
    """Per-image scores, in ranking order (rank 0 = lowest score = easiest).

    Attributes:
        ids, indices: the images' dataset ids and row indices.
        scores: the score used for sorting (normalised when `normalize`).
        raw_scores: R before normalisation; num_rare: rare classes predicted per image.
        splits: "easy" or "hard" per image.
        pseudo_labels: for easy images, the argmax prediction: PNG bytes of a uint8 map (`decode_png`), or a
            class for classifiers; None for hard images.
        entropy_maps: optional per-image entropy maps, PNG bytes of uint8 (0..255 for 0..1).
    """

    ids: list[str]
    indices: list[int]
    scores: list[float]
    raw_scores: list[float]
    num_rare: list[int]
    splits: list[str]
    lambda_easy: float
    normalize: bool
    rare_train_ids: list[int]
    pseudo_labels: list[bytes | int | None]
    entropy_maps: list[bytes | None] = field(default_factory=list)

    @property
    def num_easy(self) -> int:
        return self.splits.count(EASY)

    @property
    def num_hard(self) -> int:
        return self.splits.count(HARD)

    def easy_ids(self) -> list[str]:
        return [i for i, s in zip(self.ids, self.splits) if s == EASY]

    def hard_ids(self) -> list[str]:
        return [i for i, s in zip(self.ids, self.splits) if s == HARD]


def _gather(records: list[dict], accelerator: Any) -> list[dict]:
    if accelerator is None or accelerator.num_processes == 1:
        return records
    from accelerate.utils import gather_object

    return gather_object(records)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """A uint8 map from PNG bytes (pseudo labels and entropy maps of a `RankingResult`)."""
    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.uint8)


@torch.inference_mode()
def rank_by_entropy(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    lambda_easy: float,
    normalize: bool = False,
    rare_train_ids: Sequence[int] | None = None,
    *,
    predict: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = segmentation_logits,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    keep_entropy_maps: bool = False,
    accelerator: Any = None,
    num_encoders: int = 4,
) -> RankingResult:
    """Score every target image with G_inter and split them (SPEC 4).

    Args:
        model: G_inter; put in eval mode here.
        batches: this process's batches of dicts with `pixel_values`, `id` and `index` (see module doc for
            sharding: batch b on process b mod W).
        lambda_easy: fraction of easy images, in (0, 1].
        normalize: apply the rare-class normalisation (needs `rare_train_ids`).
        predict: maps (model, pixel_values) to logits (batch, C, ...) at the pseudo-label resolution.
        autocast_dtype: run the network under autocast (bf16/fp16); scores are computed in float32.
        keep_entropy_maps: also return 8-bit entropy maps.
        accelerator: gathers the records of all processes; every process gets the full result.
        num_encoders: threads that PNG-encode the maps while the network runs on the next batch.
    """
    lambda_easy = check_lambda(lambda_easy)
    rare = list(rare_train_ids or [])
    if normalize and not rare:
        raise ValueError("normalize=True needs the dataset's rare-class list (rare_train_ids)")
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    records = []
    with ThreadPoolExecutor(max_workers=max(1, num_encoders)) as encoders:
        for batch in batches:
            pixel_values = batch["pixel_values"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = predict(model, pixel_values)
            raw, num_rare, entropy, prediction = score_logits(logits.float(), rare)
            factor = normalization_factor(num_rare, len(rare)) if normalize else torch.ones_like(raw)
            score = raw * factor
            # One transfer per batch: scores and uint8 maps; PNG encoding happens in the threads.
            is_map = prediction.dim() > 1
            prediction = prediction.to(torch.uint8 if is_map else torch.int64).cpu().numpy()
            entropy_u8 = (
                (entropy.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
                if keep_entropy_maps
                else None
            )
            values = torch.stack([raw, score, num_rare.to(raw.dtype)]).cpu().tolist()
            for j, image_id in enumerate(batch["id"]):
                records.append(
                    {
                        "id": image_id,
                        "index": int(batch["index"][j]),
                        "raw_score": values[0][j],
                        "score": values[1][j],
                        "num_rare": int(values[2][j]),
                        "prediction": encoders.submit(_png, prediction[j]) if is_map else int(prediction[j]),
                        "entropy": encoders.submit(_png, entropy_u8[j])
                        if entropy_u8 is not None and entropy_u8.ndim == 3
                        else None,
                    }
                )
        for record in records:
            for key in ("prediction", "entropy"):
                if hasattr(record[key], "result"):
                    record[key] = record[key].result()
    records = _gather(records, accelerator)
    if len({r["index"] for r in records}) != len(records):
        raise ValueError("an image was scored twice: the batches of the processes overlap")
    order, num_easy = split_by_score(
        [r["score"] for r in records], [r["index"] for r in records], lambda_easy
    )
    ranked = [records[i] for i in order]
    return RankingResult(
        ids=[r["id"] for r in ranked],
        indices=[r["index"] for r in ranked],
        scores=[r["score"] for r in ranked],
        raw_scores=[r["raw_score"] for r in ranked],
        num_rare=[r["num_rare"] for r in ranked],
        splits=[EASY if rank < num_easy else HARD for rank in range(len(ranked))],
        lambda_easy=lambda_easy,
        normalize=normalize,
        rare_train_ids=rare,
        pseudo_labels=[r["prediction"] if rank < num_easy else None for rank, r in enumerate(ranked)],
        entropy_maps=[r["entropy"] for r in ranked] if keep_entropy_maps else [],
    )


# ---------------------------------------------------------------------------------------------------------
# The artifact
# ---------------------------------------------------------------------------------------------------------


def ranking_features(segmentation: bool, with_entropy_maps: bool):
    """The columns of the ranking-splits dataset."""
    import datasets

    columns = {
        "id": datasets.Value("string"),
        "index": datasets.Value("int64"),
        "rank": datasets.Value("int64"),
        "split": datasets.Value("string"),
        "score": datasets.Value("float64"),
        "raw_score": datasets.Value("float64"),
        "num_rare_classes": datasets.Value("int64"),
        "pseudo_label": datasets.Image() if segmentation else datasets.Value("int64"),
    }
    if with_entropy_maps:
        columns["entropy_map"] = datasets.Image()
    return datasets.Features(columns)


def score_histogram(scores: Sequence[float], bins: int = 10) -> list[tuple[float, float, int]]:
    """(low, high, count) per bin over the score range."""
    counts, edges = np.histogram(np.asarray(scores, dtype=np.float64), bins=bins)
    return [(float(edges[i]), float(edges[i + 1]), int(counts[i])) for i in range(len(counts))]


def save_ranking(
    result: RankingResult,
    output_dir: str | Path,
    *,
    target_dataset: str = "",
    model_name: str = "",
    image_loader: Callable[[int], Image.Image] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write the ranking-splits artifact (Parquet + ranking.json + picture) into `output_dir`.

    `image_loader(index)` returns the target image of a row, for the picture's gallery; without it the
    picture shows the histogram and the entropy maps only (when kept). Its card (README.md) is written from
    the run folder by `publishing.cards.write_run_cards`, the same text a push uploads.
    """
    from modeling_intrada.data.datasets import write_parquet_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    segmentation = any(isinstance(label, bytes) for label in result.pseudo_labels)
    with_entropy = bool(result.entropy_maps) and isinstance(result.entropy_maps[0], bytes)
    features = ranking_features(segmentation, with_entropy)

    def row(rank: int) -> dict:
        label = result.pseudo_labels[rank]
        image = {"bytes": label, "path": None} if isinstance(label, bytes) else label
        entry = {
            "id": result.ids[rank],
            "index": result.indices[rank],
            "rank": rank,
            "split": result.splits[rank],
            "score": result.scores[rank],
            "raw_score": result.raw_scores[rank],
            "num_rare_classes": result.num_rare[rank],
            "pseudo_label": image,
        }
        if with_entropy:
            entry["entropy_map"] = {"bytes": result.entropy_maps[rank], "path": None}
        return entry

    write_parquet_file(output_dir / DATA_FILE, (row(rank) for rank in range(len(result.ids))), features)

    summary = {
        "lambda_easy": result.lambda_easy,
        "normalize": result.normalize,
        "rare_train_ids": result.rare_train_ids,
        "num_images": len(result.ids),
        "num_easy": result.num_easy,
        "num_hard": result.num_hard,
        "score_min": min(result.scores),
        "score_max": max(result.scores),
        "easy_max_score": max((s for s, p in zip(result.scores, result.splits) if p == EASY), default=None),
        "histogram": score_histogram(result.scores),
        "target_dataset": target_dataset,
        "model": model_name,
    }
    (output_dir / RANKING_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    _picture(result, output_dir / PICTURE_FILE, image_loader, palette)
    return output_dir


def _picture(
    result: RankingResult,
    path: Path,
    image_loader: Callable[[int], Image.Image] | None,
    palette: Sequence[Sequence[int]] | None,
    per_side: int = 4,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(result.ids)
    chosen = list(range(min(per_side, n))) + list(range(max(per_side, n - per_side), n))
    show_maps = (
        bool(result.entropy_maps)
        and result.entropy_maps[0] is not None
        and np.ndim(result.entropy_maps[0]) == 2
    )
    rows = 1 + (1 if image_loader else 0) + (1 if show_maps else 0)
    columns = max(len(chosen), 1)
    figure = plt.figure(figsize=(2.2 * columns, 2.0 * rows + 1.5))
    grid = figure.add_gridspec(rows, columns)
    axis = figure.add_subplot(grid[0, :])
    axis.hist(result.scores, bins=30, color="0.6")
    if result.num_easy < n:
        threshold = (
            (result.scores[result.num_easy - 1] + result.scores[result.num_easy]) / 2
            if result.num_easy
            else 0
        )
        axis.axvline(threshold, color="red", label=f"easy | hard (lambda = {result.lambda_easy})")
        axis.legend()
    axis.set_xlabel("score"), axis.set_ylabel("images")
    row = 1
    for kind in ("image", "entropy"):
        if (kind == "image" and not image_loader) or (kind == "entropy" and not show_maps):
            continue
        for column, rank in enumerate(chosen):
            axis = figure.add_subplot(grid[row, column])
            if kind == "image":
                axis.imshow(image_loader(result.indices[rank]))
                axis.set_title(f"#{rank} {result.splits[rank]}\n{result.scores[rank]:.4f}", fontsize=8)
            else:
                axis.imshow(decode_png(result.entropy_maps[rank]), cmap="viridis", vmin=0, vmax=255)
            axis.axis("off")
        row += 1
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


@dataclass
class RankingSplits:
    """The ranking artifact read back: easy and hard ids; pseudo labels decoded on demand (not all in memory)."""

    easy_ids: list[str]
    hard_ids: list[str]
    summary: dict
    table: Any = None
    _rows: dict[str, int] = field(default_factory=dict)

    @property
    def lambda_easy(self) -> float:
        return float(self.summary.get("lambda_easy", math.nan))

    def pseudo_label(self, image_id: str) -> np.ndarray | int:
        """The pseudo label of an easy image: a uint8 map (segmentation) or a class (classification)."""
        if image_id not in self._rows:
            raise KeyError(f"{image_id!r} is not an easy image of this ranking")
        label = self.table[self._rows[image_id]]["pseudo_label"]
        return np.asarray(label, dtype=np.uint8) if isinstance(label, Image.Image) else int(label)


def check_ranking_folder(path: str | Path) -> None:
    """Refuse a local folder that is not a complete ranking-splits artifact."""
    path = Path(path)
    if not (path / RANKING_FILE).is_file() or not list(path.glob(DATA_FILES)):
        raise MissingInputError(
            f"{path} is not a ranking-splits folder (expected {RANKING_FILE} and {DATA_FILES})"
        )


def load_ranking(source: str | Path, revision: str | None = None) -> RankingSplits:
    """Read a ranking-splits artifact from a local folder or a Hub dataset id."""
    import datasets

    from modeling_intrada.data.datasets import local_cache_dir

    path = Path(source).expanduser()
    if path.exists():
        check_ranking_folder(path)
        summary_path = path / RANKING_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        table = datasets.load_dataset(str(path), split="train", cache_dir=str(local_cache_dir(path)))
    else:
        from huggingface_hub import hf_hub_download

        table = datasets.load_dataset(str(source), split="train", revision=revision)
        summary = json.loads(
            Path(
                hf_hub_download(str(source), RANKING_FILE, repo_type="dataset", revision=revision)
            ).read_text()
        )
    meta = table.select_columns(["id", "rank", "split"]).to_pandas().sort_values("rank")
    bad = sorted(set(meta["split"]) - {EASY, HARD})
    if bad:
        raise ValueError(f"ranking {source}: split must be 'easy' or 'hard', found {bad}")
    easy = meta[meta["split"] == EASY]
    if easy.empty:
        raise ValueError(f"the ranking {source} has no easy image: stage 3 needs pseudo labels")
    rows = {image_id: int(row) for image_id, row in zip(easy["id"], easy.index)}
    return RankingSplits(
        easy_ids=list(easy["id"]),
        hard_ids=list(meta[meta["split"] == HARD]["id"]),
        summary=summary,
        table=table,
        _rows=rows,
    )
