"""The figures of a report, as PNG bytes (matplotlib's Agg canvas; pyplot and GUIs are never touched).

Each figure is a plain :class:`matplotlib.figure.Figure` drawn on its own Agg canvas, so nothing is
registered with pyplot and nothing outlives the call. Sizes depend only on the data (fixed inches at a
fixed dpi), and the PNG carries no version metadata: the same record gives the same bytes. Per-layer
figures grow with the number of layers and use horizontal bars, so 50+ layer names stay readable.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._tables import compared_measures
from .record import ChannelChange, Curve, LayerSparsity, ModelMeasures, RunRecord

if TYPE_CHECKING:  # matplotlib itself is imported where a figure is made: every command-line call
    from matplotlib.axes import Axes  # imports this module, and matplotlib takes ~0.4 s
    from matplotlib.figure import Figure

DPI = 100
WIDTH_IN = 9.0
_MAX_HEIGHT_IN = 60.0
_NAME_CHARS = 48
_BEFORE, _AFTER, _REQUESTED = "#b8c4d6", "#2f6db5", "#c0392b"


@dataclass(frozen=True)
class ReportPlot:
    """One figure: ``name`` is its file stem (``plots/<name>.png``), ``alt`` describes it in words."""

    name: str
    alt: str
    png: bytes


@dataclass(frozen=True)
class ReportPlots:
    """The figures of one record; ``layers`` and ``plan`` are ``None`` when the record has no such data."""

    measures: ReportPlot
    layers: ReportPlot | None
    plan: ReportPlot | None
    curves: tuple[ReportPlot, ...]

    def all(self) -> tuple[ReportPlot, ...]:
        """Every figure, in report order."""
        return tuple(p for p in (self.measures, self.layers, self.plan, *self.curves) if p is not None)


def record_plots(record: RunRecord) -> ReportPlots:
    """Draw every figure a record calls for."""
    layers = plan = None
    if record.layers:
        alt = f"Sparsity of each of {len(record.layers)} layers, achieved (bars) and requested (marks)"
        layers = ReportPlot("layers", alt, plot_layer_sparsity(record.layers))
    if record.plan:
        alt = f"Channels of {len(record.plan)} structurally pruned layers, before and after"
        plan = ReportPlot("plan", alt, plot_plan(record.plan))
    curves = tuple(
        ReportPlot(f"curve-{i}-{_slug(c.title)}", f"{c.title}: {c.y_label} vs {c.x_label}", plot_curve(c))
        for i, c in enumerate(record.curves, start=1)
    )
    labels = ", ".join(m.label for m in compared_measures(record.before, record.after))
    measures = ReportPlot(
        "measures", f"Before vs after ({labels}), before = 100 %", plot_measures(record.before, record.after)
    )
    return ReportPlots(measures, layers, plan, curves)


def plot_measures(before: ModelMeasures, after: ModelMeasures) -> bytes:
    """Horizontal bars of each measure known on both sides, after as a percentage of before."""
    shown = [m for m in compared_measures(before, after) if m.before]
    fig, ax = _bar_figure(len(shown))
    rows = range(len(shown))
    after_pct = [100 * m.after / m.before for m in shown]
    ax.barh([r - 0.2 for r in rows], [100] * len(shown), height=0.4, color=_BEFORE, label="before")
    ax.barh([r + 0.2 for r in rows], after_pct, height=0.4, color=_AFTER, label="after")
    for row, pct, m in zip(rows, after_pct, shown, strict=True):
        ax.annotate(f" {m.show(m.after)} ({pct:.1f} %)", (pct, row + 0.2), va="center", fontsize=8)
    ax.set_yticks(list(rows), [m.label for m in shown])
    ax.set_xlim(0, 1.45 * max([100.0, *after_pct]))
    _finish_bars(ax, "after, as % of before")
    return png_bytes(fig)


def plot_layer_sparsity(layers: Sequence[LayerSparsity]) -> bytes:
    """Achieved sparsity per layer as bars, the requested sparsity (where given) as a mark on each."""
    fig, ax = _bar_figure(len(layers))
    rows = range(len(layers))
    achieved = [100 * layer.sparsity for layer in layers]
    ax.barh(list(rows), achieved, height=0.7, color=_AFTER, label="achieved")
    asked = [(row, 100 * lay.requested) for row, lay in enumerate(layers) if lay.requested is not None]
    if asked:
        ys, xs = zip(*asked, strict=True)
        ax.scatter(xs, ys, marker="|", s=160, linewidths=2, color=_REQUESTED, label="requested", zorder=3)
    ax.set_yticks(list(rows), [_short(layer.name) for layer in layers], fontsize=_tick_size(len(layers)))
    ax.set_xlim(0, 100)
    _finish_bars(ax, "sparsity (% of weights removed)")
    return png_bytes(fig)


def plot_plan(plan: Sequence[ChannelChange]) -> bytes:
    """Channels per structurally pruned layer: the kept ones drawn over the original count."""
    fig, ax = _bar_figure(len(plan))
    rows = list(range(len(plan)))
    ax.barh(rows, [c.before for c in plan], height=0.7, color=_BEFORE, label="before")
    ax.barh(rows, [c.after for c in plan], height=0.7, color=_AFTER, label="after")
    ax.set_yticks(rows, [_short(c.layer) for c in plan], fontsize=_tick_size(len(plan)))
    _finish_bars(ax, "channels")
    return png_bytes(fig)


def plot_curve(curve: Curve) -> bytes:
    """Every series of a curve as a line with markers; log x axis when ``curve.log_x``."""
    fig = new_figure(5.0)
    ax = fig.add_subplot()
    for name, points in curve.series.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        ax.plot(xs, ys, marker="o", markersize=4, label=name)
    if curve.log_x:
        ax.set_xscale("log")
    ax.set_title(curve.title)
    ax.set_xlabel(curve.x_label)
    ax.set_ylabel(curve.y_label)
    ax.grid(True, alpha=0.3)
    if curve.series:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def _bar_figure(rows: int) -> tuple[Figure, Axes]:
    """A figure tall enough for ``rows`` horizontal bars (about 0.22 inch each, capped)."""
    height = min(1.6 + 0.22 * max(rows, 3), _MAX_HEIGHT_IN)
    fig = new_figure(height)
    return fig, fig.add_subplot()


def _finish_bars(ax: Axes, x_label: str) -> None:
    ax.margins(y=0.01)
    ax.invert_yaxis()
    ax.set_xlabel(x_label)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, frameon=False)


def _tick_size(rows: int) -> float:
    """Label font size (points) that fits one bar's height, between 4 and 9."""
    height_pt = 72 * min(1.6 + 0.22 * max(rows, 3), _MAX_HEIGHT_IN) / max(rows, 1)
    return max(4.0, min(9.0, 0.6 * height_pt))


def _short(name: str) -> str:
    """Long layer names keep their start and end: ``encoder.layer.1…attention.query``."""
    if len(name) <= _NAME_CHARS:
        return name
    half = (_NAME_CHARS - 1) // 2
    return f"{name[:half]}…{name[-half:]}"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "curve"


def new_figure(height_in: float) -> Figure:
    """An empty report-width figure ``height_in`` inches tall, on no canvas yet."""
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")


def png_bytes(fig: Figure) -> bytes:
    """``fig`` drawn on its own Agg canvas as PNG bytes (no timestamp metadata: same figure, same bytes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer, metadata={"Software": None})
    return buffer.getvalue()
