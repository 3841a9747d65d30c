"""SynFlow: iterative synaptic flow, data-free (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

from ._base import ScoringInput, _device_of, register_scorer

BATCHNORM_MODES = ("scale", "identity")
FLOAT32_FLOW_RANGE = (1e-30, 1e30)  # R inside: float32 scores are kept; outside: recomputed in float64


@register_scorer("synflow", needs_data=False)
def synflow(request: ScoringInput) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂R/∂θ| / R, R = 1ᵀ(∏_l |W_l|)1 on an all-ones input (Tanaka et al., NeurIPS 2020).

    "Pruning neural networks without any data by iteratively conserving synaptic flow". The network is
    linearised: every weight becomes |w| (pruned ones 0), the model runs in eval mode in float64 on one
    all-ones input, and R is the sum of its outputs. Run it iteratively (``iterative_masks(model,
    "synflow", s, rounds=100)``): one shot, it collapses layers like the others.

    Choices, and why:

    - **Biases and shifts are set to 0** (also BatchNorm's β and running mean). The paper's code
      takes |b| instead; with PyTorch's default init (biases ~ U(±1/√fan_in)) that breaks the
      conservation law the method rests on: a bias injects flow downstream of the weights before it,
      so layers near the input get a shrinking share of R as they are pruned, and global selection
      empties them (measured in ``bench/layer_collapse.py``). With shifts at 0, R = 1ᵀ(∏|W|)1 exactly
      and, in a sequential net, every layer's scores sum to R.
    - **BatchNorm is the positive per-channel scale |γ|/√(running_var + ε)** (eval mode, as in the
      reference code), so it rescales flow but neither creates nor destroys it. Batch statistics of
      one all-ones input would be meaningless.
    - **float32, and float64 when needed**: R is a product over layers. Through ~20 dense layers it
      can pass float32's 3e38; after many rounds at high compression it can fall below float32's
      range (one path through 20 weights of 0.01 carries 1e-40). The flow is computed in float32
      (convolutions run ~2× faster than in float64 on CPU) and recomputed in float64 whenever R
      leaves [1e-30, 1e30] or a score is not finite. Scores are divided by R (each is the share of
      the flow through a weight), so they stay in float32's range for selection.

    The masked network is scored (pruned weights enter as 0). Nothing is written to the model: the
    linearised values are new tensors given to ``torch.func.functional_call``; only the train/eval
    mode changes, and it is restored. Only the input's shape matters: it is taken from the first
    batch of ``data`` when given (required for conv nets), otherwise from the first ``nn.Linear``.
    """
    shape = _input_shape(request)
    for dtype in (torch.float32, torch.float64):
        flow, scores = _flow_scores(request, shape, dtype)
        finite = all(math.isfinite(float(s.sum())) for s in scores.values())  # a NaN or inf poisons the sum
        if finite and FLOAT32_FLOW_RANGE[0] < flow < FLOAT32_FLOW_RANGE[1]:
            break  # float32 was exact enough; otherwise the float64 pass below replaces it
    return {
        n: s.to(torch.float32) if flow > 0 else torch.zeros_like(s, dtype=torch.float32)
        for n, s in scores.items()
    }


def _flow_scores(
    request: ScoringInput, shape: tuple[int, ...], dtype: torch.dtype
) -> tuple[float, dict[str, torch.Tensor]]:
    """R and |θ| ⊙ ∂R/∂θ / R of the linearised masked network, computed in ``dtype``."""
    model, names = request.model, list(request.names)
    masks = request.masks or {}
    params = dict(model.named_parameters())
    replace = {}
    for name in names:  # |w| ⊙ mask: a new tensor, the parameter is never written
        value = params[name].detach().to(dtype, copy=True).abs_()
        replace[name] = value.mul_(masks[name].to(value.device)) if name in masks else value
    with preserved_mode(model):
        model.eval()
        values = linearised_values(model, replace, batchnorm="scale", dtype=dtype)
        for name in names:
            values[name].requires_grad_(True)
        flow = _run(model, values, torch.ones(shape, dtype=dtype, device=_device_of(model))).sum()
        grads = torch.autograd.grad(flow, [values[n] for n in names], allow_unused=True)
    flow_value = float(flow.detach())
    scores = {}
    for name, g in zip(names, grads, strict=True):
        value = values[name].detach()
        scores[name] = (
            torch.zeros_like(value) if g is None else g.mul_(value).div_(flow_value if flow_value else 1.0)
        )
    return flow_value, scores


@contextmanager
def preserved_mode(model: nn.Module) -> Iterator[None]:
    """Restore every module's train/eval flag on exit (SynFlow writes nothing else to the model)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def linearised_values(
    model: nn.Module,
    replace: Mapping[str, torch.Tensor],
    *,
    batchnorm: str,
    dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the linearised network in ``dtype``, for ``functional_call``.

    ``replace[name]`` sets a parameter's value; the others become |p|, except biases (any name ending
    in ``bias``) and BatchNorm running means, which become 0. ``batchnorm="scale"`` keeps BatchNorm as
    the scale |γ|/√(var + ε); ``"identity"`` makes it the identity map.
    """
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    values: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        value = replace[name] if name in replace else p.detach().abs()
        values[name] = torch.zeros_like(p) if name.endswith("bias") else value
    for name, b in model.named_buffers():
        if b.is_floating_point():
            values[name] = torch.zeros_like(b) if name.endswith("running_mean") else b.detach().abs()
    if batchnorm == "identity":
        for module_name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                prefix = f"{module_name}." if module_name else ""
                values[prefix + "running_var"] = torch.ones_like(module.running_var)
                if module.weight is not None:
                    values[prefix + "weight"] = torch.full_like(module.weight, math.sqrt(1.0 + module.eps))
    return {n: v.detach().to(dtype) for n, v in values.items()}  # no copy when already in dtype


def _run(model: nn.Module, values: dict[str, torch.Tensor], ones: torch.Tensor) -> torch.Tensor:
    try:
        out = functional_call(model, values, (ones,))
    except RuntimeError as err:
        raise ValueError(
            f"the linearised forward on an all-ones input of shape {tuple(ones.shape)} failed ({err}); "
            "pass data=[(example_inputs, targets)] so the input shape is taken from a real batch"
        ) from err
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"synflow needs a model that returns one tensor, got {type(out).__name__}")
    return out


def _input_shape(request: ScoringInput) -> tuple[int, ...]:
    if request.data is not None:
        inputs, _ = next(iter(request.batches()))
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"synflow needs single-tensor inputs, got {type(inputs).__name__}")
        return (1, *inputs.shape[1:])
    return input_shape_from_first_linear(request.model)


def input_shape_from_first_linear(model: nn.Module) -> tuple[int, ...]:
    """``(1, in_features)`` of the first ``nn.Linear``, or ``ValueError`` naming the fix."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            break
        if isinstance(module, nn.Linear):
            return (1, module.in_features)
    raise ValueError(
        "cannot infer the input shape of a model that does not start with nn.Linear; pass "
        "data=[(example_inputs, targets)] (only the shape of example_inputs is used)"
    )
