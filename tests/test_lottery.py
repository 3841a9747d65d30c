"""Lottery tickets: IMP rates, rewinding, controls, and bit-exact resume after an interruption."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from prunekit import Masks
from prunekit.lottery import LotteryConfig, find_ticket


def _data() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(260, 12, generator=g)
    y = (x @ torch.randn(12, 3, generator=g)).argmax(1)
    return (
        TensorDataset(x[:180], y[:180]),
        TensorDataset(x[180:220], y[180:220]),
        TensorDataset(x[220:], y[220:]),
    )


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


CONFIG = LotteryConfig(
    rounds=2, prune_rate=0.3, output_rate=0.1, epochs=2, batch_size=30, eval_every=4, lr=1e-2
)


class _Interrupt(Exception):
    pass


def test_resume_after_an_interruption_gives_identical_masks_and_metrics(tmp_path):
    data = _data()
    whole = find_ticket(_model, *data, CONFIG, tmp_path / "whole")

    def crash(name: str, epoch: int) -> None:
        if name == "ticket_02" and epoch == 1:  # mid-round: after the first of two epochs
            raise _Interrupt

    with pytest.raises(_Interrupt):
        find_ticket(_model, *data, CONFIG, tmp_path / "resumed", on_epoch=crash)
    assert not (tmp_path / "resumed" / "ticket_02_final.safetensors").exists()
    assert (tmp_path / "resumed" / "in_progress.safetensors").exists()
    resumed = find_ticket(_model, *data, CONFIG, tmp_path / "resumed", resume=True)
    assert resumed == whole
    assert not list((tmp_path / "resumed").glob("in_progress.*"))  # a finished run leaves no checkpoint
    for r in (1, 2):
        name = f"masks_round{r:02d}.safetensors"
        assert Masks.load(tmp_path / "whole" / name) == Masks.load(tmp_path / "resumed" / name)
    for run in [r.name for r in whole.runs]:
        a = load_file(tmp_path / "whole" / f"{run}_final.safetensors")
        b = load_file(tmp_path / "resumed" / f"{run}_final.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_rates_controls_and_early_stopping(tmp_path):
    result = find_ticket(_model, *_data(), CONFIG, tmp_path)
    assert [r.name for r in result.runs] == [
        "dense",
        "ticket_01",
        "reinit_01",
        "random_prune_01",
        "ticket_02",
        "reinit_02",
        "random_prune_02",
    ]
    masks2 = Masks.load(tmp_path / "masks_round02.safetensors")
    for name, mask in masks2.items():  # per layer: round(s · n) pruned, s = 1 − (1 − rate)^2
        rate = 0.1 if name == "4.weight" else 0.3
        assert mask.numel() - int(mask.sum()) == round((1 - (1 - rate) ** 2) * mask.numel())
    assert masks2.kept < Masks.load(tmp_path / "masks_round01.safetensors").kept
    ticket, reinit, random = (result.of_kind(k)[1] for k in ("ticket", "reinit", "random_prune"))
    assert ticket.layer_remaining == reinit.layer_remaining == random.layer_remaining
    ticket_w = load_file(tmp_path / "ticket_02_final.safetensors")
    random_w = load_file(tmp_path / "random_prune_02_final.safetensors")
    assert not torch.equal(ticket_w["0.weight"] != 0, random_w["0.weight"] != 0)  # other masks, same counts
    assert torch.equal((ticket_w["0.weight"] != 0), masks2["0.weight"])  # pruned weights stayed zero
    for run in result.runs:
        iterations = [i for i, _ in run.trace]
        assert run.early_stop_iteration in iterations and run.best_val == max(v for _, v in run.trace)
        assert run.iterations == 2 * 6  # 180 samples / 30 per batch × 2 epochs


def test_tickets_rewind_to_the_initialisation(tmp_path):
    find_ticket(
        _model, *_data(), LotteryConfig(rounds=1, epochs=1, batch_size=60, controls=("reinit",)), tmp_path
    )
    init = load_file(tmp_path / "init.safetensors")
    torch.manual_seed(0)
    assert all(torch.equal(init[k], v) for k, v in _model().state_dict().items())  # θ₀ from the seed
    assert not (tmp_path / "rewind.safetensors").exists()


def test_rewinding_to_iteration_k_saves_and_uses_theta_k(tmp_path):
    config = LotteryConfig(rounds=1, epochs=1, batch_size=30, rewind_iteration=3, controls=())
    find_ticket(_model, *_data(), config, tmp_path)
    rewind, init = load_file(tmp_path / "rewind.safetensors"), load_file(tmp_path / "init.safetensors")
    assert not torch.equal(rewind["2.bias"], init["2.bias"])
    with pytest.raises(ValueError, match="rewind_iteration=100 is past the end"):
        find_ticket(_model, *_data(), LotteryConfig(rounds=1, epochs=1, rewind_iteration=100), tmp_path / "b")


def test_existing_runs_are_not_overwritten_and_resume_needs_the_same_config(tmp_path):
    config = LotteryConfig(rounds=1, epochs=1, batch_size=60, controls=())
    find_ticket(_model, *_data(), config, tmp_path)
    with pytest.raises(ValueError, match="pass resume=True"):
        find_ticket(_model, *_data(), config, tmp_path)
    with pytest.raises(ValueError, match="cannot resume"):
        find_ticket(
            _model,
            *_data(),
            LotteryConfig(rounds=2, epochs=1, batch_size=60, controls=()),
            tmp_path,
            resume=True,
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prune_rate": 1.0}, "prune_rate must be a fraction"),
        ({"output_rate": 0}, "output_rate must be a fraction"),
        ({"rounds": 0}, "rounds must be a positive int"),
        ({"scope": "net"}, "scope must be one of"),
        ({"controls": ("shuffle",)}, "controls must be distinct names"),
        ({"rewind_iteration": -1}, "rewind_iteration must be >= 0"),
        ({"lr": 0}, "lr must be a float > 0"),
    ],
)
def test_config_validation_names_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LotteryConfig(**kwargs)


def test_datasets_must_be_tensor_datasets(tmp_path):
    _, val, test = _data()
    with pytest.raises(TypeError, match="train must be a TensorDataset"):
        find_ticket(_model, [1, 2], val, test, CONFIG, tmp_path)
