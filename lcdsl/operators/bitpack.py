"""Bit packing: integers at ``b`` bits each, bitmasks, and the lossless codec for one tensor.

Everything is little-endian: bit ``i`` of a packed stream is bit ``i % 8`` of byte ``i // 8``, and
the bits of one ``b``-bit code are written lowest first. A stream of ``n`` codes of ``b`` bits takes
``⌈n·b / 8⌉`` bytes.

:func:`encode_tensor` picks, from a tensor's content, the smallest exact encoding among:

- ``raw``: the elements' bytes in their dtype (floats, and anything else);
- ``signs``: a float tensor whose entries are all ``−1`` or ``+1``: one bit each;
- ``packed``: an integer tensor as ``entry − min`` at ``⌈log₂(max − min + 1)⌉`` bits each;
- ``mask``: a 1-D strictly increasing non-negative integer tensor (a set of positions, e.g. the
  kept indices of a pruned layer) as a bitmask of ``max + 1`` bits;
- ``bool``: a boolean tensor, one bit each.

So the codebook assignments of ``quant(k=4)`` take 2 bits a weight, the kept positions of
``prune(l0=κ)`` the cheaper of a bitmask and ``κ·⌈log₂ n⌉`` bits, and ``binarize`` one bit a weight,
without the exporter knowing any operator. :func:`decode_tensor` inverts it bit for bit, and also
reads what :func:`encode_raw` writes: a tensor as its bytes whatever its content (for what a file
stores as it is, such as a model's buffers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from lcdsl.operators.base import bits_per_index

__all__ = [
    "pack_uint", "unpack_uint", "pack_bits", "unpack_bits", "encode_tensor", "encode_raw", "decode_tensor", "width"
]  # fmt: skip

_DTYPES: dict[str, torch.dtype] = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float16, torch.bfloat16, torch.float32, torch.float64,
        torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool,
    )
}  # fmt: skip
"""The dtypes a file may name, by their short names (``"float32"``)."""


def width(span: int) -> int:
    """Bits to store one of ``span + 1`` values ``0 … span`` (0 for one value)."""
    return bits_per_index(span + 1)


def pack_uint(values: np.ndarray, bits: int) -> bytes:
    """Non-negative integers ``< 2**bits`` as a stream of ``bits``-bit codes (``⌈n·bits/8⌉`` bytes)."""
    values = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)  # (n,)
    if bits == 0 or values.size == 0:
        return b""
    shifts = np.arange(bits, dtype=np.uint64)  # (bits,)
    planes = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)  # (n, bits), low bit first
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_uint(data: bytes, count: int, bits: int) -> np.ndarray:
    """The ``count`` codes of :func:`pack_uint` as ``uint64`` (``(count,)``)."""
    if bits == 0 or count == 0:
        if data:  # pack_uint writes nothing then: bytes here belong to no code
            raise ValueError(f"{count} codes of {bits} bits take no bytes, got {len(data)}")
        return np.zeros(count, dtype=np.uint64)
    need = math.ceil(count * bits / 8)
    if len(data) != need:
        raise ValueError(f"{count} codes of {bits} bits take {need} bytes, got {len(data)}")
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    planes = planes.reshape(count, bits).astype(np.uint64)  # (count, bits)
    return (planes << np.arange(bits, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def pack_bits(flags: np.ndarray) -> bytes:
    """Booleans as bits, 8 to a byte."""
    return np.packbits(np.asarray(flags, dtype=bool).reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int) -> np.ndarray:
    """The ``count`` booleans of :func:`pack_bits`."""
    need = math.ceil(count / 8)
    if len(data) != need:
        raise ValueError(f"{count} bits take {need} bytes, got {len(data)}")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[:count].astype(bool)


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"tensors of dtype {name} cannot be stored (supported: {', '.join(_DTYPES)})")
    return name


def _raw(t: torch.Tensor) -> bytes:
    # bfloat16 has no numpy dtype: its bytes go through int16 of the same width
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def encode_tensor(tensor: torch.Tensor) -> tuple[dict[str, Any], bytes]:
    """The smallest exact encoding of ``tensor`` (see the module docstring).

    Returns:
        The field's description (JSON-ready: ``codec``, ``dtype``, ``shape`` and the codec's own
        numbers) and its bytes.
    """
    t = tensor.detach().cpu().contiguous()
    meta: dict[str, Any] = {"dtype": _dtype_name(t.dtype), "shape": list(t.shape)}
    flat = t.reshape(-1)  # (n,)
    n = flat.numel()
    if t.dtype == torch.bool:
        return {**meta, "codec": "bool"}, pack_bits(flat.numpy())
    if t.is_floating_point():
        if n and bool(((flat == 1) | (flat == -1)).all()):
            return {**meta, "codec": "signs"}, pack_bits((flat > 0).numpy())
        return {**meta, "codec": "raw"}, _raw(t)
    if n == 0:
        return {**meta, "codec": "raw"}, b""
    values = flat.to(torch.int64)
    low, high = int(values.min()), int(values.max())
    bits = width(high - low)
    packed_bits = n * bits
    increasing = t.dim() == 1 and low >= 0 and (n == 1 or bool((values[1:] > values[:-1]).all()))
    if increasing and high + 1 < packed_bits:
        mask = np.zeros(high + 1, dtype=bool)
        mask[values.numpy()] = True
        return {**meta, "codec": "mask", "span": high + 1}, pack_bits(mask)
    codes = (values - low).numpy().astype(np.uint64)
    return {**meta, "codec": "packed", "base": low, "bits": bits}, pack_uint(codes, bits)


def encode_raw(tensor: torch.Tensor) -> tuple[dict[str, Any], bytes]:
    """``tensor`` in the ``raw`` codec whatever its content: its elements' bytes, little-endian.

    Returns:
        The field's description (``codec``, ``dtype``, ``shape``) and its bytes
        (``numel · element size`` of them).
    """
    t = tensor.detach().cpu().contiguous()
    return {"dtype": _dtype_name(t.dtype), "shape": list(t.shape), "codec": "raw"}, _raw(t)


def decode_tensor(meta: dict[str, Any], data: bytes) -> torch.Tensor:
    """The tensor :func:`encode_tensor` described by ``meta`` and encoded as ``data``.

    Raises:
        ValueError: an unknown codec or dtype, or bytes that do not fit the description.
    """
    dtype = _DTYPES.get(str(meta.get("dtype")))
    if dtype is None:
        raise ValueError(f"unknown dtype {meta.get('dtype')!r}")
    shape = tuple(int(s) for s in meta["shape"])
    n = math.prod(shape)
    codec = meta.get("codec")
    if codec == "raw":
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(data) != n * itemsize:
            raise ValueError(f"{n} values of {meta['dtype']} take {n * itemsize} bytes, got {len(data)}")
        # bfloat16 has no numpy dtype: its bytes go through int16 of the same width
        read = torch.int16 if dtype == torch.bfloat16 else dtype
        little = torch.empty(0, dtype=read).numpy().dtype.newbyteorder("<")
        array = np.frombuffer(data, dtype=little).astype(little.newbyteorder("="))
        return torch.from_numpy(array).view(dtype).reshape(shape)
    if codec == "bool":
        return torch.from_numpy(unpack_bits(data, n).copy()).reshape(shape)
    if codec == "signs":
        positive = torch.from_numpy(unpack_bits(data, n).copy())
        one = torch.ones((), dtype=dtype)
        return torch.where(positive, one, -one).reshape(shape)
    if codec == "packed":
        codes = unpack_uint(data, n, int(meta["bits"])).astype(np.int64)
        return (torch.from_numpy(codes) + int(meta["base"])).to(dtype).reshape(shape)
    if codec == "mask":
        mask = unpack_bits(data, int(meta["span"]))
        positions = np.flatnonzero(mask)
        if positions.size != n:
            raise ValueError(f"the bitmask holds {positions.size} positions, the shape {shape} needs {n}")
        return torch.from_numpy(positions.astype(np.int64)).to(dtype).reshape(shape)
    raise ValueError(f"unknown codec {codec!r}")
