"""DeepLab-v2 (Chen et al., 2017) for ``spl train``: a dilated ResNet (output stride 8) and an ASPP head
of four parallel 3x3 convolutions (rates 6, 12, 18, 24) whose outputs are summed.

Written here (torchvision is not on every machine). Module names follow torchvision's ResNet
(``conv1``, ``bn1``, ``layer1`` .. ``layer4``, blocks with ``conv1``/``bn1``/.../``downsample.0/1``), so an
ImageNet state dict of ``torchvision.models.resnet50/101`` loads into ``model.backbone`` as it is:
``load_backbone(model, path)`` takes such a file (a plain state dict, or a dict holding one under
``state_dict`` or ``model``), drops the classifier (``fc.*``) and a ``module.`` or ``backbone.`` prefix,
and reports missing or unexpected keys. Batch norm is frozen (eval mode, no gradient), as in
DeepLab-v2's training with small batches.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = ("deeplabv2-resnet101", "deeplabv2-resnet50", "deeplabv2-resnet18", "deeplabv2-tiny")


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class DilatedResNet(nn.Module):
    """ResNet with strides 2 of layer3 and layer4 replaced by dilations 2 and 4 (output stride 8)."""

    def __init__(self, block, layers: List[int], width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(block, width, layers[0])
        self.layer2 = self._layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._layer(block, 4 * width, layers[2], dilation=2)
        self.layer4 = self._layer(block, 8 * width, layers[3], dilation=4)
        self.out_channels = 8 * width * block.expansion

    def _layer(self, block, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ASPP(nn.Module):
    """DeepLab-v2's head: the sum of four 3x3 convolutions with dilation rates 6, 12, 18, 24."""

    def __init__(self, in_channels, num_classes, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        return sum(branch(x) for branch in self.branches)


class DeepLabV2(nn.Module):
    def __init__(self, backbone: DilatedResNet, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = ASPP(backbone.out_channels, num_classes)

    def forward(self, x):
        """Logits at 1/8 of the input size."""
        return self.classifier(self.backbone(x))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():  # frozen batch norm
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def param_groups(self, lr: float):
        """DeepLab's learning rates: the backbone at lr, the new head at 10 lr (biases too)."""
        backbone = [p for n, p in self.backbone.named_parameters() if p.requires_grad]
        return [{"params": backbone, "lr": lr}, {"params": list(self.classifier.parameters()), "lr": 10 * lr}]


def build_model(name: str, num_classes: int) -> DeepLabV2:
    specs = {
        "deeplabv2-resnet101": (Bottleneck, [3, 4, 23, 3], 64),
        "deeplabv2-resnet50": (Bottleneck, [3, 4, 6, 3], 64),
        "deeplabv2-resnet18": (BasicBlock, [2, 2, 2, 2], 64),
        "deeplabv2-tiny": (BasicBlock, [1, 1, 1, 1], 8),  # for tests and CPU smoke runs
    }
    if name not in specs:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    block, layers, width = specs[name]
    model = DeepLabV2(DilatedResNet(block, layers, width), num_classes)
    for m in model.backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            for p in m.parameters():
                p.requires_grad_(False)
    return model


def load_backbone(model: DeepLabV2, path: str) -> None:
    """Loads ImageNet weights (torchvision ResNet key names) into the backbone; see the module doc."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--backbone-weights {path}: not a state dict of tensors")
    cleaned = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if not k.startswith("fc."):
            cleaned[k] = v
    try:
        missing, unexpected = model.backbone.load_state_dict(cleaned, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"--backbone-weights {path}: does not fit {type(model.backbone).__name__}: {e}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"--backbone-weights {path}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}) for {type(model.backbone).__name__}"
        )


def upsample_logits(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
