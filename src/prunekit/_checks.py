"""Validation of user input at the public entry points (errors name the parameter and the fix)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def check_sparsity(value: Any, name: str = "sparsity") -> float:
    """Return ``value`` as a float in [0, 1), or raise naming ``name``, the value and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a float in [0, 1) (the fraction of weights removed), got {type(value).__name__} "
            f"{value!r}"
        )
    value = float(value)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1) (the fraction of weights removed, e.g. 0.9 keeps 10%), got {value!r}"
        )
    return value


def check_choice(value: Any, name: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
