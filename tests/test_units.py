"""Amounts: counts, fractions, and the errors for everything ambiguous."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lcdsl.language.spec import Percent
from lcdsl.operators.units import check_amount, is_fraction, optional_amount, resolve_amount, to_amount, validate_amount

fractions = st.floats(min_value=1e-9, max_value=1.0, exclude_max=True, allow_subnormal=False)
"""Floats that mean a fraction: the open interval (0, 1)."""


@given(f=fractions, n=st.integers(1, 10**7))
@example(f=0.5, n=1)  # round(0.5) = 0 → still keeps one
@example(f=0.999999, n=3)
def test_fraction_resolves_to_rounded_count_at_least_one(f: float, n: int) -> None:
    k = resolve_amount(f, n)
    assert k == max(1, round(f * n))
    assert 1 <= k <= n


@given(p=st.floats(min_value=1e-6, max_value=100.0), n=st.integers(1, 10**7))
@example(p=100.0, n=7)
def test_percent_resolves_like_its_fraction(p: float, n: int) -> None:
    k = resolve_amount(Percent(p), n)
    assert k == max(1, round(p / 100.0 * n))
    assert 1 <= k <= n


@given(n=st.integers(1, 10**6), data=st.data())
def test_count_stays_a_count(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    assert resolve_amount(k, n) == k


def test_count_above_n_is_an_error() -> None:
    with pytest.raises(ValueError, match="l0=11 is more than the 10"):
        resolve_amount(11, 10, "l0")


def test_ambiguous_float_message_has_both_hints() -> None:
    with pytest.raises(ValueError) as info:
        validate_amount(1.5, "l0")
    assert str(info.value) == "l0=1.5 is ambiguous: write a count like l0=1500 or a fraction like l0=1.5%"
    with pytest.raises(ValueError, match=r"count like l0=1500 or a fraction like l0=1500%"):
        validate_amount(1500.0, "l0")


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (1.0, "ambiguous"),
        (Percent(150), "150% is not a fraction"),
        (Percent(0), "0% is not a fraction"),
        (0, "count ≥ 1"),
        (-3, "count ≥ 1"),
        (-0.5, "count ≥ 1"),
        (0.0, "count ≥ 1"),
        (float("nan"), "count ≥ 1"),
        (float("inf"), "count ≥ 1"),
        (True, "l0=true is not an amount"),
        (False, "l0=false is not an amount"),
    ],
)
def test_invalid_amounts_raise_value_error(value: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        validate_amount(value, "l0")


def test_non_numbers_raise_type_error() -> None:
    with pytest.raises(TypeError, match="l0 must be a count or a fraction"):
        validate_amount("5", "l0")


def test_converter_turns_numpy_scalars_into_python_numbers() -> None:
    assert type(to_amount(np.int64(7))) is int
    assert type(to_amount(np.float32(0.25))) is float
    assert to_amount(True) is True  # left for the validator to reject
    assert optional_amount(None) is None
    assert to_amount(Percent(5)) == Percent(5)


def test_is_fraction() -> None:
    assert is_fraction(Percent(5)) and is_fraction(0.1)
    assert not is_fraction(5)


@attrs.frozen
class _Keep:
    l0: object = attrs.field(converter=to_amount, validator=check_amount)


def test_attrs_pair_names_the_field() -> None:
    assert _Keep(np.int32(3)).l0 == 3
    with pytest.raises(ValueError, match="^l0=2.5 is ambiguous"):
        _Keep(2.5)
