"""An independent re-statement of the authors' DeepLab-v2 and discriminator, with their module names.

Written from SPEC sections 1 and 2 (the reference's `ResNetMulti`, `Bottleneck`, `ClassifierModule`,
`get_fc_discriminator`) for tests only: its state dict has the reference key layout (`conv1.weight`,
`layer1.0.downsample.0.weight`, `layer5.conv2d_list.0.weight`, `layer6...`, discriminator `0.weight`), and its
forward is the reference computation, so converted weights must reproduce its logits.
"""

from __future__ import annotations

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
        self.relu = nn.ReLU(inplace=False)
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
        self.relu = nn.ReLU(inplace=False)
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
    import torch

    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=generator)
            m.bias.data = 0.1 * torch.randn(n, generator=generator)
            m.running_mean.data = 0.1 * torch.randn(n, generator=generator)
            m.running_var.data = 0.5 + torch.rand(n, generator=generator)
