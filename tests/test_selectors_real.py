"""Selectors on real architectures: a tiny GPT-2 (tied wte/lm_head, Conv1D, LayerNorm), the zoo's
BatchNorm ResNet (containers, downsample branches, buffers) and a root ``nn.Sequential``."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console
from torch import nn

from lcdsl.cli import main
from lcdsl.engine.core import Engine
from lcdsl.errors import SpecError
from lcdsl.language.parser import parse
from lcdsl.plan.binder import bind
from lcdsl.plan.summary import plan_rows
from lcdsl.report.plan import plan_table
from lcdsl.training.zoo import resnet_small

transformers = pytest.importorskip("transformers")


def tiny_gpt2() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def bound(text: str, model: nn.Module):
    return bind(parse(text), model)


def error_of(text: str, model: nn.Module) -> SpecError:
    with pytest.raises(SpecError) as caught:
        bound(text, model)
    return caught.value


def table_text(plan) -> str:
    out = io.StringIO()
    Console(file=out, width=300, no_color=True).print(plan_table(plan))
    return out.getvalue()


# --- tied parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("selector", ["lm_head", "lm_head.weight", "transformer.wte", "lm_head, transformer.wte"])
def test_either_name_of_a_tied_tensor_compresses_it_once_under_its_canonical_name(selector):
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    plan = bound(f"{selector} : quant(k=4)", model)
    assert [t.name for t in plan.tasks] == ["transformer.wte.weight"]
    assert plan.ties == (("transformer.wte.weight", ("lm_head.weight",)),)
    assert plan.tied("transformer.wte.weight") == ("lm_head.weight",)
    assert "lm_head.weight" not in plan.dense and "transformer.wte.weight" not in plan.dense


def test_check_shows_the_tie_and_dense_lists_the_canonical_name_once():
    model = tiny_gpt2()
    assert "transformer.wte.weight (tied: lm_head.weight)" in table_text(bound("lm_head : quant(k=4)", model))
    dense = bound("transformer.h.*.mlp.c_fc : quant(k=2)", model)
    assert dense.dense.count("transformer.wte.weight") == 1 and "lm_head.weight" not in dense.dense
    assert "transformer.wte.weight (tied: lm_head.weight)" in table_text(dense)


def test_two_rules_claiming_the_two_names_of_one_tensor_is_claimed_twice_naming_the_tie():
    error = error_of("transformer.wte : quant(k=4)\nlm_head : quant(k=2)", tiny_gpt2())
    (diag,) = error.diagnostics
    assert diag.code == "claimed-twice" and diag.span.line == 2
    assert "'transformer.wte.weight' (tied: 'lm_head.weight')" in diag.message and "line 1" in diag.message


def test_a_glob_under_a_tied_leaf_module_names_the_partner():
    (diag,) = error_of("lm_head.** : quant(k=2)", tiny_gpt2()).diagnostics
    assert diag.code == "no-match" and "names the modules under 'lm_head'" in diag.message
    assert "transformer.wte.weight (tied: lm_head.weight)" in diag.hint


def test_the_shared_tensor_is_compressed_once_and_both_names_see_it():
    model = tiny_gpt2()
    engine = Engine(model, bound("lm_head : quant(k=4)", model))
    engine.direct_compression()
    thetas = engine.finalize()
    assert list(thetas) == ["transformer.wte.weight"]
    assert model.lm_head.weight is model.transformer.wte.weight
    assert torch.unique(model.lm_head.weight.detach()).numel() <= 4


def test_a_type_filter_picks_gpt2s_conv1d_layers_and_a_wildcard_warns_about_layernorm():
    model = tiny_gpt2()
    plan = bound("transformer.h.*.mlp.*@Conv1D : quant(k=2)", model)
    assert [t.name for t in plan.tasks] == [
        f"transformer.h.{i}.mlp.{n}.weight" for i in (0, 1) for n in ("c_fc", "c_proj")
    ]
    assert plan.warnings == ()
    wide = bound("transformer.h.** : quant(k=2)", model)
    (warning,) = wide.warnings
    assert warning.code == "norm-parameters" and warning.severity == "warning"
    assert "LayerNorm" in warning.message and "transformer.h.0.ln_1.weight" in warning.message
    assert "!transformer.h.**@LayerNorm" in warning.hint
    assert "warning: 'transformer.h.**' also claims 4 normalization-layer parameters" in wide.render_warnings()


def test_a_container_of_blocks_says_what_it_is():
    (diag,) = error_of("transformer.h : quant(k=2)", tiny_gpt2()).diagnostics
    assert diag.code == "no-weight"
    assert diag.message == "'transformer.h' is a ModuleList with children 0, 1 and no weight of its own"
    assert diag.hint == "name them ('transformer.h.*') or their weights ('transformer.h.**')"


# --- a BatchNorm ResNet -------------------------------------------------------------------------


def test_a_wildcard_over_a_stage_warns_that_it_claims_batchnorm_and_still_binds():
    plan = bound("layer3.** : quant(k=4)", resnet_small())
    assert "layer3.0.bn1.weight" in [t.name for t in plan.tasks]
    (warning,) = plan.warnings
    assert warning.code == "norm-parameters" and (warning.span.line, warning.span.column) == (1, 1)
    assert "3 normalization-layer parameters (BatchNorm2d" in warning.message
    assert "layer3.0.downsample.1.weight" in warning.message
    assert warning.hint.startswith("exclude them (!layer3.**@BatchNorm2d)")


@pytest.mark.parametrize(
    "text",
    ["layer3.**@Conv2d : quant(k=4)", "layer3.**, !layer3.**@BatchNorm2d : quant(k=4)",
     "[layer3.**, !layer3.**@BatchNorm2d] as convs : quant(k=4)"],
)  # fmt: skip
def test_a_type_filter_or_an_exclusion_keeps_the_convolutions_only(text):
    plan = bound(text, resnet_small())
    names = [n for t in plan.tasks for n in t.parameters]
    assert names == ["layer3.0.conv1.weight", "layer3.0.conv2.weight", "layer3.0.downsample.0.weight"]
    assert plan.warnings == ()


@pytest.mark.parametrize("text", ["@BatchNorm2d : quant(k=2)", "bn1 : quant(k=2)", "**@BatchNorm2d : quant(k=2)",
                                  "layer1.0.bn1, layer1.0.bn1.bias : quant(k=2)"])  # fmt: skip
def test_normalization_layers_named_on_purpose_do_not_warn(text):
    plan = bound(text, resnet_small())
    assert plan.tasks and plan.warnings == ()


def test_biases_by_type_filter():
    model = resnet_small()
    norms = {f"{n}.bias" for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    plan = bound("**.bias@BatchNorm2d : quant(k=2)", model)
    assert {t.name for t in plan.tasks} == norms and "fc.bias" not in norms
    assert plan.warnings == ()


def test_no_match_errors_say_what_the_name_is_on_a_resnet():
    model = resnet_small()
    (container,) = error_of("layer2.0.downsample : quant(k=2)", model).diagnostics
    assert container.code == "no-weight" and "is a Sequential with children 0, 1" in container.message
    (buffer,) = error_of("bn1.running_mean : quant(k=2)", model).diagnostics
    assert buffer.code == "names-buffer"
    assert buffer.message == "'bn1.running_mean' is a buffer, not a parameter: only parameters are compressed"
    assert buffer.hint == "the parameters of 'bn1': bn1.weight, bn1.bias"
    (buffers,) = error_of("**.running_var : quant(k=2)", model).diagnostics
    assert buffers.code == "names-buffer" and "matches only buffers (bn1.running_var" in buffers.message
    (typed,) = error_of("layer3.**@Conv3d : quant(k=2)", model).diagnostics
    assert typed.code == "no-match" and "did you mean 'Conv2d'" in typed.message
    assert typed.hint == "types there: BatchNorm2d, Conv2d"


# --- names and reprs ----------------------------------------------------------------------------


def test_a_named_joint_group_is_the_tasks_name_everywhere():
    model = resnet_small()
    plan = bound("[layer*.**@Conv2d] as convs : quant(k=2)\nfc : quant(k=2)", model)
    task = plan.tasks[0]
    assert task.name == "convs" and task.label == "convs" and task.joint and len(task.parameters) == 8
    assert plan_rows(plan)[0]["task"] == "convs"
    engine = Engine(model, plan)
    engine.direct_compression()
    assert set(engine.state_dict()["thetas"]) == {"convs", "fc.weight"}
    assert "convs" in table_text(plan)


def test_a_large_unnamed_joint_group_gets_a_short_name_and_small_ones_keep_their_list():
    model = resnet_small()
    plan = bound("[**@Conv2d] : quant(k=2)\n[fc, fc.bias] : quant(k=2)", model)
    assert plan.tasks[0].name == "[conv1.weight, …, layer3.0.downsample.0.weight] (9 tensors)"
    assert plan.tasks[1].name == "[fc.weight, fc.bias]"


def test_two_groups_may_not_share_a_name():
    error = error_of("[layer1.**@Conv2d] as convs : quant(k=2)\n[layer2.**@Conv2d] as convs : quant(k=2)", resnet_small())
    assert error.codes == ["repeated-name"] and "line 1" in error.diagnostics[0].message


def test_plan_and_task_reprs_are_one_line_a_task():
    plan = bound("layer3.**@Conv2d : quant(k=4)\n[layer1.**@Conv2d] as early : quant(k=2)", resnet_small())
    lines = repr(plan).split("\n")
    assert lines[0] == "Plan(4 tasks, 24 dense parameters (15,802 weights), 0 warnings):"
    assert lines[1] == "  Task(layer3.0.conv1.weight: 64×32×3×3 → quant(k=4), line 1)"
    assert lines[4] == "  Task(early: 16×16×3×3, 16×16×3×3 → quant(k=2), line 2)"
    assert len(lines) == 5


# --- a root nn.Sequential -----------------------------------------------------------------------


def test_a_root_sequentials_children_are_named_by_number():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    plan = bound("0, 2.bias : quant(k=2)\n[2] as head : prune(l0=4)", model)
    assert [t.name for t in plan.tasks] == ["0.weight", "2.bias", "head"]
    assert parse("0, 2.bias : quant(k=2)").format() == "0, 2.bias : quant(k=2)\n"


def test_a_suggestion_for_a_root_sequential_is_itself_a_selector_that_parses():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    (diag,) = error_of("2.wieght : quant(k=2)", model).diagnostics
    assert diag.code == "no-match" and "did you mean '2.weight'" in diag.message
    assert bound("2.weight : quant(k=2)", model).tasks[0].name == "2.weight"
    (relu,) = error_of("1 : quant(k=2)", model).diagnostics
    assert relu.code == "no-weight" and relu.message == "module '1' (ReLU) has no parameters"


def test_a_type_filter_written_apart_from_its_glob_is_an_error():
    with pytest.raises(SpecError) as caught:
        parse("layer4.** @Conv2d : quant(k=2)")
    assert caught.value.codes == ["spaced-type-filter"]


# --- the command line ---------------------------------------------------------------------------


def test_check_prints_warnings_on_stderr_and_in_json(tmp_path, capsys):
    spec = tmp_path / "resnet.lc"
    spec.write_text("layer3.** : quant(k=4)\n", encoding="utf-8")
    assert main(["check", str(spec), "--model", "resnet-small"]) == 0
    captured = capsys.readouterr()
    assert f"{spec}:1:1: warning: 'layer3.**' also claims 3 normalization-layer parameters" in captured.err
    assert "hint: exclude them (!layer3.**@BatchNorm2d)" in captured.err
    assert main(["check", str(spec), "--model", "resnet-small", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (warning,) = summary["warnings"]
    assert warning["code"] == "norm-parameters" and warning["line"] == 1
