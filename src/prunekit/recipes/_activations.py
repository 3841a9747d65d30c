"""The ``activations`` family: measure a model with ephemeral activation pruning; its weights never change."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..activations import calibrate_thresholds, prune_activations, select_layers
from ..data import make_loader, subset
from ..reporting import Curve, LayerSparsity
from ._outcome import Outcome, curve
from ._setup import Job
from .methods import Activations

log = logging.getLogger("prunekit")
Layers = list[str | type[nn.Module]]


def run_activations(job: Job) -> Outcome:
    """Evaluate with activation pruning active (after calibrating thresholds if asked); check the
    weights are bit-identical afterwards; record realised activation sparsity per layer."""
    m, model = job.recipe.method, job.model
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    layers = [*m.layers, *m.module_types]
    thresholds = _thresholds(job, layers) if m.mode == "threshold" else {}
    settings = {"threshold": thresholds} if thresholds else {"fraction": m.sparsity}
    with prune_activations(model, layers, per=m.per, **settings) as stats:
        metrics = job.evaluate(model)
    after = model.state_dict()
    if after.keys() != snapshot.keys() or not all(torch.equal(after[k], v) for k, v in snapshot.items()):
        raise RuntimeError("activation pruning changed the model's weights; please report this bug")
    rows = tuple(
        LayerSparsity(name, stats.total[name], stats.total[name] - stats.zeros[name], m.sparsity)
        for name in stats.total
    )
    notes = [
        f"activation sparsity {stats.overall():.4f} over the test set"
        + (f" (requested {m.sparsity:.4f})" if m.sparsity is not None else ""),
        "layer rows count activations (params = activations seen, nonzeros = those kept), not weights",
        "model unchanged: the stored weights are the dense model's, bit-identical after pruning; the "
        "sparsity is applied at inference by prunekit.activations.prune_activations",
        *_threshold_notes(job, thresholds),
    ]
    metrics = {**metrics, "activation_sparsity": 100.0 * stats.overall()}
    curves = [_sweep(job, layers)] if m.sweep else []
    return Outcome(model, curves=curves, notes=notes, metrics=metrics, layers=rows, thresholds=thresholds)


def _thresholds(job: Job, layers: Layers) -> dict[str, float]:
    """Per-layer thresholds: the fixed ``threshold`` for every chosen layer, or calibrated ones."""
    m, model = job.recipe.method, job.model
    if not m.calibrates:
        return dict.fromkeys(select_layers(model, layers), float(m.threshold))
    assert job.train_set is not None  # activations recipes use a dataset (checked by the recipe)
    samples = subset(job.train_set, min(m.samples, len(job.train_set)), job.recipe.seed)
    log.info("calibrating activation thresholds on %d training samples", len(samples))
    data = make_loader(samples, job.recipe.data.batch_size, shuffle=False)
    return calibrate_thresholds(model, layers, data, m.sparsity, seed=job.recipe.seed)


def _threshold_notes(job: Job, thresholds: dict[str, float]) -> list[str]:
    if not thresholds:
        return []
    m: Activations = job.recipe.method  # type: ignore[assignment]
    samples = min(m.samples, len(job.train_set or ()))
    how = f"calibrated on {samples} training samples" if m.calibrates else "fixed"
    return [f"thresholds ({how}): " + ", ".join(f"{n}={t:.6g}" for n, t in thresholds.items())]


def _sweep(job: Job, layers: Layers) -> Curve:
    """Accuracy against realised activation sparsity for 0, ``sparsity`` and every ``sweep`` fraction."""
    m, model = job.recipe.method, job.model
    points = []
    for fraction in sorted({0.0, float(m.sparsity), *m.sweep}):
        with prune_activations(model, layers, fraction=fraction, per=m.per) as stats:
            accuracy = job.evaluate(model)["accuracy"]
        points.append((100.0 * stats.overall(), accuracy))
    series = {f"top-k per {m.per}": points}
    return curve("accuracy under activation pruning", "activation sparsity (%)", "accuracy (%)", series)
