"""prunekit: pruning for PyTorch models — score, select, apply, measure."""

from .api import PruneResult, compute_masks, prune
from .masks import MaskedTraining, Masks
from .patterns import NM, Block, Element, parse_pattern
from .scoring import SCORERS, LazyScores, Scorer, ScoringInput, get_scorer, register_scorer
from .selection import LayerCollapseError, LayerCollapseWarning, prune_lowest, select
from .targets import PRUNABLE_TYPES, prunable_parameters

__version__ = "0.1.0"

__all__ = [
    "NM",
    "PRUNABLE_TYPES",
    "SCORERS",
    "Block",
    "Element",
    "LayerCollapseError",
    "LayerCollapseWarning",
    "LazyScores",
    "MaskedTraining",
    "Masks",
    "PruneResult",
    "Scorer",
    "ScoringInput",
    "compute_masks",
    "get_scorer",
    "parse_pattern",
    "prunable_parameters",
    "prune",
    "prune_lowest",
    "register_scorer",
    "select",
]
