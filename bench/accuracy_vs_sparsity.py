"""Accuracy vs sparsity: every criterion, global and per-layer, LeNet-300-100 on MNIST, 3 seeds.

What is measured:

* Per seed s ∈ {0, 1, 2}: a dense LeNet-300-100 trained on the MNIST training split (50,000 images)
  with the demo's recipe (Adam, lr 1e-3, batch 128, 8 epochs, cosine to 0, ``torch.manual_seed(s)``),
  cached in ``prunekit.demo.cache_dir()`` under the demo's file name, so ``prunekit demo`` and this
  benchmark share the dense models. Accuracy is top-1 on the 10,000 MNIST test images.
* For every criterion (magnitude, random, taylor, obd, lamp) × scope (global, layer) × sparsity
  (50/80/90/95/98%): ``compute_masks(dense, criterion, sparsity, scope=..., seed=s,
  on_collapse="ignore")``; data-driven criteria read the same fixed calibration batches of 128
  training images per seed (taylor 8 batches, obd 4 batches: per-sample gradients). The masks are
  applied to a copy of the dense model, which is evaluated right after pruning ("no FT") and after
  the fine-tune budget: ``train(pruned, loader, epochs=1, lr=3e-4, masks=masks, seed=s)`` — one
  epoch of masked Adam (391 steps of batch 128, cosine to 0), pruned weights kept at exactly zero.
* Reported: mean ± sample standard deviation (n − 1) over the seeds, in %; layers that lost every
  weight (collapse) and output units left without any path from the input.

Usage::

    python bench/accuracy_vs_sparsity.py            # full: writes bench/results/accuracy_vs_sparsity.*
    python bench/accuracy_vs_sparsity.py --quick    # ≤ 60 s: 1 seed, 2 sparsities, 3 criteria, 100 FT steps
    python bench/accuracy_vs_sparsity.py --json     # also print one JSON summary as the last line

Threads: one by default. On a shared 2-core machine two intra-op threads ran a LeNet epoch 20-30×
slower than one (OpenMP threads spin-waiting for a core another process holds); ``--threads`` changes it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prunekit import SCORERS, Masks, compute_masks
from prunekit.checkpoints import load_weights, save_weights
from prunekit.data import load_mnist, make_loader, subset
from prunekit.demo import DemoConfig, cache_dir
from prunekit.training import evaluate, train
from prunekit.zoo import lenet_300_100

CRITERIA = ("magnitude", "random", "taylor", "obd", "lamp")  # the criteria; at-init methods elsewhere
SCOPES = ("global", "layer")
CALIBRATION_BATCHES = {"taylor": 8, "obd": 4}  # batches of BATCH training images; others read no data
BATCH = DemoConfig.batch_size
DENSE_LR = DemoConfig.lr
FINETUNE_LR = DemoConfig.finetune_lr
RESULTS = Path(__file__).resolve().parent / "results"
NAME = "accuracy_vs_sparsity"


@dataclass(frozen=True)
class Plan:
    """What one run covers; ``finetune_steps=None`` means one full epoch of the training split."""

    seeds: tuple[int, ...] = (0, 1, 2)
    sparsities: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.98)
    criteria: tuple[str, ...] = CRITERIA
    dense_epochs: int = DemoConfig.epochs
    finetune_steps: int | None = None
    quick: bool = False


QUICK = Plan(
    seeds=(0,),
    sparsities=(0.9, 0.98),
    criteria=("magnitude", "random", "taylor"),
    finetune_steps=100,
    quick=True,
)


# -- the dense model ---------------------------------------------------------------------------
def dense_path(epochs: int, seed: int) -> Path:
    """The cache file ``prunekit demo`` uses for the same recipe (see ``prunekit.demo``)."""
    key = f"lenet_300_100-mnist-e{epochs}-lr{DENSE_LR:g}-b{BATCH}-s{seed}"
    return cache_dir() / f"{key}-torch{torch.__version__}.safetensors"


def dense_model(epochs: int, seed: int, train_set) -> tuple[torch.nn.Module, bool]:
    """The trained dense LeNet-300-100 for ``seed`` (from the cache when present) and whether cached."""
    torch.manual_seed(seed)
    model = lenet_300_100()
    path = dense_path(epochs, seed)
    if path.is_file():
        try:
            return load_weights(model, path), True
        except ValueError:
            path.unlink()  # a corrupt cache entry is rebuilt, never trusted
    loader = make_loader(train_set, BATCH, shuffle=True, seed=seed)
    train(model, loader, epochs=epochs, lr=DENSE_LR, seed=seed, progress=False)
    save_weights(model, path)
    return model, False


def quick_dense_epochs(seed: int) -> int:
    """--quick reuses a cached full dense model when there is one, else trains (and caches) one epoch."""
    return DemoConfig.epochs if dense_path(DemoConfig.epochs, seed).is_file() else 1


# -- one pruning run ---------------------------------------------------------------------------
def reachable_outputs(masks: Masks) -> int:
    """Output units with at least one unpruned path from an input pixel (LeNet's chain of Linears)."""
    alive = None
    for keep in masks.values():  # (out, in), in forward order: fc1, fc2, fc3
        keep = keep.float()
        alive = keep.sum(1) > 0 if alive is None else (keep @ alive.float()) > 0
    return int(alive.sum())


def finetune_loader(train_set, steps: int | None, seed: int):
    """A fresh loader per fine-tune, so every run sees the same batches in the same order."""
    data = train_set if steps is None else subset(train_set, steps * BATCH, seed)
    return make_loader(data, BATCH, shuffle=True, seed=seed)


def prune_and_finetune(dense, criterion, scope, sparsity, seed, calibration, train_set, test_loader, plan):
    start = time.perf_counter()
    masks = compute_masks(
        dense,
        criterion,
        sparsity,
        scope=scope,
        data=calibration,
        max_batches=CALIBRATION_BATCHES.get(criterion),
        seed=seed,
        on_collapse="ignore",
    )
    scored = time.perf_counter()
    pruned = masks.apply(dense)  # a copy: the dense model is reused by every run
    acc_pruned = evaluate(pruned, test_loader)
    loader = finetune_loader(train_set, plan.finetune_steps, seed)
    history = train(pruned, loader, epochs=1, lr=FINETUNE_LR, masks=masks, seed=seed, progress=False)
    tuned = time.perf_counter()
    params = dict(pruned.named_parameters())
    row = {
        "seed": seed,
        "criterion": criterion,
        "scope": scope,
        "sparsity": sparsity,
        "achieved_sparsity": masks.sparsity,
        "layer_sparsity": {n: round(v, 5) for n, v in masks.layer_sparsity().items()},
        "collapsed_layers": masks.empty_layers(),
        "reachable_outputs": reachable_outputs(masks),
        "acc_pruned": acc_pruned,
        "acc_finetuned": evaluate(pruned, test_loader),
        "finetune_steps": history.steps,
        "pruned_stay_zero": all(bool((params[n][~m] == 0).all()) for n, m in masks.items()),
        "score_s": round(scored - start, 3),
        "finetune_s": round(tuned - scored, 3),
    }
    return row, masks


def run_seed(seed: int, plan: Plan, train_set, test_loader) -> dict:
    epochs = quick_dense_epochs(seed) if plan.quick else plan.dense_epochs
    start = time.perf_counter()
    dense, cached = dense_model(epochs, seed, train_set)
    dense_s = time.perf_counter() - start
    calibration = list(itertools.islice(make_loader(train_set, BATCH, shuffle=True, seed=seed), 8))
    result = {"seed": seed, "dense_epochs": epochs, "dense_cached": cached, "dense_s": round(dense_s, 2)}
    result["dense_accuracy"] = evaluate(dense, test_loader)
    log(f"seed {seed}: dense {100 * result['dense_accuracy']:.2f}% ({'cached' if cached else 'trained'})")
    rows, layer_magnitude, lamp_equal = [], {}, []
    for criterion, scope, sparsity in itertools.product(plan.criteria, SCOPES, plan.sparsities):
        row, masks = prune_and_finetune(
            dense, criterion, scope, sparsity, seed, calibration, train_set, test_loader, plan
        )
        rows.append(row)
        if scope == "layer" and criterion == "magnitude":
            layer_magnitude[sparsity] = masks
        if scope == "layer" and criterion == "lamp" and sparsity in layer_magnitude:
            lamp_equal.append(masks == layer_magnitude[sparsity])
        log(
            f"  {criterion:>9} {scope:>6} {sparsity:.2f}: {100 * row['acc_pruned']:6.2f}% → "
            f"{100 * row['acc_finetuned']:6.2f}% (score {row['score_s']:.2f} s, FT {row['finetune_s']:.1f} s)"
        )
    result["runs"] = rows
    result["lamp_layer_masks_equal_magnitude_layer"] = all(lamp_equal) if lamp_equal else None
    return result


# -- aggregation -------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(seeds: list[dict], plan: Plan) -> dict:
    runs = [r for s in seeds for r in s["runs"]]
    cells = {}
    for criterion, scope, sparsity in itertools.product(plan.criteria, SCOPES, plan.sparsities):
        group = [
            r for r in runs if (r["criterion"], r["scope"], r["sparsity"]) == (criterion, scope, sparsity)
        ]
        ft_mean, ft_std = mean_std([100 * r["acc_finetuned"] for r in group])
        raw_mean, raw_std = mean_std([100 * r["acc_pruned"] for r in group])
        cells[f"{criterion}/{scope}/{sparsity}"] = {
            "finetuned_mean": ft_mean,
            "finetuned_std": ft_std,
            "pruned_mean": raw_mean,
            "pruned_std": raw_std,
            "collapsed": sorted({n for r in group for n in r["collapsed_layers"]}),
            "min_reachable_outputs": min(r["reachable_outputs"] for r in group),
        }
    dense_mean, dense_std = mean_std([100 * s["dense_accuracy"] for s in seeds])
    return {"dense_mean": dense_mean, "dense_std": dense_std, "cells": cells}


# -- outputs -----------------------------------------------------------------------------------
def budget_text(plan: Plan, steps: int) -> str:
    span = (
        "one epoch of the 50,000 training images"
        if plan.finetune_steps is None
        else f"one pass over a seeded random subset of {steps * BATCH:,} training images"
    )
    return (
        f"{steps} steps of batch {BATCH} ({span}), masked Adam, lr {FINETUNE_LR:g} with cosine decay to 0, "
        "pruned weights held at zero"
    )


def markdown_table(agg: dict, plan: Plan) -> str:
    head = "| criterion | scope | " + " | ".join(f"{s:.0%}" for s in plan.sparsities) + " |"
    lines = [head, "|---|---|" + "---:|" * len(plan.sparsities)]
    for criterion, scope in itertools.product(plan.criteria, SCOPES):
        cells = []
        for sparsity in plan.sparsities:
            c = agg["cells"][f"{criterion}/{scope}/{sparsity}"]
            mark = " †" if c["collapsed"] or c["min_reachable_outputs"] < 10 else ""
            cells.append(
                f"{c['finetuned_mean']:.2f} ± {c['finetuned_std']:.2f} ({c['pruned_mean']:.1f}){mark}"
            )
        lines.append(f"| {criterion} | {scope} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collapse_notes(agg: dict) -> list[str]:
    notes = []
    for key, c in agg["cells"].items():
        if c["collapsed"] or c["min_reachable_outputs"] < 10:
            notes.append(
                f"† {key}: collapsed layers {c['collapsed'] or 'none'}; as few as "
                f"{c['min_reachable_outputs']}/10 output units reachable from the input"
            )
    return notes or ["No layer collapsed and every output unit stayed connected to the input, in every run."]


def allocation_table(seeds: list[dict], plan: Plan, sparsity: float) -> str:
    """Per-layer sparsity that global scope chose, seed of the first run."""
    rows = [r for r in seeds[0]["runs"] if r["scope"] == "global" and r["sparsity"] == sparsity]
    names = list(rows[0]["layer_sparsity"])
    lines = ["| criterion | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for r in rows:
        lines.append(
            f"| {r['criterion']} | " + " | ".join(f"{r['layer_sparsity'][n]:.1%}" for n in names) + " |"
        )
    return "\n".join(lines)


def write_markdown(path: Path, report: dict, plan: Plan) -> str:
    agg, seeds = report["aggregate"], report["seeds"]
    lamp_equal = [s["lamp_layer_masks_equal_magnitude_layer"] for s in seeds]
    text = "\n\n".join(
        [
            f"## Accuracy vs sparsity — LeNet-300-100 on MNIST ({len(plan.seeds)} seed(s))",
            f"Dense test accuracy: **{agg['dense_mean']:.2f} ± {agg['dense_std']:.2f} %** "
            f"(dense: {sorted({s['dense_epochs'] for s in seeds})} epoch(s), Adam lr {DENSE_LR:g}, "
            f"batch {BATCH}). Cells: test accuracy (%) after the fine-tune budget, mean ± sample std over "
            "seeds, and in parentheses the mean right after pruning (no fine-tune).",
            markdown_table(agg, plan),
            f"Fine-tune budget per cell and seed: {report['budget']}.",
            "\n".join(f"- {n}" for n in collapse_notes(agg)),
            f"Layer sparsity chosen by global scope at {plan.sparsities[-1]:.0%} (seed {plan.seeds[0]}):\n\n"
            + allocation_table(seeds, plan, plan.sparsities[-1]),
            "Notes:\n\n"
            '- LAMP with `scope="layer"` is magnitude pruning per layer: LAMP\'s order within a layer is '
            f"magnitude's. Masks identical in this run: {lamp_equal} (per seed), so those rows coincide.\n"
            "- taylor reads 8 and obd 4 fixed calibration batches of 128 training images per seed "
            "(obd: empirical-Fisher diagonal from per-sample gradients); magnitude, random and lamp read "
            "no data.\n"
            "- Layers pruned: fc1.weight (300×784), fc2.weight (100×300), fc3.weight (10×100); biases kept.",
            f"Command: `{report['command']}` — {report['machine']}; total wall time "
            f"{report['wall_s']:.0f} s. Plot: `{NAME}.png`; all per-seed numbers: `{NAME}.json`.",
        ]
    )
    path.write_text(text + "\n")
    return text


def plot(path: Path, agg: dict, plan: Plan) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    remaining = [100 * (1 - s) for s in plan.sparsities]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    panels = (("finetuned", "after fine-tune"), ("pruned", "right after pruning (no FT)"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, criterion in enumerate(plan.criteria):
            for scope, style, shift in (("global", "-", 1.0), ("layer", "--", 1.03)):
                cells = [agg["cells"][f"{criterion}/{scope}/{s}"] for s in plan.sparsities]
                same_as_magnitude = criterion == "lamp" and scope == "layer"  # same masks, drawn on top
                ax.errorbar(
                    [r * shift for r in remaining],
                    [c[f"{key}_mean"] for c in cells],
                    yerr=[c[f"{key}_std"] for c in cells],
                    color=f"C{i}",
                    linestyle=style,
                    marker="o",
                    markersize=3,
                    capsize=3,
                    label=f"{criterion} ({scope})" + (" ≡ magnitude (layer)" if same_as_magnitude else ""),
                )
        ax.axhline(agg["dense_mean"], color="black", linewidth=1, label="dense")
        ax.axhspan(agg["dense_mean"] - agg["dense_std"], agg["dense_mean"] + agg["dense_std"], color="0.85")
        ax.set_xscale("log")
        ax.set_xticks(remaining, [f"{s:.0%}" for s in plan.sparsities])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_xlabel("sparsity (log scale of remaining weights)")
        ax.set_ylabel("MNIST test accuracy (%)")
        ax.set_title(f"LeNet-300-100, {title}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_line(report: dict, plan: Plan, out: Path) -> dict:
    agg = report["aggregate"]
    picks = {}
    for criterion, scope in itertools.product(plan.criteria, SCOPES):
        picks[f"{criterion}/{scope}"] = {
            f"{s:g}": round(agg["cells"][f"{criterion}/{scope}/{s}"]["finetuned_mean"], 2)
            for s in plan.sparsities
            if s in (0.9, 0.98)
        }
    return {
        "benchmark": NAME,
        "dense_mean": round(agg["dense_mean"], 2),
        "dense_std": round(agg["dense_std"], 2),
        "finetuned_accuracy": picks,
        "collapsed_cells": [k for k, c in agg["cells"].items() if c["collapsed"]],
        "disconnected_cells": [k for k, c in agg["cells"].items() if c["min_reachable_outputs"] < 10],
        "seeds": len(plan.seeds),
        "finetune_steps": report["finetune_steps"],
        "wall_s": round(report["wall_s"], 1),
        "quick": plan.quick,
        "out": str(out),
    }


# -- main --------------------------------------------------------------------------------------
def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine(threads: int) -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {threads} torch thread(s), "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 sparsities, 3 criteria (≤ 60 s)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--out", type=Path, help="output folder (default: bench/results; --quick: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    unknown = [c for c in CRITERIA if c not in SCORERS.names()]
    if unknown:
        parser.error(f"criteria {unknown} are not registered scorers; registered: {SCORERS.names()}")
    torch.set_num_threads(args.threads)
    plan = QUICK if args.quick else Plan()
    out = args.out or (Path(tempfile.gettempdir()) / "prunekit-bench" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    train_set, test_loader = load_mnist("train"), make_loader(load_mnist("test"), 1000, shuffle=False)
    seeds = [run_seed(seed, plan, train_set, test_loader) for seed in plan.seeds]
    steps = seeds[0]["runs"][0]["finetune_steps"]
    report = {
        "command": " ".join(["python", "bench/accuracy_vs_sparsity.py", *sys.argv[1:]]),
        "machine": machine(args.threads),
        "plan": asdict(plan),
        "finetune_steps": steps,
        "budget": budget_text(plan, steps),
        "seeds": seeds,
        "aggregate": aggregate(seeds, plan),
        "wall_s": time.perf_counter() - start,  # training, pruning and evaluation; not the plot
    }
    (out / f"{NAME}.json").write_text(json.dumps(report, indent=1) + "\n")
    print(write_markdown(out / f"{NAME}.md", report, plan))
    plot(out / f"{NAME}.png", report["aggregate"], plan)
    log(f"wrote {out / NAME}.{{md,json,png}}")
    if args.json:
        print(json.dumps(summary_line(report, plan, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
