"""Registered criteria. Importing this package registers every built-in scorer."""

from . import grasp, hessian, lamp, magnitude, nisp, random, snip, synflow, taylor  # noqa: F401  (registers them)
from ._base import SCORERS, LazyScores, Scorer, ScoringInput, get_scorer, register_scorer

__all__ = ["SCORERS", "LazyScores", "Scorer", "ScoringInput", "get_scorer", "register_scorer"]
