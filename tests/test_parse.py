"""The parser: the spec objects it builds, their spans, comments, and its errors."""

from __future__ import annotations

import pytest

from lcdsl.errors import Span, SpecError
from lcdsl.language import Argument, Call, Exclude, JointGroup, NameSelector, Percent, Rule, Setting, Spec, TypeSelector
from lcdsl.language.parser import MAX_NUMBER_LENGTH, load, parse, parse_expression


def test_a_spec_parses_to_the_objects_built_in_code():
    text = (
        "mu = geometric(start=9e-5, factor=1.4, steps=40)\n"
        "fc1, !fc3, [conv*, @Linear, !@Conv1d] : quant(k=2) + prune(l0=1%)\n"
        "x = [1, -3, 2.5, 1e3, 5%, 'a', \"b\", true, false, rows, augmented-lagrangian, []]\n"
        "fc2 : quant(4, by=rows)\n"
    )
    assert parse(text) == Spec(
        (
            Setting(
                "mu",
                Call("geometric", (Argument("start", 9e-05), Argument("factor", 1.4), Argument("steps", 40))),
            ),
            Rule(
                (
                    NameSelector("fc1"),
                    Exclude(NameSelector("fc3")),
                    JointGroup((NameSelector("conv*"), TypeSelector("Linear"), Exclude(TypeSelector("Conv1d")))),
                ),
                (Call("quant", (Argument("k", 2),)), Call("prune", (Argument("l0", Percent(1)),))),
            ),
            Setting("x", (1, -3, 2.5, 1000.0, Percent(5), "a", "b", True, False, "rows", "augmented-lagrangian", ())),
            Rule((NameSelector("fc2"),), (Call("quant", (Argument(None, 4), Argument("by", "rows"))),)),
        )
    )


def test_value_types_are_exact():
    values = parse("x = [5000, 1e3, 0.1, 5%, true, 'true', rows]").statements[0].value
    assert [type(v) for v in values] == [int, float, float, Percent, bool, str, str]


@pytest.mark.parametrize(
    "glob", ["fc1", "conv*", "features.**.weight", "layers.0.attn", "**.bias", "fc?", "_x.1_2.*"]
)
def test_selector_globs(glob):
    assert parse(f"{glob} : binarize()").rules[0].selectors == (NameSelector(glob),)


def test_string_escapes():
    value = parse(r"""s = "a\"b\\c\n\t\r\0\x41\u00e9\U0001F600'" """).statements[0].value
    assert value == "a\"b\\c\n\t\r\0A\u00e9\U0001f600'"
    assert parse(r"s = 'it\'s'").statements[0].value == "it's"


def test_spans_are_one_based_with_exclusive_ends_and_offsets():
    text = "# c\nfc1 : quant(k=2)\n"
    rule = parse(text).rules[0]
    assert rule.span == Span(2, 1, 2, 17, 4, 20)
    call = rule.terms[0]
    assert call.span == Span(2, 7, 2, 17, 10, 20)
    assert text[call.span.start : call.span.end] == "quant(k=2)"
    assert call.args[0].span == Span(2, 13, 2, 16, 16, 19)
    assert rule.selectors[0].span == Span(2, 1, 2, 4, 4, 7)


def test_every_node_has_a_span():
    spec = parse("[a, !@B] : f(k=g(x=[1]), 2)\ny = 1")
    rule, setting = spec.statements
    group = rule.selectors[0]
    nodes = [rule, setting, group, *group.items, group.items[1].selector, *rule.terms, *rule.terms[0].args]
    assert all(node.span is not None for node in nodes)


def test_comments_and_blank_lines_are_kept_beside_statements():
    text = "# head\n\n\n\n#\nmu = 1   #  eol  \n  # indented\nfc1 : binarize()\n\n# tail\n\n"
    spec = parse(text)
    mu, fc1 = spec.statements
    assert mu.leading == ("head", "", " ")
    assert mu.comment == " eol"
    assert fc1.leading == ("indented",)
    assert fc1.comment is None
    assert spec.trailing == ("", "tail", "")


def test_hash_inside_a_string_is_not_a_comment():
    spec = parse("s = 'a # b'  # c")
    assert spec.statements[0].value == "a # b"
    assert spec.statements[0].comment == "c"


def test_crlf_line_endings():
    spec = parse("fc1 : quant(k=2)\r\nfc2 : quant(k=4)  # x\r\n")
    assert [r.selectors[0].pattern for r in spec.rules] == ["fc1", "fc2"]
    assert spec.rules[1].comment == "x"


def test_parse_expression():
    assert parse_expression("quant(k=2) + prune(l0=1%)") == (
        Call("quant", (Argument("k", 2),)),
        Call("prune", (Argument("l0", Percent(1)),)),
    )
    with pytest.raises(SpecError) as caught:
        parse_expression("quant(k=2) +")
    assert caught.value.diagnostics[0].message == "'+' must be followed by an operator call"
    with pytest.raises(SpecError):
        parse_expression("fc1 : quant(k=2)")


def test_semantic_errors_are_reported_together():
    text = "mu = 1\nx = nan\nmu = 2\ny = " + "9" * (MAX_NUMBER_LENGTH + 1) + "\nz = 'bad \\q'\nfc.* = f()\n"
    with pytest.raises(SpecError) as caught:
        parse(text, "many.lc")
    lines = [d.span.line for d in caught.value.diagnostics]
    assert sorted(lines) == [2, 3, 4, 5, 6]
    rendered = caught.value.render()
    assert "many.lc:3:1: error: setting 'mu' is already set on line 1" in rendered


def test_a_number_of_exactly_the_limit_is_fine():
    assert parse("x = " + "9" * MAX_NUMBER_LENGTH).statements[0].value == int("9" * MAX_NUMBER_LENGTH)


@pytest.mark.parametrize("text", ["x = 1e999", "x = -1e400%", "x = inf", "x = NaN", "x = Infinity", "x = +nan"])
def test_non_finite_numbers_are_refused(text):
    with pytest.raises(SpecError, match="finite"):
        parse(text)


def test_nesting_is_bounded_without_recursion_errors():
    assert parse("x = " + "[" * 32 + "]" * 32)
    for depth in (33, 5000):
        with pytest.raises(SpecError, match="nesting deeper than 32"):
            parse("x = " + "f(" * depth + ")" * depth)


def test_render_points_carets_at_the_offending_token():
    with pytest.raises(SpecError) as caught:
        parse("fc1 : quant(k=2)\nfc2 quant(k=2)\n", "a.lc")
    assert caught.value.render() == (
        "a.lc:2:5: error: expected ':' (a rule) or '=' (a setting) after 'fc2'\n"
        "  fc2 quant(k=2)\n"
        "      ^^^^^"
    )


def test_end_of_line_errors_point_after_the_last_token_not_the_comment():
    with pytest.raises(SpecError) as caught:
        parse("fc1 : quant(k=2   # a comment\n")
    assert caught.value.diagnostics[0].span.column == 16


def test_load_reads_utf8_with_or_without_bom(tmp_path):
    path = tmp_path / "s.lc"
    path.write_bytes(b"\xef\xbb\xbffc1 : quant(k=2)  # \xce\xbc\n")
    spec = load(path)
    assert spec.rules[0].comment == "\u03bc"
    assert spec.filename == str(path)


@pytest.mark.parametrize(
    "data, line, column, fragment",
    [
        (b"fc1 : quant(k=2)\nx = '\xff'\n", 2, 6, "not UTF-8"),
        (b"fc1 : quant(k=2)\n\xce\xbc = \x00\n", 2, 5, "NUL"),
    ],
)
def test_load_refuses_bytes_that_are_not_text(tmp_path, data, line, column, fragment):
    path = tmp_path / "bad.lc"
    path.write_bytes(data)
    with pytest.raises(SpecError) as caught:
        load(path)
    diagnostic = caught.value.diagnostics[0]
    assert (diagnostic.span.line, diagnostic.span.column) == (line, column)
    assert fragment in diagnostic.message


def test_load_of_a_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load(tmp_path / "missing.lc")


def test_nul_in_text_is_a_spec_error():
    with pytest.raises(SpecError, match="NUL"):
        parse("x = 1\0")


def test_non_str_input_is_a_type_error():
    with pytest.raises(TypeError):
        parse(b"x = 1")  # type: ignore[arg-type]
