"""The .lc grammar: where the ``.lark`` file lies, and the LALR parser built from it, once.

The wheel ships the grammar as ``lcdsl/language/lcdsl.lark``; an editable install reads the repository's
``grammar/lcdsl.lark``. Either way there is one source of truth.

Lexer callbacks feed the parse in progress (:class:`ParseState`): comments are collected for
``fmt`` and bracket depth is bounded, so nesting can never exhaust Python's stack later.

The patterns of names and globs live in the ``.lark`` file only: :func:`terminal_pattern` and
:func:`identifier_pattern` read them from the built parser, for the parser's own checks and for
``fmt``, which must write nothing the lexer would read differently.
"""

from __future__ import annotations

import contextvars
import functools
import re
from importlib import resources
from pathlib import Path

import attrs
from lark import Lark, Token

__all__ = [
    "MAX_DEPTH", "NON_FINITE_WORDS", "non_finite_message", "ParseState", "TooDeepError", "grammar_text",
    "build_parser", "get_parser", "parse_state", "terminal_pattern", "identifier_pattern",
]  # fmt: skip

NON_FINITE_WORDS = frozenset({"nan", "inf", "infinity"})
"""Words (any case) that would read as non-finite floats: never numbers in a spec, and quoted
when they are strings."""


def non_finite_message(word: str) -> str:
    """The error for a non-finite number written in a spec."""
    return f"'{word}' is not allowed: numbers must be finite"

MAX_DEPTH = 32
"""The most brackets and parentheses open at once."""

_OPENING = frozenset({"LPAR", "LSQB"})
_CLOSING = frozenset({"RPAR", "RSQB"})


class TooDeepError(Exception):
    """Raised from the lexer when nesting passes :data:`MAX_DEPTH` (turned into a SpecError)."""

    def __init__(self, token: Token) -> None:
        super().__init__(f"nesting deeper than {MAX_DEPTH} at line {token.line}")
        self.token = token


@attrs.define
class ParseState:
    """What the lexer callbacks record while one text is parsed."""

    comments: list[Token] = attrs.field(factory=list)
    """Every ``#`` comment token, in source order."""
    depth: int = 0
    """Brackets and parentheses open right now."""


_STATE: contextvars.ContextVar[ParseState | None] = contextvars.ContextVar("lcdsl_parse_state", default=None)


def parse_state() -> contextvars.ContextVar[ParseState | None]:
    """The context variable holding the state of the parse in progress (None outside one)."""
    return _STATE


def _on_comment(token: Token) -> Token:
    state = _STATE.get()
    if state is not None:
        state.comments.append(token)
    return token


def _on_open(token: Token) -> Token:
    state = _STATE.get()
    if state is not None:
        state.depth += 1
        if state.depth > MAX_DEPTH:
            raise TooDeepError(token)
    return token


def _on_close(token: Token) -> Token:
    state = _STATE.get()
    if state is not None:
        state.depth -= 1
    return token


def grammar_text() -> str:
    """The grammar's source: from the installed package, else from the repository checkout."""
    packaged = resources.files("lcdsl.language") / "lcdsl.lark"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    repo = Path(__file__).resolve().parents[2] / "grammar" / "lcdsl.lark"
    return repo.read_text(encoding="utf-8")


def build_parser(*, strict: bool = False) -> Lark:
    """A fresh LALR parser of the grammar; ``strict=True`` turns conflicts and collisions into errors.

    Starts: ``start`` (a whole file) and ``expr`` (the right-hand side of a rule alone).
    """
    callbacks = {"COMMENT": _on_comment}
    callbacks.update({name: _on_open for name in _OPENING})
    callbacks.update({name: _on_close for name in _CLOSING})
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        start=["start", "expr"],
        propagate_positions=True,
        maybe_placeholders=False,
        lexer_callbacks=callbacks,
        strict=strict,
    )


@functools.cache
def get_parser() -> Lark:
    """The shared parser, built on first use."""
    return build_parser()


@functools.cache
def terminal_pattern(name: str) -> re.Pattern[str]:
    """The regular expression of the grammar's terminal ``name`` (``WORD``, ``GLOB``, …), as the
    lexer uses it; ``fullmatch`` tells whether a text is one such token.

    Raises:
        KeyError: the grammar has no terminal of that name.
    """
    return re.compile(get_parser().get_terminal(name).pattern.to_regexp())


@functools.cache
def identifier_pattern() -> re.Pattern[str]:
    """A plain name: a setting's name, or a module class name (``Linear`` in ``@Linear``).

    The grammar spells it once, as the ``TYPE`` terminal after its ``@``; a setting's name is
    lexed as a ``GLOB`` and the parser checks it against this."""
    regexp = terminal_pattern("TYPE").pattern
    if not regexp.startswith("@"):
        raise RuntimeError(f"the grammar's TYPE terminal no longer starts with '@': {regexp}")
    return re.compile(regexp[1:])
