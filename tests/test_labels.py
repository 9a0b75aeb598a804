"""Label tables, label spaces and the id mapping helpers (modeling_intrada.labels)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modeling_intrada import labels
from modeling_intrada.labels import (
    CITYSCAPES,
    LabelCodingError,
    LabelSpace,
    colorize,
    get_label_space,
    map_label_ids,
)

# SPEC section 7, copied here on purpose: the test checks the library against the spec text.
SPEC_GTA5_MAP = {
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
}
SPEC_GTA5_MAP |= {27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
SPEC_SYNTHIA_MAP = {
    3: 0,
    4: 1,
    2: 2,
    21: 3,
    5: 4,
    7: 5,
    15: 6,
    9: 7,
    6: 8,
    1: 9,
    10: 10,
    17: 11,
    8: 12,
    19: 13,
}
SPEC_SYNTHIA_MAP |= {12: 14, 11: 15}


def test_cityscapes_table_matches_cityscapesscripts():
    cs_labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    official = {
        label.id: (label.trainId if 0 <= label.trainId < 19 else 255)
        for label in cs_labels.labels
        if label.id >= 0
    }
    assert len(official) == labels.CITYSCAPES_NUM_LABEL_IDS
    ours = {
        i: labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID.get(i, 255) for i in range(labels.CITYSCAPES_NUM_LABEL_IDS)
    }
    assert ours == official
    by_train_id = {label.trainId: label for label in cs_labels.labels if 0 <= label.trainId < 19}
    assert CITYSCAPES.class_names == tuple(by_train_id[i].name for i in range(19))
    assert CITYSCAPES.palette == tuple(tuple(by_train_id[i].color) for i in range(19))


def test_gta5_and_synthia_tables_match_the_spec():
    assert dict(labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID) == SPEC_GTA5_MAP
    assert dict(labels.SYNTHIA_ID_TO_TRAIN_ID) == SPEC_SYNTHIA_MAP
    assert get_label_space("gta5") is CITYSCAPES and get_label_space("synscapes") is CITYSCAPES


def test_synthia_16_and_13_spaces():
    synthia16 = get_label_space("synthia")
    assert synthia16.num_classes == 16
    dropped = set(CITYSCAPES.class_names) - set(synthia16.class_names)
    assert dropped == {"terrain", "truck", "train"}
    # The 16-class order is the SPEC order: road, sidewalk, building, wall, ..., bicycle.
    assert synthia16.class_names[3] == "wall" and synthia16.class_names[9] == "sky"
    assert synthia16.class_names[12] == "car" and synthia16.class_names[15] == "bicycle"
    synthia13 = get_label_space("synthia13")
    assert set(synthia16.class_names) - set(synthia13.class_names) == {"wall", "fence", "pole"}
    assert [synthia16.class_names[i] for i in labels.SYNTHIA_13_OF_16] == list(synthia13.class_names)
    # Evaluating a 19-class prediction in the 16 space keeps class names aligned.
    for cityscapes_id, index16 in labels.CITYSCAPES_TO_SYNTHIA_16.items():
        assert CITYSCAPES.class_names[cityscapes_id] == synthia16.class_names[index16]


def test_rare_classes_per_space():
    assert CITYSCAPES.rare_train_ids == (3, 4, 5, 6, 7, 9, 12, 14, 15, 16, 17)  # SPEC section 4
    rare_names = {CITYSCAPES.class_names[i] for i in CITYSCAPES.rare_train_ids}
    for name in ("synthia16", "synthia13"):
        space = get_label_space(name)
        names = {space.class_names[i] for i in space.rare_train_ids}
        assert names == rare_names & set(space.class_names)
    camvid = get_label_space("camvid")
    assert {camvid.class_names[i] for i in camvid.rare_train_ids} == {
        "pole",
        "sign",
        "fence",
        "pedestrian",
        "bicyclist",
    }
    synthetic = get_label_space("synthetic")
    assert set(synthetic.rare_train_ids) <= set(labels.SYNTHETIC_TRAIN_IDS)
    assert synthetic.id2label == CITYSCAPES.id2label


def test_camvid_rare_classes_are_the_rarest_in_the_real_data(shared_data):
    counts = np.zeros(256, dtype=np.int64)
    for path in sorted((shared_data / "camvid").glob("*annot/*.png")):
        counts += np.bincount(np.asarray(Image.open(path)).ravel(), minlength=256)
    share = counts[:11] / counts[:11].sum()
    rare = list(labels.CAMVID_RARE_TRAIN_IDS)
    common = [i for i in range(11) if i not in rare]
    assert share[rare].max() < 0.02 < share[common].min()


def test_registry_lookup_and_unknown_name():
    assert get_label_space("CamVid").name == "camvid"
    assert get_label_space("mnist").num_classes == 10
    with pytest.raises(KeyError, match=r"unknown dataset or label space 'kitti'.*cityscapes"):
        get_label_space("kitti")
    assert "synthetic" in labels.available_label_spaces()


def test_label_space_round_trip_and_validation():
    for name in labels.available_label_spaces():
        space = get_label_space(name)
        assert LabelSpace.from_dict(space.to_dict()) == space
        assert space.label2id == {v: k for k, v in space.id2label.items()}
    with pytest.raises(ValueError, match="2 classes but 1 colours"):
        LabelSpace("bad", ("a", "b"), ((0, 0, 0),))
    with pytest.raises(ValueError, match=r"rare train ids \[5\]"):
        LabelSpace("bad", ("a",), ((0, 0, 0),), rare_train_ids=(5,))


def test_map_label_ids_pixel_by_pixel():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 34, size=(37, 53)).astype(np.uint8)
    mapped = map_label_ids(ids, labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID, 34)
    assert mapped.dtype == np.uint8 and mapped.shape == ids.shape
    for (y, x), value in np.ndenumerate(ids):
        assert mapped[y, x] == SPEC_GTA5_MAP.get(int(value), 255)
    # 16-bit inputs (SYNTHIA) work the same way.
    ids16 = rng.integers(0, 23, size=(9, 11)).astype(np.uint16)
    mapped16 = map_label_ids(ids16, labels.SYNTHIA_ID_TO_TRAIN_ID, 23)
    assert all(mapped16[y, x] == SPEC_SYNTHIA_MAP.get(int(v), 255) for (y, x), v in np.ndenumerate(ids16))


def test_map_label_ids_rejects_values_outside_the_coding():
    ids = np.array([[7, 8], [40, 200]], dtype=np.uint8)
    with pytest.raises(
        LabelCodingError, match=r"frame\.png: label values 40, 200 are outside the coding.*0\.\.33"
    ):
        map_label_ids(ids, labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID, 34, source="frame.png")
    # Without a coding size, unknown ids simply map to 255.
    assert map_label_ids(ids, labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID).tolist() == [[0, 1], [255, 255]]
    with pytest.raises(LabelCodingError, match="expected integer label ids"):
        map_label_ids(np.zeros((2, 2), dtype=np.float32), {0: 0})


def test_colorize():
    train_ids = np.array([[0, 1], [255, 18]], dtype=np.uint8)
    rgb = colorize(train_ids, "cityscapes")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 1].tolist() == [244, 35, 232]
    assert rgb[1, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [119, 11, 32]
    with pytest.raises(ValueError, match=r"train ids \[19\] are not classes of 'cityscapes'"):
        colorize(np.array([[19]]), CITYSCAPES)
