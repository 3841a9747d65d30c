"""``prunekit sweep sweep.yaml``: run a recipe over a grid of values and tabulate the results."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from .sweeps.spec import BACKENDS

log = logging.getLogger("prunekit")


def add_command(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``sweep`` to an argparse ``subparsers`` object (``common`` holds ``--quiet``)."""
    p = subparsers.add_parser(
        "sweep", parents=[common], help="run a recipe over a grid (methods × sparsities × seeds) in parallel"
    )
    p.add_argument("sweep", help="sweep file, e.g. examples/sweeps/sweep_unstructured_lenet_digits.yaml")
    p.add_argument("--workers", type=int, default=None, help="runs at the same time (default: the file's)")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="local processes or a Ray cluster")
    p.add_argument("--out", default=None, help="output folder (default: the file's output)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every run finished, 1 when some failed (listed, and in the tables)."""
    from .sweeps import load_sweep, run_sweep
    from .sweeps.table import mean_std

    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    spec = load_sweep(args.sweep)
    changes = {"workers": args.workers, "backend": args.backend, "output": args.out and Path(args.out)}
    spec = dataclasses.replace(spec, **{k: v for k, v in changes.items() if v is not None})
    result = run_sweep(spec, progress=not args.quiet)
    if not args.quiet:
        print(mean_std(spec.keys, result.aggregate).to_markdown())
        print(f"{len(result.runs.rows)} runs ({len(result.reused)} reused, {len(result.ran)} run now) "
              f"in {result.seconds:.1f} s; tables: {result.files['html']}")  # fmt: skip
    for row in result.runs.rows:
        if row["status"] != "ok":
            log.error("run %s failed: %s", row["run"], row["error"])
    return 0 if result.ok else 1
