"""One-shot post-training pruning of pretrained transformers with calibration data.

Per-output magnitude, Wanda (Sun et al. 2023) and SparseGPT (Frantar & Alistarh 2023), unstructured or
N:M, with uniform or outlier-weighted (OWL, Yin et al. 2024) per-block sparsity, calibrated block by
block (optionally data-parallel over ``torch.distributed`` ranks); and structured removal of whole
attention heads and MLP neurons ranked by calibration activations (:func:`prune_structured_oneshot`).
"""

from .allocation import outlier_ratio, owl_sparsities, uniform_sparsities
from .api import ALLOCATIONS, METHODS, OneShotConfig, OneShotResult, prune_oneshot
from .calibration import LayerStats, calibrate_blocks, capture_block_inputs, find_blocks, prunable_layers
from .solvers import magnitude_mask, obs_remove_one, sparsegpt, wanda_mask, wanda_scores
from .structured import StructuredConfig, StructuredResult, prune_structured_oneshot

__all__ = [
    "ALLOCATIONS",
    "METHODS",
    "LayerStats",
    "OneShotConfig",
    "OneShotResult",
    "StructuredConfig",
    "StructuredResult",
    "calibrate_blocks",
    "capture_block_inputs",
    "find_blocks",
    "magnitude_mask",
    "obs_remove_one",
    "outlier_ratio",
    "owl_sparsities",
    "prunable_layers",
    "prune_oneshot",
    "prune_structured_oneshot",
    "sparsegpt",
    "uniform_sparsities",
    "wanda_mask",
    "wanda_scores",
]
