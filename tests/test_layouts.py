"""Layer layouts: structured operators mean the same thing on every layer, whatever its storage order."""

from __future__ import annotations

import importlib.metadata
import types

import pytest
import torch
from torch import nn

import lcdsl
from lcdsl.engine.core import Engine
from lcdsl.errors import PluginError, SpecError
from lcdsl.language.parser import parse
from lcdsl.operators import Layout, View
from lcdsl.operators.layout import find_layout
from lcdsl.plan.binder import bind
from lcdsl.plan.settings import Explicit, Settings
from lcdsl.plan.summary import plan_rows
from lcdsl.plugins.hookspecs import hookimpl
from lcdsl.plugins.registry import ALLOW_ENV, BLOCK_ENV, Registry

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

INPUTS_FIRST = Layout(outputs=1, inputs=0)


def tiny_gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def compress(model: nn.Module, text: str, registry: Registry | None = None) -> Engine:
    """Direct compression (one C step) then w ← Δ(θ)."""
    engine = Engine(model, bind(parse(text), model, registry=registry))
    engine.direct_compression()
    engine.finalize()
    return engine


def zero_units(weight: torch.Tensor, outputs: int) -> set[int]:
    """The output units (indices along axis ``outputs``) whose weights are all zero."""
    w = weight.detach().movedim(outputs, 0).reshape(weight.shape[outputs], -1)
    return {int(i) for i in torch.nonzero((w == 0).all(1)).reshape(-1)}


# ---------------------------------------------------------------- the view


def test_a_conv1d_matrix_view_is_the_transpose_without_a_copy():
    weight = nn.Parameter(torch.randn(8, 24))  # (in, out)
    view = View("matrix", [(8, 24)], INPUTS_FIRST)
    assert view.shape == (24, 8)
    w = view.gather([weight])
    assert torch.equal(w, weight.T) and w.data_ptr() == weight.data_ptr()
    value = torch.randn(24, 8)
    (piece,) = view.split(value)
    assert piece.shape == (8, 24) and piece.data_ptr() == value.data_ptr() and torch.equal(piece, value.T)
    view.scatter(value, [weight])
    assert torch.equal(weight.detach(), value.T)


def test_a_transposed_conv_is_seen_outputs_first():
    conv = nn.ConvTranspose2d(3, 5, 2)  # weight (in=3, out=5, 2, 2)
    tensor = View("tensor", [conv.weight.shape], INPUTS_FIRST)
    matrix = View("matrix", [conv.weight.shape], INPUTS_FIRST)
    assert tensor.shape == (5, 3, 2, 2) and matrix.shape == (5, 12)
    assert torch.equal(matrix.gather([conv.weight]), conv.weight.detach().transpose(0, 1).reshape(5, 12))
    value = torch.randn(5, 12)
    (piece,) = matrix.split(value)
    assert piece.data_ptr() == value.data_ptr()  # a view back into the parameter's shape
    assert torch.equal(matrix.gather([piece]), value)


def test_a_vector_view_ignores_the_layout_and_a_layout_needs_its_axes():
    assert View.of(lcdsl.operators.base.Operator(), [(8, 24)], INPUTS_FIRST).layout is None
    with pytest.raises(ValueError, match="outputs on axis 2 .* 2 dimensions"):
        View("matrix", [(8, 24)], Layout(outputs=2, inputs=0))
    with pytest.raises(ValueError, match="two different axes"):
        Layout(outputs=1, inputs=1)


# ---------------------------------------------------------------- by=rows on every layer


def test_by_rows_prunes_output_units_on_linear_conv2d_and_conv1d_alike():
    model = tiny_gpt2()
    model.extra_linear = nn.Linear(32, 128)
    model.extra_conv = nn.Conv2d(3, 16, 3)
    text = (
        "transformer.h.0.mlp.c_fc : prune(l0=25%, by=rows)\n"  # Conv1D, weight (32, 128) = (in, out)
        "extra_linear : prune(l0=25%, by=rows)\n"  # weight (128, 32) = (out, in)
        "extra_conv : prune(l0=25%, by=filters)\n"  # weight (16, 3, 3, 3)
    )
    compress(model, text)
    c_fc = model.transformer.h[0].mlp.c_fc.weight
    assert len(zero_units(c_fc, outputs=1)) == 96  # 32 of 128 output units kept
    assert zero_units(c_fc, outputs=0) == set()  # every input still read
    assert len(zero_units(model.extra_linear.weight, outputs=0)) == 96
    assert len(zero_units(model.extra_conv.weight, outputs=0)) == 12


def test_conv1d_keeps_the_units_an_equivalent_linear_keeps():
    model = tiny_gpt2()
    c_fc = model.transformer.h[0].mlp.c_fc
    linear = nn.Linear(32, 128, bias=False)
    with torch.no_grad():
        linear.weight.copy_(c_fc.weight.T)
    model.twin = linear
    compress(model, "transformer.h.0.mlp.c_fc : prune(l0=10, by=rows)\ntwin : prune(l0=10, by=rows)\n")
    assert torch.equal(c_fc.weight.detach(), linear.weight.detach().T)
    compress(model, "transformer.h.0.mlp.c_fc : prune(l0=5, by=channels)\ntwin : prune(l0=5, by=channels)\n")
    assert torch.equal(c_fc.weight.detach(), linear.weight.detach().T)
    assert len(zero_units(c_fc.weight, outputs=0)) == 32 - 5  # inputs are axis 0 of a Conv1D


def test_lowrank_on_conv1d_gives_the_delta_of_the_equivalent_linear():
    conv1d, linear = Conv1D(24, 40), nn.Linear(40, 24, bias=False)  # Conv1D(nf=out, nx=in)
    with torch.no_grad():
        linear.weight.copy_(conv1d.weight.T)
    model = nn.ModuleDict({"c": conv1d, "l": linear})
    engine = compress(model, "c : lowrank(rank=3)\nl : lowrank(rank=3)\n")
    assert torch.allclose(conv1d.weight.detach(), linear.weight.detach().T, atol=1e-6)
    assert torch.linalg.matrix_rank(conv1d.weight.detach()) == 3
    theta = engine.thetas["c.weight"]
    assert theta["U"].shape == (24, 3) and theta["V"].shape == (3, 40)  # U: (outputs, r), as for the Linear


def test_an_embedding_prunes_its_rows_the_tokens():
    model = tiny_gpt2()
    compress(model, "transformer.wpe : prune(l0=8, by=rows)\n")
    assert len(zero_units(model.transformer.wpe.weight, outputs=0)) == 32 - 8


def test_a_transposed_conv_prunes_its_output_channels():
    model = nn.ModuleDict({"up": nn.ConvTranspose2d(4, 6, 3)})
    compress(model, "up : prune(l0=2, by=filters)\n")
    assert len(zero_units(model["up"].weight, outputs=1)) == 4
    assert zero_units(model["up"].weight, outputs=0) == set()


def test_check_shows_the_axis_a_structured_operator_works_on():
    model = tiny_gpt2()
    text = (
        "transformer.h.0.mlp.c_fc : prune(l0=25%, by=rows)\n"
        "transformer.h.0.mlp.c_proj : lowrank(rank=4)\n"
        "transformer.h.1.mlp.c_fc : prune(l0=50%, by=channels) + quant(k=2)\n"
        "transformer.h.1.attn.c_attn : quant(k=2)\n"
    )
    rows = plan_rows(bind(parse(text), model))
    assert [r["axes"] for r in rows] == [
        "keeps 32 of 128 output units",
        "rows = 32 outputs, columns = 128 inputs",
        "keeps 16 of 32 input channels",
        None,
    ]
    assert rows[0]["operator"] == "prune(l0=32, by=rows)"  # the operator's text is unchanged


def test_lcdsl_check_prints_the_axis(tmp_path, capsys):
    from lcdsl.cli import main

    (tmp_path / "gpt.py").write_text(
        "import transformers\n"
        "def model():\n"
        "    return transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32,"
        " vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0))\n"
    )
    spec = tmp_path / "gpt.lc"
    spec.write_text("transformer.h.0.mlp.c_fc : prune(l0=64, by=rows)\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        assert main(["check", str(spec), "--model", "gpt:model"]) == 0
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("gpt", None)
    assert "keeps 64 of 128 output units" in capsys.readouterr().out


# ---------------------------------------------------------------- modules without a layout


class Custom(nn.Module):
    """A layer of its own that owns a weight (stored in×out)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def custom_model() -> nn.Module:
    return nn.ModuleDict({"fc": nn.Linear(4, 6), "odd": Custom()})


STRUCTURED = ["prune(l0=2, by=rows)", "lowrank(rank=2)", "quant(k=2) + prune(l0=1, by=channels)"]


@pytest.mark.parametrize("operator", STRUCTURED)
def test_a_structured_operator_on_an_unknown_module_is_a_spec_error(operator):
    with pytest.raises(SpecError) as info:
        bind(parse(f"fc : quant(k=2)\nodd : {operator}\n"), custom_model())
    (diag,) = info.value.diagnostics
    assert diag.code == "no-layout" and diag.span.line == 2
    assert "which axis of odd.weight is the layer's outputs" in diag.message
    assert "no plugin declares the layout of a Custom weight" in diag.message
    assert "lcdsl_register_layouts" in diag.hint and "Layout(outputs=0, inputs=1)" in diag.hint
    assert "element-wise operators" in diag.hint


def test_element_wise_operators_need_no_layout():
    for text in ("odd : quant(k=2)", "odd : prune(l0=5)", "odd : binarize()", "odd : prune(l1_penalty=1e-3)"):
        plan = bind(parse(text), custom_model())
        assert plan.tasks[0].layout is None


def test_a_grouped_transposed_conv_says_why_it_has_no_layout():
    model = nn.ModuleDict({"up": nn.ConvTranspose2d(4, 6, 3, groups=2)})
    with pytest.raises(SpecError) as info:
        bind(parse("up : prune(l0=2, by=rows)"), model)
    (diag,) = info.value.diagnostics
    assert diag.code == "no-layout" and "grouped transposed convolution (groups=2)" in diag.message
    assert bind(parse("up : quant(k=2)"), model).tasks  # element-wise still fine


def test_a_parameter_other_than_weight():
    lstm = nn.LSTM(4, 3)
    plan = bind(parse("weight_ih_l0 : lowrank(rank=2)"), lstm)
    assert plan.tasks[0].view.shape == (12, 4)
    with pytest.raises(SpecError, match="needs a weight of 2 or more dimensions") as info:
        bind(parse("bias_ih_l0 : prune(l0=1, by=rows)"), lstm)  # a vector has no axes to name
    assert info.value.codes == ["does-not-fit"]
    lstm.extra = nn.Parameter(torch.randn(3, 3))
    with pytest.raises(SpecError, match="no plugin declares the layout of 'extra' of a LSTM") as info:
        bind(parse("extra : prune(l0=1, by=rows)"), lstm)
    assert info.value.codes == ["no-layout"]


# ---------------------------------------------------------------- layouts from plugins


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


@pytest.fixture
def entry_points(monkeypatch):
    """Fake entry points for the group ``lcdsl``: the real built-ins, then what a test installs."""
    monkeypatch.delenv(BLOCK_ENV, raising=False)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    import lcdsl.operators.builtin

    dist = types.SimpleNamespace(name="lcdsl", version="0.1.0")
    installed = [_EntryPoint("builtin", "lcdsl.operators.builtin", dist, lcdsl.operators.builtin)]

    def fake(*, group=None, **kwargs):
        return list(installed)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)

    def install(name, plugin, distribution="lcdsl-dense", version="1.0"):
        dist = types.SimpleNamespace(name=distribution, version=version)
        installed.append(_EntryPoint(name, f"plugin_{name}", dist, plugin))

    return install


class _EntryPoint:
    def __init__(self, name, value, dist, target):
        self.name, self.value, self.dist, self.target, self.group = name, value, dist, target, "lcdsl"

    def load(self):
        return self.target


@pytest.mark.parametrize("key", [Custom, "Custom", f"{Custom.__module__}.Custom"], ids=["class", "name", "qualified"])
def test_a_plugin_declares_the_layout_of_its_module(entry_points, key):
    entry_points("dense", _module("dense", lcdsl_register_layouts=lambda: {key: INPUTS_FIRST}))
    registry = Registry.load()
    assert registry.problems == ()
    info = next(p for p in registry.plugins if p.name == "dense")
    assert info.operators == () and len(info.layouts) == 1
    model = custom_model()
    plan = bind(parse("odd : prune(l0=3, by=rows)"), model, registry=registry)
    assert plan.tasks[0].layout == INPUTS_FIRST and plan.tasks[0].view.shape == (10, 6)
    compress(model, "odd : prune(l0=3, by=rows)", registry=registry)
    assert len(zero_units(model["odd"].weight, outputs=1)) == 7


def test_a_subclass_gets_its_base_layout_unless_declared():
    class MyLinear(nn.Linear):
        pass

    class Mine(nn.Module):
        pass

    layouts = {nn.Linear: Layout(), Mine: lambda module, parameter: INPUTS_FIRST if parameter == "kernel" else None}
    assert find_layout(layouts, MyLinear(2, 3), "weight") == Layout()
    assert find_layout(layouts, MyLinear(2, 3), "bias") is None
    assert find_layout(layouts, Mine(), "kernel") == INPUTS_FIRST
    assert find_layout(layouts, nn.ReLU(), "weight") is None


@pytest.mark.parametrize(
    "returned, message",
    [
        ([Custom], "not a mapping of module classes to layouts"),
        ({3: INPUTS_FIRST}, "neither a module class nor a class name"),
        ({Custom: (1, 0)}, "neither a Layout nor a function"),
    ],
)
def test_a_plugin_returning_bad_layouts_is_broken_and_the_others_work(entry_points, returned, message):
    entry_points("bad", _module("bad", lcdsl_register_layouts=lambda: returned), distribution="lcdsl-bad")
    registry = Registry.load()
    (problem,) = registry.problems
    assert problem.name == "bad" and "lcdsl_register_layouts failed" in problem.message and message in problem.message
    assert registry.layout(nn.Linear(2, 3)) == Layout()  # the built-ins still work


def test_two_plugins_declaring_different_layouts_for_one_type_is_an_error_naming_both(entry_points):
    entry_points("one", _module("one", lcdsl_register_layouts=lambda: {Custom: INPUTS_FIRST}), distribution="lcdsl-one")
    entry_points("two", _module("two", lcdsl_register_layouts=lambda: {Custom: Layout()}), distribution="lcdsl-two")
    with pytest.raises(PluginError, match=r"declared by 'one' \(lcdsl-one 1.0\) and by 'two' \(lcdsl-two 1.0\)"):
        Registry.load()


def test_the_builtins_declare_their_layouts_through_the_hook():
    registry = Registry.load()
    builtin = next(p for p in registry.plugins if p.name == "builtin")
    assert "torch.nn.modules.linear.Linear" in builtin.layouts
    assert "transformers.pytorch_utils.Conv1D" in builtin.layouts
    assert registry.layout(Conv1D(3, 2)) == INPUTS_FIRST


# ---------------------------------------------------------------- the engine on a Conv1D


def assert_in_place_gradient_is_autograds(engine, params) -> None:
    """``add_penalty_grad`` gives each parameter the gradient autograd gives ``penalty()``."""
    for p in params:
        p.grad = None
    engine.penalty().backward()
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    engine.add_penalty_grad()
    for p, want in zip(params, expected):
        assert torch.allclose(p.grad, want, atol=1e-6)


@pytest.mark.parametrize("operator", ["lowrank(rank=3)", "prune(l0=40%, by=rows)", "prune(l0=50%, by=channels)"])
@pytest.mark.parametrize("penalty", ["augmented-lagrangian", "quadratic"])
def test_the_penalty_gradient_on_a_conv1d_equals_autograds(operator, penalty):
    model = tiny_gpt2()
    text = f"transformer.h.0.mlp.c_fc : {operator}\ntransformer.h.1.attn.c_proj : {operator}\n"
    plan = bind(parse(text), model)
    engine = Engine(model, plan, settings=Settings(mu=Explicit([0.5, 1.0]), penalty=penalty))
    engine.direct_compression()
    engine.mu = 0.5
    with torch.no_grad():
        for p in engine.parameters:
            p.add_(0.01 * torch.randn_like(p))
    engine.c_step()
    engine.multiplier_step()
    params = engine.parameters
    assert_in_place_gradient_is_autograds(engine, params)
    # λ is updated in place: the cached per-parameter views see it without a copy
    engine.multiplier_step()
    assert_in_place_gradient_is_autograds(engine, params)


def test_project_takes_a_layout():
    w = torch.randn(8, 24)  # (in, out)
    by_inputs_first = lcdsl.project("prune(l0=3, by=rows)", w, layout=INPUTS_FIRST)
    outputs_first = lcdsl.project("prune(l0=3, by=rows)", w.T.contiguous())
    assert torch.equal(by_inputs_first.delta, outputs_first.delta.T)
    assert len(zero_units(by_inputs_first.delta, outputs=1)) == 21
