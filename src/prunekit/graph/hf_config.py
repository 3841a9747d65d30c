"""The config fields of a pruned transformers model, read off its attention modules and FFN widths.

One table says which field holds what, across naming schemes: the hidden size, head counts and head
size of the attention modules (:func:`~.hf.update_attention`), and the FFN width, which is the output
width of the FFN's input projection (``up_proj``, ``c_fc``, ``fc1``, BERT's ``intermediate.dense``,
GPT-NeoX/BLOOM's ``dense_h_to_4h``, GPT-J's ``fc_in``, T5's ``wi``/``wi_0``/``wi_1``, DistilBERT's
``lin1``, half of Phi-3's fused ``gate_up_proj``, the fused ``experts`` of a mixture of experts). A
field with a scope (BART/Whisper's ``encoder_ffn_dim``) reads only the modules under that path
component. ``head_dim`` is written where the config has it, or where the attention class reads
``config.head_dim`` when set (Qwen2: once heads are removed, ``hidden_size // num_attention_heads`` is
no longer the head size).
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .hf import Attention, _out, _projections, update_attention
from .io import layer_sizes
from .stored_sizes import stored_numbers
from .walk import named_modules

_ATTENTION = ("hidden", "heads", "kv_heads", "head_dim")
_UP = ("up_proj", "c_fc", "fc1", "intermediate.dense", "dense_h_to_4h", "gate_up_proj")
# (config field, path scope or "" for all modules, what it holds: _ATTENTION quantities or the output
# width of the named FFN input projections). Scoped rows come first: a field that is an alias of one
# already written (BART's num_attention_heads is encoder_attention_heads) is skipped.
_FIELDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("encoder_attention_heads", "encoder", ("heads",)),
    ("decoder_attention_heads", "decoder", ("heads",)),
    ("encoder_ffn_dim", "encoder", ("fc1",)),
    ("decoder_ffn_dim", "decoder", ("fc1",)),
    ("shared_expert_intermediate_size", "shared_expert", _UP),  # Qwen2-MoE's always-on expert
    ("moe_intermediate_size", "", ("experts",)),
    ("hidden_size", "", ("hidden",)),
    ("num_attention_heads", "", ("heads",)),
    ("num_key_value_heads", "", ("kv_heads",)),
    ("head_dim", "", ("head_dim",)),
    ("intermediate_size", "", (*_UP, "experts")),  # Mixtral's experts
    ("n_inner", "", ("c_fc", "fc_in")),
    ("ffn_dim", "", ("fc1",)),
    ("d_ff", "", ("wi", "wi_0", "wi_1")),
    ("hidden_dim", "", ("lin1",)),
)
_FFN = tuple(dict.fromkeys(s for _, _, sources in _FIELDS for s in sources if s not in _ATTENTION))
_FUSED_FFN = {"gate_up_proj": 2}  # gate and up projections in one: the FFN width is half the output
_READS_HEAD_DIM = re.compile(r'config\.head_dim\b|config, "head_dim"')


def update_model(model: nn.Module, heads: str, widths_before: Mapping[str, int] | None = None) -> None:
    """Update attention attributes (``widths_before``: see :func:`~.hf.update_attention`) and the config
    fields of every transformers model in ``model`` (the model itself, or one a user's module wraps).

    Warns where the layers differ (the config keeps the first layer's values), where the attention
    scale was kept for a pruned head size, or where a model built from the config gets other shapes
    (no config field holds these): reload with :func:`~.hf.load_pretrained` there.
    """
    attention = update_attention(model, heads, widths_before)
    for prefix, hf_model in _transformers_models(model):
        inner = {name[len(prefix) :]: a for name, a in attention.items() if name.startswith(prefix)}
        _update_config(hf_model, inner)


def _transformers_models(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name prefix, module)`` of the outermost modules that are transformers models (a config with
    ``to_dict`` and ``save_pretrained``): ``model`` itself, or those a user's module holds."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in named_modules(model):
        if any(name.startswith(prefix) for prefix, _ in found):
            continue
        if "config" not in vars(module) and not hasattr(type(module), "config"):
            continue  # asked of every module: no attribute lookup that misses (and raises inside torch)
        if hasattr(getattr(module, "config", None), "to_dict") and hasattr(module, "save_pretrained"):
            found.append((f"{name}." if name else "", module))
    return found


def _update_config(model: nn.Module, attention: dict[str, Attention]) -> None:
    """Write ``model.config``'s fields from its modules (``attention``: by name within ``model``)."""
    config = model.config
    aliases = getattr(config, "attribute_map", {})
    present = set(config.to_dict()) | set(aliases)
    if any(_reads_head_dim(type(model.get_submodule(name))) for name in attention):
        present.add("head_dim")
    values = _values(model, attention)
    written: set[str] = set()
    differ = []
    original = dict(getattr(config, "prunekit_original", {}))  # kept across repeated pruning
    read: set[tuple[str, str]] = set()  # (module, what) a field holds already: Qwen2-MoE's experts and
    for field, scope, sources in _FIELDS:  # shared expert have fields of their own, not intermediate_size
        rows = [
            (n, s, v) for n, s, v in values if s in sources and _in_scope(n, scope) and (n, s) not in read
        ]
        found = [v for _, _, v in rows]
        if not found or field not in present or aliases.get(field, field) in written:
            continue
        read.update((n, s) for n, s, _ in rows)
        if isinstance(getattr(config, field, None), (list, tuple)):  # per stage (Swin's num_heads)
            continue  # a layer-to-stage map is the model's own; load_pretrained rebuilds from the weights
        original.setdefault(field, getattr(config, field, None))
        setattr(config, field, found[0])
        written.add(aliases.get(field, field))
        if len(set(found)) > 1:
            differ.append(f"{field} ({sorted(set(found))})")
    stale_scale, rebuilt_other = any(a.stale_scale for a in attention.values()), _config_rebuilds_other(model)
    _warn(differ, stale_scale, rebuilt_other)
    if differ or stale_scale or rebuilt_other:  # load_pretrained sets what the config cannot say
        config.prunekit_layers = layer_sizes(model)
    _check_config(config)
    if attention:
        config.prunekit_attention = [[a.heads, a.kv_heads, a.head_dim, a.scale] for a in attention.values()]
    if original:  # load_pretrained builds the unpruned architecture (its derived sizes: rotary tables …)
        config.prunekit_original = original


def _values(model: nn.Module, attention: dict[str, Attention]) -> list[tuple[str, str, Any]]:
    """``(module name, what, value)``: attention hidden sizes, head counts and sizes, FFN widths."""
    found = []
    for name, module in model.named_modules():
        if (widths := _projections(module)) is not None:
            found.append((name, "hidden", widths[2]))
        if (a := attention.get(name)) is not None:
            found += [(name, "heads", a.heads), (name, "kv_heads", a.kv_heads)]
            found.append((name, "head_dim", a.head_dim))
        source = next((s for s in _FFN if name == s or name.endswith(f".{s}")), None)
        if source is not None and (width := _ffn_width(module)) is not None:
            found.append((name, source, width // _FUSED_FFN.get(source, 1)))
    return found


def _ffn_width(module: nn.Module) -> int | None:
    """Output width of an FFN input projection, or the width of fused experts (a mixture of experts'
    ``down_proj`` parameter ``(experts, hidden, width)``)."""
    down = module._parameters.get("down_proj")
    return down.shape[-1] if down is not None and down.dim() == 3 else _out(module)


def _in_scope(name: str, scope: str) -> bool:
    return not scope or scope in name.split(".")


@functools.cache
def _reads_head_dim(cls: type) -> bool:
    """Whether ``cls`` (or a base outside torch) reads ``config.head_dim``, e.g. LLaMA and Qwen2's
    ``getattr(config, "head_dim", hidden_size // num_attention_heads)``."""
    for base in cls.__mro__:
        if base is object or base.__module__.startswith("torch."):
            continue
        try:
            if _READS_HEAD_DIM.search(inspect.getsource(base)):
                return True
        except (OSError, TypeError):  # no source (a class built at run time)
            continue
    return False


def _config_rebuilds_other(model: nn.Module) -> str | None:
    """What differs in ``type(model)(model.config)`` (what ``from_pretrained`` builds; on the meta device,
    ~10 ms for ViT-B) from ``model``: ``"shapes"`` (BERT derives the head size as ``hidden_size //
    num_attention_heads``, BLOOM its FFN width as ``4 · hidden_size``; no field can say otherwise),
    ``"constants"`` (a number a module derives from the config at build time, such as Gemma's embedding
    scale ``√hidden_size``, which the pruned model keeps from the unpruned one), or ``None``.

    Where the shapes agree, widths and head counts that differ (:func:`~.stored_sizes.stored_numbers`)
    are sizes the config now states and a module stored unpruned (T5 attention's ``d_model``, MPNet's
    head count for its position bias): they are set to the rebuilt model's, so the pruned model is what
    ``from_pretrained`` will build."""
    try:
        with torch.device("meta"):
            rebuilt = type(model)(copy.deepcopy(model.config))
    except Exception:
        return "shapes"
    shapes = {name: tensor.shape for name, tensor in rebuilt.state_dict().items()}
    if any(name in shapes and shapes[name] != t.shape for name, t in model.state_dict().items()):
        return "shapes"
    built, found = dict(rebuilt.named_modules()), None
    for name, module in model.named_modules():
        other = vars(built[name]) if name in built and type(built[name]) is type(module) else {}
        sizes = stored_numbers(module)
        for attr, value in list(vars(module).items()):
            rebuilt_value = other.get(attr)
            if attr in sizes and type(value) is int and type(rebuilt_value) is int and rebuilt_value != value:
                setattr(module, attr, rebuilt_value)
            elif type(value) is float and type(rebuilt_value) is float and value == value != rebuilt_value:
                found = "constants"
    return found


def _check_config(config: Any) -> None:
    """Warn where transformers' own validation of the pruned config fails (transformers 5 validates on
    ``save_pretrained``: Llama's ``hidden_size % num_attention_heads``, Falcon's even rotary head size)."""
    validate = getattr(config, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except Exception as error:
        reason = str(error).strip().splitlines()[-1].strip()
        warnings.warn(
            f"the pruned config fails transformers' own validation ({reason}), so "
            "save_pretrained will refuse it; keep the widths it checks multiples of what it needs (e.g. "
            "build_plan(..., round_to=num_attention_heads) for the residual width), or save with "
            "prunekit.graph.save_pruned",
            stacklevel=5,
        )


def _warn(differ: list[str], stale_scale: bool, rebuilt_other: str | None) -> None:
    if differ:
        warnings.warn(
            f"layers of the pruned model differ in {', '.join(differ)}; the config keeps the first layer's "
            "values, so reload with prunekit.graph.hf.load_pretrained, not from_pretrained",
            stacklevel=5,
        )
    elif stale_scale:
        warnings.warn(
            "the attention scaling of the pruned model is not 1/sqrt(head_dim) (head_dim was pruned, the "
            "scaling kept); the config cannot say so, so reload with prunekit.graph.hf.load_pretrained, "
            "not from_pretrained",
            stacklevel=5,
        )
    elif rebuilt_other is not None:
        what = {
            "shapes": "other shapes than the pruned model (the config derives a head size or FFN width it "
            "cannot state)",
            "constants": "other constants than the pruned model (a number derived from a pruned size at "
            "build time, such as an embedding scale √hidden_size, which the pruned model keeps unpruned)",
        }[rebuilt_other]
        warnings.warn(
            f"a model built from the pruned config has {what}; reload with "
            "prunekit.graph.hf.load_pretrained, not from_pretrained",
            stacklevel=5,
        )
