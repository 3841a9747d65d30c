"""One-call unstructured pruning: score → select → apply, with the user's model left untouched."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .masks import Masks
from .patterns import NM, Pattern, parse_pattern
from .report import PruningReport, build_report
from .scoring import ScoringInput, get_scorer
from .scoring._base import LossFn, _cross_entropy
from .selection import check_selection, resolve_overrides, select
from .targets import IgnoreSpec, prunable_parameters


@dataclass(frozen=True)
class PruneResult:
    """The pruned model (a copy unless ``inplace``), its masks and the report."""

    model: nn.Module
    masks: Masks
    report: PruningReport


def compute_masks(
    model: nn.Module,
    method: str = "magnitude",
    sparsity: float | None = 0.5,
    *,
    scope: str = "global",
    pattern: str | Pattern = "element",
    data: Iterable[Any] | None = None,
    loss_fn: LossFn | None = None,
    max_batches: int | None = None,
    targets: Sequence[str] | None = None,
    ignore: Iterable[IgnoreSpec] = (),
    overrides: Mapping[str, float] | None = None,
    prior: Masks | None = None,
    on_collapse: str = "warn",
    seed: int = 0,
) -> Masks:
    """Score the prunable weights of ``model`` with ``method`` and select masks; the model is unchanged.

    ``targets`` lists parameter names to prune instead of the defaults (see :mod:`prunekit.targets`);
    ``prior`` masks stay pruned (iterative pruning). Other arguments as in :func:`prunekit.select`.
    """
    scorer = get_scorer(method)
    pattern = parse_pattern(pattern)
    names = target_names(model, targets, ignore)
    if prior is not None:
        prior.validate(model)
    request = ScoringInput(
        model=model,
        names=tuple(names),
        data=data,
        loss_fn=loss_fn or _cross_entropy,
        max_batches=max_batches,
        generator=torch.Generator().manual_seed(seed),
        masks=prior,
    )
    params = dict(model.named_parameters())
    check_selection({n: params[n].shape for n in names}, sparsity, scope, pattern, overrides, on_collapse)
    scores = scorer(request)
    return select(
        scores,
        sparsity,
        scope=scope,
        pattern=pattern,
        overrides=overrides,
        prior=prior,
        on_collapse=on_collapse,
    )


def prune(
    model: nn.Module,
    method: str = "magnitude",
    sparsity: float | None = 0.5,
    *,
    inplace: bool = False,
    example_inputs: Any = None,
    **kwargs: Any,
) -> PruneResult:
    """Prune ``model`` permanently and report what was removed.

    Returns a pruned deep copy (the user's model is untouched) unless ``inplace=True``. Keyword
    arguments are those of :func:`compute_masks`. ``example_inputs`` enables MAC counts in the report.
    """
    masks = compute_masks(model, method, sparsity, **kwargs)
    pruned = masks.apply(model, inplace=inplace)
    pattern = parse_pattern(kwargs.get("pattern", "element"))
    scope = kwargs.get("scope", "global")
    overall, per_layer = _requested(masks, sparsity, scope, pattern, kwargs.get("overrides"))
    report = build_report(
        pruned,
        masks=masks,
        example_inputs=example_inputs,
        requested=overall,
        requested_per_layer=per_layer,
        method=method,
        scope=scope,
        pattern=str(pattern),
    )
    return PruneResult(model=pruned, masks=masks, report=report)


def target_names(model: nn.Module, targets: Sequence[str] | None, ignore: Iterable[IgnoreSpec]) -> list[str]:
    """The parameters to prune: ``targets`` checked against the model, else the prunable defaults."""
    if targets is None:
        return prunable_parameters(model, ignore=ignore)
    params = dict(model.named_parameters())
    missing = [t for t in targets if t not in params]
    if missing or not targets:
        raise ValueError(
            f"targets must name parameters of the model; unknown: {missing or 'empty list'}; "
            f"parameters are: {list(params)[:10]}"
        )
    return list(targets)


def _requested(
    masks: Masks, sparsity: float | None, scope: str, pattern: Pattern, overrides: Mapping[str, float] | None
) -> tuple[float, dict[str, float]]:
    """Overall requested sparsity (parameter-weighted) and the per-layer targets that were set.

    Under global scope only overridden layers have a target of their own; the rest share ``sparsity``.
    """
    base = float(pattern.sparsity if isinstance(pattern, NM) else sparsity)
    per_layer = resolve_overrides(list(masks), overrides or {})
    if scope == "layer" or isinstance(pattern, NM):
        per_layer = {n: per_layer.get(n, base) for n in masks}
    sizes = {n: m.numel() for n, m in masks.items()}
    overall = sum(per_layer.get(n, base) * size for n, size in sizes.items()) / sum(sizes.values())
    return overall, per_layer
