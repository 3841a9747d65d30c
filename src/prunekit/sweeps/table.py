"""The sweep's results as one table: a row per run, and means ± std over seeds per other grid point.

A run's row holds its grid values, ``status`` (``ok`` / ``failed``), the quality metrics after
pruning (``accuracy`` …) and before (``accuracy_before`` …), ``params``, ``nonzeros``, ``macs``,
``sparse_macs``, ``sparsity`` (achieved: removed fraction of the pruned layers' weights when the run
reports layers, else removed fraction of all parameters against the dense model), ``wall_s`` and
``error``. Every number is read from the run's own record, so it equals its ``report.json``.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .grid import Run, value_text

SEED = "seed"
MEASURES = ("params", "nonzeros", "macs", "sparse_macs", "sparsity", "wall_s")
Row = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """Rows of plain values under ``columns`` (the same keys in every row, ``None`` where unknown)."""

    columns: tuple[str, ...]
    rows: tuple[Row, ...]

    def to_csv(self) -> str:
        """CSV text; floats keep every digit (``repr``), unknown values are empty cells."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if row[c] is None else _csv_cell(row[c]) for c in self.columns])
        return buffer.getvalue()

    def to_markdown(self) -> str:
        """A Markdown pipe table with rounded numbers."""
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        for row in self.rows:
            cells = (show(row[c]).replace("|", "\\|") for c in self.columns)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def run_row(run: Run, record: Mapping[str, Any] | None, error: str | None) -> Row:
    """One run's row from its ``RunRecord.to_dict()`` (``None`` for a failed run)."""
    row: Row = {"run": run.run_id, **dict(run.values), "status": "ok" if record is not None else "failed"}
    if record is not None:
        before, after = record["before"], record["after"]
        row.update(after["metrics"])
        row.update({f"{name}_before": value for name, value in before["metrics"].items()})
        row.update({key: after[key] for key in ("params", "nonzeros", "macs", "sparse_macs")})
        row["sparsity"] = achieved_sparsity(record)
        row["wall_s"] = record.get("wall_s")
    row["error"] = error
    return row


def achieved_sparsity(record: Mapping[str, Any]) -> float:
    """Removed fraction of the pruned layers' weights, else of all parameters of the dense model."""
    layers = record.get("layers") or ()
    params = sum(layer["params"] for layer in layers)
    if params:
        return 1.0 - sum(layer["nonzeros"] for layer in layers) / params
    dense = record["before"]["params"]
    return 1.0 - record["after"]["nonzeros"] / dense if dense else 0.0


def runs_table(keys: Sequence[str], rows: Sequence[Row]) -> Table:
    """The per-run table: run id, grid values, status, metrics (after, then before), measures, error."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    befores = metric_names(names, keys, before=True)
    columns = ("run", *keys, "status", *metric_names(names, keys), *befores, *MEASURES, "error")
    return Table(columns, tuple({c: row.get(c) for c in columns} for row in rows))


def metric_names(columns: Sequence[str], keys: Sequence[str], before: bool = False) -> list[str]:
    """Quality metrics among ``columns``: after pruning (``accuracy``) or before (``accuracy_before``)."""
    fixed = {"run", "status", "error", *keys, *MEASURES}
    return [c for c in columns if c not in fixed and c.endswith("_before") == before]


def aggregate(keys: Sequence[str], table: Table) -> Table:
    """Mean and sample std over seeds of every number, per combination of the other grid values."""
    group_keys = tuple(k for k in keys if k != SEED)
    numbers = [c for c in table.columns if c not in ("run", *keys, "status", "error")]
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in table.rows:
        groups.setdefault(tuple(value_text(row[k]) for k in group_keys), []).append(row)
    columns = (*group_keys, "runs", "failed", *(f"{c}_{s}" for c in numbers for s in ("mean", "std")))
    out = []
    for rows in groups.values():
        ok = [r for r in rows if r["status"] == "ok"]
        agg: Row = {k: rows[0][k] for k in group_keys}
        agg.update(runs=len(ok), failed=len(rows) - len(ok))
        for column in numbers:
            values = [float(r[column]) for r in ok if r[column] is not None]
            agg[f"{column}_mean"] = statistics.fmean(values) if values else None
            agg[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        out.append(agg)
    return Table(columns, tuple(out))


def show(value: Any) -> str:
    """A cell for people: ``93.25``, ``0.9``, ``1,234,567``, ``-`` for unknown."""
    if value is None:
        return "-"
    if isinstance(value, (bool, str)):
        return value_text(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value_text(value)


def mean_std(keys: Sequence[str], agg: Table) -> Table:
    """The aggregated table for people: one ``mean ± std`` cell per number (just the mean for one run)."""
    group_keys = [k for k in keys if k != SEED]
    numbers = [c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")]
    rows = []
    for row in agg.rows:
        out = {k: show(row[k]) for k in (*group_keys, "runs", "failed")}
        for name in numbers:
            mean, std = row[f"{name}_mean"], row[f"{name}_std"]
            out[name] = show(mean) if row["runs"] < 2 or mean is None else f"{show(mean)} ± {show(std)}"
        rows.append(out)
    return Table((*group_keys, "runs", "failed", *numbers), tuple(rows))


def _csv_cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else value_text(value)
