"""Text → :class:`~lcdsl.language.spec.Spec`: the parser and its transformer.

``parse`` turns any ``str`` into a Spec or raises :class:`~lcdsl.errors.SpecError` — never
anything else. Syntax errors stop at the first one (with a message a person understands, from
the table of labelled malformed examples in :mod:`lcdsl.language.syntax_errors`); the problems
found after parsing (repeated settings, numbers too long or not finite, bad escapes) are all
reported together.

Example::

    >>> spec = parse("fc1 : quant(k=2)   # one bit a weight")
    >>> spec.rules[0].terms[0].kwargs()
    {'k': 2}
"""

from __future__ import annotations

import math
import os

import attrs
from lark import Token, Transformer, Tree, v_args
from lark.exceptions import LarkError, UnexpectedInput

from lcdsl.errors import Diagnostic, Diagnostics, Span, SpecError, did_you_mean
from lcdsl.language.fmt import format_number
from lcdsl.language.grammar import (
    MAX_DEPTH,
    NON_FINITE_WORDS,
    ParseState,
    TooDeepError,
    get_parser,
    identifier_pattern,
    non_finite_message,
    parse_state,
)
from lcdsl.language.spec import (
    Argument,
    Call,
    Exclude,
    JointGroup,
    NameSelector,
    Percent,
    Range,
    Rule,
    Setting,
    Spec,
    Statement,
    TypeSelector,
    Value,
    Within,
)
from lcdsl.language.budgets import RELATIVE_UNITS, UNITS, absolute_amount, canonical_text, unit_hint
from lcdsl.language.syntax_errors import describe_syntax_error, offset_span, token_span

__all__ = ["parse", "load", "parse_expression", "MAX_NUMBER_LENGTH", "MAX_SPEC_LENGTH"]

MAX_NUMBER_LENGTH = 100
"""The most characters a number may have (longer ones are refused, not slowly converted)."""

MAX_SPEC_LENGTH = 1 << 18
"""The most characters a spec may have: a real one is a few hundred; a larger text is refused
before it is parsed, so a huge file cannot take minutes of parsing and binding."""

_MAX_SPEC_BYTES = 4 * MAX_SPEC_LENGTH  # more bytes than any spec of MAX_SPEC_LENGTH characters (UTF-8)

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _percent_number(number: float) -> str:
    """The number of a percentage as fmt writes it: ``30`` for 30.0, ``2.5`` for 2.5."""
    return str(int(number)) if number == int(number) and abs(number) < 1e16 else format_number(number)


def _meta_span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos)


@v_args(meta=True)
class _Builder(Transformer):
    """Parse tree → spec objects. Problems are collected in ``diagnostics``, never raised."""

    def __init__(self) -> None:
        super().__init__()
        self.diagnostics = Diagnostics()

    # ---- values
    def number(self, meta, children: list[Token]) -> int | float:
        token = children[0]
        return self._number(str(token), token_span(token))

    def percent(self, meta, children: list[Token]) -> Percent:
        token = children[0]
        value = self._number(str(token)[:-1], token_span(token), as_float=True)
        return Percent(value)

    def range(self, meta, children: list[Token]) -> Range:
        token = children[0]
        span = token_span(token)
        low_text, high_text = str(token).split("..")
        low, high = (self._number(t, span) for t in (low_text, high_text))
        if high < low:
            self.diagnostics.add(
                "empty-range",
                f"the range {token} is empty: it counts up from its first value to its last",
                span,
                hint=f"write {high}..{low}",
            )
        return Range(low, high, span=span)

    def budget(self, meta, children: list[Token]) -> Within:
        amount, *unit_token = children
        span = _meta_span(meta)
        relative = amount.type == "PERCENT"
        number_text = str(amount)[:-1] if relative else str(amount)
        number = self._number(number_text, token_span(amount))  # an int stays one in the text: 40kB
        unit = str(unit_token[0]) if unit_token else ""
        where = token_span(unit_token[0]) if unit_token else span
        if relative:
            quantity = RELATIVE_UNITS.get(unit)
            if quantity is None:
                self.diagnostics.add(
                    "unknown-unit",
                    f"a percentage budget is a share of the dense bits, flops or params, not '{unit}'",
                    where,
                    hint="write within 30%, within 30% flops or within 30% params",
                )
                quantity = "bits"
            value = number / 100.0
        elif unit not in UNITS:
            message = "a budget needs a unit" if not unit else f"unknown unit '{unit}'{did_you_mean(unit, UNITS)}"
            self.diagnostics.add("unknown-unit", message, where, hint=unit_hint())
            value, quantity = number, "bits"
        else:
            value, quantity = absolute_amount(number, unit)
        if number <= 0:
            self.diagnostics.add("bad-budget", f"a budget must be more than zero, got {amount}", token_span(amount))
        written = format_number(number) if not relative else _percent_number(number)
        text = canonical_text(written, unit, relative=relative)
        return Within(value, quantity, relative, text, span=span)

    def _number(self, text: str, span: Span, as_float: bool = False) -> int | float:
        if len(text) > MAX_NUMBER_LENGTH:
            self.diagnostics.add(
                "number-too-long", f"number too long ({len(text)} characters; at most {MAX_NUMBER_LENGTH})", span
            )
            return 0
        if not as_float and not any(c in text for c in ".eE"):
            return int(text)
        value = float(text)
        if not math.isfinite(value):
            self.diagnostics.add("non-finite", f"number out of range: {text} is not a finite float", span)
            return 0.0
        return value

    def string(self, meta, children: list[Token]) -> str:
        token = children[0]
        return self._unescape(str(token)[1:-1], token_span(token))

    def _unescape(self, body: str, span: Span) -> str:
        out: list[str] = []
        i = 0
        while i < len(body):
            c = body[i]
            if c != "\\":
                out.append(c)
                i += 1
                continue
            kind = body[i + 1]  # the grammar guarantees a character after every backslash
            if kind in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[kind])
                i += 2
                continue
            width = _HEX_ESCAPES.get(kind)
            digits = body[i + 2 : i + 2 + width] if width else ""
            if width and len(digits) == width and all(d in "0123456789abcdefABCDEF" for d in digits):
                code = int(digits, 16)
                if code <= 0x10FFFF:
                    out.append(chr(code))
                    i += 2 + width
                    continue
            self.diagnostics.add(
                "bad-escape",
                f"unknown escape '\\{kind}' in a string",
                span,
                hint="escapes are \\n \\t \\r \\0 \\\\ \\\" \\' \\xHH \\uHHHH \\UHHHHHHHH",
            )
            i += 2
        return "".join(out)

    def word(self, meta, children: list[Token]) -> bool | str:
        token = children[0]
        text = str(token)
        if text == "true":
            return True
        if text == "false":
            return False
        if text.lower() in NON_FINITE_WORDS:
            self.diagnostics.add(
                "non-finite",
                non_finite_message(text),
                token_span(token),
                hint=f'write "{text}" in quotes if a string is meant',
            )
        return text

    def list(self, meta, children: list[Value]) -> tuple:
        return tuple(children)

    def call(self, meta, children: list) -> Call:
        name, *args = children
        return Call(str(name), tuple(args), span=_meta_span(meta))

    def kwarg(self, meta, children: list) -> Argument:
        name, value = children
        return Argument(str(name), value, span=_meta_span(meta))

    def posarg(self, meta, children: list) -> Argument:
        return Argument(None, children[0], span=_meta_span(meta))

    # ---- selectors
    def name_sel(self, meta, children: list[Token]) -> NameSelector:
        glob = children[0]
        if len(children) == 1:
            return NameSelector(str(glob), span=token_span(glob))
        typed = children[1]
        if typed.start_pos != glob.end_pos:
            self.diagnostics.add(
                "spaced-type-filter",
                f"a type filter stands right after its glob: write '{glob}{typed}' (or '{glob}, {typed}' for two selectors)",
                _meta_span(meta),
            )
        return NameSelector(str(glob), str(typed)[1:], span=_meta_span(meta))

    def type_sel(self, meta, children: list[Token]) -> TypeSelector:
        return TypeSelector(str(children[0])[1:], span=token_span(children[0]))

    def exclude(self, meta, children: list) -> Exclude:
        return Exclude(children[0], span=_meta_span(meta))

    def group(self, meta, children: list) -> JointGroup:
        name = None
        if children and isinstance(children[-1], Token):
            name = str(children.pop())
        return JointGroup(tuple(children), name, span=_meta_span(meta))

    def selectors(self, meta, children: list) -> tuple:
        return tuple(children)

    # ---- statements
    def expr(self, meta, children: list[Call]) -> tuple[Call, ...]:
        return tuple(children)

    def rule(self, meta, children: list) -> Rule:
        selectors, terms, *budgets = children
        for repeated in budgets[1:]:
            self.diagnostics.add(
                "repeated-budget",
                f"a rule has one budget: 'within {budgets[0].text}' is already given",
                repeated.span,
                hint="keep one 'within …'",
            )
        budget = budgets[0] if budgets else None
        return Rule(selectors, terms, budget, span=_meta_span(meta))

    def setting(self, meta, children: list) -> Setting:
        name, value = children
        if not identifier_pattern().fullmatch(str(name)):
            self.diagnostics.add(
                "bad-setting-name",
                f"'{name}' is not a setting name; a rule needs ':' between selectors and operators",
                token_span(name),
                hint=f"write '{name} : …' to compress what '{name}' selects",
            )
        return Setting(str(name), value, span=_meta_span(meta))

    def start(self, meta, children: list[Statement]) -> list[Statement]:
        return list(children)


def _comment_text(token: Token) -> str:
    """The text after ``#`` without one leading space; an empty comment is ``" "`` (``""`` is a blank line)."""
    text = str(token)[1:].rstrip()
    text = text[1:] if text.startswith(" ") else text
    return text or " "


def _attach_comments(statements: list[Statement], comments: list[Token], text: str) -> tuple[list[Statement], tuple[str, ...]]:
    """Blank and comment lines go to the statement below them; end-of-line comments to their line."""
    by_line = {c.line: c for c in comments}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text ends with a newline: no line after it

    def gap(first: int, last: int) -> tuple[str, ...]:
        out: list[str] = []
        for number in range(first, last + 1):
            comment = by_line.get(number)
            entry = _comment_text(comment) if comment is not None else ""
            if entry == "" and out and out[-1] == "":
                continue  # runs of blank lines collapse to one
            out.append(entry)
        return tuple(out)

    result: list[Statement] = []
    previous = 0
    for statement in statements:
        line = statement.span.line
        own = by_line.get(line)
        result.append(
            attrs.evolve(
                statement,
                leading=gap(previous + 1, line - 1),
                comment=_comment_text(own) if own is not None else None,
            )
        )
        previous = statement.span.end_line
    return result, gap(previous + 1, len(lines))


def _raise_syntax(exc: UnexpectedInput | TooDeepError, text: str, filename: str, start: str, state: ParseState) -> None:
    if isinstance(exc, TooDeepError):
        message = f"nesting deeper than {MAX_DEPTH} brackets and parentheses"
        diag = Diagnostic(message, token_span(exc.token), code="too-deep")
    else:
        diag = describe_syntax_error(exc, text, start, state.comments)
    raise SpecError(diag, source=text, filename=filename) from None


def _run(text: str, filename: str, start: str):
    if not isinstance(text, str):
        raise TypeError(f"a spec is text (str), got {type(text).__name__}")
    if len(text) > MAX_SPEC_LENGTH:
        message = f"the spec has {len(text):,} characters; at most {MAX_SPEC_LENGTH:,} are read"
        raise SpecError(Diagnostic(message, code="too-long"), filename=filename)
    nul = text.find("\0")
    if nul >= 0:
        diag = Diagnostic("the spec contains a NUL character", offset_span(text, nul), code="not-text")
        raise SpecError(diag, source=text, filename=filename)
    state = ParseState()
    token = parse_state().set(state)
    try:
        tree = get_parser().parse(text, start=start)
    except (UnexpectedInput, TooDeepError) as exc:
        _raise_syntax(exc, text, filename, start, state)
    except LarkError as exc:  # a lark failure that is not a located syntax error
        diag = Diagnostic(f"cannot parse the spec: {exc}", code="syntax")
        raise SpecError(diag, source=text, filename=filename) from None
    finally:
        parse_state().reset(token)
    builder = _Builder()
    value = builder.transform(tree) if isinstance(tree, Tree) else tree
    return value, builder.diagnostics, state


def parse(text: str, filename: str = "<spec>") -> Spec:
    """Parse the text of a ``.lc`` spec.

    Args:
        text: the whole spec.
        filename: the name used in error messages.

    Returns:
        The spec, with spans on every node and comments kept for ``fmt``.

    Raises:
        SpecError: the first syntax error, or every problem found after parsing (repeated
            setting names, numbers too long or not finite, unknown string escapes).
    """
    statements, diagnostics, state = _run(text, filename, "start")
    seen: dict[str, Setting] = {}
    for statement in statements:
        if not isinstance(statement, Setting):
            continue
        first = seen.get(statement.name)
        if first is not None:
            diagnostics.add(
                "repeated-setting",
                f"setting '{statement.name}' is already set on line {first.span.line}",
                statement.span,
                hint="keep one of the two lines",
            )
        else:
            seen[statement.name] = statement
    diagnostics.raise_if_any(source=text, filename=filename)
    statements, trailing = _attach_comments(statements, state.comments, text)
    return Spec(tuple(statements), source=text, filename=filename, trailing=trailing)


def parse_expression(text: str) -> tuple[Call, ...]:
    """Parse the right-hand side of a rule alone, e.g. ``"quant(k=2) + prune(l0=1%)"``.

    Raises:
        SpecError: the text is not one operator call or a sum of them.
    """
    terms, diagnostics, _ = _run(text, "<expression>", "expr")
    diagnostics.raise_if_any(source=text, filename="<expression>")
    return terms


def _decode_error(data: bytes, filename: str, offset: int, message: str) -> SpecError:
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    span = Span(line, column, line, column + 1, offset, offset + 1)
    source = data.decode("utf-8", errors="replace")
    return SpecError(Diagnostic(message, span, code="not-text"), source=source, filename=filename)


def load(path: str | os.PathLike[str]) -> Spec:
    """Read and parse a ``.lc`` file (UTF-8; a byte-order mark is allowed).

    Raises:
        SpecError: the file cannot be read, is not UTF-8 text, or does not parse.
    """
    filename = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_SPEC_BYTES + 1)  # never more: /dev/zero or a huge file stops here
    except OSError as exc:
        diag = Diagnostic(f"cannot read the spec: {exc.strerror or exc}", code="unreadable")
        raise SpecError(diag, filename=filename) from None
    if len(data) > _MAX_SPEC_BYTES:
        message = f"the file has more than {_MAX_SPEC_BYTES:,} bytes; a spec has at most {MAX_SPEC_LENGTH:,} characters"
        raise SpecError(Diagnostic(message, code="too-long"), filename=filename)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\0")
    if nul >= 0:
        raise _decode_error(data, filename, nul, "the file contains a NUL byte; a spec is text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _decode_error(data, filename, exc.start, f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    return parse(text, filename)
