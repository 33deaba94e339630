"""The plain PyTorch loop of docs/engine.md, run for real: mini-batches, a fresh optimizer per LC
step, evaluation under ``compressed()``, then ``finalize()``. The plan is built in code (the docs
parse a spec) with a 2-entry fixed-codebook quantizer defined here, so no plugin is needed."""

from __future__ import annotations

import math
from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lcdsl.engine.core import Engine
from lcdsl.operators.base import Operator, Storage
from lcdsl.plan.model import Plan, Task
from lcdsl.plan.settings import Geometric, Settings


@attrs.frozen
class Codebook(Operator):
    """argmin_θ ‖w − Δ(θ)‖² s.t. every Δ(θ)ᵢ ∈ codebook: each weight to its nearest codeword (exact)."""

    name: ClassVar[str] = "codebook"
    values: tuple[float, ...] = (-0.25, 0.25)

    def project(self, w, mu=0.0, warm=None):
        book = torch.tensor(self.values, dtype=w.dtype, device=w.device)  # (k,)
        return {"assign": (w[:, None] - book[None, :]).abs().argmin(dim=1), "book": book}

    def decompress(self, theta, shape):
        return theta["book"][theta["assign"]].reshape(shape)

    def storage(self, shape, theta=None):
        n, k = math.prod(shape), len(self.values)
        return Storage(params=k, bits=32 * k + n * math.ceil(math.log2(k)))


def test_plain_pytorch_loop_from_the_docs() -> None:
    torch.manual_seed(0)
    teacher = nn.Linear(8, 3)
    x = torch.randn(512, 8)
    y = teacher(x).argmax(1)
    train_loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

    def test_error(model: nn.Module) -> float:
        with torch.no_grad():
            return float((model(x).argmax(1) != y).float().mean())

    # a trained reference model first, as LC expects
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(10):
        for xb, yb in train_loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    reference_error = test_error(model)

    # what `load("my.lc").bind(model)` gives for `[0.weight, 2.weight] : quant(codebook=[-0.25, 0.25])`
    params = dict(model.named_parameters())
    names = ["0.weight", "2.weight"]
    task = Task(parameters=names, shapes=[params[n].shape for n in names], operator=Codebook(), joint=True)
    settings = Settings(mu=Geometric(start=1e-2, factor=2.0, steps=8))
    plan = Plan(tasks=(task,), dense=("0.bias", "2.bias"), dense_numel=35, settings=settings)

    engine = Engine(model, plan)
    engine.direct_compression()
    with engine.compressed():
        direct_error = test_error(model)
    distortions = [engine.distortion()]
    for k, mu in enumerate(engine.mus):
        engine.mu = mu
        opt = torch.optim.SGD(model.parameters(), lr=0.1 * 0.98**k, momentum=0.9, nesterov=True)
        for xb, yb in train_loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            engine.add_penalty_grad()
            opt.step()
        engine.c_step()
        engine.multiplier_step()
        engine.step = k + 1
        with engine.compressed():
            error = test_error(model)
        distortions.append(engine.distortion())
    thetas = engine.finalize()

    weights = torch.cat([model[0].weight.detach().reshape(-1), model[2].weight.detach().reshape(-1)])
    assert set(weights.unique().tolist()) <= {-0.25, 0.25}  # every weight a codeword
    assert distortions[-1] < 0.05 * distortions[0]
    assert test_error(model) == error  # the finalized model is the one evaluated under compressed()
    assert error < direct_error  # LC beats compressing the reference (≈ 8% vs 22% here)
    assert reference_error < 0.2
    assert thetas["[0.weight, 2.weight]"]["assign"].shape == (8 * 32 + 32 * 3,)
    (_, size), = engine.storage()
    assert size == Storage(params=2, bits=64 + 352)
