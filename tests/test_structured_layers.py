"""Layers whose sizes no tensor records (``InstanceNorm2d(affine=False)``, ``nn.Unflatten``): pruning
resizes them from the plan's predicted shapes, and saving keeps those sizes."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from prunekit.export import load_compressed, save_compressed
from prunekit.graph import DependencyGraph, load_pruned, save_pruned
from prunekit.plan import PruningPlan, apply_plan
from test_structured_exact import assert_exact, prune_zeroed


def _conv_around(middle: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), middle, nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))


def _unflatten_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(10, 32), nn.Unflatten(1, (8, 4)), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)
    )


def _prune(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    graph = DependencyGraph.build(model, x)
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    return pruned, zeroed


def _forward_quietly(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # InstanceNorm warns on every call when num_features is stale
        with torch.no_grad():
            return model(x)


@pytest.mark.parametrize(
    ("middle", "attribute"),
    [
        (nn.InstanceNorm2d(8), "num_features"),
        (nn.InstanceNorm2d(8, affine=True, track_running_stats=True), "num_features"),
        (nn.BatchNorm2d(8, affine=False, track_running_stats=False), "num_features"),
    ],
    ids=["instance_norm", "instance_norm_affine", "batch_norm_stateless"],
)
def test_norms_without_tensors_take_the_pruned_channel_count(middle: nn.Module, attribute: str) -> None:
    torch.manual_seed(0)
    model, x = _conv_around(middle).eval(), torch.randn(2, 3, 10, 10)
    pruned, zeroed = _prune(model, x)
    kept = pruned[0].out_channels
    assert kept < 8
    assert getattr(pruned[1], attribute) == kept
    assert getattr(model[1], attribute) == 8  # the user's model is untouched
    assert_exact(pruned, zeroed, x)
    _forward_quietly(pruned, x)


def test_group_norm_without_affine_takes_the_pruned_channel_count() -> None:
    torch.manual_seed(0)
    model, x = _conv_around(nn.GroupNorm(2, 8, affine=False)).eval(), torch.randn(2, 3, 10, 10)
    pruned, _ = _prune(model, x)  # not exact by design: the group statistics lose the zeroed channels
    assert pruned[1].num_channels == pruned[0].out_channels < 8
    assert pruned[1].num_channels % pruned[1].num_groups == 0
    pruned(x)


def test_unflatten_takes_the_pruned_sizes_and_prunes_exactly() -> None:
    torch.manual_seed(0)
    model, x = _unflatten_net().eval(), torch.randn(2, 10)
    pruned, zeroed = _prune(model, x)
    kept = pruned[4].in_features // 4
    assert kept < 8
    assert pruned[1].unflattened_size == (kept, 4)
    assert pruned[0].out_features == kept * 4
    assert model[1].unflattened_size == (8, 4)
    assert_exact(pruned, zeroed, x)


def _saved_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(10, 128), nn.Unflatten(1, (8, 4, 4)), nn.InstanceNorm2d(8), nn.Conv2d(8, 2, 3)
    )


@pytest.mark.parametrize("fmt", ["pruned", "compressed"])
def test_saved_sizes_come_back_on_load(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(0)
    model, x = _saved_net().eval(), torch.randn(2, 10)
    pruned, _ = _prune(model, x)
    kept = pruned[3].in_channels
    assert kept < 8 and pruned[1].unflattened_size == (kept, 4, 4) and pruned[2].num_features == kept
    if fmt == "pruned":
        loaded = load_pruned(_saved_net, save_pruned(pruned, tmp_path / "m"))
    else:
        loaded = load_compressed(_saved_net, save_compressed(pruned, tmp_path / "m.safetensors"))
    assert loaded[1].unflattened_size == (kept, 4, 4)
    assert loaded[2].num_features == kept
    torch.testing.assert_close(
        _forward_quietly(loaded.eval(), x), _forward_quietly(pruned, x), rtol=0, atol=0
    )


class FrozenBatchNorm2d(nn.Module):
    """Detection backbones' BatchNorm with fixed statistics and affine terms, all buffers."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.rand(n) + 0.5)
        self.register_buffer("bias", torch.randn(n))
        self.register_buffer("running_mean", torch.randn(n))
        self.register_buffer("running_var", torch.rand(n) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class Scaled(nn.Module):
    """A per-channel scale buffer that is rebuilt, not saved (``persistent=False``)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.rand(n, 1, 1) + 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_saved_float_buffers_of_plain_modules_are_sliced_with_their_channels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _conv_around(FrozenBatchNorm2d(8)).eval(), torch.randn(2, 3, 10, 10)
    graph = DependencyGraph.build(model, x)
    (group,) = graph.groups
    assert {m.tensor for m in group.members} >= {"1.weight", "1.bias", "1.running_mean", "1.running_var"}
    pruned, zeroed = _prune(model, x)
    kept = pruned[0].out_channels
    assert kept < 8 and all(b.shape == (kept,) for b in pruned[1].buffers())
    assert_exact(pruned, zeroed, x)
    loaded = load_pruned(lambda: _conv_around(FrozenBatchNorm2d(8)), save_pruned(pruned, tmp_path / "m"))
    torch.testing.assert_close(loaded.eval()(x), pruned(x), rtol=0, atol=0)


def test_unsaved_buffers_keep_their_channels() -> None:
    model, x = _conv_around(Scaled(8)).eval(), torch.randn(2, 3, 10, 10)
    assert DependencyGraph.build(model, x).groups == ()


def _weight_normed() -> nn.Module:
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    return nn.Sequential(
        weight_norm(nn.Conv1d(3, 8, 3, padding=1)),
        nn.ReLU(),
        weight_norm(nn.Conv1d(8, 8, 3, padding=1, bias=False)),
        nn.ReLU(),
        weight_norm(nn.ConvTranspose1d(8, 4, 4, stride=2)),  # norm over its outputs and taps
    ).eval()


def test_weight_normed_layers_prune_exactly_and_keep_their_parametrization(tmp_path: Path) -> None:
    model, x = _weight_normed(), torch.randn(2, 3, 12)
    graph = DependencyGraph.build(model, x)
    assert [g.size for g in graph.groups] == [8, 8]
    removals = {0: [1, 4, 6], 1: [0, 2, 3, 7]}
    zeroed = copy.deepcopy(model)
    with torch.no_grad():  # g = 0 silences a channel (zeroing v would give 0 / 0)
        zeroed[0].parametrizations.weight.original0[removals[0]] = 0
        zeroed[0].bias[removals[0]] = 0
        zeroed[2].parametrizations.weight.original0[removals[1]] = 0
    pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    assert (pruned[2].in_channels, pruned[2].out_channels, pruned[4].in_channels) == (5, 4, 4)
    assert parametrize.is_parametrized(pruned[2], "weight")
    assert_exact(pruned, zeroed, x)  # conv 2's norm spanned the removed inputs: renormalised
    loaded = load_pruned(_weight_normed, save_pruned(pruned, tmp_path / "m"))
    assert (loaded[2].in_channels, loaded[2].out_channels) == (5, 4)
    torch.testing.assert_close(loaded.eval()(x), pruned(x), rtol=0, atol=0)


def _hook_weight_normed() -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated, still common in older code
        return nn.Sequential(
            nn.utils.weight_norm(nn.Conv1d(3, 8, 3, padding=1)),
            nn.ReLU(),
            nn.utils.weight_norm(nn.Conv1d(8, 8, 3, padding=1, bias=False)),
            nn.ReLU(),
            nn.utils.weight_norm(nn.ConvTranspose1d(8, 4, 4, stride=2)),
        ).eval()


def test_hook_style_weight_norm_prunes_exactly_after_a_training_forward(tmp_path: Path) -> None:
    model, x = _hook_weight_normed(), torch.randn(2, 3, 12)
    graph = DependencyGraph.build(model, x)
    assert [g.size for g in graph.groups] == [8, 8]  # before: no groups, the layers kept whole silently
    removals = {0: [1, 4, 6], 1: [0, 2, 3, 7]}
    zeroed = copy.deepcopy(model)
    with torch.no_grad():  # g = 0 silences a channel
        zeroed[0].weight_g[removals[0]] = 0
        zeroed[0].bias[removals[0]] = 0
        zeroed[2].weight_g[removals[1]] = 0
    zeroed.train()(x).sum().backward()  # the hooks now hold weights with grad: deepcopy refuses those
    pruned = apply_plan(zeroed.eval(), PruningPlan(graph, removals))
    assert (pruned[2].in_channels, pruned[2].out_channels, pruned[4].in_channels) == (5, 4, 4)
    assert pruned[2].weight.shape == (4, 5, 3)  # the hook's weight is recomputed, not stale
    assert zeroed[2].weight_v.shape == (8, 8, 3)  # the user's model is untouched
    assert_exact(pruned, zeroed, x)  # conv 2's norm spanned the removed inputs: renormalised
    loaded = load_pruned(_hook_weight_normed, save_pruned(pruned, tmp_path / "m"))
    assert (loaded[2].in_channels, loaded[2].out_channels, loaded[2].weight.shape) == (5, 4, (4, 5, 3))
    torch.testing.assert_close(loaded.eval()(x), pruned(x), rtol=0, atol=0)


class _Bags(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.bags, self.head = nn.EmbeddingBag(20, 8, mode=mode), nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        return self.head(self.bags(ids, offsets, per_sample_weights=weights).relu())


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_features_prune_exactly(mode: str) -> None:
    torch.manual_seed(0)
    model = _Bags(mode).eval()
    inputs = (torch.randint(0, 20, (9,)), torch.tensor([0, 2, 7]), torch.rand(9) if mode == "sum" else None)
    graph = DependencyGraph.build(model, inputs)
    (group,) = graph.groups
    assert {(m.tensor, m.dim) for m in group.members} == {("bags.weight", 1), ("head.weight", 1)}
    zeroed = copy.deepcopy(model)
    with torch.no_grad():  # features 1 and 5 are 0 in every bag, whatever the mode
        zeroed.bags.weight[:, [1, 5]] = 0.0
    pruned = apply_plan(zeroed, PruningPlan(graph, {group.index: [1, 5]}))
    assert (pruned.bags.embedding_dim, pruned.bags.weight.shape, pruned.head.in_features) == (6, (20, 6), 6)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*inputs), zeroed(*inputs), rtol=1e-6, atol=1e-6)


def test_embedding_with_max_norm_renormalises_the_same_rows_after_pruning() -> None:
    torch.manual_seed(0)
    model, ids = (
        nn.Sequential(nn.Embedding(10, 8, max_norm=1.0), nn.Linear(8, 3)).eval(),
        torch.randint(0, 10, (2, 5)),
    )
    graph = DependencyGraph.build(model, ids)  # the norm of a row is the same without its zero features
    assert [g.size for g in graph.groups] == [8]
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert pruned[0].weight.shape[1] < 8
    assert_exact(pruned, zeroed, ids)


def _discriminator() -> nn.Module:
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    model = nn.Sequential(
        spectral_norm(nn.Conv2d(3, 8, 3, padding=1)),
        nn.LeakyReLU(0.2),
        spectral_norm(nn.Conv2d(8, 8, 3, padding=1)),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        spectral_norm(nn.Linear(8 * 6 * 6, 1)),
    )
    with torch.no_grad():
        for _ in range(3):  # power iterations: u and v leave their random start
            model(torch.randn(4, 3, 6, 6))
    return model.eval()


def test_spectral_normed_layers_prune_exactly_with_their_power_iteration_vectors(tmp_path: Path) -> None:
    model, x = _discriminator(), torch.randn(2, 3, 6, 6)
    graph = DependencyGraph.build(model, x)  # before: refused at aten.mv
    assert [g.size for g in graph.groups] == [8, 8]
    assert {"0.parametrizations.weight.0._u", "2.parametrizations.weight.0._v"} <= {
        m.tensor for m in graph.groups[0].members
    }  # σ = u·(W v) keeps its value over the kept rows and columns
    pruned, zeroed, removals = prune_zeroed(
        model, graph, list(graph.groups), torch.Generator().manual_seed(0)
    )
    kept = [8 - len(removals[g.index]) for g in graph.groups]
    assert (pruned[0].out_channels, pruned[2].in_channels, pruned[2].out_channels) == (kept[0], *kept)
    assert pruned[2].parametrizations.weight[0]._v.shape == (kept[0] * 9,)
    assert_exact(pruned, zeroed, x)
    loaded = load_pruned(_discriminator, save_pruned(pruned, tmp_path / "d"))
    torch.testing.assert_close(loaded.eval()(x), pruned(x), rtol=0, atol=0)
    pruned.train()(x)  # the power iteration runs on the sliced u and v


@pytest.mark.parametrize("hook", [False, True], ids=["parametrization", "hook"])
@pytest.mark.parametrize("dim", [1, None], ids=["dim1", "whole"])
def test_weight_norm_over_other_dims_prunes_exactly(hook: bool, dim: int | None) -> None:
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        norm = (lambda m: nn.utils.weight_norm(m, dim=dim)) if hook else (lambda m: weight_norm(m, dim=dim))
        model = nn.Sequential(norm(nn.Conv1d(3, 8, 3, padding=1)), nn.ReLU(), norm(nn.Conv1d(8, 4, 3))).eval()
    x = torch.randn(2, 3, 12)
    graph = DependencyGraph.build(model, x)  # before: refused at aten.norm (the norm spans the channels)
    (group,) = graph.groups
    zeroed = copy.deepcopy(model)  # silence channels 1, 4, 6 in the weight the layer computes, re-normed
    g, v = (
        ("weight_g", "weight_v")
        if hook
        else ("parametrizations.weight.original0", "parametrizations.weight.original1")
    )
    tensors = dict(zeroed[0].named_parameters())
    with torch.no_grad():
        weight = torch._weight_norm(tensors[v], tensors[g], -1 if dim is None else dim)
        weight[[1, 4, 6]] = 0.0
        tensors[v].copy_(weight)
        tensors[g].copy_(torch.norm_except_dim(weight, 2, -1 if dim is None else dim))
        zeroed[0].bias[[1, 4, 6]] = 0.0
    pruned = apply_plan(zeroed, PruningPlan(graph, {group.index: [1, 4, 6]}))
    assert (pruned[0].out_channels, pruned[2].in_channels) == (5, 5)
    assert_exact(pruned, zeroed, x)  # whole: conv 2's norm spanned its removed inputs, renormalised


class _MinusMedian(nn.Module):
    """A parametrization through an op without a channel rule: each row minus its median."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight - weight.median(dim=1, keepdim=True).values


def _parametrized_mlp(parametrized: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), parametrized, nn.ReLU(), nn.Linear(8, 8))
    return nn.Sequential(*model, nn.ReLU(), nn.Linear(8, 2)).eval()


def test_a_parametrization_without_channel_rules_is_refused_naming_the_module_to_keep_whole() -> None:
    model, x = (
        _parametrized_mlp(parametrize.register_parametrization(nn.Linear(8, 8), "weight", _MinusMedian())),
        torch.randn(3, 4),
    )
    with pytest.raises(ValueError, match=r"aten.median.dim .*ignore=\['2'\] \(the module it parametrizes\)"):
        DependencyGraph.build(model, x)
    graph = DependencyGraph.build(model, x, ignore=["2"])  # the suggestion works; the rest still prunes
    assert [sorted(g.modules()) for g in graph.groups] == [["4", "6"]]


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "householder"])
def test_an_orthogonal_layer_keeps_its_inputs_and_loses_rows_exactly(orthogonal_map: str) -> None:
    from torch.nn.utils.parametrizations import orthogonal

    model, x = (
        _parametrized_mlp(orthogonal(nn.Linear(8, 8), orthogonal_map=orthogonal_map)),
        torch.randn(3, 4),
    )
    graph = DependencyGraph.build(model, x)  # Q = base · f(original): f mixes every entry (pinned), the rows
    # of the base buffer (module 2.parametrizations.weight.0) pick Q's rows
    assert [sorted(g.modules()) for g in graph.groups] == [
        ["2", "2.parametrizations.weight.0", "4"],
        ["4", "6"],
    ]
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert pruned[2].weight.shape[0] < 8 == pruned[2].weight.shape[1]
    assert_exact(pruned, zeroed, x)


class _Pairwise(nn.Module):
    """``y_o = x1ᵀ W_o x2`` of two projections (or of one projection with itself)."""

    def __init__(self, same: bool) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(5, 8), None if same else nn.Linear(5, 6)
        self.pair, self.head = nn.Bilinear(8, 8 if same else 6, 7), nn.Linear(7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.head(self.pair(h, h if self.b is None else self.b(x)).relu())


@pytest.mark.parametrize("same", [False, True], ids=["two_inputs", "one_input_twice"])
def test_bilinear_layers_prune_both_inputs_and_outputs_exactly(same: bool) -> None:
    torch.manual_seed(0)
    model, x = _Pairwise(same).eval(), torch.randn(3, 5)
    graph = DependencyGraph.build(model, x)  # before: refused at aten._trilinear
    sizes = sorted(g.size for g in graph.groups)
    assert sizes == ([7, 8] if same else [6, 7, 8])
    pruned, zeroed, removals = prune_zeroed(
        model, graph, list(graph.groups), torch.Generator().manual_seed(0)
    )
    kept = {g.size: g.size - len(removals[g.index]) for g in graph.groups}
    expected = (kept[7], kept[8], kept[8] if same else kept[6])
    assert (pruned.pair.out_features, pruned.pair.in1_features, pruned.pair.in2_features) == expected
    assert pruned.pair.weight.shape == expected
    assert_exact(pruned, zeroed, x)


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_with_one_channel_per_group_loses_whole_groups_exactly(affine: bool) -> None:
    torch.manual_seed(0)
    model, x = _conv_around(nn.GroupNorm(8, 8, affine=affine)).eval(), torch.randn(2, 3, 10, 10)
    graph = DependencyGraph.build(model, x)
    (group,) = graph.groups
    assert (group.size, group.exact) == (8, True)  # each channel is normalised on its own
    pruned, zeroed = _prune(model, x)
    kept = pruned[0].out_channels
    assert kept < 8 and pruned[1].num_groups == pruned[1].num_channels == kept
    assert_exact(pruned, zeroed, x)


class LoRALinear(nn.Linear):
    """A Linear subclass with low-rank factors beside its weight."""

    def __init__(self, features_in: int, features_out: int, rank: int = 2) -> None:
        super().__init__(features_in, features_out)
        self.lora_a = nn.Parameter(torch.randn(rank, features_in) * 0.1)
        self.lora_b = nn.Parameter(torch.randn(features_out, rank) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + F.linear(F.linear(x, self.lora_a), self.lora_b)


class MaskedConv2d(nn.Conv2d):
    """PixelCNN's conv: the weight is multiplied by a mask buffer that hides later pixels."""

    def __init__(self, *args: int, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", torch.ones_like(self.weight))
        self.mask[:, :, 2:] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def test_tensors_a_subclass_adds_to_a_handled_layer_follow_their_channels() -> None:
    torch.manual_seed(0)
    linear = nn.Sequential(LoRALinear(6, 16), nn.ReLU(), LoRALinear(16, 3)).eval()
    conv = nn.Sequential(MaskedConv2d(1, 16, 3, padding=1), nn.ReLU(), MaskedConv2d(16, 2, 3, padding=1))
    conv = conv.eval()
    for model, x in ((linear, torch.randn(3, 6)), (conv, torch.randn(2, 1, 6, 6))):
        graph = DependencyGraph.build(model, x)
        widths = [g.size for g in graph.groups]
        assert 16 in widths  # before, the tensors the handler did not name pinned the layers whole
        pruned, zeroed = _prune(model, x)
        assert pruned[0].weight.shape[0] < 16 and pruned[2].weight.shape[1] == pruned[0].weight.shape[0]
        assert_exact(pruned, zeroed, x)
    assert sorted(widths) == [16]
    ranks_too = DependencyGraph.build(linear, torch.randn(3, 6)).groups
    assert sorted(g.size for g in ranks_too) == [2, 2, 16]  # the LoRA ranks prune as well
