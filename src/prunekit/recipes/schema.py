"""A recipe: one YAML file describing a whole pruning job, validated completely before any work.

Top-level keys: ``model``, ``data``, ``method`` (with ``family``), optional ``pretrain`` / ``finetune``
budgets, ``export`` (list of formats), ``seed``, ``output``, ``title``. Relative file paths are read
relative to the recipe file; ``output`` relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..activations import select_layers
from ..zoo import get_model
from ._parse import RecipeError, build, check_keys, check_one_of, coerce, fail, read_yaml, wrapped
from .methods import FAMILIES, Activations, MethodSpec
from .sections import BUNDLED_HF, DataSpec, ModelSpec, TrainSpec, resolve_factory

EXPORTS = ("masks", "safetensors", "compressed", "onnx", "pretrained", "thresholds")
DEFAULT_EXPORTS = {
    "unstructured": ("masks", "safetensors"),
    "at_init": ("masks", "safetensors"),
    "lottery": ("masks", "safetensors"),
    "structured": ("safetensors",),
    "oneshot": ("masks", "pretrained"),
    "activations": ("safetensors",),
}
TOP_KEYS = ("title", "seed", "output", "model", "data", "method", "pretrain", "finetune", "export")
_PRETRAINS = ("unstructured", "structured", "activations")  # families that take pretrain
_NO_FINETUNE = ("lottery", "oneshot", "activations")


@dataclass(frozen=True)
class Recipe:
    """A validated job; every default is filled in (see :meth:`to_dict`)."""

    model: ModelSpec
    data: DataSpec
    method: MethodSpec
    pretrain: TrainSpec | None = None
    finetune: TrainSpec | None = None
    export: tuple[str, ...] = ()
    seed: int = 0
    output: str | None = None
    title: str | None = None

    def __post_init__(self) -> None:
        family = self.method.FAMILY
        hf_family = family == "oneshot"
        if self.model.is_hf != hf_family:
            field = "model.huggingface" if self.model.is_hf else "model"
            fail(
                field, f"family {family!r} needs {'a huggingface' if hf_family else 'a zoo or factory'} model"
            )
        if (self.data.text is not None) != hf_family:
            fail("data", f"family {family!r} needs {'text: shakespeare' if hf_family else 'a dataset'}")
        if self.pretrain is not None and family not in _PRETRAINS:
            fail("pretrain", f"does not apply to family {family!r}; remove it")
        if self.finetune is not None and family in _NO_FINETUNE:
            fail("finetune", f"does not apply to family {family!r} (lottery: method.epochs); remove it")
        if getattr(self.method, "schedule", None) == "gradual" and not (
            self.finetune and self.finetune.epochs
        ):
            fail(
                "finetune", "schedule 'gradual' prunes during fine-tuning; give finetune: {epochs: 1 or more}"
            )
        for i, kind in enumerate(self.export):
            check_one_of(kind, f"export[{i}]", EXPORTS, "export format")
            _check_export(kind, self.method, f"export[{i}]")
        if isinstance(self.method, Activations):
            _check_layers(self.model, self.method)

    @property
    def family(self) -> str:
        return self.method.FAMILY

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, dicts) with every default filled in; :func:`parse_recipe` reads it back."""
        out = _plain(dataclasses.asdict(self))
        out["method"] = {"family": self.family, **out["method"]}
        return {k: out[k] for k in TOP_KEYS if out[k] is not None}


def _check_export(kind: str, method: MethodSpec, field: str) -> None:
    family = method.FAMILY
    if kind == "masks" and family in ("structured", "activations"):
        why = "removes channels" if family == "structured" else "changes no weights"
        fail(field, f"{family} pruning {why} and has no masks; export safetensors instead")
    if kind == "thresholds" and getattr(method, "mode", None) != "threshold":
        fail(field, "'thresholds' (a JSON of per-layer thresholds) needs family activations, mode threshold")
    if kind == "pretrained" and family != "oneshot":
        fail(field, "'pretrained' (save_pretrained) needs a huggingface model")
    if kind == "onnx" and family == "oneshot":
        fail(field, "onnx export of Hugging Face models is not supported here; export pretrained")
    if kind == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        fail(field, "onnx export needs `pip install prunekit[onnx]` (onnx, onnxscript, onnxruntime)")


def _check_layers(model: ModelSpec, method: Activations) -> None:
    """Every ``method.layers`` / ``method.types`` entry matches a module of the model (built on meta)."""
    factory = get_model if model.zoo is not None else resolve_factory(model.factory or "")
    args = (model.zoo,) if model.zoo is not None else ()
    with torch.device("meta"):
        built = wrapped("model.args", lambda: factory(*args, **model.args))
    for field, specs in (("layers", method.layers), ("types", method.module_types)):
        for i, spec in enumerate(specs):
            wrapped(f"method.{field}[{i}]", lambda spec=spec: select_layers(built, [spec]))


def parse_recipe(raw: Any, base_dir: str | os.PathLike[str] | None = None) -> Recipe:
    """Validate a recipe given as plain values (e.g. parsed YAML); raises :class:`RecipeError`."""
    if not isinstance(raw, Mapping):
        raise RecipeError(
            "", f"a recipe is a mapping of keys ({', '.join(TOP_KEYS)}), got {type(raw).__name__}"
        )
    check_keys(raw, TOP_KEYS, "")
    for key in ("model", "data", "method"):
        if raw.get(key) is None:
            raise RecipeError(key, f"missing; every recipe needs the sections model, data and method{_HINT}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    method = _method(raw["method"])
    sections = {
        "model": build(ModelSpec, _with_paths(raw["model"], base), "model"),
        "data": build(DataSpec, raw["data"], "data"),
        "method": method,
        "pretrain": build(TrainSpec, raw["pretrain"], "pretrain")
        if raw.get("pretrain") is not None
        else None,
        "finetune": build(TrainSpec, raw["finetune"], "finetune")
        if raw.get("finetune") is not None
        else None,
        "export": coerce(raw.get("export", _default_export(method)), tuple[str, ...], "export"),
        "seed": coerce(raw.get("seed", 0), int, "seed"),
        "output": coerce(raw.get("output"), str | None, "output"),
        "title": coerce(raw.get("title"), str | None, "title"),
    }
    return Recipe(**sections)


_HINT = " (see examples/*.yaml)"


def _default_export(method: MethodSpec) -> tuple[str, ...]:
    extra = ("thresholds",) if getattr(method, "mode", None) == "threshold" else ()
    return (*DEFAULT_EXPORTS[method.FAMILY], *extra)


def _method(raw: Any) -> MethodSpec:
    if not isinstance(raw, Mapping):
        raise RecipeError("method", f"expected a mapping with a family key, got {type(raw).__name__} {raw!r}")
    family = raw.get("family")
    if family is None:
        raise RecipeError("method.family", f"missing; one of {', '.join(FAMILIES)}")
    try:
        check_one_of(family, "family", FAMILIES, "family")
    except RecipeError as err:
        raise err.under("method") from None
    rest = {k: v for k, v in raw.items() if k != "family"}
    return build(FAMILIES[family], rest, "method")


def _with_paths(raw: Any, base: Path) -> Any:
    """``raw`` with ``weights`` and ``huggingface`` paths made absolute against the recipe's folder."""
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    if isinstance(out.get("weights"), str):
        out["weights"] = str((base / out["weights"]).resolve())
    if isinstance(out.get("huggingface"), str) and out["huggingface"] not in BUNDLED_HF:
        out["huggingface"] = str((base / out["huggingface"]).resolve())
    return out


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe YAML file; relative file paths in it are relative to its folder."""
    raw, path = read_yaml(path, "recipe", RecipeError)
    return parse_recipe(raw, base_dir=path.parent)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (every default filled in)."""
    import yaml

    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
