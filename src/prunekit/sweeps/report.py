"""Write a sweep's tables (CSV, Markdown, JSON), its plot (PNG) and one self-contained HTML page."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..reporting.html import CSP
from ..reporting.plots import new_figure, png_bytes
from .grid import value_text
from .table import SEED, Table, mean_std, metric_names, show

# grid fields that set how much is pruned: the plot's x axis (achieved sparsity) already shows them
AMOUNT_FIELDS = ("sparsity", "ratio", "compression", "pattern", "prune_rate", "rounds", "steps")
PLOT = "sweep.png"
_CSS = """
body { font: 15px/1.5 system-ui, sans-serif; color: #1d2330; max-width: 1200px; margin: 2rem auto;
       padding: 0 1rem; }
h1 { border-bottom: 2px solid #2f6db5; } h2 { color: #2f6db5; margin-top: 2rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .85rem; }
th, td { padding: .2rem .5rem; border-bottom: 1px solid #dde3ec; text-align: right; }
th { background: #eef2f8; } tr.failed td { color: #c0392b; } img { max-width: 100%; }
"""


def plot_metric(keys: Sequence[str], agg: Table, metric: str) -> bytes:
    """``metric`` (mean, error bars = std over seeds) vs achieved sparsity, one line per method."""
    series_keys = [k for k in keys if k != SEED and k.split(".")[-1] not in AMOUNT_FIELDS]
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for row in agg.rows:
        x, y = row.get("sparsity_mean"), row.get(f"{metric}_mean")
        if x is None or y is None:
            continue
        label = ", ".join(f"{k}={value_text(row[k])}" for k in series_keys) or metric
        lines.setdefault(label, []).append((100 * x, y, row.get(f"{metric}_std") or 0.0))
    fig = new_figure(5.0)
    ax = fig.add_subplot()
    for label, points in lines.items():
        xs, ys, errs = zip(*sorted(points), strict=True)
        ax.errorbar(xs, ys, yerr=errs, marker="o", markersize=4, capsize=3, label=label)
    ax.set_xlabel("achieved sparsity (% of weights removed)")
    ax.set_ylabel(f"{metric} after pruning (mean ± std over seeds)")
    ax.set_title(f"{metric} vs sparsity")
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def primary_metric(runs: Table, keys: Sequence[str]) -> str | None:
    """``accuracy`` if the runs report it, else their first metric (``None`` when all runs failed)."""
    metrics = metric_names(runs.columns, keys)
    return "accuracy" if "accuracy" in metrics else (metrics[0] if metrics else None)


def write_tables(folder: Path, title: str, keys: Sequence[str], runs: Table, agg: Table) -> dict[str, Path]:
    """``sweep.csv`` / ``.md`` / ``.json`` / ``.html`` (+ ``sweep.png``) in ``folder``; returns the paths."""
    paths = {kind: folder / f"sweep.{kind}" for kind in ("csv", "md", "json", "html")}
    paths["csv"].write_text(runs.to_csv(), encoding="utf-8")
    payload = {"keys": list(keys), "runs": list(runs.rows), "aggregate": list(agg.rows)}
    paths["json"].write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    metric = primary_metric(runs, keys)
    png = plot_metric(keys, agg, metric) if metric else None
    if png is not None:
        paths["png"] = folder / PLOT
        paths["png"].write_bytes(png)
    figure = f"![{metric} vs sparsity]({PLOT})\n\n" if png else ""
    summary = mean_std(keys, agg)
    markdown = [f"# {title}\n", "## Mean ± std over seeds\n", figure + summary.to_markdown(), "## Runs\n"]
    paths["md"].write_text("\n".join([*markdown, runs.to_markdown()]), encoding="utf-8")
    paths["html"].write_text(render_html(title, runs, summary, png, folder), encoding="utf-8")
    return paths


def render_html(title: str, runs: Table, summary: Table, png: bytes | None, folder: Path) -> str:
    """One page: the plot as a ``data:`` PNG, the aggregated and per-run tables, links to run reports."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        "<h2>Mean ± std over seeds</h2>",
    ]
    if png is not None:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="metric vs sparsity"></figure>')
    parts += [_html_table(summary, None), "<h2>Runs</h2>", _html_table(runs, folder), "</body></html>"]
    return "\n".join(parts) + "\n"


def _html_table(table: Table, folder: Path | None) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = "".join(f"<td>{_html_cell(c, row[c], folder)}</td>" for c in table.columns)
        failed = ' class="failed"' if row.get("status") == "failed" else ""
        body.append(f"<tr{failed}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_cell(column: str, value: Any, folder: Path | None) -> str:
    """A cell; a run id links to that run's report (HTML if written, else JSON)."""
    text = escape(show(value))
    if column != "run" or folder is None:
        return text
    for name in ("report.html", "report.json"):
        if (folder / "runs" / str(value) / name).is_file():
            return f'<a href="runs/{escape(str(value))}/{name}">{text}</a>'
    return text
