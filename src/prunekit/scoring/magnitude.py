"""Magnitude: score = |w| (Han et al., 2015, "Learning both Weights and Connections")."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ._base import LazyScores, ScoringInput, register_scorer


@register_scorer("magnitude", needs_data=False)
def magnitude(request: ScoringInput) -> Mapping[str, torch.Tensor]:
    """|w|: the absolute weight (Han et al., NeurIPS 2015).

    Scores are computed lazily, per layer, when selection reads them, so a global selection over a
    very large model never holds a second full copy of its weights.
    """
    params = request.parameters()
    return LazyScores({n: p.shape for n, p in params.items()}, lambda name: params[name].detach().abs())
