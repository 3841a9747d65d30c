"""Sweeps: one recipe over a grid (methods × sparsities × seeds) in parallel, results in one table."""

from .grid import Run, expand, plan_runs, run_id
from .runner import SweepResult, run_sweep
from .spec import BACKENDS, SweepError, SweepSpec, load_sweep, parse_sweep
from .table import Table
from .worker import RunOutcome, RunTask, run_task

__all__ = [
    "BACKENDS",
    "Run",
    "RunOutcome",
    "RunTask",
    "SweepError",
    "SweepResult",
    "SweepSpec",
    "Table",
    "expand",
    "load_sweep",
    "parse_sweep",
    "plan_runs",
    "run_id",
    "run_sweep",
    "run_task",
]
