"""Build Synscapes (Wrenninge and Unger, 2018) as a Hugging Face dataset with the 19 Cityscapes trainIds.

Raw layout (SPEC section 7): `img/rgb/<n>.png` and `img/class/<n>.png`, 25,000 pairs at
1440x720, numbered from 1. Class images hold Cityscapes label ids, mapped to the 19 trainIds with
the official table (everything else 255); values above 33 are an error. Synscapes has no official
split: every image goes to `train`, in numeric order.

    python dataset_scripts/synscapes.py --data_dir RAW/Synscapes --output_dir OUT/synscapes
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

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

CITATION = """@article{Synscapes,
  author = {Magnus Wrenninge and Jonas Unger},
  title = {Synscapes: A Photorealistic Synthetic Dataset for Street Scene Parsing},
  journal = {CoRR},
  volume = {abs/1810.08705},
  year = {2018}
}"""


def _numeric_first(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (1 << 62, key)


def list_examples(data_dir: Path) -> list[building.Example]:
    """The image/label pairs of a raw Synscapes folder, in numeric order."""
    building.require_dir(data_dir, "the Synscapes download with img/rgb/ and img/class/")
    images = building.list_files(
        building.require_dir(data_dir / "img" / "rgb", "img/rgb/<n>.png (wrong layout?)"),
        "*.png",
        "img/rgb/*.png",
    )
    labels = building.list_files(
        building.require_dir(data_dir / "img" / "class", "img/class/<n>.png (wrong layout?)"),
        "*.png",
        "img/class/*.png",
    )
    pairs = sorted(building.pair_by_stem(images, labels), key=lambda pair: _numeric_first(pair[0]))
    return [building.Example(key, image, label) for key, image, label in pairs]


def card(result: building.BuildResult) -> DatasetDescription:
    """The card of a Synscapes build."""
    return DatasetDescription(
        pretty_name="Synscapes, Cityscapes trainIds",
        license="other",
        summary=(
            "Photorealistic synthetic street scenes rendered with a physically based renderer "
            "(Wrenninge and Unger, 2018), labelled with Cityscapes classes: a source domain for "
            "Synscapes -> Cityscapes adaptation (the paper uses it with AdaptSegNet)."
        ),
        source_terms=(
            "Synscapes is distributed by 7D Labs / Linköping University under its own licence for "
            "non-commercial research (https://synscapes.on.liu.se/); read it before redistributing "
            "(a Hub copy made with `--push_to_hub` is private by default)."
        ),
        how_built=(
            "`python dataset_scripts/synscapes.py --data_dir RAW --output_dir OUT` from `img/rgb/` and "
            "`img/class/`. Images are stored as their original PNG bytes; class ids (Cityscapes label "
            "ids) are mapped to the 19 trainIds with the official table, every other id -> 255."
        ),
        splits=result.splits,
        label_space=CITYSCAPES,
        default_config="default",
        columns={
            "image": "RGB frame, original PNG.",
            "label": "uint8 Cityscapes trainIds (255 ignore), PNG.",
            "id": "the file number, e.g. `1`.",
        },
        citation=CITATION,
    )


def main(argv: Sequence[str] | None = None) -> building.BuildResult:
    """Parse the command line, build the dataset, optionally push it."""
    args = building.build_argument_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    row_maker = functools.partial(building.segmentation_row, read_train_ids=read_train_ids)
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
    return building.build_from_arguments(args, plans, CITYSCAPES, card, dataset="synscapes")


if __name__ == "__main__":
    run_program(main)
