"""Build GTA5 ("Playing for Data", Richter et al. 2016) as a Hugging Face dataset.

Raw layout (SPEC section 7): `images/NNNNN.png` and `labels/NNNNN.png`, 24,966 pairs at about
1914x1052. Labels are palette PNGs whose indices are Cityscapes label ids; they become the 19
Cityscapes trainIds (everything else 255). Values above 33 are not Cityscapes ids: an error.

A few pairs have a label whose size differs from its image. By default the label is resized to
the image size with nearest neighbour (what the reference's independent resizing of both to
1280x720 amounts to), the row's `label_resized` column is true, and the card lists the pairs;
`--on_size_mismatch error` stops instead.

    python dataset_scripts/gta5.py --data_dir RAW/gta5 --output_dir OUT/gta5 [--num_proc 8]
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import datasets

from modeling_intrada.data import building
from modeling_intrada.data.dataset_card import DatasetDescription
from modeling_intrada.data.datasets import segmentation_features
from modeling_intrada.errors import run_program
from modeling_intrada.labels import CITYSCAPES, CITYSCAPES_LABEL_ID_TO_TRAIN_ID, CITYSCAPES_NUM_LABEL_IDS

read_train_ids = functools.partial(
    building.mapped_label_reader,
    table=CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    num_label_ids=CITYSCAPES_NUM_LABEL_IDS,
)

CITATION = """@inproceedings{Richter_2016_ECCV,
  author = {Stephan R. Richter and Vibhav Vineet and Stefan Roth and Vladlen Koltun},
  title = {Playing for Data: Ground Truth from Computer Games},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2016}
}"""


def list_examples(data_dir: Path) -> list[building.Example]:
    """The image/label pairs of a raw GTA5 folder, sorted by id."""
    building.require_dir(data_dir, "the GTA5 download with images/ and labels/")
    images = building.list_files(
        building.require_dir(data_dir / "images", "images/NNNNN.png (wrong layout?)"),
        "*.png",
        "GTA5 images/*.png",
    )
    labels = building.list_files(
        building.require_dir(data_dir / "labels", "labels/NNNNN.png (wrong layout?)"),
        "*.png",
        "GTA5 labels/*.png",
    )
    return [
        building.Example(key, image, label) for key, image, label in building.pair_by_stem(images, labels)
    ]


def make_row(
    example: building.Example, resize_mismatched_label: bool = True
) -> tuple[dict, dict[str, list[str]]]:
    """One GTA5 row; `label_resized` tells whether the label had to be resized to its image."""
    row, events = building.segmentation_row(example, read_train_ids, resize_mismatched_label)
    row["label_resized"] = "label_resized" in events
    return row, events


def card(result: building.BuildResult, on_size_mismatch: str) -> DatasetDescription:
    """The card of a GTA5 build."""
    handling = (
        "labels resized to their image size (nearest neighbour)"
        if on_size_mismatch == "resize_label"
        else "none allowed (--on_size_mismatch error)"
    )
    return DatasetDescription(
        pretty_name="GTA5 (Playing for Data), Cityscapes trainIds",
        license="other",
        summary=(
            "Synthetic street scenes rendered by the game Grand Theft Auto V with pixel labels "
            "(Richter et al., ECCV 2016), the usual source domain of GTA5 -> Cityscapes adaptation. "
            "Labels are the 19 Cityscapes training classes."
        ),
        source_terms=(
            "The labels were released by Richter et al. for research; the images are frames of Grand "
            "Theft Auto V, whose content belongs to Rockstar Games / Take-Two Interactive. Read the terms "
            "on https://download.visinf.tu-darmstadt.de/data/from_games/ before using or redistributing "
            "this data (a Hub copy made with `--push_to_hub` is private by default)."
        ),
        how_built=(
            "`python dataset_scripts/gta5.py --data_dir RAW --output_dir OUT` from the official "
            "`images/` and `labels/` folders. Images are stored as their original PNG bytes. Label "
            "palette indices (Cityscapes label ids) are mapped to trainIds with the official table "
            f"(ids 7, 8, 11, ... 33 -> 0..18, every other id -> 255). Size-mismatched pairs: {handling}."
        ),
        splits=result.splits,
        label_space=CITYSCAPES,
        default_config="default",
        columns={
            "image": "RGB frame, original PNG.",
            "label": "uint8 Cityscapes trainIds (255 ignore), PNG.",
            "id": "the file stem, e.g. `00001`.",
            "label_resized": "true when the raw label's size differed from the image's and it was resized.",
        },
        statistics={
            "image/label pairs with different sizes": building.events_summary(
                result, "label_resized", "pairs"
            )
        },
        citation=CITATION,
    )


def main(argv: Sequence[str] | None = None) -> building.BuildResult:
    """Parse the command line, build the dataset, optionally push it."""
    parser = building.build_argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--on_size_mismatch",
        choices=("resize_label", "error"),
        default="resize_label",
        help="what to do with a label whose size differs from its image",
    )
    args = parser.parse_args(argv)
    examples = list_examples(args.data_dir)
    features = segmentation_features(metadata={"label_resized": datasets.Value("bool")})
    row_maker = functools.partial(make_row, resize_mismatched_label=args.on_size_mismatch == "resize_label")
    plans = [building.SplitPlan("default", "train", examples, features, row_maker, building.example_bytes)]
    return building.build_from_arguments(
        args,
        plans,
        CITYSCAPES,
        functools.partial(card, on_size_mismatch=args.on_size_mismatch),
        dataset="gta5",
    )


if __name__ == "__main__":
    run_program(main)
