"""Convert the authors' checkpoints (ADVENT / IntraDA / AdaptSegNet, torch 0.4 era) into `from_pretrained` folders.

Three kinds of file, detected from their keys (SPEC sections 1 and 2):

- a generator: `conv1.weight`, `layer1..4.*`, ASPP heads `layer5.conv2d_list.*` (aux, 1024 input channels) and
  `layer6.conv2d_list.*` (main); AdaptSegNet's single-level model keeps its main head in `layer5` (2048 inputs);
- the DeepLab ImageNet init: keys prefixed `Scale.`; its ASPP weights are skipped and the heads get the
  reference init;
- a discriminator: a Sequential's `0.weight, 0.bias, 2.*, 4.*, 6.*, 8.*`.

Every file is read with `weights_only=True`, every key and shape checked; anything missing or unexpected is
refused with the list of offending keys. Usage::

    python -m modeling_intrada.models.deeplabv2.convert_reference_checkpoint \\
        --checkpoint gta2cityscapes_advent.pth --output_dir intrada-advent-gta5 [--num_labels 19] [--single_level]
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import torch

from modeling_intrada.atomic import atomic_folder
from modeling_intrada.labels import get_label_space
from modeling_intrada.models.fc_discriminator.configuration_fc_discriminator import FCDiscriminatorConfig
from modeling_intrada.models.fc_discriminator.modeling_fc_discriminator import FCDiscriminator

from .backbone_weights import check_state_dict, load_state_dict_file, strip_prefix, unwrap_state_dict
from .configuration_deeplabv2 import DeepLabV2Config
from .image_processing_deeplabv2 import DeepLabV2ImageProcessor
from .modeling_deeplabv2 import DeepLabV2ForSemanticSegmentation

KINDS = ("auto", "generator", "imagenet", "discriminator")
_HEAD_KEY = re.compile(r"^(layer5|layer6)\.conv2d_list\.(\d+)\.(weight|bias)$")
_DISCRIMINATOR_KEY = re.compile(r"^\d+\.(weight|bias)$")
_DEFAULT_LABEL_SPACES = {19: "cityscapes", 16: "synthia16", 13: "synthia13", 11: "camvid"}


def detect_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    """`"discriminator"`, `"imagenet"` (`Scale.` prefix) or `"generator"`, from the keys alone."""
    keys = list(state_dict)
    if keys and all(_DISCRIMINATOR_KEY.match(key) for key in keys):
        return "discriminator"
    if keys and all(key.startswith("Scale.") for key in keys):
        return "imagenet"
    if any(key.startswith("conv1.") or key.startswith("layer1.") for key in keys):
        return "generator"
    raise ValueError(
        "Unrecognised checkpoint layout: expected DeepLab-v2 keys (conv1.weight, layer1.0.conv1.weight, "
        "layer6.conv2d_list.0.weight, ...), `Scale.`-prefixed ImageNet-init keys, or discriminator keys "
        f"(0.weight, 2.weight, ...); got e.g. {keys[:5]}"
    )


def _resnet_depth(state_dict: Mapping[str, torch.Tensor]) -> str:
    blocks = {int(m.group(1)) for key in state_dict if (m := re.match(r"^layer3\.(\d+)\.", key))}
    count = max(blocks) + 1 if blocks else 0
    if count == 23:
        return "resnet101"
    if count == 6:
        return "resnet50"
    raise ValueError(f"layer3 has {count} blocks: expected 23 (ResNet-101) or 6 (ResNet-50)")


def convert_generator_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    num_labels: int | None = None,
    single_level: bool | None = None,
) -> tuple[dict[str, torch.Tensor], DeepLabV2Config]:
    """Rename a reference generator state dict to this project's keys and derive its configuration.

    `num_labels` and `single_level`, when given, are checked against what the checkpoint holds.
    """
    converted: dict[str, torch.Tensor] = {}
    heads: dict[str, int] = {}
    for key, tensor in state_dict.items():
        match = _HEAD_KEY.match(key)
        if match is None:
            converted[f"backbone.{key}"] = tensor
            continue
        layer, index, kind = match.groups()
        if kind == "weight":
            heads[layer] = tensor.shape[1]
        # ADVENT: layer5 = aux (layer3, 1024 channels), layer6 = main. AdaptSegNet single-level: layer5 = main.
        converted[f"{layer}:{index}.{kind}"] = tensor
    head_names = {}
    if "layer6" in heads:
        head_names = {"layer6": "main_head", "layer5": "aux_head"}
    elif heads.get("layer5") == 2048:
        head_names = {"layer5": "main_head"}
    elif "layer5" in heads:
        raise ValueError("the checkpoint has an auxiliary head (layer5) but no main head (layer6)")
    else:
        raise ValueError(
            "the checkpoint has no ASPP head (layer5/layer6.conv2d_list.*): is it an ImageNet init?"
        )
    renamed = {}
    for key, tensor in converted.items():
        if ":" in key:
            layer, rest = key.split(":", 1)
            renamed[f"{head_names[layer]}.convs.{rest}"] = tensor
        else:
            renamed[key] = tensor

    found_labels = int(renamed["main_head.convs.0.weight"].shape[0])
    if num_labels is not None and num_labels != found_labels:
        raise ValueError(
            f"--num_labels {num_labels} given, but the checkpoint's heads predict {found_labels} classes"
        )
    has_aux = "aux_head.convs.0.weight" in renamed
    if single_level and has_aux:
        raise ValueError(
            "--single_level given, but the checkpoint has an auxiliary head (layer5 on 1024 channels): "
            "unexpected keys layer5.conv2d_list.*"
        )
    if single_level is False and not has_aux:
        raise ValueError(
            "a multi-level model was asked for, but the checkpoint has no auxiliary head (layer5)"
        )
    config = _generator_config(
        _resnet_depth(state_dict), found_labels, multi_level=has_aux, dilations=_head_dilations(renamed)
    )
    return renamed, config


def _head_dilations(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    count = len([key for key in state_dict if re.match(r"^main_head\.convs\.\d+\.weight$", key)])
    if count != 4:
        raise ValueError(
            f"the main ASPP head has {count} branches; DeepLab-v2 has 4 (dilations 6, 12, 18, 24)"
        )
    return [6, 12, 18, 24]


def _generator_config(
    backbone: str, num_labels: int, multi_level: bool, dilations: list[int]
) -> DeepLabV2Config:
    space = _DEFAULT_LABEL_SPACES.get(num_labels)
    id2label = get_label_space(space).id2label if space else {i: f"class_{i}" for i in range(num_labels)}
    return DeepLabV2Config(
        backbone=backbone, id2label=id2label, multi_level=multi_level, aspp_dilations=dilations
    )


def _fill_batch_counters(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    # Checkpoints saved before torch 0.4.1 have no BatchNorm `num_batches_tracked`; it is unused by eval.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = torch.zeros_like(value)


def load_generator(
    state_dict: Mapping[str, torch.Tensor], num_labels: int | None = None, single_level: bool | None = None
) -> DeepLabV2ForSemanticSegmentation:
    """Build a [`DeepLabV2ForSemanticSegmentation`] holding a reference generator's weights (strict)."""
    converted, config = convert_generator_state_dict(state_dict, num_labels, single_level)
    model = DeepLabV2ForSemanticSegmentation(config)
    _fill_batch_counters(converted, model)
    check_state_dict(converted, model.state_dict(), "generator checkpoint")
    model.load_state_dict(converted, strict=True)
    return model.eval()


def load_imagenet_init(
    state_dict: Mapping[str, torch.Tensor], num_labels: int = 19, single_level: bool = False
) -> DeepLabV2ForSemanticSegmentation:
    """A fresh model whose backbone holds the reference ImageNet init (`Scale.` keys; its ASPP is skipped)."""
    stripped = strip_prefix(state_dict, "Scale.")
    space = _DEFAULT_LABEL_SPACES.get(num_labels)
    id2label = get_label_space(space).id2label if space else {i: f"class_{i}" for i in range(num_labels)}
    model = DeepLabV2ForSemanticSegmentation(
        DeepLabV2Config(backbone=_resnet_depth(stripped), id2label=id2label, multi_level=not single_level)
    )
    backbone = {
        key: value for key, value in stripped.items() if not key.startswith(("layer5.", "layer6.", "fc."))
    }
    _fill_batch_counters(backbone, model.backbone)
    model.load_backbone_weights(backbone)
    return model.eval()


def convert_discriminator_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], FCDiscriminatorConfig]:
    """Rename a reference discriminator (`0.weight`, ...) to [`FCDiscriminator`] keys and derive its config."""
    if "0.weight" not in state_dict:
        raise ValueError(
            f"discriminator checkpoint has no first conv '0.weight'; keys: {list(state_dict)[:6]}"
        )
    first = state_dict["0.weight"]
    config = FCDiscriminatorConfig(num_channels=int(first.shape[1]), ndf=int(first.shape[0]))
    return {f"layers.{key}": value for key, value in state_dict.items()}, config


def load_discriminator(state_dict: Mapping[str, torch.Tensor]) -> FCDiscriminator:
    """Build an [`FCDiscriminator`] holding a reference discriminator's weights (strict)."""
    converted, config = convert_discriminator_state_dict(state_dict)
    model = FCDiscriminator(config)
    check_state_dict(converted, model.state_dict(), "discriminator checkpoint")
    model.load_state_dict(converted, strict=True)
    return model.eval()


def convert_checkpoint(
    checkpoint: str | PathLike | Mapping[str, torch.Tensor],
    output_dir: str | PathLike,
    num_labels: int | None = None,
    single_level: bool | None = None,
    kind: str = "auto",
    image_size: tuple[int, int] = (512, 1024),
) -> Path:
    """Convert one reference checkpoint into `output_dir` (safetensors + config + image processor).

    Returns the output folder; it loads with `AutoModelForSemanticSegmentation.from_pretrained` (generators)
    or `AutoModel.from_pretrained` (discriminators) after `import modeling_intrada`, or with
    `trust_remote_code=True` without it.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if (
        Path(output_dir).is_dir()
        and any(Path(output_dir).iterdir())
        and not (Path(output_dir) / "config.json").is_file()
    ):
        raise ValueError(
            f"--output_dir {output_dir} holds files but no saved model (config.json): it would be replaced; "
            "pick a new or empty folder, or a folder of an earlier conversion"
        )
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ValueError(
            f"--output_dir {output_dir} is a file: expected a folder (new or existing); pick another path"
        )
    if isinstance(checkpoint, Mapping):
        state_dict = unwrap_state_dict(checkpoint)
    else:
        state_dict = load_state_dict_file(checkpoint)
    if kind == "auto":
        kind = detect_kind(state_dict)
    output_dir = Path(output_dir)
    if kind == "discriminator":
        model = load_discriminator(state_dict)
    elif kind == "imagenet":
        model = load_imagenet_init(state_dict, num_labels or 19, bool(single_level))
    else:
        model = load_generator(strip_prefix(state_dict, "Scale."), num_labels, single_level)
    # Whole or not at all: written beside output_dir, renamed into place (an earlier conversion stays
    # readable until then).
    with atomic_folder(output_dir) as staging:
        model.save_pretrained(staging)
        if kind != "discriminator":
            height, width = image_size
            DeepLabV2ImageProcessor(
                size={"height": height, "width": width}, normalization="caffe"
            ).save_pretrained(staging)
    return output_dir


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the authors' .pth file")
    parser.add_argument("--output_dir", required=True, help="folder to write (save_pretrained layout)")
    parser.add_argument(
        "--num_labels", type=int, default=None, help="check the heads predict this many classes"
    )
    parser.add_argument("--single_level", action="store_true", help="expect no auxiliary head")
    parser.add_argument("--kind", choices=KINDS, default="auto", help="override the detected checkpoint kind")
    parser.add_argument(
        "--image_size",
        type=int,
        nargs=2,
        default=(512, 1024),
        metavar=("HEIGHT", "WIDTH"),
        help="input size written into the image processor (default: Cityscapes 512 1024)",
    )
    args = parser.parse_args(argv)
    try:
        output = convert_checkpoint(
            args.checkpoint,
            args.output_dir,
            num_labels=args.num_labels,
            single_level=True if args.single_level else None,
            kind=args.kind,
            image_size=tuple(args.image_size),
        )
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"Converted {args.checkpoint} -> {output}")


if __name__ == "__main__":
    main()
