"""Random scores: the baseline every criterion must beat."""

from __future__ import annotations

import torch

from ._base import ScoringInput, register_scorer


@register_scorer("random", needs_data=False)
def random_scores(request: ScoringInput) -> dict[str, torch.Tensor]:
    """U(0, 1) per weight from the request's generator (seeded: same seed, same masks)."""
    return {
        name: torch.rand(p.shape, generator=request.generator).to(p.device)
        for name, p in request.parameters().items()
    }
