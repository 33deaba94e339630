"""The wheel carries the grammar: install it outside the repository and parse a spec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The lcdsl wheel, built from this checkout and installed into a bare folder."""
    dist = tmp_path_factory.mktemp("dist")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("lcdsl-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def test_installed_wheel_parses_with_its_own_grammar(installed, tmp_path):
    script = (
        "import lcdsl, lcdsl.grammar, sys\n"
        "from importlib import resources\n"
        "from lcdsl.parser import parse\n"
        "print(lcdsl.__file__)\n"
        "print((resources.files('lcdsl.language') / 'lcdsl.lark').is_file())\n"
        "spec = parse('fc1 : quant(k=2) + prune(l0=1%)')\n"
        "print(spec.rules[0].terms[1].kwargs()['l0'].value)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(installed))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    location, packaged, value = result.stdout.split()
    assert Path(location).resolve().is_relative_to(installed.resolve())
    assert packaged == "True"
    assert value == "1.0"
