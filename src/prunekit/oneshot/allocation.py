"""Per-block sparsity allocation: uniform, or outlier-weighted layerwise sparsity (OWL).

OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity: A Missing Secret Sauce for Pruning LLMs to
High Sparsity"): the outlier ratio ``D_l`` of block ``l`` is the fraction of its Wanda scores
``|W_ij|·‖X_j‖₂`` above ``M ×`` the block's mean score. Ratios are rescaled linearly to ``[0, 2λ]`` and
blocks with more outliers are pruned less: ``S_l = S − (D̃_l − mean(D̃))``, so the mean sparsity stays
the target ``S`` and every ``S_l`` lies within ``S ± 2λ`` (``± λ`` when the ratios are symmetric).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def uniform_sparsities(target: float, blocks: int) -> list[float]:
    """The same sparsity for every block."""
    return [target] * blocks


def outlier_ratio(scores: Sequence[torch.Tensor], threshold: float) -> float:
    """Fraction of all entries of ``scores`` (one block's layers) above ``threshold ×`` their mean."""
    flat = torch.cat([s.reshape(-1).double() for s in scores])
    return float((flat > threshold * flat.mean()).double().mean())


def owl_sparsities(ratios: Sequence[float], target: float, lam: float) -> list[float]:
    """OWL block sparsities from outlier ratios (mean = ``target``, spread ``±lam``)."""
    bound = min(target, 1 - target) / 2
    if not 0 <= lam < bound or lam != lam:
        raise ValueError(
            f"owl_lambda must be in [0, min(sparsity, 1 - sparsity) / 2) = [0, {bound:.4f}) so that every "
            f"block sparsity stays in [0, 1), got {lam!r}; lower owl_lambda"
        )
    d = torch.tensor(list(ratios), dtype=torch.float64)
    spread = d.max() - d.min()
    if spread == 0:
        return uniform_sparsities(target, len(ratios))
    scaled = (d - d.min()) / spread * (2 * lam)
    return [float(s) for s in target - (scaled - scaled.mean())]
