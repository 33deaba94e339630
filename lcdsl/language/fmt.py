"""The canonical text of a spec: what ``lcdsl fmt`` prints.

Layout rules:

- a *block* is a run of consecutive statements of one kind (rules, or settings) not broken by
  a blank line; in a block of rules the ``:`` are aligned, in a block of settings the ``=``;
  end-of-line comments of a block start in one column, three spaces after the longest statement
  that has one;
- one space around ``+`` and ``:``/``=`` of statements, one after ``,``; ``k=4`` in calls;
- numbers normalised: ints as ints, floats in the shortest form that reads back the same
  (``9e-5``, ``0.1``, ``1000.0``), percents as ``5%``; strings quoted only when a bare word
  would not read back as the same string;
- comment and blank lines are kept (runs of blank lines become one; none at the start or end).

``parse(format_spec(spec)) == spec`` for every spec the grammar can express. This module is the one
writer of spec text: ``lcdsl fmt``, and the operator text of ``lcdsl check``, reports and saved runs
(:func:`lcdsl.operators.base.describe` builds it with :func:`format_expression`). Names and globs
are checked against the grammar's own terminals (:func:`~lcdsl.language.grammar.terminal_pattern`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from lcdsl.errors import Diagnostic, SpecError
from lcdsl.language.grammar import NON_FINITE_WORDS, identifier_pattern, terminal_pattern
from lcdsl.language.spec import (
    Call,
    Exclude,
    JointGroup,
    NameSelector,
    Percent,
    Range,
    Rule,
    Selector,
    Spec,
    Statement,
    TypeSelector,
    Value,
    Within,
)
from lcdsl.language.budgets import RELATIVE_UNITS, UNITS, absolute_amount, canonical_text

__all__ = [
    "format_spec", "format_value", "format_call", "format_expression", "format_selector", "format_number",
    "format_budget",
]  # fmt: skip

_RESERVED_WORDS = frozenset({"true", "false"})
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _unwritable(message: str, node: object = None) -> SpecError:
    return SpecError(Diagnostic(message, getattr(node, "span", None), code="unwritable"))


def _is_word(text: str) -> bool:
    """Whether the lexer reads ``text`` as one WORD token (a call, argument or bare-word value)."""
    return terminal_pattern("WORD").fullmatch(text) is not None


def format_number(value: int | float) -> str:
    """Ints unchanged; floats in their shortest form that reads back the same float.

    Below 1 in magnitude the shorter of ``0.001`` and ``1e-3`` is written (``9e-05`` → ``9e-5``,
    ``0.05`` stays); from 1 up, the plain form (``1000.0``) unless Python itself switches to an
    exponent (``1e+16`` → ``1e16``).

    Raises:
        SpecError: the float is NaN or infinite (a spec cannot say so).
    """
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise _unwritable(f"cannot write the non-finite number {value!r} in a spec")
    text = repr(float(value))
    if "e" in text:
        mantissa, _, exponent = text.partition("e")
        sign = "-" if exponent.startswith("-") else ""
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    if abs(value) >= 1 or value == 0 or "e" in text:
        return text
    # 0 < |value| < 1 and repr wrote it plainly: "0.00015" has fraction "00015", digits "15"
    fraction = text.lstrip("-").split(".")[1]
    digits = fraction.lstrip("0")
    exponent = -(len(fraction) - len(digits)) - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    scientific = f"{'-' if value < 0 else ''}{mantissa}e{exponent}"
    return scientific if len(scientific) < len(text) else text


def _percent(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        sign = "-" if value == 0 and math.copysign(1.0, value) < 0 else ""  # keep -0.0 as -0%
        return f"{sign}{int(value)}%"
    return format_number(value) + "%"


def _string(value: str) -> str:
    is_word = _is_word(value) and value not in _RESERVED_WORDS and value.lower() not in NON_FINITE_WORDS
    if is_word:
        return value
    out = []
    for c in value:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def format_value(value: Value) -> str:
    """One value as the spec writes it.

    Raises:
        SpecError: the value has no spelling in the language (NaN, a Python list, an object).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, Percent):
        return _percent(value.value)
    if isinstance(value, Range):
        if isinstance(value.low, bool) or isinstance(value.high, bool) or min(value.low, value.high) < 0:
            raise _unwritable(f"cannot write the range {value.low}..{value.high}: its ends are counts ≥ 0", value)
        return f"{int(value.low)}..{int(value.high)}"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Call):
        return format_call(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise _unwritable(f"cannot write a {type(value).__name__} value in a spec")


def format_call(call: Call) -> str:
    """``name(k=v, …)``."""
    if not _is_word(call.name):
        raise _unwritable(f"'{call.name}' cannot be written as a call name", call)
    args = []
    for arg in call.args:
        if arg.name is None:
            args.append(format_value(arg.value))
        elif _is_word(arg.name):
            args.append(f"{arg.name}={format_value(arg.value)}")
        else:
            raise _unwritable(f"'{arg.name}' cannot be written as an argument name", arg)
    return f"{call.name}({', '.join(args)})"


_BUDGET_TEXT = re.compile(r"(?P<number>[0-9.eE+-]+)(?P<percent>%?) ?(?P<unit>[A-Za-z]*)")


def _reads_back(within: Within, text: str) -> bool:
    """Whether ``text`` (a ``Within.text``) means exactly ``within``'s amount, unit and kind."""
    match = _BUDGET_TEXT.fullmatch(text)
    if match is None:
        return False
    try:
        number = float(match["number"])
    except ValueError:
        return False
    unit, relative = match["unit"], bool(match["percent"])
    if relative:
        quantity = RELATIVE_UNITS.get(unit)
        return quantity == within.unit and within.relative and number / 100.0 == within.amount
    if unit not in UNITS:
        return False
    return not within.relative and absolute_amount(number, unit) == (within.amount, within.unit)


def _shortest(value: float, reads_back) -> str | None:
    """The shortest decimal text of ``value`` that ``reads_back`` accepts, or None."""
    if value == int(value) and abs(value) < 1e16 and reads_back(str(int(value))):
        return str(int(value))
    for digits in range(1, 18):
        text = format_number(float(f"{value:.{digits}g}"))
        if reads_back(text):
            return text
    return None


def format_budget(within: Within) -> str:
    """``within 40kB``, ``within 20000 params``, ``within 30% flops``: the user's unit when the
    spec was parsed (:attr:`Within.text`), else bits, params or flops.

    Raises:
        SpecError: a budget built in code with no spelling (a NaN, an unknown quantity).
    """
    if within.text and _reads_back(within, within.text):
        return f"within {within.text}"
    if within.unit not in RELATIVE_UNITS.values() or not math.isfinite(within.amount):
        raise _unwritable(f"cannot write a budget of {within.amount!r} {within.unit}", within)
    unit = "" if within.relative and within.unit == "bits" else within.unit
    if within.relative:
        number = _shortest(within.amount * 100.0, lambda t: float(t) / 100.0 == within.amount)
    else:
        number = _shortest(within.amount, lambda t: float(t) == within.amount)
    if number is None:
        raise _unwritable(f"cannot write a budget of {within.amount!r} {within.unit}", within)
    return "within " + canonical_text(number, unit, relative=within.relative)


def format_expression(terms: Sequence[Call]) -> str:
    """The right-hand side of a rule: its calls joined by `` + ``."""
    if not terms:
        raise _unwritable("an expression needs at least one operator call")
    return " + ".join(format_call(c) for c in terms)


def _type_name(type_name: str, node: object) -> str:
    """``@Conv2d``."""
    if identifier_pattern().fullmatch(type_name) is None:
        raise _unwritable(f"'{type_name}' cannot be written as a type name", node)
    return "@" + type_name


def format_selector(selector: Selector) -> str:
    """``fc1``, ``layer4.**@Conv2d``, ``@Linear``, ``!fc3``, ``[fc1, fc2]``, ``[fc*] as body``."""
    if isinstance(selector, NameSelector):
        if terminal_pattern("GLOB").fullmatch(selector.pattern) is None:
            raise _unwritable(f"'{selector.pattern}' cannot be written as a selector", selector)
        if selector.type_name is None:
            return selector.pattern
        return selector.pattern + _type_name(selector.type_name, selector)
    if isinstance(selector, TypeSelector):
        return _type_name(selector.type_name, selector)
    if isinstance(selector, Exclude):
        return "!" + format_selector(selector.selector)
    if isinstance(selector, JointGroup):
        text = "[" + ", ".join(format_selector(s) for s in selector.items) + "]"
        if selector.name is None:
            return text
        if not _is_word(selector.name):
            raise _unwritable(f"'{selector.name}' cannot be written as a group name", selector)
        return f"{text} as {selector.name}"
    raise _unwritable(f"cannot write a {type(selector).__name__} as a selector")


def _head_and_tail(statement: Statement) -> tuple[str, str, str]:
    """(left side, separator, right side) of a statement."""
    if isinstance(statement, Rule):
        if not statement.selectors or not statement.terms:
            raise _unwritable("a rule needs at least one selector and one operator call", statement)
        left = ", ".join(format_selector(s) for s in statement.selectors)
        right = format_expression(statement.terms)
        if statement.budget is not None:
            right += " " + format_budget(statement.budget)
        return left, ":", right
    if identifier_pattern().fullmatch(statement.name) is None:
        raise _unwritable(f"'{statement.name}' cannot be written as a setting name", statement)
    return statement.name, "=", format_value(statement.value)


def _comment_line(text: str) -> str:
    if any(c in text for c in "\r\n\0"):
        raise _unwritable(f"cannot write the comment {text!r}: it holds a line break or NUL")
    return "#" if not text.strip() else f"# {text}"


def _leading_lines(leading: tuple[str, ...], out: list[str]) -> None:
    """Append comment and blank lines (a blank line only after a line that is not blank)."""
    for entry in leading:
        if entry == "":
            if out and out[-1] != "":
                out.append("")
        else:
            out.append(_comment_line(entry))


def _blocks(statements: tuple[Statement, ...]) -> list[list[int]]:
    """Indices of statements grouped into alignment blocks."""
    blocks: list[list[int]] = []
    for i, statement in enumerate(statements):
        previous = statements[i - 1] if i else None
        same_block = (
            previous is not None and type(previous) is type(statement) and "" not in statement.leading
        )
        if same_block:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return blocks


def format_spec(spec: Spec) -> str:
    """The canonical text of ``spec`` (ends with one newline; empty for an empty spec).

    Raises:
        SpecError: a node built in code has no spelling in the language (a name with spaces,
            a NaN, a rule without selectors).
    """
    statements = spec.statements
    parts = [_head_and_tail(s) for s in statements]
    lines: dict[int, str] = {}
    for block in _blocks(statements):
        width = max(len(parts[i][0]) for i in block)
        bodies = {i: f"{parts[i][0].ljust(width)} {parts[i][1]} {parts[i][2]}" for i in block}
        commented = [i for i in block if statements[i].comment is not None]
        column = max((len(bodies[i]) for i in commented), default=0) + 3
        for i in block:
            comment = statements[i].comment
            lines[i] = bodies[i] if comment is None else f"{bodies[i].ljust(column)}{_comment_line(comment)}"
    out: list[str] = []
    for i, statement in enumerate(statements):
        _leading_lines(statement.leading, out)
        out.append(lines[i])
    _leading_lines(spec.trailing, out)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n" if out else ""
