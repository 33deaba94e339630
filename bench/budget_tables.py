"""Time of the distortion table a budget's C step needs: ``quant(bits=1..8)`` (k up to 256) on the
two weight shapes of LeNet300's first layers, with the table each way it can be made.

- ``per size``: :meth:`Quant.distortion_table` on a float32 CPU tensor: each codebook size solved
  by the compiled kernel (Lagrangian method) and measured;
- ``one DP``: :func:`~lcdsl.operators.kmeans1d.kmeans1d_costs`, one torch DP layer per k up to
  256 (the route off the CPU kernel); skipped unless ``--dp`` (minutes on a CPU).

Usage::

    .venv/bin/python bench/budget_tables.py [--dp]
"""

from __future__ import annotations

import argparse
import time

import torch

from lcdsl.operators.kmeans1d import kmeans1d_costs
from lcdsl.operators.quant import Quant

SHAPES = ((300, 100), (784, 300))
OPTIONS = tuple(Quant(bits=b) for b in range(1, 9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp", action="store_true", help="also time the one-DP table (slow on a CPU)")
    args = parser.parse_args()
    torch.manual_seed(0)
    Quant.distortion_table(torch.randn(100), OPTIONS)  # compile the kernels first
    for shape in SHAPES:
        w = (0.05 * torch.randn(*shape)).reshape(-1)  # (n,)
        start = time.perf_counter()
        table = Quant.distortion_table(w, OPTIONS)
        line = f"{shape[0]}×{shape[1]}: per size {time.perf_counter() - start:.2f} s"
        if args.dp:
            start = time.perf_counter()
            costs = kmeans1d_costs(w, 256)
            line += f", one DP {time.perf_counter() - start:.1f} s"
            gap = (costs[[o.size - 1 for o in OPTIONS]] - table).abs().max() / table.abs().max()
            line += f" (largest relative difference {float(gap):.1e})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
