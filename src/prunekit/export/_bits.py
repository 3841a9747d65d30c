"""Bit-level helpers shared by the encodings: zero patterns, bit packing, narrow index dtypes."""

from __future__ import annotations

import numpy as np
import torch

# Same-width integer views: a tensor's "zeros" are entries whose bit pattern is all zeros, so -0.0 and
# NaN payloads count as values and every round trip is bit-exact.
INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_UNSIGNED = ((2**8, torch.uint8), (2**16, torch.uint16), (2**32, torch.uint32), (2**63, torch.int64))


def nonzero_mask(t: torch.Tensor) -> torch.Tensor:
    """Boolean tensor of ``t``'s shape: ``True`` where the element's bit pattern is not all zeros."""
    return t.contiguous().view(INT_VIEW[t.element_size()]) != 0


def narrow_uint(max_value: int) -> torch.dtype:
    """The narrowest stored integer dtype holding ``0 … max_value`` (uint8, uint16, uint32, int64)."""
    for limit, dtype in _UNSIGNED:
        if max_value < limit:
            return dtype
    raise ValueError(f"index {max_value} does not fit in int64")


def as_uint(values: np.ndarray | torch.Tensor, max_value: int) -> torch.Tensor:
    """``values`` (non-negative integers) as a tensor of :func:`narrow_uint` dtype."""
    array = values.numpy() if isinstance(values, torch.Tensor) else values
    dtype = narrow_uint(max_value)
    return torch.from_numpy(np.ascontiguousarray(array.astype(_NUMPY[dtype])))


_NUMPY = {torch.uint8: np.uint8, torch.uint16: np.uint16, torch.uint32: np.uint32, torch.int64: np.int64}


def to_int64(t: torch.Tensor) -> np.ndarray:
    """An unsigned index tensor (any stored width) as an int64 numpy array."""
    return t.numpy().astype(np.int64)


def pack_bits(codes: np.ndarray, k: int) -> torch.Tensor:
    """Pack non-negative integers ``< 2**k`` into ``ceil(len·k / 8)`` bytes, little-endian bit order."""
    codes = np.asarray(codes, dtype=np.uint64)
    bits = (codes[:, None] >> np.arange(k, dtype=np.uint64)) & np.uint64(1)  # (n, k)
    return torch.from_numpy(np.packbits(bits.astype(np.uint8).reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, k: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` k-bit integers as an int64 array."""
    if packed.numel() * 8 < count * k:
        raise ValueError(f"packed stream holds {packed.numel() * 8} bits, {count * k} are needed")
    bits = np.unpackbits(packed.numpy(), count=count * k, bitorder="little").reshape(count, k)
    return bits.astype(np.int64) @ (np.int64(1) << np.arange(k, dtype=np.int64))
