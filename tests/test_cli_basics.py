"""The command line itself: its version, and user modules found from the current folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lcdsl

SCRIPT = Path(sys.executable).with_name("lcdsl")  # the console script, as a user runs it


def test_version():
    out = subprocess.run([SCRIPT, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"lcdsl {lcdsl.__version__}"


def test_the_console_script_finds_a_model_module_in_the_current_folder(tmp_path):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n\ndef tiny():\n    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))\n"
    )
    (tmp_path / "spec.lc").write_text("@Linear : quant(k=2)\n")
    run = subprocess.run(
        [SCRIPT, "check", "spec.lc", "--model", "mymodels:tiny"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "0.weight" in run.stdout and "quant(k=2)" in run.stdout
