"""Reports of pruning runs: a frozen :class:`RunRecord` rendered as JSON, Markdown and HTML."""

from .html import render_html
from .markdown import render_markdown
from .plots import (
    ReportPlot,
    ReportPlots,
    plot_curve,
    plot_layer_sparsity,
    plot_measures,
    plot_plan,
    record_plots,
)
from .record import FAMILIES, ChannelChange, Curve, LayerSparsity, ModelMeasures, RunRecord
from .write import write_reports

__all__ = [
    "FAMILIES",
    "ChannelChange",
    "Curve",
    "LayerSparsity",
    "ModelMeasures",
    "ReportPlot",
    "ReportPlots",
    "RunRecord",
    "plot_curve",
    "plot_layer_sparsity",
    "plot_measures",
    "plot_plan",
    "record_plots",
    "render_html",
    "render_markdown",
    "write_reports",
]
