"""Accuracy vs compression for pruning at initialisation: LeNet-300-100 on MNIST, 3 seeds.

For each seed s ∈ {0, 1, 2}: LeNet-300-100 built with ``torch.manual_seed(s)`` (PyTorch's default
init); global masks at compressions 10^1, 10^1.5, 10^2, 10^2.5, 10^3 from random, magnitude, SNIP,
GraSP (one batch of 256 training images, drawn with seed s) and SynFlow-100 (100 rounds, exponential
schedule, data-free); the masked network is then trained with a fixed budget — 1 epoch of the 50,000
MNIST training images, Adam lr 1.2e-3, batch 60, pruned weights held at zero — and evaluated on the
10,000 test images. Collapsed networks are trained too (they score near chance). Dense baseline: the
same budget without masks. Table: test accuracy, mean ± std over the seeds.

Usage::

    python bench/prune_at_init.py            # full: 3 seeds × (25 masked + 1 dense) runs
    python bench/prune_at_init.py --quick    # ≤ 60 s: 1 seed, 10^1 and 10^3, 5,000 training images
    python bench/prune_at_init.py --json     # also print one JSON summary as the last line
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from prunekit.api import compute_masks
from prunekit.at_init import iterative_masks
from prunekit.at_init_plots import plot_accuracy_vs_compression
from prunekit.data import load_mnist, make_loader, subset
from prunekit.masks import Masks
from prunekit.training import evaluate, train
from prunekit.zoo import lenet_300_100

METHODS = ("random", "magnitude", "snip", "grasp", "synflow-100")
LOG10_COMPRESSIONS = (1.0, 1.5, 2.0, 2.5, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="≤ 60 s smoke run (not the reported numbers)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_set, test_set = load_mnist("train"), load_mnist("test")
    seeds, grid = ([0], (1.0, 3.0)) if args.quick else ((0, 1, 2), LOG10_COMPRESSIONS)
    if args.quick:
        train_set, test_set = subset(train_set, 5_000, 0), subset(test_set, 2_000, 0)
    test_loader = make_loader(test_set, 1_000, shuffle=False)
    start = time.perf_counter()
    accuracy: dict[str, dict[float, list[float]]] = {m: {x: [] for x in grid} for m in METHODS}
    dense = []
    for seed in seeds:
        data = [subset(train_set, 256, seed).tensors]
        dense.append(_train_and_test(seed, None, train_set, test_loader))
        for method in METHODS:
            for x in grid:
                torch.manual_seed(seed)
                masks = _masks(lenet_300_100(), method, 1.0 - 10.0**-x, data, seed)
                accuracy[method][x].append(_train_and_test(seed, masks, train_set, test_loader))
                print(f"seed {seed} {method} 10^{x}: {100 * accuracy[method][x][-1]:.2f} %", flush=True)
    rows = {m: [_row(x, accuracy[m][x]) for x in grid] for m in METHODS}
    tag = "prune_at_init_quick" if args.quick else "prune_at_init"
    png = plot_accuracy_vs_compression(rows, statistics.fmean(dense), args.out / f"{tag}.png")
    document = {
        "bench": "prune_at_init",
        "quick": args.quick,
        "model": "lenet_300_100",
        "budget": "1 epoch, Adam lr 1.2e-3, batch 60",
        "seeds": list(seeds),
        "seconds": round(time.perf_counter() - start, 1),
        "dense": _row(0.0, dense),
        "png": str(png),
        "rows": rows,
    }
    _print_table(document)
    (args.out / f"{tag}.json").write_text(json.dumps(document, indent=1))
    if args.json:
        print(json.dumps(document))


def _masks(model: torch.nn.Module, method: str, sparsity: float, data: list, seed: int) -> Masks:
    if method == "synflow-100":
        return iterative_masks(model, "synflow", sparsity, 100, on_collapse="ignore", seed=seed)
    return compute_masks(model, method, sparsity, data=data, on_collapse="ignore", seed=seed)


def _train_and_test(seed: int, masks: Masks | None, train_set, test_loader) -> float:
    torch.manual_seed(seed)
    model = lenet_300_100()
    loader = make_loader(train_set, 60, shuffle=True, seed=seed)
    train(model, loader, epochs=1, lr=1.2e-3, optimizer="adam", masks=masks, seed=seed, progress=False)
    return evaluate(model, test_loader)


def _row(x: float, values: list[float]) -> dict:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"log10_compression": x, "mean": statistics.fmean(values), "std": std, "values": values}


def _print_table(document: dict) -> None:
    grid = [p["log10_compression"] for p in next(iter(document["rows"].values()))]
    dense = document["dense"]
    print(f"dense: {100 * dense['mean']:.2f} ± {100 * dense['std']:.2f} %")
    print("| method | " + " | ".join(f"10^{x:g}" for x in grid) + " |")
    print("|---|" + "---:|" * len(grid))
    for method, points in document["rows"].items():
        cells = [f"{100 * p['mean']:.2f} ± {100 * p['std']:.2f}" for p in points]
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
