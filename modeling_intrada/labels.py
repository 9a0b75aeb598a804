"""Label spaces, label-id tables and colour palettes: one definition for builders, training and evaluation.

A *label space* is the set of classes a model predicts (its `id2label`), with a colour palette for
pictures and the list of rare classes that entropy ranking counts when it normalises scores (SPEC
section 4). The raw datasets code their labels differently (Cityscapes label ids, SYNTHIA ids in
channel 0 of a 16-bit PNG, CamVid SegNet ids); the tables here map each coding onto its space,
with every unknown id mapped to the ignore index 255 (SPEC section 7).

This module deliberately has no dependency beyond numpy: `cityscapesscripts` is only a test
dependency, and `tests/test_labels.py` checks the literal Cityscapes table below against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

# ---------------------------------------------------------------------------------------------
# Cityscapes: 19 evaluation classes (trainIds 0..18), the official colours, and labelId -> trainId.
# ---------------------------------------------------------------------------------------------

CITYSCAPES_CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

CITYSCAPES_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

# The official table (cityscapesscripts.helpers.labels): label ids 0..33, every id not listed is
# "ignoreInEval" and maps to 255. GTA5 and Synscapes labels use the same ids (SPEC section 7).
CITYSCAPES_LABEL_ID_TO_TRAIN_ID: Mapping[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
# Label ids 0 ("unlabeled") .. 33 ("bicycle"); license plate (-1) is never written into label images.
CITYSCAPES_NUM_LABEL_IDS = 34

# SPEC section 4: wall, fence, pole, light, sign, terrain, rider, truck, bus, train, motorcycle.
CITYSCAPES_RARE_TRAIN_IDS = (3, 4, 5, 6, 7, 9, 12, 14, 15, 16, 17)

# ---------------------------------------------------------------------------------------------
# SYNTHIA-RAND-CITYSCAPES: class id in channel 0 of a 16-bit PNG, 16 classes (SPEC section 7).
# ---------------------------------------------------------------------------------------------

SYNTHIA_ID_TO_TRAIN_ID: Mapping[int, int] = {
    3: 0,  # road
    4: 1,  # sidewalk
    2: 2,  # building
    21: 3,  # wall
    5: 4,  # fence
    7: 5,  # pole
    15: 6,  # traffic light
    9: 7,  # traffic sign
    6: 8,  # vegetation
    1: 9,  # sky
    10: 10,  # pedestrian -> person
    17: 11,  # rider
    8: 12,  # car
    19: 13,  # bus
    12: 14,  # motorcycle
    11: 15,  # bicycle
}
# SYNTHIA ids 0 (void) .. 22 (lane marking); ids without a 16-class entry (void, parking slot,
# road work, terrain, truck, train, lane marking) map to 255 as in the reference code.
SYNTHIA_NUM_LABEL_IDS = 23

# The 16 classes are the Cityscapes 19 without terrain, truck and train, in Cityscapes order.
SYNTHIA_16_TRAIN_IDS_IN_CITYSCAPES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
CITYSCAPES_TO_SYNTHIA_16: Mapping[int, int] = {
    cityscapes_id: index for index, cityscapes_id in enumerate(SYNTHIA_16_TRAIN_IDS_IN_CITYSCAPES)
}
SYNTHIA_16_CLASS_NAMES = tuple(CITYSCAPES_CLASS_NAMES[i] for i in SYNTHIA_16_TRAIN_IDS_IN_CITYSCAPES)
SYNTHIA_16_PALETTE = tuple(CITYSCAPES_PALETTE[i] for i in SYNTHIA_16_TRAIN_IDS_IN_CITYSCAPES)

# SPEC section 6: the 13-class protocol drops wall, fence and pole (16-class indices 3, 4, 5).
SYNTHIA_13_OF_16 = (0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
SYNTHIA_16_TO_13: Mapping[int, int] = {index16: index13 for index13, index16 in enumerate(SYNTHIA_13_OF_16)}
SYNTHIA_13_CLASS_NAMES = tuple(SYNTHIA_16_CLASS_NAMES[i] for i in SYNTHIA_13_OF_16)
SYNTHIA_13_PALETTE = tuple(SYNTHIA_16_PALETTE[i] for i in SYNTHIA_13_OF_16)


def _rare_in_subset(rare_ids: tuple[int, ...], table: Mapping[int, int]) -> tuple[int, ...]:
    return tuple(sorted(table[i] for i in rare_ids if i in table))


# The Cityscapes rare classes that exist in the smaller spaces, renumbered: a SYNTHIA-trained
# model ranks Cityscapes images in its own 16 (or 13) classes, so its rare list lives there.
SYNTHIA_16_RARE_TRAIN_IDS = _rare_in_subset(CITYSCAPES_RARE_TRAIN_IDS, CITYSCAPES_TO_SYNTHIA_16)
SYNTHIA_13_RARE_TRAIN_IDS = _rare_in_subset(SYNTHIA_16_RARE_TRAIN_IDS, SYNTHIA_16_TO_13)

# ---------------------------------------------------------------------------------------------
# CamVid (SegNet layout): ids 0..10 are classes, 11 is void (-> 255).
# ---------------------------------------------------------------------------------------------

CAMVID_CLASS_NAMES = (
    "sky",
    "building",
    "pole",
    "road",
    "sidewalk",
    "tree",
    "sign",
    "fence",
    "car",
    "pedestrian",
    "bicyclist",
)
# The colours of the SegNet tutorial (Sky, Building, Pole, Road, Pavement, Tree, SignSymbol,
# Fence, Car, Pedestrian, Bicyclist).
CAMVID_PALETTE = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)
CAMVID_ID_TO_TRAIN_ID: Mapping[int, int] = {i: i for i in range(11)}
CAMVID_NUM_LABEL_IDS = 12  # 0..10 classes, 11 void
# Measured on ../shared/data/camvid (all 670 label maps): pole 1.0 %, sign 1.1 %, fence 1.5 %,
# pedestrian 0.7 % and bicyclist 0.6 % of the labelled (non-void) pixels; the next, car, has 4.6 %.
# These are also the thin or small object kinds Cityscapes lists as rare.
CAMVID_RARE_TRAIN_IDS = (2, 6, 7, 9, 10)

# ---------------------------------------------------------------------------------------------
# Digits and the synthetic default.
# ---------------------------------------------------------------------------------------------

DIGIT_CLASS_NAMES = tuple(str(d) for d in range(10))
# matplotlib's "tab10" colours, only for pictures.
DIGIT_PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

# The synthetic default (modeling_intrada.data.synthetic) draws these Cityscapes classes, keeping their
# trainIds so that its id2label is the Cityscapes one.
SYNTHETIC_TRAIN_IDS = (0, 1, 2, 5, 7, 8, 10, 11, 13)  # road .. car, see synthetic.py
# Pole, sign and person: each covers under 2 % of the synthetic pixels and is absent from a
# share of the images, the role the rare classes play in Cityscapes (SPEC section 4).
SYNTHETIC_RARE_TRAIN_IDS = (5, 7, 11)


@dataclass(frozen=True)
class LabelSpace:
    """The classes a segmentation model predicts, with their colours and ranking facts.

    Args:
        name: registry name of the space (e.g. "cityscapes", "synthia16").
        class_names: class names indexed by train id (0..num_classes-1).
        palette: one RGB colour per class, for pictures.
        rare_train_ids: classes counted by the entropy-ranking normalisation (SPEC section 4).
        ignore_index: label value that marks pixels without a class.
        labelled_train_ids: the classes a dataset in this space labels, when it labels only some of them
            (the synthetic pair draws 9 of the 19 Cityscapes classes); empty: all of them. Result tables
            show these classes.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    rare_train_ids: tuple[int, ...] = ()
    ignore_index: int = IGNORE_INDEX
    labelled_train_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.class_names):
            raise ValueError(
                f"label space {self.name!r}: {len(self.class_names)} classes but {len(self.palette)} colours"
            )
        bad = [i for i in self.rare_train_ids if not 0 <= i < len(self.class_names)]
        if bad:
            raise ValueError(f"label space {self.name!r}: rare train ids {bad} are not class indices")
        bad = [i for i in self.labelled_train_ids if not 0 <= i < len(self.class_names)]
        if bad:
            raise ValueError(f"label space {self.name!r}: labelled train ids {bad} are not class indices")

    @property
    def num_classes(self) -> int:
        """How many classes the space has."""
        return len(self.class_names)

    @property
    def id2label(self) -> dict[int, str]:
        """Train id -> class name, the `id2label` of a model configuration."""
        return dict(enumerate(self.class_names))

    @property
    def label2id(self) -> dict[str, int]:
        """Class name -> train id."""
        return {name: i for i, name in enumerate(self.class_names)}

    def to_dict(self) -> dict:
        """A JSON-ready description (what builders write as `label_space.json`)."""
        return {
            "name": self.name,
            "id2label": {str(i): name for i, name in self.id2label.items()},
            "palette": [list(color) for color in self.palette],
            "rare_train_ids": list(self.rare_train_ids),
            "ignore_index": self.ignore_index,
            **({"labelled_train_ids": list(self.labelled_train_ids)} if self.labelled_train_ids else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelSpace:
        """Rebuild a space from `to_dict` output."""
        id2label = {int(k): v for k, v in data["id2label"].items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError(f"id2label keys must be 0..{len(id2label) - 1}, got {sorted(id2label)}")
        return cls(
            name=data["name"],
            class_names=tuple(id2label[i] for i in range(len(id2label))),
            palette=tuple(tuple(int(c) for c in color) for color in data["palette"]),
            rare_train_ids=tuple(int(i) for i in data.get("rare_train_ids", ())),
            ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
            labelled_train_ids=tuple(int(i) for i in data.get("labelled_train_ids", ())),
        )


CITYSCAPES = LabelSpace("cityscapes", CITYSCAPES_CLASS_NAMES, CITYSCAPES_PALETTE, CITYSCAPES_RARE_TRAIN_IDS)
SYNTHIA_16 = LabelSpace("synthia16", SYNTHIA_16_CLASS_NAMES, SYNTHIA_16_PALETTE, SYNTHIA_16_RARE_TRAIN_IDS)
SYNTHIA_13 = LabelSpace("synthia13", SYNTHIA_13_CLASS_NAMES, SYNTHIA_13_PALETTE, SYNTHIA_13_RARE_TRAIN_IDS)
CAMVID = LabelSpace("camvid", CAMVID_CLASS_NAMES, CAMVID_PALETTE, CAMVID_RARE_TRAIN_IDS)
DIGITS = LabelSpace("digits", DIGIT_CLASS_NAMES, DIGIT_PALETTE)
SYNTHETIC = LabelSpace(
    "synthetic",
    CITYSCAPES_CLASS_NAMES,
    CITYSCAPES_PALETTE,
    SYNTHETIC_RARE_TRAIN_IDS,
    labelled_train_ids=SYNTHETIC_TRAIN_IDS,
)

# Dataset (or label-space) name -> label space. GTA5 and Synscapes share Cityscapes' 19 classes;
# "cityscapes16"/"cityscapes13" are Cityscapes seen by a SYNTHIA-trained model.
_REGISTRY: dict[str, LabelSpace] = {
    "cityscapes": CITYSCAPES,
    "gta5": CITYSCAPES,
    "synscapes": CITYSCAPES,
    "synthia": SYNTHIA_16,
    "synthia16": SYNTHIA_16,
    "cityscapes16": SYNTHIA_16,
    "synthia13": SYNTHIA_13,
    "cityscapes13": SYNTHIA_13,
    "camvid": CAMVID,
    "digits": DIGITS,
    "mnist": DIGITS,
    "usps": DIGITS,
    "svhn": DIGITS,
    "synthetic": SYNTHETIC,
}


def available_label_spaces() -> list[str]:
    """The names `get_label_space` accepts."""
    return sorted(_REGISTRY)


def get_label_space(name: str) -> LabelSpace:
    """The label space of a dataset or a named space, e.g. `get_label_space("gta5")`.

    Raises:
        KeyError: `name` is unknown; the message lists the known names.
    """
    key = name.lower()
    if key not in _REGISTRY:
        raise KeyError(
            f"unknown dataset or label space {name!r}; known: {', '.join(available_label_spaces())}"
        )
    return _REGISTRY[key]


class LabelCodingError(ValueError):
    """A label map holds a value that its dataset's coding does not define."""


def build_lut(table: Mapping[int, int], size: int, fill: int = IGNORE_INDEX) -> np.ndarray:
    """A uint8 lookup table of length `size`: `lut[i] = table.get(i, fill)`."""
    lut = np.full(size, fill, dtype=np.uint8)
    for source_id, train_id in table.items():
        if 0 <= source_id < size:
            lut[source_id] = train_id
    return lut


def map_label_ids(
    label_ids: np.ndarray,
    table: Mapping[int, int],
    num_label_ids: int | None = None,
    source: str = "label map",
) -> np.ndarray:
    """Map a dataset's label ids to train ids with a vectorised lookup; ids not in `table` -> 255.

    Args:
        label_ids: integer array of the dataset's label ids.
        table: label id -> train id (e.g. `CITYSCAPES_LABEL_ID_TO_TRAIN_ID`).
        num_label_ids: when given, the coding defines ids 0..num_label_ids-1 only, and any other
            value raises `LabelCodingError` (a wrong file, or a colour PNG instead of ids).
        source: what the array came from (a path), named in the error.

    Returns:
        uint8 array of the same shape with train ids and 255 for ignore.
    """
    ids = np.asarray(label_ids)
    if ids.dtype.kind not in "ui":
        raise LabelCodingError(f"{source}: expected integer label ids, got dtype {ids.dtype}")
    if ids.size == 0:
        return np.zeros(ids.shape, dtype=np.uint8)
    low, high = int(ids.min()), int(ids.max())
    if num_label_ids is not None and (low < 0 or high >= num_label_ids):
        values = np.unique(ids[(ids < 0) | (ids >= num_label_ids)])
        shown = ", ".join(str(v) for v in values[:10]) + (", ..." if values.size > 10 else "")
        raise LabelCodingError(
            f"{source}: label values {shown} are outside the coding, which defines ids 0..{num_label_ids - 1}"
        )
    if low < 0:
        raise LabelCodingError(f"{source}: negative label id {low}")
    return build_lut(table, max(high + 1, 1))[ids]


def colorize(train_ids: np.ndarray, label_space: LabelSpace | str) -> np.ndarray:
    """Paint a train-id map (HxW) with the space's palette: uint8 HxWx3, ignore (255) black.

    Raises:
        ValueError: a value is neither a class index nor the ignore index.
    """
    space = get_label_space(label_space) if isinstance(label_space, str) else label_space
    ids = np.asarray(train_ids)
    if ids.ndim != 2:
        raise ValueError(f"expected a (height, width) train-id map, got shape {ids.shape}")
    valid = (ids >= 0) & (ids < space.num_classes)
    if not np.all(valid | (ids == space.ignore_index)):
        bad = np.unique(ids[~valid & (ids != space.ignore_index)])[:10].tolist()
        raise ValueError(
            f"train ids {bad} are not classes of {space.name!r} (0..{space.num_classes - 1}) "
            f"or the ignore index {space.ignore_index}"
        )
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: space.num_classes] = np.asarray(space.palette, dtype=np.uint8)
    return palette[np.where(valid, ids, 255).astype(np.int64)]


def same_class_name(name: str) -> str:
    """A class name as names are compared across datasets and models: case, `_` and `-` do not count
    ("Traffic_Light" is "traffic light")."""
    return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def class_name_table(from_names: Sequence[str], to_names: Sequence[str]) -> tuple[dict[int, int], list[str]]:
    """Train id in `from_names` -> train id in `to_names`, for the classes of the same name
    (`same_class_name`), and the classes of `to_names` that `from_names` lacks."""
    index = {same_class_name(name): i for i, name in enumerate(to_names)}
    table = {i: index[same_class_name(n)] for i, n in enumerate(from_names) if same_class_name(n) in index}
    present = {same_class_name(n) for n in from_names}
    return table, [n for n in to_names if same_class_name(n) not in present]
