"""Plan first, then cut: choose channels per group (:func:`build_plan`), check every index, then slice
parameters and buffers and update module attributes (:func:`apply_plan`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_positive_int, check_sparsity
from .graph.gc_pause import gc_paused
from .graph.graph import DependencyGraph, Group, one_thread
from .graph.hf import check_sliced_qkv, query_widths
from .graph.hf_config import update_model
from .graph.importance import IMPORTANCES, group_scores, shared_reductions
from .graph.modules import (
    handler_for,
    parametrized_module,
    update_attributes,
    weight_norm_hooks,
    weight_norm_memo,
)
from .graph.stored_sizes import tensor_shapes, update_stored_sizes
from .graph.trace import Trace
from .graph.verify import expected_shapes, verify_pruned
from .graph.walk import named_modules, walks_shared


@dataclass(frozen=True, eq=False)
class PruningPlan:
    """Which channels of which group go: ``removals`` maps group index → sorted channel indices.

    Validated on construction: known groups, channel indices in range, no duplicates, and at least one
    channel left in every group.
    """

    graph: DependencyGraph
    removals: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {}
        for index, channels in self.removals.items():
            if not isinstance(index, int) or not 0 <= index < len(self.graph.groups):
                raise ValueError(
                    f"removals has group index {index!r}; valid group indices are "
                    f"0..{len(self.graph.groups) - 1}"
                )
            size = self.graph.groups[index].size
            chosen = np.sort(np.fromiter(channels, dtype=np.int64))
            if len(chosen) and ((chosen[1:] == chosen[:-1]).any() or chosen[0] < 0 or chosen[-1] >= size):
                raise ValueError(
                    f"removals[{index}] must hold distinct channel indices in [0, {size}), "
                    f"got {chosen.tolist()}"
                )
            if len(chosen) >= size:
                raise ValueError(
                    f"removals[{index}] removes all {size} channels of the group; keep at least 1"
                )
            group = self.graph.groups[index]
            if len(chosen) and (size - len(chosen)) % group.multiple:
                raise ValueError(
                    f"removals[{index}] keeps {size - len(chosen)} channels of a group that "
                    f"{', '.join(group.modules()[:3])} computes with torch._grouped_mm (mixture-of-experts "
                    f"layers), whose kernel needs strides of 16 bytes: keep a multiple of {group.multiple} "
                    "(build_plan rounds to it)"
                )
            if len(chosen):
                clean[index] = tuple(chosen.tolist())
        object.__setattr__(self, "removals", clean)

    def tensor_removals(self) -> dict[tuple[str, int], np.ndarray]:
        """``(tensor name, dim) -> indices to remove`` over all groups (sorted, distinct)."""
        out: dict[tuple[str, int], list[np.ndarray]] = {}
        for index, channels in self.removals.items():
            group = self.graph.groups[index]
            chosen, found = group.chosen(channels), {}  # members holding one channel map share its indices
            for member, channel_of in zip(group.members, group.channel_of, strict=True):
                indices = found.get(id(channel_of))
                if indices is None:
                    indices = found[id(channel_of)] = np.flatnonzero(chosen[channel_of])
                    indices.flags.writeable = False
                out.setdefault((member.tensor, member.dim), []).append(indices)
        return {
            key: parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
            for key, parts in out.items()
        }

    def preview(self, model: nn.Module, example_inputs: Any) -> str:
        """Groups with channels before → after (marked where a statistic over them shifts: not
        :attr:`~prunekit.graph.Group.exact`), and parameters and MACs before → after."""
        from .metrics import count_parameters, layer_macs

        pruned = apply_plan(model, self)
        lines = [f"{'group':>5}  {'channels':>15}  modules"]
        for index, channels in sorted(self.removals.items()):
            group = self.graph.groups[index]
            mods = ", ".join(group.modules()[:4]) + (" …" if len(group.modules()) > 4 else "")
            shift = "" if group.exact else "  (a statistic over these channels shifts)"
            lines.append(f"{index:>5}  {group.size:>6} → {group.size - len(channels):<6}  {mods}{shift}")
        for label, fn in (
            ("params", count_parameters),
            ("MACs", lambda m: sum(layer_macs(m, example_inputs).values())),
        ):
            before, after = fn(model), fn(pruned)
            lines.append(f"{label}: {before:,} → {after:,} ({after / max(before, 1):.1%})")
        return "\n".join(lines)


def build_plan(
    model: nn.Module,
    graph: DependencyGraph,
    ratio: float = 0.5,
    importance: str = "l1",
    *,
    reduction: str = "mean",
    normalize: str = "mean",
    global_ranking: bool = False,
    max_layer_ratio: float = 1.0,
    round_to: int = 1,
    ignore: Iterable[str] = (),
    ratios: Mapping[str, float] | None = None,
    counts: Mapping[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> PruningPlan:
    """Remove the lowest-scored ``ratio`` of channels per group (or globally with ``global_ranking``).

    ``ratios`` overrides ``ratio`` for groups touching the named modules; ``counts`` (group index →
    channels to remove) replaces both, and groups it does not list lose none; groups touching
    ``ignore``d modules are kept whole; ``round_to`` rounds every group's kept channels up to a
    multiple (also of what a kernel needs: :attr:`Group.multiple`); ``max_layer_ratio`` caps the
    fraction a global ranking may take from one group.
    """
    with gc_paused():  # see gc_pause.py; a with block adds no frame (warnings' stacklevel)
        ratio = check_sparsity(ratio, "ratio")
        max_layer_ratio = _check_max_ratio(max_layer_ratio)
        check_positive_int(round_to, "round_to")
        IMPORTANCES.get(importance)
        overrides = {k: check_sparsity(v, f"ratios[{k!r}]") for k, v in (ratios or {}).items()}
        if counts is not None:
            _check_counts(counts, graph, global_ranking)
        skip = set(ignore) if not isinstance(ignore, str) else {ignore}
        if generator is None:
            generator = torch.Generator().manual_seed(0)  # one for all groups
        scored: dict[int, torch.Tensor] = {}
        with one_thread(), shared_reductions(graph.groups):
            for group in graph.groups:
                if not skip or skip.isdisjoint(group.modules()):
                    scores = group_scores(model, group, importance, reduction, normalize, generator)
                    if scores is not None:
                        scored[group.index] = scores
        if counts is not None:
            chosen = {i: counts.get(i, 0) for i in scored}
        elif global_ranking:
            chosen = _global_counts(graph.groups, scored, ratio, max_layer_ratio)
        else:
            chosen = {i: _local_count(graph.groups[i], ratio, overrides) for i in scored}
        removals = {}
        for index, count in chosen.items():
            group = graph.groups[index]
            count = _rounded(group.size, count, math.lcm(round_to, group.multiple))
            order = torch.argsort(scored[index], stable=True)
            removals[index] = tuple(sorted(order[:count].tolist()))
        return PruningPlan(graph, removals)


def _check_counts(counts: Mapping[int, int], graph: DependencyGraph, global_ranking: bool) -> None:
    if global_ranking:
        raise ValueError("counts fixes every group's count; it cannot be combined with global_ranking=True")
    for index, count in counts.items():
        if not isinstance(index, int) or not 0 <= index < len(graph.groups):
            raise ValueError(
                f"counts has group index {index!r}; valid group indices are 0..{len(graph.groups) - 1}"
            )
        size = graph.groups[index].size
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < size:
            raise ValueError(
                f"counts[{index}] must be an int in [0, {size}) (keep at least 1), got {count!r}"
            )


def _check_max_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"max_layer_ratio must be a float in (0, 1], got {value!r}")
    return float(value)


def _local_count(group: Group, ratio: float, overrides: Mapping[str, float]) -> int:
    hits = [overrides[m] for m in group.modules() if m in overrides]
    return math.floor(group.size * (max(hits) if hits else ratio))


def _rounded(size: int, count: int, round_to: int) -> int:
    """Channels to remove so that the kept ones are a positive multiple of ``round_to`` (or all)."""
    kept = min(size, max(1, math.ceil((size - count) / round_to) * round_to))
    return size - kept


def _global_counts(
    groups: tuple[Group, ...], scored: Mapping[int, torch.Tensor], ratio: float, max_layer_ratio: float
) -> dict[int, int]:
    """Take the globally lowest normalised scores until ``ratio`` of all channels, capped per group."""
    entries = sorted((float(s), i) for i, scores in scored.items() for s in scores.tolist())
    target = math.floor(ratio * sum(groups[i].size for i in scored))
    caps = {i: min(math.floor(groups[i].size * max_layer_ratio), groups[i].size - 1) for i in scored}
    counts = dict.fromkeys(scored, 0)
    taken = 0
    for _, i in entries:
        if taken >= target:
            break
        if counts[i] < caps[i]:
            counts[i] += 1
            taken += 1
    return counts


def apply_plan(model: nn.Module, plan: PruningPlan, inplace: bool = False, verify: bool = True) -> nn.Module:
    """A copy of ``model`` (``model`` itself if ``inplace``) with the plan's channels removed.

    Every tensor and index is checked against the model before anything changes; then parameters and
    buffers are sliced (tied tensors stay tied) and module attributes are updated by their handlers.
    With ``verify`` the pruned model runs once on the graph's example inputs and every op's output shape
    must be the one the plan predicts (:class:`~prunekit.graph.verify.PrunedModelMismatchError`
    otherwise: e.g. a forward that reshapes with a head count it stores).
    """
    with gc_paused(), walks_shared():  # see gc_pause.py and walk.py; no frame added (warnings' stacklevel)
        if not isinstance(plan, PruningPlan):
            raise TypeError(f"plan must be a PruningPlan (see build_plan), got {type(plan).__name__}")
        removals = plan.tensor_removals()
        replay = plan.graph.replay
        if replay is not None:
            expected = expected_shapes(
                plan.graph.trace, replay.labels, replay.uf, replay.channel_roots, plan.removals
            )
            check_sliced_qkv(plan.graph.trace, expected)
        holders = _holders(model)
        tensors = {name: tensor for name, (tensor, _) in holders.items()}
        widths_before, shapes_before = query_widths(model), tensor_shapes(model)
        for (name, dim), indices in removals.items():
            _check_tensor(tensors, plan.graph, name, dim, indices)
        with one_thread():
            norms = _weight_norms(model)
            sliced = _sliced({**tensors, **_weight_norm_sources(norms, tensors, removals)}, removals)
            _renormalise(norms, tensors, sliced)
        if inplace:
            target = model
        else:  # the memo hands deepcopy the sliced tensors: the full-size ones are never cloned
            memo: dict[int, Any] = {id(tensors[name]): new for name, new in sliced.items()}
            memo |= weight_norm_memo(model)
            target = copy.deepcopy(model, memo)
        slots = holders if inplace else _holders(target)
        touched: set[nn.Module] = set()
        for name, new in sliced.items():
            for module, local, is_param in slots[name][1]:
                (module._parameters if is_param else module._buffers)[local] = new
                touched.add(module)
            if (parent := parametrized_module(name)) is not None:  # a weight_norm conv reads its new shape
                touched.add(target.get_submodule(parent))
        for module in touched:
            update_attributes(module)
        if replay is not None:
            _resize(target, plan.graph.trace, expected)
        update_stored_sizes(target, shapes_before)
        update_model(target, plan.graph.heads, widths_before)
        if verify and replay is not None:
            verify_pruned(target, plan.graph.trace, replay, expected, None if inplace else model)
        return target


def _resize(model: nn.Module, trace: Trace, expected: list[tuple[int, ...]]) -> None:
    """Give layers with a ``resize`` handler the input and output shapes the plan predicts for them."""
    for name, module in named_modules(model):
        handler = handler_for(module)
        if handler is None or handler.resize is None:
            continue
        source, output = trace.module_inputs.get(name), trace.module_outputs.get(name)
        if source is not None and output is not None:
            handler.resize(module, expected[source], expected[output])


def _weight_norms(model: nn.Module) -> list[tuple[str, str, int]]:
    """``(g, v, dim)`` state-dict names of every weight_norm in ``model``: ``parametrizations.weight_norm``
    and the deprecated ``torch.nn.utils.weight_norm`` hook."""
    from torch.nn.utils.parametrizations import _WeightNorm

    found = []
    for name, module in named_modules(model):
        prefix = f"{name}." if name else ""
        children = module._modules  # no __getattr__ miss; a TorchScript module's is not a dict
        for tensor, chain in children["parametrizations"].items() if "parametrizations" in children else ():
            if len(chain) == 1 and isinstance(chain[0], _WeightNorm):
                path = f"{prefix}parametrizations.{tensor}"
                found.append((f"{path}.original0", f"{path}.original1", chain[0].dim))
        for hook in weight_norm_hooks(module):
            found.append((f"{prefix}{hook.name}_g", f"{prefix}{hook.name}_v", hook.dim))
    return found


def _weight_norm_sources(
    norms: list[tuple[str, str, int]],
    tensors: Mapping[str, torch.Tensor],
    removals: Mapping[tuple[str, int], np.ndarray],
) -> dict[str, torch.Tensor]:
    """For each pruned weight_norm, its v replaced by the weight ``w = g · v / ‖v‖`` it computes: the
    pruned layer gets ``v = w[kept]`` (and :func:`_renormalise` gives it ``g = ‖v‖``), so it computes
    exactly the kept part of ``w`` even where the norm spans removed inputs."""
    out = {}
    for g, v, dim in norms:
        if any(name in (g, v) for name, _ in removals):
            weight = torch._weight_norm(tensors[v].detach(), tensors[g].detach(), dim)
            out[v] = nn.Parameter(weight, tensors[v].requires_grad)
    return out


def _renormalise(
    norms: list[tuple[str, str, int]], tensors: Mapping[str, torch.Tensor], sliced: dict[str, torch.Tensor]
) -> None:
    """``g = ‖v‖`` (over every dim but ``dim``) for each weight_norm whose v :func:`_weight_norm_sources`
    replaced."""
    for g, v, dim in norms:
        if v in sliced:
            norm = torch.norm_except_dim(sliced[v].detach(), 2, dim)
            sliced[g] = nn.Parameter(norm, tensors[g].requires_grad)


def _sliced(
    tensors: Mapping[str, torch.Tensor], removals: Mapping[tuple[str, int], np.ndarray]
) -> dict[str, torch.Tensor]:
    """Tensor name → a new tensor (a ``Parameter`` for a parameter) without the removed indices."""
    by_name: dict[str, list[tuple[int, np.ndarray]]] = {}
    for (name, dim), indices in removals.items():
        by_name.setdefault(name, []).append((dim, indices))
    out, kept = {}, {}  # kept indices by (size, removed indices, device): a group's members share them
    for name in sorted(by_name):
        old = tensors[name]
        value = old.detach()
        for dim, indices in sorted(by_name[name], key=itemgetter(0)):  # outer dims first: a 1×1 conv
            key = (value.shape[dim], indices.tobytes(), value.device)  # weight's rows, then columns: 0.5×
            if key not in kept:
                keep = np.ones(value.shape[dim], dtype=bool)
                keep[indices] = False
                kept[key] = torch.from_numpy(np.flatnonzero(keep)).to(value.device)
            value = value.index_select(dim, kept[key])
        value = value.contiguous()
        out[name] = nn.Parameter(value, old.requires_grad) if isinstance(old, nn.Parameter) else value
    return out


def _check_tensor(tensors: Mapping[str, torch.Tensor], graph: DependencyGraph, name: str, dim: int,
                  indices: np.ndarray) -> None:  # fmt: skip
    expected = graph.shapes[name]
    if name not in tensors or tuple(tensors[name].shape) != expected:
        found = tuple(tensors[name].shape) if name in tensors else "missing"
        raise ValueError(
            f"the plan was built for {name} of shape {expected} but the model has {found}; build the graph "
            "and the plan on this model (DependencyGraph.build(model, example_inputs))"
        )
    if len(indices) >= expected[dim] or indices[0] < 0 or indices[-1] >= expected[dim]:  # sorted
        raise ValueError(
            f"the plan removes {len(indices)} of {expected[dim]} indices along dim {dim} of {name}; "
            "indices must lie in range and leave at least one"
        )


def _holders(model: nn.Module) -> dict[str, tuple[torch.Tensor, list[tuple[nn.Module, str, bool]]]]:
    """State-dict name → (tensor, every (module, attribute, is_param) holding it), in one walk.

    Tied tensors appear once, under their first name (as in ``named_parameters``), with every holder.
    """
    names: dict[int, str] = {}
    holders: dict[int, tuple[torch.Tensor, list[tuple[nn.Module, str, bool]]]] = {}
    for prefix, module in named_modules(model):
        for is_param, tensors in ((True, module._parameters), (False, module._buffers)):
            for local, tensor in tensors.items():
                if tensor is not None:
                    names.setdefault(id(tensor), f"{prefix}.{local}" if prefix else local)
                    holders.setdefault(id(tensor), (tensor, []))[1].append((module, local, is_param))
    return {names[key]: value for key, value in holders.items()}
