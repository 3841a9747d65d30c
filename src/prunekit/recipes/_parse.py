"""Turning plain YAML values into frozen dataclasses, with errors that name the field path."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def read_yaml(
    path: str | os.PathLike[str], what: str, error: Callable[[str, str], ValueError]
) -> tuple[Any, Path]:
    """The parsed YAML of file ``path`` and the path; a missing file or bad YAML names ``what`` it was."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text()), path
    except yaml.YAMLError as err:
        raise error("", f"{str(path)!r} is not valid YAML: {' '.join(str(err).split())}") from None


class RecipeError(ValueError):
    """A recipe that cannot run: ``path`` names the field (``method.sparsity``), the message says why."""

    def __init__(self, path: str, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path or 'recipe'}: {message}")

    def under(self, prefix: str) -> RecipeError:
        """The same error with ``prefix`` put in front of its path."""
        return RecipeError(join(prefix, self.path), self.message)


def join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix}{key}" if not key or key.startswith("[") else f"{prefix}.{key}"


def check_keys(raw: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    """Raise for the first key of ``raw`` not in ``allowed``, suggesting the closest allowed key."""
    allowed = list(allowed)
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RecipeError(
                join(path, str(key)), f"unknown key; allowed keys are: {', '.join(allowed)}{hint}"
            )


def build(cls: type[T], raw: Any, path: str) -> T:
    """``cls(**raw)`` after checking keys and value types; errors from ``cls`` get ``path`` in front."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise RecipeError(path, f"expected a mapping of keys to values, got {type(raw).__name__} {raw!r}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    check_keys(raw, names, path)
    hints = typing.get_type_hints(cls)
    values = {key: coerce(value, hints[key], join(path, key)) for key, value in raw.items()}
    try:
        return cls(**values)
    except RecipeError as err:
        raise err.under(path) from None


def coerce(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked against the annotation ``tp`` (tuples from lists, floats from ints)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(path, f"expected a list of {_name(args[0])}, got {_got(value)}")
        return tuple(coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise RecipeError(path, f"expected a mapping with string keys, got {_got(value)}")
        return dict(value)
    if tp is float:
        return _float(value, path)
    if tp in (int, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise RecipeError(path, f"expected {_name(tp)}, got {_got(value)}")
    return value


def _float(value: Any, path: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise RecipeError(path, f"expected a number (float), got {_got(value)}")
    return float(value)


def _name(tp: Any) -> str:
    return {int: "int", float: "float", str: "string", bool: "bool (true/false)"}.get(tp, str(tp))


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def fail(field: str, message: str) -> typing.NoReturn:
    raise RecipeError(field, message)


def check_fraction(value: float | None, field: str, what: str = "the fraction of weights removed") -> None:
    """``value`` in [0, 1) unless ``None``."""
    if value is not None and not 0.0 <= value < 1.0:
        fail(field, f"must be in [0, 1) ({what}, e.g. 0.9 keeps 10%), got {value!r}")


def check_positive(value: int | None, field: str) -> None:
    if value is not None and value < 1:
        fail(field, f"must be a positive int, got {value!r}")


def check_one_of(value: str | None, field: str, allowed: Iterable[str], kind: str = "value") -> None:
    allowed = list(allowed)
    if value is not None and value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fail(field, f"unknown {kind} {value!r}; valid {kind}s are: {', '.join(allowed)}{hint}")


def wrapped(field: str, build_config: typing.Callable[[], T]) -> T:
    """Run a library config's own validation, reporting its ``ValueError``/``TypeError`` under ``field``."""
    try:
        return build_config()
    except (ValueError, TypeError) as err:
        raise RecipeError(field, str(err)) from None
