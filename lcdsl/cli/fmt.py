"""``lcdsl fmt SPEC [--check] [--write]``: print, check or rewrite a spec in its canonical form."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lcdsl.language.fmt import format_spec
from lcdsl.language.parser import load
from lcdsl.store.atomic import write_atomic

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
                # a link is followed: its target is formatted (mode kept), the link stays a link
                write_atomic(path.resolve(), lambda fh: fh.write(canonical.encode("utf-8")))
                print(f"{name}: reformatted", file=sys.stderr)
        else:
            sys.stdout.write(canonical)
    return 1 if changed else 0
