"""Lossless encodings of sparse tensors; :func:`encode` picks the smallest one per tensor.

Every encoding keeps the values in the tensor's own dtype and round-trips bit for bit: codecs work on
the same-width integer view of the tensor, and a "zero" is an all-zero bit pattern (``-0.0`` and NaN
payloads are stored as values). With ``n`` elements, ``z`` nonzeros
and ``b`` value bits, the payloads are:

- ``dense``: ``n·b`` bits.
- ``bitmap``: one bit per element plus the values, ``n + z·b``.
- ``csr``: the tensor as a matrix ``(rows, cols)`` (dim 0 × the rest), row pointers and column indices
  in the narrowest unsigned type that fits, ``(rows+1)·w_ptr + z·(w_col + b)``.
- ``relative`` (Han et al. 2016, Deep Compression): the gap ``d ≥ 1`` from one nonzero to the next is
  written in ``k`` bits; a gap longer than ``E = 2^k − 1`` takes filler codes ``E`` ("skip E, no value")
  first. ``k`` minimises ``k·(z + Σ ⌊(d−1)/E⌋)`` per tensor; the filler carries no value, so it costs
  ``k`` bits instead of Deep Compression's ``k + b``. Gaps of a uniformly random pattern are geometric,
  which is why this lands within a few percent of the entropy bound at 75–98% sparsity.
- ``nm``: N:M groups (``m`` consecutive entries along dim 1, as in :class:`prunekit.NM`) store ``n``
  values and ``n`` positions of ``⌈log2 m⌉`` bits each; only when no group has more than ``n`` nonzeros.
- ``block``: blocks of the matrix view; the flat offsets of blocks with any nonzero plus their dense
  values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._registry import Registry
from ._bits import INT_VIEW, as_uint, nonzero_mask, pack_bits, to_int64, unpack_bits

NM_CANDIDATES = (4, 8, 16)
BLOCK_CANDIDATES = ((1, 4), (4, 1), (2, 2), (4, 4), (8, 8), (16, 16))


class NotApplicableError(ValueError):
    """The tensor does not have the structure a forced encoding needs (e.g. N:M, a block size)."""


@dataclass(frozen=True)
class Encoded:
    """One tensor in one encoding: 1-D ``parts`` to store, integer ``params`` to keep as JSON."""

    encoding: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    parts: dict[str, torch.Tensor]
    params: dict[str, int] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Payload bytes: the sum over parts (the JSON metadata is not counted)."""
        return sum(p.numel() * p.element_size() for p in self.parts.values())


@dataclass(frozen=True)
class Codec:
    """``encode(tensor, **options) -> Encoded`` (raising :class:`NotApplicableError`) and its inverse."""

    name: str
    encode: Callable[..., Encoded]
    decode: Callable[[Encoded], torch.Tensor]


ENCODINGS: Registry[Codec] = Registry("encoding")


def encode(tensor: torch.Tensor, encoding: str = "auto", **options: Any) -> Encoded:
    """Encode ``tensor``; ``"auto"`` tries every registered encoding and keeps the smallest payload.

    Ties go to the earlier one of dense, bitmap, csr, relative, nm, block; empty tensors are always
    dense. ``options`` go to a forced encoding, e.g. ``encode(w, "relative", k=4)``,
    ``encode(w, "nm", m=4)``, ``encode(w, "block", block=(4, 4))``.
    """
    if not isinstance(tensor, torch.Tensor) or tensor.is_sparse or tensor.layout != torch.strided:
        raise TypeError(f"encode needs a dense torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_complex() or tensor.dtype.itemsize not in (1, 2, 4, 8):
        raise TypeError(f"encode supports real and bool dtypes, got {tensor.dtype}")
    tensor = tensor.detach().cpu().contiguous()
    bits = tensor.view(INT_VIEW[tensor.element_size()])  # codecs move bit patterns, never float values
    if tensor.numel() == 0:
        return _as_dtype(_dense_encode(bits), tensor.dtype)
    if encoding != "auto":
        return _as_dtype(ENCODINGS.get(encoding).encode(bits, **options), tensor.dtype)
    if options:
        raise ValueError(f"options {sorted(options)} need a forced encoding, not 'auto'")
    best = _dense_encode(bits)
    for name in [*_ORDER, *(n for n in ENCODINGS.names() if n not in _ORDER)]:
        try:
            candidate = ENCODINGS.get(name).encode(bits)
        except NotApplicableError:
            continue
        if candidate.nbytes < best.nbytes:
            best = candidate
    return _as_dtype(best, tensor.dtype)


def decode(encoded: Encoded) -> torch.Tensor:
    """The exact tensor ``encoded`` came from (its shape and dtype)."""
    bits_dtype = INT_VIEW[encoded.dtype.itemsize]
    parts = {p: t.view(bits_dtype) if p == "values" else t for p, t in encoded.parts.items()}
    as_bits = Encoded(encoded.encoding, encoded.shape, bits_dtype, parts, encoded.params)
    out = ENCODINGS.get(encoded.encoding).decode(as_bits)
    return out.reshape(encoded.shape).view(encoded.dtype)


def _as_dtype(encoded: Encoded, dtype: torch.dtype) -> Encoded:
    """Label an encoding of the bit view with the original dtype; its ``values`` part is viewed back."""
    parts = {p: t.view(dtype) if p == "values" else t for p, t in encoded.parts.items()}
    return Encoded(encoded.encoding, encoded.shape, dtype, parts, encoded.params)


def _values(flat: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return flat[keep].contiguous()


def _empty(encoded: Encoded) -> torch.Tensor:
    return torch.zeros(math.prod(encoded.shape), dtype=encoded.dtype)


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """The matrix view used by csr and block: (dim 0, product of the rest); 0-d and 1-d are one row."""
    return (1, math.prod(shape)) if len(shape) < 2 else (shape[0], math.prod(shape[1:]))


# -- dense, bitmap ---------------------------------------------------------------------------------
def _dense_encode(t: torch.Tensor) -> Encoded:
    return Encoded("dense", tuple(t.shape), t.dtype, {"values": t.reshape(-1).clone()})


def _dense_decode(e: Encoded) -> torch.Tensor:
    return e.parts["values"].clone()


def _bitmap_encode(t: torch.Tensor) -> Encoded:
    keep = nonzero_mask(t).reshape(-1)
    bitmap = torch.from_numpy(np.packbits(keep.numpy(), bitorder="little"))
    parts = {"bitmap": bitmap, "values": _values(t.reshape(-1), keep)}
    return Encoded("bitmap", tuple(t.shape), t.dtype, parts)


def _bitmap_decode(e: Encoded) -> torch.Tensor:
    n = math.prod(e.shape)
    keep = torch.from_numpy(np.unpackbits(e.parts["bitmap"].numpy(), count=n, bitorder="little").astype(bool))
    out = _empty(e)
    out[keep] = e.parts["values"]
    return out


# -- csr -------------------------------------------------------------------------------------------
def _csr_encode(t: torch.Tensor) -> Encoded:
    rows, cols = _matrix(tuple(t.shape))
    keep = nonzero_mask(t).reshape(rows, cols)
    counts = keep.sum(dim=1)  # (rows,)
    crow = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    col = keep.nonzero()[:, 1]
    parts = {
        "crow": as_uint(crow, int(crow[-1])),
        "col": as_uint(col, max(cols - 1, 0)),
        "values": _values(t.reshape(-1), keep.reshape(-1)),
    }
    return Encoded("csr", tuple(t.shape), t.dtype, parts)


def _csr_decode(e: Encoded) -> torch.Tensor:
    rows, cols = _matrix(e.shape)
    crow = to_int64(e.parts["crow"])
    row = np.repeat(np.arange(rows, dtype=np.int64), np.diff(crow))
    out = _empty(e)
    out[torch.from_numpy(row * cols + to_int64(e.parts["col"]))] = e.parts["values"]
    return out


# -- relative indexing -----------------------------------------------------------------------------
def relative_bits(gaps: np.ndarray, k: int) -> int:
    """Index bits of relative indexing with ``k``-bit codes: ``k·(z + Σ ⌊(d − 1) / (2^k − 1)⌋)``."""
    fillers = int(((gaps - 1) // (2**k - 1)).sum())
    return k * (len(gaps) + fillers)


def _relative_encode(t: torch.Tensor, k: int | None = None) -> Encoded:
    keep = nonzero_mask(t).reshape(-1)
    positions = keep.nonzero()[:, 0].numpy()
    gaps = np.diff(positions, prepend=-1)  # d ≥ 1: distance from the previous nonzero (first: from -1)
    if k is None:
        top = max(int(gaps.max()).bit_length(), 1) if len(gaps) else 1
        k = min(range(1, min(top, 32) + 1), key=lambda bits: relative_bits(gaps, bits))
    elif isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 32:
        raise ValueError(f"relative indexing needs k (bits per gap) in 1…32, got {k!r}")
    skip = 2**k - 1
    fillers = (gaps - 1) // skip  # filler codes before each nonzero
    remainders = (gaps - 1) - fillers * skip  # in [0, skip - 1]
    # Each nonzero becomes `fillers` codes equal to `skip`, then its remainder code.
    codes = np.full(len(gaps) + int(fillers.sum()), skip, dtype=np.int64)
    codes[np.cumsum(fillers + 1) - 1] = remainders
    parts = {"gaps": pack_bits(codes, k), "values": _values(t.reshape(-1), keep)}
    return Encoded("relative", tuple(t.shape), t.dtype, parts, {"k": k, "codes": len(codes)})


def _relative_decode(e: Encoded) -> torch.Tensor:
    k, skip = e.params["k"], 2 ** e.params["k"] - 1
    codes = unpack_bits(e.parts["gaps"], k, e.params["codes"])
    filler = codes == skip
    positions = np.cumsum(np.where(filler, skip, codes + 1)) - 1
    out = _empty(e)
    out[torch.from_numpy(positions[~filler])] = e.parts["values"]
    return out


# -- N:M -------------------------------------------------------------------------------------------
def _grouped(t: torch.Tensor, m: int) -> torch.Tensor:
    """(d0, d1, *rest) → (groups, m): ``m`` consecutive entries along dim 1 form a group."""
    if t.dim() < 2 or t.shape[1] % m:
        raise NotApplicableError(f"nm needs dim 1 divisible by m={m}; shape is {tuple(t.shape)}")
    return t.movedim(1, -1).reshape(-1, m)


def _nm_encode(t: torch.Tensor, m: int | None = None) -> Encoded:
    if m is None:
        options = [c for c in NM_CANDIDATES if t.dim() >= 2 and t.shape[1] % c == 0]
        if not options:
            raise NotApplicableError(f"nm needs dim 1 divisible by one of {NM_CANDIDATES}")
        return min((_nm_encode(t, c) for c in options), key=lambda e: e.nbytes)
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise ValueError(f"nm needs the group size m to be an int ≥ 2, got {m!r}")
    groups = _grouped(t, m)  # (groups, m)
    keep = _grouped(nonzero_mask(t), m)
    n = int(keep.sum(1).max()) if keep.numel() else 0
    if n >= m:
        raise NotApplicableError(f"a group of {m} along dim 1 is fully dense; nm needs at most n < m kept")
    # Nonzero positions first (stable), then zero positions as padding: padding stores a true zero.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[:, :n]  # (groups, n)
    width = max(1, (m - 1).bit_length())
    parts = {
        "positions": pack_bits(order.reshape(-1).numpy(), width),
        "values": groups.gather(1, order).reshape(-1).contiguous(),
    }
    return Encoded("nm", tuple(t.shape), t.dtype, parts, {"n": n, "m": m})


def _nm_decode(e: Encoded) -> torch.Tensor:
    n, m = e.params["n"], e.params["m"]
    moved = (e.shape[0], *e.shape[2:], e.shape[1])
    groups = math.prod(e.shape) // m
    width = max(1, (m - 1).bit_length())
    order = torch.from_numpy(unpack_bits(e.parts["positions"], width, groups * n)).reshape(groups, n)
    out = torch.zeros(groups, m, dtype=e.dtype)
    out.scatter_(1, order, e.parts["values"].reshape(groups, n))
    return out.reshape(moved).movedim(-1, 1).reshape(-1)


# -- block-sparse ----------------------------------------------------------------------------------
def _blocks(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The matrix view of ``t`` as (row blocks, col blocks, rows, cols)."""
    r, c = _matrix(tuple(t.shape))
    if r % rows or c % cols:
        raise NotApplicableError(f"block {rows}x{cols} does not tile the {r}×{c} matrix view")
    return t.reshape(r // rows, rows, c // cols, cols).permute(0, 2, 1, 3)


def _block_encode(t: torch.Tensor, block: tuple[int, int] | None = None) -> Encoded:
    if block is None:
        options = [_try_block(t, b) for b in BLOCK_CANDIDATES]
        found = [e for e in options if e is not None]
        if not found:
            raise NotApplicableError(f"no block size of {BLOCK_CANDIDATES} tiles shape {tuple(t.shape)}")
        return min(found, key=lambda e: e.nbytes)
    if not (
        isinstance(block, tuple) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)
    ):
        raise ValueError(f"block must be a (rows, cols) tuple of positive ints, got {block!r}")
    rows, cols = block
    blocks = _blocks(t, rows, cols)  # (R/rows, C/cols, rows, cols)
    kept = _blocks(nonzero_mask(t), rows, cols).flatten(2).any(-1).reshape(-1)  # (blocks,)
    offsets = kept.nonzero()[:, 0]
    parts = {
        "offsets": as_uint(offsets, max(kept.numel() - 1, 0)),
        "values": blocks.reshape(-1, rows * cols)[kept].reshape(-1).contiguous(),
    }
    return Encoded("block", tuple(t.shape), t.dtype, parts, {"rows": rows, "cols": cols})


def _try_block(t: torch.Tensor, block: tuple[int, int]) -> Encoded | None:
    try:
        return _block_encode(t, block)
    except NotApplicableError:
        return None


def _block_decode(e: Encoded) -> torch.Tensor:
    rows, cols = e.params["rows"], e.params["cols"]
    r, c = _matrix(e.shape)
    blocks = torch.zeros((r // rows) * (c // cols), rows * cols, dtype=e.dtype)
    blocks[torch.from_numpy(to_int64(e.parts["offsets"]))] = e.parts["values"].reshape(-1, rows * cols)
    return blocks.reshape(r // rows, c // cols, rows, cols).permute(0, 2, 1, 3).reshape(-1)


for _codec in (
    Codec("dense", _dense_encode, _dense_decode),
    Codec("bitmap", _bitmap_encode, _bitmap_decode),
    Codec("csr", _csr_encode, _csr_decode),
    Codec("relative", _relative_encode, _relative_decode),
    Codec("nm", _nm_encode, _nm_decode),
    Codec("block", _block_encode, _block_decode),
):
    ENCODINGS.register(_codec.name, _codec)
_ORDER = ("dense", "bitmap", "csr", "relative", "nm", "block")
