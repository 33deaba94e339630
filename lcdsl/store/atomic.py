"""Atomic files: every file lcdsl writes, written whole or not at all.

Every file is written to a temporary file in the same folder, flushed to disk, and renamed over
the target, so a crash (or a full disk) mid-write leaves the previous file whole. Everything
loads with ``torch.load(weights_only=True)``: tensors and plain data only, no pickled code.

A crash can be injected at the ``save`` point (:mod:`lcdsl.faults`).

A run folder is written by one run at a time: :func:`run_lock` holds an exclusive ``flock`` on
``FOLDER/.lock`` for the whole run. The kernel releases it when the process ends, however it
ends, so a run killed with ``kill -9`` never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from lcdsl.errors import EngineError, LcdslError
from lcdsl.faults import fault_point

__all__ = [
    "save_atomic", "write_atomic", "load_checkpoint", "check_writable", "remove_stale_temporaries", "run_lock",
    "LOCK_NAME",
]  # fmt: skip

LOCK_NAME = ".lock"
"""The file in a run folder that :func:`run_lock` locks."""

MIN_FREE_BYTES = 64 * 1024 * 1024
"""Free space :func:`check_writable` asks for by default."""


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


@contextlib.contextmanager
def run_lock(
    folder: str | os.PathLike[str], *, hint: str = "wait for it to finish, or choose another --out"
) -> Iterator[Path]:
    """Hold an exclusive lock on the run folder ``folder`` (``folder/.lock``) while the block runs.

    The lock is an ``flock``, released by the kernel when the process exits or is killed, so a
    stale lock file never blocks. The file keeps the holder's pid, for the message only. Where
    ``fcntl`` does not exist (Windows) nothing is locked.

    Raises:
        EngineError: another process holds the lock (``hint`` says what to do), or the lock file
            cannot be opened.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield folder
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise EngineError(f"cannot lock {folder}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise EngineError(f"{folder} is in use by another lcdsl run{who}: {hint}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock
