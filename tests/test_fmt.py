"""The formatter: canonical layout, and ``parse(format_spec(spec)) == spec`` for every spec."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lcdsl.cli import main
from lcdsl.errors import SpecError
from lcdsl.language.fmt import format_number, format_spec, format_value
from lcdsl.language.parser import parse
from lcdsl.language.spec import Argument, Call, NameSelector, Percent, Rule, Setting, Spec
from tests.spec_strategies import specs, values


def typed(node):
    """A structure that tells ``True`` from ``1`` and ``1`` from ``1.0`` (``==`` does not)."""
    if isinstance(node, (bool, int, str)):
        return (type(node).__name__, node)
    if isinstance(node, float):
        return ("float", node, math.copysign(1.0, node))
    if isinstance(node, tuple):
        return ("tuple", tuple(typed(v) for v in node))
    if attrs.has(type(node)):
        fields = [f.name for f in attrs.fields(type(node)) if f.eq]
        return (type(node).__name__, tuple(typed(getattr(node, f)) for f in fields))
    if node is None:
        return None
    raise TypeError(type(node))


def layout(spec: Spec):
    """What fmt must keep that equality ignores: comments and blank lines."""
    return [(s.leading, s.comment) for s in spec.statements], spec.trailing


def normalised_layout(spec: Spec):
    """The layout a formatted spec reads back with: blank runs collapsed, none at the edges."""

    def collapse(lines, drop_leading_blank):
        out = []
        for line in lines:
            if line == "" and (not out and drop_leading_blank or out and out[-1] == ""):
                continue
            out.append(line)
        return tuple(out)

    rows = []
    for i, s in enumerate(spec.statements):
        rows.append((collapse(s.leading, i == 0), s.comment))
    trailing = collapse(spec.trailing, not spec.statements)
    while trailing and trailing[-1] == "":
        trailing = trailing[:-1]
    return rows, trailing


@given(specs())
def test_format_then_parse_gives_the_same_spec(spec):
    text = format_spec(spec)
    again = parse(text)
    assert again == spec
    assert typed(again) == typed(spec)
    assert layout(again) == normalised_layout(spec)


@given(specs())
def test_format_is_idempotent_on_text(spec):
    once = format_spec(spec)
    assert format_spec(parse(once)) == once


@given(values)
@example(9e-05)
@example(-0.0)
@example(5e-324)
@example(1e16)
@example(Percent(2.5))
@example(Percent(-0.0))
@example("true")
@example("nan")
@example("a\u2028b\x00")
def test_every_value_reads_back_as_itself(value):
    text = format_value(value)
    read = parse(f"x = {text}").statements[0].value
    assert typed(read) == typed(value)


@pytest.mark.parametrize(
    "value, text",
    [
        (9e-05, "9e-5"),
        (0.001, "1e-3"),
        (0.05, "0.05"),
        (0.1, "0.1"),
        (1000.0, "1000.0"),
        (1e16, "1e16"),
        (1.5e-07, "1.5e-7"),
        (5000, "5000"),
        (-3, "-3"),
        (-0.001, "-1e-3"),
    ],
)
def test_numbers_are_normalised(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (Percent(5), "5%"),
        (Percent(2.5), "2.5%"),
        (True, "true"),
        ("rows", "rows"),
        ("augmented-lagrangian", "augmented-lagrangian"),
        ("true", '"true"'),
        ("inf", '"inf"'),
        ("a b", '"a b"'),
        ('say "hi"\n', '"say \\"hi\\"\\n"'),
        ("", '""'),
        ((1, (2.5, "x")), "[1, [2.5, x]]"),
        (Call("geometric", (Argument("start", 9e-05), Argument(None, 3))), "geometric(start=9e-5, 3)"),
    ],
)
def test_values_are_written_canonically(value, text):
    assert format_value(value) == text


def test_layout_aligns_colons_and_equals_per_block_and_keeps_comments():
    source = (
        "# header\n"
        "\n\n\n"
        "mu=geometric(start=0.001,factor=1.5,steps=12)#schedule\n"
        "batch_size   =   64\n"
        "fc1:quant(k=4)+prune(l0=2.0%)  # sparse\n"
        "fc2 , [fc3,@Linear] : lowrank( rank = 8 )\n"
        "\n"
        "!fc1:binarize()\n"
        "# tail\n\n\n"
    )
    assert format_spec(parse(source)) == (
        "# header\n"
        "\n"
        "mu         = geometric(start=1e-3, factor=1.5, steps=12)   # schedule\n"
        "batch_size = 64\n"
        "fc1                 : quant(k=4) + prune(l0=2%)   # sparse\n"
        "fc2, [fc3, @Linear] : lowrank(rank=8)\n"
        "\n"
        "!fc1 : binarize()\n"
        "# tail\n"
    )


def test_comments_align_three_spaces_after_the_longest_commented_statement():
    text = "a : quant(k=2)  # one\nbb : lowrank(rank=10)   # two\nc : binarize()\n"
    assert format_spec(parse(text)) == (
        "a  : quant(k=2)         # one\n" "bb : lowrank(rank=10)   # two\n" "c  : binarize()\n"
    )


def test_empty_spec_and_empty_comment_lines():
    assert format_spec(Spec()) == ""
    assert format_spec(parse("\n\n# note\n#\n\n")) == "# note\n#\n"


def test_specs_that_cannot_be_written_are_spec_errors():
    bad = [
        Spec((Setting("not a name", 1),)),
        Spec((Setting("x", float("nan")),)),
        Spec((Setting("x", [1, 2]),)),
        Spec((Rule((NameSelector("fc 1"),), (Call("quant"),)),)),
        Spec((Rule((), (Call("quant"),)),)),
        Spec((Rule((NameSelector("fc1"),), (Call("two words"),)),)),
    ]
    for spec in bad:
        with pytest.raises(SpecError):
            format_spec(spec)


def test_spec_format_method_is_format_spec():
    spec = parse("fc1:quant(k=2)")
    assert spec.format() == format_spec(spec) == "fc1 : quant(k=2)\n"


@pytest.fixture
def messy(tmp_path):
    path = tmp_path / "messy.lc"
    path.write_text("fc1:quant(k=2)\nmu=[1e-3,2e-3]\n", encoding="utf-8")
    return path


def test_cli_prints_the_canonical_form(messy, capsys):
    assert main(["fmt", str(messy)]) == 0
    assert capsys.readouterr().out == "fc1 : quant(k=2)\nmu = [1e-3, 2e-3]\n"


def test_cli_check_names_the_file_that_would_change(messy, capsys):
    assert main(["fmt", "--check", str(messy)]) == 1
    assert f"{messy}: would be reformatted" in capsys.readouterr().err
    messy.write_text("fc1 : quant(k=2)\n", encoding="utf-8")
    assert main(["fmt", "--check", str(messy)]) == 0


def test_cli_write_rewrites_in_place_and_leaves_no_temporary_file(messy):
    messy.chmod(0o640)
    assert main(["fmt", "--write", str(messy)]) == 0
    assert messy.read_text(encoding="utf-8") == "fc1 : quant(k=2)\nmu = [1e-3, 2e-3]\n"
    assert sorted(p.name for p in messy.parent.iterdir()) == ["messy.lc"]
    assert messy.stat().st_mode & 0o777 == 0o640
    assert main(["fmt", "--check", str(messy)]) == 0


def test_cli_reports_spec_errors_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "bad.lc"
    path.write_text("fc1 : quant(k=2\n", encoding="utf-8")
    assert main(["fmt", "--write", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1:16: error: missing ')'" in err
    assert path.read_text(encoding="utf-8") == "fc1 : quant(k=2\n"


@given(st.lists(st.sampled_from(["", "# c", "x = 1", "fc1 : quant(k=2)", "   ", "#", "y = 2   # e"]), max_size=8))
def test_layout_of_line_soups_is_idempotent(lines):
    text = "\n".join(f"{line}" if not line.startswith("x") else f"x{i} = 1" for i, line in enumerate(lines))
    text = "\n".join(
        line.replace("y = 2", f"y{i} = 2") for i, line in enumerate(text.split("\n"))
    )
    once = format_spec(parse(text))
    assert format_spec(parse(once)) == once
