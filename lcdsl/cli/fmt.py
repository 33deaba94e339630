"""``lcdsl fmt SPEC [--check] [--write]``: print, check or rewrite a spec in its canonical form."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from lcdsl.fmt import format_spec
from lcdsl.parser import load

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``fmt`` sub-command."""
    parser = subparsers.add_parser(
        "fmt",
        help="print a spec in its canonical layout",
        description="Parse each SPEC and print its canonical form (aligned ':' and '=', normalised "
        "numbers, comments kept). With --check, print nothing and exit 1 if a file would change; "
        "with --write, rewrite the files in place. Exit code 2 on spec errors.",
    )
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="the .lc file(s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if any file is not in canonical form")
    mode.add_argument("--write", action="store_true", help="rewrite the files in canonical form")
    parser.set_defaults(func=run)


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that a reader sees the old file or the new one, never half."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Format each spec; returns the exit code (1 when ``--check`` finds a file to change)."""
    changed = 0
    for name in args.specs:
        path = Path(name)
        spec = load(path)
        canonical = format_spec(spec)
        if args.check:
            if canonical != spec.source:
                print(f"{name}: would be reformatted", file=sys.stderr)
                changed += 1
        elif args.write:
            if canonical != spec.source:
                _write_atomically(path, canonical)
                print(f"{name}: reformatted", file=sys.stderr)
        else:
            sys.stdout.write(canonical)
    return 1 if changed else 0
