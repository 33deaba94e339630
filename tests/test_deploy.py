"""Deploy modules: low-rank layers factored, dead and constant units removed, outputs kept."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lcdsl
from lcdsl.deploy import deploy
from lcdsl.engine.core import Engine
from lcdsl.training.zoo import LeNet5, LeNet300

pytestmark = pytest.mark.usefixtures("one_thread")


def compressed(model: nn.Module, text: str):
    plan = lcdsl.parse(text).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    return plan, engine.finalize()


def close(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-5, rtol=1e-5)


def test_lowrank_linears_become_two_smaller_ones():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc1 : lowrank(rank=8)\nfc2 : lowrank(rank=5)\n")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = deploy(model, plan, thetas)
    fc1, fc2 = result.module.fc1, result.module.fc2
    assert isinstance(fc1, nn.Sequential) and [m.out_features for m in fc1] == [8, 300]
    assert fc1[0].bias is None and torch.equal(fc1[1].bias, model.fc1.bias)
    assert [m.out_features for m in fc2] == [5, 100]
    assert isinstance(result.module.fc3, nn.Linear)  # not compressed: left alone
    assert [c.module for c in result.changes] == ["fc1", "fc2"]
    assert result.changes[0].after == "Linear(64→8) · Linear(8→300)"
    assert close(model, result.module, torch.randn(32, 64))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched


def test_a_rank_that_saves_nothing_is_not_factored():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc3 : lowrank(rank=10)\n")  # 10·(10 + 100) ≥ 10·100
    result = deploy(model, plan, thetas)
    assert isinstance(result.module.fc3, nn.Linear) and result.changes == ()


def test_pruned_rows_and_channels_shrink_the_layers_and_fold_constants():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    with torch.no_grad():  # biases far from 0, so dropping a constant unit without folding would show
        for layer in (model.fc1, model.fc2, model.fc3):
            layer.bias.uniform_(-1, 1)
    plan, thetas = compressed(
        model, "fc1 : prune(l0=30%, by=rows)\nfc2 : prune(l0=40, by=rows)\nfc3 : prune(l0=50, by=channels)\n"
    )
    result = deploy(model, plan, thetas)
    m = result.module
    kept_fc2 = {int(i) for i in thetas["fc2.weight"]["indices"]} & {int(i) for i in thetas["fc3.weight"]["indices"]}
    assert (m.fc1.in_features, m.fc1.out_features) == (64, 90)
    assert (m.fc2.in_features, m.fc2.out_features) == (90, len(kept_fc2))
    assert (m.fc3.in_features, m.fc3.out_features) == (len(kept_fc2), 10)
    assert close(model, m, torch.randn(64, 64))


def test_factored_and_shrunk_layers_combine():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc1 : prune(l0=100, by=rows)\nfc2 : lowrank(rank=6)\n")
    result = deploy(model, plan, thetas)
    assert result.changes[1].after == "Linear(100→6) · Linear(6→100)"
    assert close(model, result.module, torch.randn(16, 64))


class Branchy(nn.Module):
    """fc1 → relu → fc2 (shrinkable), and fc3's output read twice (not shrinkable)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 16)
        self.fc4 = nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc2(F.silu(self.act(self.fc1(x))))
        g = self.fc3(h)
        return self.fc4(torch.tanh(g) + g)


def test_only_element_wise_paths_are_shrunk():
    torch.manual_seed(0)
    model = Branchy()
    with torch.no_grad():
        model.fc1.weight[3:7] = 0  # units 3..6 of fc1 are constant
        model.fc3.weight[:5] = 0  # units of fc3 are constant too, but read twice
    result = deploy(model)
    assert result.module.fc1.out_features == 12 and result.module.fc2.in_features == 12
    assert result.module.fc3.out_features == 16
    assert close(model, result.module, torch.randn(8, 8))


class Twice(nn.Module):
    """fc1 → tanh → fc2, and fc2 called again on its own output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def test_a_layer_called_twice_keeps_its_shape():
    torch.manual_seed(0)
    model = Twice()
    with torch.no_grad():
        model.fc1.weight[:2] = 0
    result = deploy(model)
    assert result.module.fc1.out_features == 6 and result.module.fc2.in_features == 6
    assert close(model, result.module, torch.randn(4, 6))


def test_convolutions_are_factored_even_when_tracing_fails():
    torch.manual_seed(0)
    model = LeNet5(image_size=8)
    plan, thetas = compressed(model, "conv2 : lowrank(rank=6)\nfc1 : prune(l0=100, by=rows)\n")
    result = deploy(model, plan, thetas)
    conv = result.module.conv2
    assert isinstance(conv, nn.Sequential)
    assert (conv[0].out_channels, conv[0].kernel_size, conv[0].padding) == (6, (5, 5), (2, 2))
    assert (conv[1].in_channels, conv[1].kernel_size) == (6, (1, 1))
    assert any("torch.fx" in note for note in result.notes)  # LeNet5's forward branches on x.dim()
    assert close(model, result.module, torch.randn(4, 1, 8, 8))
