"""``prunekit run recipe.yaml``: run a whole pruning job described by a recipe file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("prunekit")
T = TypeVar("T")


def add_command(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``run`` to an argparse ``subparsers`` object (``common`` holds ``--quiet``)."""
    p = subparsers.add_parser(
        "run", parents=[common], help="run a recipe (YAML): prune, fine-tune, export, report"
    )
    p.add_argument("recipe", help="recipe file, e.g. examples/unstructured_lenet_mnist.yaml")
    p.add_argument("--out", default=None, help="output folder (default: the recipe's output)")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument(
        "--threads", type=_positive, default=None, help="torch CPU threads for the run (default: torch's)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .recipes import load_recipe, run_recipe

    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    recipe = load_recipe(args.recipe)
    if args.seed is not None:
        recipe = dataclasses.replace(recipe, seed=args.seed)
    record = _with_threads(args.threads, lambda: run_recipe(recipe, args.out, progress=not args.quiet))
    summary = {
        "family": record.family,
        "sparsity": 1.0 - record.after.nonzeros / max(record.after.params, 1),
        "params": [record.before.params, record.after.params],
        "metrics": [dict(record.before.metrics), dict(record.after.metrics)],
        "outputs": dict(record.outputs),
        "seconds": round(record.wall_s or 0.0, 2),
    }
    if not args.quiet:
        print(json.dumps(summary))
    return 0


def _with_threads(threads: int | None, body: Callable[[], T]) -> T:
    """``body()`` with ``torch.set_num_threads(threads)`` (restored afterwards); ``None``: unchanged."""
    import torch

    if threads is None:
        return body()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return body()
    finally:
        torch.set_num_threads(previous)


def _positive(text: str) -> int:
    value = int(text) if text.strip().lstrip("-").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int (CPU threads), got {text!r}")
    return value
