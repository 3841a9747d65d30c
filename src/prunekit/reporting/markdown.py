"""A run record as Markdown, with its figures referenced as PNG files next to it."""

from __future__ import annotations

import html
import re

from ._tables import Table, layer_table, plan_table, recipe_text, run_facts, summary_table
from .plots import ReportPlot, ReportPlots
from .record import RunRecord


def render_markdown(record: RunRecord, plots: ReportPlots, plot_dir: str = "plots") -> str:
    """The Markdown report; each figure is an image link ``<plot_dir>/<name>.png``."""
    lines = [f"# {_text(record.title)}", ""]
    lines += [f"- **{_text(key)}**: {_text(value)}" for key, value in run_facts(record)]
    lines += ["", "## Summary", "", *_table(summary_table(record)), "", _image(plots.measures, plot_dir)]
    if plots.layers is not None:
        lines += ["", "## Sparsity per layer", "", _image(plots.layers, plot_dir), ""]
        lines += _table(layer_table(record.layers))
    if plots.plan is not None:
        lines += ["", "## Structured plan", "", _image(plots.plan, plot_dir), ""]
        lines += _table(plan_table(record.plan))
    if plots.curves:
        lines += ["", "## Curves"]
        for curve, plot in zip(record.curves, plots.curves, strict=True):
            lines += ["", f"### {_text(curve.title)}", "", _image(plot, plot_dir)]
    recipe = recipe_text(record)
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", recipe)), default=0))
    lines += ["", "## Recipe", "", f"{fence}json", recipe, fence]
    if record.notes:
        lines += ["", "## Notes", "", *(f"- {_text(note)}" for note in record.notes)]
    return "\n".join(lines) + "\n"


def _table(table: Table) -> list[str]:
    header, rows = table
    lines = [_row(header), "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    return lines + [_row(row) for row in rows]


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(_text(cell).replace("|", "\\|") for cell in cells) + " |"


def _image(plot: ReportPlot, plot_dir: str) -> str:
    alt = _text(plot.alt).replace("[", "(").replace("]", ")")
    return f"![{alt}]({plot_dir}/{plot.name}.png)"


def _text(text: str) -> str:
    """One line of text with markup characters made inert (``<script>`` stays text)."""
    return html.escape(" ".join(str(text).split()), quote=False)
