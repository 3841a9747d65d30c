"""First-order Taylor: the loss change from removing a weight, to first order."""

from __future__ import annotations

import torch

from ._base import ScoringInput, accumulate_gradients, register_scorer


@register_scorer("taylor", needs_data=True)
def taylor(request: ScoringInput) -> dict[str, torch.Tensor]:
    """|w · ∂L/∂w| per batch, averaged over batches (Molchanov et al., ICLR 2017 / CVPR 2019).

    Setting w to 0 changes the loss by ≈ −w·∂L/∂w. The absolute value is taken per batch before
    averaging: at a trained optimum the full-data gradient is ≈ 0, so |w · mean_b g_b| would rank
    every weight as unimportant, while mean_b |w · g_b| keeps the per-batch sensitivity.
    """
    params = request.parameters()
    totals = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}

    def add(name: str, grad: torch.Tensor) -> None:
        totals[name] += (params[name].detach() * grad).abs().float()

    batches = accumulate_gradients(request, add)
    return {n: t / batches for n, t in totals.items()}
