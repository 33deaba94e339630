"""Fuzzing: whatever the text, ``parse`` returns a Spec or raises SpecError — nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lcdsl.errors import SpecError
from lcdsl.language.fmt import format_spec
from lcdsl.language.parser import parse, parse_expression
from lcdsl.language.spec import Spec

GRAMMAR = Path(__file__).resolve().parent.parent / "grammar"
CORPUS = [p.read_text(encoding="utf-8") for p in sorted(GRAMMAR.glob("*/*.lc"))]
ALPHABET = " \t\n\r#:=,+!@[]()%.*?-_'\"\\0123456789aefiklnqrtxAEFILN"


def parse_or_spec_error(text: str) -> None:
    try:
        spec = parse(text)
    except SpecError as exc:
        assert exc.diagnostics
        for diagnostic in exc.diagnostics:
            assert diagnostic.message
            assert "Token(" not in diagnostic.message and "__ANON" not in diagnostic.message
            if diagnostic.span is not None:
                assert 1 <= diagnostic.span.line <= text.count("\n") + 1
                assert 0 <= diagnostic.span.start <= len(text)
        exc.render()
        return
    assert isinstance(spec, Spec)
    # whatever parses also formats, and the canonical text reads back the same
    assert parse(format_spec(spec)) == spec


@st.composite
def mutations(draw) -> str:
    """A corpus file with characters deleted, inserted, duplicated or replaced."""
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["delete", "insert", "duplicate", "unicode"]))
        if action == "delete":
            j = draw(st.integers(i, min(len(text), i + 8)))
            text = text[:i] + text[j:]
        elif action == "insert":
            text = text[:i] + draw(st.sampled_from(ALPHABET)) + text[i:]
        elif action == "duplicate":
            text = text[:i] + text[i : i + 6] * draw(st.integers(2, 4)) + text[i:]
        else:
            text = text[:i] + draw(st.text(min_size=1, max_size=3)) + text[i:]
    return text


@given(st.text(ALPHABET, max_size=60))
@example("x = +nan")
@example("\r")
@example("fc1 : quant(k=2)\r")
@example("x = 1e" + "9" * 400)
@example("x = " + "f(" * 10000)
@example("x = " + "[" * 10000 + "]" * 10000)
@example("'" * 3)
@example("fc1 : f(k=" + "9" * 5000 + ")")
def test_text_from_the_language_alphabet(text):
    parse_or_spec_error(text)


@given(st.text(max_size=40))
def test_arbitrary_unicode(text):
    parse_or_spec_error(text)


@given(mutations())
def test_mutated_corpus_files(text):
    parse_or_spec_error(text)


@given(st.text(ALPHABET, max_size=40))
def test_expressions(text):
    try:
        terms = parse_expression(text)
    except SpecError:
        return
    assert isinstance(terms, tuple) and terms


@pytest.mark.slow
@settings(deadline=None)
@given(st.one_of(mutations(), st.text(ALPHABET, max_size=200), st.text(max_size=100)))
def test_long_fuzz(text):
    parse_or_spec_error(text)
