"""Second-order OBD: ½·w²·H_ii with the Hessian diagonal approximated by the empirical Fisher."""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from ._base import ScoringInput, masked_view, preserved, register_scorer


@register_scorer("obd", needs_data=True)
def obd(request: ScoringInput) -> dict[str, torch.Tensor]:
    """½ · w² · F_ii, F_ii = (1/N) Σ_n (∂ℓ_n/∂w_i)² (LeCun et al., "Optimal Brain Damage", NeurIPS 1989).

    At a minimum the loss increase from zeroing w_i is ≈ ½·H_ii·w_i². The Hessian diagonal H_ii is
    approximated by the empirical Fisher, the mean over samples of the squared *per-sample* gradient
    (computed with ``torch.func.vmap``; not the squared batch gradient, which underestimates it).
    Per-sample gradients need a per-sample forward, so the model runs in eval mode here (BatchNorm
    uses its running statistics); its mode is restored afterwards.
    """
    model = request.model
    params = request.parameters()
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    samples = 0
    with preserved(model), masked_view(request):
        model.eval()
        frozen = {n: p.detach() for n, p in model.named_parameters() if n not in params}
        buffers = dict(model.named_buffers())

        def sample_loss(scored: dict[str, torch.Tensor], inputs: Any, target: torch.Tensor) -> torch.Tensor:
            batch_of_one = _unsqueeze(inputs)
            out = functional_call(model, ({**frozen, **scored}, buffers), (batch_of_one,))
            return request.loss_fn(out, target.unsqueeze(0))

        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=64)
        detached = {n: p.detach() for n, p in params.items()}
        for inputs, targets in request.batches():
            grads = per_sample(detached, inputs, targets)
            for name, g in grads.items():
                fisher[name] += g.float().square().sum(0)
            samples += len(targets)
    return {n: 0.5 * params[n].detach().float().square() * f / samples for n, f in fisher.items()}


def _unsqueeze(inputs: Any) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.unsqueeze(0)
    raise TypeError(
        f"obd needs batches whose inputs are a single tensor, got {type(inputs).__name__}; "
        "wrap multi-input models so they take one tensor"
    )
