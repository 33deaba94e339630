"""The plugin-author API, in one import: the operator contract, amounts, bit costs and packers.

Everything a plugin needs to write an operator and register it::

    from lcdsl.operators import FLOAT_BITS, Operator, Storage, hookimpl, int_at_least

- the contract (:mod:`.base`): :class:`Operator`, :class:`Storage`, :data:`Theta`,
  :data:`Encoded`, :func:`describe`;
- :class:`Choice` (:mod:`.choice`): one of several operators, the task of a budgeted rule; an
  operator class offers a fast distortion table for its choice-sets with the classmethod
  ``distortion_table(w, options, mu)``;
- views (:mod:`.view`): :class:`View` (a task's tensors as the operator sees them, gathered
  and scattered back), :data:`ViewKind`, :func:`view_shape`;
- layouts (:mod:`.layout`): :class:`Layout` (which axis of a layer's weight is its outputs and
  which its inputs), :data:`STORAGE_ORDER`, for the hook ``lcdsl_register_layouts``;
- bit costs: :data:`FLOAT_BITS`, :func:`bits_per_index`, :func:`index_bits`; θ's integer dtypes:
  :func:`code_dtype`, :func:`position_dtype`;
- amounts and argument validators (:mod:`.units`): ``l0=5000`` / ``l0=5%`` and friends, and
  :class:`Percent`, the spec value ``5%``;
- packers for :meth:`Operator.encode` (:mod:`.bitpack`);
- compact deployed layers for the hook ``lcdsl_deploy_layer`` (:mod:`.compact`):
  :class:`CodebookLinear`, :class:`CodebookConv2d`, :class:`CodebookEmbedding`,
  :func:`factored_linear`, :func:`factored_conv2d`;
- the hook marker :data:`hookimpl` (:mod:`.marker`).

A plugin (its tests aside, which use :mod:`lcdsl.testing`) needs no other lcdsl import; the hooks
themselves are documented in :mod:`lcdsl.plugins.hookspecs`, the plugin guide.

The built-in families (:mod:`.quant`, :mod:`.binary`, :mod:`.prune`, :mod:`.lowrank`, and
:mod:`.additive` for ``A + B``) are imported only when the registry loads the ``builtin`` plugin
(:mod:`.builtin`), exactly as a third-party plugin is.
"""

from lcdsl.language.spec import Percent
from lcdsl.operators.base import (
    FLOAT_BITS,
    Encoded,
    Operator,
    Storage,
    Theta,
    View,
    ViewKind,
    bits_per_index,
    code_dtype,
    describe,
    index_bits,
    position_dtype,
    view_shape,
)  # fmt: skip
from lcdsl.operators.choice import CHOICE_KEY, Choice
from lcdsl.operators.bitpack import decode_tensor, encode_tensor, pack_bits, pack_uint, unpack_bits, unpack_uint
from lcdsl.operators.compact import (
    CodebookConv2d,
    CodebookEmbedding,
    CodebookLayer,
    CodebookLinear,
    factored_conv2d,
    factored_linear,
    set_cache,
)  # fmt: skip
from lcdsl.operators.layout import STORAGE_ORDER, Layout, LayoutRule
from lcdsl.operators.marker import PROJECT, hookimpl
from lcdsl.operators.units import (
    Amount,
    check_amount,
    int_at_least,
    is_fraction,
    optional_amount,
    positive_number,
    resolve_amount,
    to_amount,
    to_float,
    validate_amount,
)  # fmt: skip

__all__ = [
    # the contract
    "Operator", "Storage", "Theta", "Encoded", "View", "ViewKind", "view_shape", "describe",
    # choices among options (budgets)
    "Choice", "CHOICE_KEY",
    # layouts
    "Layout", "LayoutRule", "STORAGE_ORDER",
    # bit costs
    "FLOAT_BITS", "bits_per_index", "index_bits", "code_dtype", "position_dtype",
    # amounts and validators
    "Amount", "Percent", "to_amount", "optional_amount", "check_amount", "validate_amount", "is_fraction",
    "resolve_amount", "int_at_least", "positive_number", "to_float",
    # packers
    "pack_uint", "unpack_uint", "pack_bits", "unpack_bits", "encode_tensor", "decode_tensor",
    # deployed layers
    "CodebookLayer", "CodebookLinear", "CodebookConv2d", "CodebookEmbedding", "factored_linear", "factored_conv2d",
    "set_cache",
    # registration
    "hookimpl", "PROJECT",
]  # fmt: skip
