"""A run record as one self-contained HTML page: inline CSS, figures as ``data:`` PNGs, no script.

A Content-Security-Policy meta tag allows only inline styles and ``data:`` images, so a browser
refuses to fetch anything else even if some text tried to.
"""

from __future__ import annotations

import base64
from html import escape

from ._tables import Table, layer_table, plan_table, recipe_text, run_facts, summary_table
from .plots import ReportPlot, ReportPlots
from .record import RunRecord

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330;
       max-width: 1000px; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #2f6db5; padding-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; color: #2f6db5; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #dde3ec; }
th { background: #eef2f8; text-align: left; }
td:not(:first-child), th:not(:first-child) { text-align: right; }
tr:nth-child(even) td { background: #f8fafc; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: .85rem; color: #5a6475; }
pre { background: #f4f6fa; padding: .8rem; overflow-x: auto; font-size: .85rem; }
"""


def render_html(record: RunRecord, plots: ReportPlots) -> str:
    """The whole page as a string; every piece of record text is HTML-escaped."""
    title = escape(record.title)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
        _facts(record),
        "<h2>Summary</h2>",
        _table(summary_table(record)),
        _figure(plots.measures),
    ]
    if plots.layers is not None:
        parts += ["<h2>Sparsity per layer</h2>", _figure(plots.layers), _table(layer_table(record.layers))]
    if plots.plan is not None:
        parts += ["<h2>Structured plan</h2>", _figure(plots.plan), _table(plan_table(record.plan))]
    if plots.curves:
        parts.append("<h2>Curves</h2>")
        parts += [_figure(plot) for plot in plots.curves]
    parts += ["<h2>Recipe</h2>", f"<pre>{escape(recipe_text(record))}</pre>"]
    if record.notes:
        notes = "".join(f"<li>{escape(note)}</li>" for note in record.notes)
        parts += ["<h2>Notes</h2>", f"<ul>{notes}</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _facts(record: RunRecord) -> str:
    items = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in run_facts(record))
    return f'<dl class="facts">{items}</dl>'


def _table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(plot: ReportPlot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    alt = escape(plot.alt)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
    )
