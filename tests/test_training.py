"""Trainer and evaluator: learning, masked training, mode restoring, callbacks, input validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prunekit import training
from prunekit.data import load_digits, make_loader
from prunekit.masks import Masks
from prunekit.zoo import get_model


def digits_model() -> nn.Module:
    return get_model("lenet_300_100", in_features=64)


@pytest.fixture(scope="module")
def digits_loaders():
    return (
        make_loader(load_digits("train"), 64, shuffle=True, seed=0),
        make_loader(load_digits("test"), 256, shuffle=False),
    )


def random_masks(model: nn.Module, names: list[str], keep: float = 0.3) -> Masks:
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(1)
    return Masks({n: torch.rand(params[n].shape, generator=gen) < keep for n in names})


def test_training_reduces_loss_and_beats_chance(digits_loaders) -> None:
    train_loader, test_loader = digits_loaders
    model = digits_model()
    before = training.evaluate(model, test_loader)
    history = training.train(model, train_loader, epochs=3, lr=1e-2, progress=False, val_loader=test_loader)
    assert len(history.train_loss) == 3 and len(history.val_accuracy) == 3
    assert history.train_loss[-1] < history.train_loss[0] < 2.4
    assert history.steps == 3 * len(train_loader)
    assert history.val_accuracy[-1] == training.evaluate(model, test_loader)
    assert before < 0.3 < 0.9 < history.val_accuracy[-1]


def test_training_is_reproducible_by_seed() -> None:
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        model = digits_model()
        loader = make_loader(load_digits("val"), 32, shuffle=True, seed=0)  # a fresh shuffling generator
        history = training.train(model, loader, epochs=1, lr=1e-3, seed=5, progress=False)
        results.append((history, model.fc1.weight.detach().clone()))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"optimizer": "adam"},
        {"optimizer": "adamw", "weight_decay": 0.1},
        {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.01, "lr": 0.1},
    ],
)
def test_masked_weights_stay_exactly_zero(digits_loaders, kwargs) -> None:
    train_loader, _ = digits_loaders
    model = digits_model()
    masks = random_masks(model, ["fc1.weight", "fc2.weight", "fc2.bias"])
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    kwargs = {"lr": 1e-2, **kwargs}
    history = training.train(model, train_loader, epochs=2, masks=masks, progress=False, **kwargs)
    assert history.train_loss[1] < history.train_loss[0]
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0), name
        kept, before = params[name][mask], initial[name][mask]
        assert torch.count_nonzero(kept) == mask.sum() and not torch.equal(kept, before), name  # still trains
    # the hooks are gone after training: an unmasked step can change pruned entries again
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.arange(4)).backward()
    opt.step()
    assert torch.count_nonzero(model.fc1.weight[~masks["fc1.weight"]]) > 0


def test_evaluate_restores_each_modules_mode() -> None:
    model = get_model("vgg_small_bn", width=0.25)
    model.train()
    model.features[1].eval()  # a frozen BatchNorm stays frozen
    loader = [(torch.randn(4, 1, 28, 28), torch.arange(4))]
    before = {name: m.training for name, m in model.named_modules()}
    acc = training.evaluate(model, loader)
    assert 0.0 <= acc <= 1.0
    assert {name: m.training for name, m in model.named_modules()} == before
    model.eval()
    training.evaluate(model, loader)
    assert not model.training


def test_evaluate_counts_correct_predictions() -> None:
    model = nn.Flatten()  # logits are the inputs themselves
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loader = [(x[:3], torch.tensor([1, 0, 0])), (x[3:], torch.tensor([1]))]
    assert training.evaluate(model, loader) == 0.75
    with pytest.raises(ValueError, match="non-empty loader"):
        training.evaluate(model, [])


@pytest.mark.parametrize("progress", [False, True])
def test_on_step_is_called_after_every_step(progress: bool, capsys: pytest.CaptureFixture[str]) -> None:
    ds = TensorDataset(torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,)))
    loader = make_loader(ds, 6, shuffle=True, seed=0)
    calls: list[int] = []
    history = training.train(
        digits_model(), loader, epochs=2, lr=1e-3, progress=progress, on_step=calls.append
    )
    assert calls == list(range(1, 9)) and history.steps == 8
    assert history.val_accuracy == ()
    assert ("0/8" in capsys.readouterr().err) == progress  # a bar over the 8 steps, cleared at the end


@pytest.mark.parametrize(
    ("schedule", "factors"),
    [("cosine", [1.0, 0.5 * (1 + 0.5**0.5), 0.5, 0.5 * (1 - 0.5**0.5)]), ("constant", [1.0] * 4)],
)
def test_lr_schedule_sets_the_rate_of_each_step(schedule: str, factors: list[float]) -> None:
    loader = make_loader(TensorDataset(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))), 2, shuffle=False)
    seen: list[float] = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "step", spy)
        training.train(digits_model(), loader, epochs=1, lr=0.1, lr_schedule=schedule, progress=False)
    assert seen == pytest.approx([0.1 * f for f in factors])


def test_zero_epochs_leaves_the_model_unchanged() -> None:
    model = digits_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = training.train(model, [], epochs=0, lr=1e-3, lr_schedule="constant", progress=False)
    assert history == training.TrainHistory(train_loss=(), val_accuracy=(), steps=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"optimizer": "rmsprop"},
            ValueError,
            "optimizer must be one of 'adam', 'adamw', 'sgd'; got 'rmsprop'",
        ),
        ({"lr_schedule": "step"}, ValueError, "lr_schedule must be one of 'constant', 'cosine'; got 'step'"),
        ({"epochs": -1}, ValueError, "epochs must be an int >= 0, got -1"),
        ({"epochs": 1.5}, ValueError, "epochs must be an int >= 0, got 1.5"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"lr": "0.1"}, TypeError, "lr must be a float > 0"),
        ({"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\)"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0"),
        (
            {"masks": {"fc1.weight": None}},
            TypeError,
            "masks must be a prunekit.masks.Masks or None, got dict",
        ),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, error, message) -> None:
    loader = [(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))]
    kwargs = {"epochs": 1, "lr": 1e-3, **kwargs}
    with pytest.raises(error, match=message):
        training.train(digits_model(), loader, progress=False, **kwargs)


def test_cosine_needs_a_loader_with_a_length_and_empty_loaders_are_rejected() -> None:
    batches = iter([(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))])
    with pytest.raises(ValueError, match="lr_schedule='constant'"):
        training.train(digits_model(), batches, epochs=1, lr=1e-3, progress=False)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        training.train(digits_model(), [], epochs=1, lr=1e-3, progress=False)
