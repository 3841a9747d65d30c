"""Write a run record as ``report.json``, ``report.md`` (+ ``plots/*.png``) and ``report.html``."""

from __future__ import annotations

import json
from pathlib import Path

from .html import render_html
from .markdown import render_markdown
from .plots import record_plots
from .record import RunRecord

PLOT_DIR = "plots"


def write_reports(record: RunRecord, folder: str | Path) -> dict[str, Path]:
    """Write every report format of ``record`` into ``folder`` (created if missing).

    Returns the paths by kind: ``json``, ``markdown``, ``html`` and ``plots`` (the folder of PNG
    figures that ``report.md`` links to; ``report.html`` embeds the same figures and stands alone).
    """
    if not isinstance(record, RunRecord):
        raise TypeError(f"write_reports needs a RunRecord as `record`, got {type(record).__name__}")
    folder = Path(folder)
    plot_folder = folder / PLOT_DIR
    plot_folder.mkdir(parents=True, exist_ok=True)
    plots = record_plots(record)
    for plot in plots.all():
        (plot_folder / f"{plot.name}.png").write_bytes(plot.png)
    paths = {
        "json": folder / "report.json",
        "markdown": folder / "report.md",
        "html": folder / "report.html",
        "plots": plot_folder,
    }
    paths["json"].write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(record, plots, PLOT_DIR), encoding="utf-8")
    paths["html"].write_text(render_html(record, plots), encoding="utf-8")
    return paths
