"""The networks of the experiments: CIFAR ResNet-20, ImageNet ResNet-50, and small offline nets."""

from __future__ import annotations

import torch
from torch import nn

from sparseopt.config import ModelConfig


def _kaiming_init(module: nn.Module, classifier: nn.Linear) -> None:
    """He-normal weights for every conv and linear followed by ReLU, BN at identity.

    Convs use fan_out (as torchvision), hidden linears fan_in. The `classifier` keeps PyTorch's
    default Linear init (as torchvision): He-scaled logits would saturate the softmax at init.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(sub, nn.Linear) and sub is not classifier:
            nn.init.kaiming_normal_(sub.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
        if (
            isinstance(sub, (nn.Conv2d, nn.Linear))
            and sub is not classifier
            and sub.bias is not None
        ):
            nn.init.zeros_(sub.bias)


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with an identity or option-B (1x1 conv + BN) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.downsample(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3x3 stem, three stages of n BasicBlocks, avgpool, linear."""

    def __init__(self, blocks_per_stage: int, num_classes: int, width: int, in_channels: int = 3):
        super().__init__()
        channels = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        stages = []
        previous = channels[0]
        for stage_index, stage_channels in enumerate(channels):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(previous, stage_channels, stride))
                previous = stage_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes)
        _kaiming_init(self, self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.pool(out), 1))


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def resnet20(num_classes: int, width: int = 1, in_channels: int = 3) -> CifarResNet:
    """CIFAR ResNet-20 (16w/32w/64w channels; ≈0.27M parameters at width 1, 10 classes)."""
    _check_positive(num_classes=num_classes, width=width, in_channels=in_channels)
    return CifarResNet(3, num_classes, width, in_channels)


def resnet50(num_classes: int) -> nn.Module:
    """torchvision's ImageNet ResNet-50, randomly initialised (weights=None)."""
    import torchvision  # only here: importing it costs ~1.7 CPU-s per worker process

    _check_positive(num_classes=num_classes)
    return torchvision.models.resnet50(weights=None, num_classes=num_classes)


def mlp(
    in_features: int,
    num_classes: int,
    hidden: int = 256,
    depth: int = 2,
    batchnorm: bool = True,
) -> nn.Sequential:
    """Flatten, then `depth` blocks of Linear(+BatchNorm1d)+ReLU, then a linear classifier.

    Hidden linears carry a bias only without BN (BN's shift makes it redundant).
    """
    _check_positive(in_features=in_features, num_classes=num_classes, hidden=hidden, depth=depth)
    layers: list[nn.Module] = [nn.Flatten()]
    previous = in_features
    for _ in range(depth):
        layers.append(nn.Linear(previous, hidden, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        previous = hidden
    layers.append(nn.Linear(previous, num_classes))
    model = nn.Sequential(*layers)
    _kaiming_init(model, layers[-1])
    return model


def small_cnn(
    num_classes: int, in_channels: int = 1, width: int = 1, batchnorm: bool = True
) -> nn.Sequential:
    """A tiny CNN for 8x8 digits: three 3x3 convs (16w, 32w s2, 64w s2) with BN, avgpool, linear."""
    _check_positive(num_classes=num_classes, in_channels=in_channels, width=width)
    channels = [16 * width, 32 * width, 64 * width]
    layers: list[nn.Module] = []
    previous = in_channels
    for index, out_channels in enumerate(channels):
        stride = 1 if index == 0 else 2
        layers.append(nn.Conv2d(previous, out_channels, 3, stride, 1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        previous = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, num_classes)]
    model = nn.Sequential(*layers)
    _kaiming_init(model, layers[-1])
    return model


def build_model(cfg: ModelConfig, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The network named by `cfg.name`, sized for the dataset's classes, channels and image size."""
    if not cfg.batchnorm and cfg.name in ("resnet20", "resnet50"):
        raise ValueError(
            f"model.batchnorm=false is supported only for model.name in ('mlp', 'small_cnn'), "
            f"got model.name={cfg.name!r}"
        )
    if cfg.name == "resnet20":
        return resnet20(num_classes, width=cfg.width, in_channels=in_channels)
    if cfg.name == "resnet50":
        if in_channels != 3:
            raise ValueError(
                f"model.name='resnet50' needs 3 input channels, the data has {in_channels}"
            )
        return resnet50(num_classes)
    if cfg.name == "mlp":
        return mlp(in_channels * image_size * image_size, num_classes, cfg.hidden, 2, cfg.batchnorm)
    if cfg.name == "small_cnn":
        return small_cnn(num_classes, in_channels, cfg.width, cfg.batchnorm)
    raise ValueError(
        f"model.name must be one of 'resnet20', 'resnet50', 'mlp', 'small_cnn', got {cfg.name!r}"
    )
