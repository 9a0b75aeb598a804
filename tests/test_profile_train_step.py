"""benchmarks/profile_train_step.py: the operator -> family table, and the harness on a tiny step (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(33, 41), (25, 33)]


@pytest.fixture
def profiler_module(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the scripts import their siblings
    import profile_train_step

    return profile_train_step


def conv(name: str, weight: list[int], padding: int, dilation: int):
    shapes = [[1, weight[1], 33, 41], weight, [weight[0]]]
    arguments = [None, None, None, [1, 1], [padding, padding], [dilation, dilation], False, [0, 0], 1]
    if name == "aten::convolution_backward":
        shapes, arguments = [[1, weight[0], 33, 41], *shapes], [None, *arguments]
    return shapes, arguments


@pytest.mark.parametrize(
    ("name", "weight", "padding", "dilation", "family"),
    [
        ("aten::convolution", [256, 256, 3, 3], 2, 2, "dilated_conv_forward"),
        ("aten::convolution_backward", [512, 512, 3, 3], 4, 4, "dilated_conv_backward"),
        ("aten::convolution", [19, 2048, 3, 3], 0, 1, "dilated_conv_forward"),  # a space-to-batch phase conv
        ("aten::convolution", [64, 3, 7, 7], 3, 1, "dense_conv_forward"),
        ("aten::convolution_backward", [256, 64, 1, 1], 0, 1, "dense_conv_backward"),
        ("aten::convolution", [64, 19, 4, 4], 1, 1, "discriminator_conv"),
        ("aten::convolution_backward", [1, 512, 4, 4], 1, 1, "discriminator_conv"),
    ],
)
def test_convolutions_are_told_apart_by_kernel_dilation_and_padding(
    profiler_module, name, weight, padding, dilation, family
):
    shapes, arguments = conv(name, weight, padding, dilation)
    op = profiler_module.Op(name, shapes, arguments)
    assert profiler_module.family_of(op, SIZES) == family


@pytest.mark.parametrize(
    ("name", "shapes", "context", "family"),
    [
        ("aten::native_batch_norm", [[1, 64, 17, 21]], (), "batch_norm"),
        ("aten::cudnn_batch_norm_backward", [[1, 64, 17, 21]], (), "batch_norm"),
        ("aten::upsample_bilinear2d", [[1, 19, 5, 6]], (), "full_resolution_maps"),
        ("aten::_softmax", [[1, 19, 33, 41]], (), "full_resolution_maps"),
        ("aten::log2", [[1, 19, 25, 33]], (), "full_resolution_maps"),
        ("aten::mul", [[1, 19, 5, 6]], (), None),  # a map below full resolution: look inside / other
        ("aten::add_", [[64]], ("Optimizer.step#SGD.step",), "optimizer"),
        ("aten::_fused_adam_", [], (), "optimizer"),
        ("aten::_foreach_mul_", [], (), "optimizer"),
        ("aten::_to_copy", [[1, 64, 17, 21]], (), "dtype_casts"),
        ("aten::copy_", [[1, 64, 17, 21]], (), "copies_and_layout"),
        ("aten::constant_pad_nd", [[1, 256, 5, 6]], (), "copies_and_layout"),
        ("triton_poi_fused_mul_0", [], (), "compiled_kernels"),
        ("aten::relu_", [[1, 64, 17, 21]], (), None),
    ],
)
def test_other_operators_map_to_their_family(profiler_module, name, shapes, context, family):
    assert profiler_module.family_of(profiler_module.Op(name, shapes, (), context), SIZES) == family


def test_every_family_is_documented(profiler_module):
    assert set(profiler_module.FAMILIES) >= {
        "dilated_conv_forward", "dilated_conv_backward", "batch_norm", "full_resolution_maps",
        "discriminator_conv", "optimizer", "dtype_casts", "copies_and_layout", "idle",
    }  # fmt: skip
    assert all(description for description in profiler_module.FAMILIES.values())


def profile(*options: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "profile_train_step.py"), "--backbone", "resnet50",
         "--num_labels", "5", "--source_size", "65", "81", "--target_size", "49", "65", "--threads", "1",
         "--warmup", "1", "--steps", "1", "--device", "cpu", *options],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and "| family | ms per step |" in result.stdout
    return lines[0]


@pytest.mark.parametrize("options", [(), ("--atrous_implementation", "space_to_batch", "--label", "s2b")])
def test_the_harness_profiles_a_tiny_step(options):
    row = profile(*options)
    families = row["families_ms"]
    assert list(families) == [
        "dilated_conv_forward", "dilated_conv_backward", "dense_conv_forward", "dense_conv_backward",
        "batch_norm", "full_resolution_maps", "discriminator_conv", "optimizer", "dtype_casts",
        "copies_and_layout", "compiled_kernels", "other", "idle",
    ]  # fmt: skip
    for family in ("dilated_conv_forward", "dilated_conv_backward", "dense_conv_forward", "batch_norm",
                   "full_resolution_maps", "discriminator_conv", "optimizer"):  # fmt: skip
        assert families[family] > 0, family
    # Every microsecond of the profiled steps is in one family, idle included.
    assert sum(families.values()) == pytest.approx(row["profiled_step_ms"], rel=0.05)
    assert row["atrous_implementation"] == ("space_to_batch" if options else "dilated")
    if options:
        assert row["label"] == "s2b" and families["copies_and_layout"] > 0  # the phase images are copies
