"""The card of a built dataset, and the file write every card of the package goes through.

A built dataset's `README.md` is part of the dataset: its YAML `configs` is how `datasets.load_dataset` finds
each configuration's Parquet shards. So the data layer writes it whenever it builds a dataset
(`data.building.build_dataset` for `dataset_scripts/`, `data.synthetic` for the embedded default, which
evaluation may build on demand). `publishing.cards` writes every other card with the same placeholder and the
same file write (`write_card`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData
from huggingface_hub.repocard import RepoCard

from modeling_intrada.atomic import write_text_atomically
from modeling_intrada.errors import MissingInputError
from modeling_intrada.labels import LabelSpace
from modeling_intrada.run_layout import CARD_FILE

# Where a card names the repository it is published in, before that repository is known.
REPO_ID_PLACEHOLDER = "<this folder or repo id>"

# description.task -> the card's `task_categories` and `task_ids`.
TASKS = {
    "semantic-segmentation": (["image-segmentation"], ["semantic-segmentation"]),
    "image-classification": (["image-classification"], ["multi-class-image-classification"]),
}


# The template of a built dataset's card, shipped inside the wheel.
TEMPLATE = Path(__file__).resolve().parent / "templates" / "dataset.md"


def write_card(card: RepoCard, path: str | Path) -> Path:
    """Write `card` to `path`, ending with a newline, through a temporary file renamed into place: a reader
    never sees half a card."""
    return write_text_atomically(path, str(card).rstrip("\n") + "\n")  # Jinja drops the last newline


@dataclass
class DatasetDescription:
    """What a built dataset's card says (`dataset_card` renders it with `templates/dataset.md`).

    Args:
        pretty_name: the dataset's display name.
        license: a Hub licence identifier ("other" when the source has its own terms).
        summary: one paragraph on what the dataset is.
        source_terms: the licence terms of the original data, in a sentence or two, with a link.
        how_built: how the folder was produced (command, mapping, choices made).
        splits: config name -> split name -> number of rows.
        label_space: the classes (rendered as a table with colours and the rare ones).
        default_config: the config `load_dataset(folder)` opens without a name.
        columns: column name -> description.
        statistics: extra facts to list (e.g. how many size-mismatched pairs were handled).
        task: "semantic-segmentation" or "image-classification".
        citation: BibTeX of the source.
    """

    pretty_name: str
    license: str
    summary: str
    source_terms: str
    how_built: str
    splits: dict[str, dict[str, int]]
    label_space: LabelSpace
    default_config: str
    columns: dict[str, str] = field(default_factory=dict)
    statistics: dict[str, object] = field(default_factory=dict)
    task: str = "semantic-segmentation"
    citation: str = ""


def dataset_card(description: DatasetDescription, num_shards: Mapping[tuple[str, str], int]) -> DatasetCard:
    """The card of a built dataset; `num_shards[config, split]` goes into each split's `data_files` pattern
    (`<config>/<split>-*-of-0000N.parquet`), so that shards of an earlier build are never read.

    Raises:
        ValueError: the default config is not one of the splits' configs, or the task is unknown.
    """
    if description.default_config not in description.splits:
        raise ValueError(
            f"default config {description.default_config!r} is not one of {list(description.splits)}"
        )
    if description.task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {description.task!r}")
    configs = []
    for config, splits in description.splits.items():
        entry: dict[str, object] = {
            "config_name": config,
            "data_files": [
                {"split": split, "path": f"{config}/{split}-*-of-{num_shards[config, split]:05d}.parquet"}
                for split in splits
            ],
        }
        if config == description.default_config:
            entry["default"] = True
        configs.append(entry)
    task_categories, task_ids = TASKS[description.task]
    card_data = DatasetCardData(
        pretty_name=description.pretty_name,
        license=description.license,
        task_categories=task_categories,
        task_ids=task_ids,
        tags=["domain-adaptation", "intrada"],
        configs=configs,
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        summary=description.summary,
        num_rows=description.splits,
        repo_id=REPO_ID_PLACEHOLDER,
        default_config=description.default_config,
        default_split=next(iter(description.splits[description.default_config])),
        columns=description.columns,
        label_space=description.label_space,
        statistics=description.statistics,
        how_built=description.how_built,
        source_terms=description.source_terms,
        citation=description.citation.strip(),
    )


def write_dataset_card(output_dir: str | Path, description: DatasetDescription) -> Path:
    """Write the `README.md` of the built dataset in `output_dir`, whose shard counts are read from the
    Parquet files present, so that the card describes what is in the folder.

    Raises:
        FileNotFoundError: a split listed in `description.splits` has no Parquet file in `output_dir`.
    """
    output_dir = Path(output_dir)
    num_shards = {}
    for config, splits in description.splits.items():
        for split in splits:
            files = sorted((output_dir / config).glob(f"{split}-*.parquet"))
            if not files:
                raise MissingInputError(
                    f"no Parquet shard for config {config!r} split {split!r} in {output_dir}"
                )
            num_shards[config, split] = len(files)
    return write_card(dataset_card(description, num_shards), output_dir / CARD_FILE)
