"""Ephemeral activation pruning: sparsify chosen layers' outputs during a forward pass, then vanish.

Inside ``with prune_activations(model, layers, fraction=f):`` a forward hook on every chosen module
replaces its output ``a`` by a sparse copy: per row (a sample, or a token: the last dim),

    top-k:      a'ᵢ = aᵢ · [|aᵢ| is among the n − round(f·n) largest |a| of the row]
    threshold:  a'ᵢ = aᵢ · [|aᵢ| ≥ t_layer]

(dynamic activation sparsity, as in e.g. Kurtz et al., ICML 2020, "Inducing and Exploiting
Activation Sparsity", and the top-k / threshold sparsification of Deja Vu / CATS for LLM MLPs).
Nothing is written to the model: the hooks return new tensors and are all removed on exit, also
when the body raises, so outputs after the context are bit-identical to outputs before it.
:func:`calibrate_thresholds` picks per-layer thresholds t_layer = the s-quantile of |a| over
sample data, so that threshold mode zeroes a fraction s of each layer's activations on such data.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._calling import call_model
from ._checks import check_choice, check_sparsity

LayerSpec = str | type[nn.Module] | Iterable[str | type[nn.Module]]
PER_CHOICES = ("sample", "token")


@dataclass
class ActivationStats:
    """Running counts of the pruned outputs: ``zeros[name]`` of ``total[name]`` activations."""

    zeros: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, pruned: torch.Tensor) -> None:
        self.zeros[name] = self.zeros.get(name, 0) + int((pruned == 0).sum())
        self.total[name] = self.total.get(name, 0) + pruned.numel()

    def sparsity(self) -> dict[str, float]:
        """Realised sparsity per layer: zeros / activations over every forward so far."""
        return {n: self.zeros[n] / self.total[n] for n in self.total if self.total[n]}

    def overall(self) -> float:
        """Realised sparsity over all chosen layers together (0.0 before any forward)."""
        total = sum(self.total.values())
        return sum(self.zeros.values()) / total if total else 0.0


def select_layers(model: nn.Module, layers: LayerSpec) -> dict[str, nn.Module]:
    """Modules named by ``layers``: exact names, globs (``"encoder.layer.*.intermediate"``) or types.

    Raises ``ValueError`` naming a pattern that matches no module (with valid names), or when
    nothing is chosen.
    """
    specs = [layers] if isinstance(layers, (str, type)) else list(layers)
    if not specs:
        raise ValueError("layers is empty; pass module names, globs or types, e.g. ['fc1', 'fc2']")
    named = [(n, m) for n, m in model.named_modules() if n]
    chosen: dict[str, nn.Module] = {}
    for spec in specs:
        if isinstance(spec, type):
            hits = [(n, m) for n, m in named if isinstance(m, spec)]
        elif isinstance(spec, str):
            hits = [(n, m) for n, m in named if n == spec or fnmatch.fnmatchcase(n, spec)]
        else:
            raise TypeError(f"layers entries must be str (name or glob) or nn.Module types, got {spec!r}")
        if not hits:
            raise ValueError(
                f"layers entry {spec!r} matches no module; valid names include "
                f"{[n for n, _ in named][:10]} (see model.named_modules())"
            )
        chosen.update(hits)
    return chosen


def _rows(out: torch.Tensor, per: str, name: str) -> torch.Tensor:
    """The output as ``(rows, n)``: one row per sample (``per="sample"``) or per token (last dim)."""
    if out.dim() < (2 if per == "sample" else 1):
        raise ValueError(f"layer {name!r} output has shape {tuple(out.shape)}; per={per!r} needs a batch dim")
    return out.reshape(out.shape[0], -1) if per == "sample" else out.reshape(-1, out.shape[-1])


def topk_sparsify(out: torch.Tensor, fraction: float, per: str = "sample", name: str = "") -> torch.Tensor:
    """Zero the ``round(fraction·n)`` smallest |a| of every row (ties: ``torch.topk``'s order)."""
    rows = _rows(out, per, name)  # (rows, n)
    drop = round(fraction * rows.shape[1])
    if drop == 0:
        return out
    smallest = rows.abs().topk(drop, dim=1, largest=False).indices  # (rows, drop)
    return rows.scatter(1, smallest, 0.0).reshape(out.shape)


def _check_output(name: str, out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise TypeError(
            f"layer {name!r} returns {type(out).__name__}, not a floating-point tensor; choose a module "
            "whose output is one tensor (e.g. the Linear inside it)"
        )
    return out


def _thresholds(threshold: float | Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    if isinstance(threshold, Mapping):
        missing = [n for n in names if n not in threshold]
        if missing:
            raise ValueError(
                f"threshold has no value for layers {missing}; give one per chosen layer "
                "(calibrate_thresholds returns such a dict) or a single float"
            )
        values = {n: threshold[n] for n in names}
    else:
        values = dict.fromkeys(names, threshold)
    for n, t in values.items():
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
            raise ValueError(
                f"threshold for layer {n!r} must be a float ≥ 0 (|a| below it is zeroed), got {t!r}"
            )
    return {n: float(t) for n, t in values.items()}


@contextmanager
def prune_activations(
    model: nn.Module,
    layers: LayerSpec,
    *,
    fraction: float | None = None,
    threshold: float | Mapping[str, float] | None = None,
    per: str = "sample",
) -> Iterator[ActivationStats]:
    """Sparsify the outputs of ``layers`` during forwards inside the context; yields running stats.

    Exactly one of ``fraction`` (top-k: zero that fraction of each row, in [0, 1)) or ``threshold``
    (zero |a| < t; one float, or ``{layer: t}`` from :func:`calibrate_thresholds`) must be given.
    ``per="sample"`` ranks over all of a sample's activations, ``"token"`` over the last dim (one
    row per token). Realised sparsity counts every exact zero of the pruned output, so it exceeds
    ``fraction`` where the layer already outputs zeros (e.g. after a ReLU).
    """
    check_choice(per, "per", PER_CHOICES)
    if (fraction is None) == (threshold is None):
        raise ValueError(
            "give exactly one of fraction= (top-k, e.g. 0.5) or threshold= (e.g. calibrate_thresholds(...)); "
            f"got fraction={fraction!r}, threshold={threshold!r}"
        )
    chosen = select_layers(model, layers)
    frac = None if fraction is None else check_sparsity(fraction, "fraction")
    limits = None if threshold is None else _thresholds(threshold, chosen)
    stats = ActivationStats()

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> torch.Tensor:
            out = _check_output(name, out)
            if limits is not None:
                pruned = out.masked_fill(out.abs() < limits[name], 0.0)
            else:
                pruned = topk_sparsify(out, frac or 0.0, per, name)
            stats.record(name, pruned.detach())
            return pruned

        return hook

    handles = []
    try:
        for name, module in chosen.items():
            handles.append(module.register_forward_hook(hook_for(name)))
        yield stats
    finally:
        for handle in handles:
            handle.remove()


def calibrate_thresholds(
    model: nn.Module,
    layers: LayerSpec,
    data: Iterable[Any],
    target_sparsity: float,
    *,
    max_batches: int | None = None,
    max_values: int = 1 << 22,
    seed: int = 0,
) -> dict[str, float]:
    """Per-layer thresholds t = the ``target_sparsity``-quantile of |a| over ``data``.

    ``data`` yields ``(inputs, targets)`` batches (targets are ignored; inputs may be a tensor, a
    tuple of tensors or a dict of keyword tensors); it is read once per layer. Layers are calibrated
    one after another in ``named_modules`` order, each with the layers before it already pruned at
    their thresholds, so that the activations a layer is calibrated on are those it sees when all
    thresholds apply. With t the k-th smallest |a| (k = round(s·n)), exactly k of the n calibration
    activations lie below t when there are no ties, so threshold mode realises sparsity s on the
    calibration data and ≈ s on similar data. At most ``max_values`` activations per layer are kept
    (a seeded uniform subsample). Runs under ``torch.no_grad``; the model is not changed.
    """
    target = check_sparsity(target_sparsity, "target_sparsity")
    chosen = select_layers(model, layers)
    order = [n for n, _ in model.named_modules() if n in chosen]
    generator = torch.Generator().manual_seed(seed)
    thresholds: dict[str, float] = {}
    for name in order:
        values = _collect(model, name, chosen[name], data, thresholds, max_batches, max_values, generator)
        k = min(round(target * values.numel()), values.numel() - 1)
        thresholds[name] = float(values.sort().values[k])
    return {n: thresholds[n] for n in chosen}


def _collect(
    model: nn.Module,
    name: str,
    module: nn.Module,
    data: Iterable[Any],
    prior: dict[str, float],
    max_batches: int | None,
    cap: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """|a| of the output over ``data`` (subsampled to ``cap``), earlier layers pruned at ``prior``."""
    chunks: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        chunks.append(_check_output(name, out).detach().abs().flatten().float())

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad(), _maybe_pruned(model, prior):
            for count, (inputs, _) in enumerate(data):
                if max_batches is not None and count >= max_batches:
                    break
                call_model(model, inputs)
    finally:
        handle.remove()
    if not chunks:
        raise ValueError(f"layer {name!r} never ran on the calibration data; check layers and data")
    values = torch.cat(chunks)
    if values.numel() > cap:
        values = values[torch.randperm(values.numel(), generator=generator)[:cap]]
    return values


@contextmanager
def _maybe_pruned(model: nn.Module, thresholds: dict[str, float]) -> Iterator[None]:
    if not thresholds:
        yield
        return
    with prune_activations(model, list(thresholds), threshold=thresholds):
        yield
