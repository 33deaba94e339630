"""The Lightning callback: the same LC run as the plain loop of docs/engine.md, checkpoints that
resume exactly, and the warnings when the schedule cannot run. Tiny models, data made here."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from lcdsl import parse
from lcdsl.engine.core import Engine
from lcdsl.errors import EngineError
from lcdsl.integrations.lightning import LCCallback

SPEC = """
mu = geometric(start=1e-2, factor=2.0, steps=3)
fc1 : quant(k=2)
fc2 : prune(l0=12)
"""


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class Module(pl.LightningModule):
    def __init__(self, net: nn.Module, manual: bool = False) -> None:
        super().__init__()
        self.net = net
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if not self.automatic_optimization:  # a raw optimizer step, past every Lightning hook
            opt = self.optimizers().optimizer
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, nesterov=True)


def data() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # 3 classes
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=False)


def reference_net() -> Net:
    torch.manual_seed(0)
    return Net()


def trainer(max_epochs: int, callbacks: list, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, **{"enable_checkpointing": False, **kwargs},
    )  # fmt: skip


def engine_for(net: nn.Module) -> Engine:
    return Engine(net, parse(SPEC).bind(net))


def plain_loop(net: Net, loader: DataLoader, epochs: list[int]) -> Engine:
    """The loop of docs/engine.md: a fresh optimizer per LC step, loss + penalty."""
    engine = engine_for(net)
    engine.direct_compression()
    for k, mu in enumerate(engine.mus):
        engine.mu = mu
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        for _ in range(epochs[k]):
            for x, y in loader:
                opt.zero_grad()
                (F.cross_entropy(net(x), y) + engine.penalty()).backward()
                opt.step()
        engine.c_step()
        engine.multiplier_step()
        engine.step = k + 1
    engine.finalize()
    return engine


def test_callback_run_equals_the_plain_loop() -> None:
    loader = data()
    expected_net = reference_net()
    expected = plain_loop(expected_net, loader, [2, 1, 1])

    net = reference_net()
    lc = LCCallback(engine_for(net), length=1, first_length=2)
    assert lc.total_epochs == 4
    trainer(max_epochs=50, callbacks=[lc]).fit(Module(net), loader)

    assert lc.engine.step == 3 and [r.step for r in lc.engine.history] == [0, 1, 2, 3]
    assert lc.driver.done
    for name, p in expected_net.named_parameters():
        torch.testing.assert_close(dict(net.named_parameters())[name], p, rtol=1e-5, atol=1e-6)
    for name, theta in expected.thetas.items():
        for key, value in theta.items():
            torch.testing.assert_close(lc.engine.thetas[name][key], value, rtol=1e-5, atol=1e-6)
    assert len(torch.unique(net.fc1.weight)) <= 2
    assert int((net.fc2.weight != 0).sum()) <= 12


def test_the_trainer_stops_when_the_schedule_is_done() -> None:
    net = reference_net()
    lc = LCCallback(engine_for(net), length=1, first_length=1)
    t = trainer(max_epochs=50, callbacks=[lc])
    t.fit(Module(net), data())
    assert t.current_epoch == 3


def test_step_unit_counts_optimizer_steps() -> None:
    net = reference_net()
    lc = LCCallback(engine_for(net), unit="step", length=2)  # 3 batches an epoch
    t = trainer(max_epochs=50, callbacks=[lc])
    t.fit(Module(net), data())
    assert lc.engine.step == 3 and t.global_step == 6


def test_checkpoint_resumes_to_the_uninterrupted_result(tmp_path) -> None:
    loader = data()
    full_net = reference_net()
    full = LCCallback(engine_for(full_net), length=1)
    trainer(max_epochs=3, callbacks=[full]).fit(Module(full_net), loader)

    net = reference_net()
    first = LCCallback(engine_for(net), length=1)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1, save_top_k=-1)
    with pytest.warns(UserWarning, match="after 2 of 3 LC steps"):
        trainer(max_epochs=2, callbacks=[first, saver], enable_checkpointing=True).fit(Module(net), loader)
    assert first.engine.step == 2

    resumed_net = reference_net()  # fresh weights: everything comes from the checkpoint
    resumed = LCCallback(engine_for(resumed_net), length=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(max_epochs=3, callbacks=[resumed]).fit(Module(resumed_net), loader, ckpt_path=tmp_path / "last.ckpt")
    assert not [w for w in caught if "lcdsl" in str(w.message)]
    assert [r.step for r in resumed.engine.history] == [0, 1, 2, 3]
    for name, p in full_net.named_parameters():
        torch.testing.assert_close(dict(resumed_net.named_parameters())[name], p, rtol=0, atol=0)


def test_warns_when_max_epochs_is_too_few() -> None:
    net = reference_net()
    lc = LCCallback(engine_for(net), length=2)
    with pytest.warns(UserWarning, match="max_epochs=2 is too few") as caught:
        trainer(max_epochs=2, callbacks=[lc]).fit(Module(net), data())
    assert any("after 1 of 3 LC steps" in str(w.message) for w in caught)
    assert lc.engine.step == 1


def test_warns_when_the_penalty_hook_never_fires() -> None:
    net = reference_net()
    lc = LCCallback(engine_for(net), length=1)
    with pytest.warns(UserWarning, match="on_before_optimizer_step never fired"):
        trainer(max_epochs=3, callbacks=[lc]).fit(Module(net, manual=True), data())


def test_refuses_an_engine_on_another_model() -> None:
    lc = LCCallback(engine_for(reference_net()), length=1)
    with pytest.raises(EngineError, match="not the trained model's"):
        trainer(max_epochs=3, callbacks=[lc]).fit(Module(reference_net()), data())


def test_bad_lengths_are_refused() -> None:
    engine = engine_for(reference_net())
    with pytest.raises(EngineError, match="needs length"):
        LCCallback(engine, unit="step")
    with pytest.raises(EngineError, match="length must be an integer"):
        LCCallback(engine, length=0)
    with pytest.raises(EngineError, match="unit must be"):
        LCCallback(engine, unit="batch")  # type: ignore[arg-type]


def test_auto_schedule_through_the_callback() -> None:
    """``mu = auto(…)``: the engine picks each μ; the callback only runs the L steps it asks for."""
    net = reference_net()
    engine = Engine(net, parse("mu = auto(steps=12)\nfc1 : quant(k=2)\nfc2 : prune(l0=12)\n").bind(net))
    lc = LCCallback(engine, length=1, first_length=1)
    assert lc.total_epochs == 12 + 3  # the budget and the retries
    t = trainer(max_epochs=lc.total_epochs, callbacks=[lc])
    t.fit(Module(net), data())
    history = lc.engine.history
    rolled_back = sum(w["kind"] == "rolled-back" for w in lc.engine.warnings)
    assert lc.driver.done and t.current_epoch == len(history) - 1 + rolled_back
    assert list(lc.engine.mus) == [r.mu for r in history[1:]] and history[1].mu > 0
    assert all(b > a for a, b in zip(lc.engine.mus, lc.engine.mus[1:]))
    # stopped early only when feasible (with a settled loss); otherwise the budget ran out
    assert lc.engine.converged <= lc.engine.convergence().converged
    assert lc.engine.converged or len(history) - 1 == 12
    assert len(torch.unique(net.fc1.weight)) <= 2  # finalized: the weights are Δ(θ)
