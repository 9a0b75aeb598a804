"""Any per-pixel segmentation model of transformers as G: how the method reads it.

G is DeepLab-v2 (this project's model) or any `AutoModelForSemanticSegmentation` model whose output is
per-pixel class logits: SegFormer, UperNet (ConvNeXt, Swin, ... backbones), DPT, BEiT, Data2Vec-vision,
MobileViT and MobileViTV2 (DeepLab-v3 heads), MobileNetV2 (DeepLab-v3). What the method needs of each:

- its output levels: the main logits always; the auxiliary head's logits as a second level where the family
  has one (`AUXILIARY_HEADS`: UperNet, BEiT, Data2Vec-vision and DPT with `use_auxiliary_head`; DeepLab-v2's
  layer3 ASPP). transformers computes those auxiliary logits only for its loss, so `expose_auxiliary_logits`
  hooks the head and adds them to the output as `aux_logits`, the name DeepLab-v2 uses;
- its parameter groups: the encoder (the attribute named by `base_model_prefix`, or `backbone` for UperNet)
  at the base learning rate, everything else (decode head, neck, auxiliary head) at the head multiplier;
- its normalisation layers: the encoder's BatchNorm layers get DeepLab-v2's treatment (affine parameters never
  trained; `bn_mode="frozen"` keeps them in eval mode). LayerNorm and GroupNorm have no batch statistics and
  train as any other parameter;
- its upsampling convention: DeepLab-v2 upsamples with `align_corners=True` (the reference), transformers'
  models with `align_corners=False` (their own loss and post-processing);
- its image processor, whose pixel normalisation must be one of `NORMALIZATIONS_BY_NAME`;
- its classes, matched to the run's by name (`align_classes`).

Models that predict a set of masks with class scores (MaskFormer, Mask2Former, OneFormer, EoMT) are refused:
their per-pixel class scores are a product of mask and class probabilities that does not sum to one over the
classes, so the entropy the method ranks and aligns has no meaning on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.models.auto.image_processing_auto import (
    IMAGE_PROCESSOR_MAPPING_NAMES,
    get_image_processor_class_from_name,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

from modeling_intrada.errors import UsageError
from modeling_intrada.labels import class_name_table
from modeling_intrada.models.deeplabv2.image_processing_deeplabv2 import DeepLabV2ImageProcessor
from modeling_intrada.models.deeplabv2.image_transforms import NORMALIZATIONS_BY_NAME

DEEPLABV2 = "deeplabv2"
MASK_MODEL_TYPES = ("maskformer", "mask2former", "oneformer", "eomt")
# The families whose auxiliary head forms a second output level (when the config enables it).
AUXILIARY_HEADS = {
    "upernet": "auxiliary_head",
    "beit": "auxiliary_head",
    "data2vec-vision": "auxiliary_head",
    "dpt": "auxiliary_head",
}


def model_type_of(model_or_config: PreTrainedModel | PreTrainedConfig | Mapping[str, Any]) -> str:
    """The `model_type` of a model, a config or a config dict (a wrapped model is unwrapped)."""
    if isinstance(model_or_config, Mapping):
        return str(model_or_config.get("model_type"))
    config = getattr(unwrap(model_or_config), "config", model_or_config)
    return str(getattr(config, "model_type", None))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def supported_model_types() -> list[str]:
    """Every model type G may have: DeepLab-v2 and transformers' semantic-segmentation models."""
    return [DEEPLABV2, *MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES]


def check_segmenter(
    model_or_config: PreTrainedModel | PreTrainedConfig | Mapping[str, Any], where: str
) -> str:
    """Refuse a model that does not predict per-pixel class logits; returns its model type."""
    model_type = model_type_of(model_or_config)
    if model_type in MASK_MODEL_TYPES:
        raise UsageError(
            f"{where}: a {model_type!r} model predicts a set of masks with class scores, not per-pixel class "
            "logits whose entropy the method ranks and aligns; use a per-pixel segmenter (SegFormer, UperNet, "
            "DPT, BEiT, MobileViT, DeepLab-v2)"
        )
    if model_type not in supported_model_types():
        raise UsageError(
            f"{where}: a {model_type!r} model is not a semantic-segmentation model; expected one of "
            f"{', '.join(supported_model_types())}"
        )
    return model_type


def uses_align_corners(model: nn.Module) -> bool:
    """How the model's logits are upsampled to the label size: DeepLab-v2 as the reference (True),
    transformers' models as their own loss and post-processing do (False)."""
    return model_type_of(model) not in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES


# --------------------------------------------------------------------------------------------- levels
def auxiliary_head(model: nn.Module) -> nn.Module | None:
    """The auxiliary head that forms a second level, or None (DeepLab-v2 returns its own `aux_logits`)."""
    name = AUXILIARY_HEADS.get(model_type_of(model))
    head = getattr(unwrap(model), name, None) if name else None
    return head if isinstance(head, nn.Module) else None


def has_auxiliary_level(model_or_config: nn.Module | Mapping[str, Any]) -> bool:
    """Whether a model, or a saved model's config dict, has a second output level: DeepLab-v2 with
    `multi_level`, or a family of `AUXILIARY_HEADS` with `use_auxiliary_head` (its head exists only then)."""
    if isinstance(model_or_config, Mapping):
        config = model_or_config
    else:
        config = unwrap(model_or_config).config.to_dict()
    if config.get("model_type") == DEEPLABV2:
        return bool(config.get("multi_level", True))
    return config.get("model_type") in AUXILIARY_HEADS and bool(config.get("use_auxiliary_head"))


def expose_auxiliary_logits(model: nn.Module) -> None:
    """Make `model(...)` return its auxiliary head's logits as `aux_logits` (once per model)."""
    head = auxiliary_head(model)
    if head is None or getattr(model, "_exposes_aux_logits", False):
        return
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        captured["aux_logits"] = output

    def add(module: nn.Module, inputs: Any, output: Any) -> Any:
        aux_logits = captured.pop("aux_logits", None)
        if aux_logits is not None and not isinstance(output, tuple):
            output["aux_logits"] = aux_logits
        return output

    head.register_forward_hook(keep)
    model.register_forward_hook(add)
    model._exposes_aux_logits = True


# ---------------------------------------------------------------------------------- training set-up
def encoder_name(model: nn.Module) -> str:
    """The attribute holding the encoder: `base_model_prefix` (segformer, beit, dpt, mobilevit, ...) or
    `backbone` (UperNet, DeepLab-v2)."""
    inner = unwrap(model)
    for name in (getattr(inner, "base_model_prefix", ""), "backbone"):
        if name and isinstance(getattr(inner, name, None), nn.Module):
            return name
    raise UsageError(
        f"a {model_type_of(inner)!r} model has no encoder attribute ({inner.base_model_prefix!r} or 'backbone'): "
        "its parameters cannot be split into encoder and heads"
    )


def prepare_generator(model: PreTrainedModel, bn_mode: str = "reference", multi_level: bool = True) -> None:
    """Set G up for training, after it was built or loaded (loading replaces parameters, so call it again).

    The encoder's BatchNorm affine parameters are frozen; `bn_mode="frozen"` keeps those layers in eval mode
    whatever `train()` says; without `multi_level` an auxiliary head is frozen (it is computed but feeds no
    loss). DeepLab-v2 does all of this itself, from its config.
    """
    if model_type_of(model) == DEEPLABV2:
        return
    encoder = getattr(model, encoder_name(model))
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        for parameter in module.parameters(recurse=False):
            parameter.requires_grad_(False)
    if bn_mode == "frozen" and norms and not getattr(model, "_frozen_batch_norm", False):

        def keep_in_eval(module: nn.Module, inputs: Any) -> None:
            for norm in norms:
                norm.eval()

        model.register_forward_pre_hook(keep_in_eval)
        model._frozen_batch_norm = True
    head = auxiliary_head(model)
    if head is not None and not multi_level:
        head.requires_grad_(False)
    expose_auxiliary_logits(model)


def generator_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    head_lr_multiplier: float = 10.0,
    reference_duplicates: bool = False,
) -> list[dict]:
    """G's optimizer groups, each with its `lr_multiplier`: the model's own `parameter_groups` (DeepLab-v2),
    else encoder at `learning_rate` and the rest at `head_lr_multiplier` x for a segmenter, else one group."""
    inner = unwrap(model)
    if hasattr(inner, "parameter_groups"):
        return inner.parameter_groups(
            learning_rate, head_lr_multiplier, reference_duplicates=reference_duplicates
        )
    trainable = [(name, p) for name, p in inner.named_parameters() if p.requires_grad]
    if model_type_of(inner) not in MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES:
        return [{"params": [p for _, p in trainable], "lr_multiplier": 1.0}]
    encoder = encoder_name(inner)
    in_encoder = [p for name, p in trainable if name.split(".")[0] == encoder]
    heads = [p for name, p in trainable if name.split(".")[0] != encoder]
    return [
        {"params": in_encoder, "lr": learning_rate, "lr_multiplier": 1.0, "name": "encoder"},
        {
            "params": heads,
            "lr": learning_rate * head_lr_multiplier,
            "lr_multiplier": head_lr_multiplier,
            "name": "heads",
        },
    ]


# --------------------------------------------------------------------------------------------- classes
def model_class_names(config: PreTrainedConfig | Mapping[str, Any]) -> list[str]:
    """The model's class names in id order."""
    id2label = config.get("id2label") if isinstance(config, Mapping) else config.id2label
    return [str(v) for _, v in sorted((int(k), v) for k, v in (id2label or {}).items())]


def class_permutation(model_names: Sequence[str], run_names: Sequence[str], where: str) -> list[int] | None:
    """For each of the run's classes, the model's index of the class of that name; None when the order is
    already the run's. Refuses, naming them, classes that do not match."""
    order, extra = class_name_table(run_names, model_names)
    _, missing = class_name_table(model_names, run_names)
    if missing or extra or len(model_names) != len(run_names):
        raise UsageError(
            f"{where}: the model's {len(model_names)} classes do not match the run's {len(run_names)} by name "
            f"(the model lacks {missing}, the run lacks {extra}): pass --label_space with the model's classes, "
            "or a model trained on the run's"
        )
    permutation = [order[i] for i in range(len(run_names))]
    return None if permutation == list(range(len(permutation))) else permutation


def _class_layers(model: nn.Module, num_labels: int) -> list[nn.Module]:
    encoder = encoder_name(model)
    return [
        module
        for name, module in model.named_modules()
        if name.split(".")[0] != encoder
        and (
            (isinstance(module, nn.Conv2d) and module.out_channels == num_labels)
            or (isinstance(module, nn.Linear) and module.out_features == num_labels)
        )
    ]


@torch.no_grad()
def align_classes(model: PreTrainedModel, run_names: Sequence[str], where: str) -> PreTrainedModel:
    """Put the model's classes in the run's order, matched by name: the layers that output the classes are
    permuted and `id2label` rewritten; a model whose logits then are not its old logits reordered (a layer
    that mixes classes after them) is refused. Refuses models whose class names differ from the run's."""
    order = class_permutation(model_class_names(model.config), run_names, where)
    if order is None:
        return model
    layers = _class_layers(model, len(order))
    was_training = model.training
    model.eval()
    # At the model's own image size where it has one: some position encodings do not resize.
    side = getattr(model.config, "image_size", 64)
    side = side if isinstance(side, int) else 64
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, getattr(model.config, "num_channels", 3), side, side, generator=generator)
    probe = probe.to(next(model.parameters()).device)
    before = model(pixel_values=probe).logits[:, order]
    for layer in layers:
        layer.weight.copy_(layer.weight[order])
        if layer.bias is not None:
            layer.bias.copy_(layer.bias[order])
    after = model(pixel_values=probe).logits
    model.train(was_training)
    if not layers or not torch.allclose(
        after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()) + 1e-6
    ):
        raise UsageError(
            f"{where}: its classes are the run's in another order, and reordering its class layers did not "
            "reorder its logits; save it with id2label in the run's order"
        )
    model.config.id2label = dict(enumerate(run_names))
    model.config.label2id = {name: i for i, name in enumerate(run_names)}
    return model


# ------------------------------------------------------------------------------------ image processors
def image_processor_class(model_type: str) -> type:
    """The family's image processor (PIL backend: the project resizes with PIL)."""
    if model_type == DEEPLABV2:
        return DeepLabV2ImageProcessor
    names = IMAGE_PROCESSOR_MAPPING_NAMES.get(model_type)
    name = (names.get("pil") or names.get("torchvision")) if isinstance(names, Mapping) else names
    if not name:
        raise UsageError(f"a {model_type!r} model has no image processor in transformers")
    return get_image_processor_class_from_name(name)


def normalization_of(processor: Any, where: str) -> str:
    """The name of the normalisation (`NORMALIZATIONS_BY_NAME`) that does what `processor` does to pixel
    values; refuses a processor that matches none."""
    if isinstance(processor, DeepLabV2ImageProcessor):
        return processor.normalization
    divisor = 1.0 / processor.rescale_factor if getattr(processor, "do_rescale", False) else 1.0
    normalize = bool(getattr(processor, "do_normalize", False))
    mean = tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0)
    std = tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0)
    bgr = bool(getattr(processor, "do_flip_channel_order", False))
    for name, rule in NORMALIZATIONS_BY_NAME.items():
        if (
            rule.bgr == bgr
            and np.isclose(rule.divisor, divisor, rtol=1e-6)
            and np.allclose(rule.mean, mean, atol=1e-6)
            and np.allclose(rule.std, std, atol=1e-6)
        ):
            return name
    raise UsageError(
        f"{where}: its image processor divides by {divisor:g}, subtracts {list(mean)} and divides by {list(std)}"
        f"{' (BGR)' if bgr else ''}, which none of this project's normalisations ({', '.join(NORMALIZATIONS_BY_NAME)}) "
        "does; pass a model whose processor uses one of them"
    )


def processor_for_run(processor: Any, size: Sequence[int]) -> Any:
    """A transformers image processor set to the run's input, for a saved G: resized to `size` = (height,
    width), bicubic as the project's data, without a centre crop, padding or label reduction; its
    normalisation is kept."""
    settings = processor.to_dict()
    settings.update(size={"height": int(size[0]), "width": int(size[1])}, resample=3)
    for option in ("do_center_crop", "do_reduce_labels", "do_pad"):
        if option in settings:
            settings[option] = False
    settings.pop("image_processor_type", None)
    return type(processor)(**{k: v for k, v in settings.items() if not k.startswith("_")})
