"""The segmentation dataset builders in dataset_scripts/, on fixtures in the official layouts and on real data."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import modeling_intrada.data.building as _builder
from dataset_scripts import camvid, cityscapes, gta5, synscapes, synthia
from modeling_intrada import labels
from modeling_intrada.data.datasets import load_split, read_label_space

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# Fixture writers: the raw codings, written independently of the code under test.
# ---------------------------------------------------------------------------------------------


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_rgb(path: Path, height: int, width: int, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = _rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return array


def write_palette_label(path: Path, ids: np.ndarray) -> None:
    """A GTA5-style label: a palette PNG whose indices are the label ids, painted in Cityscapes colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label_id, train_id in labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items():
        palette[label_id] = labels.CITYSCAPES_PALETTE[train_id]
    image.putpalette(palette.ravel().tolist())
    image.save(path)


def write_grey_label(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def write_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit RGB/RGBA PNG written by hand, cycling through all five PNG row filters."""
    height, width, channels = array.shape
    raw = np.frombuffer(array.astype(">u2").tobytes(), dtype=np.uint8).reshape(height, width * channels * 2)
    bpp = channels * 2
    body = b""
    for y in range(height):
        row = raw[y].astype(np.int64)
        up = raw[y - 1].astype(np.int64) if y else np.zeros_like(row)
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        kind = y % 5
        if kind == 0:
            predictor = np.zeros_like(row)
        elif kind == 1:
            predictor = left
        elif kind == 2:
            predictor = up
        elif kind == 3:
            predictor = (left + up) // 2
        else:
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        body += bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes()
    color_type = {3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(body))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data + _png_chunk(b"IEND", b""))


def expected_train_ids(ids: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """The mapping done the slow, obvious way, pixel by pixel."""
    out = np.empty(ids.shape, dtype=np.uint8)
    for (y, x), value in np.ndenumerate(ids):
        out[y, x] = table.get(int(value), 255)
    return out


def read_rows(path: Path) -> list[dict]:
    """Rows of a built config/split, straight from its Parquet shards, in order."""
    rows = []
    for shard in sorted(path.parent.glob(f"{path.name}-*.parquet")):
        rows += pq.read_table(shard).to_pylist()
    return rows


def decode(cell: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])))


# ---------------------------------------------------------------------------------------------
# GTA5
# ---------------------------------------------------------------------------------------------


def make_gta5(
    root: Path, count: int = 3, mismatched: int | None = 2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    truth = {}
    for index in range(1, count + 1):
        key = f"{index:05d}"
        image = write_rgb(root / "images" / f"{key}.png", 10, 16, index)
        label_size = (12, 18) if index == mismatched else (10, 16)
        ids = _rng(100 + index).integers(0, 34, size=label_size)
        write_palette_label(root / "labels" / f"{key}.png", ids)
        truth[key] = (image, ids)
    return truth


def test_gta5_maps_ids_and_resizes_mismatched_labels(tmp_path):
    truth = make_gta5(tmp_path / "raw")
    result = gta5.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    rows = read_rows(tmp_path / "out" / "default" / "train")
    assert [row["id"] for row in rows] == ["00001", "00002", "00003"]
    for row in rows:
        image, ids = truth[row["id"]]
        assert np.array_equal(decode(row["image"]), image)
        # The stored image is the original file, byte for byte.
        assert row["image"]["bytes"] == (tmp_path / "raw" / "images" / f"{row['id']}.png").read_bytes()
        expected = expected_train_ids(ids, labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID)
        if row["id"] == "00002":
            assert row["label_resized"]
            expected = np.asarray(Image.fromarray(expected).resize((16, 10), Image.Resampling.NEAREST))
        else:
            assert not row["label_resized"]
        assert np.array_equal(decode(row["label"]), expected)
    assert result.event_ids("label_resized") == ["00002 (18x12 -> 16x10)"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "image/label pairs with different sizes: 1 pairs: 00002 (18x12 -> 16x10)" in card
    assert read_label_space(tmp_path / "out") == labels.CITYSCAPES


def test_gta5_bad_inputs(tmp_path):
    def build(raw: Path, *extra: str) -> None:
        gta5.main(["--data_dir", str(raw), "--output_dir", str(tmp_path / "out"), "--overwrite", *extra])

    with pytest.raises(FileNotFoundError, match=r"missing does not exist; expected the GTA5 download"):
        build(tmp_path / "missing")
    wrong = tmp_path / "wrong"
    write_rgb(wrong / "images" / "00001.png", 4, 4, 0)
    with pytest.raises(FileNotFoundError, match=r"wrong/labels does not exist; expected labels/NNNNN\.png"):
        build(wrong)
    unpaired = tmp_path / "unpaired"
    make_gta5(unpaired, mismatched=None)
    write_rgb(unpaired / "images" / "00004.png", 10, 16, 4)
    with pytest.raises(_builder.BuildError, match=r"1 image\(s\) without a label, e.g. .*images/00004\.png"):
        build(unpaired)
    corrupt = tmp_path / "corrupt"
    make_gta5(corrupt, mismatched=None)
    (corrupt / "images" / "00002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(_builder.BuildError, match=r"images/00002\.png: cannot decode the image"):
        build(corrupt)
    truncated = tmp_path / "truncated"
    make_gta5(truncated, mismatched=None)
    data = (truncated / "labels" / "00003.png").read_bytes()
    (truncated / "labels" / "00003.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(_builder.BuildError, match=r"labels/00003\.png: cannot decode the image"):
        build(truncated)
    bad_value = tmp_path / "bad_value"
    make_gta5(bad_value, mismatched=None)
    ids = np.full((10, 16), 7)
    ids[3, 4] = 40
    write_palette_label(bad_value / "labels" / "00001.png", ids)
    with pytest.raises(
        labels.LabelCodingError, match=r"labels/00001\.png: label values 40 are outside the coding"
    ):
        build(bad_value)
    colour = tmp_path / "colour"
    make_gta5(colour, mismatched=None)
    Image.new("RGB", (16, 10)).save(colour / "labels" / "00001.png")
    with pytest.raises(_builder.BuildError, match=r"label image has mode RGB; expected L or P"):
        build(colour)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(
        _builder.BuildError, match=r"no files matching '\*\.png' under .*empty/images: the split is empty"
    ):
        build(empty)
    strict = tmp_path / "strict"
    make_gta5(strict)
    with pytest.raises(
        _builder.BuildError, match=r"labels/00002\.png: label is 18x12 but its image .* is 16x10"
    ):
        build(strict, "--on_size_mismatch", "error")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()


def test_output_folder_protection_and_shards(tmp_path):
    make_gta5(tmp_path / "raw", count=6, mismatched=None)
    args = ["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")]
    gta5.main([*args, "--max_shard_size", "0"])  # one row per shard
    assert len(list((tmp_path / "out" / "default").glob("train-*-of-00006.parquet"))) == 6
    with pytest.raises(FileExistsError, match="exists and is not empty; pass --overwrite"):
        gta5.main(args)
    serial = read_rows(tmp_path / "out" / "default" / "train")
    gta5.main([*args, "--overwrite", "--max_shard_size", "0", "--num_proc", "2"])
    assert read_rows(tmp_path / "out" / "default" / "train") == serial  # same rows with two processes
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="is not a built dataset"):
        gta5.main(
            ["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "mine"), "--overwrite"]
        )
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_command_line_and_push(tmp_path, monkeypatch):
    make_gta5(tmp_path / "raw", count=2, mismatched=None)
    command = [sys.executable, str(PROJECT_ROOT / "dataset_scripts" / "gta5.py")]
    done = subprocess.run(
        [*command, "--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "default/train: 2 rows" in done.stdout
    # The builder's own refusal (a BuildError) is one line and exit status 2, not a traceback.
    missing = subprocess.run(
        [*command, "--data_dir", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
    )
    assert missing.stderr.count("\n") == 1 and not (tmp_path / "out2").exists()
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs["repo_id"], kwargs))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    url = _builder.push_to_hub(tmp_path / "out", "someone/gta5")
    assert url == "https://huggingface.co/datasets/someone/gta5"
    assert calls[0] == (
        "create_repo",
        "someone/gta5",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert calls[1][2]["folder_path"] == str(tmp_path / "out") and calls[1][2]["repo_type"] == "dataset"


# ---------------------------------------------------------------------------------------------
# Cityscapes
# ---------------------------------------------------------------------------------------------


def make_cityscapes(root: Path) -> dict[str, np.ndarray]:
    truth = {}
    for split, cities in {"train": ["aachen", "bochum"], "val": ["frankfurt"], "test": ["berlin"]}.items():
        for number, city in enumerate(cities):
            name = f"{city}_000000_{number:06d}"
            write_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", 8, 16, number)
            if split != "test":
                ids = _rng(len(truth)).integers(0, 34, size=(8, 16))
                write_grey_label(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", ids)
                truth[name] = ids
    return truth


def test_cityscapes_fixture(tmp_path):
    truth = make_cityscapes(tmp_path / "raw")
    result = cityscapes.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    assert result.splits == {"default": {"train": 2, "validation": 1}, "test": {"test": 1}}
    rows = read_rows(tmp_path / "out" / "default" / "train") + read_rows(
        tmp_path / "out" / "default" / "validation"
    )
    assert [(row["id"], row["city"]) for row in rows] == [
        ("aachen_000000_000000", "aachen"),
        ("bochum_000000_000001", "bochum"),
        ("frankfurt_000000_000000", "frankfurt"),
    ]
    for row in rows:
        expected = expected_train_ids(truth[row["id"]], labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID)
        assert np.array_equal(decode(row["label"]), expected)
    test_rows = read_rows(tmp_path / "out" / "test" / "test")
    assert [row["id"] for row in test_rows] == ["berlin_000000_000000"] and "label" not in test_rows[0]
    # Unlabelled splits live in their own configuration: no label column at all.
    assert (
        "label" not in load_split(tmp_path / "out", "test", "test", cache_dir=tmp_path / "cache").column_names
    )


def test_cityscapes_bad_layouts(tmp_path):
    make_cityscapes(tmp_path / "raw")
    shutil.rmtree(tmp_path / "raw" / "gtFine" / "val")
    with pytest.raises(FileNotFoundError, match=r"gtFine/val does not exist; expected gtFine/val/<city>/"):
        cityscapes.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match=r"flat/leftImg8bit does not exist"):
        cityscapes.main(["--data_dir", str(tmp_path / "flat"), "--output_dir", str(tmp_path / "out")])


def test_cityscapes_real_sample_matches_its_train_ids(shared_data, tmp_path):
    sample = shared_data / "cityscapes_sample"
    cityscapes.main(["--data_dir", str(sample), "--output_dir", str(tmp_path / "out")])
    rows = read_rows(tmp_path / "out" / "default" / "validation")
    assert [row["id"] for row in rows] == ["frankfurt_000000_000294"]
    reference = np.asarray(
        Image.open(sample / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png")
    )
    built = decode(rows[0]["label"])
    assert built.shape == reference.shape == (128, 256)
    # The sample's labelIds and labelTrainIds files were each downscaled from 2048x1024 by
    # nearest neighbour, separately, so they disagree on a few class-boundary pixels (77 of
    # 32,768). Everywhere else the mapping must agree exactly, and at each disagreement our
    # value must be one the reference has right beside that pixel.
    differ = np.argwhere(built != reference)
    assert len(differ) <= 0.003 * built.size
    padded = np.pad(reference, 1, constant_values=254)
    assert all(built[y, x] in padded[y : y + 3, x : x + 3] for y, x in differ)
    assert set(np.unique(built)) == set(np.unique(reference))


# ---------------------------------------------------------------------------------------------
# SYNTHIA
# ---------------------------------------------------------------------------------------------


def make_synthia(root: Path, channels: int = 3) -> dict[str, np.ndarray]:
    truth = {}
    for index in range(3):
        key = f"{index:07d}"
        write_rgb(root / "RGB" / f"{key}.png", 9, 14, index)
        label = _rng(50 + index).integers(0, 65536, size=(9, 14, channels)).astype(np.uint16)
        label[:, :, 0] = _rng(60 + index).integers(
            0, 23, size=(9, 14)
        )  # class ids; other channels: instances
        write_png16(root / "GT" / "LABELS" / f"{key}.png", label)
        truth[key] = label[:, :, 0]
    return truth


@pytest.mark.parametrize("channels", [3, 4])
def test_synthia_16_bit_channel_0(tmp_path, channels):
    truth = make_synthia(tmp_path / "raw", channels)
    synthia.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    rows = read_rows(tmp_path / "out" / "default" / "train")
    assert [row["id"] for row in rows] == sorted(truth)
    for row in rows:
        expected = expected_train_ids(truth[row["id"]], labels.SYNTHIA_ID_TO_TRAIN_ID)
        assert np.array_equal(decode(row["label"]), expected)
    space = (tmp_path / "out" / "label_space.json").read_text()
    assert read_label_space(tmp_path / "out") == labels.SYNTHIA_16
    assert '"synthia13": [\n      0,\n      1,\n      2,\n      6' in space


def test_synthia_13_class_build(tmp_path):
    truth = make_synthia(tmp_path / "raw")
    synthia.main(
        [
            "--data_dir",
            str(tmp_path / "raw"),
            "--output_dir",
            str(tmp_path / "out"),
            "--label_space",
            "synthia13",
        ]
    )
    table13 = {
        synthia_id: labels.SYNTHIA_16_TO_13[index16]
        for synthia_id, index16 in labels.SYNTHIA_ID_TO_TRAIN_ID.items()
        if index16 in labels.SYNTHIA_16_TO_13
    }
    assert {21, 5, 7}.isdisjoint(table13)  # wall, fence, pole ignored
    for row in read_rows(tmp_path / "out" / "default" / "train"):
        assert np.array_equal(decode(row["label"]), expected_train_ids(truth[row["id"]], table13))
    assert read_label_space(tmp_path / "out") == labels.SYNTHIA_13


def test_synthia_bad_labels(tmp_path):
    make_synthia(tmp_path / "raw")
    label = np.zeros((9, 14, 3), dtype=np.uint16)
    label[0, 0, 0] = 300  # needs the high byte: an 8-bit reader would see 44
    write_png16(tmp_path / "raw" / "GT" / "LABELS" / "0000001.png", label)
    args = ["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(
        labels.LabelCodingError, match=r"0000001\.png: label values 300 are outside the coding.*0\.\.22"
    ):
        synthia.main(args)
    Image.new("RGB", (14, 9)).save(tmp_path / "raw" / "GT" / "LABELS" / "0000001.png")
    with pytest.raises(
        _builder.BuildError, match=r"RGB PNG with 8 bits per channel; expected 16 bits per channel"
    ):
        synthia.main(args)


def test_png16_reader_on_every_16_bit_layout(tmp_path):
    """Grey, grey + alpha and interlaced colour 16-bit PNGs (written by pypng) read back exactly;
    8-bit, palette and non-PNG files are refused with what was expected."""
    import png

    rng = _rng(7)
    for planes, interlace in [(1, False), (2, False), (3, True), (4, True)]:
        values = rng.integers(0, 65536, size=(5, 7, planes)).astype(np.uint16)
        path = tmp_path / f"{planes}_{interlace}.png"
        writer = png.Writer(
            7, 5, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=16, interlace=interlace
        )
        with path.open("wb") as stream:
            writer.write(stream, values.reshape(5, 7 * planes).tolist())
        for channel in range(planes):
            decoded = _builder.read_png16_channel(path, channel)
            assert decoded.dtype == np.uint16
            assert np.array_equal(decoded, values[:, :, channel])
        with pytest.raises(_builder.BuildError, match=rf"has {planes} channels, no channel {planes}"):
            _builder.read_png16_channel(path, planes)
    for mode, says in [
        ("L", "an L PNG with 8"),
        ("RGBA", "an RGBA PNG with 8"),
        ("P", "a palette PNG with 1"),
    ]:
        Image.new(mode, (7, 5)).save(tmp_path / "eight.png")
        with pytest.raises(_builder.BuildError, match=rf"is {says} bits per channel; expected 16"):
            _builder.read_png16_channel(tmp_path / "eight.png")
    Image.new("RGB", (7, 5)).save(tmp_path / "photo.jpg")
    with pytest.raises(
        _builder.BuildError, match=r"photo\.jpg: cannot decode the image .*expected a 16-bit PNG"
    ):
        _builder.read_png16_channel(tmp_path / "photo.jpg")


# ---------------------------------------------------------------------------------------------
# Synscapes
# ---------------------------------------------------------------------------------------------


def test_synscapes_numeric_order_and_mapping(tmp_path):
    truth = {}
    for number in (1, 2, 10):
        write_rgb(tmp_path / "raw" / "img" / "rgb" / f"{number}.png", 6, 12, number)
        ids = _rng(number).integers(0, 34, size=(6, 12))
        write_grey_label(tmp_path / "raw" / "img" / "class" / f"{number}.png", ids)
        truth[str(number)] = ids
    synscapes.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    rows = read_rows(tmp_path / "out" / "default" / "train")
    assert [row["id"] for row in rows] == ["1", "2", "10"]
    for row in rows:
        expected = expected_train_ids(truth[row["id"]], labels.CITYSCAPES_LABEL_ID_TO_TRAIN_ID)
        assert np.array_equal(decode(row["label"]), expected)
    (tmp_path / "raw" / "img" / "class" / "2.png").unlink()
    with pytest.raises(_builder.BuildError, match=r"image\(s\) without a label, e.g. .*img/rgb/2\.png"):
        synscapes.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out2")])


# ---------------------------------------------------------------------------------------------
# CamVid
# ---------------------------------------------------------------------------------------------

CAMVID_FIXTURE = {
    "train": ["0001TP_000010", "0001TP_000020", "0016E5_000100", "0006R0_000200"],
    "val": ["0016E5_000300"],
    "test": ["0001TP_000500", "Seq05VD_000600", "Seq05VD_000610"],
}


def make_camvid(root: Path, segnet_paths: bool = False) -> dict[str, np.ndarray]:
    truth = {}
    for split, names in CAMVID_FIXTURE.items():
        lines = []
        for name in names:
            write_rgb(root / split / f"{name}.png", 6, 8, len(truth))
            ids = _rng(len(truth)).integers(0, 12, size=(6, 8))
            write_grey_label(root / f"{split}annot" / f"{name}.png", ids)
            truth[name] = ids
            prefix = "/SegNet/CamVid/" if segnet_paths else ""
            lines.append(f"{prefix}{split}/{name}.png {prefix}{split}annot/{name}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return truth


@pytest.mark.parametrize("segnet_paths", [False, True])
def test_camvid_configurations(tmp_path, segnet_paths):
    truth = make_camvid(tmp_path / "raw", segnet_paths)
    result = camvid.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    assert result.splits == {
        "full": {"train": 4, "validation": 1, "test": 3},
        "source": {"train": 3},
        "target_train": {"train": 2},
        "target_val": {"validation": 1},
        "day_test": {"test": 2},
    }
    out = tmp_path / "out"
    assert [r["id"] for r in read_rows(out / "source" / "train")] == [
        "0016E5_000100",
        "0006R0_000200",
        "0016E5_000300",
    ]
    target_train = read_rows(out / "target_train" / "train")
    assert [r["id"] for r in target_train] == ["0001TP_000010", "0001TP_000020"]
    assert all("label" not in row and row["lighting"] == "dusk" for row in target_train)
    assert [r["id"] for r in read_rows(out / "target_val" / "validation")] == ["0001TP_000500"]
    assert [r["id"] for r in read_rows(out / "day_test" / "test")] == ["Seq05VD_000600", "Seq05VD_000610"]
    for row in read_rows(out / "full" / "train") + read_rows(out / "full" / "test"):
        expected = expected_train_ids(truth[row["id"]], labels.CAMVID_ID_TO_TRAIN_ID)  # 11 (void) -> 255
        assert np.array_equal(decode(row["label"]), expected)
        assert row["sequence"] == row["id"].split("_")[0]


def test_camvid_bad_inputs(tmp_path):
    raw = tmp_path / "raw"
    make_camvid(raw)
    args = ["--data_dir", str(raw), "--output_dir", str(tmp_path / "out")]
    write_grey_label(raw / "trainannot" / "0016E5_000100.png", np.full((6, 8), 12))
    with pytest.raises(
        labels.LabelCodingError, match=r"0016E5_000100\.png: label values 12 are outside.*0\.\.11"
    ):
        camvid.main(args)
    make_camvid(raw)
    (raw / "valannot" / "0016E5_000300.png").unlink()
    with pytest.raises(_builder.BuildError, match=r"val\.txt:1: image .*0016E5_000300\.png has no label"):
        camvid.main(args)
    make_camvid(raw)
    (raw / "val.txt").write_text("\n")
    with pytest.raises(_builder.BuildError, match=r"val\.txt lists no image: the val split is empty"):
        camvid.main(args)
    make_camvid(raw)
    for name in CAMVID_FIXTURE["train"][:2]:  # no dusk frames left in train
        (raw / "train" / f"{name}.png").unlink()
        (raw / "trainannot" / f"{name}.png").unlink()
    (raw / "train.txt").unlink()  # pair the folders by name instead
    with pytest.raises(_builder.BuildError, match=r"config 'target_train' split 'train' is empty"):
        camvid.main(args)


def test_camvid_round_trip_after_moving_the_folder(tmp_path):
    truth = make_camvid(tmp_path / "raw")
    camvid.main(["--data_dir", str(tmp_path / "raw"), "--output_dir", str(tmp_path / "out")])
    moved = tmp_path / "somewhere" / "else"
    moved.parent.mkdir()
    shutil.move(tmp_path / "out", moved)
    shutil.rmtree(tmp_path / "raw")  # nothing may point back at the raw files
    validation = load_split(moved, "target_val", "validation", cache_dir=tmp_path / "cache")
    row = validation[0]
    assert row["image"].size == (8, 6) and row["image"].mode == "RGB"
    expected = expected_train_ids(truth["0001TP_000500"], labels.CAMVID_ID_TO_TRAIN_ID)
    assert np.array_equal(np.asarray(row["label"]), expected)
    full = load_split(moved, split="train", cache_dir=tmp_path / "cache")  # `full` is the default config
    assert len(full) == 4


def test_camvid_real_counts(shared_data):
    plans = {(p.config, p.split): p.items for p in camvid.list_plans(shared_data / "camvid")}
    counts = {key: len(items) for key, items in plans.items()}
    assert counts == {
        ("full", "train"): 367,
        ("full", "validation"): 101,
        ("full", "test"): 202,
        ("source", "train"): 406,
        ("target_train", "train"): 62,
        ("target_val", "validation"): 31,
        ("day_test", "test"): 171,
    }
    assert {e.metadata["sequence"] for e in plans["source", "train"]} == {"0016E5", "0006R0"}
    assert {e.metadata["sequence"] for e in plans["day_test", "test"]} == {"Seq05VD"}
    assert all(e.label is None for e in plans["target_train", "train"])
    # Every real label is inside the coding (read_train_ids raises otherwise); void becomes 255.
    values = set()
    for example in plans["full", "train"] + plans["full", "validation"] + plans["full", "test"]:
        values |= set(np.unique(camvid.read_train_ids(example.label)).tolist())
    assert values == set(range(11)) | {255}


# ---------------------------------------------------------------------------------------------
# The synthetic default's command line
# ---------------------------------------------------------------------------------------------


def test_synthetic_command_line(tmp_path, capsys):
    from dataset_scripts import (
        synthetic,  # dataset_scripts/synthetic.py, a thin CLI over modeling_intrada.data.synthetic
    )

    sizes = [
        "--num_source",
        "4",
        "--num_target_train",
        "3",
        "--num_target_val",
        "2",
        "--height",
        "32",
        "--width",
        "64",
    ]
    output_dir = synthetic.main(["--output_dir", str(tmp_path / "out"), "--seed", "5", *sizes])
    assert "target_val/validation-00000-of-00001.parquet: 2 rows" in capsys.readouterr().out
    assert '"seed": 5' in (output_dir / "synthetic_params.json").read_text()
    with pytest.raises(FileExistsError, match="other parameters"):
        synthetic.main(["--output_dir", str(tmp_path / "out"), "--seed", "6", *sizes])


@pytest.mark.parametrize("option", ["--max_shard_size", "--num_proc"])
def test_shard_size_and_processes_must_be_positive(tmp_path, option, capsys):
    parser = _builder.build_argument_parser("a builder")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), option, "-1"])
    assert exit_info.value.code == 2 and "must be at least" in capsys.readouterr().err
