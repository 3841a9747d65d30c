"""The Ray backend: the same worker function as ``ray.remote`` tasks of one CPU each.

With ``RAY_ADDRESS`` set, the sweep joins that cluster; otherwise it starts a local Ray instance with
``workers`` CPUs and shuts it down afterwards (a Ray session the caller already started is used as
is). Runs write into ``output/runs/<id>``: on a multi-node cluster put ``output`` on storage that
every node sees, so that finished runs are found again on resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from .worker import RunOutcome, RunTask, run_task

INSTALL_HINT = "the ray backend needs Ray: `pip install prunekit[ray]` (or `pip install 'ray>=2.9'`)"


def import_ray() -> Any:
    """The ``ray`` module, or a ``ModuleNotFoundError`` that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ModuleNotFoundError(f"{INSTALL_HINT}; import failed: {err}") from None
    return ray


def run_ray(tasks: Sequence[RunTask], workers: int, on_done: Callable[[RunOutcome], None]) -> None:
    """Run ``tasks`` as Ray tasks, calling ``on_done`` in this process as each finishes."""
    ray = import_ray()
    if not tasks:
        return
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        pending = {remote.remote(task): task for task in tasks}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                on_done(_outcome(ray, ref, pending.pop(ref)))
    finally:
        if started:
            ray.shutdown()


def _outcome(ray: Any, ref: Any, task: RunTask) -> RunOutcome:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as err:  # the worker died or the task could not run
        message = " ".join(str(err).split())[:500]
        return RunOutcome(task.run_id, error=f"ray task failed: {type(err).__name__}: {message}")
