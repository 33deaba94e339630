"""The quality table (BENCHMARKS §1): LeNet300, LeNet5 (Fashion-MNIST), a BatchNorm ResNet (digits).

Each model's reference is trained once (``lcdsl train``, the BENCHMARKS recipe: 30 epochs for
LeNet300) and kept in ``--work``; every row then runs ``lcdsl compress`` on it and reads its
``report.json``: direct-compression test error (step 0), final test error, size in parameters and
bits, compression ratio against 32-bit dense weights, wall time.

``--straightforward`` runs, for the rows it knows, a plain re-implementation of LC on the same
reference, schedule and data order: a loop in the style of the LC toolkit, with NumPy copies of
the weights and textbook C steps (scikit-learn's ``KMeans(n_init=10)``, ``argpartition``,
``numpy.linalg.svd``). It shares nothing with lcdsl's engine or operators, so it says what the
schedule itself gives.

Usage::

    .venv/bin/python bench/quality.py                        # every LeNet300 row
    .venv/bin/python bench/quality.py --model lenet5         # the LeNet5 rows (shorter schedule)
    .venv/bin/python bench/quality.py --model resnet-small   # a BatchNorm ResNet, on the digits
    .venv/bin/python bench/quality.py --rows quant,prune --straightforward
    .venv/bin/python bench/quality.py --quick                # digits, 3 LC steps: a smoke run
    .venv/bin/python bench/quality.py --schedule auto --seeds 0,1,2   # the spec's μ replaced by auto

``--schedule auto`` runs each row with its ``mu = …`` line removed, so the default adaptive
schedule (``mu = auto(…)``) decides μ (``mu = auto(steps=N)`` when the hand schedule has N ≠ 20
LC steps, as the LeNet5 rows' 8: the same budget); its runs go to ``<row>-auto-seed<s>`` in ``--work`` and
its results to ``…-auto.json``. Every row reports, per seed: the final test error, the final
``‖w − Δ(θ)‖²``, direct compression's, their ratio (converged: ≤ 1e-3), and the median and
spread (max − min) of the final errors.

Results go to ``bench/results/quality-<model>[-<data>][-straightforward].json`` (``--quick``: to
``--work``), written after every row, so an interrupted run keeps the rows it finished.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from lcdsl.cli import main as lcdsl_main
from lcdsl.cli.train import build_model, load_reference
from lcdsl.language.parser import load as load_spec
from lcdsl.language import parse
from lcdsl.plan.settings import Auto, Settings, settings_from_spec
from lcdsl.training.data import Dataset, load_data
from lcdsl.training.epochs import Batches, error_rate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@attrs.frozen
class Row:
    """One line of the table: a spec on a model."""

    name: str
    model: str
    scheme: str
    spec: str
    """A path under the repository, or the spec's text (LeNet5 rows, written into ``--work``)."""


LENET300_ROWS = (
    Row("quant", "lenet300", "quantize every layer, own 2-entry codebook", "specs/lenet300-quant.lc"),
    Row("prune", "lenet300", "prune all but 5% of the weights, jointly", "specs/lenet300-prune.lc"),
    Row("mixed", "lenet300", "prune fc1 (5000), low-rank fc2 (10), quantize fc3 (k=2)", "specs/lenet300-mixed.lc"),
    Row("lowrank", "lenet300", "low-rank to ranks 80, 7, 9", "specs/lenet300-lowrank.lc"),
    Row("additive", "lenet300", "one shared 2-entry codebook + 1% sparse correction", "specs/lenet300-additive.lc"),
    Row("rankselect", "lenet300", "rank selection, α = 1e-6, storage cost", "specs/lenet300-rankselect.lc"),
    Row("binarize", "lenet300", "binarize every layer, own scale", "specs/lenet300-binarize.lc"),
    Row("ternarize", "lenet300", "ternarize every layer, own scale", "specs/lenet300-ternarize.lc"),
    Row("structured", "lenet300", "keep 25% of fc1's inputs and 50% of fc2's neurons", "specs/lenet300-structured.lc"),
    Row("quant2", "lenet300", "quantize every layer, own 4-entry codebook (2 bits, uniform)", "specs/lenet300-quant2.lc"),
    Row("quant-budget", "lenet300", "1 to 8 bits a layer within quant2's size (532,784 bits)",
        "specs/lenet300-quant-budget.lc"),
    Row("lowrank-budget", "lenet300", "every layer's rank within lowrank's 90,510 parameters",
        "specs/lenet300-lowrank-budget.lc"),
)
"""The last three rows are the budgets' (``within``): each against the uniform or fixed row of its size."""

# LeNet5 trains ~10× slower than LeNet300 on a CPU: a reference of 10 epochs and 8 LC steps
# (2 epochs for the first L step, 1 after) spanning the same μ range as the LeNet300 schedules.
LENET5_REFERENCE_EPOCHS = 10
LENET5_ROWS = (
    Row(
        "lenet5-quant", "lenet5", "quantize every layer, own 4-entry codebook (2 bits)",
        "# LeNet5: every layer quantized with its own 4-entry codebook; 8 LC steps (shorter schedule).\n"
        "mu = geometric(start=9e-5, factor=1.9, steps=8)\nlr = 0.05\nlr_decay = 0.95\n"
        "epochs = 1\nfirst_epochs = 2\n\nconv*, fc* : quant(k=4)\n",
    ),  # fmt: skip
    Row(
        "lenet5-lowrank", "lenet5", "low-rank conv2 (rank 10) and fc1 (rank 20)",
        "# LeNet5: conv2 (50×500 as a matrix) to rank 10, fc1 (500×800) to rank 20; 8 LC steps.\n"
        "mu = geometric(start=1e-3, factor=2.1, steps=8)\nlr = 0.01\nlr_decay = 0.95\n"
        "epochs = 1\nfirst_epochs = 2\n\nconv2 : lowrank(rank=10)\nfc1 : lowrank(rank=20)\n",
    ),  # fmt: skip
)

# A ResNet (BatchNorm, downsample branches) fits a 2-core CPU's budget only on the digits: the
# 78 k-weight resnet-small trains an epoch of them in seconds (an epoch of Fashion-MNIST: minutes).
RESNET_ROWS = (
    Row(
        "resnet-quant", "resnet-small", "quantize every convolution to 4 entries, prune the classifier to 10%",
        "# resnet-small: every convolution quantized with its own 4-entry codebook, the classifier pruned.\n"
        "mu = geometric(start=9e-5, factor=1.21, steps=20)\nlr = 0.05\nlr_decay = 0.98\n"
        "epochs = 2\nfirst_epochs = 4\nbatch_size = 32\n\n@Conv2d : quant(k=4)\nfc : prune(l0=10%)\n",
    ),  # fmt: skip
)
MODEL_ROWS = {"lenet300": LENET300_ROWS, "lenet5": LENET5_ROWS, "resnet-small": RESNET_ROWS}
ROWS = {row.name: row for rows in MODEL_ROWS.values() for row in rows}


# ------------------------------------------------------------------------ running lcdsl


def _cli(argv: list[str], log: Path) -> None:
    """``lcdsl ARGV`` in this process, its output appended to ``log``; raises on failure."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = lcdsl_main(argv)
    with log.open("a") as fh:
        fh.write(f"$ lcdsl {' '.join(argv)}\n{buffer.getvalue()}\n")
    if code == 2:
        raise DoesNotFit(buffer.getvalue().strip().splitlines()[0] if buffer.getvalue().strip() else "spec error")
    if code != 0:
        raise RuntimeError(f"lcdsl {' '.join(argv)} failed ({code}); see {log}")


class DoesNotFit(Exception):
    """``lcdsl`` refused the spec for this model and data (exit code 2), e.g. a rank above a
    layer's size on digits' 64 inputs."""


def _hand_steps(text: str) -> int | None:
    """How many LC steps the spec's own μ schedule has (None: it sets none)."""
    settings = settings_from_spec(parse(text))
    return None if isinstance(settings.mu, Auto) else len(settings.mu.values())


def _spec_path(row: Row, work: Path, schedule: str = "hand") -> str:
    """The row's spec file; with ``schedule="auto"`` a copy in ``work`` without its ``mu`` line."""
    if row.spec.endswith(".lc") and schedule == "hand":
        return str(ROOT / row.spec)
    text = (ROOT / row.spec).read_text() if row.spec.endswith(".lc") else row.spec
    if schedule == "auto":
        steps = _hand_steps(text)
        text = "".join(line for line in text.splitlines(keepends=True) if not line.replace(" ", "").startswith("mu="))
        if steps is not None and steps != Auto().steps:  # the same budget of LC steps as the hand schedule
            text = f"mu = auto(steps={steps})\n" + text
    path = work / (f"{row.name}.lc" if schedule == "hand" else f"{row.name}-{schedule}.lc")
    path.write_text(text)
    return str(path)


def reference(model: str, data: str, work: Path, epochs: int | None, log: Path) -> Path:
    """The model's reference in ``work`` (trained now if missing)."""
    path = work / f"ref-{model}-{data}.pt"
    if not path.exists():
        argv = ["train", "--model", model, "--data", data, "--out", str(path)]
        _cli(argv + (["--epochs", str(epochs)] if epochs else []), log)
    return path


def run_row(
    row: Row, data: str, ref: Path, work: Path, extra: list[str], log: Path, seed: int | None = None,
    schedule: str = "hand", tag: str = "",
) -> dict[str, Any]:
    """``lcdsl compress`` for one row (with another data-order seed than the spec's if given;
    with the spec's μ schedule, or ``auto``); the table's numbers from its report. Its run folder
    is ``<row>[-auto][-<tag>][-seed<s>]`` in ``work``."""
    name = (row.name if schedule == "hand" else f"{row.name}-{schedule}") + (f"-{tag}" if tag else "")
    out = work / (name if seed is None else f"{name}-seed{seed}")
    argv = ["compress", _spec_path(row, work, schedule), "--model", row.model, "--data", data,
            "--reference", str(ref), "--out", str(out), *extra]  # fmt: skip
    argv += [] if seed is None else ["--seed", str(seed)]
    start = time.perf_counter()
    _cli(argv, log)
    seconds = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    size, steps = report["size"], report["steps"]
    return {
        "name": row.name,
        "model": row.model,
        "scheme": row.scheme,
        "spec": row.spec if row.spec.endswith(".lc") else report["spec"]["text"],
        "reference_error": report["reference"]["test_error"],
        "direct_error": report["final"]["direct_compression"].get("test_error"),
        "final_error": report["final"]["test_error"],
        "final_train_error": report["final"]["train_error"],
        "schedule": schedule,
        "seed": seed,
        "lc_steps": len(steps) - 1,
        "epochs": report["settings"]["first_epochs"] + (len(steps) - 2) * report["settings"]["epochs"]
        + len([w for w in report.get("warnings", []) if w["kind"] == "rolled-back"]) * report["settings"]["epochs"],
        "mu_last": steps[-1]["mu"],
        "distortion_last": steps[-1]["distortion"],
        "distortion_direct": steps[0]["distortion"],
        "distortion_ratio": steps[-1]["distortion"] / steps[0]["distortion"] if steps[0]["distortion"] else 0.0,
        "converged": (report.get("convergence") or {}).get("converged"),
        "warnings": [w["message"] for w in report.get("warnings", [])],
        "params": size["params_after"],
        "bits": size["bits_after"],
        "dense_bits": size["bits_before"],
        "ratio": size["ratio"],
        # a budget row: the last allocation, and whether every C step kept to the limit
        "budgets": [{k: b[k] for k in ("budget", "unit", "limit", "cost", "choices")} for b in steps[-1].get("budgets", [])],
        "within_budget": all(b["cost"] <= b["limit"] for s in steps for b in s.get("budgets", []))
        if steps[-1].get("budgets") else None,
        "seconds": seconds,
        "seconds_l_steps": report["seconds"]["l_steps"],
        "seconds_c_steps": report["seconds"]["c_steps"],
    }


# ------------------------------------------------------- the straightforward implementation


def _kmeans(w: np.ndarray, k: int) -> np.ndarray:
    if EXACT_KMEANS:
        return _exact_kmeans(w, k)
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(w.reshape(-1, 1))
    return km.cluster_centers_[km.labels_, 0]


EXACT_KMEANS = False
"""``--exact-kmeans``: the loop's k-means is lcdsl's exact one (on float32, as lcdsl runs it), so
the loop and lcdsl differ only in the code around the C step."""


def _exact_kmeans(w: np.ndarray, k: int) -> np.ndarray:
    from lcdsl.operators.quant import Quant

    target = torch.from_numpy(w.astype(np.float32))
    op = Quant(k=k)
    return op.decompress(op.project(target), tuple(target.shape)).double().numpy()


def _top(w: np.ndarray, kappa: int) -> np.ndarray:
    out = np.zeros_like(w)
    keep = np.argpartition(np.abs(w), -kappa)[-kappa:]
    out[keep] = w[keep]
    return out


def _svd(w: np.ndarray, rank: int) -> np.ndarray:
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vt[:rank]


def _additive(w: np.ndarray, kappa: int, k: int, rounds: int = 10) -> np.ndarray:
    quant, sparse = np.zeros_like(w), np.zeros_like(w)
    for _ in range(rounds):
        sparse = _top(w - quant, kappa)
        quant = _kmeans(w - sparse, k)
    return quant + sparse


def _binarize(w: np.ndarray) -> np.ndarray:
    return np.abs(w).mean() * np.where(w >= 0, 1.0, -1.0)


def _ternarize(w: np.ndarray) -> np.ndarray:
    """Best c·t, t ∈ {−1, 0, 1}: a support of the j largest magnitudes, c their mean, j best."""
    mag = np.sort(np.abs(w))[::-1]
    top = np.cumsum(mag)
    j = int(np.argmax(top * top / np.arange(1, w.size + 1))) + 1
    out = np.zeros_like(w)
    keep = np.argpartition(np.abs(w), -j)[-j:]
    out[keep] = top[j - 1] / j * np.sign(w[keep])
    return out


def _columns(w: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` columns of largest norm, the others zeroed."""
    out = np.zeros_like(w)
    cols = np.argpartition((w * w).sum(axis=0), -keep)[-keep:]
    out[:, cols] = w[:, cols]
    return out


# Per row: (parameter names of one task, its C step on the flat float64 vector, the task's shape
# for matrix C steps or None). Joint tasks list several parameters.
CStep = Callable[[np.ndarray], np.ndarray]
_FC = ("fc1.weight", "fc2.weight", "fc3.weight")
STRAIGHTFORWARD: dict[str, list[tuple[tuple[str, ...], CStep, bool]]] = {
    "quant": [((p,), lambda w: _kmeans(w, 2), False) for p in _FC],
    "prune": [(_FC, lambda w: _top(w, round(0.05 * w.size)), False)],
    "mixed": [
        (("fc1.weight",), lambda w: _top(w, min(5000, w.size)), False),
        (("fc2.weight",), lambda w: _svd(w, 10), True),
        (("fc3.weight",), lambda w: _kmeans(w, 2), False),
    ],
    "lowrank": [((p,), lambda w, r=r: _svd(w, r), True) for p, r in zip(_FC, (80, 7, 9))],
    "additive": [(_FC, lambda w: _additive(w, round(0.01 * w.size), 2), False)],
    "binarize": [((p,), _binarize, False) for p in _FC],
    "ternarize": [((p,), _ternarize, False) for p in _FC],
    "lenet5-quant": [((p,), lambda w: _kmeans(w, 4), False) for p in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")],
    "lenet5-lowrank": [
        (("conv2.weight",), lambda w: _svd(w, 10), True),
        (("fc1.weight",), lambda w: _svd(w, 20), True),
    ],
    "structured": [
        (("fc1.weight",), lambda w: _columns(w, round(0.25 * w.shape[1])), True),
        (("fc2.weight",), lambda w: _columns(w.T, round(0.5 * w.shape[0])).T, True),
    ],
}


def straightforward(row: Row, data: Dataset, ref: Path, seed: int | None = None) -> dict[str, Any]:
    """LC the plain way, on the row's reference, schedule and data order (see the module doc)."""
    spec = load_spec(_spec_path(row, ref.parent))
    settings: Settings = settings_from_spec(spec)
    if seed is not None:
        settings = attrs.evolve(settings, seed=seed)
    model = build_model(row.model, data, seed=settings.seed)
    load_reference(ref, model, model_name=row.model, data_name=data.name)
    params = dict(model.named_parameters())
    tasks = STRAIGHTFORWARD[row.name]

    def get(names: tuple[str, ...], matrix: bool) -> np.ndarray:
        if matrix:  # (out, in·kh·kw) for a convolution
            p = params[names[0]]
            return p.detach().double().reshape(p.shape[0], -1).numpy().copy()
        return np.concatenate([params[n].detach().double().numpy().ravel() for n in names])

    def put(names: tuple[str, ...], value: np.ndarray) -> None:
        flat, start = value.ravel(), 0
        with torch.no_grad():
            for n in names:
                p = params[n]
                p.copy_(torch.from_numpy(flat[start : start + p.numel()].reshape(p.shape)).float())
                start += p.numel()

    def compressed_error(deltas: list[np.ndarray]) -> float:
        saved = [get(names, m) for names, _, m in tasks]
        for (names, _, _), d in zip(tasks, deltas):
            put(names, d)
        error = error_rate(model, data.x_test, data.y_test)
        for (names, _, _), w in zip(tasks, saved):
            put(names, w)
        return error

    start = time.perf_counter()
    deltas = [c(get(names, m)) for names, c, m in tasks]
    lambdas = [np.zeros_like(d) for d in deltas]
    direct = compressed_error(deltas)
    history = [direct]  # test error of the compressed model after each LC step
    batches = Batches(settings.batch_size, settings.seed)
    for k, mu in enumerate(settings.mu.values()):
        targets = [torch.from_numpy(d + lam / mu).float() for d, lam in zip(deltas, lambdas)]
        optimizer = torch.optim.SGD(
            model.parameters(), lr=settings.lr * settings.lr_decay**k, momentum=settings.momentum, nesterov=True
        )
        model.train()
        for _ in range(settings.first_epochs if k == 0 else settings.epochs):
            for x, y in batches.epoch(data.x_train, data.y_train):
                optimizer.zero_grad()
                penalty = sum(
                    (torch.cat([params[n].reshape(-1) for n in names]) - t.reshape(-1)).pow(2).sum()
                    for (names, _, _), t in zip(tasks, targets)
                )
                loss = F.cross_entropy(model(x), y) + mu / 2 * penalty
                loss.backward()
                optimizer.step()
        for i, (names, c, m) in enumerate(tasks):
            w = get(names, m)
            deltas[i] = c(w - lambdas[i] / mu)
            lambdas[i] = lambdas[i] - mu * (w - deltas[i])
        history.append(compressed_error(deltas))
    for (names, _, _), d in zip(tasks, deltas):
        put(names, d)
    return {
        "name": row.name,
        "direct_error": direct,
        "final_error": error_rate(model, data.x_test, data.y_test),
        "history": history,
        "seconds": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------ output


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def show(results: dict[str, Any], plain: dict[str, Any], console: Console) -> None:
    """The rich table of one model's rows (with the straightforward column when known)."""
    ref = results["reference"]
    table = Table(
        title=f"{results['model']} on {results['data']}: reference test error {_pct(ref['test_error'])} "
        f"({ref['epochs']} epochs)"
    )
    for column in ("row", "scheme", "direct", "LC final", "straightforward", "params", "bits", "ratio", "wall s"):
        table.add_column(column, justify="left" if column in ("row", "scheme") else "right")
    for r in results["rows"]:
        other = plain.get(r["name"])
        table.add_row(
            r["name"], r["scheme"], _pct(r["direct_error"]), _pct(r["final_error"]),
            _pct(other["final_error"]) if other else "—", f"{r['params']:,}", f"{r['bits']:,}",
            f"×{r['ratio']:.1f}", f"{r['seconds']:.0f}",
        )  # fmt: skip
    console.print(table)


def _over_seeds(runs: list[dict[str, Any]], seeds: list[int | None]) -> dict[str, Any]:
    """One row from its runs: the first run's record, with the median final error over seeds and
    every seed's final error and final distortion beside it."""
    if len(runs) == 1:
        return runs[0]
    finals = [r["final_error"] for r in runs]
    return {
        **runs[0],
        "final_error": float(np.median(finals)),
        "final_error_spread": float(max(finals) - min(finals)),
        "seeds": seeds,
        "final_errors": finals,
        "per_seed": [
            {key: r.get(key) for key in ("seed", "final_error", "direct_error", "distortion_last", "distortion_direct",
                                         "distortion_ratio", "converged", "lc_steps", "epochs", "mu_last", "params",
                                         "ratio")}
            for r in runs
        ],  # fmt: skip
        "seconds": float(np.mean([r["seconds"] for r in runs])),
    }


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine()}  # fmt: skip


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODEL_ROWS), default="lenet300")
    parser.add_argument("--rows", help="comma-separated row names (default: every row of the model)")
    parser.add_argument("--straightforward", action="store_true", help="run the plain LC loop instead of lcdsl")
    parser.add_argument(
        "--schedule", choices=("hand", "auto"), default="hand",
        help="hand: each spec's own μ schedule; auto: the spec's mu line removed (the default adaptive schedule)",
    )  # fmt: skip
    parser.add_argument(
        "--exact-kmeans", action="store_true",
        help="with --straightforward: lcdsl's exact k-means in the loop instead of scikit-learn's KMeans",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="digits, 3 LC steps of 1 epoch: a smoke run")
    parser.add_argument(
        "--data", help="dataset (default fashion-mnist; digits for resnet-small and with --quick)",
    )  # fmt: skip
    parser.add_argument("--work", default="runs/bench", help="references, runs and logs (default runs/bench)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", help="JSON path (default bench/results/quality-<model>[-straightforward].json)")
    parser.add_argument(
        "--seeds", help="comma-separated data-order seeds: each row runs once per seed and reports the median "
        "final error (default: the spec's seed, once)",
    )  # fmt: skip
    parser.add_argument(
        "--tag", default="", help="run folders are <row>-<tag>[-seed<s>] in --work, apart from untagged runs sharing it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    seeds: list[int | None] = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = list(MODEL_ROWS[args.model])
    if args.rows:
        wanted = args.rows.split(",")
        unknown = [w for w in wanted if w not in {r.name for r in rows}]
        if unknown:
            parser.error(f"unknown rows {unknown} for {args.model}; rows: {', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in wanted]
    data_name = "digits" if args.quick else args.data or ("digits" if args.model == "resnet-small" else "fashion-mnist")
    work = Path(args.work) / ("quick" if args.quick else "")
    work.mkdir(parents=True, exist_ok=True)
    log = work / (f"quality-{args.tag}.log" if args.tag else "quality.log")
    suffix = ("-straightforward" + ("-exact-kmeans" if args.exact_kmeans else "")) if args.straightforward else ""
    suffix += "-auto" if args.schedule == "auto" and not args.straightforward else ""
    global EXACT_KMEANS
    EXACT_KMEANS = args.exact_kmeans
    data_tag = "" if data_name == "fashion-mnist" else f"-{data_name}"
    default_out = (work if args.quick else RESULTS) / f"quality-{args.model}{data_tag}{suffix}.json"
    out = Path(args.out) if args.out else default_out
    epochs = 5 if args.quick else (LENET5_REFERENCE_EPOCHS if args.model == "lenet5" else None)
    extra = ["--steps", "3", "--first-epochs", "1", "--epochs", "1"] if args.quick else []
    console = Console(width=160)

    start = time.perf_counter()
    ref = reference(args.model, data_name, work, epochs, log)
    ref_meta = torch.load(ref, weights_only=True)
    payload: dict[str, Any] = {
        "command": "bench/quality.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "machine": _machine(),
        "model": args.model,
        "data": data_name,
        "reference": {"test_error": ref_meta["test_error"], "train_error": ref_meta["train_error"],
                      "epochs": ref_meta["recipe"].get("epochs"), "path": str(ref)},  # fmt: skip
        "rows": [],
    }
    data = load_data(data_name) if args.straightforward else None
    kept: list[dict[str, Any]] = []
    if out.exists():  # rows of an earlier run that this one does not redo stay in the file
        old = json.loads(out.read_text())
        if old.get("model") == args.model and old.get("data") == data_name:
            kept = [r for r in old.get("rows", []) if r["name"] not in {row.name for row in rows}]
            if kept:  # where the kept rows come from
                payload["earlier_commands"] = old.get("earlier_commands", []) + [old["command"]]
    order = list(ROWS)
    payload["rows"] = sorted(kept, key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
    for row in rows:
        if args.straightforward:
            if row.name not in STRAIGHTFORWARD:
                console.print(f"{row.name}: no straightforward implementation here, skipped")
                continue
            runs = [straightforward(row, data, ref, seed) for seed in seeds]
        else:
            try:
                runs = [run_row(row, data_name, ref, work, extra, log, seed, args.schedule, args.tag) for seed in seeds]
            except DoesNotFit as exc:
                console.print(f"{row.name}: skipped, the spec does not fit {row.model} on {data_name}: {exc}")
                continue
        result = _over_seeds(runs, seeds)
        payload["rows"].append(result)
        payload["rows"].sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        payload["seconds"] = time.perf_counter() - start
        _write(out, payload)
        console.print(json.dumps(result))
    if not args.straightforward:
        plain_path = out.with_name(out.stem + "-straightforward.json")
        plain = {}
        if plain_path.exists():
            plain = {r["name"]: r for r in json.loads(plain_path.read_text())["rows"]}
        show(payload, plain, console)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
