"""Hugging Face transformers: GPT-2's ``Conv1D``, attention bookkeeping and config fields.

Nothing here imports ``transformers``: ``Conv1D`` is registered by its qualified name, attention
modules are recognised by their projections (``q_proj``/``k_proj``, ``query``/``key``, GPT-2's
``c_attn``) and their attributes (``head_dim``/``attention_head_size``, ``num_heads``/
``num_attention_heads``, ``all_head_size``/``split_size``).

After pruning, :func:`update_model` rewrites those attributes and the config (``hidden_size``,
``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``) so that
``save_pretrained`` writes a config that describes the pruned model. Where a config cannot say it
(BERT/GPT-2/ViT derive the head size as ``hidden_size // num_attention_heads``), the per-layer
``(heads, kv heads, head_dim, scaling)`` are also written as ``config.prunekit_attention`` and
:func:`load_pretrained` rebuilds the model from them.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .modules import HANDLERS, ModuleHandler

CONV1D = "transformers.pytorch_utils.Conv1D"
_HEAD_DIM = ("head_dim", "attention_head_size")
_NUM_HEADS = ("num_heads", "num_attention_heads")
_WIDTH = ("all_head_size", "split_size")
_MLP_UP = ("up_proj", "c_fc", "fc1")
_SCALE = ("scaling", "scale")  # the float that multiplies q·kᵀ, where a module stores one


def _conv1d_update(m: nn.Module) -> None:
    m.nx, m.nf = m.weight.shape  # weight (in, out)


HANDLERS.register(
    CONV1D, ModuleHandler(lambda m: {"weight": {0: "in", 1: "out"}, "bias": {0: "out"}}, _conv1d_update)
)


def _out(module: nn.Module | None) -> int | None:
    """Output width of a Linear or a GPT-2 Conv1D; ``None`` for anything else."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return int(module.nf)
    return None


def _in(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else int(module.nx)


def _projections(module: nn.Module) -> tuple[int, int, int] | None:
    """``(q width, k width, hidden in)`` of an attention module, ``None`` for other modules."""
    children = module._modules  # projections are submodules; plain getattr raises and catches per miss
    for q_name, k_name in (("q_proj", "k_proj"), ("query", "key")):
        q, k = children.get(q_name), children.get(k_name)
        if _out(q) is not None and _out(k) is not None:
            return _out(q), _out(k), _in(q)
    c_attn = children.get("c_attn")
    if _out(c_attn) is not None and not getattr(module, "is_cross_attention", False):
        width = _out(c_attn) // 3
        return width, width, _in(c_attn)
    return None


def _first(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), int)), None)


def update_attention(model: nn.Module, heads: str) -> list[tuple[int, int, int, float | None]]:
    """Set head counts and sizes of every attention module from its projections.

    ``heads == "heads"`` keeps each module's head size; ``"head_dim"`` keeps its head count (and its
    stored ``scaling``: the pruned model computes what the original did with those dims zeroed).
    Returns ``(heads, kv heads, head_dim, scaling or None)`` per attention module, in module order.
    """
    config = getattr(model, "config", None)
    found = []
    for module in model.modules():
        widths = _projections(module)
        d_attr = None if widths is None else _first(module, _HEAD_DIM)
        if widths is None or d_attr is None:
            continue
        q, k, _ = widths
        h_attr = _first(module, _NUM_HEADS)
        old_heads = getattr(module, h_attr) if h_attr else getattr(config, "num_attention_heads", None)
        keep_size = heads == "heads" or old_heads is None
        d = getattr(module, d_attr) if keep_size else q // old_heads
        setattr(module, d_attr, d)
        if h_attr:
            setattr(module, h_attr, q // d)
        for name in _WIDTH:
            if isinstance(getattr(module, name, None), int):
                setattr(module, name, q)
        scale = next((v for n in _SCALE if isinstance(v := getattr(module, n, None), float)), None)
        found.append((q // d, k // d, d, scale))
    return found


def attention_modules(model: nn.Module) -> list[str]:
    """Names of the attention modules whose head counts and sizes :func:`update_attention` maintains."""
    return [n for n, m in model.named_modules() if _projections(m) is not None and _first(m, _HEAD_DIM)]


def update_model(model: nn.Module, heads: str) -> None:
    """Update attention attributes and, for a transformers model, its config fields."""
    attention = update_attention(model, heads)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return
    hidden = [_projections(m)[2] for m in model.modules() if _projections(m) is not None]
    mlp = [w for name, m in model.named_modules() if _is_mlp_up(name) and (w := _out(m)) is not None]
    fields: dict[str, list[Any]] = {
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_attention_heads": [a[0] for a in attention],
        "num_key_value_heads": [a[1] for a in attention],
        "head_dim": [a[2] for a in attention],
    }
    present = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    if "n_inner" in present:  # GPT-2
        fields["n_inner"] = fields.pop("intermediate_size")
    differ = []
    for name, values in fields.items():
        if values and name in present:
            setattr(config, name, values[0])
            if len(set(values)) > 1:
                differ.append(f"{name} ({sorted(set(values))})")
    if differ:
        warnings.warn(
            f"layers of the pruned model differ in {', '.join(differ)}; the config keeps the first layer's "
            "values, so reload with prunekit.graph.hf.load_pretrained, not from_pretrained",
            stacklevel=3,
        )
    elif any(s is not None and not math.isclose(s, d**-0.5, rel_tol=1e-6) for *_, d, s in attention):
        warnings.warn(
            "the attention scaling of the pruned model is not 1/sqrt(head_dim) (head_dim was pruned, the "
            "scaling kept); the config cannot say so, so reload with prunekit.graph.hf.load_pretrained, "
            "not from_pretrained",
            stacklevel=3,
        )
    if attention:
        config.prunekit_attention = [list(a) for a in attention]


def _is_mlp_up(name: str) -> bool:
    local = name.rpartition(".")[2]
    return local in _MLP_UP or name.endswith("intermediate.dense")


def load_pretrained(model_class: type, directory: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a pruned transformers model saved with ``save_pretrained``, shapes from its weights.

    ``model_class`` is e.g. ``transformers.BertModel``. Needed where the config cannot describe the
    pruned model (see the module docstring); plain ``from_pretrained`` works where it can.
    """
    from .io import resize_to_shapes

    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {str(directory)!r}; save with save_pretrained")
    config = model_class.config_class.from_pretrained(directory)
    model = _instantiate(model_class, config)
    state, shapes, names = {}, {}, _checkpoint_names(model)
    for file in files:
        with safe_open(file, "pt") as f:
            shapes.update({names.get(k, k): tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
        state.update({names.get(k, k): v for k, v in load_file(file).items()})
    resize_to_shapes(model, shapes)
    attention = [model.get_submodule(name) for name in attention_modules(model)]
    for module, (h, kv, d, *scale) in zip(attention, getattr(config, "prunekit_attention", []), strict=False):
        for name in _SCALE:  # the model was built for another head size
            if scale and scale[0] is not None and isinstance(getattr(module, name, None), float):
                setattr(module, name, scale[0])
        values = {"num_key_value_groups": h // kv, **dict.fromkeys(_WIDTH, h * d)}
        values |= dict.fromkeys(_HEAD_DIM, d) | dict.fromkeys(_NUM_HEADS, h)
        for name, value in values.items():
            if isinstance(getattr(module, name, None), int):
                setattr(module, name, value)
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(
            f"{str(directory)!r} holds tensors {result.unexpected_keys[:4]} that {model_class.__name__} "
            "does not have; pass the class the model was saved from"
        )
    return model.eval()


def _checkpoint_names(model: nn.Module) -> dict[str, str]:
    """Saved tensor name → the model's state-dict name: transformers ≥ 5 saves some models under their
    original checkpoint names (DINOv2's ``attention.attention.query`` for ``attention.q_proj``)."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # older transformers save the module names as they are
        return {}
    state = model.state_dict()
    owner: dict[int, str] = {}
    for name, tensor in state.items():
        owner.setdefault(id(tensor), name)
    saved = revert_weight_conversion(model, dict(state))
    return {name: owner[id(tensor)] for name, tensor in saved.items() if id(tensor) in owner}


def _instantiate(model_class: type, config: Any) -> nn.Module:
    """``model_class(config)``; a config whose pruned head count does not divide ``hidden_size``
    is built with one head (the real counts are set from ``config.prunekit_attention``)."""
    try:
        return model_class(config)
    except ValueError:
        if not hasattr(config, "prunekit_attention"):
            raise
    heads = config.num_attention_heads
    config.num_attention_heads = 1
    try:
        model = model_class(config)
    finally:
        config.num_attention_heads = heads
    return model
