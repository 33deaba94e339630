"""The ``.lc`` language: the grammar, the parser and its errors, the spec AST, and ``fmt``.

Text goes in, a :class:`~lcdsl.language.spec.Spec` comes out (:func:`parse`, :func:`load`), and
:func:`format_spec` is the one writer of spec text (operators describe themselves through it).
Nothing here knows a model, an operator or a setting name.
"""

from lcdsl.language.fmt import format_call, format_spec, format_value
from lcdsl.language.parser import load, parse, parse_expression
from lcdsl.language.spec import (
    Argument,
    Call,
    Exclude,
    JointGroup,
    NameSelector,
    Percent,
    Range,
    Rule,
    Selector,
    Setting,
    Spec,
    Statement,
    TypeSelector,
    Value,
    Within,
)  # fmt: skip

__all__ = [
    "parse", "load", "parse_expression", "format_spec", "format_value", "format_call",
    "Spec", "Rule", "Setting", "Statement", "Call", "Argument", "Percent", "Range", "Within", "Value",
    "NameSelector", "TypeSelector", "Exclude", "JointGroup", "Selector",
]  # fmt: skip
