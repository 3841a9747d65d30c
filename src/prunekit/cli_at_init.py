"""CLI commands for pruning at initialisation, layer collapse and lottery tickets.

``add_commands(subparsers)`` adds ``prune-at-init``, ``collapse`` and ``lottery`` to the ``prunekit``
command; each writes its JSON results and a PNG plot into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .at_init import compression_to_sparsity, iterative_masks
from .at_init_plots import lottery_summary, plot_collapse, plot_layer_density, plot_lottery
from .collapse import analyse_collapse, collapse_curve, compression_grid, log10_max_compression
from .data import dataset_names, load_dataset, subset
from .lottery import CONTROLS, LotteryConfig, find_ticket
from .masks import Masks
from .scoring import SCORERS
from .targets import prunable_parameters
from .zoo import get_model, model_names


def add_commands(subparsers: Any) -> None:
    """Add ``prune-at-init``, ``collapse`` and ``lottery`` to an argparse ``subparsers`` object."""
    p = subparsers.add_parser("prune-at-init", help="masks at initialisation (SNIP, GraSP, SynFlow, ...)")
    _model_arguments(p)
    p.add_argument("--method", default="synflow", choices=SCORERS.names())
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument("--compression", type=float, help="dense ÷ remaining weights, e.g. 100")
    amount.add_argument("--sparsity", type=float, help="fraction of weights removed, e.g. 0.99")
    p.add_argument("--iterations", type=int, default=1, help="rounds (exponential schedule); SynFlow: 100")
    p.add_argument("--scope", default="global", choices=("global", "layer"))
    p.set_defaults(func=run_prune_at_init)

    p = subparsers.add_parser("collapse", help="layer-collapse analysis of masks, or a sweep over methods")
    _model_arguments(p)
    p.add_argument(
        "--masks", type=Path, help="analyse this masks file (from prune-at-init) instead of a sweep"
    )
    p.add_argument(
        "--methods",
        default="random,magnitude,snip,grasp,synflow,synflow-100",
        help="comma-separated scorers; NAME-K runs K iterations (default: %(default)s)",
    )
    p.add_argument("--step", type=float, default=0.25, help="grid step in log10 compression")
    p.set_defaults(func=run_collapse)

    p = subparsers.add_parser("lottery", help="lottery tickets: IMP with rewinding, and controls")
    _model_arguments(p, default_model="lenet_300_100")
    defaults = LotteryConfig()
    p.add_argument("--rounds", type=int, default=defaults.rounds)
    p.add_argument(
        "--rate", type=float, default=defaults.prune_rate, help="fraction of remaining pruned per round"
    )
    p.add_argument("--output-rate", default=str(defaults.output_rate), help="output layer's rate, or 'same'")
    p.add_argument("--scope", default=defaults.scope, choices=("global", "layer"))
    p.add_argument("--rewind", type=int, default=0, help="rewind iteration k (0 = initialisation)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs per training run")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--eval-every", type=int, default=defaults.eval_every)
    p.add_argument("--controls", default=",".join(CONTROLS), help="comma-separated; '' for none")
    p.add_argument("--train-samples", type=int, help="train on a seeded subset of this many samples")
    p.add_argument("--resume", action="store_true", help="continue the run checkpointed in --out")
    p.set_defaults(func=run_lottery)


def run_prune_at_init(args: argparse.Namespace) -> int:
    model, example, data = _build(args)
    given = args.compression is not None
    sparsity = compression_to_sparsity(args.compression) if given else args.sparsity
    masks = iterative_masks(
        model,
        args.method,
        sparsity,
        args.iterations,
        scope=args.scope,
        data=data,
        seed=args.seed,
        on_collapse="ignore",
        progress=not args.quiet,
    )
    report = analyse_collapse(model, masks, example)
    args.out.mkdir(parents=True, exist_ok=True)
    masks.save(args.out / "masks.safetensors")
    document = {
        "method": args.method,
        "iterations": args.iterations,
        "sparsity": sparsity,
        "collapse": report.to_dict(),
        "layer_remaining": {n: 1.0 - s for n, s in masks.layer_sparsity().items()},
    }
    _write_json(args.out / "prune_at_init.json", document)
    plot_layer_density(document["layer_remaining"], args.out / "layer_density.png")
    print(report.to_text())
    print(f"wrote {args.out / 'masks.safetensors'}, prune_at_init.json and layer_density.png")
    return 1 if report.collapsed else 0


def run_collapse(args: argparse.Namespace) -> int:
    model, example, data = _build(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.masks is not None:
        report = analyse_collapse(model, Masks.load(args.masks), example)
        _write_json(args.out / "collapse.json", report.to_dict())
        print(report.to_text())
        return 1 if report.collapsed else 0
    max_log10 = log10_max_compression(Masks.ones(model, prunable_parameters(model)))
    grid = compression_grid(max_log10 + args.step, args.step)
    curves = {}
    for spec in [s.strip() for s in args.methods.split(",") if s.strip()]:
        method, iterations = _method_spec(spec)
        curve = collapse_curve(
            model, method, grid, iterations=iterations, example_inputs=example, data=data, seed=args.seed
        )
        curves[spec] = curve.to_dict()
        print(
            f"{spec:>14}: largest compression before collapse 10^{curve.max_alive} (max 10^{max_log10:.2f})"
        )
    _write_json(args.out / "collapse.json", {"log10_max_compression": max_log10, "curves": curves})
    plot_collapse({n: c["points"] for n, c in curves.items()}, max_log10, args.out / "collapse.png")
    print(f"wrote {args.out / 'collapse.json'} and collapse.png")
    return 0


def run_lottery(args: argparse.Namespace) -> int:
    output_rate = None if args.output_rate == "same" else float(args.output_rate)
    config = LotteryConfig(
        rounds=args.rounds,
        prune_rate=args.rate,
        output_rate=output_rate,
        scope=args.scope,
        rewind_iteration=args.rewind,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        seed=args.seed,
        controls=tuple(c.strip() for c in args.controls.split(",") if c.strip()),
    )
    splits = [load_dataset(args.dataset, split) for split in ("train", "val", "test")]
    if args.train_samples is not None:
        splits[0] = subset(splits[0], args.train_samples, args.seed)
    kwargs = _model_kwargs(args.model, splits[0].tensors[0])

    def model_fn() -> nn.Module:
        return get_model(args.model, **kwargs)

    result = find_ticket(model_fn, *splits, config, args.out / "checkpoints", resume=args.resume)
    summary = lottery_summary([result])
    _write_json(args.out / "lottery.json", {**result.to_dict(), "summary": summary})
    plot_lottery(summary, args.out / "lottery.png")
    print(f"dense: {100 * summary['dense']['mean']:.2f} %")
    for row in summary["rounds"]:
        cells = "  ".join(f"{k} {100 * row[k]['mean']:.2f} %" for k in ("ticket", *config.controls))
        print(f"round {row['round']:2d}  remaining {100 * row['remaining']:6.2f} %  {cells}")
    print(f"wrote {args.out / 'lottery.json'} and lottery.png")
    return 0


def _model_arguments(p: argparse.ArgumentParser, default_model: str = "lenet_300_100") -> None:
    p.add_argument("--model", default=default_model, choices=model_names())
    p.add_argument("--dataset", default="mnist", choices=dataset_names())
    p.add_argument("--batches", type=int, default=1, help="batches of 256 samples for data-driven scorers")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info logs")


def _build(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, list]:
    """The seeded zoo model, an example input and ``--batches`` batches of 256 training samples."""
    train = load_dataset(args.dataset, "train")
    n = min(len(train), 256 * args.batches)
    x, y = subset(train, n, args.seed).tensors
    torch.manual_seed(args.seed)
    model = get_model(args.model, **_model_kwargs(args.model, x))
    return model, x[:1], [(x[i : i + 256], y[i : i + 256]) for i in range(0, n, 256)]


def _model_kwargs(model: str, x: torch.Tensor) -> dict[str, int]:
    if model == "lenet_300_100":
        return {"in_features": math.prod(x.shape[1:])}
    return {"in_channels": x.shape[1]}


def _method_spec(spec: str) -> tuple[str, int]:
    name, _, count = spec.rpartition("-")
    if name and count.isdigit() and name in SCORERS:
        return name, int(count)
    if spec not in SCORERS:
        raise ValueError(
            f"--methods entry {spec!r} is not a scorer or NAME-K; scorers are: {SCORERS.names()}"
        )
    return spec, 1


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=1, allow_nan=False))
