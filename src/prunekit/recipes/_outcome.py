"""What a family's run hands back to the runner."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..masks import Masks
from ..reporting import ChannelChange, Curve, LayerSparsity


@dataclass
class Outcome:
    """What a family's run produced; ``reference`` is the dense model to compare with (default: the input).

    ``metrics`` replaces the evaluation of ``model`` when the run measured it itself (e.g. with
    activation pruning active); ``layers`` replaces the per-layer weight sparsity read from ``masks``;
    ``thresholds`` are per-layer activation thresholds, exported as JSON.
    """

    model: nn.Module
    masks: Masks | None = None
    reference: nn.Module | None = None
    plan: tuple[ChannelChange, ...] = ()
    curves: list[Curve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, float] | None = None
    layers: tuple[LayerSparsity, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)


def curve(
    title: str, x: str, y: str, series: dict[str, list[tuple[float, float]]], log_x: bool = False
) -> Curve:
    """A :class:`Curve` from lists of points."""
    return Curve(title, x, y, {k: tuple(v) for k, v in series.items()}, log_x)
