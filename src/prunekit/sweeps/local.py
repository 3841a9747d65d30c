"""The local backend: each run in a worker process of a ``spawn`` process pool on this machine."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed

from .worker import RunOutcome, RunTask, run_task


def run_local(tasks: Sequence[RunTask], workers: int, on_done: Callable[[RunOutcome], None]) -> None:
    """Run ``tasks`` on ``workers`` processes, calling ``on_done`` (in this process) as each finishes.

    ``spawn`` starts clean interpreters (no forked torch or OpenMP state); a worker that dies (killed,
    out of memory) fails its runs with the reason instead of stopping the sweep.
    """
    if not tasks:
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context)
    try:
        futures = {pool.submit(run_task, task): task for task in tasks}
        for future in as_completed(futures):
            on_done(_outcome(future, futures[future]))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: finished runs keep their done markers
        raise
    pool.shutdown()


def _outcome(future: Future[RunOutcome], task: RunTask) -> RunOutcome:
    try:
        return future.result()
    except Exception as err:  # the worker process died, or the task could not be sent to it
        return RunOutcome(task.run_id, error=f"worker process failed: {type(err).__name__}: {err}")
