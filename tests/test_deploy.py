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


# ------------------------------------------------------------ BatchNorm convs, Conv1D, untraceable models


def _random_statistics(model: nn.Module) -> None:
    """BatchNorm statistics and affine parameters away from their defaults, so that a removed
    channel's constant (relu(β − γ·μ/σ)) is not 0 and has to be folded."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-1, 1)


def test_pruned_conv_filters_leave_with_their_batchnorm_channels_and_constants_fold_exactly():
    from lcdsl.deploy import ConstantInputs
    from lcdsl.operators import CodebookConv2d
    from lcdsl.training.zoo import resnet_small

    torch.manual_seed(0)
    model = resnet_small()
    _random_statistics(model)
    model.eval()
    plan, thetas = compressed(model, "layer*.*.conv1 : prune(l0=50%, by=filters)\nlayer2.0.conv2 : quant(k=4)\n")
    x = torch.randn(8, 64)
    result = deploy(model, plan, thetas, example=x)
    m = result.module
    assert any("torch.fx cannot trace" in note for note in result.notes)  # ResNet's forward branches on x.dim()
    assert (m.layer1[0].conv1.out_channels, m.layer1[0].bn1.num_features) == (8, 8)
    assert m.layer3[0].bn1.running_mean.shape == (32,)
    conv2 = m.layer2[0].conv2
    assert isinstance(conv2, ConstantInputs) and isinstance(conv2.layer, CodebookConv2d)  # padded: a ones-map conv
    assert conv2.layer.in_channels == 16
    changed = {c.module for c in result.changes}
    assert {"layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer2.0.conv2"} <= changed
    assert all(c.relative_difference < 1e-5 for c in result.changes)
    assert result.relative_difference < 1e-5
    with torch.no_grad():
        assert torch.allclose(model(x), m(x), rtol=1e-4, atol=1e-5)


def test_a_conv_without_padding_takes_the_constants_in_its_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    _random_statistics(model)
    with torch.no_grad():
        model[0].weight[:5] = 0
    result = deploy(model, example=torch.randn(2, 3, 9, 9))
    assert type(result.module[3]) is nn.Conv2d and result.module[3].in_channels == 3 and result.module[3].bias is not None
    assert result.relative_difference < 1e-5


def test_gpt2_conv1d_layers_deploy_and_their_mlp_units_shrink():
    from lcdsl.operators import CodebookEmbedding, CodebookLinear

    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    plan, thetas = compressed(model, "lm_head : quant(k=4)\ntransformer.h.*.mlp.c_fc : prune(l0=25%, by=rows)\n"
                                     "transformer.h.*.attn.c_attn : quant(k=2)\ntransformer.h.0.attn.c_proj : lowrank(rank=4)\n")  # fmt: skip
    ids = {"input_ids": torch.randint(0, 64, (3, 10))}
    result = deploy(model, plan, thetas, example=ids)
    m = result.module
    block = m.transformer.h[0]
    assert isinstance(block.attn.c_attn, CodebookLinear) and (block.attn.c_attn.in_features, block.attn.c_attn.out_features) == (32, 96)
    assert isinstance(block.attn.c_proj, nn.Sequential)  # two Linears
    assert (block.mlp.c_fc.out_features, block.mlp.c_proj.in_features) == (32, 32)  # a quarter of 128 units kept
    assert isinstance(m.lm_head, CodebookLinear) and isinstance(m.transformer.wte, CodebookEmbedding)  # tied: both
    assert result.kept == ()
    with torch.no_grad():
        expected, got = model(**ids).logits, m(**ids).logits
    assert torch.allclose(expected, got, rtol=1e-4, atol=1e-5)
    assert result.relative_difference < 1e-5


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x, extra=False):
        h = self.fc1(x)
        y = self.fc2(torch.tanh(h))
        if extra:  # a path the trace at the default does not see: h is read again
            y = y + h[:, :3]
        return y


class _Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _Inner()

    def forward(self, x):
        if x.dim() == 1:  # fx cannot trace this
            x = x[None]
        return self.inner(x, extra=True)


def test_a_unit_pass_the_model_does_not_run_is_undone():
    torch.manual_seed(0)
    model = _Outer()
    with torch.no_grad():
        model.inner.fc1.weight[:2] = 0
    result = deploy(model, example=torch.randn(4, 6))
    assert result.module.inner.fc1.out_features == 8  # the cut found in the traced default path was undone
    assert any("unit pass was undone" in note for note in result.notes)
    assert result.relative_difference == 0.0
