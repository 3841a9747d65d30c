"""How many bits each weight costs on disk, against dense storage and the entropy bound.

For a tensor of ``n`` entries with sparsity ``s`` (fraction of zeros) and ``b``-bit values, any lossless
code of a pattern drawn uniformly at that sparsity plus its values needs on average at least

    H(s) + (1 − s)·b  bits per weight,   H(s) = −s·log2 s − (1 − s)·log2(1 − s)

(the binary entropy of the zero/nonzero pattern plus the raw nonzero values). Dense storage costs ``b``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ._bits import nonzero_mask
from .encodings import encode


def binary_entropy(s: float) -> float:
    """H(s) in bits; 0 at s ∈ {0, 1}."""
    if s <= 0.0 or s >= 1.0:
        return 0.0
    return -s * math.log2(s) - (1.0 - s) * math.log2(1.0 - s)


def entropy_bound_bits(numel: int, nonzeros: int, value_bits: int) -> float:
    """Total bits of the bound ``n·H(s) + z·b`` for ``n`` entries of which ``z`` are nonzero."""
    if numel == 0:
        return 0.0
    return numel * binary_entropy(1.0 - nonzeros / numel) + nonzeros * value_bits


@dataclass(frozen=True)
class TensorSize:
    """One tensor's encoded payload against its dense size and the entropy bound."""

    name: str
    shape: tuple[int, ...]
    nonzeros: int
    value_bits: int
    encoding: str
    bytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.numel if self.numel else 0.0

    @property
    def dense_bytes(self) -> int:
        return self.numel * self.value_bits // 8

    @property
    def bound_bytes(self) -> float:
        return entropy_bound_bits(self.numel, self.nonzeros, self.value_bits) / 8


@dataclass(frozen=True)
class SizeReport:
    """Per-tensor sizes and totals; ``bits_per_weight`` = 8·bytes / entries."""

    tensors: tuple[TensorSize, ...]

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    @property
    def dense_bytes(self) -> int:
        return sum(t.dense_bytes for t in self.tensors)

    @property
    def bound_bytes(self) -> float:
        return sum(t.bound_bytes for t in self.tensors)

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)

    def to_dict(self) -> dict:
        rows = [
            {**asdict(t), "sparsity": t.sparsity, **_ratios(t.bytes, t.dense_bytes, t.bound_bytes, t.numel)}
            for t in self.tensors
        ]
        total = _ratios(self.bytes, self.dense_bytes, self.bound_bytes, self.numel)
        return {"tensors": rows, "total": {"bytes": self.bytes, "dense_bytes": self.dense_bytes, **total}}

    def to_text(self) -> str:
        """A fixed-width table: one row per tensor, then the total."""
        head = f"{'tensor':<28} {'encoding':<9} {'sparsity':>8} {'bytes':>10} {'bits/w':>7} {'bound':>7} "
        lines = [head + f"{'×bound':>7} {'÷dense':>7}"]
        for t in self.tensors:
            lines.append(_row(t.name, t.encoding, t.sparsity, t.bytes, t.dense_bytes, t.bound_bytes, t.numel))
        nonzeros = sum(t.nonzeros for t in self.tensors)
        sparsity = 1 - nonzeros / self.numel if self.numel else 0.0
        lines.append(_row("total", "", sparsity, self.bytes, self.dense_bytes, self.bound_bytes, self.numel))
        return "\n".join(lines)


def size_report(model: nn.Module | Mapping[str, torch.Tensor], encoding: str = "auto") -> SizeReport:
    """Encode every tensor of ``model``'s state_dict (or a mapping) and report its payload size."""
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    rows = []
    for name, tensor in state.items():
        encoded = encode(tensor, encoding)
        rows.append(
            TensorSize(
                name=name,
                shape=tuple(tensor.shape),
                nonzeros=int(nonzero_mask(tensor.detach().cpu()).sum()),
                value_bits=8 * tensor.element_size(),
                encoding=encoded.encoding,
                bytes=encoded.nbytes,
            )
        )
    return SizeReport(tuple(rows))


def _ratios(nbytes: int, dense: int, bound: float, numel: int) -> dict[str, float]:
    return {
        "bits_per_weight": 8 * nbytes / numel if numel else 0.0,
        "bound_bits_per_weight": 8 * bound / numel if numel else 0.0,
        "vs_bound": _ratio(nbytes, bound),  # ≥ 1; 1.10 = 10% above the bound
        "vs_dense": _ratio(dense, nbytes),  # compression: 8.0 = 8× smaller than dense
    }


def _ratio(a: float, b: float) -> float:
    """a / b, with 0 / 0 = 1 (an empty tensor costs what it should) and a / 0 = inf."""
    if b == 0:
        return 1.0 if a == 0 else math.inf
    return a / b


def _row(name: str, encoding: str, sparsity: float, nbytes: int, dense: int, bound: float, numel: int) -> str:
    r = _ratios(nbytes, dense, bound, numel)
    return (
        f"{name:<28} {encoding:<9} {sparsity:>8.4f} {nbytes:>10} {r['bits_per_weight']:>7.3f} "
        f"{r['bound_bits_per_weight']:>7.3f} {r['vs_bound']:>7.3f} {r['vs_dense']:>7.2f}"
    )
