"""One run of a sweep, as executed in a worker process (local pool or Ray task), and its done marker.

A run's folder counts as finished only when it holds ``sweep-done.json``, written atomically after
``run_recipe`` returned, whose fingerprint matches the run's resolved recipe, and a readable
``report.json``. Anything else (an interrupted, failed or changed run) is cleared and run again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DONE = "sweep-done.json"
REPORT = "report.json"
ERROR = "sweep-error.txt"


@dataclass(frozen=True)
class RunTask:
    """What a worker needs: plain values only, so that it pickles cheaply to any process or node."""

    run_id: str
    recipe: dict[str, Any]  # Recipe.to_dict(): every default filled in, file paths absolute
    folder: str
    fingerprint: str
    threads: int = 1


@dataclass(frozen=True)
class RunOutcome:
    """A finished task: ``record`` is the run's ``RunRecord.to_dict()``, or ``error`` says why it failed."""

    run_id: str
    record: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_task(task: RunTask) -> RunOutcome:
    """Run one recipe into a fresh ``task.folder``; exceptions become a failed outcome, never propagate."""
    start = time.perf_counter()
    folder = Path(task.folder)
    try:
        import torch

        from ..recipes import parse_recipe, run_recipe

        torch.set_num_threads(task.threads)
        if folder.exists():
            shutil.rmtree(folder)  # leftovers of an interrupted or failed attempt
        record = run_recipe(parse_recipe(task.recipe), folder, progress=False)
        write_done(folder, task)
        return RunOutcome(task.run_id, record=record.to_dict(), seconds=time.perf_counter() - start)
    except Exception as err:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ERROR).write_text(traceback.format_exc())
        message = f"{type(err).__name__}: {' '.join(str(err).split())}"
        return RunOutcome(task.run_id, error=message, seconds=time.perf_counter() - start)


def write_done(folder: Path, task: RunTask) -> None:
    """Mark ``folder`` finished: write to a temporary name, then rename (atomic on POSIX and Windows)."""
    tmp = folder / f".{DONE}.tmp"
    tmp.write_text(json.dumps({"run": task.run_id, "fingerprint": task.fingerprint}) + "\n")
    os.replace(tmp, folder / DONE)


def finished_record(task: RunTask) -> dict[str, Any] | None:
    """The record of a run already finished with the same recipe, else ``None`` (it must be run)."""
    folder = Path(task.folder)
    try:
        done = json.loads((folder / DONE).read_text())
        record = json.loads((folder / REPORT).read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(done, dict)
        or done.get("fingerprint") != task.fingerprint
        or not isinstance(record, dict)
    ):
        return None
    return record
