"""Build SYNTHIA-RAND-CITYSCAPES as a Hugging Face dataset with the 16 (or 13) evaluation classes.

Raw layout (SPEC section 7): `RGB/NNNNNNN.png` and `GT/LABELS/NNNNNNN.png`, 9,400 pairs at
1280x760. Labels are 16-bit PNGs with several channels; the class id (0 void .. 22 lane marking)
is channel 0 and becomes one of 16 classes (the Cityscapes 19 without terrain, truck and train),
every other id 255. A class id above 22, or an 8-bit label PNG, is an error.

The 13-class protocol (SPEC section 6: without wall, fence and pole) is exposed two ways: the
default 16-class build records the 13 class indices under `evaluation_subsets` in
`label_space.json` (evaluate a 16-class model on 13 classes), and `--label_space synthia13`
writes labels in the 13-class space (wall, fence, pole -> 255) to train a 13-class model.

    python dataset_scripts/synthia.py --data_dir RAW/RAND_CITYSCAPES --output_dir OUT/synthia
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modeling_intrada.data import building
from modeling_intrada.data.dataset_card import DatasetDescription
from modeling_intrada.data.datasets import segmentation_features
from modeling_intrada.errors import run_program
from modeling_intrada.labels import (
    SYNTHIA_13,
    SYNTHIA_13_OF_16,
    SYNTHIA_16,
    SYNTHIA_16_TO_13,
    SYNTHIA_ID_TO_TRAIN_ID,
    SYNTHIA_NUM_LABEL_IDS,
    LabelSpace,
    map_label_ids,
)

LABEL_SPACES = {"synthia16": SYNTHIA_16, "synthia13": SYNTHIA_13}
SYNTHIA_ID_TO_13 = {
    synthia_id: SYNTHIA_16_TO_13[index16]
    for synthia_id, index16 in SYNTHIA_ID_TO_TRAIN_ID.items()
    if index16 in SYNTHIA_16_TO_13
}

CITATION = """@inproceedings{Ros_2016_CVPR,
  author = {Ros, German and Sellart, Laura and Materzynska, Joanna and Vazquez, David and Lopez, Antonio M.},
  title = {The SYNTHIA Dataset: A Large Collection of Synthetic Images for Semantic Segmentation of Urban Scenes},
  booktitle = {The IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2016}
}"""


def read_train_ids(path: Path, label_space: str = "synthia16") -> np.ndarray:
    """Channel 0 of a SYNTHIA label PNG mapped to the 16- or 13-class train ids."""
    table = SYNTHIA_ID_TO_TRAIN_ID if label_space == "synthia16" else SYNTHIA_ID_TO_13
    return map_label_ids(building.read_png16_channel(path, 0), table, SYNTHIA_NUM_LABEL_IDS, source=str(path))


def list_examples(data_dir: Path) -> list[building.Example]:
    """The image/label pairs of a raw SYNTHIA-RAND-CITYSCAPES folder, sorted by id."""
    building.require_dir(data_dir, "the SYNTHIA-RAND-CITYSCAPES download with RGB/ and GT/LABELS/")
    images = building.list_files(
        building.require_dir(data_dir / "RGB", "RGB/*.png (wrong layout?)"), "*.png", "SYNTHIA RGB/*.png"
    )
    label_dir = building.require_dir(data_dir / "GT" / "LABELS", "GT/LABELS/*.png (wrong layout?)")
    labels = building.list_files(label_dir, "*.png", "SYNTHIA GT/LABELS/*.png")
    return [
        building.Example(key, image, label) for key, image, label in building.pair_by_stem(images, labels)
    ]


def card(result: building.BuildResult, label_space: LabelSpace) -> DatasetDescription:
    """The card of a SYNTHIA build."""
    subset = ", ".join(SYNTHIA_16.class_names[i] for i in SYNTHIA_13_OF_16)
    return DatasetDescription(
        pretty_name=f"SYNTHIA-RAND-CITYSCAPES, {label_space.num_classes} classes",
        license="cc-by-nc-sa-3.0",
        summary=(
            "Synthetic urban images rendered from a virtual city with pixel labels (Ros et al., CVPR "
            "2016), in the subset whose classes match Cityscapes: the source domain of SYNTHIA -> "
            "Cityscapes adaptation."
        ),
        source_terms=(
            "SYNTHIA is distributed under Creative Commons Attribution-NonCommercial-ShareAlike 3.0 "
            "(https://synthia-dataset.net/); cite the paper below and keep derived copies under the same terms."
        ),
        how_built=(
            "`python dataset_scripts/synthia.py --data_dir RAW --output_dir OUT"
            f"{' --label_space synthia13' if label_space is SYNTHIA_13 else ''}` from `RGB/` and `GT/LABELS/`. "
            "Images are stored as their original PNG bytes. Channel 0 of the 16-bit label PNGs "
            "(read at full 16-bit precision) is mapped with the SPEC section 7 table {3:0, 4:1, 2:2, 21:3, 5:4, "
            "7:5, 15:6, 9:7, 6:8, 1:9, 10:10, 17:11, 8:12, 19:13, 12:14, 11:15}, every other id -> 255"
            + (
                ", then to the 13-class space (wall, fence, pole -> 255)."
                if label_space is SYNTHIA_13
                else "."
            )
            + f" The 13-class evaluation subset is: {subset}."
        ),
        splits=result.splits,
        label_space=label_space,
        default_config="default",
        columns={
            "image": "RGB frame, original PNG.",
            "label": f"uint8 train ids of `{label_space.name}` (255 ignore), PNG.",
            "id": "the file stem, e.g. `0000000`.",
        },
        citation=CITATION,
    )


def main(argv: Sequence[str] | None = None) -> building.BuildResult:
    """Parse the command line, build the dataset, optionally push it."""
    parser = building.build_argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--label_space", choices=sorted(LABEL_SPACES), default="synthia16")
    args = parser.parse_args(argv)
    label_space = LABEL_SPACES[args.label_space]
    reader = functools.partial(read_train_ids, label_space=args.label_space)
    row_maker = functools.partial(building.segmentation_row, read_train_ids=reader)
    plans = [
        building.SplitPlan(
            "default",
            "train",
            list_examples(args.data_dir),
            segmentation_features(),
            row_maker,
            building.example_bytes,
        )
    ]
    extra: dict = {"dataset": "synthia"}
    if label_space is SYNTHIA_16:
        extra["evaluation_subsets"] = {"synthia13": list(SYNTHIA_13_OF_16)}
    return building.build_from_arguments(
        args, plans, label_space, functools.partial(card, label_space=label_space), **extra
    )


if __name__ == "__main__":
    run_program(main)
