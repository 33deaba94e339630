"""Compact deployed layers and the deploy hook: codes packed to their width, outputs kept, the
cache the user's choice, plugins asked in order, and every compressed layer accounted for."""

from __future__ import annotations

import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lcdsl
from lcdsl.deploy import deploy
from lcdsl.engine.core import Engine
from lcdsl.operators import CodebookConv2d, CodebookEmbedding, CodebookLinear, hookimpl, set_cache
from lcdsl.operators.bitpack import pack_uint
from lcdsl.operators.compact import pack_width
from lcdsl.plugins.registry import PluginManager, Registry, get_plugin_manager
from lcdsl.training.zoo import LeNet300

pytestmark = pytest.mark.usefixtures("one_thread")


def compressed(model: nn.Module, text: str):
    plan = lcdsl.parse(text).bind(model)
    engine = Engine(model, plan)
    engine.direct_compression()
    return plan, engine.finalize()


@settings(deadline=None, max_examples=40)
@given(k=st.integers(2, 256), out=st.integers(1, 9), inp=st.integers(1, 13), seed=st.integers(0, 2**16))
def test_codes_are_packed_at_their_width_and_come_back(k, out, inp, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, k, (out, inp), generator=g)
    layer = CodebookLinear(torch.randn(k, generator=g), codes)
    assert torch.equal(layer.codes(), codes)
    assert layer.width == pack_width(k) and layer.width >= (k - 1).bit_length()
    # the byte stream is the little-endian stream of the .lcz packer, at the layer's width
    assert bytes(layer.packed.numpy()) == pack_uint(codes.numpy().reshape(-1), layer.width)
    x = torch.randn(3, inp, generator=g)
    assert torch.allclose(layer(x), x @ layer.codebook[codes].T, atol=1e-6)


def test_widths_and_the_256_entry_limit():
    assert [pack_width(k) for k in (2, 3, 4, 5, 16, 17, 256)] == [1, 2, 2, 4, 4, 8, 8]
    with pytest.raises(ValueError, match="at most 256 entries"):
        pack_width(257)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\)"):
        CodebookLinear(torch.tensor([0.0, 1.0]), torch.tensor([[0, 2]]))


def test_a_2_bit_layer_takes_about_2_bits_a_weight_in_memory():
    layer = CodebookLinear(torch.randn(4), torch.randint(0, 4, (300, 784)))
    assert layer.compact_bytes() == 300 * 784 // 4 + 4 * 4
    tensors = {id(t): t for t in (*layer.parameters(), *layer.buffers())}
    assert sum(t.numel() * t.element_size() for t in tensors.values()) < 300 * 784 * 2.01 / 8 + 64
    assert layer._cached is None  # nothing dense held without the cache


def test_the_cache_is_the_users_choice_and_gives_the_same_outputs():
    torch.manual_seed(0)
    codes, codebook, x = torch.randint(0, 3, (5, 7)), torch.randn(3), torch.randn(2, 7)
    plain, cached = CodebookLinear(codebook, codes), CodebookLinear(codebook, codes, cache=True)
    assert torch.equal(plain(x), cached(x))
    assert plain._cached is None and cached._cached is not None
    assert cached.weight is cached.weight  # kept, not recomputed
    set_cache(cached, False)
    assert cached._cached is None and plain.weight is not plain.weight


def test_conv_embedding_and_sparse_correction():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    codes = torch.randint(0, 4, conv.weight.shape)
    layer = CodebookConv2d(conv, torch.randn(4), codes, conv.bias.detach())
    with torch.no_grad():
        conv.weight.copy_(layer.codebook[codes])
    x = torch.randn(2, 3, 9, 9)
    assert torch.allclose(layer(x), conv(x), atol=1e-6)
    table = nn.Embedding(10, 6)
    sparse = (torch.tensor([3, 17]), torch.tensor([0.5, -2.0]))
    embedding = CodebookEmbedding(table, torch.tensor([-1.0, 1.0]), torch.randint(0, 2, (10, 6)), sparse=sparse)
    weight = embedding.weight.reshape(-1)
    assert weight[3] in (-0.5, 1.5) and weight[17] in (-3.0, -1.0)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(embedding(ids), embedding.weight[ids])


def test_lenet300_quant_layers_become_codebook_layers_with_a_report():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc1 : quant(k=2)\nfc2 : quant(k=4)\nfc3 : prune(l0=500)\n")
    x = torch.randn(16, 64)
    result = deploy(model, plan, thetas, example=x)
    fc1, fc2 = result.module.fc1, result.module.fc2
    assert isinstance(fc1, CodebookLinear) and fc1.width == 1 and isinstance(fc2, CodebookLinear) and fc2.width == 2
    assert [c.module for c in result.changes] == ["fc1", "fc2"]
    assert result.changes[0].after == "CodebookLinear(64→300, k=2, 1-bit codes)"
    assert result.changes[0].by == "quant(k=2), plugin 'builtin'"
    assert all(c.relative_difference is not None and c.relative_difference < 1e-5 for c in result.changes)
    assert [(k.module, k.what) for k in result.kept] == [("fc3", "Linear(100→10), prune(l0=500)")]
    assert "no sparse kernel" in result.kept[0].reason
    assert result.relative_difference < 1e-5
    with torch.no_grad():
        assert torch.allclose(model(x), result.module(x), rtol=1e-5, atol=1e-6)
    text = "\n".join(result.lines())
    assert "fc1: Linear(64→300) → CodebookLinear" in text and "fc3: Linear(100→10), prune(l0=500): left as is" in text


def test_cached_deployment_and_joint_codebooks():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "[fc*] : quant(k=4)\n")
    result = deploy(model, plan, thetas, cache=True)
    layers = [result.module.fc1, result.module.fc2, result.module.fc3]
    assert all(isinstance(m, CodebookLinear) and m.cache for m in layers)
    assert all(torch.equal(m.codebook, layers[0].codebook) for m in layers)  # one shared codebook
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), result.module(x), rtol=1e-5, atol=1e-6)


def test_additive_quant_plus_prune_is_a_codebook_layer_with_a_sparse_correction():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc1 : quant(k=2) + prune(l0=1%)\n")
    result = deploy(model, plan, thetas)
    fc1 = result.module.fc1
    assert isinstance(fc1, CodebookLinear) and fc1.sparse_positions.numel() == 192
    assert torch.equal(fc1.weight, model.fc1.weight)


def _plugin(**hooks):
    module = types.ModuleType("my_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def _registry_with(plugin, name="mine"):
    pm = get_plugin_manager(allow=[])
    pm.add_plugin(plugin, name, "my-plugin", "1.0")
    assert not pm.problems
    return Registry.load(plugin_manager=pm)


def test_a_plugin_is_asked_before_the_builtins_and_a_failing_one_is_reported():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc3 : quant(k=2)\n")
    seen = []

    def lcdsl_deploy_layer(module, operator):
        seen.append(operator.name)
        return nn.Sequential(module)  # "mine": the layer as it is, wrapped

    result = deploy(model, plan, thetas, registry=_registry_with(_plugin(lcdsl_deploy_layer=lcdsl_deploy_layer)))
    assert seen == ["quant"] and isinstance(result.module.fc3, nn.Sequential)
    assert result.changes[0].by == "quant(k=2), plugin 'mine'"

    def broken(module):
        raise RuntimeError("boom")

    result = deploy(model, plan, thetas, registry=_registry_with(_plugin(lcdsl_deploy_layer=broken)))
    assert type(result.module.fc3) is nn.Linear
    (kept,) = result.kept
    assert kept.module == "fc3" and "plugin 'mine' (my-plugin 1.0): lcdsl_deploy_layer raised RuntimeError: boom" in kept.reason


def test_a_hook_that_returns_no_module_is_reported():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc3 : quant(k=2)\n")
    registry = _registry_with(_plugin(lcdsl_deploy_layer=lambda module: "a layer"))
    (kept,) = deploy(model, plan, thetas, registry=registry).kept
    assert "returned str, not an nn.Module or None" in kept.reason


def test_without_plugins_that_deploy_a_layer_it_stays_and_says_why():
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, "fc1 : quant(k=2)\nfc3 : lowrank(rank=10)\n")
    result = deploy(model, plan, thetas, registry=Registry.load(plugin_manager=PluginManager()))
    assert result.changes == ()
    reasons = {k.module: k.reason for k in result.kept}
    assert "no installed plugin deploys 'quant' on a Linear" in reasons["fc1"]
    assert "r·(m + n) ≥ m·n" in reasons["fc3"]


@pytest.mark.parametrize(
    ("text", "k"),
    [("binarize()", 2), ("binarize(scale=true)", 2), ("ternarize()", 3), ("quant(codebook=[-0.1, 0, 0.1])", 3)],
)
def test_binary_ternary_and_fixed_codebooks_deploy_exactly(text, k):
    torch.manual_seed(0)
    model = LeNet300(in_features=64)
    plan, thetas = compressed(model, f"fc2 : {text}\n")
    result = deploy(model, plan, thetas)
    fc2 = result.module.fc2
    assert isinstance(fc2, CodebookLinear) and fc2.k == k and fc2.width == (1 if k == 2 else 2)
    assert torch.equal(fc2.weight, model.fc2.weight)
