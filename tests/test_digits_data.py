"""training/digits_data.py: built digits datasets to network inputs (USPS 16x16 -> 28x28, SVHN, MNIST -> RGB 32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from digits_data import DigitsSplit, load_digits, pixel_values, to_network_input
from digits_fixtures import build, digit_images, raw_mnist, raw_svhn, raw_usps
from PIL import Image


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
