"""Choice, its distortion tables (fast family hooks against projecting each option), and option costs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lcdsl.budget import choice_costs, dense_cost, option_cost
from lcdsl.operators import Choice, describe
from lcdsl.operators.binary import Binarize
from lcdsl.operators.kmeans1d import kmeans1d, kmeans1d_costs
from lcdsl.operators.lowrank import LowRank
from lcdsl.operators.prune import Prune
from lcdsl.operators.quant import Quant
from lcdsl.testing import OperatorCheckError, check_choice_set, check_operator


def small_tensors(shape: tuple[int, ...]) -> st.SearchStrategy[torch.Tensor]:
    """float32 tensors of ``shape`` with repeated values likely (integers over 4)."""
    n = int(torch.Size(shape).numel())
    return st.lists(st.integers(-12, 12), min_size=n, max_size=n).map(
        lambda v: torch.tensor(v, dtype=torch.float32).reshape(shape) / 4
    )


@given(small_tensors((17,)))
def test_quant_table_from_one_dp_equals_projecting_each_k(w):
    check_choice_set([Quant(bits=b) for b in (1, 2, 3)], w)
    check_choice_set([Quant(k=k) for k in range(2, 9)], w)


@given(small_tensors((17,)))
def test_the_dp_table_of_every_k_equals_solving_each_k(w):
    # the route of tensors off the CPU kernel (GPU, half precision); float32 CPU tensors solve each k
    table = kmeans1d_costs(w, 9)  # (9,)
    for k in range(1, 10):
        codebook, assignments = kmeans1d(w, k)
        assert float(table[k - 1]) == pytest.approx(float((w.double() - codebook.double()[assignments]).square().sum()),
                                                    rel=1e-9, abs=1e-9)  # fmt: skip
    half = Quant.distortion_table(w.to(torch.float16), tuple(Quant(k=k) for k in (2, 3, 9)))
    assert torch.allclose(half, table[[1, 2, 8]], rtol=1e-9, atol=1e-9)


@given(small_tensors((4, 6)))
def test_lowrank_table_from_one_svd_equals_projecting_each_rank(w):
    check_choice_set([LowRank(rank=r) for r in range(1, 5)], w)


@given(small_tensors((15,)), small_tensors((5, 3)))
def test_prune_table_from_one_sort_equals_projecting_each_count(w, m):
    check_choice_set([Prune(l0=k) for k in (1, 2, 7, 15)], w)
    check_choice_set([Prune(l0=k, by="rows") for k in (1, 3, 5)], m)
    check_choice_set([Prune(l0=k, by="channels") for k in (1, 2)], m)


def test_hooks_decline_what_they_cannot_tabulate():
    w = torch.randn(8)
    assert Quant.distortion_table(w, (Quant(k=2), Quant(codebook=[0.0, 1.0]))) is None
    assert Prune.distortion_table(w, (Prune(l0=2), Prune(l1=1.0))) is None
    assert LowRank.distortion_table(torch.randn(3, 4), (LowRank(rank=1), LowRank(alpha=1.0))) is None


def test_check_choice_set_catches_a_wrong_table():
    class Lying(Quant):
        @classmethod
        def distortion_table(cls, w, options, mu=0.0):
            return torch.zeros(len(options), dtype=torch.float64)

    with pytest.raises(OperatorCheckError, match="distortion_table gives 0.0"):
        check_choice_set([Lying(k=2), Lying(k=3)], torch.tensor([0.0, 1.0, 5.0, 9.0]))


def test_choice_without_budget_keeps_the_least_distortion_and_passes_the_operator_kit():
    choice = Choice(options=(Quant(bits=1), Quant(bits=2), Prune(l0=3)), labels=("bits=1", "bits=2", "l0=3"))
    w = torch.tensor([0.1, -2.0, 3.0, 0.5, 0.0, 1.5])
    theta = choice.project(w)
    table = choice.distortions(w)
    assert choice.selected(theta) == int(torch.argmin(table))
    assert theta["choice"].dtype == torch.int64 and theta["choice"].dim() == 0
    check_operator(choice, w)


def test_choice_ties_go_to_the_cheapest_option():
    w = torch.tensor([1.0, 1.0, 2.0, 2.0])  # two distinct values: k = 2 and k = 4 are both exact
    choice = Choice(options=(Quant(k=4), Quant(k=2)), labels=("k=4", "k=2"))
    assert choice.selected(choice.project(w)) == 1


def test_project_option_delegates_and_theta_is_checked():
    choice = Choice(options=(LowRank(rank=1), LowRank(rank=2)), labels=("rank=1", "rank=2"))
    w = torch.randn(3, 4)
    theta = choice.project_option(w, 1)
    assert torch.allclose(choice.decompress(theta, (3, 4)), LowRank(rank=2).decompress(LowRank(rank=2).project(w), (3, 4)))
    assert choice.storage((3, 4), theta) == LowRank(rank=2).storage((3, 4))
    assert choice.chosen(theta, (3, 4)) == "rank=2 (rank 2 of 3)"
    choice.check_theta(theta, (3, 4))
    with pytest.raises(ValueError, match="choice holds 5"):
        choice.check_theta({**theta, "choice": torch.tensor(5)}, (3, 4))
    with pytest.raises(ValueError, match="choice is missing"):
        choice.check_theta({k: v for k, v in theta.items() if k != "choice"}, (3, 4))
    with pytest.raises(ValueError, match="outside"):
        choice.project_option(w, 2)


def test_choice_refuses_mixed_views_penalty_forms_and_label_counts():
    with pytest.raises(ValueError, match="share one view"):
        Choice(options=(Quant(k=2), LowRank(rank=1)), labels=("a", "b"))
    with pytest.raises(ValueError, match="penalty form"):
        Choice(options=(Prune(l0_penalty=1.0),), labels=("a",))
    with pytest.raises(ValueError, match="one label per option"):
        Choice(options=(Quant(k=2),), labels=())


def test_choice_describes_itself_as_a_spec_writes_it():
    def choice(options, labels):
        return describe(Choice(options=options, labels=labels))

    assert choice(tuple(Quant(bits=b) for b in (1, 2, 3)), ("bits=1", "bits=2", "bits=3")) == "quant(bits=1..3)"
    assert choice((Quant(bits=1), Quant(bits=4)), ("bits=1", "bits=4")) == "quant(bits=[1, 4])"
    # options that are not one call over one argument: alternatives
    assert choice((Quant(bits=1), Quant(k=3)), ("bits=1", "k=3")) == "quant(bits=1) | quant(k=3)"
    assert choice((Prune(l0=5), Quant(bits=1)), ("l0=5", "bits=1")) == "prune(l0=5) | quant(bits=1)"


def test_option_costs_in_bits_params_and_flops():
    shape = (10, 20)  # a Linear 20 → 10
    assert option_cost(Quant(bits=2), (200,), "bits") == Quant(bits=2).storage((200,)).bits == 4 * 32 + 400
    assert option_cost(Quant(bits=2), (200,), "params") == 4
    assert option_cost(Quant(bits=2), (200,), "flops") == 200  # quantization keeps every multiply-add
    assert option_cost(LowRank(rank=3), shape, "flops") == 3 * 30
    assert option_cost(LowRank(rank=3), shape, "flops", positions=49) == 3 * 30 * 49  # a conv's output positions
    assert option_cost(LowRank(rank=3), shape, "bits") == 32 * 90
    assert option_cost(Prune(l0=17), (200,), "flops") == 17
    assert option_cost(Prune(l0=2, by="rows"), (10, 20), "flops") == 40
    assert option_cost(Binarize(), (200,), "flops") == 200
    assert dense_cost(shape, "bits") == 6400 and dense_cost(shape, "flops", positions=4) == 800
    choice = Choice(options=(LowRank(rank=1), LowRank(rank=2)), labels=("rank=1", "rank=2"))
    assert choice_costs(choice, shape, "params") == (30, 60)


def test_option_cost_refuses_what_it_cannot_price():
    with pytest.raises(ValueError, match="counts one of bits, params, flops"):
        option_cost(Quant(k=2), (4,), "bytes")
    with pytest.raises(ValueError, match="penalty form"):
        option_cost(Prune(l0_penalty=1.0), (4,), "bits")
    with pytest.raises(ValueError, match="choice_costs"):
        option_cost(Choice(options=(Quant(k=2),), labels=("k=2",)), (4,), "bits")
    with pytest.raises(ValueError, match="positions"):
        option_cost(Quant(k=2), (4,), "flops", positions=0)


def test_a_raising_or_malformed_table_is_a_plugin_error_wherever_it_is_read():
    from lcdsl.budget.tables import checked_table
    from lcdsl.errors import PluginError

    class Raising(Quant):
        @classmethod
        def distortion_table(cls, w, options, mu=0.0):
            raise RuntimeError("boom")

    class Short(Quant):
        @classmethod
        def distortion_table(cls, w, options, mu=0.0):
            return torch.zeros(1, dtype=torch.float64)

    class NotFinite(Quant):
        @classmethod
        def distortion_table(cls, w, options, mu=0.0):
            return torch.full((len(options),), float("nan"), dtype=torch.float64)

    w = torch.tensor([0.0, 1.0, 5.0, 9.0])
    cases = ((Raising, "raised RuntimeError: boom"), (Short, "returned 1 values for 2 options"), (NotFinite, "not finite"))
    for cls, message in cases:
        choice = Choice(options=(cls(k=2), cls(k=3)), labels=("k=2", "k=3"))
        with pytest.raises(PluginError, match=message):
            checked_table(choice, w, 0.0, "task fc1.weight")
    good = Choice(options=(Quant(k=2), Quant(k=3)), labels=("k=2", "k=3"))
    assert torch.equal(checked_table(good, w, 0.0, "task fc1.weight"), good.distortions(w))
