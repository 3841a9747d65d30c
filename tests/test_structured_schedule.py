"""Iterative structured pruning: per-step ratios, re-tracing, channel counts after every step."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.plan import apply_plan, build_plan
from prunekit.structured_schedule import prune_iteratively, step_ratios
from structured_zoo import build


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [("exponential", [0.5, 0.5]), ("linear", [0.375, 0.6])],  # kept 1 → ½ → ¼; 1 → ⅝ → ¼
)
def test_step_ratios_reach_the_final_ratio(schedule: str, expected: list[float]) -> None:
    ratios = step_ratios(0.75, 2, schedule)
    assert ratios == pytest.approx(expected, abs=1e-8)
    assert math.prod(1 - r for r in ratios) == pytest.approx(0.25, abs=1e-8)


def test_step_ratios_of_zero_remove_nothing() -> None:
    assert step_ratios(0.0, 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("schedule", "widths"),
    [("exponential", [(8, 4), (4, 2)]), ("linear", [(10, 5), (4, 2)])],
    # linear: ⌊16·0.375⌋ = 6 and ⌊8·0.375⌋ = 3 go first, then ⌊10·0.6⌋ = 6 and ⌊5·0.6⌋ = 3
)
def test_channel_counts_after_every_step(schedule: str, widths: list[tuple[int, int]]) -> None:
    model, x = mlp(), torch.randn(3, 4)
    seen: list[tuple[int, tuple[int, int]]] = []

    def finetune(m: nn.Module, step: int) -> None:
        seen.append((step, (m[0].out_features, m[2].out_features)))

    pruned = prune_iteratively(model, x, 0.75, 2, "l1", schedule=schedule, finetune=finetune)
    assert seen == [(0, widths[0]), (1, widths[1])]
    assert (pruned[2].in_features, pruned[4].in_features) == widths[1]
    assert model[0].out_features == 16  # the original is not changed
    assert pruned(x).shape == (3, 2)


def test_finetune_between_steps_changes_what_the_next_step_removes() -> None:
    model, x = mlp(), torch.randn(3, 4)

    def boost_first_channel(m: nn.Module, step: int) -> None:
        with torch.no_grad():
            m[0].weight[0].fill_(100.0)  # after step 0 the first kept channel becomes the largest

    pruned = prune_iteratively(model, x, 0.75, 2, "l1", finetune=boost_first_channel)
    assert pruned[0].weight.shape == (4, 4)
    assert (pruned[0].weight == 100.0).all(dim=1).sum() == 1


def test_iterative_taylor_reads_gradients_left_by_finetune() -> None:
    model, x = build("resnet18")
    model(x).square().mean().backward()

    def finetune(m: nn.Module, step: int) -> None:
        m.zero_grad()
        m(x).square().mean().backward()

    pruned = prune_iteratively(model, x, 0.5, 2, "taylor", finetune=finetune)
    # 8 channels: 8 − round(8·√0.5) = 2 go in step 1, then the rest of the one-shot ⌊8·0.5⌋ = 4
    assert pruned[0][0].out_channels == 4
    assert pruned(x).shape == model(x).shape


def test_iterative_taylor_copies_a_model_with_weight_norm_hooks_after_backward() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated
        model = nn.Sequential(nn.utils.weight_norm(nn.Linear(6, 8)), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(4, 6)
    model(x).square().mean().backward()  # the hook's weight now carries grad: deepcopy refuses it alone

    def finetune(m: nn.Module, step: int) -> None:
        m(x).square().mean().backward()

    pruned = prune_iteratively(model, x, 0.5, 2, "taylor", finetune=finetune)
    assert (pruned[0].out_features, pruned[0].weight_v.shape, pruned[2].in_features) == (4, (4, 6), 4)
    assert model[0].weight_v.shape == (8, 6)


def _widths(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("steps", "schedule", "kwargs"),
    [
        (5, "exponential", {}),
        (3, "linear", {"round_to": 4}),
        (4, "exponential", {"ratios": {"8.body.0.0": 0.25}}),  # a 32-channel block keeps 24
    ],
)
def test_many_steps_end_with_the_one_shot_channel_counts(steps: int, schedule: str, kwargs: dict) -> None:
    """Per-step flooring used to keep up to a channel per step more than one-shot (32 → 18, not 16)."""
    model, x = build("resnet18")
    graph = DependencyGraph.build(model, x)
    one_shot = apply_plan(model, build_plan(model, graph, 0.6, "l1", **kwargs))
    iterative = prune_iteratively(model, x, 0.6, steps, "l1", schedule=schedule, **kwargs)
    assert _widths(iterative) == _widths(one_shot)
    assert _widths(iterative) != _widths(model)
    if "ratios" in kwargs:
        assert iterative[8].body[0][0].out_channels == 24


def test_counts_from_the_caller_are_refused() -> None:
    with pytest.raises(TypeError, match="sets counts itself"):
        prune_iteratively(mlp(), torch.randn(3, 4), 0.5, 2, counts={0: 1})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"steps": 0}, ValueError, "steps must be a positive int, got 0"),
        ({"schedule": "cubic"}, ValueError, "schedule must be one of 'exponential', 'linear'"),
        ({"ratio": 1.0}, ValueError, r"ratio must be in \[0, 1\)"),
        ({"finetune": 3}, TypeError, "finetune must be a callable"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, error: type, message: str) -> None:
    arguments = {"ratio": 0.5, "steps": 2, **kwargs}
    with pytest.raises(error, match=message):
        prune_iteratively(mlp(), torch.randn(3, 4), **arguments)
