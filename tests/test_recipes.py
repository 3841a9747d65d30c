"""Recipes: validation up front (errors name the field path), YAML round trip, CLI errors, determinism."""

import copy

import pytest
import torch
import yaml

from prunekit.checkpoints import read_weights
from prunekit.cli import main
from prunekit.recipes import RecipeError, dump_recipe, load_recipe, parse_recipe

BASE = {
    "seed": 3,
    "model": {"zoo": "lenet_300_100", "args": {"in_features": 64}},
    "data": {"dataset": "digits", "train_samples": 200, "test_samples": 100, "batch_size": 50},
    "method": {"family": "unstructured", "scorer": "magnitude", "sparsity": 0.5},
    "finetune": {"epochs": 1, "lr": 1e-3},
}


def recipe_with(**changes):
    """BASE with dotted-path changes; a value of ``...`` deletes the key."""
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
    return raw


@pytest.mark.parametrize(
    ("changes", "path", "words"),
    [
        ({"sparsityy": 0.5}, "sparsityy", ["unknown key", "allowed keys", "model"]),
        ({"method__sparsty": 0.5}, "method.sparsty", ["unknown key", "did you mean 'sparsity'"]),
        ({"data__batch_size": "big"}, "data.batch_size", ["expected int", "str 'big'"]),
        ({"method__sparsity": "half"}, "method.sparsity", ["expected a number", "'half'"]),
        ({"method__sparsity": 1.0}, "method.sparsity", ["[0, 1)", "1.0"]),
        ({"method__sparsity": -0.1}, "method.sparsity", ["[0, 1)"]),
        (
            {"method__scorer": "magnitud"},
            "method.scorer",
            ["unknown scorer", "lamp", "did you mean 'magnitude'"],
        ),
        ({"method__family": "pruneall"}, "method.family", ["unknown family", "unstructured", "oneshot"]),
        ({"data": ...}, "data", ["missing"]),
        ({"data__dataset": ...}, "data", ["exactly one of dataset"]),
        ({"model__weights": "no/such/file.safetensors"}, "model.weights", ["does not exist"]),
        (
            {"model__factory": "prunekit.zoo:lenet_300_100"},
            "model",
            ["exactly one model source", "zoo, factory"],
        ),
        ({"model__zoo": "lenet"}, "model.zoo", ["unknown zoo model", "lenet5"]),
        ({"model__factory": "no_such_module:f", "model__zoo": ...}, "model.factory", ["cannot import"]),
        ({"method__pattern": "3:2"}, "method.pattern", []),
        ({"method__pattern": "2:4"}, "method.sparsity", ["fixes the sparsity"]),
        ({"export": ["masks", "zip"]}, "export[1]", ["unknown export format", "safetensors"]),
        ({"export": ["pretrained"]}, "export[0]", ["huggingface"]),
        ({"method": {"family": "structured", "ratio": 0.5}, "export": ["masks"]}, "export[0]", ["no masks"]),
        ({"method": {"family": "structured", "ratio": 0.5, "importance": "l3"}}, "method.importance", ["l1"]),
        ({"method": {"family": "lottery", "prune_rate": 1.5}, "finetune": ...}, "method", ["prune_rate"]),
        ({"method": {"family": "lottery"}}, "finetune", ["does not apply"]),
        (
            {"method": {"family": "at_init", "sparsity": 0.9, "compression": 10}},
            "method.sparsity",
            ["exactly one"],
        ),
        (
            {"method": {"family": "at_init", "compression": 10, "collapse_curve": [1, 0]}},
            "method.collapse_curve[1]",
            ["log10 compression"],
        ),
        ({"method": {"family": "oneshot"}}, "model", ["huggingface"]),
        ({"method__schedule": "gradual", "finetune": ...}, "finetune", ["gradual"]),
        ({"finetune__lr": 0}, "finetune.lr", ["> 0"]),
        ({"pretrain": {"epochs": 1, "momentum": 0.9}}, "pretrain.momentum", ["unknown key"]),
    ],
)
def test_malformed_recipe_raises_naming_the_field_path(changes, path, words):
    with pytest.raises(RecipeError) as info:
        parse_recipe(recipe_with(**changes))
    assert info.value.path == path
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for word in words:
        assert word in message


def test_lr_written_without_a_dot_still_parses_as_a_float():
    recipe = parse_recipe(recipe_with(finetune__lr="1e-3"))
    assert recipe.finetune.lr == pytest.approx(1e-3)


def test_relative_weights_path_is_read_relative_to_the_recipe_file(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"x")
    raw = recipe_with(model__weights="w.safetensors")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.model.weights == str((tmp_path / "w.safetensors").resolve())


@pytest.mark.parametrize(
    "method",
    [
        {"family": "unstructured", "scorer": "snip", "pattern": "2:4"},
        {"family": "at_init", "scorer": "synflow", "compression": 100, "iterations": 10},
        {"family": "lottery", "rounds": 2, "rewind_iteration": 5, "controls": ["reinit"]},
        {"family": "structured", "ratio": 0.3, "round_to": 8, "input_shape": [1, 1, 8, 8]},
    ],
)
def test_resolved_recipe_dumps_and_reloads_to_the_same_recipe(method, tmp_path):
    raw = recipe_with(method=method)
    if method["family"] == "lottery":
        del raw["finetune"]
    recipe = parse_recipe(raw)
    resolved = recipe.to_dict()
    assert resolved["method"]["family"] == method["family"]
    assert "export" in resolved and "seed" in resolved  # defaults filled in
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_recipe(recipe))
    assert load_recipe(path) == recipe


def test_cli_prints_one_line_and_exits_2_on_a_bad_recipe(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe_with(method__sparsity=1.5)))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("prunekit run: error: method.sparsity:")
    assert not (tmp_path / "out").exists()  # validated before any work


def test_cli_reports_a_missing_recipe_file_and_invalid_yaml(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text("model: [zoo\n")
    assert main(["run", str(tmp_path / "broken.yaml"), "--quiet"]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_same_recipe_twice_gives_identical_masks_and_weights(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe_with(method__scorer="snip", method__batches=2)))
    for name in ("a", "b"):
        assert main(["run", str(path), "--out", str(tmp_path / name), "--quiet"]) == 0
    for file in ("model.safetensors", "masks.safetensors"):
        a, b = read_weights(tmp_path / "a" / file), read_weights(tmp_path / "b" / file)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert main(["run", str(path), "--out", str(tmp_path / "c"), "--quiet", "--seed", "4"]) == 0
    c = read_weights(tmp_path / "c" / "model.safetensors")
    a = read_weights(tmp_path / "a" / "model.safetensors")
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])


def test_factory_model_with_a_weights_file_is_pruned_from_those_weights(tmp_path):
    from prunekit.checkpoints import save_weights
    from prunekit.masks import Masks
    from prunekit.zoo import lenet_300_100

    torch.manual_seed(7)
    dense = lenet_300_100(in_features=64)
    save_weights(dense, tmp_path / "dense.safetensors")
    model = {
        "factory": "prunekit.zoo:lenet_300_100",
        "args": {"in_features": 64},
        "weights": "dense.safetensors",
    }
    raw = recipe_with(model=model, finetune=...)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    pruned = read_weights(tmp_path / "out" / "model.safetensors")
    masks = Masks.load(tmp_path / "out" / "masks.safetensors")
    for name, tensor in dense.state_dict().items():
        expected = tensor * masks[name] if name in masks else tensor  # no fine-tune: kept weights unchanged
        assert torch.equal(pruned[name], expected)
    assert (tmp_path / "out" / "report.html").is_file()
