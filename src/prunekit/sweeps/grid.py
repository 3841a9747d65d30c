"""Expand a sweep's grid into runs, each a recipe validated before any run starts."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..recipes import Recipe, RecipeError, parse_recipe
from .spec import SweepError, SweepSpec

_MAX_ID = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclass(frozen=True)
class Run:
    """One point of the grid: its values, the recipe it runs, and a stable id naming its folder."""

    values: tuple[tuple[str, Any], ...]
    recipe: Recipe

    @property
    def run_id(self) -> str:
        """``method.scorer=lamp,method.sparsity=0.9,seed=1`` (hash-suffixed if unsafe as a folder name)."""
        return run_id(self.values)

    @property
    def fingerprint(self) -> str:
        """A hash of the fully resolved recipe: a finished run is reused only if this still matches."""
        text = json.dumps(self.recipe.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def value_text(value: Any) -> str:
    """A grid value as YAML would spell it: ``0.9``, ``lamp``, ``true``, ``null``, ``[1, 2]``."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_id(values: tuple[tuple[str, Any], ...]) -> str:
    """The folder name of a run: ``key=value`` pairs joined by commas, filesystem-safe and stable."""
    text = ",".join(f"{key}={value_text(value)}" for key, value in values)
    safe = _UNSAFE.sub("_", text)
    if safe == text and len(text) <= _MAX_ID:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    return f"{safe[: _MAX_ID - 11]}-{digest}"


def expand(spec: SweepSpec) -> list[tuple[tuple[str, Any], ...]]:
    """The cartesian product of the grid, first key slowest: ``((key, value), …)`` per run."""
    keys = spec.keys
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in spec.grid))]


def plan_runs(spec: SweepSpec) -> list[Run]:
    """Every run of ``spec``, each recipe validated; the first invalid one raises :class:`SweepError`."""
    import yaml

    try:
        base = yaml.safe_load(spec.recipe.read_text())
    except yaml.YAMLError as err:
        raise SweepError(
            "recipe", f"{str(spec.recipe)!r} is not valid YAML: {' '.join(str(err).split())}"
        ) from None
    if not isinstance(base, Mapping):
        raise SweepError("recipe", f"{str(spec.recipe)!r} does not hold a recipe mapping")
    base = {k: v for k, v in base.items() if k != "output"}
    for key, value in spec.overrides:
        base = with_value(base, key, value, f"overrides[{key!r}]")
    runs = [_validated(spec, base, values) for values in expand(spec)]
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SweepError("grid", f"two grid points share the run id {dup!r}; make the grid values distinct")
    return runs


def with_value(raw: Mapping[str, Any], key: str, value: Any, field: str) -> dict[str, Any]:
    """A deep copy of ``raw`` with the dotted ``key`` set to ``value`` (missing sections created)."""
    out = copy.deepcopy(dict(raw))
    node = out
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, Mapping):
            child = node[part] = dict(child)
        else:
            section = ".".join(parts[: depth + 1])
            raise SweepError(
                field, f"cannot set {key!r}: the recipe's {section!r} is {child!r}, not a section"
            )
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


def _validated(spec: SweepSpec, base: dict[str, Any], values: tuple[tuple[str, Any], ...]) -> Run:
    raw = base
    for key, value in values:
        raw = with_value(raw, key, value, _grid_field(spec, key, value))
    try:
        return Run(values, parse_recipe(raw, base_dir=spec.recipe.parent))
    except RecipeError as err:
        raise SweepError(_blame(spec, values, err.path), str(err)) from None


def _grid_field(spec: SweepSpec, key: str, value: Any) -> str:
    """``grid['method.sparsity'][1]``: the grid key and the index of ``value`` in its list."""
    index = next(i for i, v in enumerate(dict(spec.grid)[key]) if v is value or v == value)
    return f"grid[{key!r}][{index}]"


def _blame(spec: SweepSpec, values: tuple[tuple[str, Any], ...], path: str) -> str:
    """The grid entry or override (the most specific) that a recipe error is about, else the grid point."""
    fields = {key: _grid_field(spec, key, value) for key, value in values}
    fields.update({key: f"overrides[{key!r}]" for key, _ in spec.overrides})

    def about(key: str) -> bool:
        return path == key or path.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{path}.")

    matches = sorted((key for key in fields if about(key)), key=len, reverse=True)
    return fields[matches[0]] if matches else f"grid point {run_id(values)}"
