"""Text → :class:`~lcdsl.spec.Spec`: the parser, its transformer, and syntax-error messages.

``parse`` turns any ``str`` into a Spec or raises :class:`~lcdsl.errors.SpecError` — never
anything else. Syntax errors stop at the first one (with a message a person understands, from
the table of labelled malformed examples below); the problems found after parsing (repeated settings,
numbers too long or not finite, bad escapes) are all reported together.

Example::

    >>> spec = parse("fc1 : quant(k=2)   # one bit a weight")
    >>> spec.rules[0].terms[0].kwargs()
    {'k': 2}
"""

from __future__ import annotations

import math
import os
import re

import attrs
from lark import Token, Transformer, Tree, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from lcdsl.errors import Diagnostic, Span, SpecError
from lcdsl.grammar import MAX_DEPTH, ParseState, TooDeepError, get_parser, parse_state
from lcdsl.spec import (
    Argument,
    Call,
    Exclude,
    JointGroup,
    NameSelector,
    Percent,
    Rule,
    Setting,
    Spec,
    Statement,
    TypeSelector,
    Value,
)

__all__ = ["parse", "load", "parse_expression", "MAX_NUMBER_LENGTH"]

MAX_NUMBER_LENGTH = 100
"""The most characters a number may have (longer ones are refused, not slowly converted)."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NON_FINITE = frozenset({"nan", "inf", "infinity"})
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def token_span(token: Token) -> Span:
    """The span of one lexed token."""
    return Span(token.line, token.column, token.end_line, token.end_column, token.start_pos, token.end_pos)


def _meta_span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos)


@v_args(meta=True)
class _Builder(Transformer):
    """Parse tree → spec objects. Problems are collected in ``diagnostics``, never raised."""

    def __init__(self) -> None:
        super().__init__()
        self.diagnostics: list[Diagnostic] = []

    def _error(self, message: str, span: Span, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, span, hint))

    # ---- values
    def number(self, meta, children: list[Token]) -> int | float:
        token = children[0]
        return self._number(str(token), token_span(token))

    def percent(self, meta, children: list[Token]) -> Percent:
        token = children[0]
        value = self._number(str(token)[:-1], token_span(token), as_float=True)
        return Percent(value)

    def _number(self, text: str, span: Span, as_float: bool = False) -> int | float:
        if len(text) > MAX_NUMBER_LENGTH:
            self._error(f"number too long ({len(text)} characters; at most {MAX_NUMBER_LENGTH})", span)
            return 0
        if not as_float and not any(c in text for c in ".eE"):
            return int(text)
        value = float(text)
        if not math.isfinite(value):
            self._error(f"number out of range: {text} is not a finite float", span)
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
            self._error(
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
        if text.lower() in _NON_FINITE:
            self._error(
                f"'{text}' is not allowed: numbers must be finite",
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
        return NameSelector(str(children[0]), span=token_span(children[0]))

    def type_sel(self, meta, children: list[Token]) -> TypeSelector:
        return TypeSelector(str(children[0])[1:], span=token_span(children[0]))

    def exclude(self, meta, children: list) -> Exclude:
        return Exclude(children[0], span=_meta_span(meta))

    def group(self, meta, children: list) -> JointGroup:
        return JointGroup(tuple(children), span=_meta_span(meta))

    def selectors(self, meta, children: list) -> tuple:
        return tuple(children)

    # ---- statements
    def expr(self, meta, children: list[Call]) -> tuple[Call, ...]:
        return tuple(children)

    def rule(self, meta, children: list) -> Rule:
        selectors, terms = children
        return Rule(selectors, terms, span=_meta_span(meta))

    def setting(self, meta, children: list) -> Setting:
        name, value = children
        if not _IDENTIFIER.match(str(name)):
            self._error(
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
        diag = Diagnostic(
            f"nesting deeper than {MAX_DEPTH} brackets and parentheses", token_span(exc.token)
        )
    else:
        diag = describe_syntax_error(exc, text, start, state.comments)
    raise SpecError(diag, source=text, filename=filename) from None


def _run(text: str, filename: str, start: str):
    if not isinstance(text, str):
        raise TypeError(f"a spec is text (str), got {type(text).__name__}")
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        column = nul - (text.rfind("\n", 0, nul) + 1) + 1
        span = Span(line, column, line, column + 1, nul, nul + 1)
        raise SpecError(Diagnostic("the spec contains a NUL character", span), source=text, filename=filename)
    state = ParseState()
    token = parse_state().set(state)
    try:
        tree = get_parser().parse(text, start=start)
    except (UnexpectedInput, TooDeepError) as exc:
        _raise_syntax(exc, text, filename, start, state)
    except LarkError as exc:  # a lark failure that is not a located syntax error
        raise SpecError(Diagnostic(f"cannot parse the spec: {exc}"), source=text, filename=filename) from None
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
            diagnostics.append(
                Diagnostic(
                    f"setting '{statement.name}' is already set on line {first.span.line}",
                    statement.span,
                    hint="keep one of the two lines",
                )
            )
        else:
            seen[statement.name] = statement
    if diagnostics:
        raise SpecError(diagnostics, source=text, filename=filename)
    statements, trailing = _attach_comments(statements, state.comments, text)
    return Spec(tuple(statements), source=text, filename=filename, trailing=trailing)


def parse_expression(text: str) -> tuple[Call, ...]:
    """Parse the right-hand side of a rule alone, e.g. ``"quant(k=2) + prune(l0=1%)"``.

    Raises:
        SpecError: the text is not one operator call or a sum of them.
    """
    terms, diagnostics, _ = _run(text, "<expression>", "expr")
    if diagnostics:
        raise SpecError(diagnostics, source=text, filename="<expression>")
    return terms


def _decode_error(data: bytes, filename: str, offset: int, message: str) -> SpecError:
    line = data.count(b"\n", 0, offset) + 1
    line_start = data.rfind(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    span = Span(line, column, line, column + 1, offset, offset + 1)
    source = data.decode("utf-8", errors="replace")
    return SpecError(Diagnostic(message, span), source=source, filename=filename)


def load(path: str | os.PathLike[str]) -> Spec:
    """Read and parse a ``.lc`` file (UTF-8; a byte-order mark is allowed).

    Raises:
        SpecError: the file cannot be read, is not UTF-8 text, or does not parse.
    """
    filename = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SpecError(Diagnostic(f"cannot read the spec: {exc.strerror or exc}"), filename=filename) from None
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


# ---- syntax errors ------------------------------------------------------------------------
#
# Each message comes with malformed one-line examples; lark's ``match_examples`` finds the
# example whose parser state (and accepted tokens) is the one the user's text broke in,
# preferring an example that broke on the same kind of token. ``{prev}`` is the word before
# the offending token, ``{token}`` the token, ``{expected}`` what would have been accepted.

_SYNTAX_EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "a statement starts with selectors or a setting name, not {token}",
        ("5 : quant(k=2)", "( : quant(k=2)", ") = 1", "+ quant(k=2)", "] : quant(k=2)", "'fc1' : quant(k=2)"),
    ),
    ("a rule needs selectors before ':'", (": quant(k=2)",)),
    ("a setting needs a name before '='", ("= 3",)),
    (
        "expected ':' (a rule) or '=' (a setting) after '{prev}'",
        ("fc1 quant(k=2)", "fc1", "fc1 (k=2)", "fc1 5"),
    ),
    (
        "missing ':' between the selectors and the operator call",
        (
            "fc1, fc2 quant(k=2)", "@Linear quant(k=2)", "!fc1 quant(k=2)", "[fc1] quant(k=2)",
            "fc1, @Linear quant(k=2)", "fc1, !fc2 quant(k=2)", "fc1, [fc2] quant(k=2)",
            "fc1, fc2, fc3 quant(k=2)", "fc1, fc2", "@Linear", "[fc1]", "!fc1",
        ),
    ),
    (
        "a rule uses ':' between selectors and operators, not '='",
        (
            "fc1, fc2 = quant(k=2)", "@Linear = quant(k=2)", "!fc1 = quant(k=2)", "[fc1] = quant(k=2)",
            "fc1, @Linear = quant(k=2)", "fc1, !fc2 = quant(k=2)", "fc1, [fc2] = quant(k=2)",
            "fc1, fc2, fc3 = quant(k=2)",
        ),
    ),
    (
        "unmatched ']'",
        ("fc1] : quant(k=2)", "fc1, fc2] : quant(k=2)", "@Linear] : quant(k=2)", "fc1 : quant(k=2)]", "x = 1]"),
    ),
    ("unmatched ')'", ("fc1 : quant(k=2))", "fc1) : quant(k=2)", "x = 1)")),
    (
        "a ',' must be followed by another selector",
        (
            "fc1, : quant(k=2)", "fc1, fc2, : quant(k=2)", "fc1,", "fc1, , fc2 : quant(k=2)",
            "[fc1, ] : quant(k=2)", "[fc1, fc2, ] : quant(k=2)", "[fc1,",
        ),
    ),
    (
        "a joint group cannot contain another group",
        ("[fc1, [fc2]] : quant(k=2)", "[[fc1]] : quant(k=2)", "[fc1, fc2, [fc3]] : quant(k=2)"),
    ),
    ("a joint group needs at least one selector", ("[] : quant(k=2)", "[ : quant(k=2)", "[", "[, fc1] : quant(k=2)")),
    (
        "missing ']' to close the joint group",
        (
            "[fc1 : quant(k=2)", "[fc1, fc2 : quant(k=2)", "[@Linear : quant(k=2)", "[!fc1 : quant(k=2)",
            "[fc1", "[fc1, fc2", "[fc1, fc2, fc3 : quant(k=2)",
        ),
    ),
    (
        "'!' must be followed by a selector",
        ("! : quant(k=2)", "!", "fc1, ! : quant(k=2)", "[!] : quant(k=2)", "!!fc1 : quant(k=2)", "fc1, !!fc2 : quant(k=2)"),
    ),
    (
        "expected an operator call after ':'",
        ("fc1 :", "fc1 : 5", "fc1 : [quant(k=2)]", "fc1 : 'quant'", "fc1 : + quant(k=2)", "fc1 : : quant(k=2)"),
    ),
    (
        "an operator call needs parentheses: write {prev}(…)",
        (
            "fc1 : binarize", "fc1 : binarize + quant(k=2)", "fc1 : quant k=2", "fc1 : quant(k=2) + binarize",
            "fc1 : quant(k=2) + binarize + prune(l0=1)",
        ),
    ),
    ("'+' must be followed by an operator call", ("fc1 : quant(k=2) +", "fc1 : quant(k=2) + + prune(l0=1)", "fc1 : quant(k=2) + 5")),
    (
        "expected '+' or the end of the line after an operator call",
        ("fc1 : quant(k=2) prune(l0=1)", "fc1 : quant(k=2) fc2 : quant(k=2)", "fc1 : quant(k=2) = 1"),
    ),
    (
        "operators are joined with '+', not ','",
        ("fc1 : quant(k=2), prune(l0=1)", "fc1 : quant(k=2),", "fc1 : quant(k=2) + prune(l0=1),"),
    ),
    (
        "missing ')' to close the call",
        (
            "fc1 : quant(k=2", "fc1 : quant(k=2, bits=3", "fc1 : quant(", "fc1 : quant(2", "fc1 : quant(k=2.5",
            "fc1 : quant(k=5%", "fc1 : quant(k=a", "fc1 : quant(k='a'", "fc1 : quant(k=[1]", "fc1 : quant(k=f()",
            "x = g(a=1", "x = g(a=1, b=2", "x = g(", "x = g(1", "x = g(a=x", "x = g(a=f()",
            "fc1 : quant(k=2) + prune(l0=1", "fc1 : quant(k=2) + prune(",
        ),
    ),
    (
        "expected an argument after ','",
        ("fc1 : quant(k=2,)", "fc1 : quant(k=2, bits=3,)", "fc1 : quant(k=2,", "x = g(a=1,)", "x = g(a=1, b=2,)", "fc1 : quant(k=2,,bits=3)"),
    ),
    (
        "expected a value after '='",
        ("fc1 : quant(k=)", "fc1 : quant(k=", "x = g(a=)", "x =", "x = )", "fc1 : quant(k=2, bits=)", "x = ,"),
    ),
    (
        "'==' is not an operator: write a single '=' between a name and its value",
        ("fc1 : quant(k==2)", "fc1 : quant(k=2, bits==3)", "x = g(a==1)", "x == 1"),
    ),
    ("an argument needs a name before '='", ("fc1 : quant(=2)", "fc1 : quant(k=2, =3)", "x = g(=1)")),
    (
        "missing ']' to close the list",
        (
            "x = [1, 2", "x = [1", "x = [", "x = [1, 2.5", "x = [a", "x = ['s'", "x = [5%", "x = [f()",
            "x = [[1]", "fc1 : quant(codebook=[1, 2)", "fc1 : quant(codebook=[1)", "fc1 : quant(codebook=[1, 2",
        ),
    ),
    ("expected a value after ','", ("x = [1, 2,]", "x = [1,]", "fc1 : quant(codebook=[1, 2,])", "x = [1,,2]")),
    (
        "expected the end of the line after the setting's value",
        ("x = 1 2", "x = a b", "x = 'a' b", "x = 1% 2", "x = [1] 2", "x = g() 2", "x = 1.5 2"),
    ),
    (
        "a list needs brackets: [a, b, …]",
        ("x = 1, 2", "x = a, b", "x = 1.5, 2", "x = 5%, 1%", "x = 'a', 'b'", "x = g(), h()"),
    ),
)

_RULE_PREFIX = "fc1 : "
_EXPRESSION_EXAMPLES = tuple(
    (label, tuple(e[len(_RULE_PREFIX) :] for e in examples if e.startswith(_RULE_PREFIX)))
    for label, examples in _SYNTAX_EXAMPLES
)

_READABLE = {
    "GLOB": "a selector",
    "TYPE": "a type selector such as @Linear",
    "WORD": "a name",
    "NUMBER": "a number",
    "PERCENT": "a percentage",
    "STRING": "a string",
    "_NL": "the end of the line",
    "$END": "the end of the input",
}
_NON_FINITE_AT = re.compile(r"[+-]?(inf(inity)?|nan)(?![A-Za-z0-9_-])", re.IGNORECASE)
_PREVIOUS_WORD = re.compile(r"([^\s(),=:+\[\]]+)\s*\Z")


def _terminal_name(name: str) -> str:
    if name in _READABLE:
        return _READABLE[name]
    terminal = {t.name: t for t in get_parser().terminals}.get(name)
    if terminal is not None and terminal.pattern.type == "str":
        return f"'{terminal.pattern.value}'"
    return name.lower()


def _expected(names) -> str:
    readable = sorted({_terminal_name(n) for n in names or () if n not in ("WS_INLINE", "COMMENT")})
    if not readable:
        return "nothing more"
    if len(readable) == 1:
        return readable[0]
    if len(readable) == 2:
        return f"{readable[0]} or {readable[1]}"
    return "one of " + ", ".join(readable)


def _describe_token(token: Token) -> str:
    if token.type in ("_NL", "$END"):
        return "end of line" if token.type == "_NL" else "end of input"
    text = str(token)
    return f"'{text[:24]}…'" if len(text) > 24 else f"'{text}'"


def _offset_span(text: str, offset: int, width: int = 1) -> Span:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Span(line, column, line, column + width, offset, offset + width)


def _end_of_content(text: str, offset: int, comments: list[Token]) -> int:
    """The offset just after the last real token before ``offset`` (skipping blanks and a comment)."""
    for comment in comments:
        if comment.end_pos == offset or (comment.end_pos < offset and not text[comment.end_pos : offset].strip()):
            offset = comment.start_pos
    while offset > 0 and text[offset - 1] in " \t\r\n":
        offset -= 1
    return offset


def _quiet_parse(text: str, start: str):
    token = parse_state().set(ParseState())
    try:
        return get_parser().parse(text, start=start)
    finally:
        parse_state().reset(token)


def _top_state(exc: UnexpectedInput) -> UnexpectedInput:
    # lark's match_examples logs states with "%d": compare the top parser state (an int) rather
    # than the ParserState object (the stack is the same height for every example's line).
    exc.state = getattr(exc.state, "position", exc.state)
    return exc


def _example_parse(start: str):
    def parse_fn(text: str):
        try:
            return _quiet_parse(text, start)
        except UnexpectedInput as exc:
            raise _top_state(exc) from None

    return parse_fn


def _match_label(line_text: str, start: str) -> tuple[str | None, UnexpectedInput | None]:
    """The table's message for the error ``line_text`` makes when parsed alone (a fresh stack)."""
    try:
        _quiet_parse(line_text, start)
    except UnexpectedToken as again:
        examples = _SYNTAX_EXAMPLES if start == "start" else _EXPRESSION_EXAMPLES
        label = _top_state(again).match_examples(
            _example_parse(start), examples, use_accepts=True, token_type_match_fallback=True
        )
        return label, again
    except (UnexpectedInput, TooDeepError, LarkError):
        pass
    return None, None


def _bad_character(exc: UnexpectedCharacters, text: str) -> Diagnostic:
    offset = exc.pos_in_stream
    char = text[offset]
    line_start = text.rfind("\n", 0, offset) + 1
    if char in "\"'":
        line_end = text.find("\n", offset)
        line_end = len(text) if line_end < 0 else line_end
        return Diagnostic("unterminated string", _offset_span(text, offset, max(1, line_end - offset)),
                          hint=f"close it with {char} on the same line")
    if char == "%" and re.search(r"\d\s+\Z", text[line_start:offset]):
        return Diagnostic("a percent sign goes right after its number, without a space (5%)", _offset_span(text, offset))
    if char == "@":
        return Diagnostic("'@' must be followed by a module class name, e.g. @Linear", _offset_span(text, offset))
    non_finite = _NON_FINITE_AT.match(text, offset)
    if non_finite:
        word = non_finite.group(0)
        return Diagnostic(f"'{word}' is not allowed: numbers must be finite", _offset_span(text, offset, len(word)))
    shown = f"'{char}'" if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"
    return Diagnostic(f"unexpected character {shown}", _offset_span(text, offset))


def describe_syntax_error(exc: UnexpectedInput, text: str, start: str, comments: list[Token]) -> Diagnostic:
    """One diagnostic for a lark syntax error: a message from the table, or "expected one of …"."""
    if isinstance(exc, UnexpectedCharacters):
        return _bad_character(exc, text)
    if not isinstance(exc, UnexpectedToken):
        return Diagnostic("unexpected end of the input", _offset_span(text, _end_of_content(text, len(text), comments)))
    token = exc.token
    if token.type in ("_NL", "$END"):
        end = token.start_pos if token.type == "_NL" and token.start_pos is not None else len(text)
        span = _offset_span(text, _end_of_content(text, end, comments))
    else:
        span = token_span(token)
        non_finite = _NON_FINITE_AT.match(text, span.start) if token.type == "PLUS" else None
        if non_finite:  # `+nan`: the sign lexes as '+', the word after it as a name
            word = non_finite.group(0)
            return Diagnostic(f"'{word}' is not allowed: numbers must be finite", _offset_span(text, span.start, len(word)))
    lines = text.split("\n")
    line_text = lines[span.line - 1] if span.line <= len(lines) else ""
    label, again = _match_label(line_text.rstrip("\r"), start)
    accepts = exc.accepts if exc.accepts else exc.expected
    before = text[: span.start]
    previous = _PREVIOUS_WORD.search(before)
    fields = {
        "token": _describe_token(token),
        "prev": previous.group(1) if previous else "",
        "expected": _expected(accepts),
    }
    message = (label or "unexpected {token}; expected {expected}").format(**fields)
    return Diagnostic(message, span)
