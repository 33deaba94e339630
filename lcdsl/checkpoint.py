"""Files a run writes and reads: atomic saves, checkpoints, and the compressed model.

Every file is written to a temporary file in the same folder, flushed to disk, and renamed over
the target, so a crash (or a full disk) mid-write leaves the previous file whole. Everything
loads with ``torch.load(weights_only=True)``: tensors and plain data only, no pickled code.

``compressed.pt`` holds ``θ`` per task plus the parameters left dense, and the spec's text;
:func:`load_compressed` rebuilds a model's weights from it::

    model = LeNet300(in_features=64)
    load_compressed(model, "runs/demo/compressed.pt")   # weights are now Δ(θ)

**Fault injection** (for tests of what a crash leaves behind): ``LCDSL_FAULT=point:n`` makes the
process kill itself (``SIGKILL``, no clean-up of any kind) the ``n``-th time it reaches ``point``;
several are comma-separated. The points (:func:`fault_point`) are ``l_step`` (a mini-batch of an
L step, in :meth:`~lcdsl.engine.Engine.penalty`), ``c_step`` (after one task's projection, in
:meth:`~lcdsl.engine.Engine.c_step`) and ``save`` (in :func:`write_atomic`, after the data went
to the temporary file and before it is flushed and renamed). Unset, it costs one dict lookup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from lcdsl.errors import EngineError, LcdslError, ModelError
from lcdsl.operators.base import Theta
from lcdsl.plan import Plan, Task, parameters_by_name, split_view

__all__ = [
    "COMPRESSED_FORMAT",
    "save_atomic",
    "write_atomic",
    "load_checkpoint",
    "check_writable",
    "compressed_state",
    "load_compressed",
    "write_theta",
    "FAULT_ENV",
    "fault_point",
    "remove_stale_temporaries",
]

COMPRESSED_FORMAT = 1
"""Version of the ``compressed.pt`` layout."""

MIN_FREE_BYTES = 64 * 1024 * 1024
"""Free space :func:`check_writable` asks for by default."""

FAULT_ENV = "LCDSL_FAULT"
"""The environment variable of the fault-injection hook (see the module docstring)."""

_fault_counts: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Kill this process with ``SIGKILL`` if ``LCDSL_FAULT`` asks for this visit of ``point``.

    A test hook, off unless the variable is set: ``LCDSL_FAULT=c_step:5`` kills the process at
    its 5th visit of the ``c_step`` point, ``l_step:8,save:3`` at whichever comes first."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    count = _fault_counts[point] = _fault_counts.get(point, 0) + 1
    for item in wanted.split(","):
        name, _, visit = item.partition(":")
        if name.strip() == point and visit.strip() == str(count):
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    """The permissions a new file gets: the old file's, or 0o666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    Raises:
        EngineError: the folder is not writable, the disk is full, or ``write`` failed; the
            previous ``path`` (if any) is left intact and no temporary file stays behind.
    """
    path = Path(path)
    folder = path.parent
    tmp_name = None
    try:
        with tempfile.NamedTemporaryFile("wb", dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False) as fh:
            tmp_name = fh.name
            write(fh)
            fault_point("save")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, _mode_for(path))
        os.replace(tmp_name, path)
        tmp_name = None
    except LcdslError:
        raise
    except Exception as exc:  # OSError, pickling errors: the write did not happen
        raise EngineError(f"cannot write {path}: {exc}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    _fsync_dir(folder)


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically (see :func:`write_atomic`).

    Raises:
        EngineError: the write failed; the previous file is intact.
    """
    write_atomic(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path: str | os.PathLike[str], *, error: type[LcdslError] = EngineError) -> dict[str, Any]:
    """A dict saved by :func:`save_atomic`, loaded on the CPU with ``weights_only=True``.

    Args:
        path: the file.
        error: the error class to raise (:class:`ModelError` for reference weights).

    Raises:
        EngineError (or ``error``): missing, unreadable, corrupt, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and zip errors come in many types
        raise error(f"{path}: cannot load it (not an lcdsl file, or damaged): {exc}") from exc
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def remove_stale_temporaries(folder: str | os.PathLike[str], names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files a killed :func:`write_atomic` left for ``names`` in ``folder``.

    Only call this when no other process writes there. Returns the files removed."""
    removed = []
    for name in names:
        for stale in Path(folder).glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
                removed.append(stale)
    return removed


def check_writable(folder: str | os.PathLike[str], *, min_free_bytes: int = MIN_FREE_BYTES) -> Path:
    """Create ``folder`` if needed and make sure files can be written there, before any training.

    Returns:
        The folder, as a Path.

    Raises:
        EngineError: the folder cannot be created or written, or has less than ``min_free_bytes``
            free.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lcdsl-probe-"):
            pass
    except OSError as exc:
        raise EngineError(f"cannot write into {folder}: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise EngineError(
            f"{folder} has only {free / 2**20:.1f} MiB free; a run needs at least {min_free_bytes / 2**20:.0f} MiB"
        )
    return folder


# ------------------------------------------------------------------------ compressed models


def compressed_state(
    model: nn.Module, plan: Plan, thetas: dict[str, Theta], *, spec_text: str, model_name: str
) -> dict[str, Any]:
    """What ``compressed.pt`` holds: ``θ`` per task, the dense parameters, and the spec.

    Args:
        model: the model (its dense parameters are saved as they are).
        plan: the plan the run compressed with.
        thetas: ``θ`` by task name (:meth:`Engine.finalize`'s result).
        spec_text: the spec's source, so :func:`load_compressed` can rebuild the operators.
        model_name: how the model was named on the command line, for the record.
    """
    by_name = parameters_by_name(model)
    tasks = {}
    for task in plan.tasks:
        tasks[task.name] = {
            "parameters": list(task.parameters),
            "shapes": [list(s) for s in task.shapes],
            "operator": repr(task.operator),
            "theta": {k: v.detach().cpu().clone() for k, v in thetas[task.name].items()},
        }
    dense = {name: by_name[name].detach().cpu().clone() for name in plan.dense}
    return {"format": COMPRESSED_FORMAT, "model": model_name, "spec": spec_text, "tasks": tasks, "dense": dense}


@torch.no_grad()
def write_theta(task: Task, params: list[torch.Tensor], theta: Theta, *, where: str) -> Theta:
    """Set a task's parameters to ``Δ(θ)``; returns ``θ`` on the parameters' device.

    Raises:
        ModelError: ``θ`` does not decompress to the task's shape (``where`` names the file).
    """
    theta = {k: v.to(params[0].device) for k, v in theta.items()}
    try:
        delta = task.operator.decompress(theta, task.view_shape)
        for p, piece in zip(params, split_view(task.operator.view, params, delta.to(params[0].dtype))):
            p.copy_(piece)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ModelError(f"{where}: θ of task {task.name} does not fit the model: {exc}") from exc
    return theta


def load_compressed(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Theta]:
    """Set ``model``'s weights from ``compressed.pt``: ``Δ(θ)`` per task, dense ones as saved.

    The spec saved in the file is bound to ``model`` again to rebuild each task's operator, so
    the model must have the parameters (and shapes) it was compressed with.

    Returns:
        ``θ`` by task name.

    Raises:
        ModelError: the file is missing or malformed, or does not fit ``model``.
    """
    from lcdsl.parser import parse

    state = load_checkpoint(path, error=ModelError)
    if state.get("format") != COMPRESSED_FORMAT or not isinstance(state.get("tasks"), dict):
        raise ModelError(f"{path}: not an lcdsl compressed model of format {COMPRESSED_FORMAT}")
    plan = parse(state["spec"], filename=f"{path} (saved spec)").bind(model)
    by_name = parameters_by_name(model)
    thetas: dict[str, Theta] = {}
    with torch.no_grad():
        for task in plan.tasks:
            saved = state["tasks"].get(task.name)
            if saved is None or saved.get("operator") != repr(task.operator):
                raise ModelError(f"{path}: task {task.name} is missing or was saved with another operator")
            params = [by_name[name] for name in task.parameters]
            thetas[task.name] = write_theta(task, params, saved["theta"], where=str(path))
        for name, value in state.get("dense", {}).items():
            if name not in by_name or tuple(by_name[name].shape) != tuple(value.shape):
                raise ModelError(f"{path}: dense parameter '{name}' is missing from the model or has another shape")
            by_name[name].copy_(value)
    return thetas
