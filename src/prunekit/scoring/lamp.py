"""LAMP: layer-adaptive magnitude scores (Lee et al., ICLR 2021)."""

from __future__ import annotations

import torch

from ._base import ScoringInput, register_scorer


@register_scorer("lamp", needs_data=False)
def lamp(request: ScoringInput) -> dict[str, torch.Tensor]:
    """w_u² / Σ_{v ≥ u} w_v², with each layer's weights sorted by ascending magnitude (Lee et al. 2021).

    "Layer-adaptive sparsity for the magnitude-based pruning": within a layer the order equals
    magnitude's, but the scores are comparable across layers, so a *global* threshold on LAMP gives a
    layer-adaptive sparsity allocation. Ties are ordered by position, so the scores are deterministic.
    """
    scores = {}
    for name, param in request.parameters().items():
        squared = param.detach().double().flatten().square()
        order = torch.sort(squared, stable=True).indices
        ranked = squared[order]
        tail = ranked.flip(0).cumsum(0).flip(0)  # Σ_{v ≥ u} w_v² in sorted order
        sorted_scores = torch.where(tail > 0, ranked / tail.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
        flat = torch.empty_like(sorted_scores)
        flat[order] = sorted_scores
        scores[name] = flat.view_as(param).float()
    return scores
