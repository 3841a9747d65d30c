"""SNIP: connection sensitivity at initialisation (Lee et al., ICLR 2019)."""

from __future__ import annotations

import torch

from ._base import ScoringInput, accumulate_gradients, register_scorer


@register_scorer("snip", needs_data=True)
def snip(request: ScoringInput) -> dict[str, torch.Tensor]:
    """|∂L/∂m| = |g ⊙ w|, g = ∂L/∂w summed over the batches (Lee et al., "SNIP", ICLR 2019).

    A multiplicative mask m on each weight (w_eff = m ⊙ w, m = 1) has ∂L/∂m = w ⊙ ∂L/∂w_eff, so the
    connection sensitivity is |w ⊙ g|. As in the paper (one batch) and in Tanaka et al.'s reference code
    (several), the gradient is accumulated over all batches before the absolute value is taken: it is
    the sensitivity of the loss over the data, not a mean of per-batch sensitivities (compare
    ``taylor``). The model runs in the mode it is in (BatchNorm in train mode uses batch statistics);
    weights, buffers and the mode are restored afterwards.
    """
    params = request.parameters()
    totals = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}

    def add(name: str, grad: torch.Tensor) -> None:
        totals[name] += grad.float()

    accumulate_gradients(request, add)
    masks = request.masks or {}
    scores = {}
    for name, g in totals.items():
        weight = params[name].detach().float()  # (out, in, ...): restored, so re-apply the mask
        if name in masks:
            weight = weight * masks[name].to(weight.device)
        scores[name] = (weight * g).abs()
    return scores
