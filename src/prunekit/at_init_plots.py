"""Summaries and matplotlib figures for lottery-ticket runs and layer-collapse sweeps (Agg backend)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .lottery import KINDS, LotteryResult

_LABELS = {
    "dense": "dense",
    "ticket": "winning ticket",
    "reinit": "random reinit",
    "random_prune": "random pruning",
}


def lottery_summary(results: Sequence[LotteryResult]) -> dict[str, Any]:
    """Mean and std over seeds of the test accuracy at the early-stopping iteration, per kind and round.

    Returns ``{"dense": {...}, "rounds": [{"round", "remaining", "ticket": {"mean", "std", "values"},
    ...}]}``; ``remaining`` is the mean fraction of prunable weights kept.
    """
    if not results:
        raise ValueError("results is empty: pass the LotteryResult of at least one seed")
    dense = [r.of_kind("dense")[0] for r in results]
    rounds = []
    for index in range(1, results[0].config.rounds + 1):
        row: dict[str, Any] = {"round": index}
        for kind in KINDS[1:]:
            runs = [r for result in results for r in result.of_kind(kind) if r.round == index]
            if runs:
                row["remaining"] = statistics.fmean(r.remaining for r in runs)
                row[kind] = _stats([r.test_at_early_stop for r in runs])
                row[kind]["early_stop_iteration"] = _stats([r.early_stop_iteration for r in runs])
        rounds.append(row)
    dense_row = _stats([r.test_at_early_stop for r in dense])
    dense_row["early_stop_iteration"] = _stats([r.early_stop_iteration for r in dense])
    return {"seeds": [r.config.seed for r in results], "dense": dense_row, "rounds": rounds}


def plot_lottery(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Test accuracy (mean ± std over seeds) vs weights remaining, log x axis, for every kind."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dense = summary["dense"]
    ax.axhline(100 * dense["mean"], color="black", linestyle="--", label=_LABELS["dense"])
    for kind in KINDS[1:]:
        rows = [r for r in summary["rounds"] if kind in r]
        if rows:
            x = [100 * r["remaining"] for r in rows]
            y = [100 * r[kind]["mean"] for r in rows]
            err = [100 * r[kind]["std"] for r in rows]
            ax.errorbar(x, y, yerr=err, marker="o", markersize=3, capsize=2, label=_LABELS[kind])
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy at early stopping (%)")
    ax.set_title(f"Lottery tickets, {len(summary['seeds'])} seed(s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_collapse(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], max_log10: float, path: str | Path
) -> Path:
    """log10 of the input→output path count vs log10 compression, one line per method.

    ``curves[method]`` lists points with ``target_log10_compression``, ``log10_paths`` and ``alive``;
    collapsed points (an empty layer or no path) are drawn as crosses below y = −0.5, one row per
    method. The dashed vertical line marks the maximal compression ``max_log10``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (method, points) in enumerate(curves.items()):
        alive = [p for p in points if p["alive"]]
        x = [p["target_log10_compression"] for p in alive]
        line = ax.plot(x, [p["log10_paths"] for p in alive], label=method)
        dead = [p["target_log10_compression"] for p in points if not p["alive"]]
        ax.scatter(dead, [-1.0 - 0.2 * index] * len(dead), marker="x", color=line[0].get_color())
    ax.axvline(max_log10, color="black", linestyle="--", label="maximal compression")
    ax.axhline(-0.5, color="grey", linewidth=0.5)
    ax.set_xlabel("compression (log10 dense ÷ remaining)")
    ax.set_ylabel("log10 input→output paths (× = collapsed)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_accuracy_vs_compression(
    rows: Mapping[str, Sequence[Mapping[str, Any]]], dense: float, path: str | Path
) -> Path:
    """Test accuracy (mean ± std) vs log10 compression, one line per method; dashed line = dense.

    ``rows[method]`` is a list of ``{"log10_compression", "mean", "std"}`` with accuracies in [0, 1].
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(100 * dense, color="black", linestyle="--", label="dense")
    for method, points in rows.items():
        x = [p["log10_compression"] for p in points]
        ax.errorbar(
            x,
            [100 * p["mean"] for p in points],
            yerr=[100 * p["std"] for p in points],
            marker="o",
            capsize=2,
            label=method,
        )
    ax.set_xlabel("compression (log10 dense ÷ remaining)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_layer_density(remaining: Mapping[str, float], path: str | Path) -> Path:
    """Bar chart of the fraction of weights kept in each layer (log scale; empty layers show as 0)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(remaining) + 1.5))
    names = list(remaining)
    ax.barh(names, [100 * remaining[n] for n in names])
    ax.set_xscale("symlog", linthresh=0.01)
    ax.invert_yaxis()
    ax.set_xlabel("weights kept (%)")
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)


def _stats(values: Sequence[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": list(values),
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path
