"""Exact k-selection: mark the k lowest values across many tensors, deterministically.

A two-pass radix select over order-preserving int32 keys of the float32 values (16 high bits, then
16 low bits inside the bucket holding the k-th value), one tensor at a time: no concatenated copy of
all values is ever made, and reused scratch buffers avoid page-faulting fresh memory per layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def prune_lowest(
    getters: list[Callable[[], torch.Tensor]], k: int, names: list[str] | None = None
) -> list[torch.Tensor]:
    """Boolean "pruned" masks marking exactly the ``k`` lowest values across all tensors.

    ``getters`` produce the tensors on demand (each is called up to three times and must return the
    same values every time), so lazily computed scores are never all resident. Ties prune the earlier
    tensor, then the lower flat index, first.
    """
    names = names or [str(i) for i in range(len(getters))]
    scratch = _Scratch()
    # Pass 1: reject NaN, count, and histogram the high 16 bits of every key.
    total, signed = 0, []
    high_hist = torch.zeros(1 << 16, dtype=torch.int64)
    for getter, name in zip(getters, names, strict=True):
        keys, has_sign_bits = _checked_keys(_float_bits(getter()), scratch, name)
        signed.append(has_sign_bits)
        total += keys.numel()
        if k > 0:
            high_hist += torch.bincount(_high(keys, scratch), minlength=1 << 16)
    if k <= 0 or total == 0:
        return [torch.zeros_like(g(), dtype=torch.bool) for g in getters]
    if k >= total:
        return [torch.ones_like(g(), dtype=torch.bool) for g in getters]

    # Pass 2: histogram the low 16 bits of the keys inside the bucket that holds the k-th key.
    high, below = _bucket_of_kth(high_hist, k)
    low_hist = torch.zeros(1 << 16, dtype=torch.int64)
    for getter, has_sign_bits in zip(getters, signed, strict=True):
        keys = _keys(_float_bits(getter()), has_sign_bits, scratch)
        in_bucket = torch.eq(_high(keys, scratch), high, out=scratch.get("bool", keys.numel(), torch.bool))
        low_hist += torch.bincount(_low(keys[in_bucket]), minlength=1 << 16)
    low, below_low = _bucket_of_kth(low_hist, k - below)
    threshold = _compose(high, low)
    ties_left = k - below - below_low

    # Pass 3: prune every key below the threshold, then the earliest keys equal to it.
    scratch.release("high")
    masks = []
    for getter, has_sign_bits in zip(getters, signed, strict=True):
        values = getter()
        keys = _keys(_float_bits(values), has_sign_bits, scratch)
        pruned = keys < threshold
        if ties_left > 0:
            ties = torch.eq(keys, threshold, out=scratch.get("bool", keys.numel(), torch.bool))
            if ties.any():
                tie_positions = ties.nonzero().squeeze(1)[:ties_left]
                pruned[tie_positions] = True
                ties_left -= tie_positions.numel()
        masks.append(pruned.view(values.shape))
    return masks


class _Scratch:
    """Reusable flat buffers, one per slot, grown to the largest tensor seen.

    Large fresh allocations are returned to the OS when freed and page-faulted in again on the next
    one, which on big layers costs several times the arithmetic; reusing buffers avoids that.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, slot: str, numel: int, dtype: torch.dtype = torch.int32) -> torch.Tensor:
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.numel() < numel:
            self._buffers.pop(slot, None)  # free the smaller buffer before allocating the larger one
            buffer = self._buffers[slot] = torch.empty(numel, dtype=dtype)
        return buffer[:numel]

    def release(self, slot: str) -> None:
        self._buffers.pop(slot, None)


_KEY_OF_POS_INF = 0x7F800000  # keys above it are NaN with the sign bit clear
_KEY_OF_NEG_INF = -0x7F800001  # keys below it are NaN with the sign bit set


def _float_bits(values: torch.Tensor) -> torch.Tensor:
    """Flat int32 view of the float32 bit patterns of ``values`` (a copy only if not float32/contiguous)."""
    return values.detach().to(torch.float32).contiguous().view(torch.int32).flatten()


def _checked_keys(bits: torch.Tensor, scratch: _Scratch, name: str) -> tuple[torch.Tensor, bool]:
    """Keys of ``bits`` and whether any sign bit is set (negative, −0.0); raises on NaN."""
    if bits.numel() == 0:
        return bits, False
    lowest, highest = torch.aminmax(bits)
    has_sign_bits = bool(lowest < 0)
    keys = _keys(bits, has_sign_bits, scratch)
    if has_sign_bits:
        lowest, highest = torch.aminmax(keys)
    if bool(lowest < _KEY_OF_NEG_INF) or bool(highest > _KEY_OF_POS_INF):
        raise ValueError(f"scores for {name!r} contain NaN; a scorer produced invalid scores")
    return keys, has_sign_bits


def _keys(bits: torch.Tensor, has_sign_bits: bool, scratch: _Scratch) -> torch.Tensor:
    """Flat int32 keys whose signed order equals the float32 order of ``bits`` (−0.0 below +0.0).

    A key is ``bits ^ ((bits >> 31) & 0x7FFFFFFF)``: negative floats get their magnitude bits flipped.
    Without sign bits (non-negative scores such as |w|) that is ``bits`` itself, returned as is.
    """
    if not has_sign_bits:
        return bits
    keys = torch.bitwise_right_shift(bits, 31, out=scratch.get("keys", bits.numel()))
    keys &= 0x7FFFFFFF
    keys ^= bits
    return keys


def _high(keys: torch.Tensor, scratch: _Scratch) -> torch.Tensor:
    """High 16 bits of the keys, shifted to 0 … 65535 (computed into ``scratch``)."""
    high = torch.bitwise_right_shift(keys, 16, out=scratch.get("high", keys.numel()))
    high += 1 << 15
    return high


def _low(keys: torch.Tensor) -> torch.Tensor:
    return keys & 0xFFFF


def _compose(high: int, low: int) -> int:
    return ((high - (1 << 15)) << 16) | low


def _bucket_of_kth(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Bucket holding the k-th smallest (1-based) element and the count strictly below it."""
    cumulative = hist.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, torch.tensor(k, dtype=cumulative.dtype)))
    below = int(cumulative[bucket - 1]) if bucket > 0 else 0
    return bucket, below
