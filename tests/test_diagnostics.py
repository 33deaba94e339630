"""Diagnostics: one collector, a stable code on each, SpecErrors sorted by position."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import lcdsl
from lcdsl.errors import CODES, Diagnostic, Diagnostics, Span, SpecError
from lcdsl.language.fmt import format_spec
from lcdsl.language.parser import parse, parse_expression
from lcdsl.language.spec import NameSelector, Rule, Spec
from lcdsl.language.syntax_errors import _SYNTAX_TABLE
from lcdsl.plan.binder import bind, build_operator, check_spec
from lcdsl.project import project

PACKAGE = Path(lcdsl.__file__).parent
DOCS = PACKAGE.parent / "docs" / "language.md"


def at(line: int, column: int = 1) -> Span:
    return Span(line, column, line, column + 1)


def codes_of(call, *args, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as caught:
        call(*args, **kwargs)
    return caught.value.codes


# --- the collector ------------------------------------------------------------------------------


def test_a_diagnostic_needs_a_known_code():
    assert Diagnostic("x", code="no-match").code == "no-match"
    with pytest.raises(TypeError):
        Diagnostic("x")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown diagnostic code 'no-such-code'"):
        Diagnostic("x", code="no-such-code")
    with pytest.raises(ValueError, match="kebab-case"):
        Diagnostic("x", code="Unknown Operator")


def test_the_collector_adds_counts_and_raises_nothing_when_empty():
    diags = Diagnostics()
    assert not diags and len(diags) == 0
    diags.raise_if_any()  # nothing to raise
    made = diags.add("unknown-setting", "unknown setting 'lrr'", at(2), hint="settings are: lr")
    assert made == Diagnostic("unknown setting 'lrr'", at(2), "settings are: lr", code="unknown-setting")
    assert diags and len(diags) == 1 and list(diags) == [made] and diags.codes == ["unknown-setting"]


def test_one_spec_error_with_every_diagnostic_sorted_by_position():
    diags = Diagnostics()
    diags.add("claimed-twice", "third", at(3, 1))
    diags.add("no-match", "second, column 9", at(2, 9))
    diags.add("no-rules", "the whole file")
    diags.add("unknown-operator", "second, column 2", at(2, 2))
    diags.add("bad-value", "second, column 2 again", at(2, 2))
    with pytest.raises(SpecError) as caught:
        diags.raise_if_any(source="a\nb\nc\n", filename="f.lc")
    error = caught.value
    assert [d.message for d in error.diagnostics] == [
        "the whole file", "second, column 2", "second, column 2 again", "second, column 9", "third",
    ]  # fmt: skip
    assert error.codes == ["no-rules", "unknown-operator", "bad-value", "no-match", "claimed-twice"]
    assert error.filename == "f.lc" and error.render().startswith("f.lc: error: the whole file\n")


def test_extend_takes_another_spec_errors_diagnostics():
    first = Diagnostics()
    first.add("bad-value", "late", at(9))
    second = Diagnostics()
    second.add("unknown-setting", "early", at(1))
    second.extend(first.error())
    assert [d.message for d in second.error().diagnostics] == ["early", "late"]


def test_a_plain_message_is_a_spec_error_of_code_other():
    assert SpecError("something is wrong").codes == ["other"]


def test_rendering_does_not_show_codes():
    error = SpecError(Diagnostic("unknown operator 'qaunt'", Span(1, 7, 1, 12), code="unknown-operator"),
                      source="fc1 : qaunt(k=2)", filename="a.lc")  # fmt: skip
    assert error.render() == "a.lc:1:7: error: unknown operator 'qaunt'\n  fc1 : qaunt(k=2)\n        ^^^^^"


# --- codes where the problems are found -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("fc1 : quant(k=2", "missing-paren"),
        ("fc1 quant(k=2)", "missing-colon"),
        ("fc1 : binarize", "call-without-parens"),
        ("fc1 : quant(k=2) +", "missing-call"),
        ("fc1 : quant(k=2 $", "bad-character"),
        ("fc1 : quant(k=2 k=3)", "syntax"),
        ("x = 'abc", "unterminated-string"),
        ("x = " + "[" * 40 + "]" * 40, "too-deep"),
        ("x = 1\nx = 2", "repeated-setting"),
        ("x = nan", "non-finite"),
        ("x = 'a\\q'", "bad-escape"),
        ("fc.* = 1", "bad-setting-name"),
        ("x = 1\0", "not-text"),
    ],
)
def test_parse_errors_carry_their_code(text, code):
    assert codes_of(parse, text)[0] == code


def test_every_syntax_table_message_has_a_known_code():
    assert {code for code, _, _ in _SYNTAX_TABLE} <= set(CODES)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 2)
        self.out = nn.Linear(2, 2)
        self.head = nn.Module()


def test_bind_reports_every_code_of_a_file_in_source_order():
    text = (
        "lrr = 0.1\n"                      # unknown-setting
        "lr = -1\n"                        # bad-value
        "fc3 : quant(k=2)\n"               # no-match
        "fc1 : qaunt(k=2)\n"               # unknown-operator
        "fc2 : quant(kk=2)\n"              # unknown-argument
        "fc2.bias : prune(5)\n"            # positional-argument
        "fc1.bias : quant(k=2, k=3)\n"     # repeated-argument
        "fc1 : quant(k=2)\n"               # claimed-twice
        "out : lowrank(rank=9)\n"          # does-not-fit (a 2×2 matrix)
        "@Conv2d : quant(k=2)\n"           # no-match
        "[out.bias, !out.bias] : quant(k=2)\n"   # all-excluded
    )  # fmt: skip
    with pytest.raises(SpecError) as caught:
        bind(parse(text), Net())
    error = caught.value
    assert error.codes == [
        "unknown-setting", "bad-value", "no-match", "unknown-operator", "unknown-argument", "positional-argument",
        "repeated-argument", "claimed-twice", "does-not-fit", "no-match", "all-excluded",
    ]  # fmt: skip
    assert [d.span.line for d in error.diagnostics] == sorted(d.span.line for d in error.diagnostics)


def test_a_module_without_weight_and_a_spec_without_rules():
    assert codes_of(bind, parse("head : quant(k=2)"), Net()) == ["no-weight"]
    assert codes_of(check_spec, parse("lr = 0.1")) == ["no-rules"]
    assert codes_of(build_operator, ()) == ["empty-expression"]
    assert codes_of(build_operator, parse_expression("quant(k=1)")) == ["bad-value"]


def test_a_joint_group_of_mixed_dtypes():
    model = Net()
    model.fc2.to(torch.float64)
    assert codes_of(bind, parse("[fc1, fc2] : quant(k=2)"), model) == ["mixed-group"]


def test_projecting_a_tensor_an_operator_cannot_take():
    assert codes_of(project, "lowrank(rank=1)", torch.zeros(3)) == ["does-not-fit"]
    assert codes_of(project, "lowrank(rank=1) +", torch.zeros(3, 3)) == ["missing-call"]


def test_a_spec_that_cannot_be_written_is_unwritable():
    spec = Spec((Rule((NameSelector("fc 1"),), parse_expression("quant(k=2)")),))
    assert codes_of(format_spec, spec) == ["unwritable"]


def test_reading_errors(tmp_path):
    assert codes_of(lcdsl.load, tmp_path / "missing.lc") == ["unreadable"]
    (tmp_path / "latin1.lc").write_bytes(b"fc1 : quant(k=2) # caf\xe9\n")
    assert codes_of(lcdsl.load, tmp_path / "latin1.lc") == ["not-text"]
    (tmp_path / "huge.lc").write_bytes(b"#" * (1 << 21))
    assert codes_of(lcdsl.load, tmp_path / "huge.lc") == ["too-long"]


# --- every code is documented, used, and passed where diagnostics are made ---------------------


def test_every_code_is_listed_in_the_language_guide():
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", DOCS.read_text(encoding="utf-8"), re.MULTILINE))
    assert documented == set(CODES)


def _package_sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def test_every_code_is_used_somewhere_in_the_package():
    constants = set()
    for path, tree in _package_sources():
        if path.name == "errors.py":
            continue  # the table itself
        constants.update(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    assert set(CODES) - {"other"} <= constants, sorted(set(CODES) - constants)


def test_every_diagnostic_made_in_the_package_passes_a_known_code():
    """Statically, so that paths no test takes cannot raise a Diagnostic without a code."""
    for path, tree in _package_sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            if name == "Diagnostic":
                code = next((k.value for k in node.keywords if k.arg == "code"), None)
                assert code is not None, f"{where}: Diagnostic(...) without code="
            elif name == "add" and isinstance(func.value, (ast.Name, ast.Attribute)):
                receiver = func.value.id if isinstance(func.value, ast.Name) else func.value.attr
                if receiver not in ("diags", "diagnostics"):
                    continue
                code = node.args[0] if node.args else None
            else:
                continue
            if isinstance(code, ast.Constant):
                assert code.value in CODES, f"{where}: unknown code {code.value!r}"
