"""A sweep spec: one recipe run over a grid of values (methods × sparsities × seeds …), as YAML.

Keys: ``recipe`` (file, relative to the sweep file), ``grid`` (dotted recipe field → list of values),
optional ``overrides`` (dotted recipe field → one value, for every run), ``workers``, ``backend``
(``local`` or ``ray``), ``threads`` (torch threads per run) and ``output`` (relative to the working
directory, like a recipe's).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..recipes._parse import read_yaml
from ..recipes.schema import TOP_KEYS

BACKENDS = ("local", "ray")
SPEC_KEYS = ("recipe", "grid", "overrides", "workers", "backend", "threads", "output")
_SET_BY_SWEEP = ("output",)  # recipe fields the sweep sets itself: one folder per run


class SweepError(ValueError):
    """A sweep that cannot run: ``path`` names the field (``grid['method.sparsity'][1]``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path or 'sweep'}: {message}")


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep; ``grid`` and ``overrides`` keep the order of the YAML file.

    Args:
        recipe: the recipe file every run starts from.
        grid: ``(dotted field, values)`` pairs; the sweep runs their cartesian product.
        output: folder of the tables; run ``i`` writes into ``output/runs/<run id>/``.
        overrides: ``(dotted field, value)`` pairs set in every run (e.g. a smaller budget).
        workers: runs at the same time (worker processes, or Ray CPUs of a local Ray instance).
        backend: ``local`` (a process pool on this machine) or ``ray`` (``pip install prunekit[ray]``).
        threads: torch intra-op threads of each run.
    """

    recipe: Path
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    output: Path
    overrides: tuple[tuple[str, Any], ...] = ()
    workers: int = 1
    backend: str = "local"
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.grid:
            raise SweepError("grid", "is empty; map recipe fields to lists, e.g. grid: {seed: [0, 1, 2]}")
        for key, values in self.grid:
            check_path(key, f"grid[{key!r}]")
            if not isinstance(values, tuple) or not values:
                raise SweepError(f"grid[{key!r}]", f"must be a non-empty list of values, got {values!r}")
        for key, _ in self.overrides:
            check_path(key, f"overrides[{key!r}]")
            if key in dict(self.grid):
                raise SweepError(f"overrides[{key!r}]", "is also a grid key; keep it in one of the two")
        if self.backend not in BACKENDS:
            raise SweepError("backend", f"unknown backend {self.backend!r}; valid backends are: local, ray")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SweepError(name, f"must be a positive int, got {value!r}")

    @property
    def keys(self) -> tuple[str, ...]:
        """The grid's dotted fields, in order."""
        return tuple(key for key, _ in self.grid)


def check_path(key: Any, field: str) -> None:
    """``key`` is a dotted recipe path whose first part is a recipe section (``method.sparsity``)."""
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise SweepError(field, f"must be a dotted recipe field such as 'method.sparsity', got {key!r}")
    top = key.split(".")[0]
    if top in _SET_BY_SWEEP:
        raise SweepError(
            field, f"{top!r} is set by the sweep (one folder per run under output/runs); remove it"
        )
    if top not in TOP_KEYS:
        close = difflib.get_close_matches(top, TOP_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SweepError(
            field, f"unknown recipe field {key!r}; a path starts with one of {', '.join(TOP_KEYS)}{hint}"
        )


def parse_sweep(raw: Any, base_dir: str | os.PathLike[str] | None = None) -> SweepSpec:
    """Validate a sweep given as plain values (parsed YAML); ``recipe`` is relative to ``base_dir``."""
    if not isinstance(raw, Mapping):
        raise SweepError(
            "", f"a sweep is a mapping of keys ({', '.join(SPEC_KEYS)}), got {type(raw).__name__}"
        )
    for key in raw:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SweepError(str(key), f"unknown key; allowed keys are: {', '.join(SPEC_KEYS)}{hint}")
    for key in ("recipe", "grid", "output"):
        if raw.get(key) is None:
            raise SweepError(key, "missing; a sweep needs recipe, grid and output (see examples/sweeps/)")
    recipe = _string(raw["recipe"], "recipe")
    path = (Path(base_dir) if base_dir is not None else Path.cwd()) / recipe
    if not path.is_file():
        raise SweepError(
            "recipe", f"file {str(path)!r} does not exist; give the recipe's path relative to the sweep"
        )
    return SweepSpec(
        recipe=path.resolve(),
        grid=tuple((key, _values(key, values)) for key, values in _mapping(raw["grid"], "grid").items()),
        output=Path(_string(raw["output"], "output")),
        overrides=tuple(_mapping(raw.get("overrides") or {}, "overrides").items()),
        workers=raw.get("workers", 1),
        backend=raw.get("backend", "local"),
        threads=raw.get("threads", 1),
    )


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a sweep YAML file."""
    raw, path = read_yaml(path, "sweep", SweepError)
    return parse_sweep(raw, base_dir=path.parent)


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SweepError(
            field, f"expected a mapping of dotted recipe fields, got {type(value).__name__} {value!r}"
        )
    return value


def _values(key: str, values: Any) -> tuple[Any, ...]:
    if not isinstance(values, (list, tuple)):
        raise SweepError(f"grid[{key!r}]", f"must be a list of values such as [0.5, 0.9], got {values!r}")
    return tuple(values)


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise SweepError(field, f"expected a path (string), got {type(value).__name__} {value!r}")
    return value
