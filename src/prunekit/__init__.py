"""prunekit: pruning for PyTorch models — score, select, apply, measure."""

from ._kselect import prune_lowest
from .api import PruneResult, compute_masks, prune
from .at_init import compression_to_sparsity, iterative_masks
from .checkpoints import load_weights, read_weights, save_weights
from .collapse import CollapseCurve, CollapseReport, analyse_collapse, collapse_curve
from .lottery import LotteryConfig, LotteryResult, RunResult, find_ticket
from .masks import MaskedTraining, Masks
from .metrics import (
    count_nonzeros,
    count_parameters,
    dense_bytes,
    layer_macs,
    measure_latency,
    nonzero_bytes,
    sparse_macs,
)
from .oneshot import (
    OneShotConfig,
    OneShotResult,
    StructuredConfig,
    StructuredResult,
    prune_oneshot,
    prune_structured_oneshot,
)
from .patterns import NM, Block, Element, parse_pattern
from .report import LayerRow, PruningReport, build_report
from .schedules import GradualPruning, IterativeResult, iterative_prune, sparsity_steps
from .scoring import SCORERS, LazyScores, Scorer, ScoringInput, get_scorer, register_scorer
from .selection import LayerCollapseError, LayerCollapseWarning, select
from .targets import PRUNABLE_TYPES, prunable_parameters

__version__ = "0.1.0"

__all__ = [
    "NM",
    "PRUNABLE_TYPES",
    "SCORERS",
    "Block",
    "CollapseCurve",
    "CollapseReport",
    "Element",
    "GradualPruning",
    "IterativeResult",
    "LayerCollapseError",
    "LayerCollapseWarning",
    "LayerRow",
    "LazyScores",
    "LotteryConfig",
    "LotteryResult",
    "MaskedTraining",
    "Masks",
    "OneShotConfig",
    "OneShotResult",
    "PruneResult",
    "PruningReport",
    "RunResult",
    "Scorer",
    "ScoringInput",
    "StructuredConfig",
    "StructuredResult",
    "analyse_collapse",
    "build_report",
    "collapse_curve",
    "compression_to_sparsity",
    "compute_masks",
    "count_nonzeros",
    "count_parameters",
    "dense_bytes",
    "find_ticket",
    "get_scorer",
    "iterative_masks",
    "iterative_prune",
    "layer_macs",
    "load_weights",
    "measure_latency",
    "nonzero_bytes",
    "parse_pattern",
    "prunable_parameters",
    "prune",
    "prune_lowest",
    "prune_oneshot",
    "prune_structured_oneshot",
    "read_weights",
    "register_scorer",
    "save_weights",
    "select",
    "sparse_macs",
    "sparsity_steps",
]
