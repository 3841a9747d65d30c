"""GraSP: gradient signal preservation at initialisation (Wang et al., ICLR 2020)."""

from __future__ import annotations

import torch

from .._calling import call_model
from ._base import ScoringInput, masked_view, preserved, register_scorer

TEMPERATURE = 200.0  # the paper's T: logits are divided by T before the loss (its CIFAR/ImageNet default)


@register_scorer("grasp", needs_data=True)
def grasp(request: ScoringInput) -> dict[str, torch.Tensor]:
    """θ ⊙ Hg, logits / T with T = 200 (Wang, Zhang & Grosse, "GraSP", ICLR 2020).

    From "Picking Winning Tickets Before Training by Preserving Gradient Flow".
    g = Σ_b ∇_θ L_b(f(x)/T) over the batches (a constant, no graph), Hg = Σ_b ∇_θ (∇_θ L_b · g): the
    Hessian-gradient product, H and g taken over the scored weights only.

    Sign convention: the paper scores S(−θ) = −θ ⊙ Hg and removes the *largest* scores (removing those
    weights reduces gradient flow the least, or even increases it). Here higher = keep, so the score is
    its negation, θ ⊙ Hg, and selection removes the lowest, exactly as the authors' code and Tanaka et
    al.'s reference implementation do. Scores are signed (not absolute values). ``data`` is read once
    and held for the second pass. The model runs in the mode it is in; everything is restored.
    """
    model = request.model
    params = request.parameters()
    names = list(params)
    tensors = [params[n] for n in names]
    with preserved(model), masked_view(request):
        batches = list(request.batches())
        stopped = [torch.zeros_like(p) for p in tensors]
        for inputs, targets in batches:
            loss = request.loss_fn(call_model(model, inputs) / TEMPERATURE, targets)
            for acc, g in zip(stopped, torch.autograd.grad(loss, tensors, allow_unused=True), strict=True):
                if g is not None:
                    acc += g
        hessian_grad = [torch.zeros_like(p) for p in tensors]
        for inputs, targets in batches:
            loss = request.loss_fn(call_model(model, inputs) / TEMPERATURE, targets)
            grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
            z = sum((g * s).sum() for g, s in zip(grads, stopped, strict=True) if g is not None)
            if not isinstance(z, torch.Tensor) or not z.requires_grad:
                continue  # the loss is linear in the scored weights: Hg = 0 for this batch
            for acc, hg in zip(hessian_grad, torch.autograd.grad(z, tensors, allow_unused=True), strict=True):
                if hg is not None:
                    acc += hg.detach()
        weights = [p.detach().clone() for p in tensors]  # masked: read inside masked_view
    return {n: (w * hg).float() for n, w, hg in zip(names, weights, hessian_grad, strict=True)}
