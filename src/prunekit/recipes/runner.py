"""Run a validated recipe: prepare → prune (per family) → export → measure → report."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import torch

from ..checkpoints import save_weights
from ..reporting import RunRecord, write_reports
from ._setup import Job, layer_rows, measure, prepare
from .families import RUNS, Outcome
from .schema import Recipe, dump_recipe

log = logging.getLogger("prunekit")
RESOLVED = "recipe.resolved.yaml"
REPORTS = {"report": "report.json", "report_markdown": "report.md", "report_html": "report.html"}


def run_recipe(
    recipe: Recipe, out: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> RunRecord:
    """Run ``recipe`` with its seed, write the pruned model, masks, resolved recipe and reports to ``out``
    (default: the recipe's ``output``, else ``out/recipe``) and return the run's record."""
    start = time.perf_counter()
    folder = Path(out or recipe.output or "out/recipe")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESOLVED).write_text(dump_recipe(recipe))
    log.info("running %s recipe → %s", recipe.family, folder)
    job = prepare(recipe, progress)
    dense_metrics = job.evaluate(job.model)
    outcome = RUNS[recipe.family](job)
    reference = outcome.reference if outcome.reference is not None else job.model
    before = measure(reference, job.example, job.evaluate(reference) if outcome.reference else dense_metrics)
    outputs = {"recipe": RESOLVED, **export(job, outcome, folder)}
    metrics = outcome.metrics if outcome.metrics is not None else job.evaluate(outcome.model)
    after = measure(outcome.model, job.example, metrics)
    after = dataclasses.replace(after, stored_bytes=_stored_bytes(folder, outputs))
    layers = outcome.layers
    if outcome.masks is not None:
        layers = layer_rows(outcome.model, outcome.masks, None)
    requested = getattr(recipe.method, "target", None)
    record = RunRecord(
        title=recipe.title or f"{recipe.family} pruning",
        family=recipe.family,
        recipe=recipe.to_dict(),
        before=before,
        after=after,
        layers=layers,
        plan=outcome.plan,
        curves=tuple(outcome.curves),
        notes=(
            *([f"requested sparsity {requested:.4f}"] if requested is not None else []),
            *outcome.notes,
            f"torch threads: {torch.get_num_threads()}",
        ),
        seed=recipe.seed,
        wall_s=time.perf_counter() - start,
        outputs={**outputs, **REPORTS},
    )
    write_reports(record, folder)
    log.info("wrote %s", ", ".join(sorted(record.outputs.values())))
    return record


def export(job: Job, outcome: Outcome, folder: Path) -> dict[str, str]:
    """Write every format of ``recipe.export``; returns kind → path relative to ``folder``."""
    files = {}
    for kind in job.recipe.export:
        files[kind] = _EXPORTERS[kind](job, outcome, folder)
    return files


def _masks(job: Job, outcome: Outcome, folder: Path) -> str:
    assert outcome.masks is not None  # structured recipes cannot ask for masks (schema)
    outcome.masks.save(folder / "masks.safetensors")
    return "masks.safetensors"


def _safetensors(job: Job, outcome: Outcome, folder: Path) -> str:
    if job.recipe.family == "structured":
        from ..graph import save_pruned

        save_pruned(outcome.model, folder / "model")
        return "model/weights.safetensors"
    save_weights(outcome.model, folder / "model.safetensors")
    return "model.safetensors"


def _compressed(job: Job, outcome: Outcome, folder: Path) -> str:
    from ..export import save_compressed

    save_compressed(outcome.model, folder / "model.compressed.safetensors")
    return "model.compressed.safetensors"


def _onnx(job: Job, outcome: Outcome, folder: Path) -> str:
    from ..export import export_onnx

    export_onnx(outcome.model, job.example, folder / "model.onnx")
    return "model.onnx"


def _pretrained(job: Job, outcome: Outcome, folder: Path) -> str:
    from ..export import save_pretrained

    save_pretrained(outcome.model, folder / "pretrained")
    return "pretrained"


def _thresholds(job: Job, outcome: Outcome, folder: Path) -> str:
    method = job.recipe.method
    data = {"per": getattr(method, "per", None), "target_sparsity": getattr(method, "sparsity", None)}
    (folder / "thresholds.json").write_text(json.dumps({**data, "thresholds": outcome.thresholds}, indent=2))
    return "thresholds.json"


_EXPORTERS = {
    "masks": _masks,
    "safetensors": _safetensors,
    "compressed": _compressed,
    "onnx": _onnx,
    "pretrained": _pretrained,
    "thresholds": _thresholds,
}
_MODEL_FILES = ("compressed", "safetensors", "pretrained", "onnx")  # smallest-first preference


def _stored_bytes(folder: Path, outputs: dict[str, str]) -> int | None:
    """Bytes of the exported model: the compressed file if written, else the first model export."""
    for kind in _MODEL_FILES:
        if kind in outputs:
            path = folder / outputs[kind]
            target = path.parent if kind == "safetensors" and path.parent != folder else path
            files = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
            return sum(p.stat().st_size for p in files)
    return None
