"""Plan, apply, errors, attributes, training, save/load of structured pruning."""

from __future__ import annotations

import copy
import gc
import re
import weakref
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from prunekit.graph import IMPORTANCES, DependencyGraph, UnsupportedOpError, load_pruned, save_pruned
from prunekit.plan import PruningPlan, apply_plan, build_plan
from structured_zoo import build, resnet18


class Mixes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mix, self.out = nn.Conv2d(3, 4, 1), Mixer(), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mix(self.conv(x)))


class Mixer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.median(dim=1, keepdim=True).values  # a median over channels has no channel rule


def test_unsupported_op_names_op_and_module_and_leaves_model_untouched() -> None:
    model = Mixes().train()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedOpError, match=r"aten\.median\.dim.*module 'mix' \(Mixer\)"):
        DependencyGraph.build(model, torch.randn(1, 3, 2, 2))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ignoring_the_producer_makes_the_unsupported_op_harmless() -> None:
    graph = DependencyGraph.build(Mixes(), torch.randn(1, 3, 2, 2), ignore=["conv"])
    assert all("conv" not in g.modules() for g in graph.groups)


def test_unknown_ignored_module_is_rejected() -> None:
    with pytest.raises(ValueError, match="ignore names modules that do not exist: \\['nope'\\]"):
        DependencyGraph.build(Mixes(), torch.randn(1, 3, 2, 2), ignore=["nope"])


@pytest.mark.parametrize("ratio", [-0.2, 1.0, 1.5, float("nan")])
def test_bad_ratio_is_rejected(ratio: float) -> None:
    model, x = build("lenet5")
    with pytest.raises(ValueError, match="ratio must be in \\[0, 1\\)"):
        build_plan(model, DependencyGraph.build(model, x), ratio)


def test_bad_plan_indices_are_rejected() -> None:
    model, x = build("lenet5")
    graph = DependencyGraph.build(model, x)
    with pytest.raises(ValueError, match="distinct channel indices in \\[0, 6\\)"):
        PruningPlan(graph, {0: [6]})
    with pytest.raises(ValueError, match="distinct channel indices"):
        PruningPlan(graph, {0: [1, 1]})
    with pytest.raises(ValueError, match="distinct channel indices in \\[0, 6\\), got \\[-1, 2\\]"):
        PruningPlan(graph, {0: [2, -1]})
    with pytest.raises(ValueError, match="removes all 6 channels"):
        PruningPlan(graph, {0: range(6)})
    with pytest.raises(ValueError, match="valid group indices are 0..3"):
        PruningPlan(graph, {9: [0]})


def test_plan_for_another_model_raises_before_any_change() -> None:
    model, x = build("lenet5")
    plan = PruningPlan(DependencyGraph.build(model, x), {0: [0, 1]})
    other = nn.Sequential(nn.Conv2d(1, 7, 5, padding=2))
    with pytest.raises(ValueError, match=r"built for 0\.weight of shape \(6, 1, 5, 5\)"):
        apply_plan(other, plan, inplace=True)
    assert other[0].weight.shape == (7, 1, 5, 5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "convnext_block", "unet", "shufflenet_unit"])
def test_pruned_modules_are_consistent_and_train(name: str) -> None:
    model, x = build(name)
    graph = DependencyGraph.build(model, x)
    pruned = apply_plan(model, build_plan(model, graph, 0.5, "l2"))
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    for mname, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d):
            assert (m.out_channels, m.in_channels // m.groups) == tuple(m.weight.shape[:2]), mname
        elif isinstance(m, nn.ConvTranspose2d):
            assert (m.in_channels, m.out_channels // m.groups) == tuple(m.weight.shape[:2]), mname
        elif isinstance(m, nn.Linear):
            assert (m.out_features, m.in_features) == tuple(m.weight.shape), mname
        elif isinstance(m, nn.BatchNorm2d):
            assert m.num_features == m.weight.shape[0] == m.running_mean.shape[0], mname
        elif isinstance(m, nn.LayerNorm):
            assert m.normalized_shape == tuple(m.weight.shape), mname
    pruned.train()
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    loss = pruned(x).square().mean()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(pruned(x)).all()
    assert model(x).shape == pruned(x).shape


def test_local_ratio_round_to_and_inplace() -> None:
    model, x = build("vgg11_bn")
    graph = DependencyGraph.build(model, x)
    plan = build_plan(model, graph, 0.3, round_to=4)
    kept = {i: graph.groups[i].size - len(c) for i, c in plan.removals.items()}
    assert all(k % 4 == 0 for k in kept.values())
    assert 0 not in plan.removals and kept[1] == 12  # 8·0.7 = 5.6 → 8 kept; 16·0.7 = 11.2 → 12
    pruned = apply_plan(model, plan, inplace=True)
    assert pruned is model and model[4].out_channels == 12


def test_l1_removes_the_channels_with_smallest_weights() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(1.0, 7.0)[:, None].expand(6, 4))
        model[0].bias.zero_()
        model[2].weight.fill_(1.0)
    graph = DependencyGraph.build(model, torch.randn(3, 4))
    plan = build_plan(model, graph, 0.5, "l1")
    assert plan.removals == {0: (0, 1, 2)}
    assert apply_plan(model, plan)[0].weight[:, 0].tolist() == [4.0, 5.0, 6.0]


def test_global_ranking_respects_max_layer_ratio() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.mul_(100.0)
    graph = DependencyGraph.build(model, torch.randn(3, 4))
    free = build_plan(model, graph, 0.25, "l1", global_ranking=True, normalize="none")
    assert free.removals == {1: free.removals[1]} and len(free.removals[1]) == 4
    capped = build_plan(model, graph, 0.25, "l1", global_ranking=True, normalize="none", max_layer_ratio=0.25)
    assert {i: len(c) for i, c in capped.removals.items()} == {0: 2, 1: 2}


def test_ignore_and_per_module_ratios() -> None:
    model, x = build("lenet5")
    graph = DependencyGraph.build(model, x)
    plan = build_plan(model, graph, 0.5, ignore=["0"], ratios={"7": 0.25})
    assert 0 not in plan.removals
    assert len(plan.removals[2]) == 30  # group of 120 features of module 7 at ratio 0.25


@pytest.mark.parametrize("importance", IMPORTANCES.names())
def test_every_importance_gives_one_score_per_channel(importance: str) -> None:
    model, x = build("resnet18")
    model(x).square().mean().backward()
    graph = DependencyGraph.build(model, x)
    plan = build_plan(model, graph, 0.5, importance, generator=torch.Generator().manual_seed(0))
    assert plan.removals
    assert all(len(c) == graph.groups[i].size // 2 for i, c in plan.removals.items())


def test_unknown_importance_lists_valid_names() -> None:
    model, x = build("lenet5")
    valid = ", ".join(IMPORTANCES.names())  # other modules may register more (prunekit.scoring: nisp)
    assert valid.startswith("bn_scale, fpgm, l1, l2, lamp")
    with pytest.raises(ValueError, match=re.escape(f"valid importances are: {valid}")):
        build_plan(model, DependencyGraph.build(model, x), 0.5, "l0")


def test_taylor_without_gradients_says_how_to_fix() -> None:
    model, x = build("lenet5")
    with pytest.raises(ValueError, match="run loss.backward"):
        build_plan(model, DependencyGraph.build(model, x), 0.5, "taylor")


def test_preview_lists_groups_params_and_macs() -> None:
    model, x = build("lenet5")
    graph = DependencyGraph.build(model, x)
    text = build_plan(model, graph, 0.5).preview(model, x)
    assert "    0       6 → 3       0, 3\n" in text
    assert "params: 61,706 →" in text and "MACs:" in text
    model, x = build("convnext_block")  # its LayerNorm's statistics run over the block's width
    graph = DependencyGraph.build(model, x)
    lines = build_plan(model, graph, 0.5).preview(model, x).splitlines()
    assert [g.exact for g in graph.groups] == [False, True]
    assert lines[1].endswith("(a statistic over these channels shifts)")
    assert not lines[2].endswith("shifts)")


def test_save_and_load_into_the_original_architecture(tmp_path) -> None:
    model, x = build("resnet18")
    graph = DependencyGraph.build(model, x)
    pruned = apply_plan(model, build_plan(model, graph, 0.5))
    save_pruned(pruned, tmp_path)
    manifest = (tmp_path / "manifest.json").read_text()
    assert '"format": "prunekit-structured/1"' in manifest
    loaded = load_pruned(resnet18, tmp_path).eval()
    torch.testing.assert_close(loaded(x), pruned(x), rtol=0, atol=0)
    assert loaded[2].body[0][0].out_channels == pruned[2].body[0][0].out_channels == 4


@dataclass
class Output:
    logits: torch.Tensor
    extra: dict


class KeywordModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> Output:
        h = torch.relu(self.a(x)) * scale
        return Output(self.b(h), {"hidden": (h.sum(-1),)})


def test_keyword_inputs_and_dataclass_outputs() -> None:
    model = KeywordModel()
    inputs = {"x": torch.randn(2, 4), "scale": torch.tensor(2.0)}
    graph = DependencyGraph.build(model, inputs)
    assert [g.size for g in graph.groups] == [6]
    assert len(graph.trace.outputs) == 2


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.mid = nn.Embedding(10, 8), nn.Linear(8, 6)
        self.back = nn.Linear(6, 8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.embed.weight  # (10, 8), tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.back(torch.relu(self.mid(self.embed(tokens)))))


def test_copy_leaves_the_original_alone_keeps_ties_and_matches_inplace() -> None:
    torch.manual_seed(0)
    model, tokens = _Tied().eval(), torch.arange(10)[None]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = build_plan(model, DependencyGraph.build(model, tokens), 0.5)
    pruned = apply_plan(model, plan)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert pruned.head.weight is pruned.embed.weight and pruned.embed.weight is not model.embed.weight
    assert pruned.mid.out_features == 3 and pruned.back.in_features == 3
    inplace = apply_plan(copy.deepcopy(model), plan, inplace=True)
    assert all(torch.equal(inplace.state_dict()[k], v) for k, v in pruned.state_dict().items())
    with torch.no_grad():
        assert pruned(tokens).shape == (1, 10, 10)


class _FreesScratch(nn.Module):
    """Checks, inside its own forward, that a freed intermediate is really freed while being traced."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)
        self.freed: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = self.conv1(x) * 2
        watch = weakref.ref(scratch)
        y = self.conv2(torch.relu(scratch))
        del scratch
        self.freed.append(watch() is None)
        return y + self.conv2(torch.relu(self.conv1(x)))  # new tensors may reuse freed ids


def test_tracing_frees_activations_and_never_confuses_a_reused_id() -> None:
    model = _FreesScratch().eval()
    graph = DependencyGraph.build(model, torch.randn(1, 3, 10, 10))
    assert model.freed == [True]
    assert [g.size for g in graph.groups] == [8]  # conv1's channels; conv2's feed the (pinned) output


def test_pruning_in_place_frees_the_full_size_weights_at_once() -> None:
    """No reference cycle of the recording holds the model's weights until a garbage collection."""
    model, x = build("resnet18")
    watched = weakref.ref(model[0][0].weight)  # the stem conv's: half its filters go
    collecting = gc.isenabled()
    gc.disable()  # only reference counting may free it
    try:
        plan = build_plan(model, DependencyGraph.build(model, x), 0.5)
        assert watched() is not None
        apply_plan(model, plan, inplace=True)
        assert watched() is None and model[0][0].out_channels == 4
    finally:
        if collecting:
            gc.enable()


def test_garbage_collection_is_back_on_after_each_step_even_after_an_error() -> None:
    assert gc.isenabled()
    seen = []

    class Watches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(gc.isenabled())
            return self.conv(x)

    model = Watches()
    graph = DependencyGraph.build(model, torch.randn(1, 3, 2, 2))
    assert seen == [False] and gc.isenabled()  # paused while the trace's objects pile up
    with pytest.raises(ValueError, match="ratio must be in"):
        build_plan(model, graph, 2.0)
    assert gc.isenabled()
    gc.disable()  # a caller that turned it off keeps it off
    try:
        apply_plan(model, build_plan(model, graph, 0.5))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_counts_remove_exactly_that_many_channels_per_group() -> None:
    model, x = build("lenet5")
    graph = DependencyGraph.build(model, x)
    plan = build_plan(model, graph, 0.9, "l1", counts={0: 2})  # ratio is replaced by counts
    assert {i: len(c) for i, c in plan.removals.items()} == {0: 2}
    rounded = build_plan(model, graph, 0.0, "l1", counts={0: 3}, round_to=2)  # 6 - 3 kept → 4 (a multiple)
    assert len(rounded.removals[0]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"counts": {0: 6}}, r"counts\[0\] must be an int in \[0, 6\) \(keep at least 1\), got 6"),
        ({"counts": {0: -1}}, r"counts\[0\] must be an int in \[0, 6\)"),
        ({"counts": {0: 1.5}}, r"counts\[0\] must be an int"),
        ({"counts": {99: 1}}, "counts has group index 99; valid group indices are 0..3"),
        ({"counts": {0: 1}, "global_ranking": True}, "cannot be combined with global_ranking"),
    ],
)
def test_bad_counts_are_rejected(kwargs: dict, message: str) -> None:
    model, x = build("lenet5")
    with pytest.raises(ValueError, match=message):
        build_plan(model, DependencyGraph.build(model, x), 0.5, "l1", **kwargs)


def test_random_importance_draws_independently_for_each_group() -> None:
    model, x = build("resnet18")
    graph = DependencyGraph.build(model, x)
    plan = build_plan(model, graph, 0.5, "random")
    by_size: dict[int, set[tuple[int, ...]]] = {}
    for index, channels in plan.removals.items():
        by_size.setdefault(graph.groups[index].size, set()).add(channels)
    same_size = [
        choices for size, choices in by_size.items() if sum(g.size == size for g in graph.groups) > 1
    ]
    assert same_size and all(len(choices) > 1 for choices in same_size)  # not one draw repeated per group
    assert plan.removals == build_plan(model, graph, 0.5, "random").removals  # and reproducible


class Gain(nn.Module):
    """A user's layer: a per-channel gain and a width attribute no heuristic knows."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain, self.seen = nn.Parameter(torch.rand(channels) + 0.5), channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain.view(1, -1, 1, 1)


def test_a_registered_handler_names_its_layers_dims_and_updates_it() -> None:
    from prunekit.graph import ModuleHandler, handler_for, register_handler
    from prunekit.graph.modules import HANDLERS, _key

    model = nn.Sequential(nn.Conv2d(3, 6, 1), Gain(6), nn.Conv2d(6, 2, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    assert handler_for(model[1]) is None  # looked up (and remembered) before the registration
    handler = ModuleHandler(lambda m: {"gain": {0: "in"}}, lambda m: setattr(m, "seen", m.gain.numel()))
    register_handler(Gain, handler)
    try:
        assert handler_for(model[1]) is handler
        graph = DependencyGraph.build(model, x)
        (group,) = [g for g in graph.groups if any(m.tensor == "1.gain" for m in g.members)]
        pruned = apply_plan(model, PruningPlan(graph, {group.index: (1, 4)}))
        assert (pruned[1].gain.shape, pruned[1].seen, model[1].seen) == ((4,), 4, 6)
    finally:
        HANDLERS.unregister(_key(Gain))
    assert handler_for(model[1]) is None


def test_a_walk_is_shared_only_inside_walks_shared() -> None:
    from prunekit.graph.walk import named_modules, walks_shared

    model, other = nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Sequential(nn.Linear(2, 2))
    assert named_modules(model) == list(model.named_modules()) and named_modules(model) is not named_modules(
        model
    )
    with walks_shared():
        walk = named_modules(model)
        assert named_modules(model) is walk and named_modules(other) is not walk
        assert named_modules(model, remove_duplicate=False) is not walk
    assert named_modules(model) is not walk
