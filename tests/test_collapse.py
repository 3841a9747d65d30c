"""Layer-collapse analysis: exact path counts, empty layers, maximal compression, sweeps."""

import itertools
import math

import pytest
import torch
from torch import nn

from prunekit import Masks
from prunekit.collapse import (
    analyse_collapse,
    collapse_curve,
    compression_grid,
    log10_max_compression,
    log10_paths,
)
from prunekit.zoo import resnet_small, vgg_small_bn


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))


def _brute_force_paths(masks: list[torch.Tensor]) -> int:
    """Enumerate every (input, hidden1, hidden2, output) chain of kept weights."""
    m1, m2, m3 = (m.tolist() for m in masks)  # (out, in)
    count = 0
    for i, j, k, o in itertools.product(range(4), range(3), range(3), range(2)):
        count += m1[j][i] and m2[k][j] and m3[o][k]
    return count


def test_path_count_equals_brute_force_enumeration():
    model = _mlp()
    g = torch.Generator().manual_seed(0)
    names = ["0.weight", "2.weight", "4.weight"]
    for _ in range(5):
        masks = Masks({n: torch.rand(model.get_parameter(n).shape, generator=g) > 0.4 for n in names})
        expected = _brute_force_paths([masks[n] for n in names])
        got = log10_paths(model, masks)
        assert (got == -math.inf) if expected == 0 else math.isclose(10**got, expected, rel_tol=1e-12)


def test_dense_mlp_counts_the_product_of_widths():
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.Linear(100, 10)
    )
    masks = Masks.ones(model, ["1.weight", "3.weight", "4.weight"])
    assert math.isclose(log10_paths(model, masks), math.log10(784 * 300 * 100 * 10), rel_tol=1e-12)


def test_disconnected_layers_collapse_without_any_empty_layer():
    model = _mlp()
    m1 = torch.zeros(3, 4, dtype=torch.bool)
    m1[0, 0] = True  # only hidden unit 0 receives input
    m2 = torch.zeros(3, 3, dtype=torch.bool)
    m2[1, 1] = True  # ... but only hidden unit 1 is read
    masks = Masks({"0.weight": m1, "2.weight": m2, "4.weight": torch.ones(2, 3, dtype=torch.bool)})
    report = analyse_collapse(model, masks)
    assert report.empty_layers == () and not report.has_path and report.collapsed
    assert report.to_dict()["log10_paths"] is None  # JSON-safe


def test_empty_layer_is_reported_and_compression_is_exact():
    model = _mlp()
    masks = Masks(
        {
            "0.weight": torch.ones(3, 4, dtype=torch.bool),
            "2.weight": torch.zeros(3, 3, dtype=torch.bool),
            "4.weight": torch.ones(2, 3, dtype=torch.bool),
        }
    )
    report = analyse_collapse(model, masks)
    assert report.empty_layers == ("2.weight",) and report.collapsed
    assert report.kept == 18 and report.total == 27
    assert math.isclose(report.log10_compression, math.log10(27 / 18))
    assert math.isclose(report.log10_max_compression, math.log10(27 / 3))
    assert "2.weight" in report.to_text()


def test_max_compression_is_weights_per_layer():
    masks = Masks({"a": torch.ones(10, 10, dtype=torch.bool), "b": torch.ones(5, dtype=torch.bool)})
    assert math.isclose(log10_max_compression(masks), math.log10(105 / 2))


@pytest.mark.parametrize("build", [vgg_small_bn, resnet_small])
def test_conv_nets_with_batchnorm_and_residuals_have_paths_and_stay_unchanged(build):
    torch.manual_seed(0)
    model = build()
    model.train()
    names = [n for n, p in model.named_parameters() if p.dim() > 1]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dense = log10_paths(model, Masks.ones(model, names), torch.zeros(2, 1, 28, 28))
    masks = Masks({n: torch.rand(model.get_parameter(n).shape) > 0.9 for n in names})
    sparse = log10_paths(model, masks, torch.zeros(2, 1, 28, 28))
    assert math.isfinite(dense) and math.isfinite(sparse) and sparse < dense - 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())


def test_conv_net_without_example_inputs_names_the_fix(convnet):
    masks = Masks.ones(convnet, ["0.weight", "4.weight"])
    with pytest.raises(ValueError, match="pass data="):
        analyse_collapse(convnet, masks)


def test_curve_of_magnitude_on_an_mlp_finds_where_layers_empty():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 60), nn.ReLU(), nn.Linear(60, 10))
    grid = compression_grid(3.5, 0.5)
    curve = collapse_curve(model, "magnitude", grid)
    first = curve.first_collapse
    assert first is not None and curve.max_alive == round(first - 0.5, 6)
    empties = curve.layer_empties_at
    assert empties["0.weight"] == first  # the wide input layer (smallest init weights) empties first
    assert all(
        r.collapsed == (x >= first) for x, r in zip(curve.log10_compressions, curve.reports, strict=True)
    )
    document = curve.to_dict()
    assert document["max_alive"] == curve.max_alive and len(document["points"]) == len(grid)


def test_curve_from_precomputed_scores_matches_the_method():
    torch.manual_seed(0)
    model = _mlp()
    names = ["0.weight", "2.weight", "4.weight"]
    scores = {n: model.get_parameter(n).detach().abs() for n in names}
    grid = compression_grid(1.0, 0.25)
    by_scores = collapse_curve(model, scores, grid)
    by_name = collapse_curve(model, "magnitude", grid)
    assert by_scores.reports == by_name.reports


def test_grid_and_errors():
    assert compression_grid(1.0, 0.25) == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert compression_grid(0.9, 0.25) == (0.0, 0.25, 0.5, 0.75)
    with pytest.raises(ValueError, match="step > 0"):
        compression_grid(1.0, 0)
    with pytest.raises(ValueError, match="increasing"):
        collapse_curve(_mlp(), "magnitude", [1.0, 0.5])
    with pytest.raises(TypeError, match="scorer name or a mapping"):
        collapse_curve(_mlp(), 3, [0.0])


def test_cli_prune_at_init_then_collapse_write_their_files(tmp_path, capsys):
    import argparse

    from prunekit.cli_at_init import add_commands

    parser = argparse.ArgumentParser(prog="prunekit")
    add_commands(parser.add_subparsers(dest="command", required=True))
    common = ["--dataset", "digits", "--out"]
    args = parser.parse_args(
        ["prune-at-init", "--compression", "100", "--iterations", "20", *common, str(tmp_path)]
    )
    assert args.func(args) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {
        "masks.safetensors",
        "prune_at_init.json",
        "layer_density.png",
    }
    masks = Masks.load(tmp_path / "masks.safetensors")
    # lenet_300_100 on 8×8 digits has 64·300 + 300·100 + 100·10 = 50,200 prunable weights
    assert masks.kept == 50_200 - round(50_200 * 0.99)
    args = parser.parse_args(
        ["collapse", "--masks", str(tmp_path / "masks.safetensors"), *common, str(tmp_path / "c")]
    )
    assert args.func(args) == 0
    assert "layer collapse: no" in capsys.readouterr().out
