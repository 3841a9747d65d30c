"""Iterative structured pruning: prune a little, (fine-tune,) re-trace, prune again.

The graph is re-built on every step because the model changes shape. With ``steps`` steps and a final
ratio ``ρ``, step ``s`` (1-based) aims to keep the fraction ``k_s`` of every group's original channels:

* ``"exponential"``: ``k_s = (1 − ρ)^(s/steps)`` — the same fraction of the remaining channels each step;
* ``"linear"``: ``k_s = 1 − ρ·s/steps`` — the same number of the original channels each step;

so each step removes ``r_s = 1 − k_s / k_{s−1}`` of the channels still present. ``build_plan`` floors
every group's count, so a group can keep a channel or two more than a one-shot prune at ``ρ`` would.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from torch import nn

from ._checks import check_choice, check_positive_int, check_sparsity
from .graph.graph import DependencyGraph
from .graph.trace import ExampleInputs
from .plan import apply_plan, build_plan

SCHEDULES = ("exponential", "linear")
_FLOAT_SLACK = 1e-9  # keeps floor(size · r_s) from landing one below an exact count through float error


def step_ratios(ratio: float, steps: int, schedule: str = "exponential") -> list[float]:
    """Per-step ratios ``r_s`` of the *remaining* channels; ``Π (1 − r_s) = 1 − ratio``."""
    ratio = check_sparsity(ratio, "ratio")
    check_positive_int(steps, "steps")
    check_choice(schedule, "schedule", SCHEDULES)
    if schedule == "exponential":
        kept = [(1.0 - ratio) ** (s / steps) for s in range(steps + 1)]
    else:
        kept = [1.0 - ratio * s / steps for s in range(steps + 1)]
    return [
        min(1.0 - after / before + _FLOAT_SLACK, 1.0 - _FLOAT_SLACK) if after < before else 0.0
        for before, after in itertools.pairwise(kept)
    ]


def prune_iteratively(
    model: nn.Module,
    example_inputs: ExampleInputs,
    ratio: float,
    steps: int,
    importance: str = "l1",
    *,
    schedule: str = "exponential",
    finetune: Callable[[nn.Module, int], None] | None = None,
    inplace: bool = False,
    **build_plan_kwargs: Any,
) -> nn.Module:
    """Prune ``ratio`` of every group's channels in ``steps`` steps; returns the pruned model.

    Each step traces the current model (``DependencyGraph.build``), plans with
    ``build_plan(model, graph, r_s, importance, **build_plan_kwargs)`` and applies the plan; then
    ``finetune(model, step)`` (0-based step) is called, also after the last step. Gradient-based
    importances (``taylor``, ``obd``) read ``.grad``: a pruned model has fresh parameters, so let
    ``finetune`` end with a ``loss.backward()``. ``model`` is left unchanged unless ``inplace``.
    """
    ratios = step_ratios(ratio, steps, schedule)
    if finetune is not None and not callable(finetune):
        raise TypeError(f"finetune must be a callable (model, step) -> None or None, got {finetune!r}")
    current = model if inplace else _copy_with_grads(model)
    for step, step_ratio in enumerate(ratios):
        graph = DependencyGraph.build(current, example_inputs)
        plan = build_plan(current, graph, step_ratio, importance, **build_plan_kwargs)
        current = apply_plan(current, plan, inplace=True)
        if finetune is not None:
            finetune(current, step)
    return current


def _copy_with_grads(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` plus its ``.grad``s (a deep copy drops them), for ``taylor``/``obd``."""
    clone = copy.deepcopy(model)
    for source, target in zip(model.parameters(), clone.parameters(), strict=True):
        if source.grad is not None:
            target.grad = source.grad.detach().clone()
    return clone
