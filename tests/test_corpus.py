"""The grammar corpus: every valid example parses and round-trips; every invalid one fails
with exactly the line, column, diagnostic code and message its first line announces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lcdsl.errors import CODES, SpecError
from lcdsl.language.fmt import format_spec
from lcdsl.language.parser import load, parse

GRAMMAR = Path(__file__).resolve().parent.parent / "grammar"
VALID = sorted((GRAMMAR / "valid").glob("*.lc"))
INVALID = sorted((GRAMMAR / "invalid").glob("*.lc"))
_EXPECT = re.compile(r"# expect: (\d+):(\d+): \[([a-z0-9-]+)\] (.+)")


def test_the_corpus_is_there():
    assert len(VALID) >= 12
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_parses_and_round_trips(path):
    spec = load(path)
    text = format_spec(spec)
    again = parse(text)
    assert again == spec
    assert [(s.leading, s.comment) for s in again.statements] == [
        (s.leading, s.comment) for s in parse(format_spec(again)).statements
    ]
    assert format_spec(again) == text


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_fails_where_it_says(path):
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    match = _EXPECT.fullmatch(first)
    assert match, f"{path.name} must start with '# expect: LINE:COL: [code] message'"
    line, column, code, fragment = int(match[1]), int(match[2]), match[3], match[4]
    assert code in CODES
    with pytest.raises(SpecError) as caught:
        load(path)
    diagnostic = caught.value.diagnostics[0]
    assert (diagnostic.span.line, diagnostic.span.column) == (line, column), caught.value.render()
    assert fragment in diagnostic.message
    assert diagnostic.code == code
    rendered = caught.value.render()
    assert rendered.startswith(f"{path}:{line}:{column}: error: ")
    assert "Token(" not in rendered and "__ANON" not in rendered
