"""Each scorer against values computed by hand on tiny layers, plus the scorer contract."""

import pytest
import torch
from torch import nn

from prunekit import SCORERS, LayerCollapseWarning, ScoringInput, compute_masks, get_scorer, register_scorer
from prunekit.scoring import LazyScores


def _linear(weights: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weights]))
    return layer


def _mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((out.squeeze(-1) - target) ** 2).mean()


def _score(method: str, model: nn.Module, data=None) -> dict[str, torch.Tensor]:
    request = ScoringInput(model=model, names=("weight",), data=data, loss_fn=_mse)
    return {k: v.clone() for k, v in get_scorer(method)(request).items()}


def test_magnitude_is_absolute_weight_and_lazy():
    layer = _linear([0.1, -0.5, 0.3, -0.05])
    request = ScoringInput(model=layer, names=("weight",))
    scores = get_scorer("magnitude")(request)
    assert isinstance(scores, LazyScores)
    assert torch.equal(scores["weight"], torch.tensor([[0.1, 0.5, 0.3, 0.05]]))
    masks = compute_masks(layer, "magnitude", 0.5, targets=["weight"])
    assert masks["weight"].tolist() == [[False, True, True, False]]


def test_random_is_seeded():
    layer = nn.Linear(10, 10)
    a = compute_masks(layer, "random", 0.5, seed=1)
    assert a == compute_masks(layer, "random", 0.5, seed=1)
    assert a != compute_masks(layer, "random", 0.5, seed=2)
    expected = torch.rand((10, 10), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["weight"], expected > expected.flatten().kthvalue(50).values)


def test_taylor_is_mean_over_batches_of_abs_weight_times_gradient():
    w = [2.0, -1.0]
    batches = [
        (torch.tensor([[1.0, 3.0]]), torch.tensor([0.0])),
        (torch.tensor([[2.0, 1.0]]), torch.tensor([5.0])),
    ]
    # L = (w·x − y)², ∂L/∂w = 2(w·x − y)x.  batch 1: w·x = −1 → g = (−2, −6); batch 2: w·x = 3 → g = (−8, −4).
    expected = torch.tensor([[(abs(2 * -2) + abs(2 * -8)) / 2, (abs(-1 * -6) + abs(-1 * -4)) / 2]])
    assert torch.allclose(_score("taylor", _linear(w), batches)["weight"], expected)


def test_obd_uses_per_sample_squared_gradients():
    w = [2.0, -1.0]
    batch = [(torch.tensor([[1.0, 3.0], [2.0, 1.0]]), torch.tensor([0.0, 5.0]))]
    # Per-sample gradients as above: (−2, −6) and (−8, −4); F = mean of squares = (34, 26).
    fisher = torch.tensor([(4 + 64) / 2, (36 + 16) / 2])
    expected = 0.5 * torch.tensor([4.0, 1.0]) * fisher
    assert torch.allclose(_score("obd", _linear(w), batch)["weight"], expected.unsqueeze(0))


def test_lamp_hand_computed():
    layer = _linear([3.0, -1.0, 2.0])
    scores = _score("lamp", layer)["weight"]
    # sorted squares 1, 4, 9: 1/(1+4+9), 4/(4+9), 9/9.
    assert torch.allclose(scores, torch.tensor([[1.0, 1 / 14, 4 / 13]]))


def test_lamp_global_differs_from_global_magnitude():
    model = nn.Sequential(_linear([0.01, 0.02, 0.03, 0.04]), _linear([1.0]))
    model[1] = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model[1].weight.copy_(torch.arange(1.0, 17.0).view(4, 4))
    with pytest.warns(LayerCollapseWarning, match=r"layer collapse.*0.weight"):
        magnitude = compute_masks(model, "magnitude", 0.25)
    lamp = compute_masks(model, "lamp", 0.25)
    assert not magnitude["0.weight"].any()  # magnitude empties the small layer
    assert lamp["0.weight"].any()


@pytest.mark.parametrize("name", SCORERS.names())
def test_contract_scores_shape_and_model_unchanged(name, convnet):
    convnet.train()
    data = [(torch.randn(4, 1, 6, 6), torch.randint(0, 4, (4,))) for _ in range(2)]
    state = {k: v.clone() for k, v in convnet.state_dict().items()}
    modes = [m.training for m in convnet.modules()]
    request = ScoringInput(model=convnet, names=("0.weight", "4.weight"), data=data)
    scores = get_scorer(name)(request)
    for key in request.names:
        assert scores[key].shape == dict(convnet.named_parameters())[key].shape
        assert bool(torch.isfinite(scores[key]).all())
    assert all(torch.equal(state[k], v) for k, v in convnet.state_dict().items())
    assert [m.training for m in convnet.modules()] == modes
    assert all(p.grad is None for p in convnet.parameters())


def test_data_needing_scorer_without_data_names_the_fix(mlp):
    with pytest.raises(ValueError, match=r"'taylor' needs data: pass data="):
        compute_masks(mlp, "taylor", 0.5)


def test_unknown_method_lists_valid_ones(mlp):
    with pytest.raises(ValueError, match=r"unknown scorer 'magnitud'.*lamp, magnitude"):
        compute_masks(mlp, "magnitud", 0.5)


def test_users_can_register_their_own_scorer(mlp):
    @register_scorer("test-last-in", needs_data=False)
    def last_in(request: ScoringInput) -> dict[str, torch.Tensor]:
        """Prefers the last input columns."""
        return {n: torch.arange(p.shape[1]).expand_as(p).float() for n, p in request.parameters().items()}

    try:
        masks = compute_masks(mlp, "test-last-in", 0.5, scope="layer")
        assert not masks["0.weight"][:, :4].any() and masks["0.weight"][:, 4:].all()
        with pytest.raises(ValueError, match="already registered"):
            register_scorer("test-last-in", needs_data=False)(last_in)
    finally:
        SCORERS.unregister("test-last-in")
