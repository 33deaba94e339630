"""C-step benchmarks (BENCHMARKS §2): runs ``cstep_quant.py`` and ``cstep_other.py``.

Modes::

    .venv/bin/python bench/cstep.py            # quick: both scripts with --quick (n ≤ 1e6, sides ≤ 2048)
    .venv/bin/python bench/cstep.py --full     # both scripts in full (n up to 1e7, sides up to 4096)
    .venv/bin/python bench/cstep.py --smoke --out PATH   # tiny sizes, in seconds (the test suite's)

Quick and full run each script in its own process; the full run writes
``bench/results/cstep_quant.json`` and ``cstep_other.json``, the quick one
``runs/bench/*-quick.json``. ``--smoke`` imports the scripts' own timing functions and runs them
on tiny inputs in this process, checks every objective ``‖w − Δ(θ)‖²`` against a reference
solver (scikit-learn's ``KMeans(n_init=10)`` for quant, ``numpy.argpartition`` for L0 pruning,
``numpy.linalg.svd`` for low-rank), writes JSON to ``--out`` and exits with 1 if ours is ever
worse.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SCRIPTS = ("cstep_quant.py", "cstep_other.py")
TOLERANCE = 1e-9
"""Relative slack of the objective comparisons (float32 weights, float64 sums)."""


def _worse(ours: float, theirs: float) -> bool:
    return ours > theirs * (1 + TOLERANCE) + 1e-12


def smoke() -> dict[str, Any]:
    """Tiny-size runs of both scripts' measurements, with reference objectives."""
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    # on tiny inputs (and a shared machine) OpenMP threads only wait on each other
    with threadpool_limits(1):
        return _smoke()


def _smoke() -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import cstep_other
    import cstep_quant

    rng = np.random.default_rng(0)
    quant = []
    for n in (1000, 5000):
        x = rng.standard_normal(n).astype(np.float32)
        for k in (2, 4):
            seconds, ours = cstep_quant.time_ours(torch.from_numpy(x), k)
            ref_seconds, theirs = cstep_quant.time_sklearn(x, k)
            quant.append({"n": n, "k": k, "ours_s": seconds, "ours_obj": ours, "sklearn_s": ref_seconds,
                          "sklearn_obj": theirs, "ok": not _worse(ours, theirs)})  # fmt: skip

    prune = []
    device = torch.device("cpu")
    for label, (op, mu) in cstep_other.prune_cases().items():
        for n in (1000, 10000):
            w = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
            if op.view == "tensor":
                w = w.reshape(-1, 100)  # (n/100, 100)
            resolved = op.resolve(tuple(w.shape))
            seconds = cstep_other.timed(lambda: resolved.project(w, mu=mu), device)
            delta = resolved.decompress(resolved.project(w, mu=mu), tuple(w.shape))
            ours = float((w.double() - delta.double()).pow(2).sum())
            row = {"operator": label, "n": n, "seconds": seconds, "ours_obj": ours}
            if label == "prune(l0=5%)":  # the reference: keep the κ largest magnitudes
                flat = w.double().numpy().ravel()
                kappa = resolved.l0
                dropped = np.argpartition(np.abs(flat), -kappa)[:-kappa]
                row["reference_obj"] = float((flat[dropped] ** 2).sum())
                row["ok"] = not _worse(ours, row["reference_obj"])
            prune.append(row)

    lowrank = []
    from lcdsl.operators.lowrank import LowRank

    for side in (32, 64):
        w = torch.from_numpy(rng.standard_normal((side, side)).astype(np.float32))
        rank = side // 8
        op = LowRank(rank=rank).resolve((side, side))
        seconds = cstep_other.timed(lambda: op.project(w, mu=1.0), device)
        delta = op.decompress(op.project(w, mu=1.0), (side, side))
        ours = float((w.double() - delta.double()).pow(2).sum())
        singular = np.linalg.svd(w.double().numpy(), compute_uv=False)
        reference = float((singular[rank:] ** 2).sum())  # Eckart–Young: the tail's energy
        # float32 SVD against a float64 one: allow single-precision rounding of ‖w‖²
        slack = 1e-5 * float((singular**2).sum())
        lowrank.append({"side": side, "rank": rank, "seconds": seconds, "ours_obj": ours,
                        "reference_obj": reference, "ok": ours <= reference + slack})  # fmt: skip
    return {"mode": "smoke", "quant": quant, "prune": prune, "lowrank": lowrank}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="full sizes (minutes to hours on a small machine)")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, in seconds")
    parser.add_argument("--out", help="--smoke: where to write the JSON (default runs/bench/cstep_smoke.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        start = time.perf_counter()
        result = smoke()
        result["seconds"] = time.perf_counter() - start
        out = Path(args.out) if args.out else HERE.parent / "runs" / "bench" / "cstep_smoke.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        bad = [r for part in ("quant", "prune", "lowrank") for r in result[part] if r.get("ok") is False]
        for row in bad:
            print(f"objective worse than the reference: {row}", file=sys.stderr)
        print(f"smoke: {len(result['quant'])} quant, {len(result['prune'])} prune, {len(result['lowrank'])} lowrank "
              f"runs in {result['seconds']:.1f} s, {'all' if not bad else 'NOT all'} objectives ≤ the references' → {out}")
        return 1 if bad else 0
    code = 0
    for script in SCRIPTS:
        cmd = [sys.executable, str(HERE / script)] + ([] if args.full else ["--quick"])
        print(f"$ {' '.join(cmd[1:])}", flush=True)
        code = code or subprocess.run(cmd, check=False).returncode
    return code


if __name__ == "__main__":
    raise SystemExit(main())
