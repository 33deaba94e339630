"""LC compression of LeNet300 on scikit-learn's digits with DistributedDataParallel.

One process, or many under torchrun; the result is the same up to float rounding, because every
step uses the same *global* mini-batch (each rank takes a share of it, and the loss is scaled so
that DDP's gradient average is the gradient of the global batch's mean loss)::

    python examples/ddp_train.py --out runs/ddp1                          # one process
    torchrun --standalone --nproc-per-node 2 examples/ddp_train.py --out runs/ddp2

    # two machines, 4 processes each (run on both, with node-rank 0 and 1):
    torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 \\
        --rdzv-backend c10d --rdzv-endpoint HOST0:29500 --rdzv-id lc-demo \\
        examples/ddp_train.py --spec specs/demo.lc --out runs/ddp8

Every rank trains the reference and runs the LC steps; every rank's C step computes the same θ
(checked at the end with ``lcdsl.distributed.check_same``); rank 0 prints and saves. Each rank
writes ``OUT/rank{R}.pt`` (its final weights and θ) so the ranks can be compared afterwards.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import attrs
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lcdsl.engine.core import Engine
from lcdsl.engine.distributed import check_same, rank_and_world
from lcdsl.language.parser import load
from lcdsl.training.data import Dataset, load_data, model_kwargs
from lcdsl.training.epochs import Batches, error_rate
from lcdsl.training.zoo import LeNet300


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="specs/demo.lc", help="the .lc spec (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="folder for rank{R}.pt")
    parser.add_argument("--reference-epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, help="override the spec's number of μ steps")
    parser.add_argument("--epochs", type=int, help="override the spec's epochs per L step")
    parser.add_argument("--first-epochs", type=int, help="override the spec's epochs of the first L step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    return parser.parse_args()


def setup() -> tuple[int, int]:
    """Join the torchrun job if there is one (gloo: this example trains on the CPU)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        dist.init_process_group("gloo")
    return rank_and_world()


def train_epochs(model: nn.Module, data: Dataset, batches: Batches, epochs: int, lr: float,
                 momentum: float, add_penalty_grad=None) -> float:  # fmt: skip
    """SGD over global mini-batches; this rank computes its share ``batch[rank::world]``."""
    rank, world = rank_and_world()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0)
    total = torch.zeros((), dtype=torch.float64)
    for _ in range(epochs):
        total.zero_()
        for x, y in batches.epoch(data.x_train, data.y_train):  # the same global batch on every rank
            share_x, share_y = x[rank::world], y[rank::world]
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks: Σ_share / |batch| · world averages to the batch mean
            loss = F.cross_entropy(model(share_x), share_y, reduction="sum") * (world / x.shape[0])
            total += loss.detach().double() * x.shape[0] / world
            loss.backward()  # DDP's all-reduce happens here
            if add_penalty_grad is not None:
                # after the all-reduce: every rank has the same w, Δ(θ) and λ, so it adds the same
                # μ(w − Δ(θ)) − λ, and the ranks' gradients stay equal
                add_penalty_grad()
            optimizer.step()
    if world > 1:
        dist.all_reduce(total)
    return float(total) / data.x_train.shape[0]  # the last epoch's mean loss


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rank, world = setup()
    spec = load(args.spec)
    data = load_data("digits", seed=0)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    net = LeNet300(**model_kwargs("lenet300", data))
    model = DistributedDataParallel(net) if world > 1 else net

    plan = spec.bind(net)
    overrides = {
        k: v
        for k, v in (("epochs", args.epochs), ("first_epochs", args.first_epochs))
        if v is not None
    }
    settings = attrs.evolve(plan.settings, **overrides)
    if args.steps is not None and hasattr(settings.mu, "steps"):
        settings = attrs.evolve(settings, mu=attrs.evolve(settings.mu, steps=args.steps))
    batches = Batches(settings.batch_size, settings.seed)

    train_epochs(model, data, batches, args.reference_epochs, settings.lr, settings.momentum)
    if rank == 0:
        print(f"{world} process(es); reference test error {error_rate(net, data.x_test, data.y_test):.2%}")

    engine = Engine(model, plan, settings=settings)  # the DDP wrapper's `module.` prefix is ignored

    def l_step(engine: Engine, k: int) -> float:
        lr = settings.lr * settings.lr_decay**k
        epochs = settings.first_epochs if k == 0 else settings.epochs
        return train_epochs(model, data, batches, epochs, lr, settings.momentum, add_penalty_grad=engine.add_penalty_grad)

    def evaluate(engine: Engine) -> dict[str, float]:
        return {"test_error": error_rate(net, data.x_test, data.y_test)}

    for record in engine.run(l_step, evaluate):
        if rank == 0:
            loss = "-" if record.loss is None else f"{record.loss:.4f}"
            print(
                f"step {record.step:2d}  μ={record.mu:.3g}  loss={loss}  ‖w − Δ(θ)‖²={record.distortion:.4g}"
                f"  test error={record.metrics['test_error']:.2%}"
            )
    thetas = engine.finalize()
    spread = check_same(model, engine)  # raises if any rank differs
    if rank == 0:
        print(f"final test error {error_rate(net, data.x_test, data.y_test):.2%}; ranks differ by {spread:g}")
    args.out.mkdir(parents=True, exist_ok=True)
    weights = net.state_dict()
    torch.save({"model": weights, "thetas": thetas, "history": [r.to_dict() for r in engine.history]},
               args.out / f"rank{rank}.pt")  # fmt: skip
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
