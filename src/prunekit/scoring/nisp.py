"""NISP: neuron importance score propagation (Yu et al., CVPR 2018).

"NISP: Pruning Networks using Neuron Importance Score Propagation". The importance s_L of the
final responses is propagated backwards through the absolute weights,

    s_k = |W_{k+1}|ᵀ s_{k+1}        (a neuron matters as much as the important neurons it feeds),

so for a 3-layer linear net s_1 = |W_2|ᵀ |W_3|ᵀ s_L. prunekit computes it by automatic
differentiation of a linearised network: every weight becomes |w| (pruned ones 0), biases, shifts
and BatchNorm running means become 0, BatchNorm is the positive scale |γ|/√(var + ε) (eval mode),
and the input is all ones, so every pre-activation is ≥ 0 and ReLU-like activations act as the
identity (as in SynFlow's linearisation, :mod:`prunekit.scoring.synflow`). Then
s_k = ∂(s_Lᵀ · output)/∂h_k, where h_k is layer k's output, summed over batch, spatial and token
positions per channel. Autograd gives NISP's rule on every DAG: where a tensor feeds several
consumers (a residual branch) their importances sum, an add passes s to both addends, and a
concatenation hands each input its slice of s. A conv's channel importance is the sum over spatial
positions (the paper's channel-to-channel |W| summed over the kernel, here also over positions).
Exact for piecewise-linear activations (ReLU, leaky ReLU with positive inputs, max/avg pooling as
autograd routes them); for smooth ones (GELU, tanh) their derivative at the linearised point
enters. Models whose output is not one floating-point tensor, or that take integer inputs (token
ids), are not supported.

s_L: all ones (data-free; the paper ranks final responses with Inf-FS, for which uniform is the
feature-agnostic choice), or, when the scorer gets data, the mean |output| per output unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..graph.graph import Group
from ..graph.importance import IMPORTANCES, Criterion, _per_channel
from ._base import ScoringInput, preserved, register_scorer
from .synflow import input_shape_from_first_linear, linearised_values, preserved_mode

SPATIAL_CANDIDATES = (32, 28, 64, 224)
SCORED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.modules.batchnorm._BatchNorm)


def neuron_importance(
    model: nn.Module,
    input_shape: Sequence[int],
    final: torch.Tensor | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """NISP score of every output channel of every Linear / Conv / BatchNorm, ``{module: (channels,)}``.

    ``input_shape`` is the shape of one all-ones input, e.g. ``(1, 784)``; ``final`` is s_L, one
    weight per output unit (last dim of the model's output; all ones by default); ``masks`` zero
    pruned weights. Modules appear in the order they first run. Scores are float64.
    """
    replace = {}
    params = dict(model.named_parameters())
    for name, mask in (masks or {}).items():
        replace[name] = params[name].detach().abs().double() * mask.to(params[name].device)
    outputs: dict[str, list[torch.Tensor]] = {}

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            outputs.setdefault(name, []).append(out)

        return hook

    handles = [
        m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if isinstance(m, SCORED_TYPES)
    ]
    try:
        with preserved_mode(model):
            model.eval()
            values = linearised_values(model, replace, batchnorm="scale", dtype=torch.float64)
            ones = torch.ones(tuple(input_shape), dtype=torch.float64, device=_device(model))
            with torch.enable_grad():  # the input requires grad so that every h_k is in the graph
                out = functional_call(model, values, (ones.requires_grad_(True),))
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"NISP needs a model that returns one tensor, got {type(out).__name__}")
    final = torch.ones(out.shape[-1], dtype=torch.float64) if final is None else final.double()
    if final.shape != (out.shape[-1],):
        raise ValueError(
            f"final must have shape ({out.shape[-1]},) (one weight per output unit), got {tuple(final.shape)}"
        )
    flat = [(n, t) for n, ts in outputs.items() for t in ts]
    grads = torch.autograd.grad((out * final.to(out.device)).sum(), [t for _, t in flat], allow_unused=True)
    scores: dict[str, torch.Tensor] = {}
    for (name, tensor), grad in zip(flat, grads, strict=True):
        channel_dim = tensor.dim() - 1 if isinstance(model.get_submodule(name), nn.Linear) else 1
        per_channel = torch.zeros(tensor.shape[channel_dim], dtype=torch.float64)
        if grad is not None:
            per_channel = (
                grad.detach().movedim(channel_dim, 0).reshape(tensor.shape[channel_dim], -1).sum(1).cpu()
            )
        scores[name] = scores.get(name, 0) + per_channel
    return scores


@register_scorer("nisp", needs_data=False)
def nisp(request: ScoringInput) -> dict[str, torch.Tensor]:
    """s_k = |W_{k+1}|ᵀ s_{k+1}: propagated neuron importance on every weight of the neuron (Yu et al., 2018).

    Per neuron: every weight of output neuron i's row (and its bias, BatchNorm γ/β) scores s_i, so
    a per-layer selection removes whole low-importance neurons first (ties inside a row break by
    position). Data-free with s_L = 1; with ``data`` s_L = mean |output| per output unit over the
    batches and the input shape is the first batch's (required for conv nets). Raises naming a
    parameter whose module is not a Linear / Conv / BatchNorm.
    """
    model = request.model
    shape, final = _input_and_final(request)
    scores = neuron_importance(model, shape, final, request.masks)
    result = {}
    for name, p in request.parameters().items():
        owner = name.rpartition(".")[0]
        if owner not in scores:
            raise ValueError(
                f"nisp scores neurons of {', '.join(t.__name__ for t in SCORED_TYPES)}; parameter {name!r} "
                f"belongs to {type(model.get_submodule(owner)).__name__}: leave it out of the names to score"
            )
        s = scores[owner].to(torch.float32)  # (channels,)
        result[name] = s.view(-1, *([1] * (p.dim() - 1))).expand(p.shape).clone().to(p.device)
    return result


def _input_and_final(request: ScoringInput) -> tuple[tuple[int, ...], torch.Tensor | None]:
    if request.data is None:
        return input_shape_from_first_linear(request.model), None
    total, shape, count = None, None, 0
    with preserved(request.model), torch.no_grad():
        for inputs, _ in request.batches():
            if not isinstance(inputs, torch.Tensor):
                raise TypeError(f"nisp needs single-tensor inputs, got {type(inputs).__name__}")
            shape = (1, *inputs.shape[1:])
            out = request.model(inputs).abs().double()
            batch_mean = out.reshape(-1, out.shape[-1]).mean(0).cpu()
            total = batch_mean if total is None else total + batch_mean
            count += 1
    return shape, total / count


def nisp_importance(input_shape: Sequence[int] | None = None) -> Criterion:
    """A group criterion: each group channel's NISP score (see the module docstring).

    The score is that of the channel at the output of the group's last producing module (a conv
    followed by BatchNorm is scored after the BatchNorm); one row, so every reduction gives it.
    Group criteria get no example inputs, so ``input_shape=None`` infers one: ``(1, in_features)``
    of a leading ``nn.Linear``, or for a conv net ``(1, in_channels, n, n)`` with the first n of
    32, 28, 64, 224 on which the model runs (channel scores sum over positions, so n changes them
    only through borders and pooling). For the exact shape register your own, e.g.
    ``IMPORTANCES.register("nisp_96", nisp_importance((1, 3, 96, 96)))``. Scores of the last
    model seen are cached while its parameters are unchanged (same storage and version).
    """

    cache: dict[tuple, dict[str, torch.Tensor]] = {}

    def score(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
        key = (id(model), tuple((p.data_ptr(), p._version) for p in model.parameters()))
        if key not in cache:  # one propagation serves every group of an unchanged model
            shape = _infer_input_shape(model) if input_shape is None else tuple(input_shape)
            cache.clear()
            cache[key] = neuron_importance(model, shape)
        scores = cache[key]
        order = list(scores)
        producers = [(i, m) for i, m in enumerate(group.members) if m.role == "out" and m.module in scores]
        if not producers:
            return torch.full((1, group.size), float("nan"))
        last = max(producers, key=lambda p: order.index(p[1].module))[1].module
        rows = [_per_channel(group, i, scores[last].float()) for i, m in producers if m.module == last]
        return rows[0].unsqueeze(0)

    score.__doc__ = "NISP: s_k = |W_{k+1}|ᵀ s_{k+1} propagated from s_L = 1 (Yu et al., CVPR 2018)."
    return score


def _infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
    linear = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if conv is None or (linear is not None and _first(model, linear, conv)):
        return input_shape_from_first_linear(model)
    dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(conv)]
    for n in SPATIAL_CANDIDATES:
        shape = (1, conv.in_channels, *([n] * dims))
        try:
            with torch.no_grad(), preserved_mode(model):
                model.eval()(torch.zeros(shape, device=_device(model)))
        except RuntimeError:
            continue
        return shape
    raise ValueError(
        f"cannot infer the input shape of this conv net (tried sizes {SPATIAL_CANDIDATES}); register "
        "nisp_importance(input_shape) with your shape, e.g. "
        "IMPORTANCES.register('nisp_x', nisp_importance((1, 3, 96, 96)))"
    )


def _first(model: nn.Module, a: nn.Module, b: nn.Module) -> bool:
    """Whether ``a`` is registered before ``b``."""
    order = [id(m) for m in model.modules()]
    return order.index(id(a)) < order.index(id(b))


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


IMPORTANCES.register("nisp", nisp_importance())
