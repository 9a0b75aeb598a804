"""An independent re-statement of the authors' DeepLab-v2, discriminator and AdvEnt iteration, with their names.

Written from SPEC sections 1-3 (the reference's `ResNetMulti`, `Bottleneck`, `ClassifierModule`,
`get_fc_discriminator` and the AdvEnt iteration of `train_UDA.py`), in plain PyTorch: no Accelerate, no
transformers. Its state dict has the reference key layout (`conv1.weight`, `layer1.0.downsample.0.weight`,
`layer5.conv2d_list.0.weight`, `layer6...`, discriminator `0.weight`), so the converter tests check that
converted weights reproduce its logits, and `bench_train_step.py --implementation reference` times its
iteration to measure what our Accelerate loop and model wrappers cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RefBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation, bias=False, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class RefClassifierModule(nn.Module):
    def __init__(self, inplanes, dilations, num_classes):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(inplanes, num_classes, 3, stride=1, padding=d, dilation=d, bias=True) for d in dilations
        )
        for m in self.conv2d_list:
            m.weight.data.normal_(0, 0.01)

    def forward(self, x):
        out = self.conv2d_list[0](x)
        for i in range(len(self.conv2d_list) - 1):
            out = out + self.conv2d_list[i + 1](x)
        return out


class RefResNetMulti(nn.Module):
    def __init__(self, layers=(3, 4, 23, 3), num_classes=19, multi_level=True):
        super().__init__()
        self.multi_level = multi_level
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=1, dilation=2)
        self.layer4 = self._make_layer(512, layers[3], stride=1, dilation=4)
        if multi_level:
            self.layer5 = RefClassifierModule(1024, [6, 12, 18, 24], num_classes)
        self.layer6 = RefClassifierModule(2048, [6, 12, 18, 24], num_classes)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4 or dilation == 2 or dilation == 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )
        layers = [RefBottleneck(self.inplanes, planes, stride, dilation=dilation, downsample=downsample)]
        self.inplanes = planes * 4
        layers += [RefBottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.layer3(x)
        aux = self.layer5(x) if self.multi_level else None
        x = self.layer4(x)
        return aux, self.layer6(x)


def ref_fc_discriminator(num_classes: int, ndf: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(num_classes, ndf, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1),
        nn.LeakyReLU(negative_slope=0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=2, padding=1),
    )


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine values, so conversions are really checked."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=generator)
            m.bias.data = 0.1 * torch.randn(n, generator=generator)
            m.running_mean.data = 0.1 * torch.randn(n, generator=generator)
            m.running_var.data = 0.5 + torch.rand(n, generator=generator)


def _prob_2_entropy(prob: torch.Tensor) -> torch.Tensor:
    c = prob.shape[1]
    return -torch.mul(prob, torch.log2(prob + 1e-30)) / math.log2(c)


def _bce(logits: torch.Tensor, label: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


class ReferenceAdvEnt:
    """The authors' AdvEnt iteration on `RefResNetMulti`, step by step as in their training script."""

    def __init__(
        self, model: RefResNetMulti, num_classes: int, lr: float = 2.5e-4, lr_d: float = 1e-4
    ) -> None:
        self.model = model.train()
        self.d_aux, self.d_main = ref_fc_discriminator(num_classes), ref_fc_discriminator(num_classes)
        backbone = [p for n, p in model.named_parameters() if not n.startswith(("layer5", "layer6"))]
        heads = [p for n, p in model.named_parameters() if n.startswith(("layer5", "layer6"))]
        self.optimizer = torch.optim.SGD(
            [{"params": backbone, "lr": lr}, {"params": heads, "lr": 10 * lr}],
            lr=lr,
            momentum=0.9,
            weight_decay=5e-4,
        )
        self.optimizer_d_aux = torch.optim.Adam(self.d_aux.parameters(), lr=lr_d, betas=(0.9, 0.99))
        self.optimizer_d_main = torch.optim.Adam(self.d_main.parameters(), lr=lr_d, betas=(0.9, 0.99))

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.contiguous_format):
        for module in (self.model, self.d_aux, self.d_main):
            module.to(device=device, memory_format=memory_format)
        return self

    def step(self, images_source: torch.Tensor, labels: torch.Tensor, images_target: torch.Tensor) -> float:
        for optimizer in (self.optimizer, self.optimizer_d_aux, self.optimizer_d_main):
            optimizer.zero_grad()
        for p in list(self.d_aux.parameters()) + list(self.d_main.parameters()):
            p.requires_grad = False
        size_s, size_t = images_source.shape[-2:], images_target.shape[-2:]
        pred_src_aux, pred_src_main = self.model(images_source)
        pred_src_aux = F.interpolate(pred_src_aux, size=size_s, mode="bilinear", align_corners=True)
        pred_src_main = F.interpolate(pred_src_main, size=size_s, mode="bilinear", align_corners=True)
        loss_seg = F.cross_entropy(pred_src_main, labels, ignore_index=255) + 0.1 * F.cross_entropy(
            pred_src_aux, labels, ignore_index=255
        )
        loss_seg.backward()
        pred_trg_aux, pred_trg_main = self.model(images_target)
        pred_trg_aux = F.interpolate(pred_trg_aux, size=size_t, mode="bilinear", align_corners=True)
        pred_trg_main = F.interpolate(pred_trg_main, size=size_t, mode="bilinear", align_corners=True)
        d_out_aux = self.d_aux(_prob_2_entropy(F.softmax(pred_trg_aux, dim=1)))
        d_out_main = self.d_main(_prob_2_entropy(F.softmax(pred_trg_main, dim=1)))
        loss_adv = 0.0002 * _bce(d_out_aux, 0.0) + 0.001 * _bce(d_out_main, 0.0)
        loss_adv.backward()
        for p in list(self.d_aux.parameters()) + list(self.d_main.parameters()):
            p.requires_grad = True
        pred_src_aux, pred_src_main = pred_src_aux.detach(), pred_src_main.detach()
        loss_d_aux = _bce(self.d_aux(_prob_2_entropy(F.softmax(pred_src_aux, dim=1))), 0.0) / 2
        loss_d_main = _bce(self.d_main(_prob_2_entropy(F.softmax(pred_src_main, dim=1))), 0.0) / 2
        (loss_d_aux + loss_d_main).backward()
        pred_trg_aux, pred_trg_main = pred_trg_aux.detach(), pred_trg_main.detach()
        loss_d_aux = _bce(self.d_aux(_prob_2_entropy(F.softmax(pred_trg_aux, dim=1))), 1.0) / 2
        loss_d_main = _bce(self.d_main(_prob_2_entropy(F.softmax(pred_trg_main, dim=1))), 1.0) / 2
        (loss_d_aux + loss_d_main).backward()
        self.optimizer.step()
        self.optimizer_d_aux.step()
        self.optimizer_d_main.step()
        return 0.0
