"""Amounts: how many things to keep, written as a count or as a fraction.

A spec value for an amount (``prune(l0=…)``) is one of

- an ``int`` ≥ 1: a count (``l0=5000`` keeps 5000 weights);
- a :class:`~lcdsl.language.spec.Percent` in (0 %, 100 %]: a fraction (``l0=5%``);
- a ``float`` in (0, 1): a fraction (``l0=0.05``).

Anything else (``1.5``, ``150%``, ``0``, negatives, booleans) is ambiguous or meaningless and
raises ``ValueError`` with a hint. Fractions become counts only when the task's size is known,
in :meth:`lcdsl.operators.base.Operator.resolve`, through :func:`resolve_amount`.

Operators declare such a field as::

    l0: Amount | None = attrs.field(
        default=None, converter=optional_amount, validator=attrs.validators.optional(check_amount)
    )
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, Union

from lcdsl.language.spec import Percent

__all__ = [
    "Amount",
    "to_amount",
    "optional_amount",
    "check_amount",
    "validate_amount",
    "is_fraction",
    "resolve_amount",
    "int_at_least",
    "positive_number",
    "to_float",
]

Amount = Union[int, float, Percent]
"""A count (``int``) or a fraction (``Percent``, or a ``float`` in (0, 1))."""


def to_amount(value: Any) -> Any:
    """Converter: numpy/torch integer and real scalars become ``int``/``float``; everything else
    passes through unchanged for :func:`check_amount` to judge (booleans stay booleans)."""
    if isinstance(value, (bool, Percent)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, float):
        return float(value)
    return value


def optional_amount(value: Any) -> Any:
    """:func:`to_amount` that lets ``None`` (field not given) through."""
    return None if value is None else to_amount(value)


def _count_hint(value: float) -> int:
    # 1500.0 → 1500; 1.5 → 1500 (a fraction-looking number read as thousands), never 0.
    if value.is_integer():
        return max(1, int(value))
    return max(1, round(abs(value) * 1000))


def validate_amount(value: Any, name: str = "amount") -> Amount:
    """``value`` if it is a valid amount, else ``ValueError``/``TypeError`` with a hint.

    Args:
        value: the spec value.
        name: the keyword, for messages (``l0``).

    Returns:
        ``value`` unchanged.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name}={str(value).lower()} is not an amount: write a count like {name}=1000 "
                         f"or a fraction like {name}=5%")
    if isinstance(value, Percent):
        if not (math.isfinite(value.value) and 0 < value.value <= 100):
            raise ValueError(f"{name}={value.value:g}% is not a fraction in (0%, 100%]")
        return value
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"{name} must be a count ≥ 1 or a fraction in (0, 1), got {value}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a count ≥ 1 or a fraction in (0, 1), got {value:g}")
        if value >= 1:
            raise ValueError(
                f"{name}={value:g} is ambiguous: write a count like {name}={_count_hint(value)} "
                f"or a fraction like {name}={value:g}%"
            )
        return value
    raise TypeError(f"{name} must be a count or a fraction, got {type(value).__name__} {value!r}")


def check_amount(instance: Any, attribute: Any, value: Any) -> None:
    """attrs validator: :func:`validate_amount` with the field's name in the message."""
    validate_amount(value, attribute.name)


def is_fraction(value: Amount) -> bool:
    """Whether ``value`` is relative (a percent or a float) rather than a count."""
    return isinstance(value, (Percent, float)) and not isinstance(value, bool)


def resolve_amount(value: Amount, n: int, name: str = "amount") -> int:
    """The count ``value`` means out of ``n`` things.

    A fraction ``f`` becomes ``round(f·n)`` (Python's round, half to even), at least 1; a count
    stays as it is.

    Raises:
        ValueError: ``value`` is not an amount, or a count is above ``n``.
    """
    validate_amount(value, name)
    if n < 1:
        raise ValueError(f"{name}: there is nothing to keep ({n} items)")
    if isinstance(value, Percent):
        return max(1, round(value.fraction * n))
    if isinstance(value, float):
        return max(1, round(value * n))
    if value > n:
        raise ValueError(f"{name}={value} is more than the {n} there are")
    return value


# Validators of plain numeric arguments and settings (attrs ``validator=``/``converter=``); wrap
# them in ``attrs.validators.optional`` for fields that may be None.


def int_at_least(low: int, high: int | None = None) -> Callable[[Any, Any, Any], None]:
    """A validator: an ``int`` (not a bool) ≥ ``low`` (and ≤ ``high``), named by its field."""

    def check(instance: Any, attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{attribute.name} must be an integer ≥ {low}, got {value!r}")
        if high is not None and value > high:
            raise ValueError(f"{attribute.name} must be at most {high}, got {value!r}")

    return check


def positive_number(instance: Any, attribute: Any, value: Any) -> None:
    """A validator: a finite number > 0, named by its field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a positive number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number, got {value:g}")


def to_float(value: Any) -> Any:
    """A converter: ints become floats; anything else (None, bools, strings) is left for the
    validator to judge."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)
