"""Layer-collapse analysis: empty layers, input→output paths, and how far a method can compress.

A pruned network has *collapsed* when a prunable layer has lost every weight or when no path of
nonzero weights connects the input to the output (Tanaka et al., NeurIPS 2020, "layer collapse").

Paths are counted by running the network on the mask itself: every prunable weight is replaced by its
0/1 mask (weights without a mask by 1), every other multiplicative parameter by 1, biases and shifts by
0, BatchNorm by the identity, on one all-ones input, in float64 and eval mode. The sum of the outputs
is P = 1ᵀ(∏_l M_l)1. For an MLP that is exactly the number of input→output paths; through convolutions
it counts every (input position, output position) connection, average pooling divides by the window
size and max pooling follows one position per window, so P is a weighted count, but in every case
P > 0 exactly when at least one path of kept weights remains.

Compression = dense ÷ remaining prunable weights, reported as log10 (the SynFlow paper's 10^x). The
*maximal compression* is N / L for N prunable weights in L prunable tensors: a network without
collapse keeps at least one weight per layer, and one weight per layer along a single path suffices
(in the sequential and residual zoo models every layer lies on some input→output path).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .at_init import iterative_masks
from .masks import Masks
from .scoring.synflow import input_shape_from_first_linear, linearised_values
from .selection import select


@dataclass(frozen=True)
class CollapseReport:
    """Collapse diagnostics of one set of masks (``log10_paths`` is −inf when no path remains)."""

    layers: tuple[str, ...]
    empty_layers: tuple[str, ...]
    log10_paths: float
    kept: int
    total: int
    log10_compression: float
    log10_max_compression: float

    @property
    def has_path(self) -> bool:
        return self.log10_paths > -math.inf

    @property
    def collapsed(self) -> bool:
        return bool(self.empty_layers) or not self.has_path

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (infinities as ``None``) with ``has_path`` and ``collapsed``."""
        out = {k: _finite(v) for k, v in dataclasses.asdict(self).items()}
        out.update(layers=list(self.layers), empty_layers=list(self.empty_layers))
        return {**out, "has_path": self.has_path, "collapsed": self.collapsed}

    def to_text(self) -> str:
        paths = f"10^{self.log10_paths:.2f}" if self.has_path else "none"
        return "\n".join(
            [
                f"layer collapse: {'COLLAPSED' if self.collapsed else 'no'}",
                f"empty layers: {', '.join(self.empty_layers) or 'none'} (of {len(self.layers)})",
                f"input→output paths: {paths}",
                f"compression: 10^{_fmt(self.log10_compression)} "
                f"({self.kept:,} of {self.total:,} weights kept); "
                f"maximal without collapse: 10^{self.log10_max_compression:.2f}",
            ]
        )


def analyse_collapse(
    model: nn.Module, masks: Masks, example_inputs: torch.Tensor | None = None
) -> CollapseReport:
    """Empty layers, log10 of the number of input→output paths and the compression of ``masks``.

    ``example_inputs`` fixes the input shape (only its shape is used; required unless the model starts
    with ``nn.Linear``). The model is not changed (its train/eval modes are restored).
    """
    if not isinstance(masks, Masks):
        raise TypeError(f"masks must be a prunekit.Masks, got {type(masks).__name__}")
    masks.validate(model)
    kept, total = masks.kept, masks.numel
    return CollapseReport(
        layers=tuple(masks),
        empty_layers=tuple(masks.empty_layers()),
        log10_paths=log10_paths(model, masks, example_inputs),
        kept=kept,
        total=total,
        log10_compression=math.log10(total / kept) if kept else math.inf,
        log10_max_compression=log10_max_compression(masks),
    )


def log10_paths(model: nn.Module, masks: Masks, example_inputs: torch.Tensor | None = None) -> float:
    """log10 P, P = 1ᵀ(∏ M)1 computed in float64 on the mask network (−inf when P = 0)."""
    replace = {n: torch.ones_like(p) for n, p in model.named_parameters() if not n.endswith("bias")}
    replace.update({n: m.to(replace[n].device) for n, m in masks.items()})
    values = linearised_values(model, replace, batchnorm="identity")
    shape = input_shape_from_first_linear(model) if example_inputs is None else (1, *example_inputs.shape[1:])
    ones = torch.ones(shape, dtype=torch.float64, device=next(iter(values.values())).device)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            paths = float(functional_call(model, values, (ones,)).sum())
    finally:
        for module, mode in modes:
            module.training = mode
    if math.isinf(paths):
        raise OverflowError("the path count overflows float64 (> 1.8e308); analyse a shallower model")
    return math.log10(paths) if paths > 0 else -math.inf


def log10_max_compression(masks: Masks) -> float:
    """log10(N / L): N prunable weights, L prunable tensors (one weight per layer must remain)."""
    layers = [m for m in masks.values() if m.numel() > 0]
    return math.log10(sum(m.numel() for m in layers) / len(layers))


@dataclass(frozen=True)
class CollapseCurve:
    """A sweep over compressions 10^x: one :class:`CollapseReport` per grid point.

    In :meth:`to_dict` each point holds the grid value ``target_log10_compression`` and the report
    (whose ``log10_compression`` is the achieved one: counts are whole weights).
    ``first_collapse`` is the smallest x at which the network collapsed (``None`` if never);
    ``max_alive`` the largest x before it (the compression reachable without collapse);
    ``layer_empties_at[name]`` the smallest x at which that layer is empty (``None`` if never).
    """

    method: str
    log10_compressions: tuple[float, ...]
    reports: tuple[CollapseReport, ...]

    @property
    def first_collapse(self) -> float | None:
        return next((x for x, r in self._points() if r.collapsed), None)

    @property
    def max_alive(self) -> float | None:
        alive = None
        for x, report in self._points():
            if report.collapsed:
                break
            alive = x
        return alive

    @property
    def layer_empties_at(self) -> dict[str, float | None]:
        first: dict[str, float | None] = dict.fromkeys(self.reports[0].layers)
        for x, report in self._points():
            for name in report.empty_layers:
                first[name] = x if first[name] is None else first[name]
        return first

    def to_dict(self) -> dict[str, Any]:
        points = [{"target_log10_compression": x, **r.to_dict()} for x, r in self._points()]
        for point in points:
            point["alive"] = not point["collapsed"]
            del point["layers"]
        return {
            "method": self.method,
            "first_collapse": self.first_collapse,
            "max_alive": self.max_alive,
            "log10_max_compression": self.reports[0].log10_max_compression,
            "layer_empties_at": self.layer_empties_at,
            "points": points,
        }

    def _points(self) -> list[tuple[float, CollapseReport]]:
        return list(zip(self.log10_compressions, self.reports, strict=True))


def collapse_curve(
    model: nn.Module,
    scores_or_method: str | Mapping[str, torch.Tensor],
    log10_compressions: Sequence[float],
    *,
    iterations: int = 1,
    example_inputs: torch.Tensor | None = None,
    label: str | None = None,
    **kwargs: Any,
) -> CollapseCurve:
    """Prune to each compression 10^x and analyse the masks.

    ``scores_or_method`` is a scorer name (masks from :func:`iterative_masks` with ``iterations``
    rounds and ``kwargs``, e.g. ``data``, ``scope``, ``seed``) or precomputed scores (one-shot
    :func:`prunekit.select` at each point, ``scope`` from ``kwargs``). Collapse is analysed, not warned.
    """
    grid = _check_grid(log10_compressions)
    masks_at: Callable[[float], Masks]
    if isinstance(scores_or_method, str):
        method = scores_or_method

        def masks_at(sparsity: float) -> Masks:
            return iterative_masks(model, method, sparsity, iterations, on_collapse="ignore", **kwargs)

        label = label or (method if iterations == 1 else f"{method}-{iterations}")
    elif isinstance(scores_or_method, Mapping):
        scores = scores_or_method

        def masks_at(sparsity: float) -> Masks:
            return select(scores, sparsity, scope=kwargs.get("scope", "global"), on_collapse="ignore")

        label = label or "scores"
    else:
        raise TypeError(
            "scores_or_method must be a scorer name or a mapping name → scores, "
            f"got {type(scores_or_method).__name__}"
        )
    reports = tuple(analyse_collapse(model, masks_at(1.0 - 10.0**-x), example_inputs) for x in grid)
    return CollapseCurve(method=label, log10_compressions=grid, reports=reports)


def compression_grid(stop: float, step: float = 0.25) -> tuple[float, ...]:
    """0, step, 2·step, … up to ``stop`` (inclusive when on the grid), rounded to 6 decimals."""
    if not step > 0 or not stop >= 0:
        raise ValueError(
            f"need step > 0 and stop >= 0 (log10 compressions), got step={step!r}, stop={stop!r}"
        )
    return tuple(round(i * step, 6) for i in range(math.floor(stop / step + 1e-9) + 1))


def _check_grid(values: Sequence[float]) -> tuple[float, ...]:
    grid = tuple(float(v) for v in values)
    if not grid or any(not v >= 0 for v in grid) or list(grid) != sorted(grid):
        raise ValueError(
            "log10_compressions must be a non-empty increasing sequence of numbers >= 0 (x in 10^x), "
            f"got {values!r}"
        )
    return grid


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and math.isinf(value) else value


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"
