"""Built-in models, and loading a user's model from ``module:function``.

Loading ``module:function`` imports that module and calls the function: it runs the module's
code. Only name factories you trust, on the command line or in your own settings.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import nn

from lcdsl.errors import ModelError, did_you_mean

__all__ = ["LeNet300", "LeNet5", "BasicBlock", "ResNet", "resnet_small", "MODELS", "load_model", "load_factory"]


class LeNet300(nn.Module):
    """LeNet300: 784-300-100-10 fully connected, tanh (the LC papers' standard example)."""

    def __init__(self, in_features: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (batch, in_features)
        x = torch.tanh(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """LeNet5 (Caffe variant): conv 20@5×5, pool, conv 50@5×5, pool, fc 500, fc 10, ReLU.

    Images smaller than 16×16 (e.g. the 8×8 digits) get ``padding=2`` in both convolutions, so
    the stack still fits (8 → 8 → 4 → 4 → 2)."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, padding: int | None = None
    ) -> None:
        super().__init__()
        if padding is None:
            padding = 0 if image_size >= 16 else 2
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5, padding=padding)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5, padding=padding)
        shrink = 4 - 2 * padding  # each 5×5 convolution takes this many pixels off a side
        side = ((image_size - shrink) // 2 - shrink) // 2  # 28 → 24 → 12 → 8 → 4
        if side < 1:
            raise ValueError(f"images of side {image_size} are too small for LeNet5 with padding {padding}")
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat images (batch, side²) → (batch, 1, side, side)
            side = int(round(x.shape[1] ** 0.5))
            x = x.view(x.shape[0], 1, side, side)
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def _as_images(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Flat images (batch, channels·side²) as (batch, channels, side, side); images pass as they are."""
    if x.dim() != 2:
        return x
    side = int(round((x.shape[1] / channels) ** 0.5))
    return x.view(x.shape[0], channels, side, side)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 conv–BatchNorm pairs and a shortcut, a 1×1 conv–BatchNorm
    ``downsample`` when the stride or width changes (torchvision's names, so specs carry over)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` s with BatchNorm, in torchvision's layout and names
    (``conv1``, ``bn1``, ``layer1…``, ``downsample.0/1``, ``fc``).

    The defaults are ResNet-18 (two blocks of 64, 128, 256 and 512 channels; 11.2 M weights).
    Small images (side < 32, e.g. the 8×8 digits) get a 3×3 stem without max-pooling, as CIFAR
    ResNets do.

    Args:
        in_channels: input channels.
        num_classes: output classes.
        blocks: blocks per stage.
        widths: channels per stage (the first stage keeps the resolution, each later one halves it).
        image_size: the input side, which picks the stem.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        image_size: int = 224,
    ) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {blocks} and widths {widths} must name the same stages")
        self.in_channels = in_channels
        small = image_size < 32
        self.conv1 = nn.Conv2d(
            in_channels, widths[0], 3 if small else 7, stride=1 if small else 2, padding=1 if small else 3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.pool = nn.Identity() if small else nn.MaxPool2d(3, stride=2, padding=1)
        planes = widths[0]
        for i, (count, width) in enumerate(zip(blocks, widths)):
            stage = [BasicBlock(planes if j == 0 else width, width, 2 if i > 0 and j == 0 else 1) for j in range(count)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            planes = width
        self.stages = len(blocks)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(_as_images(x, self.in_channels)))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet_small(in_channels: int = 1, num_classes: int = 10, image_size: int = 8) -> ResNet:
    """A ResNet of one block of 16, 32 and 64 channels (78 k weights): BatchNorm and downsample
    branches in a model that trains in seconds on the digits."""
    return ResNet(in_channels, num_classes, blocks=(1, 1, 1), widths=(16, 32, 64), image_size=image_size)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet300": LeNet300, "lenet5": LeNet5, "resnet18": ResNet, "resnet-small": resnet_small,
}  # fmt: skip
"""Built-in model factories by name."""


def load_factory(reference: str) -> Callable[..., object]:
    """Import ``module:function`` and return the function (this runs the module's code).

    Raises:
        ModelError: the reference is malformed, the module cannot be imported, or it has no
            such callable.
    """
    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"'{reference}' is not of the form module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything on import
        raise ModelError(f"cannot import '{module_name}' for '{reference}': {exc}") from exc
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelError(f"'{module_name}' has no attribute '{attr}'")
        target = getattr(target, part)
    if not callable(target):
        raise ModelError(f"'{reference}' is not callable")
    return target


def load_model(name: str, **kwargs: object) -> nn.Module:
    """A model by built-in name (``lenet300``, ``lenet5``) or ``module:function``.

    Raises:
        ModelError: unknown name, a factory that raises, or one that returns no ``nn.Module``.
    """
    if ":" in name:
        factory = load_factory(name)
    elif name in MODELS:
        factory = MODELS[name]
    else:
        raise ModelError(
            f"unknown model '{name}'{did_you_mean(name, MODELS)} (built-in: {', '.join(MODELS)}; "
            "or give module:function)"
        )
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ModelError(f"model factory '{name}' raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory '{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model
