"""Run a sweep: validate every grid point, reuse finished runs, run the rest in parallel, tabulate."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grid import Run, plan_runs
from .report import write_tables
from .spec import SweepSpec
from .table import Row, Table, aggregate, run_row, runs_table
from .worker import RunOutcome, RunTask, finished_record

log = logging.getLogger("prunekit")
RUNS = "runs"


@dataclass(frozen=True)
class SweepResult:
    """What a sweep produced: the tables, which runs were reused / run now / failed, the files written."""

    runs: Table
    aggregate: Table
    reused: tuple[str, ...]
    ran: tuple[str, ...]
    failed: tuple[str, ...]
    files: dict[str, Path]
    seconds: float

    @property
    def ok(self) -> bool:
        """``True`` when every run finished (now or before)."""
        return not self.failed


def run_sweep(spec: SweepSpec, *, progress: bool = True) -> SweepResult:
    """Run every grid point of ``spec`` (skipping those already finished) and write the sweep tables.

    Every recipe is validated before anything runs. A failing run does not stop the others: it is
    recorded with its error (``result.failed``) and run again by the next call, like an interrupted one.
    """
    start = time.perf_counter()
    execute = _backend(spec.backend)
    runs = plan_runs(spec)
    folder = spec.output.resolve()
    (folder / RUNS).mkdir(parents=True, exist_ok=True)
    tasks = {run.run_id: _task(spec, run, folder) for run in runs}
    outcomes: dict[str, RunOutcome] = {}
    for run_id, task in tasks.items():
        record = finished_record(task)
        if record is not None:
            outcomes[run_id] = RunOutcome(run_id, record=record)
    reused = tuple(outcomes)
    todo = [task for run_id, task in tasks.items() if run_id not in outcomes]
    log.info("sweep: %d runs, %d already finished, %d to run (%s backend, workers=%d) → %s",
             len(runs), len(reused), len(todo), spec.backend, spec.workers, folder)  # fmt: skip

    def on_done(outcome: RunOutcome) -> None:
        outcomes[outcome.run_id] = outcome
        if progress:
            state = "ok" if outcome.ok else f"FAILED: {outcome.error}"
            log.info(
                "[%d/%d] %s %s (%.1f s)", len(outcomes), len(runs), outcome.run_id, state, outcome.seconds
            )

    execute(todo, spec.workers, on_done)
    rows = [_row(run, outcomes.get(run.run_id)) for run in runs]
    table = runs_table(spec.keys, rows)
    agg = aggregate(spec.keys, table)
    files = write_tables(folder, f"Sweep of {spec.recipe.name}", spec.keys, table, agg)
    failed = tuple(row["run"] for row in rows if row["status"] != "ok")
    ran = tuple(task.run_id for task in todo)
    return SweepResult(table, agg, reused, ran, failed, files, time.perf_counter() - start)


def _task(spec: SweepSpec, run: Run, folder: Path) -> RunTask:
    return RunTask(
        run.run_id, run.recipe.to_dict(), str(folder / RUNS / run.run_id), run.fingerprint, spec.threads
    )


def _row(run: Run, outcome: RunOutcome | None) -> Row:
    if outcome is None:  # cannot happen unless a backend lost a task; say so in the table
        return run_row(run, None, "no result came back from the backend")
    return run_row(run, outcome.record, outcome.error)


def _backend(name: str) -> Any:
    if name == "ray":
        from .ray_backend import import_ray, run_ray

        import_ray()  # fail before any work when ray is missing
        return run_ray
    from .local import run_local

    return run_local
