"""Syntax errors a person understands: labelled malformed examples matched by lark.

Each message comes with its diagnostic code and malformed one-line examples; lark's ``match_examples`` finds the example
whose parser state (and accepted tokens) is the one the user's text broke in, preferring an
example that broke on the same kind of token. ``{prev}`` is the word before the offending token,
``{token}`` the token, ``{expected}`` what would have been accepted. What no example covers falls
back to "unexpected X; expected one of …" (code ``syntax``) with tokens by readable names.
"""

from __future__ import annotations

import re

from lark import Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from lcdsl.errors import Diagnostic, Span
from lcdsl.language.grammar import ParseState, TooDeepError, get_parser, non_finite_message, parse_state

__all__ = ["describe_syntax_error", "token_span", "offset_span"]


def token_span(token: Token) -> Span:
    """The span of one lexed token."""
    return Span(token.line, token.column, token.end_line, token.end_column, token.start_pos, token.end_pos)


_SYNTAX_TABLE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "bad-statement", "a statement starts with selectors or a setting name, not {token}",
        ("( : quant(k=2)", ") = 1", "+ quant(k=2)", "] : quant(k=2)", "'fc1' : quant(k=2)"),
    ),
    ("bad-statement", "a rule needs selectors before ':'", (": quant(k=2)",)),
    ("bad-statement", "a setting needs a name before '='", ("= 3",)),
    (
        "missing-colon", "expected ':' (a rule) or '=' (a setting) after '{prev}'",
        ("fc1 quant(k=2)", "fc1", "fc1 (k=2)", "fc1 5"),
    ),
    (
        "missing-colon", "missing ':' between the selectors and the operator call",
        (
            "fc1, fc2 quant(k=2)", "@Linear quant(k=2)", "!fc1 quant(k=2)", "[fc1] quant(k=2)",
            "fc1, @Linear quant(k=2)", "fc1, !fc2 quant(k=2)", "fc1, [fc2] quant(k=2)",
            "fc1, fc2, fc3 quant(k=2)", "fc1, fc2", "@Linear", "[fc1]", "!fc1",
        ),
    ),
    (
        "equals-for-colon", "a rule uses ':' between selectors and operators, not '='",
        (
            "fc1, fc2 = quant(k=2)", "@Linear = quant(k=2)", "!fc1 = quant(k=2)", "[fc1] = quant(k=2)",
            "fc1, @Linear = quant(k=2)", "fc1, !fc2 = quant(k=2)", "fc1, [fc2] = quant(k=2)",
            "fc1, fc2, fc3 = quant(k=2)",
        ),
    ),
    (
        "unmatched-closer", "unmatched ']'",
        ("fc1] : quant(k=2)", "fc1, fc2] : quant(k=2)", "@Linear] : quant(k=2)", "fc1 : quant(k=2)]", "x = 1]"),
    ),
    ("unmatched-closer", "unmatched ')'", ("fc1 : quant(k=2))", "fc1) : quant(k=2)", "x = 1)")),
    (
        "missing-selector", "a ',' must be followed by another selector",
        (
            "fc1, : quant(k=2)", "fc1, fc2, : quant(k=2)", "fc1,", "fc1, , fc2 : quant(k=2)",
            "[fc1, ] : quant(k=2)", "[fc1, fc2, ] : quant(k=2)", "[fc1,",
        ),
    ),
    (
        "nested-group", "a joint group cannot contain another group",
        ("[fc1, [fc2]] : quant(k=2)", "[[fc1]] : quant(k=2)", "[fc1, fc2, [fc3]] : quant(k=2)"),
    ),
    (
        "empty-group", "a joint group needs at least one selector",
        ("[] : quant(k=2)", "[ : quant(k=2)", "[", "[, fc1] : quant(k=2)"),
    ),
    (
        "missing-bracket", "missing ']' to close the joint group",
        (
            "[fc1 : quant(k=2)", "[fc1, fc2 : quant(k=2)", "[@Linear : quant(k=2)", "[!fc1 : quant(k=2)",
            "[fc1", "[fc1, fc2", "[fc1, fc2, fc3 : quant(k=2)",
        ),
    ),
    (
        "missing-selector", "'!' must be followed by a selector",
        ("! : quant(k=2)", "!", "fc1, ! : quant(k=2)", "[!] : quant(k=2)", "!!fc1 : quant(k=2)", "fc1, !!fc2 : quant(k=2)"),
    ),
    (
        "missing-call", "expected an operator call after ':'",
        ("fc1 :", "fc1 : 5", "fc1 : [quant(k=2)]", "fc1 : 'quant'", "fc1 : + quant(k=2)", "fc1 : : quant(k=2)"),
    ),
    (
        "call-without-parens", "an operator call needs parentheses: write {prev}(…)",
        (
            "fc1 : binarize", "fc1 : binarize + quant(k=2)", "fc1 : quant k=2", "fc1 : quant(k=2) + binarize",
            "fc1 : quant(k=2) + binarize + prune(l0=1)",
        ),
    ),
    (
        "missing-call", "'+' must be followed by an operator call",
        ("fc1 : quant(k=2) +", "fc1 : quant(k=2) + + prune(l0=1)", "fc1 : quant(k=2) + 5"),
    ),
    (
        "trailing-text", "expected '+' or the end of the line after an operator call",
        ("fc1 : quant(k=2) prune(l0=1)", "fc1 : quant(k=2) fc2 : quant(k=2)", "fc1 : quant(k=2) = 1"),
    ),
    (
        "missing-value", "expected an amount after 'within', such as 40kB or 30%",
        ("fc1 : quant(k=2) within", "fc1 : quant(k=2) within kB", "fc1 : quant(k=2) within (", "fc1 : quant(k=2) within ,"),
    ),
    (
        "comma-for-plus", "operators are joined with '+', not ','",
        ("fc1 : quant(k=2), prune(l0=1)", "fc1 : quant(k=2),", "fc1 : quant(k=2) + prune(l0=1),"),
    ),
    (
        "missing-paren", "missing ')' to close the call",
        (
            "fc1 : quant(k=2", "fc1 : quant(k=2, bits=3", "fc1 : quant(", "fc1 : quant(2", "fc1 : quant(k=2.5",
            "fc1 : quant(k=5%", "fc1 : quant(k=a", "fc1 : quant(k='a'", "fc1 : quant(k=[1]", "fc1 : quant(k=f()",
            "x = g(a=1", "x = g(a=1, b=2", "x = g(", "x = g(1", "x = g(a=x", "x = g(a=f()",
            "fc1 : quant(k=2) + prune(l0=1", "fc1 : quant(k=2) + prune(",
        ),
    ),
    (
        "missing-argument", "expected an argument after ','",
        ("fc1 : quant(k=2,)", "fc1 : quant(k=2, bits=3,)", "fc1 : quant(k=2,", "x = g(a=1,)", "x = g(a=1, b=2,)", "fc1 : quant(k=2,,bits=3)"),
    ),
    (
        "missing-value", "expected a value after '='",
        ("fc1 : quant(k=)", "fc1 : quant(k=", "x = g(a=)", "x =", "x = )", "fc1 : quant(k=2, bits=)", "x = ,"),
    ),
    (
        "double-equals", "'==' is not an operator: write a single '=' between a name and its value",
        ("fc1 : quant(k==2)", "fc1 : quant(k=2, bits==3)", "x = g(a==1)", "x == 1"),
    ),
    ("missing-name", "an argument needs a name before '='", ("fc1 : quant(=2)", "fc1 : quant(k=2, =3)", "x = g(=1)")),
    (
        "missing-bracket", "missing ']' to close the list",
        (
            "x = [1, 2", "x = [1", "x = [", "x = [1, 2.5", "x = [a", "x = ['s'", "x = [5%", "x = [f()",
            "x = [[1]", "fc1 : quant(codebook=[1, 2)", "fc1 : quant(codebook=[1)", "fc1 : quant(codebook=[1, 2",
        ),
    ),
    (
        "missing-value", "expected a value after ','",
        ("x = [1, 2,]", "x = [1,]", "fc1 : quant(codebook=[1, 2,])", "x = [1,,2]"),
    ),
    (
        "trailing-text", "expected the end of the line after the setting's value",
        ("x = 1 2", "x = a b", "x = 'a' b", "x = 1% 2", "x = [1] 2", "x = g() 2", "x = 1.5 2"),
    ),
    (
        "list-without-brackets", "a list needs brackets: [a, b, …]",
        ("x = 1, 2", "x = a, b", "x = 1.5, 2", "x = 5%, 1%", "x = 'a', 'b'", "x = g(), h()"),
    ),
)

_SYNTAX_EXAMPLES = tuple((label, examples) for _, label, examples in _SYNTAX_TABLE)
"""(message, examples) pairs, as lark's ``match_examples`` takes them."""

_SYNTAX_CODES = {label: code for code, label, _ in _SYNTAX_TABLE}
"""The diagnostic code of each message of the table."""

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


def offset_span(text: str, offset: int, width: int = 1) -> Span:
    """The span of ``width`` characters of ``text`` from ``offset`` (lines and columns 1-based)."""
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
        return Diagnostic(
            "unterminated string",
            offset_span(text, offset, max(1, line_end - offset)),
            hint=f"close it with {char} on the same line",
            code="unterminated-string",
        )
    if char == "%" and re.search(r"\d\s+\Z", text[line_start:offset]):
        message = "a percent sign goes right after its number, without a space (5%)"
        return Diagnostic(message, offset_span(text, offset), code="percent-after-space")
    if char == "@":
        message = "'@' must be followed by a module class name, e.g. @Linear"
        return Diagnostic(message, offset_span(text, offset), code="missing-type")
    non_finite = _NON_FINITE_AT.match(text, offset)
    if non_finite:
        word = non_finite.group(0)
        return Diagnostic(non_finite_message(word), offset_span(text, offset, len(word)), code="non-finite")
    shown = f"'{char}'" if char.isprintable() and not char.isspace() else f"U+{ord(char):04X}"
    return Diagnostic(f"unexpected character {shown}", offset_span(text, offset), code="bad-character")


def describe_syntax_error(exc: UnexpectedInput, text: str, start: str, comments: list[Token]) -> Diagnostic:
    """One diagnostic for a lark syntax error: a message from the table, or "expected one of …"."""
    if isinstance(exc, UnexpectedCharacters):
        return _bad_character(exc, text)
    if not isinstance(exc, UnexpectedToken):
        span = offset_span(text, _end_of_content(text, len(text), comments))
        return Diagnostic("unexpected end of the input", span, code="syntax")
    token = exc.token
    if token.type in ("_NL", "$END"):
        end = token.start_pos if token.type == "_NL" and token.start_pos is not None else len(text)
        span = offset_span(text, _end_of_content(text, end, comments))
    else:
        span = token_span(token)
        non_finite = _NON_FINITE_AT.match(text, span.start) if token.type == "PLUS" else None
        if non_finite:  # `+nan`: the sign lexes as '+', the word after it as a name
            word = non_finite.group(0)
            return Diagnostic(non_finite_message(word), offset_span(text, span.start, len(word)), code="non-finite")
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
    if label is None:
        return Diagnostic("unexpected {token}; expected {expected}".format(**fields), span, code="syntax")
    return Diagnostic(label.format(**fields), span, code=_SYNTAX_CODES[label])
