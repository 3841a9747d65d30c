"""Module handlers: which parameter dims of a layer are channels, and how to update its attributes.

A handler is stateless: ``dims(module)`` names the channel dims of its parameters and buffers with a
role (``"out"``: the module produces that channel; ``"in"``: it consumes it), and
``update(module)`` rewrites the module's attributes (``in_channels``, ``groups``,
``normalized_shape`` …) from its already-sliced tensors. A layer whose size attributes no tensor
records (``InstanceNorm2d(affine=False)``, ``nn.Unflatten``) also gets ``resize(module, input shape,
output shape)`` with the shapes the plan predicts for its forward. A parameter of a module without a handler
(a bare ``nn.Parameter`` such as a class token or a layer scale) is sliced as a plain tensor: every
dim longer than one is a channel dim with role ``"out"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._registry import Registry

Dims = dict[str, dict[int, str]]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class ModuleHandler:
    """``dims(module) -> {local tensor name: {dim: role}}``; ``update(module)`` fixes attributes;
    ``resize(module, input shape, output shape)`` (optional) fixes those no tensor records, the
    attributes named in ``sizes`` (saved beside the tensor shapes, see :mod:`prunekit.graph.io`)."""

    dims: Callable[[nn.Module], Dims]
    update: Callable[[nn.Module], None]
    resize: Callable[[nn.Module, Shape, Shape], None] | None = None
    sizes: tuple[str, ...] = ()


HANDLERS: Registry[ModuleHandler] = Registry("module handler")


def _key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_handler(cls: type[nn.Module], handler: ModuleHandler) -> ModuleHandler:
    """Register ``handler`` for ``cls`` and its subclasses."""
    return HANDLERS.register(_key(cls), handler)


def handler_for(module: nn.Module) -> ModuleHandler | None:
    """The handler of the nearest registered class in ``type(module).__mro__``, or ``None``.

    Looked up once per class while the registry is unchanged (~1 µs per module, asked ~3 times per
    module by a graph and a prune)."""
    global _found_version
    if _found_version != HANDLERS.version:
        _FOUND.clear()
        _found_version = HANDLERS.version
    cls = type(module)
    if cls not in _FOUND:
        _FOUND[cls] = next((HANDLERS.get(_key(c)) for c in cls.__mro__ if _key(c) in HANDLERS), None)
    return _FOUND[cls]


_FOUND: dict[type, ModuleHandler | None] = {}  # class → handler, as of registry version _found_version
_found_version = -1


def inherits_handler(module: nn.Module) -> bool:
    """True where ``module``'s handler is registered for a base class of it, not for its own class."""
    return _key(type(module)) not in HANDLERS


def parametrized_module(tensor: str) -> str | None:
    """For an original of ``torch.nn.utils.parametrize`` (``conv.parametrizations.weight.original0``)
    the name of the module it parametrizes (``conv``); ``None`` for any other tensor, also for the
    parametrization's own (spectral norm's ``conv.parametrizations.weight.0._u``)."""
    head, found, rest = f".{tensor}".rpartition(".parametrizations.")
    if not found or not re.fullmatch(r"[^.]+\.original\d*", rest):
        return None
    return head[1:]


def weight_norm_hooks(module: nn.Module) -> list[Any]:
    """The ``torch.nn.utils.weight_norm`` hooks on ``module`` (the deprecated form: parameters
    ``{name}_g`` and ``{name}_v``, and a pre-forward hook that sets ``module.{name}`` from them)."""
    if not module._forward_pre_hooks:
        return []
    from torch.nn.utils.weight_norm import WeightNorm

    return [hook for hook in module._forward_pre_hooks.values() if isinstance(hook, WeightNorm)]


def weight_norm_memo(model: nn.Module) -> dict[int, torch.Tensor]:
    """A ``copy.deepcopy`` memo: id → detached copy of each weight a ``weight_norm`` hook set. One
    computed with grad (any training forward) cannot be deep-copied; the hook recomputes it anyway."""
    weights = (getattr(m, hook.name, None) for m in model.modules() for hook in weight_norm_hooks(m))
    return {id(w): w.detach() for w in weights if isinstance(w, torch.Tensor)}


def update_attributes(module: nn.Module) -> None:
    """After its tensors changed shape: recompute the weights its ``weight_norm`` hooks set (they do so
    only before a forward), then let its handler rewrite its attributes from the tensors."""
    for hook in weight_norm_hooks(module):
        with torch.no_grad():
            setattr(module, hook.name, hook.compute_weight(module))
    handler = handler_for(module)
    if handler is not None:
        handler.update(module)


def _present(module: nn.Module, dims: Dims) -> Dims:
    return {k: v for k, v in dims.items() if getattr(module, k, None) is not None}


def _conv_dims(m: nn.Module) -> Dims:
    weight = {0: "in", 1: "out"} if m.transposed else {0: "out", 1: "in"}
    return _present(m, {"weight": weight, "bias": {0: "out"}})


def _conv_update(m: nn.Module) -> None:
    w = m.weight  # (out, in/groups, *k), transposed: (in, out/groups, *k)
    if m.transposed:
        if m.groups > 1 and m.in_channels == m.groups:  # depthwise family: whole groups are removed
            m.groups = w.shape[0]
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
        return
    if m.groups > 1 and m.in_channels == m.groups:  # depthwise family: whole groups are removed
        multiplier = m.out_channels // m.groups
        m.groups = m.in_channels = w.shape[0] // multiplier
    else:
        m.in_channels = w.shape[1] * m.groups
    m.out_channels = w.shape[0]


def _linear_update(m: nn.Module) -> None:
    m.out_features, m.in_features = m.weight.shape


def _norm_dims(m: nn.Module) -> Dims:
    return _present(
        m, {"weight": {0: "out"}, "bias": {0: "out"}, "running_mean": {0: "in"}, "running_var": {0: "in"}}
    )


def _batch_norm_update(m: nn.Module) -> None:
    tensor = m.weight if m.weight is not None else m.running_mean
    if tensor is not None:
        m.num_features = tensor.shape[0]


def _norm_resize(m: nn.Module, shape: Shape, _: Shape) -> None:
    """``num_features``: the input's channel dim (an InstanceNorm's is dim 0 without a batch dim)."""
    instance = isinstance(m, nn.modules.instancenorm._InstanceNorm)
    m.num_features = shape[len(shape) - m._get_no_batch_dim() if instance else 1]


def _layer_norm_dims(m: nn.Module) -> Dims:
    dims = {d: "out" for d in range(len(m.normalized_shape))}
    return _present(m, {"weight": dims, "bias": dict(dims)})


def _layer_norm_update(m: nn.Module) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


def _group_norm_update(m: nn.Module) -> None:
    if m.weight is not None:
        _group_norm_channels(m, m.weight.shape[0])


def _group_norm_resize(m: nn.Module, shape: Shape, _: Shape) -> None:
    _group_norm_channels(m, shape[1])


def _group_norm_channels(m: nn.Module, channels: int) -> None:
    """``num_channels``; ``num_groups`` too where each group is one channel (whole groups went)."""
    if m.num_groups == m.num_channels:
        m.num_groups = channels
    m.num_channels = channels


def _unflatten_resize(m: nn.Module, shape: Shape, out: Shape) -> None:
    """``unflattened_size`` from the output shape: the dims that ``m.dim`` of the input became."""
    if isinstance(m.dim, str):  # named tensors (a prototype): left as built, the check refuses a change
        return
    first = m.dim % len(shape)
    m.unflattened_size = tuple(out[first : first + len(m.unflattened_size)])


def _prelu_update(m: nn.Module) -> None:
    m.num_parameters = m.weight.shape[0]


def _bilinear_update(m: nn.Module) -> None:
    m.out_features, m.in1_features, m.in2_features = m.weight.shape  # (out, in1, in2)


def _embedding_update(m: nn.Module) -> None:
    m.embedding_dim = m.weight.shape[1]


def _register_defaults() -> None:
    conv = ModuleHandler(_conv_dims, _conv_update)
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        register_handler(cls, conv)
    register_handler(
        nn.Linear,
        ModuleHandler(
            lambda m: _present(m, {"weight": {0: "out", 1: "in"}, "bias": {0: "out"}}), _linear_update
        ),
    )
    for cls in (
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
    ):
        register_handler(cls, ModuleHandler(_norm_dims, _batch_norm_update, _norm_resize, ("num_features",)))
    register_handler(nn.LayerNorm, ModuleHandler(_layer_norm_dims, _layer_norm_update))
    register_handler(nn.RMSNorm, ModuleHandler(_layer_norm_dims, _layer_norm_update))
    register_handler(
        nn.GroupNorm,
        ModuleHandler(_norm_dims, _group_norm_update, _group_norm_resize, ("num_channels", "num_groups")),
    )
    register_handler(
        nn.Unflatten, ModuleHandler(lambda m: {}, lambda m: None, _unflatten_resize, ("unflattened_size",))
    )
    register_handler(nn.PReLU, ModuleHandler(lambda m: {"weight": {0: "out"}}, _prelu_update))
    register_handler(
        nn.Bilinear,
        ModuleHandler(
            lambda m: _present(m, {"weight": {0: "out", 1: "in", 2: "in"}, "bias": {0: "out"}}),
            _bilinear_update,
        ),
    )
    for cls in (nn.Embedding, nn.EmbeddingBag):
        register_handler(cls, ModuleHandler(lambda m: {"weight": {1: "out"}}, _embedding_update))
    # Pinned on purpose: nn.MultiheadAttention cannot represent a pruned model. Its q/k/v width is
    # embed_dim = num_heads · head_dim (checked in F.multi_head_attention_forward), and embed_dim is also
    # the width of its input and output (the residual stream), so neither whole heads nor head dims nor
    # residual channels can go. Its neighbours (the MLP after it) still prune exactly; for prunable heads
    # write attention as Linear projections + F.scaled_dot_product_attention (see tests/structured_zoo.py).
    register_handler(nn.MultiheadAttention, ModuleHandler(lambda m: {}, lambda m: None))
    # Pinned too: recurrent layers check input_size against their input and keep flattened weight
    # copies; pruning hidden units would need the gate structure (4 or 3 blocks per unit). Kept whole,
    # the layers around them still prune.
    for cls in (nn.RNNBase, nn.RNNCellBase):
        register_handler(cls, ModuleHandler(lambda m: {}, lambda m: None))


_register_defaults()
