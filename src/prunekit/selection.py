"""From scores to masks: exactly the requested sparsity, per layer or globally, in any pattern.

The pruned count is ``round(sparsity × units)`` — exact, not "whatever falls under a threshold".
Ties are broken deterministically: among equal scores the earlier position (parameter order, then
row-major index) is pruned first. The global threshold is found by a two-pass radix select over the
scores' order-preserving integer keys, one layer at a time, so no concatenated copy of all scores is
ever made (peak extra memory ≈ the masks plus a few copies of the largest layer).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Mapping

import torch

from ._checks import check_choice, check_sparsity
from ._kselect import prune_lowest
from .masks import Masks
from .patterns import NM, Pattern, parse_pattern

COLLAPSE_POLICIES = ("warn", "raise", "ignore")
SCOPES = ("global", "layer")


class LayerCollapseError(ValueError):
    """A selection would prune every weight of a layer (the network could no longer learn)."""


class LayerCollapseWarning(UserWarning):
    """A selection pruned every weight of a layer."""


def select(
    scores: Mapping[str, torch.Tensor],
    sparsity: float | None,
    *,
    scope: str = "global",
    pattern: str | Pattern = "element",
    overrides: Mapping[str, float] | None = None,
    prior: Masks | None = None,
    on_collapse: str = "warn",
) -> Masks:
    """Masks that prune the lowest-scored units of ``scores``.

    Args:
        scores: parameter name → scores of the parameter's shape (higher = keep).
        sparsity: fraction of units to prune, in [0, 1). ``None`` only for N:M patterns (fixed 1 − n/m).
        scope: ``"global"`` ranks all layers together; ``"layer"`` prunes each layer to ``sparsity``.
        pattern: ``"element"``, N:M (``"2:4"``), block (``"4x4"``) or a pattern object.
        overrides: per-layer sparsity by parameter name, module name or glob (first match wins); those
            layers are pruned to their own sparsity, also under global scope.
        prior: existing masks; their pruned entries stay pruned and count towards the sparsity.
        on_collapse: ``"warn"``, ``"raise"`` or ``"ignore"`` when a layer would lose every weight.
    """
    shapes = {name: _shape_of(scores, name) for name in scores}
    pattern, sparsity, per_layer = check_selection(shapes, sparsity, scope, pattern, overrides, on_collapse)
    for name, shape in shapes.items():
        if prior is not None and name in prior and prior[name].shape != shape:
            raise ValueError(
                f"prior mask for {name!r} has shape {tuple(prior[name].shape)}, scores have {tuple(shape)}"
            )

    if isinstance(pattern, NM):
        masks = {n: pattern.keep_mask(_with_prior(scores[n], prior, n)) for n in scores}
    else:
        masks = _select_units(scores, sparsity, scope, pattern, per_layer, prior)
    if prior is not None:
        masks = {n: m & prior[n].to(m.device) if n in prior else m for n, m in masks.items()}
    result = Masks(masks)
    guard_collapse(result, on_collapse)
    return result


def check_selection(
    shapes: Mapping[str, torch.Size],
    sparsity: float | None,
    scope: str,
    pattern: str | Pattern,
    overrides: Mapping[str, float] | None,
    on_collapse: str,
) -> tuple[Pattern, float, dict[str, float]]:
    """Validate selection arguments against parameter shapes before any work is done.

    Returns the parsed pattern, the effective sparsity and the per-layer overrides by parameter name.
    """
    pattern = parse_pattern(pattern)
    check_choice(scope, "scope", SCOPES)
    check_choice(on_collapse, "on_collapse", COLLAPSE_POLICIES)
    if not shapes:
        raise ValueError("no scores to select from: the model has no prunable parameters")
    sparsity = _resolve_sparsity(sparsity, pattern)
    per_layer = resolve_overrides(list(shapes), overrides or {})
    for name, shape in shapes.items():
        pattern.check(name, shape)
    return pattern, sparsity, per_layer


def _select_units(
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    scope: str,
    pattern: Pattern,
    per_layer: Mapping[str, float],
    prior: Masks | None,
) -> dict[str, torch.Tensor]:
    def units(name: str) -> Callable[[], torch.Tensor]:
        return lambda: pattern.unit_scores(_with_prior(scores[name], prior, name))

    unit_counts = {n: _unit_count(pattern, _shape_of(scores, n)) for n in scores}
    pruned: dict[str, torch.Tensor] = {}
    groups: list[tuple[list[str], int]] = []
    for name, layer_sparsity in per_layer.items():
        groups.append(([name], round(layer_sparsity * unit_counts[name])))
    shared = [n for n in scores if n not in per_layer]
    if scope == "layer":
        groups += [([n], round(sparsity * unit_counts[n])) for n in shared]
    elif shared:
        groups.append((shared, round(sparsity * sum(unit_counts[n] for n in shared))))
    for names, k in groups:
        for name, mask in zip(names, prune_lowest([units(n) for n in names], k, names), strict=True):
            pruned[name] = mask
    # prune_lowest returns fresh tensors: invert them in place rather than holding two sets of masks.
    return {n: pattern.expand(pruned[n].logical_not_(), _shape_of(scores, n)) for n in scores}


def _with_prior(scores: torch.Tensor, prior: Masks | None, name: str) -> torch.Tensor:
    scores = scores.detach().float()
    if prior is None or name not in prior:
        return scores
    return scores.masked_fill(~prior[name].to(scores.device), float("-inf"))


def _unit_count(pattern: Pattern, shape: torch.Size) -> int:
    return pattern.unit_scores(torch.empty(shape, device="meta")).numel()


def _shape_of(scores: Mapping[str, torch.Tensor], name: str) -> torch.Size:
    shapes = getattr(scores, "shapes", None)  # LazyScores know their shapes without computing
    return shapes[name] if shapes is not None else scores[name].shape


def _resolve_sparsity(sparsity: float | None, pattern: Pattern) -> float:
    if isinstance(pattern, NM):
        if sparsity is not None and abs(check_sparsity(sparsity) - pattern.sparsity) > 1e-9:
            raise ValueError(
                f"pattern {pattern} fixes sparsity at {pattern.sparsity:g}, but sparsity={sparsity!r} was "
                "requested; pass sparsity=None (or the matching value) with an N:M pattern"
            )
        return pattern.sparsity
    if sparsity is None:
        raise ValueError("sparsity is required (a float in [0, 1)) unless the pattern is N:M")
    return check_sparsity(sparsity)


def resolve_overrides(names: list[str], overrides: Mapping[str, float]) -> dict[str, float]:
    """Parameter name → its own sparsity, for names matched by a key of ``overrides``."""
    resolved: dict[str, float] = {}
    used: set[str] = set()
    for name in names:
        module = name.rsplit(".", 1)[0]
        for key, value in overrides.items():
            if fnmatch.fnmatchcase(name, key) or fnmatch.fnmatchcase(module, key):
                resolved[name] = check_sparsity(value, f"overrides[{key!r}]")
                used.add(key)
                break
    unused = [key for key in overrides if key not in used]
    if unused:
        raise ValueError(
            f"overrides keys {unused} match no prunable parameter; prunable parameters are: {names[:10]}"
            f"{' ...' if len(names) > 10 else ''}"
        )
    return resolved


def guard_collapse(
    masks: Masks,
    on_collapse: str,
    advice: str = "use scope='layer' or per-layer overrides, or a collapse-avoiding method",
) -> None:
    """Warn or raise (``on_collapse``) when a layer of ``masks`` is empty; ``advice`` ends the message."""
    empty = masks.empty_layers()
    if not empty or on_collapse == "ignore":
        return
    message = (
        f"layer collapse: every weight of {empty} would be pruned, which disconnects the network; lower "
        f"the sparsity, {advice}"
    )
    if on_collapse == "raise":
        raise LayerCollapseError(message)
    warnings.warn(message, LayerCollapseWarning, stacklevel=3)
