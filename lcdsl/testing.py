"""Property checks for C-step operators: the checks every built-in passes, for plugin authors.

A plugin's whole test file can be::

    # tests/test_sign.py
    from lcdsl.testing import operator_properties
    from my_plugin import Sign

    test_sign = operator_properties(Sign())
    test_sign_small = operator_properties(Sign(), shapes=[(1,), (2,), (3,)])

:func:`operator_properties` builds a hypothesis test that draws weights (:func:`weights`) and runs
:func:`check_operator` on each; :func:`check_operator` can also be called on one tensor::

    from lcdsl.testing import check_operator

    report = check_operator(Quant(k=2), torch.randn(100))
    report.distortion        # ‖w − Δ(θ)‖²

Every failure is an :class:`OperatorCheckError` (an ``AssertionError``, so pytest shows it as a
test failure) whose message starts with the operator as spec text, e.g. ``quant(k=2): …``.

What is checked, for one input ``w`` (see :func:`check_operator` for the details): ``w`` is not
modified; ``θ`` is named tensors on ``w``'s device, not sharing memory with ``w``; ``Δ(θ)`` has
``w``'s shape, dtype and device and is finite; the projection is deterministic and a warm start
does not change it; ``storage`` agrees with ``θ`` and with the prediction; and for constraint forms
(the default; pass ``penalty=True`` otherwise): the answer does not depend on ``μ``, ``Δ(θ)`` is
feasible (``is_feasible``, or its own projection),
the projection is idempotent, and no random feasible point is closer to ``w``.

A plugin that implements the hook ``lcdsl_deploy_layer`` checks it with
:func:`check_deploy_layer`: the module it returns computes what the compressed layer computes,
leaves the layer as it was, and stores the weight in fewer bytes than the dense one::

    from torch import nn
    from lcdsl.testing import check_deploy_layer
    from my_plugin import Levels, lcdsl_deploy_layer

    def test_levels_deploy():
        check_deploy_layer(lcdsl_deploy_layer, Levels(bits=3), nn.Linear(20, 8))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from hypothesis import given, reject, settings, target
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from lcdsl.errors import PluginError
from lcdsl.operators.base import Operator, Storage, Theta, View, describe
from lcdsl.operators.layout import Layout

__all__ = [
    "OperatorCheckError",
    "CheckReport",
    "check_operator",
    "weights",
    "default_shapes",
    "operator_properties",
    "DeployReport",
    "check_deploy_layer",
    "check_choice_set",
]

Feasibility = Callable[[torch.Tensor], bool]
"""``is_feasible(Δ)``: whether a tensor lies in the operator's feasible set."""


class OperatorCheckError(PluginError, AssertionError):
    """An operator broke a property of the operator contract."""


@attrs.frozen
class CheckReport:
    """What :func:`check_operator` measured on one input."""

    operator: Operator
    """The operator after :meth:`~lcdsl.operators.base.Operator.resolve`."""
    theta: Theta
    """``P(w)``."""
    delta: torch.Tensor
    """``Δ(P(w))``."""
    distortion: float
    """``‖w − Δ(θ)‖²`` (float64)."""
    nearest_other: float | None
    """The smallest ``‖w − f‖²`` over the random feasible points ``f`` tried; None for penalty
    forms, for which distortion alone is not the objective."""

    @property
    def gap(self) -> float | None:
        """``nearest_other − distortion``, relative to the larger of the two: ≥ 0 for an optimal
        projection, and the closer to 0 the harder the input."""
        if self.nearest_other is None:
            return None
        return (self.nearest_other - self.distortion) / max(self.distortion, self.nearest_other, 1e-30)


def _label(op: Operator) -> str:
    try:
        return describe(op)
    except Exception:  # a broken fake may not even describe itself
        return repr(op)


def _default_rtol(dtype: torch.dtype) -> float:
    if dtype == torch.float64:
        return 1e-9
    if dtype == torch.float32:
        return 1e-4
    return 1e-2


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.device != b.device or a.numel() == 0 or b.numel() == 0:
        return False
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _squared_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.to(torch.float64) - b.to(torch.float64)).square().sum())


class _Checker:
    """One operator on one input: each method checks one property and fails with a message."""

    def __init__(self, op: Operator, w: torch.Tensor, mu: float, rtol: float) -> None:
        self.op = op
        self.w = w
        self.mu = mu
        self.shape = tuple(w.shape)
        self.label = _label(op)
        # tolerances scale with the input: Δ's entries are compared within rtol·‖w‖
        self.scale = math.sqrt(_squared_distance(w, torch.zeros_like(w)))
        self.atol = rtol * max(self.scale, 1e-30)
        self.dist_tol = rtol * max(self.scale**2, 1e-30)

    def fail(self, message: str) -> OperatorCheckError:
        return OperatorCheckError(f"{self.label}: {message}")

    def project(
        self, w: torch.Tensor, warm: Theta | None = None, what: str = "project", mu: float | None = None
    ) -> Theta:
        before = w.clone()
        try:
            theta = self.op.project(w, self.mu if mu is None else mu, warm)
        except Exception as exc:
            raise self.fail(f"{what} raised {type(exc).__name__}: {exc}") from exc
        if not torch.equal(w, before):
            raise self.fail(f"{what} modified its input w in place (the C step must be pure)")
        self.check_theta(theta, w)
        return theta

    def check_theta(self, theta: Any, w: torch.Tensor) -> None:
        if not isinstance(theta, dict):
            raise self.fail(f"project returned {type(theta).__name__}, not a dict of tensors")
        for key, value in theta.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise self.fail(f"θ[{key!r}] is {type(value).__name__}; θ must map names to tensors")
            if value.device != w.device:
                raise self.fail(f"θ[{key!r}] is on {value.device}, but w is on {w.device}")
            if _shares_memory(value, w):
                raise self.fail(f"θ[{key!r}] shares memory with w (return a new tensor)")

    def decompress(self, theta: Theta) -> torch.Tensor:
        saved = {k: v.clone() for k, v in theta.items()}
        try:
            delta = self.op.decompress(theta, self.shape)
        except Exception as exc:
            raise self.fail(f"decompress raised {type(exc).__name__}: {exc}") from exc
        for key, value in saved.items():
            if not torch.equal(theta[key], value):
                raise self.fail(f"decompress modified θ[{key!r}] in place")
        if not isinstance(delta, torch.Tensor):
            raise self.fail(f"decompress returned {type(delta).__name__}, not a tensor")
        if tuple(delta.shape) != self.shape:
            raise self.fail(f"decompress returned shape {tuple(delta.shape)}, but w has shape {self.shape}")
        if delta.dtype != self.w.dtype:
            raise self.fail(f"decompress returned dtype {delta.dtype}, but w has dtype {self.w.dtype}")
        if delta.device != self.w.device:
            raise self.fail(f"decompress returned a tensor on {delta.device}, but w is on {self.w.device}")
        if not bool(torch.isfinite(delta).all()):
            bad = int((~torch.isfinite(delta)).sum())
            raise self.fail(f"Δ(θ) has {bad} non-finite entries (NaN or inf) for a finite w")
        if _shares_memory(delta, self.w):
            raise self.fail("Δ(θ) shares memory with w (return a new tensor)")
        return delta

    def ranges(self, theta: Theta, delta: torch.Tensor) -> None:
        """``decompress_range`` gives exactly the entries of ``Δ(θ)`` it names, for the whole
        range, an empty one, and ranges cut at a few places."""
        flat = delta.reshape(-1)
        n = flat.numel()
        cuts = sorted({0, n, n // 3, n // 2, (2 * n) // 3, max(n - 1, 0), min(1, n)})
        ranges = [(0, n), (n // 2, n // 2)] + list(zip(cuts, cuts[1:]))
        for start, stop in ranges:
            try:
                part = self.op.decompress_range(theta, self.shape, start, stop)
            except Exception as exc:
                raise self.fail(f"decompress_range(θ, {start}, {stop}) raised {type(exc).__name__}: {exc}") from exc
            if not isinstance(part, torch.Tensor) or tuple(part.shape) != (stop - start,):
                found = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part).__name__
                raise self.fail(f"decompress_range(θ, {start}, {stop}) returned {found}, expected shape ({stop - start},)")
            if part.dtype != delta.dtype or not torch.equal(part, flat[start:stop]):
                raise self.fail(f"decompress_range(θ, {start}, {stop}) is not Δ(θ)'s entries {start}:{stop}")

    def same(self, a: torch.Tensor, b: torch.Tensor, what: str) -> None:
        diff = float((a.to(torch.float64) - b.to(torch.float64)).abs().max()) if a.numel() else 0.0
        if diff > self.atol:
            raise self.fail(f"{what}: Δ differs by up to {diff:.3g} (tolerance {self.atol:.3g})")

    def storage(self, theta: Theta) -> None:
        try:
            predicted = self.op.storage(self.shape)
            actual = self.op.storage(self.shape, theta)
        except Exception as exc:
            raise self.fail(f"storage raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(actual, Storage):
            raise self.fail(f"storage(shape, θ) returned {actual!r}, not a Storage")
        for field in ("params", "bits"):
            value = getattr(actual, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self.fail(f"storage(shape, θ).{field} is {value!r}, not an integer ≥ 0")
        stored = sum(t.numel() for t in theta.values())
        if actual.params > stored:
            raise self.fail(
                f"storage(shape, θ) counts {actual.params} parameters, but θ holds only {stored} numbers"
            )
        if predicted is not None:
            if not isinstance(predicted, Storage):
                raise self.fail(f"storage(shape) returned {predicted!r}, not a Storage or None")
            if actual.params > predicted.params or actual.bits > predicted.bits:
                raise self.fail(
                    f"θ takes {actual.params} parameters / {actual.bits} bits, more than the "
                    f"predicted {predicted.params} / {predicted.bits}"
                )

    def distortion_falls_with_mu(self, w: torch.Tensor, mu: float, distortion: float) -> None:
        """A penalty form's ``‖w − Δ(θ)‖²`` at ``μ = 0``, ``mu`` and ``10·mu + 1`` never grows
        with ``μ``: for t₁ > t₂ the exact minimisers of D + t·C satisfy D(t₁) ≥ D(t₂)."""
        mus = sorted({0.0, mu, 10.0 * mu + 1.0})
        found = [
            distortion if m == mu else _squared_distance(w, self.decompress(self.project(w, what=f"project with μ = {m:g}", mu=m)))
            for m in mus
        ]
        for (m1, d1), (m2, d2) in zip(zip(mus, found), zip(mus[1:], found[1:])):
            if d2 > d1 + self.dist_tol:
                raise self.fail(
                    f"not optimal for its penalty: ‖w − Δ(θ)‖² grows with μ, {d1:.6g} at μ = {m1:g} but "
                    f"{d2:.6g} at μ = {m2:g} (μ = 0 is the limit μ → 0⁺: the cheapest θ, not w itself)"
                )

    def feasible(self, delta: torch.Tensor, is_feasible: Feasibility | None) -> None:
        if is_feasible is not None and not is_feasible(delta):
            raise self.fail("Δ(θ) is not feasible (is_feasible returned False)")
        # a feasible point is its own projection: Δ(P(Δ(θ))) = Δ(θ)
        again = self.decompress(self.project(delta, what="project of Δ(θ)"))
        self.same(again, delta, "Δ(θ) is not its own projection (not feasible, or P is not idempotent)")


def check_operator(
    op: Operator,
    w: torch.Tensor,
    *,
    mu: float = 0.0,
    is_feasible: Feasibility | None = None,
    penalty: bool | None = None,
    trials: int = 6,
    seed: int = 0,
    rtol: float | None = None,
) -> CheckReport:
    """Check the operator contract on one input; raises :class:`OperatorCheckError` on the first
    broken property, with a message naming the operator.

    Checked, in order: ``project`` does not modify ``w`` and returns named tensors on ``w``'s
    device that do not share its memory; ``decompress`` does not modify ``θ`` and returns a new,
    finite tensor of ``w``'s shape, dtype and device; ``decompress_range`` gives exactly the
    entries of ``Δ(θ)`` it names; projecting again, and projecting with the
    previous ``θ`` as a warm start, give the same ``Δ``; ``storage(shape, θ)`` is a
    :class:`Storage` of integers ≥ 0, counts no more parameters than ``θ`` holds and no more
    than ``storage(shape)`` predicts. For constraint forms also: the answer does not depend on
    ``μ``; ``Δ(θ)`` is feasible (``is_feasible``, if given) and its own projection
    (``Δ(P(Δ(θ))) = Δ(θ)``: idempotence, which also shows feasibility without a callback); and
    none of ``trials`` random feasible points (projections of random tensors, of ``w`` plus
    noise, and of scaled ``w``) is closer to ``w`` than ``Δ(θ)``. For penalty forms, the
    convention of :meth:`~lcdsl.operators.base.Operator.project`: the distortion
    ``‖w − Δ(θ)‖²`` never grows with ``μ`` from ``μ = 0`` (the limit ``μ → 0⁺``, the cheapest
    ``θ``) through ``mu`` to ``10·mu + 1``, which every exact minimiser of
    ``‖w − Δ(θ)‖² + (2/μ)·α·C(θ)`` obeys (so a form that keeps ``w`` at ``μ = 0`` fails).

    Args:
        op: the operator; it is resolved against ``w``'s shape first (``ValueError`` from
            :meth:`~lcdsl.operators.base.Operator.resolve` propagates: the shape does not fit).
        w: a finite floating tensor in the operator's view.
        mu: passed to ``project``.
        is_feasible: ``is_feasible(Δ) -> bool`` for the feasible set; without it feasibility is
            checked by the roundtrip.
        penalty: whether ``op`` is a penalty form (``prune(l1_penalty=α)``,
            ``lowrank(alpha=α)``): its objective has a term besides the distortion, so
            optimality against random feasible points and idempotence do not apply, and its
            distortion must not grow with ``μ``. A constraint form must give the same answer
            for any ``μ``. By default the operator's own
            :attr:`~lcdsl.operators.base.Operator.penalty_form`.
        trials: how many random feasible points to compare against.
        seed: seed of those random points.
        rtol: tolerance relative to ``‖w‖`` (to ``‖w‖²`` for distortions); by default ``1e-4``
            for float32 and ``1e-9`` for float64.

    Returns:
        What was measured, e.g. ``report.distortion`` and ``report.gap``.

    Example::

        >>> from lcdsl.operators.binary import Binarize
        >>> check_operator(Binarize(), torch.tensor([0.5, -2.0, 0.0])).distortion
        2.25
    """
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {type(w).__name__}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w must be finite")
    shape = tuple(w.shape)
    op = op.resolve(shape)
    c = _Checker(op, w, mu, rtol if rtol is not None else _default_rtol(w.dtype))

    theta = c.project(w)
    delta = c.decompress(theta)
    c.ranges(theta, delta)
    c.same(c.decompress(c.project(w, what="a second project")), delta, "project is not deterministic")
    warm = c.decompress(c.project(w, warm=theta, what="project with warm=θ"))
    c.same(warm, delta, "a warm start changed the answer")
    c.storage(theta)
    distortion = _squared_distance(w, delta)

    if penalty is None:
        penalty = bool(op.penalty_form)
    if penalty:
        if is_feasible is not None and not is_feasible(delta):
            raise c.fail("Δ(θ) is not feasible (is_feasible returned False)")
        c.distortion_falls_with_mu(w, mu, distortion)
        return CheckReport(op, theta, delta, distortion, None)

    other_mu = 10.0 * mu + 1.0
    at_other_mu = c.decompress(c.project(w, what=f"project with μ = {other_mu:g}", mu=other_mu))
    c.same(
        at_other_mu,
        delta,
        "the answer depends on μ (a constraint form must ignore μ; pass penalty=True for a penalty form)",
    )
    c.feasible(delta, is_feasible)
    nearest = math.inf
    gen = torch.Generator().manual_seed(seed)
    spread = c.scale / math.sqrt(max(w.numel(), 1)) or 1.0  # the weights' rms size

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(w.device, w.dtype)

    for t in range(trials):
        kind = t % 3
        if kind == 0:  # anywhere
            r = noise() * spread
        elif kind == 1:  # near w, at two distances: points that compete with the optimum
            r = w + noise() * ((0.03 if t % 2 else 0.3) * spread)
        else:  # w scaled: for scale-invariant sets, a point on the same ray
            factor = 0.5 + float(torch.rand((), generator=gen, dtype=torch.float64))
            r = w * factor
        other = c.decompress(c.project(r, what="project of a random tensor"))
        if is_feasible is not None and not is_feasible(other):
            raise c.fail("the projection of a random tensor is not feasible (is_feasible returned False)")
        d = _squared_distance(w, other)
        nearest = min(nearest, d)
        if d < distortion - c.dist_tol:
            raise c.fail(
                f"not optimal: a feasible point (the projection of a random tensor) is closer to w: "
                f"‖w − f‖² = {d:.6g} < ‖w − Δ(θ)‖² = {distortion:.6g}"
            )
    return CheckReport(op, theta, delta, distortion, nearest if trials else None)


def weights(
    shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]] = (8,),
    dtype: torch.dtype = torch.float32,
    *,
    bound: float = 8.0,
    device: str | torch.device = "cpu",
) -> st.SearchStrategy[torch.Tensor]:
    """Weight tensors with float32-exact entries in ``[-bound, bound]``.

    Entries include zeros, ties and magnitudes from ``bound`` down to float32's smallest normal
    numbers (no subnormals, NaN or inf). Float32-exact values stay exact in float64, so one
    example means the same in both dtypes.

    Args:
        shape: a shape, or a strategy of shapes (e.g. ``array_shapes(max_dims=2)``).
        dtype: the tensors' dtype.
        bound: the largest magnitude.
        device: the tensors' device.

    Example::

        @given(w=weights((3, 4), torch.float64))
        def test_something(w): ...
    """
    elements = st.floats(
        -bound, bound, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False
    )
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    return shapes.flatmap(lambda s: arrays(np.float32, s, elements=elements)).map(
        lambda a: torch.from_numpy(np.array(a, dtype=np.float32)).to(device=device, dtype=dtype)
    )


def default_shapes(view: str) -> st.SearchStrategy[tuple[int, ...]]:
    """Small shapes for an operator's view: vectors of 4–40 entries, 3×3 to 12×12 matrices,
    2- to 4-dimensional tensors with sides 2–6."""
    if view == "vector":
        return array_shapes(min_dims=1, max_dims=1, min_side=4, max_side=40)
    if view == "matrix":
        return array_shapes(min_dims=2, max_dims=2, min_side=3, max_side=12)
    return array_shapes(min_dims=2, max_dims=4, min_side=2, max_side=6)


def operator_properties(
    op_factory: Operator | Callable[[], Operator],
    shapes: Sequence[tuple[int, ...]] | st.SearchStrategy[tuple[int, ...]] | None = None,
    *,
    mu: float = 0.0,
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    device: str | torch.device = "cpu",
    is_feasible: Feasibility | None = None,
    penalty: bool | None = None,
) -> Callable[[], None]:
    """A hypothesis test running :func:`check_operator` on drawn weights.

    Assign it to a ``test_*`` name in a test module and pytest runs it. Shapes the operator
    rejects in :meth:`~lcdsl.operators.base.Operator.resolve` (``ValueError``) are skipped.
    Hypothesis steers towards the inputs where a random feasible point comes closest.

    Args:
        op_factory: the operator, or a function returning it.
        shapes: shapes to draw from (a list or a strategy); by default
            :func:`default_shapes` of the operator's view.
        mu: passed to ``project``.
        dtypes: dtypes to draw from.
        device: where the weights live.
        is_feasible: see :func:`check_operator`.
        penalty: see :func:`check_operator`.

    Example::

        test_quant_k3 = operator_properties(Quant(k=3))
        test_pow2_matrix = operator_properties(lambda: Pow2(bits=3), shapes=[(2, 5), (4, 4)])
    """
    make = (lambda: op_factory) if isinstance(op_factory, Operator) else op_factory
    label = _label(make())
    if shapes is None:
        shape_strategy = default_shapes(make().view)
    elif isinstance(shapes, st.SearchStrategy):
        shape_strategy = shapes
    else:
        shape_strategy = st.sampled_from([tuple(s) for s in shapes])

    @settings(deadline=None)
    @given(data=st.data())
    def test_operator_properties(data: st.DataObject) -> None:
        shape = data.draw(shape_strategy, label="shape")
        dtype = data.draw(st.sampled_from(list(dtypes)), label="dtype")
        w = data.draw(weights(shape, dtype, device=device), label="w")
        op = make()
        try:
            op.resolve(shape)
        except ValueError:
            reject()  # the shape does not fit this operator (e.g. rank above the smaller side)
        report = check_operator(op, w, mu=mu, is_feasible=is_feasible, penalty=penalty)
        if report.gap is not None:
            target(-report.gap, label="closest random feasible point")

    test_operator_properties.__doc__ = f"The operator contract holds for {label} on drawn weights."
    return test_operator_properties


@attrs.frozen
class DeployReport:
    """What :func:`check_deploy_layer` measured."""

    module: torch.nn.Module
    """The deployed module the hook returned."""
    relative_difference: float
    """``max |y' − y| / max |y|`` of its outputs against the compressed layer's."""
    dense_bytes: int
    """Bytes of the layer's parameters and buffers, dense."""
    deployed_bytes: int
    """Bytes of the deployed module's parameters and buffers."""


def check_choice_set(
    options: Sequence[Operator], w: torch.Tensor, *, mu: float = 0.0, rtol: float | None = None
) -> torch.Tensor:
    """Check an operator class's ``distortion_table`` hook on one choice-set: it must give, for
    every option, the distortion ``‖w − Δ(Π_i(w))‖²`` of projecting ``w`` on that option (what
    a budget's allocation is decided from). Raises :class:`OperatorCheckError` naming the first
    option that differs, or a hook that returns the wrong number of values or non-finite ones.

    A class without the hook, or whose hook returns None for these options, passes: the generic
    table (each option projected) is used for it.

    Args:
        options: operators of one class, resolved for ``w``'s shape (``Quant(bits=1)`` …).
        w: the target, in the options' view.
        mu: passed to the hook and to each projection.
        rtol: tolerance relative to ``‖w‖²`` (default: by ``w``'s dtype, 1e-4 for float32).

    Returns:
        The generic table, ``(len(options),)`` float64.
    """
    from lcdsl.operators.choice import generic_distortions

    options = tuple(options)
    if not options:
        raise OperatorCheckError("check_choice_set needs at least one option")
    classes = {type(o) for o in options}
    if len(classes) != 1:
        raise OperatorCheckError(f"a choice-set is of one operator class, got {sorted(c.__name__ for c in classes)}")
    cls = next(iter(classes))
    reference = generic_distortions(options, w, mu)
    hook = getattr(cls, "distortion_table", None)
    if hook is None:
        return reference
    table = hook(w, options, mu)
    if table is None:
        return reference
    if not isinstance(table, torch.Tensor):
        raise OperatorCheckError(f"{cls.__name__}.distortion_table returned {type(table).__name__}, not a tensor")
    table = table.detach().to(torch.float64).cpu().reshape(-1)
    if table.numel() != len(options):
        raise OperatorCheckError(
            f"{cls.__name__}.distortion_table returned {table.numel()} values for {len(options)} options"
        )
    if not bool(torch.isfinite(table).all()):
        raise OperatorCheckError(f"{cls.__name__}.distortion_table returned non-finite values")
    tol = (rtol if rtol is not None else _default_rtol(w.dtype)) * max(float(w.double().square().sum()), 1e-30)
    for option, fast, slow in zip(options, table.tolist(), reference.tolist()):
        if abs(fast - slow) > tol:
            raise OperatorCheckError(
                f"{cls.__name__}.distortion_table gives {fast!r} for {_label(option)}, but projecting on it "
                f"gives a distortion of {slow!r}"
            )
    return reference


def _tensor_bytes(module: torch.nn.Module) -> int:
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def check_deploy_layer(
    hook: Callable[..., Any],
    op: Operator,
    layer: torch.nn.Module,
    x: torch.Tensor | None = None,
    *,
    layout: Layout | None = None,
    rtol: float = 1e-5,
    smaller: bool = True,
) -> DeployReport:
    """Check a plugin's ``lcdsl_deploy_layer`` hook on one layer compressed by ``op``.

    The layer's weight is projected directly (``θ = op.project(w)``) and replaced by ``Δ(θ)``;
    then ``hook`` is called with keywords, as lcdsl calls it. The hook must return an
    ``nn.Module`` (not None: the check is for an operator the plugin deploys) whose outputs on
    ``x`` agree with the compressed layer's within ``rtol`` of their largest magnitude, and must
    leave the layer as it was; with ``smaller``, the module's parameters and buffers must take
    fewer bytes than the layer's.

    Args:
        hook: the plugin's ``lcdsl_deploy_layer`` function.
        op: the operator (resolved against the weight's view here).
        layer: the layer to compress (e.g. ``nn.Linear(20, 8)``); its weight is overwritten
            with ``Δ(θ)``.
        x: inputs; by default 4 random ones of the layer's input size (Linear and Conv2d).
        layout: the weight's layout, for ``"matrix"``/``"tensor"`` operators on a layer that
            stores outputs elsewhere than first.
        rtol: the largest relative output difference allowed.
        smaller: require the deployed module to take fewer bytes than the layer.

    Raises:
        OperatorCheckError: a property does not hold; the message starts with the operator.
    """
    label = _label(op)

    def fail(message: str) -> OperatorCheckError:
        return OperatorCheckError(f"{label}: deploy hook: {message}")

    weight = layer.weight
    view = View.of(op, [tuple(weight.shape)], layout)
    op = op.resolve(view.shape)
    with torch.no_grad():
        theta = op.project(view.gather([weight.detach()]).clone())
        view.scatter(op.decompress(theta, view.shape), [weight])
    if x is None:
        if isinstance(layer, torch.nn.Conv2d):
            x = torch.randn(4, layer.in_channels, 9, 9, generator=torch.Generator().manual_seed(0))
        else:
            x = torch.randn(4, weight.shape[1], generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    try:
        deployed = hook(module=layer, parameter="weight", operator=op, theta=theta, view=view, index=0)
    except Exception as exc:
        raise fail(f"raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(deployed, torch.nn.Module):
        raise fail(f"returned {type(deployed).__name__}, not an nn.Module")
    if any(not torch.equal(v, layer.state_dict()[k]) for k, v in before.items()):
        raise fail("modified the layer it was given")
    with torch.no_grad():
        expected, got = layer(x), deployed(x)
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        raise fail(f"the deployed module gives {getattr(got, 'shape', type(got).__name__)}, "
                   f"the layer {tuple(expected.shape)}")  # fmt: skip
    scale = float(expected.abs().max()) or 1.0
    relative = float((got - expected).abs().max()) / scale
    if relative > rtol:
        raise fail(f"outputs differ from the compressed layer's by {relative:.3g} (relative; tolerance {rtol:g})")
    dense, compact = _tensor_bytes(layer), _tensor_bytes(deployed)
    if smaller and compact >= dense:
        raise fail(f"the deployed module takes {compact} bytes, no fewer than the layer's {dense}")
    return DeployReport(deployed, relative, dense, compact)
