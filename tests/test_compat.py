"""Old import paths keep working: every module that moved is importable by its old name."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import warnings

import pytest

from lcdsl._compat import MOVED


def test_every_old_path_imports_in_a_fresh_process_with_a_warning_naming_the_new_one():
    code = (
        "import importlib, json, warnings\n"
        "from lcdsl._compat import MOVED\n"
        "out = {}\n"
        "for old in MOVED:\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    out[old] = [module.__name__, [str(w.message) for w in caught if w.category is DeprecationWarning]]\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for old, (name, messages) in json.loads(run.stdout).items():
        targets = MOVED[old]
        assert name == (targets[0] if len(targets) == 1 else old)
        assert len(messages) == 1 and f"{old} moved" in messages[0] and targets[0] in messages[0]


@pytest.mark.parametrize("old", sorted(o for o, t in MOVED.items() if len(t) == 1))
def test_an_old_path_is_the_new_module_itself(old):
    with pytest.warns(DeprecationWarning):
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old][0])


@pytest.mark.parametrize("old", sorted(o for o, t in MOVED.items() if len(t) > 1))
def test_a_split_module_offers_every_name_it_had(old):
    with pytest.warns(DeprecationWarning):
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    for target in MOVED[old]:
        new = importlib.import_module(target)
        for name in new.__all__:
            assert getattr(module, name) is getattr(new, name)


def test_the_old_names_users_imported_most():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from lcdsl.checkpoint import load_compressed, save_atomic, write_atomic  # noqa: F401
        from lcdsl.export import export_model, load_lcz  # noqa: F401
        from lcdsl.parser import parse  # noqa: F401
        from lcdsl.spec import Spec  # noqa: F401
    import lcdsl
    from lcdsl.engine import Engine, StepRecord, plan_fingerprint, plugin_versions  # noqa: F401 (a package now)
    from lcdsl.integrations import DriverCallback, LCDriver  # noqa: F401
    from lcdsl.plan import (  # noqa: F401
        Plan,
        Task,
        bind,
        parameters_by_name,
        split_view,
        strip_ddp_prefix,
        view_shape,
    )
    from lcdsl.report import build_report, versions  # noqa: F401
    from lcdsl.training import LStep, Recipe, error_rate, make_l_step  # noqa: F401

    assert lcdsl.parse is parse and lcdsl.Spec is Spec


def test_every_name_lcdsl_exported_is_still_there():
    import lcdsl

    for name in lcdsl.__all__:
        assert hasattr(lcdsl, name), name
