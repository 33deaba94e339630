"""View: a task's tensors as its operator sees them, gathered from the parameters and scattered back."""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
import torch
from torch import nn

import lcdsl.operators
import lcdsl.plan
from lcdsl.errors import EngineError, SpecError
from lcdsl.language.spec import Argument, Call, NameSelector, Rule, Spec
from lcdsl.operators import View, ViewKind, view_shape
from lcdsl.operators.base import Operator, Storage
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.prune import Prune
from lcdsl.operators.view import split_view
from lcdsl.plan.binder import bind
from lcdsl.plan.model import Plan, Task

CONV = (4, 3, 5, 5)  # (out, in, kh, kw)
SHAPES = ((8, 16), (8,), CONV)  # a Linear's weight and bias, and a conv weight


def _params(shapes, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(s, generator=g), requires_grad=requires_grad) for s in shapes]


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


@attrs.frozen
class Odd(Operator):
    """argmin_θ ‖w − θ‖² over a view nobody knows (a broken test operator)."""

    name: ClassVar[str] = "odd"
    view: ClassVar[str] = "diagonal"

    def project(self, w, mu=0.0, warm=None):
        return {"w": w.clone()}

    def decompress(self, theta, shape):
        return theta["w"].reshape(shape)

    def storage(self, shape, theta=None):
        return Storage(0, 0)


# --- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "shapes", "shape"),
    [
        ("vector", SHAPES, (8 * 16 + 8 + 4 * 3 * 5 * 5,)),
        ("vector", ((7,),), (7,)),
        ("vector", (), (0,)),
        ("matrix", ((8, 16),), (8, 16)),
        ("matrix", (CONV,), (4, 75)),  # (out, in·kh·kw)
        ("tensor", (CONV,), CONV),
        ("tensor", ((5,),), (5,)),
    ],
)
def test_shape_and_numel_of_each_kind(kind: ViewKind, shapes, shape) -> None:
    view = View(kind, shapes)
    assert view.shape == shape
    assert view.numel == (shape[0] if len(shape) == 1 else torch.Size(shape).numel())
    assert view_shape(kind, shapes) == shape == lcdsl.plan.view_shape(kind, shapes)


def test_shapes_are_plain_tuples_whatever_they_came_as() -> None:
    view = View("matrix", [torch.Size(CONV)])
    assert view.shapes == (CONV,) and all(type(n) is int for n in view.shapes[0])
    assert view == View("matrix", (CONV,))


def test_of_reads_the_view_on_the_instance() -> None:
    assert View.of(Prune(l0=2, by="channels"), (CONV,)) == View("tensor", (CONV,))
    assert View.of(Prune(l0=2), (CONV,)).shape == (300,)
    assert View.of(LowRank(rank=1), (CONV,)).shape == (4, 75)


# --- errors: the binder's messages ------------------------------------------------------------------


def test_a_view_of_one_tensor_refuses_two() -> None:
    with pytest.raises(ValueError, match=r"^a 'tensor' operator takes one tensor, got 2$"):
        View("tensor", ((2, 3), (3,)))
    with pytest.raises(ValueError, match=r"^a 'matrix' operator takes one tensor, got 2$"):
        View.of(LowRank(rank=1), ((2, 3), (3, 3)))


def test_a_matrix_needs_two_dimensions() -> None:
    with pytest.raises(ValueError, match=r"^a matrix operator needs a tensor of 2 or more dimensions, got shape \(5,\)$"):
        View("matrix", ((5,),))


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^unknown view 'diagonal'"):
        View("diagonal", ((5,),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^operator odd has unknown view 'diagonal'$"):
        View.of(Odd(), ((5,),))


def test_the_binder_shows_the_views_messages() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    spec = Spec((Rule((NameSelector("0.bias"),), (Call("lowrank", (Argument("rank", 1),)),)),))
    with pytest.raises(SpecError) as info:
        bind(spec, model)
    with pytest.raises(ValueError) as raised:
        View("matrix", ((3,),))
    (diag,) = info.value.diagnostics
    assert diag.message == f"lowrank cannot take 0.bias: {raised.value}"


class _OddRegistry:
    def operator(self, name):
        return Odd


def test_an_unknown_view_is_a_spec_error_when_binding() -> None:
    spec = Spec((Rule((NameSelector("0"),), (Call("odd", ()),)),))
    with pytest.raises(SpecError) as info:
        bind(spec, nn.Sequential(nn.Linear(4, 3)), registry=_OddRegistry())
    (diag,) = info.value.diagnostics
    assert diag.message == "odd cannot take 0.weight: operator odd has unknown view 'diagonal'"


def test_an_unknown_view_is_an_engine_error_for_a_plan_built_in_code() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    plan = Plan(tasks=(Task(("0.weight",), ((3, 4),), Odd()),), dense=("0.bias",))
    with pytest.raises(EngineError, match=r"^task 0\.weight: operator odd has unknown view 'diagonal'$"):
        lcdsl.Engine(model, plan)


def test_split_refuses_a_value_of_another_size() -> None:
    with pytest.raises(ValueError, match=r"shape \(10,\) does not fit the vector view \(9,\)"):
        View("vector", ((3,), (2, 3))).split(torch.zeros(10))


def test_scatter_refuses_another_number_of_parameters() -> None:
    with pytest.raises(ValueError, match="the view has 2 parameters, got 1"):
        View("vector", ((3,), (3,))).scatter(torch.zeros(6), [torch.zeros(3)])


# --- gather, split, scatter ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "shapes"),
    [("vector", SHAPES), ("vector", (CONV,)), ("vector", ((6,),)), ("matrix", (CONV,)), ("matrix", ((8, 16),)),
     ("tensor", (CONV,))],
)  # fmt: skip
def test_gather_split_scatter_round_trip(kind: ViewKind, shapes) -> None:
    view = View(kind, shapes)
    params = _params(shapes, requires_grad=True)
    w = view.gather(params)
    assert tuple(w.shape) == view.shape
    pieces = view.split(w)
    assert [tuple(p.shape) for p in pieces] == [tuple(s) for s in shapes]
    assert all(torch.equal(piece, p) for piece, p in zip(pieces, params))

    value = torch.arange(view.numel, dtype=torch.float64).reshape(view.shape)  # another dtype: copy_ converts
    view.scatter(value, params)  # leaves that require grad: written under no_grad
    assert torch.equal(view.gather(params).double(), value)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in params)


def test_a_vector_view_concatenates_in_parameter_order() -> None:
    params = _params(SHAPES)
    w = View("vector", SHAPES).gather(params)
    assert torch.equal(w, torch.cat([p.detach().reshape(-1) for p in params]))


@pytest.mark.parametrize(("kind", "shape"), [("vector", (6,)), ("vector", CONV), ("matrix", CONV), ("tensor", CONV)])
def test_gather_of_one_parameter_shares_its_memory(kind: ViewKind, shape) -> None:
    (p,) = _params((shape,))
    w = View(kind, (shape,)).gather([p])
    assert _same_memory(w, p) and w.data_ptr() == p.data_ptr()
    with torch.no_grad():
        w.view(-1)[0] = 123.0
    assert p.reshape(-1)[0].item() == 123.0


def test_split_pieces_are_views_into_the_value() -> None:
    view = View("vector", SHAPES)
    value = torch.randn(view.shape)
    pieces = view.split(value)
    assert all(_same_memory(piece, value) for piece in pieces)
    offsets = [piece.data_ptr() - value.data_ptr() for piece in pieces]
    assert offsets == [0, 8 * 16 * 4, (8 * 16 + 8) * 4]  # float32 bytes
    (piece,) = View("matrix", (CONV,)).split(value[: 4 * 75].reshape(4, 75))
    assert _same_memory(piece, value) and tuple(piece.shape) == CONV


def test_gather_is_differentiable() -> None:
    params = _params(SHAPES, requires_grad=True)
    w = View("vector", SHAPES).gather(params)
    (w * torch.arange(w.numel(), dtype=w.dtype)).sum().backward()
    expected = View("vector", SHAPES).split(torch.arange(w.numel(), dtype=w.dtype))
    assert all(torch.equal(p.grad, e) for p, e in zip(params, expected))


def test_split_view_is_view_split() -> None:
    params = _params(SHAPES)
    value = torch.randn(View("vector", SHAPES).shape)
    via_function = lcdsl.plan.split_view("vector", params, value)
    assert all(torch.equal(a, b) for a, b in zip(via_function, View("vector", SHAPES).split(value)))
    assert split_view is lcdsl.plan.split_view and lcdsl.operators.View is View


def test_a_task_has_its_view() -> None:
    task = Task(("conv.weight",), (CONV,), LowRank(rank=1))
    assert task.view == View("matrix", (CONV,))
    assert task.view_shape == (4, 75)
