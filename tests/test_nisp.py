import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph, group_scores
from prunekit.scoring import ScoringInput, get_scorer
from prunekit.scoring.nisp import neuron_importance


def _mlp3() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def _closed_form(model: nn.Sequential, final: torch.Tensor) -> dict[str, torch.Tensor]:
    w2, w3 = model[2].weight.detach().abs().double(), model[4].weight.detach().abs().double()
    s3 = final.double()
    s2 = w3.T @ s3  # (4,)
    s1 = w2.T @ w3.T @ s3  # (5,)
    return {"0": s1, "2": s2, "4": s3}


@pytest.mark.parametrize("final", [None, torch.tensor([0.2, 1.0, 3.0])])
def test_three_layer_linear_net_matches_the_closed_form(final):
    model = _mlp3()
    got = neuron_importance(model, (1, 6), final)
    expected = _closed_form(model, torch.ones(3) if final is None else final)
    assert list(got) == ["0", "2", "4"]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=0)


def test_scorer_gives_each_weight_its_neurons_importance():
    model = _mlp3()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = get_scorer("nisp")(ScoringInput(model, ("0.weight", "0.bias", "2.weight")))
    s1, s2 = _closed_form(model, torch.ones(3))["0"].float(), _closed_form(model, torch.ones(3))["2"].float()
    torch.testing.assert_close(scores["0.weight"], s1[:, None].expand(5, 6))
    torch.testing.assert_close(scores["0.bias"], s1)
    torch.testing.assert_close(scores["2.weight"], s2[:, None].expand(4, 5))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_scorer_with_data_weights_outputs_by_their_mean_magnitude():
    model = _mlp3()
    x = torch.randn(32, 6)
    final = model(x).detach().abs().double().mean(0)
    scores = get_scorer("nisp")(ScoringInput(model, ("0.weight",), data=[(x, None)]))
    torch.testing.assert_close(scores["0.weight"][:, 0], _closed_form(model, final)["0"].float())


def test_masks_remove_pruned_weights_from_the_propagation():
    model = _mlp3()
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[:, 1] = False  # hidden neuron 1 of layer 2 feeds nothing
    scores = neuron_importance(model, (1, 6), masks={"4.weight": mask})
    assert scores["2"][1] == 0 and (scores["2"][[0, 2, 3]] > 0).all()


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc3(torch.relu(self.fc2(h)) + h)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(4, 3), nn.Linear(4, 5), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1))


def test_residual_add_sums_the_importance_of_both_branches():
    model = Residual()
    got = neuron_importance(model, (1, 4))
    s_add = model.fc3.weight.detach().abs().double().T @ torch.ones(2, dtype=torch.float64)
    expected = model.fc2.weight.detach().abs().double().T @ s_add + s_add
    torch.testing.assert_close(got["fc2"], s_add)
    torch.testing.assert_close(got["fc1"], expected)


def test_concatenation_hands_each_input_its_slice():
    model = Concat()
    got = neuron_importance(model, (1, 4))
    s_cat = model.head.weight.detach().abs().double().T @ torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(got["a"], s_cat[:3])
    torch.testing.assert_close(got["b"], s_cat[3:])


def test_conv_batchnorm_channels_sum_over_positions_and_scale_by_bn(convnet):
    convnet.eval()
    got = neuron_importance(convnet, (1, 1, 6, 6))
    s_flat = convnet[4].weight.detach().abs().double().sum(0).view(8, 36)  # (channels, positions)
    s_bn = s_flat.sum(1)
    bn = convnet[1]
    scale = bn.weight.detach().abs().double() / (bn.running_var.double() + bn.eps).sqrt()
    torch.testing.assert_close(got["1"], s_bn)
    torch.testing.assert_close(got["0"], s_bn * scale)


def test_group_importance_uses_the_graph_and_the_propagated_scores():
    model = _mlp3()
    graph = DependencyGraph.build(model, torch.randn(2, 6))
    expected = _closed_form(model, torch.ones(3))
    sizes = {}
    for group in graph.groups:
        scores = group_scores(model, group, "nisp", normalize="none")
        producer = next(m.module for m in group.members if m.role == "out")
        torch.testing.assert_close(scores, expected[producer].float())
        sizes[producer] = group.size
    assert sizes == {"0": 5, "2": 4}


def test_unsupported_parameter_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="'1.weight' belongs to LayerNorm"):
        get_scorer("nisp")(ScoringInput(model, ("1.weight",)))
