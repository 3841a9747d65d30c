"""The ``activations`` recipe family: validation naming the field path, runs, determinism; ``--threads``."""

import copy
import json

import pytest
import torch
import yaml

from prunekit.checkpoints import read_weights
from prunekit.cli import main
from prunekit.recipes import Activations, RecipeError, dump_recipe, load_recipe, parse_recipe

BASE = {
    "seed": 1,
    "model": {"zoo": "lenet_300_100", "args": {"in_features": 64}},
    "data": {"dataset": "digits", "train_samples": 300, "test_samples": 200, "batch_size": 50},
    "pretrain": {"epochs": 2, "lr": 3e-3},
    "method": {"family": "activations", "layers": ["fc1", "fc2"], "sparsity": 0.5},
}
CALIBRATED = {"family": "activations", "types": ["Linear"], "mode": "threshold", "sparsity": 0.6}


def with_method(**changes):
    raw = copy.deepcopy(BASE)
    raw["method"].update(changes)
    return raw


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        (with_method(fractoin=0.5), "method.fractoin", ["unknown key", "allowed keys", "sweep"]),
        (with_method(sparsity=1.0), "method.sparsity", ["[0, 1)", "activations zeroed", "1.0"]),
        (with_method(sparsity=-0.2), "method.sparsity", ["[0, 1)"]),
        (with_method(sparsity="half"), "method.sparsity", ["expected a number"]),
        (with_method(layers=["fc1", "fc9"]), "method.layers[1]", ["'fc9' matches no module", "fc1"]),
        (with_method(layers=["conv*"]), "method.layers[0]", ["matches no module"]),
        (with_method(layers=[], types=["Conv2d"]), "method.types[0]", ["matches no module"]),
        (with_method(layers=[], types=["Linearr"]), "method.types[0]", ["not an nn.Module class"]),
        (with_method(layers=[]), "method.layers", ["missing", "types"]),
        (with_method(sparsity=None), "method.sparsity", ["missing", "topk"]),
        (with_method(threshold=0.1), "method.threshold", ["mode: threshold only"]),
        (with_method(mode="threshold", threshold=0.1), "method.sparsity", ["exactly one"]),
        (with_method(mode="threshold", sparsity=None, threshold=-1.0), "method.threshold", [">= 0"]),
        (with_method(mode="topk-ish"), "method.mode", ["unknown mode", "did you mean 'topk'"]),
        (with_method(per="batch"), "method.per", ["unknown per", "sample, token"]),
        (with_method(calibration_samples=64), "method.calibration_samples", ["calibration"]),
        ({**CALIBRATED, "calibration_samples": 0}, "method.calibration_samples", ["positive"]),
        (with_method(sweep=[0.2, 1.5]), "method.sweep[1]", ["[0, 1)", "1.5"]),
        ({**CALIBRATED, "sweep": [0.2]}, "method.sweep", ["mode: topk only"]),
        ({**BASE, "finetune": {"epochs": 1}}, "finetune", ["does not apply"]),
        ({**BASE, "export": ["masks"]}, "export[0]", ["has no masks"]),
        ({**BASE, "export": ["thresholds"]}, "export[0]", ["mode threshold"]),
        ({**BASE, "model": {"zoo": "lenet_300_100", "args": {"width": 3}}}, "model.args", ["width"]),
    ],
)
def test_malformed_activations_section_names_the_field_path(raw, path, words):
    if raw.get("family") == "activations":  # a bare method section
        raw = {**BASE, "method": raw}
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    for word in words:
        assert word in str(info.value)


def test_resolved_recipe_fills_defaults_and_reloads(tmp_path):
    recipe = parse_recipe({**BASE, "method": CALIBRATED})
    assert isinstance(recipe.method, Activations) and recipe.method.module_types == (torch.nn.Linear,)
    assert recipe.export == ("safetensors", "thresholds")  # calibrated thresholds are exported by default
    assert parse_recipe(BASE).export == ("safetensors",)
    (tmp_path / "r.yaml").write_text(dump_recipe(recipe))
    assert load_recipe(tmp_path / "r.yaml") == recipe


def run(tmp_path, raw, name, *extra):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--out", str(tmp_path / name), "--quiet", *extra]) == 0
    return json.loads((tmp_path / name / "report.json").read_text())


def test_calibrated_threshold_run_is_deterministic_and_exports_its_thresholds(tmp_path):
    raw = {**BASE, "method": CALIBRATED}
    a, b = run(tmp_path, raw, "a"), run(tmp_path, raw, "b")
    assert (a["layers"], a["after"]["metrics"]) == (b["layers"], b["after"]["metrics"])
    assert [row["name"] for row in a["layers"]] == ["fc1", "fc2", "fc3"]
    thresholds = [json.loads((tmp_path / n / "thresholds.json").read_text()) for n in "ab"]
    assert thresholds[0] == thresholds[1]
    assert thresholds[0]["target_sparsity"] == 0.6
    assert set(thresholds[0]["thresholds"]) == {"fc1", "fc2", "fc3"}
    weights = [read_weights(tmp_path / n / "model.safetensors") for n in "ab"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    realised = a["after"]["metrics"]["activation_sparsity"]
    assert 50 < realised < 70  # calibrated on training samples for 60 %, measured on the test subset
    assert any("calibrated on 256 training samples" in note for note in a["notes"])


def test_threads_option_sets_torch_threads_for_the_run_only(tmp_path):
    before = torch.get_num_threads()
    report = run(tmp_path, BASE, "one", "--threads", "1")
    assert "torch threads: 1" in report["notes"]
    assert torch.get_num_threads() == before
    report = run(tmp_path, BASE, "default")
    assert f"torch threads: {before}" in report["notes"]


def test_threads_must_be_a_positive_int(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(BASE))
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "r.yaml"), "--threads", "0"])
    assert info.value.code == 2
    assert "--threads: must be a positive int" in capsys.readouterr().err
