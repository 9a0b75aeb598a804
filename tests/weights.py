"""Round-trip checks: weights compare exactly; outputs are compared with a tolerance by the tests, since
two buffers with the same values may take different BLAS paths (alignment) and differ in the last bit."""

from __future__ import annotations

import torch


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    """Every parameter and buffer of `actual` equals `expected`'s bit for bit, under the same names."""
    ours, theirs = expected.state_dict(), actual.state_dict()
    assert ours.keys() == theirs.keys(), sorted(set(ours) ^ set(theirs))
    for name, tensor in ours.items():
        assert torch.equal(tensor, theirs[name]), name
