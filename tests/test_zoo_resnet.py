"""The built-in ResNets: torchvision's layout and names, BatchNorm, downsample branches."""

from __future__ import annotations

import torch

from lcdsl.training.data import load_data, model_kwargs
from lcdsl.training.zoo import ResNet, load_model, resnet_small


def test_resnet18_has_torchvisions_weight_count_and_names():
    model = ResNet(num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 11_181_642  # torchvision.models.resnet18(num_classes=10)
    names = dict(model.named_parameters())
    expected = {"conv1.weight", "bn1.weight", "layer4.1.conv2.weight", "layer2.0.downsample.0.weight", "fc.weight"}
    assert expected <= set(names)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_the_small_resnet_fits_the_digits_and_keeps_batchnorm_statistics():
    data = load_data("digits")
    model = load_model("resnet-small", **model_kwargs("resnet-small", data))
    assert model(data.x_train[:4]).shape == (4, 10)  # flat 8×8 images are reshaped
    assert "layer3.0.downsample.1.running_var" in dict(model.named_buffers())
    assert int(model.bn1.num_batches_tracked) == 1 and not torch.equal(model.bn1.running_mean, torch.zeros(16))


def test_small_images_get_the_cifar_stem():
    assert resnet_small().conv1.kernel_size == (3, 3) and ResNet().conv1.kernel_size == (7, 7)
