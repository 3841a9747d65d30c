"""Structured one-shot pruning of transformers: whole attention heads and MLP neurons, from calibration.

A channel (an attention head, or a kv group of heads under GQA, or an MLP neuron) reaches the residual
stream only through the input columns ``c`` of one output projection ``W`` (``(out, in)``: BERT
``attention.output.dense`` / ``output.dense``, GPT-2 ``attn.c_proj`` / ``mlp.c_proj``, LLaMA ``o_proj``
/ ``down_proj``). Its importance is the Wanda score (Sun et al. 2023, "A Simple and Effective Pruning
Approach for Large Language Models") of those columns, summed over the channel::

    S(channel) = Σ_{c ∈ channel} ‖X_c‖₂ · ‖W[:, c]‖₂

with ``X_c`` the projection's input feature ``c`` over every calibration token (forward hooks). For a
neuron that is one column (``X_j`` = act(up)·gate activation); for a head its ``head_dim`` columns of
the attention context. ``‖X_c‖₂·‖W[:, c]‖₂`` bounds the norm of what column ``c`` adds to the residual
stream, so a column with large weights but no activation scores 0. ``method="magnitude"`` drops the
activation factor (``‖W[:, c]‖₂`` only, no calibration) as the data-free baseline.

Channels are found through the dependency graph (:class:`~prunekit.graph.DependencyGraph`), so the
q/k/v rows, biases and projection columns of a head go together, and removed with
:func:`~prunekit.plan.apply_plan`, which also updates the transformers config. Under grouped-query
attention the graph couples each kv head with its query heads: a kv group (one kv head and all query
heads reading it) is removed as a whole, so every kv head keeps the same number of query heads.

``allocation="uniform"`` removes the same fraction of every block, block by block: block ``i`` is
scored on the outputs of blocks ``0 … i-1`` with their chosen channels already zeroed (zeroing a
channel's projection columns equals removing it). ``"global"`` scores every block on the dense model
and removes the lowest scores over all blocks (heads and neurons ranked separately), always keeping
at least one head and one neuron per block.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_sparsity
from ..graph import DependencyGraph, Group, Member
from ..graph.hf import attention_modules
from ..plan import PruningPlan, _global_counts, apply_plan
from .calibration import (
    LayerStats,
    _skipped,
    calibrate_blocks,
    find_blocks,
    is_conv1d,
    weight_matrix,
)

METHODS = ("magnitude", "wanda")
ALLOCATIONS = ("uniform", "global")
_QKV = ("q_proj", "k_proj", "v_proj", "query", "key", "value", "c_attn")
_MLP_UP = ("up_proj", "gate_proj", "c_fc", "fc1", "intermediate.dense")


@dataclass(frozen=True)
class StructuredConfig:
    """What to remove and how to rank it.

    Args:
        head_sparsity: fraction of attention heads removed (kv groups under GQA), in [0, 1).
        neuron_sparsity: fraction of MLP neurons (intermediate channels) removed, in [0, 1).
        method: ``"wanda"`` (calibration activations × weight norms) or ``"magnitude"`` (weights only).
        allocation: ``"uniform"`` (the same fraction per block) or ``"global"`` (ranked over blocks).
        skip: glob patterns of module names whose heads / neurons are kept (e.g. ``"*layer.0.*"``);
            a bare word matches any name containing it.
    """

    head_sparsity: float = 0.25
    neuron_sparsity: float = 0.25
    method: str = "wanda"
    allocation: str = "uniform"
    skip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_sparsity(self.head_sparsity, "head_sparsity")
        check_sparsity(self.neuron_sparsity, "neuron_sparsity")
        check_choice(self.method, "method", METHODS)
        check_choice(self.allocation, "allocation", ALLOCATIONS)
        if isinstance(self.skip, str):
            raise TypeError(f"skip must be a tuple of glob patterns, got the string {self.skip!r}")

    def sparsity(self, kind: str) -> float:
        return self.head_sparsity if kind == "heads" else self.neuron_sparsity


@dataclass(frozen=True)
class Target:
    """The heads or the neurons of one block: ``group`` of the graph, read by ``projection``
    (module name) through its weight, ``group.members[member]``."""

    group: Group
    kind: str  # "heads" | "neurons"
    projection: str
    member: int


@dataclass
class StructuredResult:
    """The smaller model and what was removed.

    ``removed``: projection module name → removed channels (head / kv-group / neuron indices);
    ``removed_columns``: projection module name → the input columns of its ``(out, in)`` weight that
    those channels occupied; ``channels``: ``{"heads"|"neurons": (before, after)}`` over all blocks.
    """

    model: nn.Module
    plan: PruningPlan
    removed: dict[str, tuple[int, ...]]
    removed_columns: dict[str, tuple[int, ...]]
    channels: dict[str, tuple[int, int]]
    params_before: int
    params_after: int


def prune_structured_oneshot(
    model: nn.Module,
    calibration: Sequence[Mapping[str, torch.Tensor]],
    config: StructuredConfig | None = None,
    *,
    inplace: bool = False,
) -> StructuredResult:
    """Remove the least important heads and MLP neurons of a transformers model, one-shot.

    ``calibration`` holds keyword batches (``{"input_ids": (B, T), "attention_mask": (B, T)}``); the
    first one also traces the dependency graph. Returns a pruned copy (``model`` itself if
    ``inplace``) whose config fields (``num_attention_heads``, ``intermediate_size`` …) are updated.
    """
    config = config or StructuredConfig()
    if not isinstance(config, StructuredConfig):
        raise TypeError(f"config must be a StructuredConfig, got {type(config).__name__}")
    _check_inputs(model, calibration)
    find_blocks(model)  # a clear error for models without a transformer block list
    target = model if inplace else copy.deepcopy(model)
    was_training = target.training
    target.eval()
    graph = DependencyGraph.build(target, _example(target, calibration[0]))
    targets = find_targets(target, graph, config.skip)
    if config.method == "wanda" and config.allocation == "uniform":
        removals = _sequential_removals(target, calibration, targets, config)
    else:
        removals = _dense_removals(target, calibration, targets, config, graph.groups)
    plan = PruningPlan(graph, removals)
    params_before = sum(p.numel() for p in target.parameters())
    pruned = apply_plan(target, plan, inplace=True)
    pruned.train(was_training)
    return StructuredResult(
        pruned,
        plan,
        {t.projection: plan.removals.get(t.group.index, ()) for t in targets},
        {t.projection: _columns(t, plan.removals.get(t.group.index, ())) for t in targets},
        _channel_counts(targets, plan),
        params_before,
        sum(p.numel() for p in pruned.parameters()),
    )


def find_targets(model: nn.Module, graph: DependencyGraph, skip: Sequence[str] = ()) -> list[Target]:
    """Head and neuron groups of ``graph``, each with the output projection that reads it."""
    attention = set(attention_modules(model))
    targets = []
    for group in graph.groups:
        produced = {m.module for m in group.members if m.role == "out"}
        kind = "heads" if any(_is_qkv(name, attention) for name in produced) else None
        if kind is None and any(_is_mlp_up(name) for name in produced):
            kind = "neurons"
        readers = [i for i, m in enumerate(group.members) if m.role == "in" and _is_projection(model, m)]
        if kind is None or len(readers) != 1 or any(_skipped(n, skip) for n in group.modules()):
            continue
        targets.append(Target(group, kind, group.members[readers[0]].module, readers[0]))
    if not targets:
        raise ValueError(
            f"found no attention heads or MLP neurons to prune in {type(model).__name__}: structured "
            "one-shot pruning needs a transformers model whose attention has q/k/v (or GPT-2 c_attn) "
            f"projections and whose MLP has one of {_MLP_UP}; check skip={tuple(skip)!r} too"
        )
    return targets


def channel_scores(module: nn.Module, target: Target, stats: LayerStats | None) -> torch.Tensor:
    """``S(channel) = Σ_{c ∈ channel} ‖X_c‖₂·‖W[:, c]‖₂`` (``‖W[:, c]‖₂`` without ``stats``): (channels,)."""
    w = weight_matrix(module).detach().double()  # (out, in)
    column = w.norm(dim=0)  # (in,)
    if stats is not None:
        column = column * stats.sq_norms.sqrt()  # ‖X_c‖₂ over calibration tokens
    channel = torch.as_tensor(target.group.channel_of[target.member])  # (in,) → channel or -1
    keep = channel >= 0
    return torch.zeros(target.group.size, dtype=torch.float64).index_add_(0, channel[keep], column[keep])


def _sequential_removals(
    model: nn.Module,
    calibration: Sequence[Mapping[str, torch.Tensor]],
    targets: list[Target],
    config: StructuredConfig,
) -> dict[int, tuple[int, ...]]:
    """Uniform Wanda: score block by block on the pruned predecessors' outputs, zero what goes."""
    by_projection = {t.projection: t for t in targets}
    removals: dict[int, tuple[int, ...]] = {}

    def prune_block(_index: int, layers: dict[str, nn.Module], stats: dict[str, LayerStats]) -> None:
        for name, module in layers.items():
            t = by_projection.get(name)
            if t is None:
                continue
            scores = channel_scores(module, t, stats[name])
            removals[t.group.index] = _lowest(scores, math.floor(t.group.size * config.sparsity(t.kind)))
            with torch.no_grad():
                weight_matrix(module)[:, list(_columns(t, removals[t.group.index]))] = 0.0

    calibrate_blocks(model, calibration, prune_block, stats="diag")
    return removals


def _dense_removals(
    model: nn.Module,
    calibration: Sequence[Mapping[str, torch.Tensor]],
    targets: list[Target],
    config: StructuredConfig,
    groups: tuple[Group, ...],
) -> dict[int, tuple[int, ...]]:
    """Score every target on the dense model, then select per block or over all blocks per kind."""
    modules = dict(model.named_modules())
    scores: dict[int, torch.Tensor] = {}
    if config.method == "magnitude":
        scores = {t.group.index: channel_scores(modules[t.projection], t, None) for t in targets}
    else:
        by_projection = {t.projection: t for t in targets}

        def record(_index: int, layers: dict[str, nn.Module], stats: dict[str, LayerStats]) -> None:
            for name, module in layers.items():
                if name in by_projection:
                    t = by_projection[name]
                    scores[t.group.index] = channel_scores(module, t, stats[name])

        calibrate_blocks(model, calibration, record, stats="diag")
    removals: dict[int, tuple[int, ...]] = {}
    for kind in ("heads", "neurons"):
        of_kind = {t.group.index: scores[t.group.index] for t in targets if t.kind == kind}
        if config.allocation == "global":
            counts = _global_counts(groups, of_kind, config.sparsity(kind), 1.0)
        else:
            counts = {i: math.floor(s.numel() * config.sparsity(kind)) for i, s in of_kind.items()}
        removals |= {i: _lowest(of_kind[i], count) for i, count in counts.items()}
    return removals


def _lowest(scores: torch.Tensor, count: int) -> tuple[int, ...]:
    """Indices of the ``count`` lowest scores (ties: lower index first), sorted."""
    count = min(count, scores.numel() - 1)  # keep at least one head / neuron
    return tuple(sorted(torch.argsort(scores, stable=True)[:count].tolist()))


def _columns(target: Target, channels: Sequence[int]) -> tuple[int, ...]:
    return tuple(target.group.indices(target.member, channels).tolist()) if channels else ()


def _channel_counts(targets: list[Target], plan: PruningPlan) -> dict[str, tuple[int, int]]:
    counts = {}
    for kind in ("heads", "neurons"):
        chosen = [t.group for t in targets if t.kind == kind]
        before = sum(g.size for g in chosen)
        counts[kind] = (before, before - sum(len(plan.removals.get(g.index, ())) for g in chosen))
    return counts


def _check_inputs(model: nn.Module, calibration: Sequence[Mapping[str, torch.Tensor]]) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(calibration, Mapping) or not calibration:
        raise ValueError(
            "calibration must be a non-empty list of batch dicts such as [{'input_ids': ids}], got "
            f"{type(calibration).__name__}"
        )
    if not all(isinstance(batch, Mapping) for batch in calibration):
        raise TypeError("every calibration batch must be a dict of model keyword inputs ({'input_ids': …})")


def _example(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict:
    """The first sample of ``batch`` (tracing needs one), without a KV cache."""
    example = {k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if hasattr(getattr(model, "config", None), "use_cache"):
        example["use_cache"] = False
    return example


def _is_qkv(name: str, attention: set[str]) -> bool:
    owner, _, local = name.rpartition(".")
    return local in _QKV and owner in attention


def _is_mlp_up(name: str) -> bool:
    return any(name == pat or name.endswith(f".{pat}") for pat in _MLP_UP)


def _is_projection(model: nn.Module, member: Member) -> bool:
    """``member`` is the input dim of a Linear / Conv1D weight."""
    module = model.get_submodule(member.module)
    return member.tensor == f"{member.module}.weight" and (isinstance(module, nn.Linear) or is_conv1d(module))
