"""Pruning at initialisation, iteratively: any scorer run over many rounds of score → select.

SynFlow's "100 iterations" (Tanaka et al., NeurIPS 2020) is this loop applied to the ``synflow``
scorer; the same loop makes iterative SNIP, GraSP or magnitude pruning at init. The model is never
changed: each round scores the network with the previous round's masks applied, so pruned weights
stay pruned and the scorer sees the masked network.

Each round gives exactly the masks of ``compute_masks(model, method, s_k, prior=previous)``, but
selects among the surviving weights only: at high compression most weights are already pruned, and
ranking the survivors is what makes 100 rounds on an 11M-parameter model affordable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_positive_int, check_sparsity
from .api import target_names
from .masks import Masks
from .schedules import sparsity_steps
from .scoring import ScoringInput, get_scorer
from .scoring._base import LossFn, _cross_entropy
from .selection import check_selection, guard_collapse, resolve_overrides, select
from .targets import IgnoreSpec


def iterative_masks(
    model: nn.Module,
    method: str,
    sparsity: float,
    rounds: int = 100,
    schedule: str = "exponential",
    *,
    scope: str = "global",
    data: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    max_batches: int | None = None,
    targets: Sequence[str] | None = None,
    ignore: Iterable[IgnoreSpec] = (),
    overrides: Mapping[str, float] | None = None,
    prior: Masks | None = None,
    on_collapse: str = "warn",
    seed: int = 0,
    progress: bool = False,
) -> Masks:
    """Masks at ``sparsity`` after ``rounds`` rounds of score → select, each keeping earlier prunings.

    With ``schedule="exponential"`` round k keeps (1 − sparsity)^(k/rounds) of the weights, as in the
    SynFlow paper; ``"linear"`` steps the sparsity linearly; ``rounds=1`` is one-shot pruning. Round k
    equals ``compute_masks(model, method, s_k, prior=masks_{k-1}, ...)`` with the other arguments as in
    :func:`prunekit.compute_masks` (element-wise pattern only). The model's weights, buffers and mode
    are unchanged. ``on_collapse`` is checked on the final masks only. ``progress`` shows a tqdm bar
    over the rounds.
    """
    check_sparsity(sparsity)
    check_positive_int(rounds, "rounds")
    scorer = get_scorer(method)
    names = target_names(model, targets, ignore)
    params = dict(model.named_parameters())
    check_selection({n: params[n].shape for n in names}, sparsity, scope, "element", overrides, on_collapse)
    masks = prior if prior is not None else Masks.ones(model, names)
    masks.validate(model)
    steps = sparsity_steps(sparsity, rounds, schedule)
    for step in tqdm(steps, desc=f"{method} rounds", disable=not progress or rounds == 1, leave=False):
        request = ScoringInput(
            model=model,
            names=tuple(names),
            data=data,
            loss_fn=loss_fn or _cross_entropy,
            max_batches=max_batches,
            generator=torch.Generator().manual_seed(seed),
            masks=masks,
        )
        masks = select_survivors(scorer(request), step, masks, scope=scope, overrides=overrides)
    guard_collapse(masks, on_collapse, advice="use more rounds or scope='layer', or iterative synflow")
    return masks


def select_survivors(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    prior: Masks,
    *,
    scope: str = "global",
    overrides: Mapping[str, float] | None = None,
) -> Masks:
    """``select(scores, sparsity, prior=prior, on_collapse="ignore")``, ranking only what ``prior`` keeps.

    The pruned counts are those of :func:`prunekit.select` (``round(sparsity × units)``, earlier
    pruning counting towards them) and ties break the same way (earlier parameter, then lower flat
    index), so the masks are identical; the work is proportional to the surviving weights.
    """
    names = list(scores)
    kept = {n: prior[n] if n in prior else torch.ones(scores[n].shape, dtype=torch.bool) for n in names}
    per_layer = resolve_overrides(names, overrides or {})
    if scope == "layer":
        per_layer = {n: per_layer.get(n, sparsity) for n in names}
    shared = [n for n in names if n not in per_layer]
    groups = [([n], s) for n, s in per_layer.items()] + ([(shared, sparsity)] if shared else [])
    counts = {n: int(torch.count_nonzero(kept[n])) for n in names}
    sub_sparsity: dict[str, float] = {}
    for group, target in groups:
        total = sum(kept[n].numel() for n in group)
        alive = sum(counts[n] for n in group)
        extra = min(max(round(target * total) - (total - alive), 0), alive)  # still to prune
        for n in group:
            sub_sparsity[n] = extra / alive if alive else 0.0
    survivors = {n: _survivors(scores[n], kept[n], counts[n]) for n in names}
    full = [n for n in names if sub_sparsity[n] >= 1.0]  # the whole group goes: nothing to rank
    ranked = {n: s for n, s in survivors.items() if n not in full}
    sub = {n: torch.zeros(0, dtype=torch.bool) for n in full}
    if ranked:
        group_sparsity = sub_sparsity[shared[0]] if shared and shared[0] in ranked else 0.0
        own = {n: sub_sparsity[n] for n in ranked if n in per_layer}
        sub.update(select(ranked, group_sparsity, scope="global", overrides=own, on_collapse="ignore"))
    out = {}
    for n in names:
        mask = kept[n].clone()
        out[n] = mask.masked_fill_(kept[n], False) if n in full else mask.masked_scatter_(kept[n], sub[n])
    return Masks(out)


def _survivors(scores: torch.Tensor, kept: torch.Tensor, count: int) -> torch.Tensor:
    """The scores of the kept entries, flat in row-major order (no copy when all are kept)."""
    flat = scores.detach().float().reshape(-1).cpu()
    return flat if count == flat.numel() else flat.masked_select(kept.reshape(-1))


def compression_to_sparsity(compression: float) -> float:
    """Sparsity 1 − 1/c for a compression c = dense / remaining ≥ 1 (the SynFlow paper's 10^x)."""
    if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not compression >= 1:
        raise ValueError(
            f"compression must be a number >= 1 (dense ÷ remaining weights, e.g. 100 keeps 1%), "
            f"got {compression!r}"
        )
    return 1.0 - 1.0 / compression
