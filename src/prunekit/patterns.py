"""Sparsity patterns: which entries are pruned together.

- ``Element``: any single weight ("element" / "unstructured").
- ``Block(rows, cols)``: rectangular blocks of the weight viewed as (out, in·k…); a block's score is
  the mean of its entries ("4x4", "1x4").
- ``NM(n, m)``: semi-structured N:M — in every group of ``m`` consecutive weights along the input
  dimension, keep the ``n`` best ("2:4", "4:8"). Its sparsity is fixed at 1 − n/m.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Element:
    """Unstructured, element-wise pruning."""

    def __str__(self) -> str:
        return "element"

    def check(self, name: str, shape: torch.Size) -> None:
        """Every shape is compatible."""

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return scores

    def expand(self, keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return keep


@dataclass(frozen=True)
class Block:
    """``rows`` × ``cols`` blocks of the weight viewed as a matrix (out, in·kernel)."""

    rows: int
    cols: int

    def __post_init__(self) -> None:
        for field_name in ("rows", "cols"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"block {field_name} must be a positive int, got {value!r}")

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}"

    def check(self, name: str, shape: torch.Size) -> None:
        out, cols = _as_matrix_shape(shape)
        if out % self.rows or cols % self.cols:
            raise ValueError(
                f"block pattern {self} does not tile {name!r} of shape {tuple(shape)} (as a {out}×{cols} "
                f"matrix): both dimensions must be divisible by the block; pick another block size or add "
                f"{name!r} to ignore"
            )

    def unit_scores(self, scores: torch.Tensor) -> torch.Tensor:
        out, cols = _as_matrix_shape(scores.shape)
        blocks = scores.reshape(out // self.rows, self.rows, cols // self.cols, self.cols)
        return blocks.float().mean(dim=(1, 3))  # (out/rows, cols/cols)

    def expand(self, keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        full = keep.repeat_interleave(self.rows, 0).repeat_interleave(self.cols, 1)
        return full.reshape(shape)


@dataclass(frozen=True)
class NM:
    """Keep ``n`` of every ``m`` consecutive weights along the input dimension (dim 1)."""

    n: int
    m: int

    def __post_init__(self) -> None:
        for field_name in ("n", "m"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"N:M {field_name} must be a positive int, got {value!r}")
        if self.n >= self.m:
            raise ValueError(
                f"N:M pattern needs N < M (keep N of every M weights), got {self.n}:{self.m}; e.g. '2:4'"
            )

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        return 1.0 - self.n / self.m

    def check(self, name: str, shape: torch.Size) -> None:
        if len(shape) < 2:
            raise ValueError(
                f"N:M pattern {self} needs a weight with an input dimension; {name!r} has shape "
                f"{tuple(shape)}; add it to ignore"
            )
        if shape[1] % self.m:
            raise ValueError(
                f"N:M pattern {self} needs the input dimension of {name!r} (size {shape[1]}, shape "
                f"{tuple(shape)}) to be divisible by M={self.m}; add {name!r} to ignore or use another M"
            )

    def groups(self, tensor: torch.Tensor) -> torch.Tensor:
        """(out, in, *k) → (groups, m): consecutive input-dimension entries form a group."""
        return tensor.movedim(1, -1).reshape(-1, self.m)

    def ungroup(self, grouped: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        moved = (shape[0], *shape[2:], shape[1])
        return grouped.reshape(moved).movedim(-1, 1)

    def keep_mask(self, scores: torch.Tensor) -> torch.Tensor:
        """Keep the n highest-scored entries of each group; ties prune the earlier position."""
        grouped = self.groups(scores.float())
        ranks = torch.sort(grouped, dim=1, stable=True).indices  # ascending: first m-n are pruned
        keep = torch.ones_like(grouped, dtype=torch.bool)
        keep.scatter_(1, ranks[:, : self.m - self.n], False)
        return self.ungroup(keep, scores.shape)


Pattern = Element | Block | NM

_NM_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_BLOCK_RE = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$")


def parse_pattern(spec: str | Pattern) -> Pattern:
    """Parse ``"element"`` (or ``"unstructured"``), an N:M spec like ``"2:4"`` or a block like ``"4x4"``."""
    if isinstance(spec, (Element, Block, NM)):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"pattern must be a str such as 'element', '2:4' or '4x4', got {type(spec).__name__}")
    if spec.strip().lower() in ("element", "unstructured"):
        return Element()
    if match := _NM_RE.match(spec):
        return NM(int(match[1]), int(match[2]))
    if match := _BLOCK_RE.match(spec):
        return Block(int(match[1]), int(match[2]))
    raise ValueError(
        f"unknown pattern {spec!r}; use 'element', an N:M pattern like '2:4', or a block like '4x4'"
    )


def _as_matrix_shape(shape: torch.Size) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    return shape[0], math.prod(shape[1:])
