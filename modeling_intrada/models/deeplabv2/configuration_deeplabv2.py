"""Configuration of DeepLab-v2 (the IntraDA/AdvEnt generator, SPEC section 1)."""

from __future__ import annotations

from transformers import PreTrainedConfig

RESNET_DEPTHS = {"resnet101": (3, 4, 23, 3), "resnet50": (3, 4, 6, 3)}
BN_MODES = ("reference", "frozen")
ATROUS_IMPLEMENTATIONS = ("dilated", "space_to_batch", "space_to_batch_backbone")
TIMM_PREFIX = "timm:"


class DeepLabV2Config(PreTrainedConfig):
    r"""
    Configuration of [`DeepLabV2ForSemanticSegmentation`]: DeepLab-v2 as used by AdvEnt and IntraDA, a
    dilated Caffe-style ResNet at output stride 8 with ASPP classifiers whose four branches are summed.

    Args:
        backbone (`str`, *optional*, defaults to `"resnet101"`):
            `"resnet101"` or `"resnet50"` (Caffe-style bottlenecks: the stride sits on the first 1x1 conv;
            layer3 dilation 2, layer4 dilation 4), or `"timm:<name>"` for any timm model that supports
            `features_only=True` and `output_stride=8` (e.g. `"timm:tf_efficientnet_lite0"`); the ASPP heads then
            sit on its last two feature levels.
        num_labels (`int`, *optional*, defaults to 19):
            Number of classes (19 for GTA5/Synscapes -> Cityscapes, 16 for SYNTHIA). Set `id2label` to name them.
        multi_level (`bool`, *optional*, defaults to `True`):
            Add the auxiliary ASPP head on layer3 (the penultimate feature level). `False` keeps the main head only.
        aspp_dilations (`list[int]`, *optional*, defaults to `[6, 12, 18, 24]`):
            Dilation (and padding) of the 3x3 ASPP branches.
        bn_mode (`str`, *optional*, defaults to `"reference"`):
            `"reference"`: BatchNorm follows the module's train/eval mode, as in the authors' code (batch
            statistics and running-stat updates while training). `"frozen"`: BatchNorm always in eval mode.
            In both modes the BatchNorm affine parameters are never trained.
        aux_loss_weight (`float`, *optional*, defaults to 0.1):
            Weight of the auxiliary head's cross-entropy in the loss returned with `labels`.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value ignored by the loss.
        num_channels (`int`, *optional*, defaults to 3):
            Input channels.
        atrous_implementation (`str`, *optional*, defaults to `"dilated"`):
            How the dilated 3x3 convolutions of layer3, layer4 and the ASPP heads are computed (ResNet backbones
            and the heads). `"dilated"`: one dilated convolution (PyTorch's kernels). `"space_to_batch"`: as
            TensorFlow implements atrous convolution, the padded input is split into `dilation x dilation`
            phase images stacked on the batch axis, convolved densely (dilation 1) and interleaved back. Same
            weights and the same result up to float rounding; which is faster depends on the device's kernels.
            `"space_to_batch_backbone"`: space-to-batch in layer3 and layer4 only, the ASPP dilated (its
            dilations of up to 24 exceed small feature maps, where the phase images are mostly padding).

    Example:

    ```python
    >>> from modeling_intrada import DeepLabV2Config, DeepLabV2ForSemanticSegmentation
    >>> config = DeepLabV2Config(num_labels=19, multi_level=True)
    >>> model = DeepLabV2ForSemanticSegmentation(config)
    ```
    """

    model_type = "deeplabv2"

    backbone: str = "resnet101"
    multi_level: bool = True
    aspp_dilations: list[int] | tuple[int, ...] = (6, 12, 18, 24)
    bn_mode: str = "reference"
    aux_loss_weight: float = 0.1
    semantic_loss_ignore_index: int = 255
    num_channels: int = 3
    atrous_implementation: str = "dilated"

    def __post_init__(self, **kwargs):
        if self.id2label is None and kwargs.get("num_labels") is None:
            kwargs["num_labels"] = 19
        super().__post_init__(**kwargs)
        self.aspp_dilations = [int(d) for d in self.aspp_dilations]
        if not isinstance(self.backbone, str) or not (
            self.backbone in RESNET_DEPTHS
            or (self.backbone.startswith(TIMM_PREFIX) and len(self.backbone) > 5)
        ):
            raise ValueError(
                f"Unknown backbone {self.backbone!r}: expected one of {sorted(RESNET_DEPTHS)} or 'timm:<model name>'."
            )
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {self.num_labels}.")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}.")
        if self.atrous_implementation not in ATROUS_IMPLEMENTATIONS:
            raise ValueError(
                f"atrous_implementation must be one of {ATROUS_IMPLEMENTATIONS}, got {self.atrous_implementation!r}."
            )
        if not self.aspp_dilations:
            raise ValueError("aspp_dilations must list at least one dilation.")

    @property
    def timm_model_name(self) -> str | None:
        """The timm model name when `backbone` is `"timm:<name>"`, else None."""
        return self.backbone[len(TIMM_PREFIX) :] if self.backbone.startswith(TIMM_PREFIX) else None

    @property
    def default_normalization(self) -> str:
        """`"caffe"` for the Caffe ResNets (the reference), `"imagenet"` for timm backbones."""
        return "imagenet" if self.timm_model_name else "caffe"
