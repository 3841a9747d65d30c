"""Group importances: magnitude, obd, fpgm and lamp — hand-computed values on tiny networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit.graph import IMPORTANCES, DependencyGraph, Group, group_scores
from prunekit.graph import importance as importance_module
from prunekit.graph.importance import shared_reductions
from prunekit.plan import build_plan
from structured_zoo import build

NAN = float("nan")


def tiny() -> tuple[nn.Module, Group]:
    """Linear(2, 3) → ReLU → Linear(3, 1); one group of 3 hidden channels.

    W0 = [[1, 0], [0, 2], [3, 4]], b0 = [1, 1, 2], W2 = [[1, 1, 2]], b2 = [0].
    """
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]))
        model[0].bias.copy_(torch.tensor([1.0, 1.0, 2.0]))
        model[2].weight.copy_(torch.tensor([[1.0, 1.0, 2.0]]))
        model[2].bias.zero_()
    (group,) = DependencyGraph.build(model, torch.randn(4, 2)).groups
    assert [(m.tensor, m.dim) for m in group.members] == [("0.weight", 0), ("0.bias", 0), ("2.weight", 1)]
    return model, group


def per_member(name: str, model: nn.Module, group: Group) -> torch.Tensor:
    return IMPORTANCES.get(name)(model, group, torch.Generator().manual_seed(0))


def test_fpgm_is_the_sum_of_distances_to_the_other_filters() -> None:
    model, group = tiny()
    # rows (1,0), (0,2), (3,4): d01 = √5, d02 = √20 = 2√5, d12 = √13; bias (1-D) and the consumer: NaN
    s5, s13 = math.sqrt(5.0), math.sqrt(13.0)
    expected = torch.tensor([[3 * s5, s5 + s13, 2 * s5 + s13], [NAN] * 3, [NAN] * 3])
    torch.testing.assert_close(per_member("fpgm", model, group), expected, equal_nan=True)
    scores = group_scores(model, group, "fpgm", normalize="none")
    torch.testing.assert_close(scores, expected[0])


def test_fpgm_removes_the_filter_nearest_the_median_not_the_smallest() -> None:
    model, _ = tiny()
    graph = DependencyGraph.build(model, torch.randn(4, 2))
    assert build_plan(model, graph, 0.34, "fpgm").removals == {0: (1,)}  # 5.84 < 6.71 < 8.08
    assert build_plan(model, graph, 0.34, "l2").removals == {0: (0,)}  # the smallest row instead


def test_lamp_divides_by_the_norms_at_least_as_large_and_ties_share() -> None:
    model, group = tiny()
    # W0 rows: n = [1, 4, 25] → [1/30, 4/29, 25/25]; b0: n = [1, 1, 4] → ties: [1/6, 1/6, 1];
    # W2 columns: n = [1, 1, 4] → [1/6, 1/6, 1]
    expected = torch.tensor([[1 / 30, 4 / 29, 1.0], [1 / 6, 1 / 6, 1.0], [1 / 6, 1 / 6, 1.0]])
    torch.testing.assert_close(per_member("lamp", model, group), expected)


def test_lamp_of_an_all_zero_layer_is_zero() -> None:
    model, group = tiny()
    with torch.no_grad():
        model[2].weight.zero_()
    assert per_member("lamp", model, group)[2].tolist() == [0.0, 0.0, 0.0]


def test_obd_is_half_the_sum_of_squared_weight_times_gradient() -> None:
    model, group = tiny()
    model[0].weight.grad = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    model[0].bias.grad = torch.tensor([2.0, 0.0, 1.0])
    model[2].weight.grad = torch.tensor([[1.0, 2.0, 3.0]])
    # ½Σw²g²: W0 rows ½[1·1 + 0·1, 0·4 + 4·0, 9·0 + 16·1] = [0.5, 0, 8]; b0 ½[1·4, 1·0, 4·1] = [2, 0, 2];
    # W2 columns ½[1·1, 1·4, 4·9] = [0.5, 2, 18]
    expected = torch.tensor([[0.5, 0.0, 8.0], [2.0, 0.0, 2.0], [0.5, 2.0, 18.0]])
    torch.testing.assert_close(per_member("obd", model, group), expected)
    sums = group_scores(model, group, "obd", reduction="sum", normalize="none")
    torch.testing.assert_close(sums, torch.tensor([3.0, 2.0, 28.0]))


def test_obd_matches_the_squared_batch_gradient_of_a_real_loss() -> None:
    model, group = tiny()
    x, y = torch.randn(5, 2), torch.randn(5, 1)
    nn.functional.mse_loss(model(x), y).backward()
    w, g = model[0].weight.detach(), model[0].weight.grad
    torch.testing.assert_close(per_member("obd", model, group)[0], 0.5 * (w * g).square().sum(1))


def test_obd_without_gradients_names_itself_and_the_fix() -> None:
    model, group = tiny()
    with pytest.raises(ValueError, match=r"importance 'obd' reads gradients but 0\.weight\.grad is None"):
        per_member("obd", model, group)


def test_fpgm_scores_whole_attention_heads() -> None:
    from structured_zoo import SelfAttention

    attn = SelfAttention(8, 2)
    (group,) = DependencyGraph.build(attn, torch.randn(1, 3, 8)).groups
    assert group.size == 2
    rows = attn.qkv.weight.detach().double()  # (24, 8): q, k, v × 2 heads × 4 dims
    distances = torch.cdist(rows[None], rows[None])[0].sum(1)  # (24,)
    head = (torch.arange(24) // 4) % 2
    expected = torch.stack([distances[head == h].sum() for h in (0, 1)]).float()
    torch.testing.assert_close(per_member("fpgm", attn, group)[0], expected)


@pytest.mark.parametrize("importance", ["l1", "l2"])
def test_magnitude_reads_weights_not_batchnorm_running_statistics(importance: str) -> None:
    """A huge running variance scales its channel *down*; it must not make the channel look important."""
    model = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.BatchNorm2d(3), nn.Conv2d(3, 1, 1)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1))
        model[1].running_var.copy_(torch.tensor([1e4, 1.0, 1.0]))
        model[1].running_mean.copy_(torch.tensor([50.0, 0.0, 0.0]))
    (group,) = DependencyGraph.build(model, torch.randn(1, 1, 4, 4)).groups
    rows = per_member(importance, model, group)
    buffers = [i for i, m in enumerate(group.members) if m.tensor.endswith(("running_var", "running_mean"))]
    assert len(buffers) == 2 and torch.isnan(rows[buffers]).all()
    scores = group_scores(model, group, importance, normalize="none")
    # conv weight rows 1, 2, 3; BN γ = 1, β = 0; next conv's columns: equal across channels
    assert scores.argsort().tolist() == [0, 1, 2]
    graph = DependencyGraph.build(model, torch.randn(1, 1, 4, 4))
    assert build_plan(model, graph, 0.34, importance).removals == {0: (0,)}


@pytest.mark.parametrize("importance", ["l1", "l2"])
def test_shared_reductions_give_each_groups_scores_as_alone(importance: str, monkeypatch) -> None:
    """A weight's magnitudes formed once for its out- and in-channel groups score both as when each
    group reduces it alone (weights over the chunk limit take the chunked path)."""
    model, x = build("resnet18")
    graph = DependencyGraph.build(model, x)
    alone = [group_scores(model, g, importance) for g in graph.groups]
    monkeypatch.setattr(importance_module, "_CHUNK", 64 * 64 * 9)  # the 128- and 256-wide convs: over it
    with shared_reductions(graph.groups):
        shared = [group_scores(model, g, importance) for g in graph.groups]
    assert len(shared) == len(alone) > 5
    for a, b in zip(alone, shared, strict=True):
        torch.testing.assert_close(a, b)
