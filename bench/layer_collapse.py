"""Layer collapse at initialisation (Tanaka et al. 2020, Fig. 1/3), reproduced with PyTorch's default init.

For LeNet-300-100 (an MLP) and ``vgg_small_bn`` (a VGG-style conv net with BatchNorm), both for
28×28 MNIST inputs and freshly built with ``torch.manual_seed(0)`` (PyTorch's default init: Kaiming-
uniform weights, nonzero uniform biases, BatchNorm γ = 1, β = 0, in train mode), global masks are
computed at compressions 10^0, 10^0.25, … up to the grid point past the maximal compression
N / L (N prunable weights, L prunable layers), for: random, magnitude, SNIP, GraSP, SynFlow with one
iteration and SynFlow with 100 (exponential schedule). SNIP and GraSP read one batch of 256 training
images. For each method the table gives the largest compression before the first collapse (every
layer non-empty and an input→output path remaining, see ``prunekit.collapse``).

Ablation on the MLP (``synflow-100 |b|``): SynFlow-100 with the linearisation of the authors' code,
which keeps |b| for biases instead of 0; it shows why prunekit zeroes biases (``prunekit.scoring.synflow``).

Speed: SynFlow-100 (compression 10^2) on a ResNet-18-sized model (``resnet_small`` with widths
64-128-256-512, 2 blocks per stage: 11.2M parameters), 28×28 input, 2 threads, wall-clock seconds.

Usage::

    python bench/layer_collapse.py            # full (a few minutes)
    python bench/layer_collapse.py --quick    # ≤ 60 s: MLP only, grid step 1, speed over 1 round
    python bench/layer_collapse.py --json     # also print one JSON summary as the last line
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

import prunekit.scoring.synflow as synflow_module
from prunekit.api import compute_masks
from prunekit.at_init import iterative_masks
from prunekit.at_init_plots import plot_collapse
from prunekit.collapse import collapse_curve, compression_grid, log10_max_compression
from prunekit.data import load_mnist, subset
from prunekit.masks import Masks
from prunekit.scoring import ScoringInput, get_scorer
from prunekit.targets import prunable_parameters
from prunekit.zoo import lenet_300_100, resnet_small, vgg_small_bn

SINGLE_SHOT = ("random", "magnitude", "snip", "grasp", "synflow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="≤ 60 s smoke run (not the reported numbers)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--speed-only", action="store_true", help="only time SynFlow-100 on the ResNet-18-sized net"
    )
    args = parser.parse_args()
    if args.speed_only:
        speed = _speed(rounds=100)
        print(json.dumps(speed))
        return
    torch.set_num_threads(1)
    images, labels = subset(load_mnist("train"), 256, 0).tensors
    data = [(images, labels)]
    nets = (
        {"mlp_lenet_300_100": lenet_300_100}
        if args.quick
        else {
            "mlp_lenet_300_100": lenet_300_100,
            "vgg_small_bn": vgg_small_bn,
        }
    )
    step = 1.0 if args.quick else 0.25
    summary: dict = {"bench": "layer_collapse", "quick": args.quick, "step": step, "nets": {}}
    start = time.perf_counter()
    for net_name, build in nets.items():
        torch.manual_seed(0)
        model = build()
        png = args.out / f"layer_collapse{'_quick' if args.quick else ''}_{net_name}.png"
        summary["nets"][net_name] = _sweep(model, data, step, png, ablation=net_name.startswith("mlp"))
        print(_table(net_name, summary["nets"][net_name]), flush=True)
    summary["synflow100_resnet18"] = _speed(rounds=1 if args.quick else 100)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["load_average_1min"] = os.getloadavg()[0]
    print(json.dumps(summary["synflow100_resnet18"]))
    (args.out / ("layer_collapse_quick.json" if args.quick else "layer_collapse.json")).write_text(
        json.dumps(summary, indent=1)
    )
    if args.json:  # the compact summary; the curves are in the JSON file
        compact = {k: v for k, v in summary.items() if k != "nets"}
        compact["nets"] = {
            n: {k: v for k, v in r.items() if k != "curves"} for n, r in summary["nets"].items()
        }
        print(json.dumps(compact))


def _sweep(model: nn.Module, data: list, step: float, png: Path, ablation: bool) -> dict:
    names = prunable_parameters(model)
    max_log10 = log10_max_compression(Masks.ones(model, names))
    grid = compression_grid(max_log10 + step, step)
    example = data[0][0][:1]
    curves = {}
    for method in SINGLE_SHOT:
        request = ScoringInput(model=model, names=tuple(names), data=data)
        scores = get_scorer(method)(request)
        curves[method] = collapse_curve(model, scores, grid, example_inputs=example, label=method)
    kwargs = {"data": data, "example_inputs": example}
    curves["synflow-100"] = collapse_curve(model, "synflow", grid, iterations=100, **kwargs)
    if ablation:
        with _reference_bias_linearisation():
            curves["synflow-100 |b|"] = collapse_curve(
                model, "synflow", grid, iterations=100, label="synflow-100 |b|", **kwargs
            )
    dicts = {name: curve.to_dict() for name, curve in curves.items()}
    plot_collapse({n: d["points"] for n, d in dicts.items()}, max_log10, png)
    return {
        "log10_max_compression": max_log10,
        "prunable_weights": sum(dict(model.named_parameters())[n].numel() for n in names),
        "layers": len(names),
        "png": str(png),
        "max_alive": {n: d["max_alive"] for n, d in dicts.items()},
        "synflow100_within_0p25_of_max": (dicts["synflow-100"]["max_alive"] or 0) >= max_log10 - 0.25,
        "curves": dicts,
    }


@contextlib.contextmanager
def _reference_bias_linearisation() -> Iterator[None]:
    """Temporarily linearise biases to |b| (the authors' code) instead of prunekit's 0."""
    original = synflow_module.linearised_values

    def keep_bias(model: nn.Module, replace: dict, *, batchnorm: str, **kwargs: object) -> dict:
        values = original(model, replace, batchnorm=batchnorm, **kwargs)
        if batchnorm == "scale":  # the scorer's call; the path count (identity) stays exact
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    values[name] = p.detach().abs().to(values[name].dtype)
        return values

    synflow_module.linearised_values = keep_bias
    try:
        yield
    finally:
        synflow_module.linearised_values = original


def _speed(rounds: int) -> dict:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = resnet_small(widths=(64, 128, 256, 512), blocks_per_stage=2)
    data = [(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))]
    compute_masks(model, "synflow", 0.5, data=data, on_collapse="ignore")  # warm-up
    begin = time.perf_counter()
    masks = iterative_masks(model, "synflow", 0.99, rounds, data=data, on_collapse="ignore")
    seconds = time.perf_counter() - begin
    torch.set_num_threads(1)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "rounds": rounds,
        "compression": 100,
        "threads": 2,
        "seconds": round(seconds, 1),
        "seconds_per_round": round(seconds / rounds, 2),
        "empty_layers": masks.empty_layers(),
        "load_average_1min": os.getloadavg()[0],
    }


def _table(net: str, result: dict) -> str:
    lines = [
        f"{net}: {result['prunable_weights']:,} prunable weights in {result['layers']} layers, "
        f"maximal compression 10^{result['log10_max_compression']:.3f}",
        "| method | largest compression before collapse (log10) | first empty layer at |",
        "|---|---:|---|",
    ]
    for method, curve in result["curves"].items():
        empties = {n: x for n, x in curve["layer_empties_at"].items() if x is not None}
        first = min(empties.items(), key=lambda kv: kv[1]) if empties else None
        where = f"{first[0]} at 10^{first[1]}" if first else "never"
        lines.append(f"| {method} | {curve['max_alive']} | {where} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
