"""Registered criteria. Importing this package registers every built-in scorer."""

from . import hessian, lamp, magnitude, random, taylor  # noqa: F401  (registration side effects)
from ._base import SCORERS, LazyScores, Scorer, ScoringInput, get_scorer, register_scorer

__all__ = ["SCORERS", "LazyScores", "Scorer", "ScoringInput", "get_scorer", "register_scorer"]
