"""modeling_intrada/data/digits.py: built digits datasets to network inputs (USPS 16x16 -> 28x28, SVHN, MNIST -> RGB 32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from digits_fixtures import build, digit_images, raw_mnist, raw_svhn, raw_usps
from PIL import Image

from modeling_intrada.data.digits import (
    DigitsSplit,
    RandomAffine,
    load_digits,
    pixel_values,
    to_network_input,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("digits")
    counts = {"train": 20, "test": 10}
    raw_svhn(root / "raw_svhn", counts)
    return {
        "mnist": build("mnist", raw_mnist(root / "raw_mnist", counts), root / "mnist"),
        "usps": build("usps", raw_usps(root / "raw_usps", counts), root / "usps"),
        "svhn": build("svhn", root / "raw_svhn", root / "svhn"),
    }


def test_usps_16_to_28_is_bilinear(built):
    # The documented convention: the whole 16x16 frame resized to 28x28 with PIL's bilinear filter.
    split = load_digits(built["usps"], "train", 28, 1)
    assert split.images.shape == (20, 1, 28, 28) and split.images.dtype == torch.uint8
    raw = digit_images(np.arange(20) % 10, 16, seed=len("train") + 7)  # what the fixture wrote
    # The HDF5 stores x / 255 and the builder rounds it back, so the 16x16 digit is exact.
    expected = np.asarray(Image.fromarray(raw[3]).resize((28, 28), Image.Resampling.BILINEAR))
    assert np.array_equal(split.images[3, 0].numpy(), expected)
    nearest = np.asarray(Image.fromarray(raw[3]).resize((28, 28), Image.Resampling.NEAREST))
    assert not np.array_equal(split.images[3, 0].numpy(), nearest)
    assert split[3]["labels"] == 3 and split.ids[3] == "train_00003"


def test_mnist_to_rgb_32_for_the_dtn(built):
    split = load_digits(built["mnist"], "test", 32, 3)
    assert split.images.shape == (10, 3, 32, 32)
    assert torch.equal(split.images[:, 0], split.images[:, 1]) and torch.equal(
        split.images[:, 0], split.images[:, 2]
    )
    at_28 = load_digits(built["mnist"], "test", 28, 1)
    expected = Image.fromarray(at_28.images[5, 0].numpy()).resize((32, 32), Image.Resampling.BILINEAR)
    assert np.array_equal(split.images[5, 0].numpy(), np.asarray(expected))


def test_svhn_mat_labels_and_channels(built):
    # Official .mat: X 32x32x3xN, y with 10 meaning the digit 0.
    split = load_digits(built["svhn"], "train", 32, 3)
    assert split.labels.tolist() == [i % 10 for i in range(20)]
    assert split.images.shape == (20, 3, 32, 32)
    # channel 2 was 255 - channel 0 in the fixture: RGB order is kept
    assert torch.equal(split.images[:, 2].int(), 255 - split.images[:, 0].int())
    grey = load_digits(built["svhn"], "train", 28, 1)  # RGB -> luma for a grey network
    assert grey.images.shape == (20, 1, 28, 28)


def test_pixel_values_and_views(built):
    split = load_digits(built["usps"], "test", 28, 1, max_samples=4)
    assert len(split) == 4
    item = split[0]
    assert item["pixel_values"].dtype == torch.float32 and item["pixel_values"].shape == (1, 28, 28)
    assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1
    assert torch.allclose(pixel_values(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([-1.0, 1.0]))
    unlabelled = split.without_labels()
    assert "labels" not in unlabelled[0] and unlabelled.ids == split.ids
    sub = split.subset([2, 0], labels=[7, 8], name="easy")
    assert sub.ids == [split.ids[2], split.ids[0]] and sub[0]["labels"] == 7 and sub[1]["index"] == 1
    assert torch.equal(sub.images[0], split.images[2])
    assert sub.image(0).size == (28, 28)


def square(size: int = 28, half: int = 2) -> torch.Tensor:
    """A white square of side 2 * half at the centre of a black (C=1) frame, in pixel values."""
    image = torch.full((1, size, size), -1.0)
    image[:, size // 2 - half : size // 2 + half, size // 2 - half : size // 2 + half] = 1.0
    return image


def test_random_affine_geometry():
    import random

    # Zoom 1.5, no rotation or shift: a 4x4 square becomes 6x6, still centred.
    zoomed = RandomAffine(degrees=0, translate=0, scale=(1.5, 1.5))(square(), random.Random(0))
    assert zoomed.shape == (1, 28, 28) and int((zoomed > 0).sum()) == 36
    rows, cols = (zoomed[0] > 0).nonzero(as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (11, 16, 11, 16)
    # Identity parameters give the image back; a pure shift moves the mass by at most translate * side.
    same = RandomAffine(degrees=0, translate=0, scale=(1, 1))(square(), random.Random(0))
    assert torch.allclose(same, square(), atol=1e-5)
    shifted = RandomAffine(degrees=0, translate=0.1, scale=(1, 1))(square(), random.Random(3))
    centre = ((shifted[0] + 1).nonzero().float().mean(dim=0) - 13.5).abs()
    assert float(centre.max()) <= 2.8 + 1e-4 and float(centre.max()) > 0.1
    # The border repeats: a frame that is background everywhere stays background.
    blank = torch.full((1, 28, 28), -1.0)
    assert torch.allclose(RandomAffine(30, 0.2, (0.7, 1.4))(blank, random.Random(1)), blank, atol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="translate"):
        RandomAffine(translate=1.5)


def test_augmented_split_is_keyed_by_seed_epoch_and_id(built):
    split = load_digits(built["mnist"], "train", 28, 1, max_samples=6)
    augmented = split.augmented(RandomAffine(15, 0.1, (0.8, 1.2)), seed=4)
    first = augmented[2]
    assert first["labels"] == split[2]["labels"] and first["id"] == split.ids[2]
    assert not torch.equal(first["pixel_values"], split[2]["pixel_values"])
    assert torch.equal(augmented[2]["pixel_values"], first["pixel_values"])  # same (seed, epoch, id)
    augmented.set_epoch(1)
    assert not torch.equal(augmented[2]["pixel_values"], first["pixel_values"])
    again = split.augmented(RandomAffine(15, 0.1, (0.8, 1.2)), seed=4)  # another copy, same draws
    assert torch.equal(again[2]["pixel_values"], first["pixel_values"])
    assert torch.equal(augmented.without_labels().images, split.images)  # the stored images never change
    assert augmented.subset([2]).augmentation is None
    assert split.augmented(None, seed=4)[2]["pixel_values"].equal(split[2]["pixel_values"])


def test_errors(tmp_path, built):
    with pytest.raises(FileNotFoundError, match="build it first"):
        load_digits(tmp_path / "missing", "train", 28, 1)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        to_network_input([Image.new("L", (16, 16))], 28, 2)
    with pytest.raises(ValueError, match="max_samples"):
        load_digits(built["usps"], "train", 28, 1, max_samples=0)
    with pytest.raises(ValueError, match="do not match"):
        DigitsSplit(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.zeros(3), ["a", "b"])


def test_real_usps_resize(shared_data, tmp_path):
    """Real USPS digits (16x16 in the shared HDF5) reach the LeNet as 28x28 bilinear resizes."""
    import h5py

    with h5py.File(shared_data / "usps" / "usps.h5", "r") as file:
        data = file["test"]["data"][:5]
    digits16 = [Image.fromarray(np.rint(row.reshape(16, 16) * 255).astype(np.uint8)) for row in data]
    tensor = to_network_input(digits16, 28, 1)
    assert tensor.shape == (5, 1, 28, 28)
    for image, resized in zip(digits16, tensor):
        assert np.array_equal(
            resized[0].numpy(), np.asarray(image.resize((28, 28), Image.Resampling.BILINEAR))
        )
