"""SNIP, GraSP, SynFlow and the iterative mode: formulas checked against plain autograd, invariants."""

import pytest
import torch
from torch import nn

from prunekit import Masks, compute_masks, select
from prunekit.at_init import compression_to_sparsity, iterative_masks, select_survivors
from prunekit.collapse import analyse_collapse
from prunekit.schedules import sparsity_steps
from prunekit.scoring import ScoringInput, get_scorer
from prunekit.scoring.grasp import TEMPERATURE


def _two_layer() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def _batches(n_batches: int = 2) -> list:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(6, 5, generator=g), torch.randint(0, 3, (6,), generator=g)) for _ in range(n_batches)
    ]


def _prior(model: nn.Module) -> Masks:
    g = torch.Generator().manual_seed(2)
    return Masks(
        {n: torch.rand(p.shape, generator=g) > 0.3 for n, p in model.named_parameters() if p.dim() > 1}
    )


def _functional_loss(model, names, flat_sizes, shapes, data, temperature=1.0):
    """Loss over all batches as a function of the flattened scored weights (biases fixed)."""

    def loss(flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, flat_sizes)
        weights = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        total = 0.0
        for x, y in data:
            h = torch.tanh(x @ weights["0.weight"].T + model[0].bias)
            out = h @ weights["2.weight"].T + model[2].bias
            total = total + nn.functional.cross_entropy(out / temperature, y)
        return total

    return loss


@pytest.mark.parametrize("with_prior", [False, True])
def test_snip_equals_independent_autograd(with_prior):
    model, data = _two_layer(), _batches()
    masks = _prior(model) if with_prior else None
    names = ("0.weight", "2.weight")
    scores = get_scorer("snip")(ScoringInput(model=model, names=names, data=data, masks=masks))
    weights = [model.get_parameter(n).detach() * (masks[n] if masks else 1) for n in names]
    flat = torch.cat([w.flatten() for w in weights]).requires_grad_(True)
    loss_fn = _functional_loss(model, names, [w.numel() for w in weights], [w.shape for w in weights], data)
    (grad,) = torch.autograd.grad(loss_fn(flat), flat)
    expected = (flat.detach() * grad).abs()
    got = torch.cat([scores[n].flatten() for n in names])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("with_prior", [False, True])
def test_grasp_equals_theta_times_hessian_gradient_product(with_prior):
    model, data = _two_layer(), _batches()
    masks = _prior(model) if with_prior else None
    names = ("0.weight", "2.weight")
    scores = get_scorer("grasp")(ScoringInput(model=model, names=names, data=data, masks=masks))
    weights = [model.get_parameter(n).detach().double() * (masks[n] if masks else 1) for n in names]
    sizes, shapes = [w.numel() for w in weights], [w.shape for w in weights]
    model.double()
    loss_fn = _functional_loss(model, names, sizes, shapes, [(x.double(), y) for x, y in data], TEMPERATURE)
    flat = torch.cat([w.flatten() for w in weights])
    g = torch.autograd.functional.jacobian(loss_fn, flat)
    hessian = torch.autograd.functional.hessian(loss_fn, flat)
    expected = flat * (hessian @ g)  # θ ⊙ Hg: higher = keep (the paper removes the top of −θ ⊙ Hg)
    got = torch.cat([scores[n].flatten() for n in names]).double()
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-9)
    assert expected.abs().max() > 1e-6  # the check is not vacuous


@pytest.mark.parametrize("with_prior", [False, True])
def test_synflow_conservation_law_on_a_bias_free_mlp(with_prior):
    model = nn.Sequential(
        nn.Linear(20, 30, bias=False),
        nn.ReLU(),
        nn.Linear(30, 25, bias=False),
        nn.ReLU(),
        nn.Linear(25, 5, bias=False),
    )
    for p in model.parameters():  # signed weights: the scorer must take |w|
        assert (p < 0).any()
    masks = _prior(model) if with_prior else None
    names = ("0.weight", "2.weight", "4.weight")
    scores = get_scorer("synflow")(ScoringInput(model=model, names=names, masks=masks))
    sums = torch.tensor([scores[n].double().sum() for n in names])
    torch.testing.assert_close(sums, torch.full_like(sums, sums[0].item()), rtol=1e-6, atol=0)
    torch.testing.assert_close(sums[0], torch.tensor(1.0, dtype=torch.float64), rtol=1e-6, atol=0)  # ÷ R
    if masks is not None:
        assert all(not scores[n][~masks[n]].any() for n in names)  # pruned weights carry no flow


def test_synflow_matches_the_closed_form_product_of_absolute_weights():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    scores = get_scorer("synflow")(ScoringInput(model=model, names=("0.weight", "2.weight")))
    w1, w2 = (model[i].weight.detach().double().abs().requires_grad_(True) for i in (0, 2))
    flow = (w2 @ w1 @ torch.ones(4, dtype=torch.float64)).sum()  # R = 1ᵀ|W2||W1|1, biases ignored
    g1, g2 = torch.autograd.grad(flow, (w1, w2))
    torch.testing.assert_close(scores["0.weight"].double(), (w1 * g1 / flow).detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(scores["2.weight"].double(), (w2 * g2 / flow).detach(), rtol=1e-6, atol=0)


def test_synflow_100_keeps_every_layer_where_magnitude_collapses():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 60), nn.ReLU(), nn.Linear(60, 10))
    sparsity = compression_to_sparsity(10**2.5)  # 42 of 13,400 weights; maximal compression 10^3.65
    magnitude = compute_masks(model, "magnitude", sparsity, on_collapse="ignore")
    assert magnitude.empty_layers()  # PyTorch's init: the wide first layer has the smallest weights
    synflow = iterative_masks(model, "synflow", sparsity, rounds=100)
    report = analyse_collapse(model, synflow)
    assert not report.empty_layers and report.has_path and not report.collapsed
    assert synflow.kept == magnitude.kept == 13_400 - round(13_400 * sparsity) == 42


def test_single_shot_synflow_collapses_where_iterative_does_not():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 60), nn.ReLU(), nn.Linear(60, 10))
    one_shot = iterative_masks(
        model, "synflow", compression_to_sparsity(10**2.5), rounds=1, on_collapse="ignore"
    )
    assert analyse_collapse(model, one_shot).collapsed


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv1(x)))  # (batch, 4, 6, 6)
        h = h + self.conv2(h)  # residual connection
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
@pytest.mark.parametrize("train_mode", [True, False])
def test_scoring_leaves_weights_buffers_mode_and_grads_unchanged(method, train_mode):
    torch.manual_seed(0)
    model = _Residual()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.bias.uniform_(-1, 1)
    model.train(train_mode)
    model.conv1.train(not train_mode)  # mixed modes must survive too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    names = ("conv1.weight", "conv2.weight", "head.weight")
    data = [(torch.randn(4, 1, 6, 6), torch.randint(0, 3, (4,)))]
    masks = Masks({n: torch.rand(model.get_parameter(n).shape) > 0.5 for n in names})
    scores = get_scorer(method)(ScoringInput(model=model, names=names, data=data, masks=masks))
    for name in names:
        assert scores[name].shape == model.get_parameter(name).shape and torch.isfinite(scores[name]).all()
        assert scores[name].abs().sum() > 0
    after = model.state_dict()
    assert all(
        torch.equal(before[k].view(-1).view(torch.uint8), after[k].view(-1).view(torch.uint8)) for k in before
    )
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", ["magnitude", "synflow", "snip", "random"])
@pytest.mark.parametrize("kwargs", [{}, {"scope": "layer"}, {"overrides": {"4": 0.5}}])
def test_iterative_masks_equal_a_loop_of_compute_masks(method, kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 15), nn.ReLU(), nn.Linear(15, 5))
    data = _batches_for(20, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = iterative_masks(model, method, 0.97, rounds=6, data=data, on_collapse="ignore", **kwargs)
    loop = None
    for step in sparsity_steps(0.97, 6):
        loop = compute_masks(model, method, step, prior=loop, data=data, on_collapse="ignore", **kwargs)
    assert fast == loop
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _batches_for(features: int, classes: int) -> list:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(8, features, generator=g), torch.randint(0, classes, (8,), generator=g))]


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.9])
def test_select_survivors_equals_select_with_prior_also_when_a_group_empties(scope, sparsity):
    scores = {"a": torch.tensor([1.0, 2.0, 2.0, 0.5]), "b": torch.tensor([3.0, 2.0, 5.0, 2.0, 0.1])}
    prior = Masks(
        {"a": torch.tensor([True, False, True, True]), "b": torch.tensor([True, True, True, False, True])}
    )
    expected = select(scores, sparsity, scope=scope, prior=prior, on_collapse="ignore")
    assert select_survivors(scores, sparsity, prior, scope=scope) == expected


def test_synflow_on_a_conv_net_without_data_names_the_fix(convnet):
    with pytest.raises(ValueError, match=r"pass data=\[\(example_inputs, targets\)\]"):
        compute_masks(convnet, "synflow", 0.5)


@pytest.mark.parametrize("bad", [0.5, 0, float("nan"), "10", True])
def test_compression_must_be_at_least_one(bad):
    with pytest.raises(ValueError, match="compression must be a number >= 1"):
        compression_to_sparsity(bad)


def test_iterative_masks_rejects_bad_rounds(mlp):
    with pytest.raises(ValueError, match="rounds must be a positive int"):
        iterative_masks(mlp, "synflow", 0.9, rounds=0)
