import json

import pytest
import torch

from prunekit import Masks
from prunekit.checkpoints import save_weights
from prunekit.cli import main
from prunekit.zoo import lenet_300_100


@pytest.fixture
def lenet_weights(tmp_path):
    return save_weights(lenet_300_100(), tmp_path / "lenet.safetensors")


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_methods_lists_every_registered_scorer(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("magnitude", "random", "taylor", "obd", "lamp"):
        assert name in out
    assert "needs data" in out and "data-free" in out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--sparsity", "0.8"], 0.8),
        (["--sparsity", "0.5", "--scope", "layer", "--pattern", "4x4", "--ignore", "fc3"], 0.5),
        (["--pattern", "2:4"], 0.5),
        (["--method", "taylor", "--dataset", "digits", "--sparsity", "0.7", "--input-shape", "1,1,8,8"], 0.7),
    ],
)
def test_prune_writes_masks_weights_and_report(tmp_path, lenet_weights, capsys, extra, expected):
    if "digits" in extra:  # an 8×8 LeNet-300-100 for the digits data
        lenet_weights = save_weights(lenet_300_100(in_features=64), tmp_path / "small.safetensors")
    out = tmp_path / "out"
    args = [
        "prune",
        "--model",
        "lenet_300_100",
        "--weights",
        str(lenet_weights),
        "--out",
        str(out),
        "--quiet",
    ]
    if "digits" in extra:
        args += ["--model-arg", "in_features=64"]
    assert main(args + extra) == 0
    summary = _last_json(capsys)
    masks = Masks.load(out / "masks.safetensors")
    # Exact in units: round(sparsity × blocks) per layer, so 4×4 blocks land within one block of 50 %.
    assert summary["sparsity"] == pytest.approx(expected, abs=1e-4)
    assert masks.sparsity == pytest.approx(summary["sparsity"], abs=1e-9)
    report = json.loads((out / "report.json").read_text())
    assert report["achieved_sparsity"] == pytest.approx(summary["sparsity"], abs=1e-9)
    assert (out / "pruned.safetensors").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--method", "nope", "--sparsity", "0.5"],
            "unknown scorer 'nope'; valid scorers are: ",
        ),
        (["--sparsity", "1.0"], r"sparsity must be in [0, 1)"),
        (["--sparsity", "nan"], r"sparsity must be in [0, 1)"),
        (["--sparsity", "-0.1"], r"sparsity must be in [0, 1)"),
        (["--pattern", "4:2"], "N:M pattern needs N < M"),
        (["--pattern", "2:3"], "divisible by M=3"),
        (["--method", "taylor", "--sparsity", "0.5"], "'taylor' needs data"),
        ([], "--sparsity is required"),
    ],
)
def test_prune_bad_input_is_a_clear_error(tmp_path, lenet_weights, capsys, extra, message):
    args = ["prune", "--model", "lenet_300_100", "--weights", str(lenet_weights), "--out", str(tmp_path)]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunekit prune: error:")
    assert message in err
    assert not (tmp_path / "masks.safetensors").exists()


def test_prune_rejects_a_file_that_is_not_a_model(tmp_path, capsys):
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a model")
    assert main(["prune", "--model", "lenet5", "--weights", str(junk), "--sparsity", "0.5"]) == 2
    assert "is not a model weights file" in capsys.readouterr().err
    wrong = save_weights(lenet_300_100(), tmp_path / "lenet.safetensors")
    assert main(["prune", "--model", "lenet5", "--weights", str(wrong), "--sparsity", "0.5"]) == 2
    assert "does not fit LeNet5: missing" in capsys.readouterr().err
    torch.save({"fc1.weight": "not a tensor"}, tmp_path / "odd.pt")
    assert (
        main(["prune", "--model", "lenet5", "--weights", str(tmp_path / "odd.pt"), "--sparsity", "0.5"]) == 2
    )
    assert "does not hold a state_dict" in capsys.readouterr().err


def test_demo_end_to_end_with_a_short_budget(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    args = ["demo", "--epochs", "1", "--finetune-epochs", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    summary = _last_json(capsys)
    assert {"dense_accuracy", "pruned_accuracy", "sparsity", "seconds"} <= set(summary)
    assert summary["sparsity"] == pytest.approx(0.9)
    assert summary["dense_accuracy"] > 0.9 and summary["pruned_accuracy"] > 0.9
    assert not summary["dense_model_cached"]
    for name in ("masks.safetensors", "pruned.safetensors", "report.json", "report.txt", "summary.json"):
        assert (out / name).is_file()
    assert main(args) == 0  # second run reuses the cached dense model
    again = _last_json(capsys)
    assert again["dense_model_cached"] and again["dense_accuracy"] == summary["dense_accuracy"]


@pytest.fixture
def lenet5_weights(tmp_path):
    from prunekit.zoo import lenet5

    torch.manual_seed(0)
    return save_weights(lenet5(), tmp_path / "lenet5.safetensors")


def test_structured_prune_writes_a_smaller_model_and_the_plan(tmp_path, lenet5_weights, capsys):
    from prunekit.graph import load_pruned
    from prunekit.zoo import lenet5

    out = tmp_path / "out"
    args = ["prune", "--model", "lenet5", "--weights", str(lenet5_weights), "--structured", "--ratio", "0.5"]
    args += ["--importance", "l2", "--round-to", "4", "--ignore", "fc2", "--out", str(out), "--quiet"]
    assert main([*args, "--input-shape", "1,1,28,28"]) == 0
    summary = _last_json(capsys)
    assert summary["params_after"] < summary["params_before"] and summary["out_dir"] == str(out)
    pruned = load_pruned(lenet5, out)
    # conv1 6 → 4 (kept channels rounded up to 4), conv2 16 → 8; fc2 is ignored, so its input fc1 stays
    assert (pruned.conv1.out_channels, pruned.conv2.out_channels, pruned.fc1.out_features) == (4, 8, 120)
    assert pruned.fc1.in_features == 8 * 5 * 5 and pruned.fc2.weight.shape == (84, 120)
    assert pruned(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert "params:" in (out / "plan.txt").read_text() and "MACs:" in (out / "plan.txt").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--structured needs --ratio"),
        (["--ratio", "1.5"], "ratio must be in"),
        (["--ratio", "0.5", "--ignore", "nope"], "ignore names modules that do not exist"),
        (["--ratio", "0.5", "--input-shape", "1,x"], "--input-shape must be"),
    ],
)
def test_structured_prune_bad_input_is_a_clear_error(tmp_path, lenet5_weights, capsys, extra, message):
    args = ["prune", "--model", "lenet5", "--weights", str(lenet5_weights), "--structured", "--out"]
    assert main([*args, str(tmp_path / "o"), "--input-shape", "1,1,28,28", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunekit prune: error:") and message in err


def test_every_command_accepts_quiet() -> None:
    from prunekit.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    missing = [name for name, sub in commands.items() if "quiet" not in {a.dest for a in sub._actions}]
    assert not missing, f"commands without --quiet: {missing}"


def test_prune_at_init_runs_through_main(tmp_path, capsys):
    argv = ["prune-at-init", "--method", "magnitude", "--sparsity", "0.5", "--dataset", "mnist"]
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 0
    masks = Masks.load(tmp_path / "masks.safetensors")
    assert masks.sparsity == pytest.approx(0.5, abs=1e-5)


_USER_MODELS = """
from torch import nn


def build(width=8):
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4),
    )


class TextModel(nn.Module):
    def __init__(self, vocab=20):
        super().__init__()
        self.embed, self.hidden, self.out = nn.Embedding(vocab, 16), nn.Linear(16, 32), nn.Linear(32, 3)

    def forward(self, ids):
        return self.out(self.hidden(self.embed(ids).mean(1)).relu())


NOT_A_FUNCTION = 3


def not_a_model(width=8):
    return "a string"
"""


def test_structured_prune_of_a_model_built_by_the_users_own_function(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from prunekit.graph import load_pruned

    (tmp_path / "my_models.py").write_text(_USER_MODELS)
    namespace: dict = {}
    exec(_USER_MODELS, namespace)  # the user's module, without importing it here
    torch.manual_seed(0)
    weights = save_weights(namespace["build"](width=16), tmp_path / "w.safetensors")
    command = [str(Path(sys.executable).parent / "prunekit"), "prune", "--model", "my_models:build"]
    command += ["--model-arg", "width=16", "--weights", str(weights), "--structured", "--ratio", "0.5"]
    command += ["--input-shape", "1,3,8,8", "--out", str(tmp_path / "o"), "--quiet"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # the module
    assert done.returncode == 0, done.stderr  # is found in the folder prunekit runs in, as with `python -m`
    pruned = load_pruned(lambda: namespace["build"](width=16), tmp_path / "o")
    assert (pruned[0].out_channels, pruned[1].num_features, pruned[5].in_features) == (8, 8, 8)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["params_after"] < summary["params_before"]


def test_structured_prune_of_a_model_that_reads_token_ids(tmp_path, monkeypatch, capsys):
    from prunekit.graph import load_pruned

    (tmp_path / "my_models.py").write_text(_USER_MODELS)
    monkeypatch.syspath_prepend(tmp_path)
    import my_models

    weights = save_weights(my_models.TextModel(), tmp_path / "w.safetensors")
    args = ["prune", "--model", "my_models:TextModel", "--weights", str(weights), "--structured"]
    args += ["--ratio", "0.5", "--input-shape", "2,5", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2  # float zeros are no token ids
    assert "Expected tensor for argument #1 'indices'" in capsys.readouterr().err
    assert main([*args, "--input-dtype", "int64"]) == 0
    pruned = load_pruned(my_models.TextModel, tmp_path / "o")
    assert (pruned.embed.embedding_dim, pruned.hidden.out_features) == (8, 16)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("resnet", "--model 'resnet' is neither a zoo model (lenet5, "),
        ("no_such_module:build", "cannot import 'no_such_module'"),
        ("my_models:nope", "'my_models' has no attribute 'nope'"),
        ("my_models:NOT_A_FUNCTION", "'NOT_A_FUNCTION' (int) is not a function or class"),
        ("my_models:not_a_model", "returned a str, not a torch.nn.Module"),
        ("my_models:", "write module:function"),
    ],
)
def test_a_model_spec_that_builds_nothing_is_a_clear_error(tmp_path, monkeypatch, capsys, model, message):
    (tmp_path / "my_models.py").write_text(_USER_MODELS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(tmp_path)
    args = ["prune", "--model", model, "--weights", str(tmp_path / "w.safetensors"), "--structured"]
    assert main([*args, "--ratio", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunekit prune: error:") and message in err


def test_the_command_line_imports_no_plotting_library_until_it_draws():
    # matplotlib costs ~0.4 s of every command's start; only report writing needs it
    import subprocess
    import sys

    code = "import sys, prunekit.cli; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
