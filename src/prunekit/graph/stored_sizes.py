"""Size attributes a module stores beside its tensors (a router's ``hidden_dim``, an MLP's
``intermediate_size``, a model's ``embed_dim``), brought to the pruned sizes.

Layers with a handler have their attributes rewritten from their tensors (:mod:`.modules`); attention
bookkeeping is :func:`~.hf.update_attention`'s. Any other module may keep a width it was built with:
read in its forward (Mixtral's router: ``x.view(-1, self.hidden_dim)``), or only there to be read
later. Such an attribute is recognised by its name (``*_dim``, ``hidden_size``, ``*_features``,
``*_channels``, ``*_width``, ``d_model``, ``num_experts`` …) and its value: it equals the old size of a
tensor dim of the module, of its direct children or of children reached through containers, and every
such dim of that size went to one new size. Where dims of that size went to different sizes, or some
kept it, the attribute is left alone (the pruned-model check names it if the forward reads it).
"""

from __future__ import annotations

import functools
import math
import re
from collections import defaultdict
from collections.abc import Mapping

from torch import nn

from .hf import _GROUPS, _HEAD_DIM, _KV_HEADS, _NUM_HEADS, _SCALE, _WIDTH, attention_modules
from .modules import handler_for
from .walk import named_modules

Shapes = Mapping[str, tuple[int, ...]]

# widths by name: ``*_dim``, ``*_features``, ``*_channels``, ``*_width``, and ``*_size`` only after a
# word that names a width (a ``context_size`` or ``window_size`` is a length, whatever its value)
_SIZE_NAME = re.compile(
    r"(^|_)(dim|features|channels|width)$"
    r"|^(hidden|embed|embedding|intermediate|ffn|ffn_hidden|inner|model|input|output|in|out|proj|mlp|expert"
    r"|moe_intermediate|d)_size$"
    r"|^(d_model|d_ff|d_inner|n_embd|n_inner|num_experts|num_features|num_channels)$"
)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_HEADS = frozenset((*_HEAD_DIM, *_NUM_HEADS, *_KV_HEADS, *_GROUPS, *_SCALE))  # never a tensor dim's width


def tensor_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shape of every parameter and buffer by name, tied ones under each of their names (as
    ``named_parameters`` and ``named_buffers`` list them with ``remove_duplicate=False``, in one walk)."""
    walk = named_modules(model, remove_duplicate=False)
    return {
        f"{prefix}.{local}" if prefix else local: tuple(tensor.shape)
        for held in ("_parameters", "_buffers")
        for prefix, module in walk
        for local, tensor in getattr(module, held).items()
        if tensor is not None
    }


def update_stored_sizes(model: nn.Module, before: Shapes) -> None:
    """Set the size attributes of ``model``'s modules from ``before`` (:func:`tensor_shapes` before
    pruning) and the tensors' shapes now."""
    modules = dict(named_modules(model))
    stored = {
        name: found
        for name, m in modules.items()
        if handler_for(m) is None and (found := _stored_widths(m, False))
    }
    if any(attr in _WIDTH for found in stored.values() for attr in found):  # attention's own: not here
        attention = set(attention_modules(model))
        stored = {
            n: found
            for n, m in modules.items()
            if n in stored and (found := _stored_widths(m, n in attention))
        }
    if not stored:
        return
    after = tensor_shapes(model)
    sizes: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))  # module: old → new
    for name, old in before.items():
        new = after.get(name)
        if new is None or len(new) != len(old):
            continue
        for scope in _scopes(name.rpartition(".")[0], modules):
            if scope in stored:
                for was, now in zip(old, new, strict=True):
                    sizes[scope][was].add(now)
    for name, found in stored.items():
        for attr, value in found.items():
            values = value if isinstance(value, tuple) else (value,)
            news = [sizes[name].get(v, set()) for v in values]
            if all(len(n) == 1 for n in news):
                new_values = tuple(next(iter(n)) for n in news)
                setattr(modules[name], attr, new_values if isinstance(value, tuple) else new_values[0])


def _stored_widths(module: nn.Module, attention: bool) -> dict[str, int | tuple[int, ...]]:
    """The attributes of ``module`` that name widths (a LayerNorm of a model's own: its
    ``normalized_shape`` tuple)."""
    return {
        attr: value
        for attr, value in vars(module).items()
        if (type(value) is int or attr == "normalized_shape") and _names_width(attr, value, attention)
    }


def _names_width(attr: str, value: object, attention: bool) -> bool:
    if attr == "normalized_shape":
        return isinstance(value, tuple) and bool(value) and all(type(v) is int for v in value)
    return type(value) is int and value > 1 and _is_width(attr, attention)


def _scopes(owner: str, modules: Mapping[str, nn.Module]) -> list[str]:
    """The modules whose stored sizes a tensor of ``owner`` speaks for: ``owner``, its parent, and on up
    while the module reached is a container (``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``: an
    SE block's ``self.fc = nn.Sequential(...)``, Res2Net's ``self.convs``)."""
    scopes = [owner]
    while scopes[-1] and (len(scopes) == 1 or isinstance(modules.get(scopes[-1]), _CONTAINERS)):
        scopes.append(scopes[-1].rpartition(".")[0])
    return scopes


def stored_numbers(module: nn.Module) -> dict[str, int | float]:
    """The numbers of ``module`` that pruning may rewrite: widths (by the names above) and attention
    bookkeeping (head counts and sizes, query widths, scales), by attribute name."""
    names = (a for a, v in vars(module).items() if type(v) in (int, float) and math.isfinite(v))
    return {a: getattr(module, a) for a in names if a in _HEADS or a in _WIDTH or _is_width(a, False)}


@functools.cache
def _is_width(attr: str, attention: bool) -> bool:
    """Whether ``attr`` names a width (an attention module's head bookkeeping is not this pass's)."""
    named = bool(_SIZE_NAME.search(attr)) and attr not in _HEADS
    return named and not (attention and attr in _WIDTH)
