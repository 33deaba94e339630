"""Hypothesis strategies for spec objects, built directly (not from text).

Shared by the parser, formatter and binding tests. Everything generated here can be written
by :func:`lcdsl.fmt.format_spec` and read back by :func:`lcdsl.parser.parse`.
"""

from __future__ import annotations

import string

from hypothesis import strategies as st

from lcdsl.language import (
    Argument, Call, Exclude, JointGroup, NameSelector, Percent, Range, Rule, Setting, Spec, TypeSelector, Within,
)  # fmt: skip

__all__ = [
    "identifiers",
    "words",
    "globs",
    "numbers",
    "percents",
    "ranges",
    "budgets",
    "strings",
    "values",
    "calls",
    "selectors",
    "rules",
    "settings",
    "comment_texts",
    "specs",
]

_FIRST = string.ascii_letters + "_"
_REST = string.ascii_letters + string.digits + "_"

identifiers = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(_FIRST),
    st.text(_REST, max_size=8),
)
"""Plain names: setting names, type names, argument names."""

words = st.builds(
    lambda head, tail: "-".join([head, *tail]),
    identifiers,
    st.lists(st.text(_REST, min_size=1, max_size=4), max_size=2),
)
"""Bare words (``rows``, ``augmented-lagrangian``): call names and unquoted strings."""

_segment = st.text(_REST + "*?", min_size=1, max_size=6)
globs = st.builds(
    lambda first, rest, more: ".".join([first + rest, *more]),
    st.sampled_from(_FIRST + "*?"),
    st.text(_REST + "*?", max_size=5),
    st.lists(_segment, max_size=3),
)
"""Dot-aware globs: ``fc1``, ``conv*``, ``features.**.weight``, ``layers.0.attn``, and ``0.weight``
(a root ``nn.Sequential``'s children: a first segment of digits only)."""

_digit_led = st.builds(
    lambda first, more: ".".join([first, *more]), st.text(string.digits, min_size=1, max_size=3), st.lists(_segment, max_size=2)
)
globs = st.one_of(globs, _digit_led)

_name_selectors = st.builds(NameSelector, globs, st.none() | identifiers)
"""Globs with and without a type filter (``layer4.**@Conv2d``)."""

numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
)
"""Ints (as long as 41 digits) and every finite float, including -0.0 and subnormals."""

percents = st.builds(Percent, st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300))
"""``Percent`` values."""

strings = st.one_of(words, st.text(max_size=12), st.sampled_from(["true", "false", "nan", "Inf", "", "a b", "5"]))
"""Strings: bare words, arbitrary text, and words that must be quoted to stay strings."""

ranges = st.builds(lambda low, width: Range(low, low + width), st.integers(0, 10**6), st.integers(0, 300))
"""``Range`` values ``low..high`` (non-empty, ends ≥ 0)."""

_positive = st.floats(min_value=1e-6, max_value=1e15, allow_nan=False, allow_infinity=False)
budgets = st.one_of(
    st.builds(Within, _positive, st.sampled_from(["bits", "params", "flops"])),
    st.builds(
        lambda percent, unit: Within(percent / 100.0, unit, relative=True),  # as the parser makes it from `p%`
        st.floats(min_value=1e-3, max_value=100.0),
        st.sampled_from(["bits", "params", "flops"]),
    ),
)
"""``within`` budgets as built in code (no text): absolute amounts, and fractions of dense sizes
made from a percentage as the parser makes them (not every float is some ``p/100``)."""

_scalars = st.one_of(numbers, percents, ranges, strings, st.booleans())


def _extend(children: st.SearchStrategy) -> st.SearchStrategy:
    arguments = st.builds(Argument, st.none() | identifiers, children)
    return st.one_of(
        st.lists(children, max_size=4).map(tuple),
        st.builds(Call, words, st.lists(arguments, max_size=3).map(tuple)),
    )


values = st.recursive(_scalars, _extend, max_leaves=8)
"""Any value: scalars, tuples (lists) and calls, nested a few levels."""

calls = st.builds(
    Call,
    words,
    st.lists(st.builds(Argument, st.none() | identifiers, values), max_size=3).map(tuple),
)
"""Operator calls such as ``quant(k=4)``."""

_items = st.one_of(
    _name_selectors,
    st.builds(TypeSelector, identifiers),
    st.builds(Exclude, st.one_of(_name_selectors, st.builds(TypeSelector, identifiers))),
)
selectors = st.one_of(
    _items, st.builds(JointGroup, st.lists(_items, min_size=1, max_size=3).map(tuple), st.none() | words)
)
"""One comma-separated item of a rule's left side."""

comment_texts = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), max_size=20
).map(lambda t: t.strip() or " ")
"""Comment text as the parser records it: no control characters, no surrounding blanks (``" "`` is an
empty ``#`` line)."""

_leading = st.lists(st.one_of(st.just(""), comment_texts), max_size=3).map(tuple)
_comment = st.none() | comment_texts

rules = st.builds(
    Rule,
    st.lists(selectors, min_size=1, max_size=3).map(tuple),
    st.lists(calls, min_size=1, max_size=3).map(tuple),
    st.none() | budgets,
    leading=_leading,
    comment=_comment,
)
"""Rules with comments."""


def settings(name: st.SearchStrategy[str] = identifiers) -> st.SearchStrategy[Setting]:
    """Settings with comments; ``name`` picks the setting's name."""
    return st.builds(Setting, name, values, leading=_leading, comment=_comment)


@st.composite
def specs(draw, max_statements: int = 6) -> Spec:
    """Whole specs: rules and settings in any order, setting names distinct."""
    count = draw(st.integers(0, max_statements))
    statements = []
    used: set[str] = set()
    for _ in range(count):
        if draw(st.booleans()):
            statements.append(draw(rules))
        else:
            name = draw(identifiers.filter(lambda n: n not in used))
            used.add(name)
            statements.append(draw(settings(st.just(name))))
    return Spec(tuple(statements), trailing=draw(_leading))
