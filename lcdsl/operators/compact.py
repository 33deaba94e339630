"""Compact deployed layers: what a compressed layer becomes in a model that only runs.

These are the modules that :func:`lcdsl.deploy.deploy` puts in place of compressed layers, and
that a plugin's ``lcdsl_deploy_layer`` hook may return (they are part of the plugin-author API):

- :class:`CodebookLinear`, :class:`CodebookConv2d`, :class:`CodebookEmbedding`: a weight whose
  entries come from a small codebook, kept in memory as bit-packed codes plus the codebook
  (``quant(k=4)``: 2 bits a weight, not 32), optionally plus a sparse correction (positions and
  values: ``quant(k=2) + prune(l0=1%)``). The weight is expanded, ``codebook[codes]``, at every
  forward (``cache=False``, the default: the least memory) or once, on the first forward, and kept
  (``cache=True``: as fast as a dense layer, with the dense weight in memory beside the codes).
  HF ``Conv1D`` (GPT-2, ``x @ W + b`` with ``W`` stored ``(in, out)``) becomes a
  :class:`CodebookLinear` of the transposed codes: the same function of ``x``.
- :func:`factored_linear`, :func:`factored_conv2d`: a rank-``r`` weight ``U·V`` as two layers
  (``in → r → out``), an :class:`nn.Sequential` of plain torch layers.

Every expansion is made of torch ops, so that ``torch.onnx.export`` writes each weight as its
packed codes (``uint8``) and codebook, expanded in the graph before the layer's ``Gemm``/``Conv``:
the values each of the 256 bytes decodes to (``Range``, ``Div``, ``Mod``, ``Gather`` on 256
entries), then one ``Gather`` of a row of them per byte of codes.

Packing: codes of ``b = ⌈log₂ k⌉`` bits are stored at a width of 1, 2, 4 or 8 bits (the smallest
that holds ``b``: 3-bit codes take 4), ``8 / width`` codes a byte, the first code in the lowest bits
(the order of :func:`lcdsl.operators.bitpack.pack_uint`). A codebook of more than 256 entries has
no compact layer (:func:`pack_width` raises ``ValueError``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lcdsl.operators.base import bits_per_index

__all__ = [
    "CodebookLayer", "CodebookLinear", "CodebookConv2d", "CodebookEmbedding", "factored_linear", "factored_conv2d",
    "pack_width", "pack_codes", "unpack_codes", "codebook_layers", "set_cache",
]  # fmt: skip

WIDTHS = (1, 2, 4, 8)
"""The bit widths codes are packed at: each divides a byte, so unpacking is one division and
one remainder per code, which every runtime (ONNX included) has."""


def pack_width(k: int) -> int:
    """The bits a code into a codebook of ``k`` entries is stored at: 1, 2, 4 or 8.

    Raises:
        ValueError: ``k`` is more than 256 (the codes would not fit a byte).
    """
    bits = max(1, bits_per_index(k))
    for width in WIDTHS:
        if bits <= width:
            return width
    raise ValueError(f"a codebook of {k} entries needs {bits}-bit codes; compact layers hold at most 256 entries")


def pack_codes(codes: torch.Tensor, width: int) -> torch.Tensor:
    """Non-negative integer ``codes`` (any shape, each ``< 2**width``) as ``uint8`` bytes,
    ``8 / width`` codes a byte, the first in the lowest bits: ``(⌈n·width/8⌉,)``."""
    flat = codes.reshape(-1).to(torch.int32)  # (n,)
    per = 8 // width
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % per)]).reshape(-1, per)  # (bytes, per)
    shifts = torch.arange(per, dtype=torch.int32, device=flat.device) * width  # (per,)
    return (flat << shifts).sum(1).to(torch.uint8)  # (bytes,)


def unpack_codes(packed: torch.Tensor, divisors: torch.Tensor | None, width: int, count: int) -> torch.Tensor:
    """The first ``count`` codes of ``packed`` (:func:`pack_codes`) as ``int64`` ``(count,)``.

    ``divisors`` is ``2**(width·j)`` for the ``j``-th code of a byte (``int32``, ``(8/width,)``), or
    None at width 8. Division and remainder rather than shifts: ONNX's ``BitShift`` takes unsigned
    types that its ``Gather`` indices cannot be, and both are exact on these small integers."""
    if width == 8:
        return packed[:count].long()
    wide = packed.to(torch.int32).unsqueeze(1)  # (bytes, 1)
    codes = torch.remainder(torch.div(wide, divisors, rounding_mode="floor"), 2**width)  # (bytes, per)
    return codes.reshape(-1)[:count].long()  # (count,)


class CodebookLayer(nn.Module):
    """A layer whose weight is ``codebook[codes]``, kept as packed codes and the codebook.

    Buffers: ``codebook`` ``(k,)`` in the weight's dtype, ``packed`` ``uint8`` bytes, and
    ``divisors`` (``int32``, for unpacking; absent at width 8). Subclasses say what the layer does
    with its :attr:`weight`.

    Args:
        codebook: the ``k`` codewords, ``(k,)``.
        codes: an integer tensor of the weight's shape, entries in ``[0, k)``.
        cache: expand the weight once, on the first forward, and keep it (faster, more memory);
            False expands it at every forward (least memory).
    """

    def __init__(
        self, codebook: torch.Tensor, codes: torch.Tensor, *, cache: bool = False,
        sparse: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if codebook.dim() != 1 or codebook.numel() == 0:
            raise ValueError(f"a codebook is a non-empty vector, got shape {tuple(codebook.shape)}")
        codes = codes.detach()
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook.numel()):
            raise ValueError(f"codes must lie in [0, {codebook.numel()}), got {int(codes.min())}…{int(codes.max())}")
        self.width = pack_width(codebook.numel())
        self.weight_shape: tuple[int, ...] = tuple(codes.shape)
        self.cache = cache
        self._cached: torch.Tensor | None = None
        self.register_buffer("codebook", codebook.detach().clone())
        self.register_buffer("packed", pack_codes(codes.to(codebook.device), self.width))
        if self.width < 8:
            per = 8 // self.width
            divisors = (2 ** (torch.arange(per, dtype=torch.int32) * self.width)).to(torch.int32)
            self.register_buffer("divisors", divisors.to(codebook.device))
        else:
            self.divisors = None
        positions = values = None
        if sparse is not None:
            positions, values = (t.detach().reshape(-1) for t in sparse)
            if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= codes.numel()):
                raise ValueError(f"sparse positions must lie in [0, {codes.numel()})")
            positions, values = positions.to(torch.int32), values.to(codebook.dtype).clone()
        self.register_buffer("sparse_positions", positions)  # (s,) into the flat weight, or None
        self.register_buffer("sparse_values", values)  # (s,)

    @property
    def k(self) -> int:
        """How many codewords there are."""
        return self.codebook.numel()

    def codes(self) -> torch.Tensor:
        """The codes, ``int64`` in the weight's shape."""
        return unpack_codes(self.packed, self.divisors, self.width, math.prod(self.weight_shape)).reshape(
            self.weight_shape
        )

    def expand(self) -> torch.Tensor:
        """``codebook[codes]``: the weight, computed now (the ONNX graph's ``Gather``)."""
        n = math.prod(self.weight_shape)
        if self.width == 8:
            weight = self.codebook.index_select(0, self.packed[:n].long())  # (n,); ONNX: Cast, Gather
        else:
            # what each of the 256 bytes decodes to, (256, 8/width) values, then one gather of
            # a row per byte: far faster than unpacking every code on its own
            byte = torch.arange(256, dtype=torch.int32, device=self.packed.device).unsqueeze(1)  # (256, 1)
            codes = torch.remainder(torch.div(byte, self.divisors, rounding_mode="floor"), 2**self.width)
            byte_values = self.codebook.index_select(0, codes.clamp(max=self.k - 1).reshape(-1))  # codes ≥ k: padding
            per = 8 // self.width
            weight = byte_values.reshape(256, per).index_select(0, self.packed.long()).reshape(-1)[:n]  # (n,)
        if self.sparse_positions is not None:  # an additive sparse correction: W = codebook[codes] + S
            weight = weight.index_add(0, self.sparse_positions.long(), self.sparse_values)
        return weight.reshape(self.weight_shape)

    @property
    def weight(self) -> torch.Tensor:
        """The weight: expanded now, or the cached expansion when :attr:`cache` is on."""
        if not self.cache or torch.compiler.is_exporting():
            return self.expand()
        if self._cached is None or self._cached.device != self.codebook.device:
            self._cached = self.expand()
        return self._cached

    def compact_bytes(self) -> int:
        """Bytes of the codes and codebook in memory (what replaces the dense weight)."""
        size = self.packed.numel() + self.codebook.numel() * self.codebook.element_size()
        if self.sparse_positions is not None:
            size += self.sparse_positions.numel() * 4 + self.sparse_values.numel() * self.sparse_values.element_size()
        return size

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._cached = None  # a move or a dtype change invalidates the expansion
        return super()._apply(fn, recurse)

    def _describe_codes(self) -> str:
        sparse = "" if self.sparse_positions is None else f" + {self.sparse_positions.numel()} sparse"
        return f"k={self.k}, {self.width}-bit codes{sparse}{', cached' if self.cache else ''}"


class CodebookLinear(CodebookLayer):
    """``y = x·Wᵀ + b`` with ``W = codebook[codes]`` ``(out, in)``; the drop-in for ``nn.Linear``
    and, with transposed codes, for HF ``Conv1D``."""

    def __init__(
        self, codebook: torch.Tensor, codes: torch.Tensor, bias: torch.Tensor | None = None, *, cache: bool = False,
        sparse: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        if codes.dim() != 2:
            raise ValueError(f"a linear layer's codes are (out, in), got shape {tuple(codes.shape)}")
        super().__init__(codebook, codes, cache=cache, sparse=sparse)
        self.out_features, self.in_features = self.weight_shape
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}→{self.out_features}, {self._describe_codes()}, bias={self.bias is not None}"


class CodebookConv2d(CodebookLayer):
    """``nn.Conv2d`` with ``W = codebook[codes]`` ``(out, in/groups, kh, kw)``; stride, padding,
    dilation and groups as the ``template`` convolution's (zero padding only).

    Raises:
        ValueError: the template pads other than with zeros."""

    def __init__(
        self, template: nn.Conv2d, codebook: torch.Tensor, codes: torch.Tensor, bias: torch.Tensor | None = None,
        *, cache: bool = False, sparse: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        if template.padding_mode != "zeros":
            raise ValueError(f"padding_mode={template.padding_mode!r}: a codebook convolution pads with zeros only")
        super().__init__(codebook, codes, cache=cache, sparse=sparse)
        self.out_channels, self.in_channels = self.weight_shape[0], self.weight_shape[1] * template.groups
        self.kernel_size = tuple(self.weight_shape[2:])
        self.stride, self.padding = template.stride, template.padding
        self.dilation, self.groups = template.dilation, template.groups
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        return f"{self.in_channels}→{self.out_channels}, {kh}×{kw}, {self._describe_codes()}"


class CodebookEmbedding(CodebookLayer):
    """``nn.Embedding`` whose table ``(num_embeddings, dim)`` is ``codebook[codes]``."""

    def __init__(
        self, template: nn.Embedding, codebook: torch.Tensor, codes: torch.Tensor, *, cache: bool = False,
        sparse: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(codebook, codes, cache=cache, sparse=sparse)
        self.num_embeddings, self.embedding_dim = self.weight_shape
        self.padding_idx, self.max_norm = template.padding_idx, template.max_norm
        if template.max_norm is not None:
            raise ValueError("an embedding with max_norm renormalizes its table in place; it has no codebook layer")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}×{self.embedding_dim}, {self._describe_codes()}"


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out, inp = weight.shape
    layer = nn.Linear(inp, out, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.requires_grad_(False)


def factored_linear(u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> nn.Sequential:
    """``x ↦ x·(U·V)ᵀ + b`` as ``Linear(in→r, no bias) · Linear(r→out)``: ``U`` ``(out, r)``,
    ``V`` ``(r, in)``. Also the deployed form of a low-rank HF ``Conv1D`` (its matrix view is
    ``(out, in)`` too)."""
    return nn.Sequential(_linear(v, None), _linear(u, bias))


def factored_conv2d(template: nn.Conv2d, u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> nn.Sequential:
    """A conv whose matrix view ``(out, in·kh·kw)`` is ``U·V`` as a ``kh×kw`` convolution to ``r``
    channels (``template``'s kernel, stride, padding and dilation; ``in`` is read from ``V``
    ``(r, in·kh·kw)``) followed by a 1×1 one with the bias.

    Raises:
        ValueError: ``template`` is grouped (its matrix view is not one matrix of all inputs)."""
    if template.groups != 1:
        raise ValueError(f"a grouped convolution (groups={template.groups}) is not factored")
    r = v.shape[0]
    in_channels = v.shape[1] // math.prod(template.kernel_size)  # the template's, or fewer after unit removal
    first = nn.Conv2d(in_channels, r, template.kernel_size, stride=template.stride, padding=template.padding,
                      dilation=template.dilation, bias=False, padding_mode=template.padding_mode,
                      device=v.device, dtype=v.dtype)  # fmt: skip
    second = nn.Conv2d(r, u.shape[0], 1, bias=bias is not None, device=u.device, dtype=u.dtype)
    with torch.no_grad():
        first.weight.copy_(v.reshape(first.weight.shape))  # (r, in·kh·kw) → (r, in, kh, kw)
        second.weight.copy_(u.reshape(second.weight.shape))  # (out, r) → (out, r, 1, 1)
        if bias is not None:
            second.bias.copy_(bias)
    return nn.Sequential(first.requires_grad_(False), second.requires_grad_(False))


def codebook_layers(model: nn.Module) -> Iterator[tuple[str, CodebookLayer]]:
    """Every codebook layer of ``model``, with its name."""
    for name, module in model.named_modules():
        if isinstance(module, CodebookLayer):
            yield name, module


def set_cache(model: nn.Module, cache: bool) -> nn.Module:
    """Switch the weight cache of every codebook layer of ``model`` on or off; returns ``model``.
    Switching it off frees the expanded weights."""
    for _, layer in codebook_layers(model):
        layer.cache = cache
        if not cache:
            layer._cached = None
    return model
