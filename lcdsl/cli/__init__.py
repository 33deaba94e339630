"""The ``lcdsl`` command line: one module a command, each with ``add_parser`` and ``run``.

Every :class:`~lcdsl.errors.LcdslError` is printed without a traceback (``--debug`` shows it);
spec errors exit with 2, other errors with 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from lcdsl._version import __version__
from lcdsl.errors import LcdslError, SpecError

__all__ = ["main", "COMMANDS"]

COMMANDS = ("check", "fmt", "plugins", "train", "compress", "export", "sweep")
"""Sub-command modules under ``lcdsl.cli``, in the order ``--help`` lists them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcdsl",
        description="Compress PyTorch models with the Learning-Compression algorithm, from a .lc spec.",
    )
    parser.add_argument("--version", action="version", version=f"lcdsl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"lcdsl.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    ``--model`` and ``--data`` name ``module:function`` factories; as ``python -m`` does, the
    current folder is searched for their modules (a console script's ``sys.path`` starts with the
    script's own folder instead)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:
        if args.debug:
            traceback.print_exc()
        print(exc.render(color=sys.stderr.isatty()), file=sys.stderr)
        return exc.exit_code
    except LcdslError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"lcdsl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lcdsl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
