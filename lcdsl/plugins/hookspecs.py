"""Extension points of lcdsl, and the guide to writing a plugin.

A plugin is a Python distribution that declares an entry point in the group ``lcdsl`` and
implements one or more of the hooks below. lcdsl's own operators are registered exactly the same
way (the entry point ``builtin = "lcdsl.operators.builtin"``), so a plugin can do anything they do.

Everything a plugin needs from lcdsl is one import, :mod:`lcdsl.operators`: the operator contract
(``Operator``, ``Storage``, ``Theta``), amounts and argument validators (``int_at_least``,
``positive_number``, ``check_amount``, …), bit costs, packers, and the ``hookimpl`` marker. Its
tests add :mod:`lcdsl.testing`.

**1. Write an operator** (see :mod:`lcdsl.operators.base` for the whole contract): a frozen attrs
class deriving from :class:`~lcdsl.operators.Operator`, with a ``name`` (the spec keyword: ASCII
letters, digits and ``_``, not starting with a digit), fields that are exactly its spec keywords
(validators raise ``ValueError``/``TypeError``; the spec shows the message at the call), and a
docstring that opens with the argmin it solves::

    # my_plugin/__init__.py
    import math
    from typing import ClassVar

    import attrs
    import torch

    from lcdsl.operators import Operator, Storage, hookimpl


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
``lcdsl plugins``. Two plugins that provide the same operator name are an error naming both.
Each plugin is checked on its own, with pluggy's validation; a plugin that

- fails to import,
- implements a hook lcdsl does not have (``lcdsl_register_operator``: the message says *did you
  mean 'lcdsl_register_operators'?*), or has a hook function without ``@hookimpl``,
- takes an argument the hook does not have, or one after ``*`` (pluggy passes arguments by name,
  to ordinary parameters only),
- raises in its hook, or returns something that is not a list of operator classes, or an operator
  whose ``name`` no spec can call (``quänt``),

is a broken plugin: ``lcdsl plugins`` reports it by name, distribution and version, with the
cause, and the other plugins keep working. ``LCDSL_BLOCK_PLUGINS=sign`` blocks a plugin (through
pluggy's ``set_blocked``; it is never imported) and ``lcdsl plugins`` lists it as blocked.

**3. Test it** with the same property checks the built-ins pass (:mod:`lcdsl.testing`)::

    # tests/test_sign.py
    from lcdsl.testing import operator_properties
    from my_plugin import Sign

    test_sign = operator_properties(Sign())

Hooks are called through pluggy with keyword arguments only, one plugin at a time, and pluggy
gives each implementation only the arguments it names: new arguments can be added to a hook later
without breaking plugins that do not take them.

A *penalty form* (its size priced by a weight ``α`` rather than fixed, like ``lowrank(alpha=…)``)
returns ``True`` from the ``penalty_form`` property and reads ``mu=0`` as the limit μ → 0⁺: its
cheapest θ, the direct compression of the LC papers (the contract:
:meth:`lcdsl.operators.base.Operator.project`). The same checks then verify that its
``‖w − Δ(θ)‖²`` never grows with μ.

**4. Declare the layout of your own layers** (optional): structured operators (``prune(by=rows)``,
``lowrank``) need to know which axis of a weight is the layer's outputs. lcdsl knows PyTorch's
layers and HF ``Conv1D``; a module class of your own that stores its weight in another order, or
that structured operators should accept at all, is declared with
:func:`lcdsl_register_layouts`. Without it, a structured operator on such a module is a spec
error; element-wise operators work on any module.

**5. Say how your layers deploy** (optional): :func:`lcdsl.deploy.deploy` (and ``lcdsl export
--deploy`` / ``--format onnx``) rebuilds each compressed layer as a smaller module. For an
operator of your own, implement :func:`lcdsl_deploy_layer`: given the layer, the operator and
``θ``, return the module that replaces it (or ``None``: not mine). :mod:`lcdsl.operators` has the
compact layers the built-ins use (``CodebookLinear``, ``CodebookConv2d``, ``CodebookEmbedding``,
``factored_linear``, ``factored_conv2d``); a module of your own works too. Its ``forward`` is what
``torch.onnx.export`` traces, so the tensors it keeps as buffers are what the ONNX file stores.
Without the hook your layers stay as they are, dense, and the deploy report says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from lcdsl.operators.marker import PROJECT, hookimpl

if TYPE_CHECKING:
    from collections.abc import Mapping

    from torch import nn

    from lcdsl.operators.base import Operator, Theta
    from lcdsl.operators.layout import LayoutRule
    from lcdsl.operators.view import View

__all__ = [
    "PROJECT", "hookspec", "hookimpl", "lcdsl_register_operators", "lcdsl_register_layouts", "lcdsl_deploy_layer",
]  # fmt: skip

hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks the functions of this module as lcdsl's hook specifications."""


@hookspec
def lcdsl_register_operators() -> list[type[Operator]]:
    """Provide C-step operator classes that specs can call by their ``name``.

    Called:
        Once per registry, when :func:`lcdsl.plugins.registry.default_registry` (or
        :meth:`lcdsl.plugins.registry.Registry.load`) first collects the installed plugins,
        before any spec is bound. It is called through pluggy for each plugin separately, so one
        plugin that raises is reported without hiding the others.

    Args:
        None yet. Later versions may pass keyword arguments; pluggy gives an implementation only
        the ones it names (as ordinary parameters, not after ``*``), so one written today keeps
        working.

    Returns:
        A list of :class:`~lcdsl.operators.Operator` subclasses, each with a ``name`` that is a
        spec identifier (ASCII letters, digits, ``_``) and that no other plugin provides.

    Example:
        A plugin module named by the entry point ``sign = "my_plugin"``::

            from lcdsl.operators import hookimpl
            from my_plugin.sign import Sign

            @hookimpl
            def lcdsl_register_operators():
                return [Sign]
    """


@hookspec
def lcdsl_register_layouts() -> Mapping[type | str, LayoutRule]:
    """Declare which axis of a module type's weight is the layer's outputs and which its inputs.

    Structured operators (``prune(l0=…, by=rows|filters|channels)``, ``lowrank``) see every
    weight as ``(outputs, inputs, kernel…)``: rows are output units and columns input channels
    on every layer, whatever order the layer stores them in (:mod:`lcdsl.operators.layout`).
    lcdsl's own plugin declares ``nn.Linear``, ``nn.Bilinear``, ``nn.Conv1d/2d/3d``,
    ``nn.ConvTranspose1d/2d/3d``, ``nn.Embedding``, the RNNs, ``nn.MultiheadAttention`` and HF
    ``Conv1D``. A structured operator on a module whose class (or a base class) no plugin
    declares is a spec error (code ``no-layout``) at the rule.

    Called:
        Once per registry, right after :func:`lcdsl_register_operators`, through pluggy for each
        plugin separately; a plugin that raises or returns something else than a mapping of
        module classes to layouts is reported as broken, the others keep working. Two plugins
        declaring different layouts for one class is an error naming both.

    Args:
        None yet. Later versions may pass keyword arguments; pluggy gives an implementation only
        the ones it names.

    Returns:
        A mapping from a module class, or a class name (qualified, ``"mylib.layers.Dense"``, or
        bare, ``"Dense"``: for a class the plugin does not want to import), to either a
        :class:`~lcdsl.operators.Layout` (the layout of the module's ``weight``) or a function
        ``(module, parameter_name) -> Layout | None`` (for other parameters, or a layout that
        depends on the instance; it may raise ``ValueError`` saying why an instance has none).
        A subclass gets its base's layout unless it is declared itself.

    Example:
        A layer that stores its weight ``(in, out)``, as ``x @ weight``::

            from lcdsl.operators import Layout, hookimpl

            @hookimpl
            def lcdsl_register_layouts():
                return {"my_plugin.layers.Dense": Layout(outputs=1, inputs=0)}
    """


@hookspec
def lcdsl_deploy_layer(
    module: nn.Module, parameter: str, operator: Operator, theta: Theta, view: View, index: int
) -> nn.Module | None:
    """Return the deployed module that replaces a layer compressed by one of your operators.

    The module must compute what ``module`` computes (same inputs, same outputs, to float
    rounding) from a compact form of ``θ``. Its ``forward`` is also what ``torch.onnx.export``
    traces (``lcdsl export --format onnx``): keep the compact tensors as buffers and expand
    them with torch ops in ``forward``, and the ONNX file stores them compactly, with the
    expansion as its subgraph. lcdsl's own operators deploy through this hook too: ``quant``,
    ``binarize`` and ``ternarize`` as codebook layers, ``lowrank`` as two layers.

    Called:
        By :func:`lcdsl.deploy.deploy`, once for each module that owns a parameter of a
        compressed task (a tied parameter: once per owner), in model order, with the model
        holding ``Δ(θ)``. Plugins are asked one at a time, through pluggy: first the plugin
        that provides the task's operator, then the others, lcdsl's built-ins last (also for
        their own operators: a plugin may deploy built-in layers its own way); the first
        module returned is used. A hook that raises leaves the layer as it is, and the deploy
        report names the plugin and the error.

    Args:
        module: the layer that owns the parameter (an ``nn.Linear``, ``nn.Conv2d``,
            ``nn.Embedding``, HF ``Conv1D``, or a module of your own), holding ``Δ(θ)``; do not
            modify it.
        parameter: the parameter's name inside ``module`` (``"weight"``, ``"bias"``, …).
        operator: the task's operator, resolved (absolute amounts).
        theta: the task's ``θ``, on the module's device.
        view: the task's :class:`~lcdsl.operators.View`; its ``shapes`` are the shapes of the
            task's parameters, in order.
        index: the position of this parameter in ``view.shapes`` (0 unless the task is a joint
            group of several tensors): ``view.split(theta["codes"])[index]`` is this parameter's
            part of a flat θ field, in the parameter's shape.

    Returns:
        A module to put in ``module``'s place, or ``None`` when the plugin does not deploy this
        layer (another operator's, or a layer type it does not know).

    Example:
        Codes into a codebook of 16 levels as a compact layer (a ``Linear`` only)::

            from torch import nn

            from lcdsl.operators import CodebookLinear, hookimpl
            from my_plugin.levels import Levels

            @hookimpl
            def lcdsl_deploy_layer(module, parameter, operator, theta, view, index):
                if not isinstance(operator, Levels) or parameter != "weight":
                    return None
                if type(module) is not nn.Linear:
                    return None
                codes = view.split(theta["codes"])[index]  # (out, in)
                return CodebookLinear(theta["levels"], codes, module.bias)
    """
