"""Build Cityscapes (fine annotations) as a Hugging Face dataset with the 19 trainIds.

Raw layout (SPEC section 7):
`leftImg8bit/{train,val,test}/<city>/<name>_leftImg8bit.png` and
`gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png`. Label ids become trainIds through the
official table (`modeling_intrada.labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID`, which the tests check
against `cityscapesscripts.helpers.labels`); values above 33 are not label ids: an error.

Configurations: `default` with the labelled splits found (`train`: 2,975, `validation`: 500) and,
when `leftImg8bit/test` exists, `test` (split `test`, 1,525 images, no labels: the public test
annotations are placeholders). The `*_labelTrainIds.png` files some users generate are not read.

    python dataset_scripts/cityscapes.py --data_dir RAW/cityscapes --output_dir OUT/cityscapes
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
IMAGE_SUFFIX = "_leftImg8bit"
LABEL_SUFFIX = "_gtFine_labelIds"
# Raw split folder -> split name in the built dataset.
LABELLED_SPLITS = {"train": "train", "val": "validation"}

CITATION = """@inproceedings{Cordts2016Cityscapes,
  title = {The Cityscapes Dataset for Semantic Urban Scene Understanding},
  author = {Cordts, Marius and Omran, Mohamed and Ramos, Sebastian and Rehfeld, Timo and Enzweiler, Markus
            and Benenson, Rodrigo and Franke, Uwe and Roth, Stefan and Schiele, Bernt},
  booktitle = {Proc. of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2016}
}"""


def _city(path: Path) -> str:
    return path.parent.name


def list_split(data_dir: Path, raw_split: str, labelled: bool) -> list[building.Example]:
    """The examples of one raw split (`train`, `val` or `test`), sorted by name."""
    image_dir = building.require_dir(
        data_dir / "leftImg8bit" / raw_split, f"leftImg8bit/{raw_split}/<city>/*.png"
    )
    images = building.list_files(
        image_dir, f"*/*{IMAGE_SUFFIX}.png", f"leftImg8bit/{raw_split}/<city>/<name>{IMAGE_SUFFIX}.png"
    )
    if not labelled:
        return [
            building.Example(p.name[: -len(IMAGE_SUFFIX + ".png")], p, None, {"city": _city(p)})
            for p in images
        ]
    label_dir = building.require_dir(
        data_dir / "gtFine" / raw_split,
        f"gtFine/{raw_split}/<city>/<name>{LABEL_SUFFIX}.png beside leftImg8bit",
    )
    labels = building.list_files(
        label_dir, f"*/*{LABEL_SUFFIX}.png", f"gtFine/{raw_split}/<city>/<name>{LABEL_SUFFIX}.png"
    )
    pairs = building.pair_by_stem(images, labels, IMAGE_SUFFIX, LABEL_SUFFIX)
    return [building.Example(key, image, label, {"city": _city(image)}) for key, image, label in pairs]


def list_plans(data_dir: Path) -> list[building.SplitPlan]:
    """One plan per raw split present; at least one labelled split is required."""
    building.require_dir(data_dir, "the Cityscapes download with leftImg8bit/ and gtFine/")
    building.require_dir(data_dir / "leftImg8bit", "leftImg8bit/{train,val,test}/<city>/ (wrong layout?)")
    metadata = {"city": datasets.Value("string")}
    row_maker = functools.partial(building.segmentation_row, read_train_ids=read_train_ids)
    plans = []
    for raw_split, split in LABELLED_SPLITS.items():
        if (data_dir / "leftImg8bit" / raw_split).is_dir():
            examples = list_split(data_dir, raw_split, labelled=True)
            plans.append(
                building.SplitPlan(
                    "default",
                    split,
                    examples,
                    segmentation_features(True, metadata),
                    row_maker,
                    building.example_bytes,
                )
            )
    if not plans:
        raise building.BuildError(
            f"{data_dir / 'leftImg8bit'} has neither train/ nor val/; expected leftImg8bit/{{train,val}}/<city>/"
        )
    if (data_dir / "leftImg8bit" / "test").is_dir():
        examples = list_split(data_dir, "test", labelled=False)
        plans.append(
            building.SplitPlan(
                "test",
                "test",
                examples,
                segmentation_features(False, metadata),
                row_maker,
                building.example_bytes,
            )
        )
    return plans


def card(result: building.BuildResult) -> DatasetDescription:
    """The card of a Cityscapes build."""
    return DatasetDescription(
        pretty_name="Cityscapes (gtFine), 19 trainIds",
        license="other",
        summary=(
            "Street scenes from 50 German and neighbouring cities with fine pixel annotations (Cordts "
            "et al., CVPR 2016): the target domain of GTA5/SYNTHIA/Synscapes -> Cityscapes adaptation."
        ),
        source_terms=(
            "Cityscapes is licensed for non-commercial research only and its licence does not allow "
            "redistributing the data (https://www.cityscapes-dataset.com/license/). Keep any Hub copy "
            "private (the default of `--push_to_hub`)."
        ),
        how_built=(
            "`python dataset_scripts/cityscapes.py --data_dir RAW --output_dir OUT` from the official "
            "`leftImg8bit/` and `gtFine/` folders. Images are stored as their original PNG bytes; "
            "`*_gtFine_labelIds.png` are mapped to the 19 trainIds with the official label table "
            "(ignore classes -> 255). Test images have no labels."
        ),
        splits=result.splits,
        label_space=CITYSCAPES,
        default_config="default",
        columns={
            "image": "RGB frame, original PNG.",
            "label": "uint8 trainIds (255 ignore), PNG; absent in the `test` configuration.",
            "id": "`<city>_<seq>_<frame>`, e.g. `frankfurt_000000_000294`.",
            "city": "the city folder.",
        },
        citation=CITATION,
    )


def main(argv: Sequence[str] | None = None) -> building.BuildResult:
    """Parse the command line, build the dataset, optionally push it."""
    args = building.build_argument_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    return building.build_from_arguments(
        args, list_plans(args.data_dir), CITYSCAPES, card, dataset="cityscapes"
    )


if __name__ == "__main__":
    run_program(main)
