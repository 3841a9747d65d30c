"""Hugging Face transformers: GPT-2's ``Conv1D``, attention bookkeeping and reloading pruned models.

Nothing here imports ``transformers`` at import time: ``Conv1D`` is registered by its qualified name,
attention modules are recognised by their projections (``q_proj``/``k_proj``, ``query``/``key``,
``q_lin``/``k_lin``, ``q``/``k``, Meta Llama's ``wq``/``wk``, a fused ``c_attn``, ``query_key_value``,
``Wqkv``, timm's ``qkv`` or ``to_qkv``, Phi-3's sliced ``qkv_proj``) and their attributes (``head_dim``/
``attention_head_size``/``key_value_proj_dim``, ``num_heads``/``num_attention_heads``/``n_heads``/
``n_head``/``n_local_heads``/``heads``, ``all_head_size``/``split_size``/``inner_dim``, kv head counts and
``num_key_value_groups``/``n_rep``). A module may store a head count without a head size: the size is
then its query width before pruning over that count.

After pruning, :func:`update_attention` rewrites those attributes and
:func:`prunekit.graph.hf_config.update_model` the config fields, so that ``save_pretrained`` writes a
config that describes the pruned model. Where a config cannot say it (BERT/GPT-2/ViT derive the head
size as ``hidden_size // num_attention_heads``), the per-layer ``(heads, kv heads, head_dim, scaling)``
are also written as ``config.prunekit_attention``, the replaced config values as
``config.prunekit_original``, and :func:`load_pretrained` builds the unpruned architecture from them
(sizes the model derives from its config stay right), cuts it to the saved shapes and sets the heads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from .modules import HANDLERS, ModuleHandler
from .trace import Ref, Trace
from .walk import named_modules

CONV1D = "transformers.pytorch_utils.Conv1D"
_HEAD_DIM = ("head_dim", "attention_head_size", "key_value_proj_dim", "head_size")
# Meta Llama / llama2.c store n_local_heads, nanoGPT n_head, vit-pytorch heads
_NUM_HEADS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "n_local_heads", "heads")
# the query width (heads · head size); Hiera and CvT store it as hidden_size_output and embed_dim
_WIDTH = ("all_head_size", "split_size", "inner_dim", "hidden_size_output", "embed_dim")
# the number q·kᵀ is multiplied (or, GPT-J's 0-dim tensor scale_attn, divided) by, where a module stores one
_SCALE = ("scaling", "scale", "inv_norm_factor", "scale_attn")
_HEAD_FIELDS = ("num_attention_heads", "encoder_attention_heads", "decoder_attention_heads")  # config
_QK = (("q_proj", "k_proj"), ("query", "key"), ("q_lin", "k_lin"), ("q", "k"), ("wq", "wk"))
_QK += (("projection_query", "projection_key"), ("q_content_proj", "k_content_proj"))  # CvT, Conditional DETR
_FUSED_QKV = ("c_attn", "query_key_value", "Wqkv", "qkv", "to_qkv")  # q, k and v in equal thirds …
_UNEQUAL_QKV = ("is_cross_attention", "multi_query", "new_decoder_architecture")  # … unless one is set
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_local_kv_heads")  # … or kv heads differ
_GROUPS = ("num_key_value_groups", "n_rep")  # q heads per kv head
# Fused projections the model slices into q, k and v with bounds it computes from the head counts that
# pruning updates (Phi-3: ``qkv[..., :config.num_attention_heads * head_dim]``). Slices that tile such an
# output pass channels through (see :func:`prunekit.graph.rules_shape.tiled_slices`); elsewhere a partial
# slice pins its dim.
SLICED_QKV = ("qkv_proj",)
# Fused projections of unequal q, k and v widths, and the output projection whose input width is the
# q width (k and v share the rest): Phi-3; Falcon's multi-query and grouped ("new decoder") layouts.
_QKV_AND_OUT = {"qkv_proj": "o_proj", "query_key_value": "dense"}
_GROUPED_QKV = ("multi_query", "new_decoder_architecture")


class Attention(NamedTuple):
    """An attention module after pruning; ``stale_scale``: its stored scale followed the head size,
    which pruning changed (a model built from the config would compute another)."""

    heads: int
    kv_heads: int
    head_dim: int
    scale: float | None
    stale_scale: bool


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


def _equal_kv(module: nn.Module) -> bool:
    """False where the module stores a kv head count other than its head count (grouped-query)."""
    kv, heads = _first(module, _KV_HEADS), _first(module, _NUM_HEADS)
    return kv is None or heads is None or getattr(module, kv) == getattr(module, heads)


def _in(module: nn.Module) -> int:
    return module.in_features if isinstance(module, nn.Linear) else int(module.nx)


def _projections(module: nn.Module) -> tuple[int, int, int] | None:
    """``(q width, k width, hidden in)`` of an attention module, ``None`` for other modules."""
    children = module._modules  # projections are submodules; plain getattr raises and catches per miss
    if not any(_out(child) is not None for child in children.values()):  # a leaf (a conv, a norm …), or
        return None  # a block of convs: asked of every module, so answered first
    for q_name, k_name in _QK:
        q, k = children.get(q_name), children.get(k_name)
        if _out(q) is not None and _out(k) is not None:
            return _out(q), _out(k), _in(q)
    for fused_name, out_name in _QKV_AND_OUT.items():
        fused, out = children.get(fused_name), children.get(out_name)
        unequal = fused_name in SLICED_QKV or any(getattr(module, n, False) for n in _GROUPED_QKV)
        if unequal and _out(fused) is not None and _out(out) is not None:
            q = _in(out)  # q heads · head_dim; k and v share the rest equally
            return q, (_out(fused) - q) // 2, _in(fused)
    fused = next((children[n] for n in _FUSED_QKV if _out(children.get(n)) is not None), None)
    if fused is not None and not any(getattr(module, n, False) for n in _UNEQUAL_QKV) and _equal_kv(module):
        width = _out(fused) // 3
        return width, width, _in(fused)
    return None


def check_sliced_qkv(trace: Trace, expected: list[tuple[int, ...]]) -> None:
    """Raise ``ValueError`` if a plan keeps different q widths in the projections :data:`SLICED_QKV` names
    that were equal: Phi-3 computes the q bound from ``config.num_attention_heads``, which its layers
    share. ``expected`` is the shape of every node after pruning."""
    fused = {
        Ref(node): name
        for name, node in trace.module_outputs.items()
        if name.rpartition(".")[2] in SLICED_QKV
    }
    widths: dict[str, tuple[int, int]] = {}  # module → q width before, after
    for op in trace.ops if fused else ():
        if op.name == "slice" and op.args[0] in fused and op.args[2:3] in ((0,), (None,), ()):
            out = op.outputs[0].node
            widths[fused[op.args[0]]] = (trace.shapes[out][-1], expected[out][-1])
    if len({w for w, _ in widths.values()}) == 1 and len({k for _, k in widths.values()}) > 1:
        found = ", ".join(f"{name} {k}" for name, (_, k) in list(widths.items())[:4])
        found += " …" if len(widths) > 4 else ""
        raise ValueError(
            f"the plan keeps q slices of different widths in the fused qkv projections ({found}), but the "
            "model finds where q ends with one config.num_attention_heads that all layers share (Phi-3). "
            "Nothing was changed. Fix: remove the same number of heads in every layer "
            "(global_ranking=False), or keep the attention layers whole with ignore=[...]"
        )


def _first(module: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if isinstance(getattr(module, n, None), int)), None)


def query_widths(model: nn.Module) -> dict[str, int]:
    """Query width (heads · head size) of every attention module :func:`update_attention` maintains,
    by module name: taken before pruning, it gives the head size of a module that stores only a count."""
    return {name: _projections(model.get_submodule(name))[0] for name in attention_modules(model)}


def update_attention(
    model: nn.Module, heads: str, widths_before: Mapping[str, int] | None = None
) -> dict[str, Attention]:
    """Set head counts and sizes of every attention module from its projections.

    ``heads == "heads"`` keeps each module's head size; ``"head_dim"`` keeps its head count (and its
    stored scale: the pruned model computes what the original did with those dims zeroed).
    ``widths_before`` (:func:`query_widths` of the unpruned model) gives the head size of modules that
    store only a head count. Returns each attention module's :class:`Attention` by module name, in
    module order.
    """
    config = getattr(model, "config", None)
    widths_before = widths_before or {}
    found = {}
    for name, module in named_modules(model):
        widths = _projections(module)
        if widths is None:
            continue
        q, k, _ = widths
        d_attr, h_attr = _first(module, _HEAD_DIM), _first(module, _NUM_HEADS)
        old_heads = getattr(module, h_attr) if h_attr else getattr(config, "num_attention_heads", None)
        if d_attr is not None:
            old_d = getattr(module, d_attr)
        elif h_attr is not None and name in widths_before and widths_before[name] % old_heads == 0:
            old_d = widths_before[name] // old_heads
        else:
            continue
        if widths_before.get(name) == q:  # its projections kept their widths: nothing to rewrite (and a
            kv = _first(module, _KV_HEADS)  # fused qkv of unequal thirds would be misread)
            kv_heads = getattr(module, kv) if kv else k // old_d
            found[name] = Attention(old_heads or q // old_d, kv_heads, old_d, _stored_scale(module), False)
            continue
        d = old_d if heads == "heads" or old_heads is None else q // old_heads
        if d <= 0 or q % d or k % d:
            raise ValueError(
                f"pruning left module {name!r} ({type(module).__name__}) query and key widths {q} and {k}, "
                f"which are not whole heads of {d} (heads={heads!r}): its heads are laid out in a way the "
                f"graph did not recognise. Fix: keep it whole with ignore=[{name!r}], or try the other "
                "heads mode"
            )
        if d_attr is not None:
            setattr(module, d_attr, d)
        if h_attr:
            setattr(module, h_attr, q // d)
        for attr in _WIDTH:
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, q)
        counts = {**dict.fromkeys(_GROUPS, q // k), **dict.fromkeys(_KV_HEADS, k // d)}  # grouped-query:
        for attr, value in counts.items():  # q heads per kv head change once the kv heads are down to one
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, value)
        scale = _stored_scale(module)
        derived = scale is not None and any(math.isclose(scale, old_d**p, rel_tol=1e-6) for p in (-0.5, 0.5))
        stale = derived and d != old_d
        found[name] = Attention(q // d, k // d, d, scale, stale)
    return found


def _stored_scale(module: nn.Module) -> float | None:
    """The number q·kᵀ is scaled by, where ``module`` stores one (:data:`_SCALE`)."""
    return next((v for n in _SCALE if (v := _scalar(getattr(module, n, None))) is not None), None)


def _scalar(value: object) -> float | None:
    """A float, or the value of a one-element tensor (GPT-J's ``scale_attn``); ``None`` otherwise."""
    if isinstance(value, float):
        return value
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else None


def _like(built: object, value: float) -> object:
    """``value`` as the type of the attribute it replaces (a float, or a tensor of its dtype)."""
    return (
        torch.tensor(value, dtype=built.dtype, device=built.device)
        if isinstance(built, torch.Tensor)
        else value
    )


def attention_modules(model: nn.Module) -> list[str]:
    """Names of the attention modules whose head counts and sizes :func:`update_attention` maintains."""
    return [
        n
        for n, m in named_modules(model)
        if _projections(m) is not None and (_first(m, _HEAD_DIM) or _first(m, _NUM_HEADS))
    ]


def load_pretrained(model_class: type, directory: str | os.PathLike[str], **model_kwargs: Any) -> nn.Module:
    """Rebuild a pruned transformers model saved with ``save_pretrained``, shapes from its weights.

    ``model_class`` is e.g. ``transformers.BertModel``; ``model_kwargs`` go to its constructor beside
    the config, as for ``from_pretrained`` (``add_pooling_layer=False``). Needed where the config cannot
    describe the pruned model (see the module docstring); plain ``from_pretrained`` works where it can.
    Raises ``ValueError`` where the checkpoint lacks tensors the built model has, or holds others.
    """
    from .io import resize_to_shapes, set_layer_sizes

    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {str(directory)!r}; save with save_pretrained")
    config = model_class.config_class.from_pretrained(directory)
    original = getattr(config, "prunekit_original", {})
    pruned = {name: getattr(config, name) for name in original}
    for name, value in original.items():  # build what was pruned: sizes derived from the config
        if value is None and name in vars(config):  # (GPT-NeoX's rotary dims from hidden_size //
            delattr(config, name)  # heads) stay right; a field pruning added (head_dim) goes again
        else:
            setattr(config, name, value)
    model = _instantiate(model_class, config, model_kwargs)
    for name, value in pruned.items():
        setattr(model.config, name, value)
    state, shapes, names = {}, {}, _checkpoint_names(model)
    for file in files:
        with safe_open(file, "pt") as f:
            shapes.update({names.get(k, k): tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
        state.update({names.get(k, k): v for k, v in load_file(file).items()})
    pieces = {k: v for k, v in shapes.items() if k not in names.values()}
    if pieces:  # saved in another layout (one tensor per expert of a fused experts tensor): put back
        fused = [name for name in model.state_dict() if name not in shapes]  # only these are tagged
        shapes.update(_fused_shapes(model, pieces, fused))
    resize_to_shapes(model, shapes)
    if pieces:
        state = _fused_state(model, state, set(pieces), fused)
    attention = [model.get_submodule(name) for name in attention_modules(model)]
    for module, (h, kv, d, *scale) in zip(attention, getattr(config, "prunekit_attention", []), strict=False):
        for name in _SCALE:  # the model was built for another head size
            if scale and scale[0] is not None and (built := getattr(module, name, None)) is not None:
                setattr(module, name, _like(built, scale[0]))
        values = {**dict.fromkeys(_GROUPS, h // kv), **dict.fromkeys(_WIDTH, h * d)}
        values |= dict.fromkeys(_HEAD_DIM, d) | dict.fromkeys(_NUM_HEADS, h) | dict.fromkeys(_KV_HEADS, kv)
        for name, value in values.items():
            if isinstance(getattr(module, name, None), int):
                setattr(module, name, value)
    set_layer_sizes(model, getattr(config, "prunekit_layers", {}))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(
            f"{str(directory)!r} holds tensors {result.unexpected_keys[:4]} that {model_class.__name__} "
            "does not have; pass the class the model was saved from (or transformers saved them in a layout "
            "its weight conversions for this class do not map back)"
        )
    if missing := _untied(model, result.missing_keys, set(state)):
        raise ValueError(
            f"{str(directory)!r} lacks tensors {missing[:4]} that {model_class.__name__} builds from this "
            "config; pass the constructor arguments the model was built with (add_pooling_layer=False …) "
            "as keyword arguments"
        )
    return model.eval()


def _untied(model: nn.Module, missing: list[str], loaded: set[str]) -> list[str]:
    """The ``missing`` tensors that share no storage with a loaded one (a tied ``lm_head`` is loaded
    with the embeddings it shares)."""
    tensors = model.state_dict(keep_vars=True)
    shared = {tensors[name].data_ptr() for name in loaded if name in tensors}
    return [name for name in missing if tensors[name].data_ptr() not in shared]


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


def _element_sources(model: nn.Module, tensors: list[str]) -> dict[str, tuple[str, np.ndarray]]:
    """Saved tensor name → ``(model tensor, flat indices into it)`` for what ``save_pretrained`` writes of
    ``tensors`` in another layout: each element is tagged with its position and the tags are put through
    transformers' own ``revert_weight_conversion`` (it splits, stacks, transposes, never computes)."""
    from transformers.core_model_loading import revert_weight_conversion

    state = model.state_dict()
    sizes = [state[name].numel() for name in tensors]
    starts = np.cumsum([0, *sizes])
    tags = {
        name: torch.arange(start, start + n, dtype=torch.float64).view(state[name].shape)
        for name, start, n in zip(tensors, starts[:-1].tolist(), sizes, strict=True)
    }
    found = {}
    for saved, tag in revert_weight_conversion(model, tags).items():
        flat = tag.detach().numpy().astype(np.int64)
        if flat.size == 0 or saved in tensors:
            continue
        owner = int(np.searchsorted(starts, flat.min(), side="right")) - 1
        found[saved] = (tensors[owner], flat - starts[owner])
    return found


def _fused_shapes(
    model: nn.Module, pieces: Mapping[str, tuple[int, ...]], fused: list[str]
) -> dict[str, tuple[int, ...]]:
    """Shapes of the model tensors (among ``fused``) the saved ``pieces`` (name → shape) are parts of: a
    dim of a piece that runs along a dim of its tensor shrinks that dim in the same proportion."""
    state = model.state_dict()
    sources = _element_sources(model, fused)
    shapes: dict[str, list[int]] = {}
    for saved, shape in pieces.items():
        if saved not in sources:
            continue
        owner, flat = sources[saved]
        full = tuple(state[owner].shape)
        new = shapes.setdefault(owner, list(full))
        coords = np.unravel_index(flat, full)
        for j, (before, after) in enumerate(zip(flat.shape, shape, strict=True)):
            if before < 2:
                continue
            step = tuple(1 if d == j else 0 for d in range(flat.ndim))
            along = [k for k, c in enumerate(coords) if c[step] != c[(0,) * flat.ndim]]
            if len(along) == 1 and after != before:
                new[along[0]] = full[along[0]] * after // before
    return {name: tuple(shape) for name, shape in shapes.items() if tuple(shape) != tuple(state[name].shape)}


def _fused_state(
    model: nn.Module, state: dict[str, torch.Tensor], pieces: set[str], fused: list[str]
) -> dict[str, torch.Tensor]:
    """``state`` with the saved ``pieces`` put back into the (resized) model tensors of ``fused`` they are
    parts of."""
    current = model.state_dict()
    sources = _element_sources(model, fused)
    assembled: dict[str, torch.Tensor] = {}
    for saved in sorted(pieces & set(state)):
        if saved not in sources:
            continue
        owner, flat = sources[saved]
        if flat.shape != tuple(state[saved].shape):
            raise ValueError(
                f"saved tensor {saved!r} has shape {tuple(state[saved].shape)}, but the model rebuilt from "
                f"the saved shapes expects {flat.shape}; the checkpoint does not match {type(model).__name__}"
            )
        target = assembled.setdefault(owner, torch.zeros_like(current[owner]))
        target.view(-1)[torch.from_numpy(flat.reshape(-1))] = state.pop(saved).reshape(-1).to(target.dtype)
    return {**state, **assembled}


def _instantiate(model_class: type, config: Any, kwargs: Mapping[str, Any]) -> nn.Module:
    """``model_class(config, **kwargs)``; a config whose pruned head count does not divide
    ``hidden_size`` is built with one head (the real counts are set from ``config.prunekit_attention``)."""
    try:
        return model_class(config, **kwargs)
    except ValueError:
        if not hasattr(config, "prunekit_attention"):
            raise
    heads = {name: value for name in _HEAD_FIELDS if isinstance(value := getattr(config, name, None), int)}
    for name in heads:
        setattr(config, name, 1)
    try:
        model = model_class(config, **kwargs)
    finally:
        for name, value in heads.items():
            setattr(config, name, value)
    return model
