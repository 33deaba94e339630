"""Training: seeded batches, error rates, the reference recipe, and the L step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lcdsl.errors import EngineError
from lcdsl.plan.settings import Settings
from lcdsl.training.data import Dataset
from lcdsl.training.epochs import Batches, error_rate
from lcdsl.training.lstep import make_l_step
from lcdsl.training.reference import Recipe, default_recipe, train_reference

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n: int = 120, seed: int = 0) -> Dataset:
    """Three well separated Gaussian blobs in 2-D."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    y = torch.arange(n) % 3
    x = centres[y] + 0.3 * torch.randn(n, 2, generator=g)
    return Dataset("blobs", x[: n // 2 * 1], y[: n // 2], x[n // 2 :], y[n // 2 :], 3)


def test_batches_cover_each_example_once_in_a_seeded_order():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    seen = torch.cat([yb for _, yb in Batches(3, seed=5).epoch(x, y)])
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(yb) for _, yb in Batches(3, seed=5).epoch(x, y)] == [3, 3, 3, 1]
    again = torch.cat([yb for _, yb in Batches(3, seed=5).epoch(x, y)])
    other = torch.cat([yb for _, yb in Batches(3, seed=6).epoch(x, y)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)
    assert Batches(4, 0).count(10) == 3
    with pytest.raises(EngineError, match="batch size"):
        Batches(0, 0)


def test_batches_state_restores_the_order():
    x, y = torch.arange(20.0).unsqueeze(1), torch.arange(20)
    a = Batches(5, seed=1)
    list(a.epoch(x, y))
    state = a.state_dict()
    expected = [yb.tolist() for _, yb in a.epoch(x, y)]
    b = Batches(5, seed=99)
    b.load_state_dict(state)
    assert [yb.tolist() for _, yb in b.epoch(x, y)] == expected


def test_error_rate_counts_misclassified_examples():
    model = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))  # class 1 iff x > 0
    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([0, 1, 1, 1, 0])
    assert error_rate(model, x, y, batch_size=2) == pytest.approx(2 / 5)
    model.train()
    error_rate(model, x, y)
    assert model.training  # mode restored


def test_default_recipe():
    assert default_recipe("fashion-mnist") == Recipe()  # the LeNet300 recipe
    assert Recipe().epochs == 30 and Recipe().lr_decay == 0.95 and Recipe().batch_size == 256
    digits = default_recipe("digits", lr=0.05, epochs=None)
    assert digits.epochs < 30 and digits.lr == 0.05
    with pytest.raises(EngineError, match="epochs ≥ 1"):
        default_recipe("digits", epochs=0)


def test_train_reference_learns_and_records_each_epoch():
    data = blobs()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3))
    history = train_reference(model, data, Recipe(epochs=5, batch_size=16, lr=0.1))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert history[1]["lr"] == pytest.approx(0.1 * 0.95)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["test_error"] == error_rate(model, data.x_test, data.y_test) < 0.05


def test_train_reference_divergence_is_an_engine_error():
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    with pytest.raises(EngineError, match="diverged"):
        train_reference(model, blobs(), Recipe(epochs=2, batch_size=8, lr=1e38))


class _FakeEngine:
    """The two things an L step uses: the μ schedule's length and the penalty's gradient."""

    def __init__(self, add_penalty_grad):
        self.mus = (1.0, 2.0, 3.0)
        self.max_steps = 3
        self.add_penalty_grad = add_penalty_grad


def test_l_step_schedule_and_penalty():
    data = blobs()
    torch.manual_seed(0)
    model = nn.Linear(2, 3)
    settings = Settings(lr=0.2, lr_decay=0.5, epochs=1, first_epochs=3, batch_size=20, momentum=0.0)
    l_step = make_l_step(model, data, settings)
    assert [l_step.lr(k) for k in range(3)] == [0.2, 0.1, 0.05]
    assert [l_step.epochs(k) for k in range(3)] == [3, 1, 1]
    calls = []

    def pull_to_zero():  # the gradient of Σ‖p‖², after the data loss's
        calls.append(1)
        assert all(p.grad is not None for p in model.parameters())
        with torch.no_grad():
            for p in model.parameters():
                p.grad.add_(2 * p)

    free = nn.Linear(2, 3)
    free.load_state_dict(model.state_dict())
    make_l_step(free, data, settings)(_FakeEngine(lambda: None), 0)
    loss = l_step(_FakeEngine(pull_to_zero), 0)
    assert len(calls) == 3 * 3  # first_epochs × batches (60 examples / 20)
    assert loss > 0
    norm = sum(p.pow(2).sum() for p in model.parameters())
    assert norm < 0.1 * sum(p.pow(2).sum() for p in free.parameters())  # the penalty pulled w to 0


def test_l_step_state_gives_the_same_batches():
    data = blobs()
    settings = Settings(epochs=1, first_epochs=1, batch_size=7)
    torch.manual_seed(0)
    m1 = nn.Linear(2, 3)
    m2 = nn.Linear(2, 3)
    m2.load_state_dict(m1.state_dict())
    zero = _FakeEngine(lambda: None)
    a = make_l_step(m1, data, settings)
    a(zero, 0)
    b = make_l_step(m2, data, settings)
    b.load_state_dict(a.state_dict())
    m2.load_state_dict(m1.state_dict())
    assert a(zero, 1) == b(zero, 1)
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
