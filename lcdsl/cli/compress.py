"""``lcdsl compress SPEC``: train (or load) a reference, run LC along the spec, save the results.

The output folder (``--out``, default ``runs/<spec name>``) gets:

- ``reference.pt``: the reference trained here when no ``--reference`` is given (kept and reused);
- ``checkpoint.pt``: after every LC step (model, engine state, data order, history), for ``--resume``
  (:mod:`lcdsl.store.checkpoint`);
- ``compressed.pt``: ``θ`` per task, the dense parameters, the buffers, and the compressed model's
  outputs on a probe batch for ``lcdsl export``'s check (:func:`lcdsl.store.model.load_compressed`);
- ``report.json`` and ``curves.png``: every step's numbers, the plan, the sizes, the errors.

The run holds the lock on the folder (``.lock``, :func:`~lcdsl.store.atomic.run_lock`) from before
any data is loaded to the end: a second run into the same folder is refused at once. A cached
``reference.pt`` is reused only when it was trained with the recipe this run would train it with.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import attrs
import torch

from lcdsl.cli.train import (
    add_model_data_arguments,
    build_model,
    load_loss,
    load_reference,
    resolve_device,
    train,
)  # fmt: skip
from lcdsl.engine.core import Engine
from lcdsl.engine.events import StepRecord
from lcdsl.errors import Diagnostic, EngineError, PluginError, SpecError
from lcdsl.formats import CHECKPOINT_FORMAT
from lcdsl.language.parser import load
from lcdsl.language.spec import Spec
from lcdsl.operators.base import FLOAT_BITS
from lcdsl.plan.settings import Auto, Explicit, Geometric, Settings, settings_from_spec
from lcdsl.plan.summary import plan_summary
from lcdsl.report.console import console
from lcdsl.report.plan import plan_table
from lcdsl.report.progress import CStepProgress
from lcdsl.report.run import (
    StepPrinter,
    budget_lines,
    build_report,
    plot_curves,
    schedule_line,
    size_table,
    write_report,
)
from lcdsl.store.atomic import check_writable, remove_stale_temporaries, run_lock, save_atomic
from lcdsl.store.checkpoint import check_reuse, read_run_checkpoint, restore_run_checkpoint, run_checkpoint
from lcdsl.store.model import compressed_state
from lcdsl.store.probe import probe_outputs
from lcdsl.training.batch import LossFn
from lcdsl.training.data import Data, Dataset, LoaderData, example_inputs, load_data
from lcdsl.training.epochs import evaluate as evaluate_model
from lcdsl.training.lstep import make_l_step
from lcdsl.training.reference import default_recipe

__all__ = [
    "add_parser", "run", "CHECKPOINT_FORMAT", "SETTINGS_OPTIONS", "add_settings_arguments", "settings_argv",
    "settings_with_overrides", "prepare_reference",
]

_OUTPUTS = ("reference.pt", "checkpoint.pt", "compressed.pt", "report.json", "curves.png")
"""The files a run writes into its folder."""

# Command-line options that override a setting of the same name.
_PLAIN_OVERRIDES = (
    "lr", "lr_decay", "epochs", "first_epochs", "batch_size", "seed", "optimizer", "penalty", "weight_decay",
    "lr_schedule",
)  # fmt: skip


SETTINGS_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--steps", {"metavar": "N", "type": int, "help": "number of LC steps (the μ schedule's length)"}),
    ("--mu-start", {"metavar": "X", "type": float, "help": "μ of the first LC step (geometric and auto schedules)"}),
    ("--mu-factor", {"metavar": "X", "type": float,
                     "help": "μ growth per LC step: a geometric schedule (instead of auto, starting at 9e-5)"}),
    ("--epochs", {"metavar": "N", "type": int, "help": "epochs per L step"}),
    ("--first-epochs", {"metavar": "N", "type": int, "help": "epochs of the first L step"}),
    ("--lr", {"metavar": "X", "type": float, "help": "L-step learning rate at the first LC step"}),
    ("--lr-decay", {"metavar": "X", "type": float, "help": "learning rate factor per LC step"}),
    ("--batch-size", {"metavar": "N", "type": int, "help": "mini-batch size"}),
    ("--seed", {"metavar": "N", "type": int, "help": "seed of the weights, the data split and order"}),
    ("--optimizer", {"choices": ("sgd", "adam"), "help": "the L step's optimizer"}),
    ("--penalty", {"choices": ("augmented-lagrangian", "quadratic"), "help": "penalty form"}),
    ("--weight-decay", {"metavar": "X", "type": float, "help": "L2 weight decay of the parameters left dense"}),
    ("--lr-schedule", {"choices": ("constant", "cosine", "step"), "help": "learning rate within each L step"}),
)
"""The options that override the spec's settings: ``compress`` takes them, ``sweep`` passes them on."""


def add_settings_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """The :data:`SETTINGS_OPTIONS` as an argument group."""
    group = parser.add_argument_group(title)
    for option, keywords in SETTINGS_OPTIONS:
        group.add_argument(option, **keywords)


def settings_argv(args: argparse.Namespace) -> list[str]:
    """The :data:`SETTINGS_OPTIONS` given in ``args``, as command-line words again."""
    argv = []
    for option, _ in SETTINGS_OPTIONS:
        value = getattr(args, option[2:].replace("-", "_"))
        if value is not None:
            argv += [option, str(value)]
    return argv


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``compress`` sub-command."""
    parser = subparsers.add_parser(
        "compress",
        help="compress a model with the LC algorithm as a spec says",
        description="Train (or load) a reference model, bind SPEC to it, run the Learning-Compression "
        "algorithm along the spec's μ schedule, and save report.json, curves.png, compressed.pt and "
        "a checkpoint after every LC step in --out. Options below override the spec's settings.",
    )
    parser.add_argument("spec", metavar="SPEC", help="the .lc file")
    add_model_data_arguments(parser)
    parser.add_argument(
        "--reference",
        metavar="PATH",
        help="reference weights from 'lcdsl train' (default: train one into OUT/reference.pt)",
    )
    parser.add_argument(
        "--reference-epochs",
        metavar="N",
        type=int,
        help="epochs of the reference trained here (default 30; 20 on digits)",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default runs/<spec name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in OUT/checkpoint.pt")
    add_settings_arguments(parser, "settings (override the spec)")
    parser.set_defaults(func=run)


def _cli_error(message: str) -> SpecError:
    return SpecError(Diagnostic(message, code="bad-option"), filename="command line")


def settings_with_overrides(spec: Spec, args: argparse.Namespace) -> Settings:
    """The spec's settings with the command line's overrides on top.

    Raises:
        SpecError: the spec's settings are wrong, or an override is (as ``command line: error: …``).
    """
    overrides = {name: getattr(args, name, None) for name in _PLAIN_OVERRIDES}
    try:
        settings = settings_from_spec(spec, **overrides)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, SpecError):
            raise
        raise _cli_error(str(exc)) from exc
    mu = settings.mu
    steps, start, factor = args.steps, args.mu_start, args.mu_factor
    try:
        if isinstance(mu, Auto) and factor is not None:  # a fixed growth asked for: geometric
            mu = Geometric(start=9e-5 if start is None else start, factor=factor, steps=mu.steps if steps is None else steps)
        elif isinstance(mu, Auto):
            changes = {k: v for k, v in (("steps", steps), ("start", start)) if v is not None}
            mu = attrs.evolve(mu, **changes)
        elif isinstance(mu, Geometric):
            changes = {k: v for k, v in (("steps", steps), ("start", start), ("factor", factor)) if v is not None}
            mu = attrs.evolve(mu, **changes)
        elif isinstance(mu, Explicit):
            if start is not None or factor is not None:
                raise ValueError("--mu-start and --mu-factor need a geometric μ schedule; the spec gives a list")
            if steps is not None:
                if not 1 <= steps <= len(mu.mus):
                    raise ValueError(f"--steps must be between 1 and {len(mu.mus)} for the spec's list of μ")
                mu = Explicit(mu.mus[:steps])
    except ValueError as exc:
        raise _cli_error(str(exc)) from exc
    return attrs.evolve(settings, mu=mu)


def prepare_reference(
    args: argparse.Namespace, model: torch.nn.Module, data: Data, folder: Path, settings: Settings,
    loss_fn: LossFn | None = None,
) -> dict[str, Any]:
    """Load the reference into ``model`` (or train and cache one); returns its metadata."""
    out = console()
    if args.reference:
        meta = load_reference(args.reference, model, model_name=args.model, data_name=data.name)
        meta["path"] = str(args.reference)
    else:
        cached = folder / "reference.pt"
        recipe = default_recipe(
            data.name, epochs=args.reference_epochs, seed=settings.seed, weight_decay=settings.weight_decay or None
        )
        if cached.exists():
            meta = load_reference(cached, model, model_name=args.model, data_name=data.name)
            hint = f"delete it to train a new one, or give --reference {cached} to use it as it is"
            check_reuse(cached, "trained", meta.get("recipe"), attrs.asdict(recipe), hint=hint)
            out.print(f"reference: {cached} (cached; delete it to train a new one)")
        else:
            out.print(f"training the reference ({recipe.epochs} epochs) into {cached}")
            meta = train(model, args.model, data, recipe, cached, loss_fn)
        meta["path"] = str(cached)
    seed = meta.get("recipe", {}).get("seed")
    if data.name == "digits" and seed is not None and seed != settings.seed:
        out.print(
            f"note: the reference was trained with seed {seed}, this run splits digits with seed "
            f"{settings.seed}: its test images may have been training images of the reference"
        )
    keys = ("path", "model", "data", "test_error", "train_error", "recipe")
    return {k: meta.get(k) for k in keys} | ({"test_loss": meta["test_loss"]} if "test_loss" in meta else {})


def _format(key: str, value: float | None) -> str:
    if value is None:
        return "?"
    return f"{100 * value:.2f}%" if key.endswith("error") else f"{value:.4f}"


def _test_number(reference: dict[str, Any]) -> str:
    """``test error 3.40%`` or ``test loss 2.3456`` of the reference."""
    key = "test_error" if reference.get("test_error") is not None else "test_loss"
    return f"{key.replace('_', ' ')} {_format(key, reference.get(key))}"


def run(args: argparse.Namespace) -> int:
    """Run one compression, holding the lock on its folder (:func:`~lcdsl.store.atomic.run_lock`);
    returns the exit code."""
    spec = load(args.spec)
    settings = settings_with_overrides(spec, args)
    folder = check_writable(Path(args.out) if args.out else Path("runs") / Path(args.spec).stem)
    with run_lock(folder):  # one run at a time writes a folder: a second one is refused at once
        return _run(args, spec, settings, folder)


def _run(args: argparse.Namespace, spec: Spec, settings: Settings, folder: Path) -> int:
    out = console()
    remove_stale_temporaries(folder, _OUTPUTS)  # left by a run killed while saving
    data = load_data(args.data, data_dir=args.data_dir, seed=settings.seed).to(resolve_device(args.device))
    loss_fn = load_loss(args.loss)
    model = build_model(args.model, data, seed=settings.seed, device=args.device, loss_fn=loss_fn)
    # spec errors before any training; two training inputs size a flops budget's convolutions
    plan = attrs.evolve(spec.bind(model, example_input=example_inputs(data)), settings=settings)
    if plan.warnings:
        print(plan.render_warnings(color=sys.stderr.isatty()), file=sys.stderr)

    checkpoint_path = folder / "checkpoint.pt"
    checkpoint = None
    if args.resume:
        if checkpoint_path.exists():
            checkpoint = read_run_checkpoint(checkpoint_path)
        else:
            out.print(f"nothing to resume in {folder} (no checkpoint.pt): starting a new run")
    elif checkpoint_path.exists():
        out.print(f"starting over in {folder} (give --resume to continue the run saved there)")

    engine = Engine(model, plan, settings=settings)
    l_step = make_l_step(model, data, settings, loss_fn)
    if checkpoint is not None:
        reference = restore_run_checkpoint(
            checkpoint, checkpoint_path, model_name=args.model, data_name=data.name, model=model, engine=engine,
            trainer=l_step, hint="start over without --resume, or choose another --out",
        )  # fmt: skip
        out.print(f"resuming {checkpoint_path} after LC step {engine.step} of {len(engine.mus)}")
    else:
        reference = prepare_reference(args, model, data, folder, settings, loss_fn)

    out.print(plan_table(plan, title=f"{args.spec} on {args.model} / {data.name}"))
    out.print(f"{schedule_line(settings)}; reference {_test_number(reference)}")
    if isinstance(data, LoaderData) and data.test is None:
        out.print(f"note: '{data.name}' has no test part: the test numbers below are measured on the training data")
    bits_before = plan_summary(plan)["total_bits_before"]  # the dense size, buffers included
    printer = StepPrinter(out, dense_bits=plan.dense_numel * FLOAT_BITS + plan.buffer_bits, bits_before=bits_before)
    for record in engine.history:  # the steps a resumed run already has
        printer.print(record)

    def evaluate(_engine: Engine) -> dict[str, float]:
        return evaluate_model(model, data, loss_fn)

    saved: dict[str, int | None] = {"step": engine.step if checkpoint is not None else None}

    def on_step(engine: Engine, record: StepRecord, **_: Any) -> None:
        printer.print(record)
        state = run_checkpoint(model, engine, l_step, model_name=args.model, data_name=data.name,
                               spec_text=spec.source, reference=reference)  # fmt: skip
        save_atomic(state, checkpoint_path)
        saved["step"] = engine.step

    def on_warning(message: str, **_: Any) -> None:
        out.print(f"warning: {message}", style="bold yellow")

    CStepProgress(out).attach(engine)  # first: its bar goes before a step's row is printed
    engine.events.on("warning", on_warning)
    engine.events.on("direct_compression", on_step)
    engine.events.on("lc_step_end", on_step)
    try:
        with warnings.catch_warnings():  # printed by on_warning, and kept in report.json
            warnings.simplefilter("ignore", UserWarning)
            engine.run(l_step, evaluate)
    except (EngineError, PluginError) as exc:
        if saved["step"] is None:
            raise
        kept = f"{checkpoint_path} keeps the run as it was after LC step {saved['step']}"
        raise type(exc)(f"{exc}\n{kept}") from exc

    convergence = engine.convergence()
    thetas = engine.finalize()  # the model now holds Δ(θ)
    final = evaluate(engine)
    storages = [size for _, size in engine.storage()]
    # what export checks its file against: outputs on the first test inputs (in-memory data only)
    probe = probe_outputs(model, data.x_test, data=data.name, seed=settings.seed) if isinstance(data, Dataset) else None
    compressed = compressed_state(model, plan, thetas, spec_text=spec.source, model_name=args.model, probe=probe)
    save_atomic(compressed, folder / "compressed.pt")
    report = build_report(
        spec_path=str(args.spec), spec_text=spec.source, model=args.model, data=data.name, settings=settings,
        plan=plan, history=engine.history, storages=storages, reference=reference, final=final,
        convergence=convergence, warnings=engine.warnings,
    )  # fmt: skip
    write_report(folder / "report.json", report)
    title = f"{Path(args.spec).name}: {args.model} on {data.name}"
    note = plot_curves(engine.history, folder / "curves.png", title=title, convergence=convergence)

    out.print(size_table(report["size"], title="compressed model"))
    for budget_line in budget_lines(engine.history):
        out.print(budget_line)
    key = "test_error" if "test_error" in final else "test_loss"
    direct = engine.history[0].metrics.get(key) if engine.history else None
    line = f"{key.replace('_', ' ')}: reference {_format(key, reference.get(key))}"
    if direct is not None:
        line += f", direct compression {_format(key, direct)}"
    out.print(f"{line}, LC {_format(key, final.get(key))}")
    if convergence is not None:
        out.print(convergence.message, style=None if convergence.converged else "bold red")
    if note:
        out.print(note)
    out.print(f"results in {folder}/: report.json, compressed.pt, checkpoint.pt" + ("" if note else ", curves.png"))
    return 0
