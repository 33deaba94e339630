"""Extension points of lcdsl, and the guide to writing a plugin.

A plugin is a Python distribution that declares an entry point in the group ``lcdsl`` and
implements one or more of the hooks below. lcdsl's own operators are registered exactly the same
way (the entry point ``builtin = "lcdsl.operators"``), so a plugin can do anything they do.

**1. Write an operator** (see :mod:`lcdsl.operators.base` for the whole contract): a frozen attrs
class deriving from :class:`~lcdsl.operators.base.Operator`, with a ``name`` (the spec keyword),
fields that are exactly its spec keywords (validators raise ``ValueError``/``TypeError``; the
spec shows the message at the call), and a docstring that opens with the argmin it solves::

    # my_plugin/__init__.py
    import math
    from typing import ClassVar

    import attrs
    import torch

    from lcdsl.plugins.hookspecs import hookimpl
    from lcdsl.operators.base import Operator, Storage


    @attrs.frozen
    class Sign(Operator):
        \"\"\"argmin_θ ‖w − θ‖² s.t. θ ∈ {−1, +1}ⁿ: θ = sign(w) (exact).\"\"\"

        name: ClassVar[str] = "sign"

        def project(self, w, mu=0.0, warm=None):
            return {"signs": torch.where(w >= 0, 1.0, -1.0).to(w.dtype)}

        def decompress(self, theta, shape):
            return theta["signs"].reshape(shape).clone()

        def storage(self, shape, theta=None):
            return Storage(params=0, bits=math.prod(shape))


    @hookimpl
    def lcdsl_register_operators():
        return [Sign]

**2. Declare the entry point** in the plugin's ``pyproject.toml``; the entry point's name is the
plugin's name in ``lcdsl plugins``, in error messages and in ``LCDSL_BLOCK_PLUGINS``::

    [project.entry-points.lcdsl]
    sign = "my_plugin"

After ``pip install -e .`` the operator is usable in a spec (``fc1 : sign()``) and listed by
``lcdsl plugins``. Two plugins that provide the same operator name are an error naming both; a
plugin that fails to import or returns something that is not an operator class is reported by
name, distribution and version, and the other plugins keep working.

**3. Test it** with the same property checks the built-ins pass (:mod:`lcdsl.testing`)::

    # tests/test_sign.py
    from lcdsl.testing import operator_properties
    from my_plugin import Sign

    test_sign = operator_properties(Sign())

Hooks are called with keyword arguments only, so new arguments can be added to a hook later
without breaking plugins that do not take them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from lcdsl.operators.marker import PROJECT, hookimpl

if TYPE_CHECKING:
    from lcdsl.operators.base import Operator

__all__ = ["PROJECT", "hookspec", "hookimpl", "lcdsl_register_operators"]

hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks the functions of this module as lcdsl's hook specifications."""


@hookspec
def lcdsl_register_operators() -> list[type[Operator]]:
    """Provide C-step operator classes that specs can call by their ``name``.

    Called:
        Once per registry, when :func:`lcdsl.registry.default_registry` (or
        :meth:`lcdsl.registry.Registry.load`) first collects the installed plugins, before any
        spec is bound. It is called for each plugin separately, so one plugin that raises is
        reported without hiding the others.

    Args:
        None yet. Later versions may pass keyword arguments; an implementation takes only the
        ones it needs.

    Returns:
        A list of :class:`~lcdsl.operators.base.Operator` subclasses, each with a ``name``
        that no other plugin provides.

    Example:
        A plugin module named by the entry point ``sign = "my_plugin"``::

            from lcdsl.plugins.hookspecs import hookimpl
            from my_plugin.sign import Sign

            @hookimpl
            def lcdsl_register_operators():
                return [Sign]
    """
