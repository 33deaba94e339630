"""The grammar file and the parser built from it."""

from __future__ import annotations

import re

import pytest

from lcdsl.errors import SpecError
from lcdsl.language import fmt, grammar, parser, syntax_errors
from lcdsl.language.spec import NameSelector


def test_grammar_builds_in_strict_mode_without_conflicts_or_collisions():
    grammar.build_parser(strict=True)


def test_parser_is_built_once():
    assert grammar.get_parser() is grammar.get_parser()


def test_the_packaged_or_repository_grammar_is_the_one_in_grammar_dir():
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent / "grammar" / "lcdsl.lark"
    assert grammar.grammar_text() == repo.read_text(encoding="utf-8")


@pytest.mark.parametrize("label, examples", syntax_errors._SYNTAX_EXAMPLES, ids=lambda x: x if isinstance(x, str) else "")
def test_every_error_example_is_recognised_as_its_own_label(label, examples):
    for example in examples:
        found, _ = syntax_errors._match_label(example, "start")
        assert found == label, example


@pytest.mark.parametrize(
    "label, examples", [e for e in syntax_errors._EXPRESSION_EXAMPLES if e[1]], ids=lambda x: x if isinstance(x, str) else ""
)
def test_every_expression_error_example_is_recognised_as_its_own_label(label, examples):
    for example in examples:
        found, _ = syntax_errors._match_label(example, "expr")
        assert found == label, example


@pytest.mark.parametrize("label, examples", syntax_errors._SYNTAX_EXAMPLES, ids=lambda x: x if isinstance(x, str) else "")
def test_error_examples_give_their_message_on_any_line(label, examples):
    prefix = "mu = geometric(start=1e-3, factor=1.5, steps=12)\n# a comment\n\nfc9 : quant(k=2)\n"
    for example in examples:
        with pytest.raises(SpecError) as caught:
            parser.parse(prefix + example)
        diagnostic = caught.value.diagnostics[0]
        assert diagnostic.span.line == 5, example
        head = label.split("{")[0]
        assert diagnostic.message.startswith(head), (example, diagnostic.message)


def test_fallback_lists_expected_tokens_by_readable_names():
    with pytest.raises(SpecError) as caught:
        parser.parse("fc1 : quant(bits=2 k=3)")
    message = caught.value.diagnostics[0].message
    assert message == "unexpected 'k'; expected ')' or ','"
    for terminal in grammar.get_parser().terminals:
        assert "__" not in syntax_errors._terminal_name(terminal.name)


def _lark_terminal(name: str) -> str:
    """The regular expression the .lark file writes for terminal ``name`` (``NAME: /…/``)."""
    found = re.search(rf"^{name}(\.\d+)?: /(.*)/$", grammar.grammar_text(), re.MULTILINE)
    assert found, name
    return found[2]


@pytest.mark.parametrize("name", ["WORD", "GLOB", "TYPE"])
def test_terminal_patterns_are_the_lark_files(name):
    assert grammar.terminal_pattern(name).pattern == _lark_terminal(name)


def test_an_identifier_is_a_type_selector_without_its_at():
    assert "@" + grammar.identifier_pattern().pattern == _lark_terminal("TYPE")
    for text in ("fc1", "Conv2d", "_x", "lr_decay"):
        assert grammar.identifier_pattern().fullmatch(text)
    for text in ("fc.1", "1x", "fc*", "a-b", ""):
        assert not grammar.identifier_pattern().fullmatch(text)


@pytest.mark.parametrize(
    "text, word, glob",
    [("quant", True, True), ("augmented-lagrangian", True, False), ("layers.0.attn", False, True),
     ("fc*", False, True), ("**", False, True), ("0fc", False, False), ("a b", False, False)],
)  # fmt: skip
def test_fmt_writes_names_and_globs_by_the_lexers_patterns(text, word, glob):
    """fmt writes a bare word or a glob exactly when the lexer would read it back as one token."""
    assert fmt._is_word(text) is word
    if glob:
        assert fmt.format_selector(NameSelector(text)) == text
    else:
        with pytest.raises(SpecError):
            fmt.format_selector(NameSelector(text))
