"""One run per pruning family, each composing the library's own entry points; dispatched by ``RUNS``.

``activations`` lives in :mod:`._activations`.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from tqdm.auto import tqdm

from ..api import compute_masks
from ..at_init import iterative_masks
from ..checkpoints import load_weights
from ..collapse import analyse_collapse, collapse_curve
from ..graph import DependencyGraph
from ..lottery import find_ticket
from ..masks import Masks
from ..oneshot import prune_oneshot
from ..plan import apply_plan, build_plan
from ..reporting import ChannelChange, Curve
from ..schedules import GradualPruning, iterative_prune
from ..structured_schedule import prune_iteratively
from ._activations import run_activations
from ._outcome import Outcome
from ._outcome import curve as _curve
from ._setup import Job

log = logging.getLogger("prunekit")
_NEEDS_GRAD = ("taylor", "obd")  # structured importances that read .grad


def run_unstructured(job: Job) -> Outcome:
    m, seed = job.recipe.method, job.recipe.seed
    kwargs = dict(
        scope=m.scope, ignore=m.ignore, on_collapse=m.on_collapse, data=job.loader(), max_batches=m.batches
    )
    if m.schedule == "gradual":
        return _gradual(job, kwargs)
    if m.schedule == "oneshot":
        masks = compute_masks(job.model, m.scorer, m.sparsity, pattern=m.pattern, seed=seed, **kwargs)
        pruned = masks.apply(job.model)
        job.finetune(pruned, masks)
        return Outcome(pruned, masks)
    points: list[tuple[float, float]] = []
    bar = tqdm(total=m.steps, desc="rounds", disable=not job.progress, leave=False)

    def finetune(model: nn.Module, masks: Masks, round_index: int) -> None:
        job.finetune(model, masks, round_index)
        points.append((100.0 * masks.sparsity, job.evaluate(model).get("accuracy", 0.0)))
        log.info("round %d: sparsity %.4f, %s", round_index, masks.sparsity, job.evaluate(model))
        bar.update()

    with bar:
        result = iterative_prune(job.model, m.scorer, m.sparsity, m.steps, finetune, seed=seed, **kwargs)
    curve = _curve("accuracy per iterative round", "sparsity (%)", "accuracy (%)", {m.scorer: points})
    return Outcome(result.model, result.masks, curves=[curve])


def _gradual(job: Job, kwargs: dict[str, Any]) -> Outcome:
    """Zhu & Gupta's cubic schedule driven by the fine-tuning loop (pruning ends at 3/4 of it)."""
    m, model = job.recipe.method, copy.deepcopy(job.model)
    total = job.recipe.finetune.epochs * len(job.loader(1))  # type: ignore[union-attr]
    end = max(1, (3 * total) // 4)
    box: dict[str, Any] = {}
    handle = register_optimizer_step_post_hook(lambda opt, *_: box.setdefault("optimizer", opt))

    def on_step(step: int) -> None:
        if "schedule" not in box:
            box["schedule"] = GradualPruning(
                model, box["optimizer"], m.sparsity, 0, end, frequency=max(1, -(-end // m.steps)),
                method=m.scorer, select_kwargs={**kwargs, "seed": job.recipe.seed},
            )  # fmt: skip
        box["schedule"].callback(step)

    try:
        job.finetune(model, None, 0, on_step=on_step)
    finally:
        handle.remove()
    schedule: GradualPruning = box["schedule"]
    schedule.remove()
    points = [(h["step"], 100.0 * h["achieved"]) for h in schedule.history]
    curve = _curve("gradual pruning schedule", "optimizer step", "sparsity (%)", {m.scorer: points})
    return Outcome(model, schedule.masks, curves=[curve])


def run_at_init(job: Job) -> Outcome:
    m = job.recipe.method
    log.info("scoring at initialisation: %s, %d iteration(s)", m.scorer, m.iterations)
    masks = iterative_masks(
        job.model, m.scorer, m.target, m.iterations, scope=m.scope, data=job.loader(), max_batches=m.batches,
        seed=job.recipe.seed, on_collapse="ignore", progress=job.progress,
    )  # fmt: skip
    report = analyse_collapse(job.model, masks, job.example)
    notes = [line for line in report.to_text().splitlines()]
    curves = [_collapse_curve(job)] if m.collapse_curve else []
    pruned = masks.apply(job.model)
    job.finetune(pruned, masks)
    return Outcome(pruned, masks, notes=notes, curves=curves)


def _collapse_curve(job: Job) -> Curve:
    """Share of layers with weights left vs achieved log10 compression, for the recipe's scorer."""
    m = job.recipe.method
    swept = collapse_curve(
        job.model, m.scorer, sorted(m.collapse_curve), iterations=m.iterations, example_inputs=job.example,
        scope=m.scope, data=job.loader(), max_batches=m.batches, seed=job.recipe.seed,
    )  # fmt: skip
    points = [
        (r.log10_compression, 100.0 * (1 - len(r.empty_layers) / len(r.layers)))
        for r in swept.reports
        if math.isfinite(r.log10_compression)
    ]
    label = m.scorer if m.iterations == 1 else f"{m.scorer}-{m.iterations}"
    return _curve("Layer collapse", "log10 compression (dense / kept)", "layers with weights left (%)",
                  {label: points})  # fmt: skip


def run_lottery(job: Job) -> Outcome:
    m, seed = job.recipe.method, job.recipe.seed
    runs = 1 + m.rounds * (1 + len(m.controls))
    with (
        tempfile.TemporaryDirectory(prefix="prunekit-lottery-") as tmp,
        tqdm(total=runs * m.epochs, desc="lottery epochs", disable=not job.progress, leave=False) as bar,
    ):
        folder = Path(tmp)
        result = find_ticket(
            job.build, job.train_set, job.val_set, job.test_set, m.config(seed), folder,
            on_epoch=lambda name, epoch: bar.update(),
        )  # fmt: skip
        last = f"{m.rounds:02d}"
        ticket = load_weights(job.build(), folder / f"ticket_{last}_final.safetensors")
        dense = load_weights(job.build(), folder / "dense_final.safetensors")
        masks = Masks.load(folder / f"masks_round{last}.safetensors")
    series: dict[str, list[tuple[float, float]]] = {}
    for run in result.runs:
        point = (100.0 * run.remaining, 100.0 * run.final_test)
        for kind in ("ticket", *m.controls) if run.kind == "dense" else (run.kind,):
            series.setdefault(kind, []).append(point)
    curve = _curve("lottery rounds", "weights remaining (%)", "test accuracy (%)", series, log_x=True)
    return Outcome(ticket, masks, reference=dense, curves=[curve])


def run_structured(job: Job) -> Outcome:
    m, model = job.recipe.method, job.model
    example = torch.zeros(m.input_shape) if m.input_shape else job.example
    generator = torch.Generator().manual_seed(job.recipe.seed)
    options = dict(round_to=m.round_to, ignore=m.ignore, global_ranking=m.global_ranking, generator=generator)
    points: list[tuple[float, float]] = []
    if m.steps == 1:
        _gradients(job, model)
        graph = DependencyGraph.build(model, example, ignore=m.ignore)
        pruned = apply_plan(model, build_plan(model, graph, m.ratio, m.importance, **options))
        job.finetune(pruned, None)
    else:

        def finetune(current: nn.Module, step: int) -> None:
            job.finetune(current, None, step)
            points.append((step + 1.0, job.evaluate(current).get("accuracy", 0.0)))
            _gradients(job, current)

        _gradients(job, model)
        pruned = prune_iteratively(
            model, example, m.ratio, m.steps, m.importance, schedule=m.schedule, finetune=finetune, **options
        )
    curves = [_curve("accuracy per structured step", "step", "accuracy (%)", {m.importance: points})]
    return Outcome(pruned, plan=channel_changes(model, pruned), curves=curves if points else [])


def _gradients(job: Job, model: nn.Module) -> None:
    """One backward pass on a training batch, for importances that read ``.grad``."""
    if job.recipe.method.importance not in _NEEDS_GRAD:
        return
    x, y = next(iter(job.loader()))
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


def channel_changes(before: nn.Module, after: nn.Module) -> tuple[ChannelChange, ...]:
    """Output channels (dim 0 of ``weight``) of every weighted layer, before and after."""
    pruned = dict(after.named_modules())
    rows = []
    for name, module in before.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2 and name in pruned:
            rows.append(ChannelChange(name, weight.shape[0], pruned[name].weight.shape[0]))
    return tuple(rows)


def run_oneshot(job: Job) -> Outcome:
    m = job.recipe.method
    log.info("one-shot %s pruning on %d calibration batches", m.method, len(job.calibration))
    result = prune_oneshot(job.model, job.calibration, m.config(), progress=job.progress)
    points = [(float(i), 100.0 * s) for i, s in enumerate(result.block_sparsity)]
    curve = _curve("sparsity per transformer block", "block", "sparsity (%)", {m.method: points})
    return Outcome(result.model, result.masks, curves=[curve])


RUNS: dict[str, Callable[[Job], Outcome]] = {
    "unstructured": run_unstructured,
    "at_init": run_at_init,
    "lottery": run_lottery,
    "structured": run_structured,
    "oneshot": run_oneshot,
    "activations": run_activations,
}
