"""Iterative structured pruning: prune a little, (fine-tune,) re-trace, prune again.

The graph is re-built on every step because the model changes shape. With ``steps`` steps and a final
ratio ``ρ``, step ``s`` (1-based) aims to keep the fraction ``k_s`` of every group's original channels:

* ``"exponential"``: ``k_s = (1 − ρ)^(s/steps)`` — the same fraction of the remaining channels each step;
* ``"linear"``: ``k_s = 1 − ρ·s/steps`` — the same number of the original channels each step;

so each step removes ``r_s = 1 − k_s / k_{s−1}`` of the channels still present. With per-group
ranking (the default) the counts are exact: a group of ``n`` original channels has lost
``n − round(n·k_s)`` after step ``s`` and, after the last, exactly the ``⌊n·ρ⌋`` a one-shot prune at
``ρ`` removes (``ratios`` overrides give the group its own ``ρ``). Flooring ``r_s`` per step instead
would keep up to a channel per step more (a group of 32 at ρ = 0.5 in 5 steps: 18 left, not 16).
With ``global_ranking`` each step ranks ``r_s`` of all channels still present.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ._checks import check_choice, check_positive_int, check_sparsity
from .graph.graph import DependencyGraph, Group
from .graph.modules import weight_norm_memo
from .graph.trace import ExampleInputs
from .plan import _local_count, apply_plan, build_plan

SCHEDULES = ("exponential", "linear")
_FLOAT_SLACK = 1e-9  # keeps floor(size · r_s) from landing one below an exact count through float error


def step_ratios(ratio: float, steps: int, schedule: str = "exponential") -> list[float]:
    """Per-step ratios ``r_s`` of the *remaining* channels; ``Π (1 − r_s) = 1 − ratio``."""
    ratio = check_sparsity(ratio, "ratio")
    check_positive_int(steps, "steps")
    check_choice(schedule, "schedule", SCHEDULES)
    kept = _kept_fractions(ratio, steps, schedule)
    return [
        min(1.0 - after / before + _FLOAT_SLACK, 1.0 - _FLOAT_SLACK) if after < before else 0.0
        for before, after in itertools.pairwise(kept)
    ]


def _kept_fractions(ratio: float, steps: int, schedule: str) -> list[float]:
    """``k_s`` for ``s = 0 … steps``: the fraction of the original channels kept after step ``s``."""
    if schedule == "exponential":
        return [(1.0 - ratio) ** (s / steps) for s in range(steps + 1)]
    return [1.0 - ratio * s / steps for s in range(steps + 1)]


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
    ``build_plan(model, graph, r_s, importance, **build_plan_kwargs)`` (with ``counts`` set to each
    group's exact share of this step unless ``global_ranking``) and applies the plan; then
    ``finetune(model, step)`` (0-based step) is called, also after the last step. Gradient-based
    importances (``taylor``, ``obd``) read ``.grad``: a pruned model has fresh parameters, so let
    ``finetune`` end with a ``loss.backward()``. ``model`` is left unchanged unless ``inplace``.
    """
    ratios = step_ratios(ratio, steps, schedule)
    if finetune is not None and not callable(finetune):
        raise TypeError(f"finetune must be a callable (model, step) -> None or None, got {finetune!r}")
    if "counts" in build_plan_kwargs:
        raise TypeError("prune_iteratively sets counts itself on every step; pass ratio (and ratios) instead")
    exact = not build_plan_kwargs.get("global_ranking", False)
    overrides: dict[str, float] = {}
    if exact:  # the per-group targets carry ratio and ratios; build_plan gets exact counts instead
        given = build_plan_kwargs.pop("ratios", None) or {}
        overrides = {k: check_sparsity(v, f"ratios[{k!r}]") for k, v in given.items()}
    current = model if inplace else _copy_with_grads(model)
    targets: dict[tuple[tuple[str, int], ...], tuple[int, list[int]]] = {}
    for step, step_ratio in enumerate(ratios):
        graph = DependencyGraph.build(current, example_inputs)
        if exact:
            if step == 0:
                targets = _cumulative_removals(graph, ratio, steps, schedule, overrides)
            counts = _step_counts(graph, targets, step)
            plan = build_plan(current, graph, step_ratio, importance, counts=counts, **build_plan_kwargs)
        else:
            plan = build_plan(current, graph, step_ratio, importance, **build_plan_kwargs)
        current = apply_plan(current, plan, inplace=True)
        if finetune is not None:
            finetune(current, step)
    return current


def _key(group: Group) -> tuple[tuple[str, int], ...]:
    """A group's identity across re-traces: its members' (tensor, dim), which pruning does not change."""
    return tuple(sorted((m.tensor, m.dim) for m in group.members))


def _cumulative_removals(
    graph: DependencyGraph, ratio: float, steps: int, schedule: str, overrides: Mapping[str, float]
) -> dict[tuple[tuple[str, int], ...], tuple[int, list[int]]]:
    """Group key → (original size, channels removed in total after each step); the last count is the
    one-shot count ``build_plan`` takes at ``ratio`` (or the group's ``ratios`` override)."""
    out = {}
    for group in graph.groups:
        size, final = group.size, _local_count(group, ratio, overrides)
        kept = _kept_fractions(final / size, steps, schedule)[1:-1]
        out[_key(group)] = (size, [min(final, size - round(size * k)) for k in kept] + [final])
    return out


def _step_counts(
    graph: DependencyGraph, targets: Mapping[tuple[tuple[str, int], ...], tuple[int, list[int]]], step: int
) -> dict[int, int]:
    """Group index → channels to remove now so that the group reaches its cumulative target."""
    counts = {}
    for group in graph.groups:
        if (target := targets.get(_key(group))) is not None:
            original, removed = target
            already = original - group.size
            counts[group.index] = max(0, min(removed[step] - already, group.size - 1))
    return counts


def _copy_with_grads(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` plus its ``.grad``s (a deep copy drops them), for ``taylor``/``obd``."""
    clone = copy.deepcopy(model, weight_norm_memo(model))
    for source, target in zip(model.parameters(), clone.parameters(), strict=True):
        if source.grad is not None:
            target.grad = source.grad.detach().clone()
    return clone
