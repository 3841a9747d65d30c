"""Reference models for the bundled datasets, defined here (no torchvision), built by name.

Every constructor is deterministic given the caller's ``torch.manual_seed``; none seeds by itself.
The image models expect ``(batch, in_channels, 28, 28)`` inputs (MNIST); ``lenet_300_100`` flattens
whatever it gets and only needs ``in_features`` to match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from prunekit._checks import check_positive_int
from prunekit._registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")

VGG_SMALL_CFG: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M")


class LeNet300100(nn.Module):
    """LeCun et al. (1998) fully connected net: in_features → 300 → 100 → num_classes, ReLU between."""

    def __init__(self, num_classes: int = 10, in_features: int = 784) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)  # (batch, in_features)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)  # (batch, num_classes)


class LeNet5(nn.Module):
    """LeNet-5 for 28×28 inputs: two 5×5 convs (6, 16 channels) with max-pooling, then 120 → 84 → classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.conv1(x)))  # (batch, 6, 14, 14)
        x = self.pool(self.relu(self.conv2(x)))  # (batch, 16, 5, 5)
        x = self.flatten(x)  # (batch, 400)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)  # (batch, num_classes)


class VGGSmallBN(nn.Module):
    """A small VGG: blocks of Conv3×3 + BatchNorm + ReLU ("M" = 2×2 max-pool), global average pool, Linear.

    ``width`` scales every channel count of ``cfg`` (rounded, at least 1).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 1.0,
        cfg: Sequence[int | str] = VGG_SMALL_CFG,
    ) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"width must be a positive channel multiplier (e.g. 0.5), got {width!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                raise ValueError(
                    f"cfg entries must be positive ints (channels) or 'M' (max-pool), got {item!r}"
                )
            out = max(1, round(item * width))
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (batch, channels, h, w)
        x = self.flatten(self.pool(x))  # (batch, channels)
        return self.classifier(x)  # (batch, num_classes)


class BasicBlock(nn.Module):
    """He et al. (2016) basic block: two 3×3 conv + BN, added to an identity or 1×1 conv + BN shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (batch, out, h/stride, w/stride)
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNetSmall(nn.Module):
    """A CIFAR-style ResNet: 3×3 stem, one stage per width (stride 2 after the first), avg pool, Linear.

    With the defaults (widths 16/32/64, one block per stage) a 28×28 input becomes 7×7 before pooling.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        check_positive_int(blocks_per_stage, "blocks_per_stage")
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages = []
        channels = widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (batch, widths[0], 28, 28)
        x = self.stages(x)  # (batch, widths[-1], 7, 7) for three stages
        x = self.flatten(self.pool(x))  # (batch, widths[-1])
        return self.fc(x)  # (batch, num_classes)


def lenet_300_100(num_classes: int = 10, in_features: int = 784) -> nn.Module:
    """LeNet-300-100; parameters ``fc1.weight`` (300, in_features) … ``fc3.bias`` (num_classes,)."""
    return LeNet300100(num_classes, in_features)


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 for (batch, in_channels, 28, 28) inputs."""
    return LeNet5(num_classes, in_channels)


def vgg_small_bn(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """Small VGG with BatchNorm (channels 32-32-M-64-64-M-128-128-M, scaled by ``width``)."""
    return VGGSmallBN(num_classes, in_channels, width)


def resnet_small(
    num_classes: int = 10,
    in_channels: int = 1,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 1,
) -> nn.Module:
    """CIFAR-style ResNet with ``len(widths)`` stages of ``blocks_per_stage`` basic blocks."""
    return ResNetSmall(num_classes, in_channels, tuple(widths), blocks_per_stage)


MODELS.register("lenet_300_100", lenet_300_100)
MODELS.register("lenet5", lenet5)
MODELS.register("vgg_small_bn", vgg_small_bn)
MODELS.register("resnet_small", resnet_small)


def get_model(name: str, **kwargs: object) -> nn.Module:
    """Build the zoo model ``name`` with constructor ``kwargs``; an unknown name lists the valid ones."""
    return MODELS.get(name)(**kwargs)


def model_names() -> list[str]:
    """Names accepted by :func:`get_model`, sorted."""
    return MODELS.names()
