"""Schedules that drive score → select → apply over time.

- one-shot: :func:`prunekit.prune`.
- iterative: :func:`iterative_prune` — ``rounds`` of prune → fine-tune, sparsity stepped linearly or
  exponentially (each round removes the same *fraction of the remaining* weights).
- gradual: :class:`GradualPruning` — Zhu & Gupta's cubic schedule, driven by the user's own training
  loop through ``callback(step)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_positive_int, check_sparsity
from .api import compute_masks
from .masks import MaskedTraining, Masks

FineTune = Callable[[nn.Module, Masks, int], None]


def sparsity_steps(final: float, rounds: int, kind: str = "exponential", initial: float = 0.0) -> list[float]:
    """Target sparsity after each of ``rounds`` rounds, ending exactly at ``final``.

    ``linear``: equal steps in sparsity. ``exponential``: equal steps in log-density, i.e. every round
    prunes the same fraction of the weights that remain (as iterative magnitude pruning does).
    """
    final, initial = check_sparsity(final, "final sparsity"), check_sparsity(initial, "initial sparsity")
    check_positive_int(rounds, "rounds")
    check_choice(kind, "kind", ("linear", "exponential"))
    if initial > final:
        raise ValueError(f"initial sparsity {initial} must not exceed final sparsity {final}")
    steps = []
    for i in range(1, rounds + 1):
        if kind == "linear":
            steps.append(initial + (final - initial) * i / rounds)
        else:
            density = (1 - initial) * ((1 - final) / (1 - initial)) ** (i / rounds)
            steps.append(1 - density)
    steps[-1] = final
    return steps


@dataclass(frozen=True)
class IterativeResult:
    model: nn.Module
    masks: Masks
    history: list[dict[str, float]]


def iterative_prune(
    model: nn.Module,
    method: str,
    final_sparsity: float,
    rounds: int,
    finetune: FineTune | None = None,
    *,
    schedule: str = "exponential",
    inplace: bool = False,
    **select_kwargs: Any,
) -> IterativeResult:
    """Prune to ``final_sparsity`` in ``rounds`` rounds of prune → ``finetune(model, masks, round)``.

    Each round keeps earlier pruned weights pruned (they are the ``prior``). ``finetune`` should train
    with the masks held (e.g. ``prunekit.training.train(..., masks=masks)``). Returns a pruned copy
    unless ``inplace``. Keyword arguments go to :func:`prunekit.compute_masks`.
    """
    target = model if inplace else copy.deepcopy(model)
    masks: Masks | None = select_kwargs.pop("prior", None)
    history = []
    for round_index, sparsity in enumerate(sparsity_steps(final_sparsity, rounds, schedule), start=1):
        masks = compute_masks(target, method, sparsity, prior=masks, **select_kwargs)
        masks.apply(target, inplace=True)
        history.append({"round": round_index, "requested": sparsity, "achieved": masks.sparsity})
        if finetune is not None:
            finetune(target, masks, round_index)
    assert masks is not None  # rounds ≥ 1 is validated by sparsity_steps
    return IterativeResult(model=target, masks=masks, history=history)


@dataclass
class GradualPruning:
    """Cubic gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune").

    s_t = s_f + (s_i − s_f) · (1 − (t − t₀)/(n·Δt))³ for t = t₀, t₀+Δt, …, t₀+n·Δt, where
    ``start_step`` = t₀, ``end_step`` = t₀ + n·Δt and ``frequency`` = Δt. Call :meth:`callback` with the
    step count after every optimizer step; on pruning steps it re-scores, re-selects (pruned weights
    stay pruned) and holds the new masks through ``optimizer`` steps. Works on ``model`` in place: it
    is the model being trained.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    final_sparsity: float
    start_step: int
    end_step: int
    frequency: int = 100
    initial_sparsity: float = 0.0
    method: str = "magnitude"
    select_kwargs: dict[str, Any] = field(default_factory=dict)
    masks: Masks | None = field(default=None, init=False)
    history: list[dict[str, float]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_sparsity(self.final_sparsity, "final_sparsity")
        check_sparsity(self.initial_sparsity, "initial_sparsity")
        check_positive_int(self.frequency, "frequency")
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(
                f"need 0 <= start_step < end_step, got start_step={self.start_step}, end_step={self.end_step}"
            )
        self._holder: MaskedTraining | None = None

    def sparsity_at(self, step: int) -> float:
        """Target sparsity at ``step`` (initial before t₀, final after the end step)."""
        if step < self.start_step:
            return 0.0
        progress = min(1.0, (step - self.start_step) / (self.end_step - self.start_step))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - progress) ** 3

    def callback(self, step: int) -> None:
        """Prune on steps t₀ + j·Δt up to the end step; otherwise do nothing."""
        if step < self.start_step or step > self.end_step:
            return
        if (step - self.start_step) % self.frequency and step != self.end_step:
            return
        target = self.sparsity_at(step)
        self.masks = compute_masks(self.model, self.method, target, prior=self.masks, **self.select_kwargs)
        if self._holder is not None:
            self._holder.remove()
        self._holder = MaskedTraining(self.model, self.masks, self.optimizer)
        self.history.append({"step": step, "requested": target, "achieved": self.masks.sparsity})

    def remove(self) -> None:
        """Stop holding the masks (the pruned weights stay zero until trained again)."""
        if self._holder is not None:
            self._holder.remove()
            self._holder = None
