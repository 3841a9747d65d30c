import pytest
import torch
from torch import nn

from conftest import bits
from prunekit.activations import calibrate_thresholds, prune_activations, select_layers, topk_sparsify


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_topk_zeroes_the_smallest_magnitudes_by_hand():
    a = torch.tensor([[3.0, -1.0, 0.5, -4.0], [0.1, 0.2, -0.3, 0.4]])
    assert torch.equal(topk_sparsify(a, 0.5), torch.tensor([[3.0, 0.0, 0.0, -4.0], [0.0, 0.0, -0.3, 0.4]]))
    tokens = torch.tensor([[[1.0, -2.0], [0.5, 0.25]]])  # (batch, tokens, features)
    assert torch.equal(topk_sparsify(tokens, 0.5, per="token"), torch.tensor([[[0.0, -2.0], [0.5, 0.0]]]))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("per", ["sample", "token"])
def test_topk_realises_the_requested_sparsity_per_layer(fraction, per):
    wide = nn.Sequential(nn.Linear(8, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    x = torch.randn(64, 8)
    with prune_activations(wide, ["0", "2"], fraction=fraction, per=per) as stats:
        wide(x)
        wide(x[:7])
    for name in ("0", "2"):
        assert abs(stats.sparsity()[name] - fraction) <= 0.01, (name, stats.sparsity())
    assert stats.total == {"0": 71 * 300, "2": 71 * 100}


def test_pruned_output_matches_a_manual_sparse_forward(mlp):
    x = torch.randn(5, 8)
    with prune_activations(mlp, nn.Linear, fraction=0.5) as stats:
        got = mlp(x)
    h = topk_sparsify(mlp[0](x), 0.5)
    h = topk_sparsify(mlp[2](mlp[1](h)), 0.5)
    expected = topk_sparsify(mlp[4](mlp[3](h)), 0.5)
    assert torch.equal(got, expected)
    assert set(stats.sparsity()) == {"0", "2", "4"}


def test_exit_restores_outputs_bit_for_bit_and_removes_hooks(mlp):
    x = torch.randn(16, 8)
    before, hooks = mlp(x), _hooks(mlp)
    with prune_activations(mlp, "*", fraction=0.7):
        inside = mlp(x)
    assert not torch.equal(inside, before)
    assert torch.equal(bits(mlp(x)), bits(before))
    assert _hooks(mlp) == hooks == 0


def test_exit_on_exception_restores_the_model(mlp):
    x = torch.randn(4, 8)
    before = mlp(x)
    with pytest.raises(RuntimeError, match="boom"), prune_activations(mlp, ["0"], threshold=0.5):
        mlp(x)
        raise RuntimeError("boom")
    assert _hooks(mlp) == 0
    assert torch.equal(bits(mlp(x)), bits(before))


def test_threshold_zeroes_below_and_keeps_at_or_above():
    layer = nn.Identity()
    model = nn.Sequential(layer)
    x = torch.tensor([[0.5, -0.2, 0.1, -0.7]])
    with prune_activations(model, ["0"], threshold={"0": 0.2}) as stats:
        out = model(x)
    assert torch.equal(out, torch.tensor([[0.5, -0.2, 0.0, -0.7]]))
    assert stats.sparsity() == {"0": 0.25}


@pytest.mark.parametrize("target", [0.25, 0.6, 0.9])
def test_calibrated_thresholds_realise_the_target_sparsity(mlp, target):
    data = [(torch.randn(128, 8), None) for _ in range(4)]
    thresholds = calibrate_thresholds(mlp, ["0", "2"], data, target)
    assert set(thresholds) == {"0", "2"}
    with prune_activations(mlp, ["0", "2"], threshold=thresholds) as stats:
        for x, _ in data:
            mlp(x)
    for name, value in stats.sparsity().items():
        assert abs(value - target) <= 0.01, (name, value)
    held_out = torch.randn(512, 8)
    with prune_activations(mlp, ["0", "2"], threshold=thresholds) as stats:
        mlp(held_out)
    assert all(abs(v - target) <= 0.05 for v in stats.sparsity().values())
    assert _hooks(mlp) == 0


def test_select_layers_by_name_glob_and_type(mlp):
    assert list(select_layers(mlp, "0")) == ["0"]
    assert list(select_layers(mlp, nn.ReLU)) == ["1", "3"]
    assert list(select_layers(mlp, ["[02]", nn.ReLU])) == ["0", "2", "1", "3"]


def test_errors_name_the_parameter_and_fix(mlp):
    with pytest.raises(ValueError, match="matches no module"):
        select_layers(mlp, "fc9")
    with pytest.raises(ValueError, match="exactly one of fraction"), prune_activations(mlp, "0"):
        pass
    with pytest.raises(ValueError, match="fraction must be in"), prune_activations(mlp, "0", fraction=1.0):
        pass
    with (
        pytest.raises(ValueError, match="no value for layers"),
        prune_activations(mlp, ["0", "2"], threshold={"0": 1}),
    ):
        pass
    with (
        pytest.raises(ValueError, match="per must be one of"),
        prune_activations(mlp, "0", fraction=0.5, per="row"),
    ):
        pass
    with pytest.raises(ValueError, match="float ≥ 0"), prune_activations(mlp, "0", threshold=-1.0):
        pass
    assert _hooks(mlp) == 0
