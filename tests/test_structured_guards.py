"""Channels that cannot be removed on their own are kept: ops that mix values along a channel dim, kernel
dims of a bare weight, unused parameters, recurrent layers, outputs in plain objects."""

from __future__ import annotations

import ast
import re
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import DependencyGraph, ForwardError, PrunedModelMismatchError
from prunekit.plan import PruningPlan, apply_plan, build_plan
from test_structured_exact import assert_exact, exact_groups, prune_zeroed


class Mixer(nn.Module):
    """conv_a → ``mix`` → conv_b: ``mix`` decides whether conv_a's channels may go."""

    def __init__(self, mix) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.a, self.b, self.mix = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.mix(self.a(x)))


def _a_prunable(model: nn.Module, x: torch.Tensor) -> bool:
    return any("a" in g.modules() for g in DependencyGraph.build(model, x).groups)


@pytest.mark.parametrize(
    "mix",
    [
        lambda y: y.softmax(1),
        lambda y: y.log_softmax(1),
        lambda y: y.cumsum(1),
        lambda y: y * y.max(1, keepdim=True)[1],  # positions of the channel maximum
        lambda y: y * y.argmax(1, keepdim=True),
        lambda y: F.avg_pool1d(y.flatten(2).transpose(1, 2), 3, 1, 1).transpose(1, 2).view_as(y),
    ],
    ids=["softmax", "log_softmax", "cumsum", "max_indices", "argmax", "pool_over_channels"],
)
def test_ops_that_mix_values_along_the_channel_dim_pin_it(mix) -> None:  # type: ignore[no-untyped-def]
    model, x = Mixer(mix).eval(), torch.randn(2, 3, 6, 6)
    assert not _a_prunable(model, x)


@pytest.mark.parametrize(
    "mix",
    [
        nn.ReLU(),
        nn.MaxPool2d(3, 1, 1),
        lambda y: y * y.mean(1, keepdim=True),
        lambda y: y * torch.max(y, 1, keepdim=True)[0],  # CBAM: the maximum's value, its index unread
    ],
)
def test_channel_wise_ops_and_channel_statistics_stay_prunable(mix) -> None:  # type: ignore[no-untyped-def]
    model, x = Mixer(mix).eval(), torch.randn(2, 3, 6, 6)
    assert _a_prunable(model, x)


@pytest.mark.parametrize(
    "mix, exact",
    [
        (nn.ReLU(), True),
        (lambda y: y * y.sum(1, keepdim=True), True),  # zeroed channels add nothing to a sum or a norm
        (lambda y: y / y.norm(dim=1, keepdim=True), True),
        (lambda y: y * y.mean(1, keepdim=True), False),  # a mean divides by the count, which shrinks
        (lambda y: y - y.amax(1, keepdim=True), False),
        (nn.GroupNorm(2, 8), False),
        (
            lambda y: (
                y
                * (y.norm(dim=(2, 3), keepdim=True) / y.norm(dim=(2, 3), keepdim=True).mean(1, keepdim=True))
            ),
            False,
        ),
    ],
    ids=["relu", "sum", "norm", "mean", "amax", "group_norm", "grn"],
)
def test_groups_under_a_statistic_over_channels_are_marked_inexact(mix, exact: bool) -> None:  # type: ignore[no-untyped-def]
    """ConvNeXt-V2's GRN, CBAM's channel mean, GroupNorm: zeroed channels still count in the statistic,
    so removing them shifts the outputs; the group says so (``Group.exact``)."""
    model, x = Mixer(mix).eval(), torch.randn(2, 3, 6, 6)
    (group,) = [g for g in DependencyGraph.build(model, x).groups if "a" in g.modules()]
    assert group.exact is exact


class BareConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.head = nn.Conv2d(6, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.conv2d(x, self.w, padding=1).relu())


def test_a_bare_conv_weight_loses_filters_not_kernel_taps() -> None:
    model, x = BareConv().eval(), torch.randn(2, 3, 8, 8)
    graph = DependencyGraph.build(model, x)
    assert sorted(g.size for g in graph.groups) == [6]  # only the filters; kernel dims are pinned
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert pruned.w.shape[1:] == (3, 3, 3)
    assert_exact(pruned, zeroed, x)


def test_prelu_slopes_follow_their_channels() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(4), nn.Conv2d(4, 2, 1)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.01, 0.02, 0.9, 0.8]))
    x = torch.randn(2, 3, 6, 6)
    graph = DependencyGraph.build(model, x)
    (group,) = exact_groups(model, graph)
    assert {m.tensor for m in group.members} >= {"0.weight", "1.weight", "2.weight"}
    pruned, zeroed, removals = prune_zeroed(model, graph, [group], torch.Generator().manual_seed(1))
    kept = [c for c in range(4) if c not in removals[group.index]]
    assert pruned[1].weight.tolist() == pytest.approx([[0.01, 0.02, 0.9, 0.8][c] for c in kept])
    assert_exact(pruned, zeroed, x)


class WithAux(nn.Module):
    """An auxiliary head that runs only in training: the traced (eval) forward never reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.head, self.aux = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        f = self.stem(x).relu()
        return (self.head(f), self.aux(f)) if self.training else self.head(f)


def test_parameters_the_forward_never_reads_are_kept_whole_with_a_warning() -> None:
    model, x = WithAux(), torch.randn(2, 3, 6, 6)
    with pytest.warns(
        UserWarning, match=r"2 parameter\(s\) or buffer\(s\) were not used by the traced forward \(aux"
    ) as caught:
        graph = DependencyGraph.build(model, x)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert not any("aux" in g.modules() for g in graph.groups)
    assert 0 < graph.seconds < 60
    pruned = apply_plan(model, build_plan(model, graph, 0.5))
    assert pruned.aux.weight.shape == (4, 8, 1, 1) and pruned.stem.weight.shape[0] == 4


class WithScripted(nn.Module):
    """A TorchScript block (scripted or traced) between Python layers."""

    def __init__(self, traced: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        block = nn.Sequential(nn.Conv2d(8, 8, 1, groups=2), nn.ReLU())
        self.block = torch.jit.trace(block, torch.randn(1, 8, 2, 2)) if traced else torch.jit.script(block)
        self.mid, self.out = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid(self.block(self.stem(x))).relu())


@pytest.mark.parametrize("traced", [False, True])
def test_torchscript_modules_are_kept_whole_with_a_warning_and_the_rest_prunes(traced: bool) -> None:
    model, x = WithScripted(traced), torch.randn(2, 3, 6, 6)
    with pytest.warns(UserWarning, match=r"1 module\(s\) \(block\) are TorchScript") as caught:
        graph = DependencyGraph.build(model, x)
    assert caught[0].filename == __file__
    assert [g.modules() for g in graph.groups] == [["mid", "out"]]  # the stem feeds the compiled block
    pruned = apply_plan(model, build_plan(model, graph, 0.5))
    assert pruned.mid.out_channels == 8 and pruned.stem.out_channels == 8
    assert torch.equal(pruned.block.state_dict()["0.weight"], model.block.state_dict()["0.weight"])
    assert pruned(x).shape == model(x).shape


class UnderscoreConv(nn.Module):
    """``torch._convolution``, the op TorchScript traces record for a conv, called directly."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a
        y = torch._convolution(
            x, a.weight, a.bias, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, *[False, False, True, True]
        )
        return self.b(y.relu())


def test_underscore_convolution_couples_like_a_conv_and_prunes_exactly() -> None:
    model, x = UnderscoreConv().eval(), torch.randn(2, 3, 5, 5)
    graph = DependencyGraph.build(model, x)
    (group,) = graph.groups
    assert {(m.tensor, m.dim) for m in group.members} == {("a.weight", 0), ("a.bias", 0), ("b.weight", 1)}
    pruned, zeroed, _ = prune_zeroed(model, graph, [group], torch.Generator().manual_seed(1))
    assert pruned.a.out_channels < 6
    assert_exact(pruned, zeroed, x)


@pytest.mark.parametrize("cell", [nn.GRU, nn.RNN, nn.LSTM])
def test_recurrent_layers_are_kept_whole_and_the_rest_prunes(cell: type[nn.RNNBase]) -> None:
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.rnn, self.mid, self.out = (
                nn.Linear(5, 8),
                cell(8, 8, batch_first=True),
                nn.Linear(8, 16),
                nn.Linear(16, 3),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.mid(self.rnn(self.inp(x))[0]).relu())

    model, x = Tagger().eval(), torch.randn(2, 7, 5)
    graph = DependencyGraph.build(model, x)
    assert [g.modules() for g in graph.groups] == [["mid", "out"]]
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert pruned.rnn.input_size == 8 and pruned.mid.out_features < 16
    assert_exact(pruned, zeroed, x)


class Namespaced(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> types.SimpleNamespace:
        return types.SimpleNamespace(logits=self.head(self.body(x).relu()))


def test_outputs_held_by_a_plain_object_keep_their_channels() -> None:
    model, x = Namespaced().eval(), torch.randn(2, 3, 6, 6)
    graph = DependencyGraph.build(model, x)
    pruned = apply_plan(model, build_plan(model, graph, 0.5))
    assert pruned(x).logits.shape == (2, 4, 6, 6) and pruned.body.out_channels == 4


def test_a_model_returning_no_tensor_is_refused_before_anything_is_pruned() -> None:
    class Silent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> None:
            self.fc(x)

    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match="output \\(a NoneType\\) holds no tensor"),
    ):
        DependencyGraph.build(Silent(), torch.randn(2, 4))


def test_unfused_attention_is_refused_with_the_reason_and_the_fix() -> None:
    class Queries(nn.Module):  # 3-D q/k/v: SDPA runs its math path (no fused op in the trace)
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.queries, self.out = (
                nn.Linear(6, 16),
                nn.Parameter(torch.randn(4, 16)),
                nn.Linear(16, 3),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mem = self.inp(x)
            return self.out(F.scaled_dot_product_attention(self.queries.expand(len(x), -1, -1), mem, mem))

    with pytest.raises(ValueError, match=r"_safe_softmax.*math path.*\(batch, heads, seq, head_dim\)"):
        DependencyGraph.build(Queries(), torch.randn(2, 5, 6))


def test_sdpa_math_path_keeps_the_dim_its_default_scale_depends_on() -> None:
    class Attention3d(nn.Module):  # 3-D q/k/v: math path, scale 1/√16 baked into the trace
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.o(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x)))

    model, x = Attention3d().eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x)
    assert not any("q" in g.modules() or "k" in g.modules() for g in graph.groups)
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)


class HardCodedHeads(nn.Module):
    """Splits heads with a head count stored under a name no library uses: after whole heads go,
    ``view`` regroups the features."""

    def __init__(self) -> None:
        super().__init__()
        self.h, self.qkv, self.proj = 4, nn.Linear(16, 48), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v, scale=0.5).transpose(1, 2).reshape(b, n, -1))


def test_a_forward_that_regroups_heads_is_caught_with_the_model_untouched() -> None:
    model, x = HardCodedHeads().eval(), torch.randn(2, 5, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = DependencyGraph.build(model, x)
    plan = build_plan(model, graph, 0.5)
    with pytest.raises(
        ValueError,
        match=r"aten.view.default, gives shape \(2, 5, 3, 4, 2\), the plan predicts \(2, 5, 3, 2, 4\)",
    ):
        apply_plan(model, plan)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert apply_plan(model, plan, verify=False).qkv.out_features == 24  # the user's call, unchecked


def test_a_pruned_forward_that_fails_is_reported_at_prune_time() -> None:
    class FlattenWidth(nn.Module):  # the LeNet tutorial's x.view(-1, 16 * 5 * 5)
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 16, 5), nn.Linear(16 * 4 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).relu().view(-1, 16 * 4 * 4))

    model, x = FlattenWidth().eval(), torch.randn(2, 1, 8, 8)
    plan = build_plan(model, DependencyGraph.build(model, x), 0.5)
    went_wrong = (
        r"aten\.view\.default, gives shape \(1, 256\), the plan predicts \(2, 128\).*ignore=\['conv'\]"
    )
    with pytest.raises(ValueError, match=went_wrong + r".*then fails: RuntimeError: mat1 and mat2"):
        apply_plan(model, plan)  # where it went wrong: the flatten; then fc failed on its width
    batch_of_two = lambda self, x: self.fc(self.conv(x).relu().view(2, 16 * 4 * 4))  # noqa: E731
    model.forward = types.MethodType(batch_of_two, model)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=r"fails on the example inputs in the model's own forward \(Runtime"):
        apply_plan(model, plan)


class EagerAttention(nn.Module):
    """``softmax(q·kᵀ·scale)·v`` written out, 2 heads of 8; ``split`` is ``(-1, 8)`` (a stored head
    size: whole heads may go) or ``(2, -1)`` (a stored head count: head dims may go)."""

    def __init__(self, scale, split: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.scale, self.split = scale, split
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, *self.split).transpose(1, 2) for p in (self.q, self.k, self.v))
        weights = (q @ k.transpose(-2, -1) * self.scale(q)).softmax(-1)
        return self.o((weights @ v).transpose(1, 2).reshape(b, n, -1))


def test_eager_attention_loses_whole_heads_in_heads_mode() -> None:
    model, x = EagerAttention(lambda q: q.size(-1) ** -0.5, (-1, 8)).eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x, heads="heads")
    (group,) = [g for g in graph.groups if "q" in g.modules()]
    assert group.size == 2 and {"k", "v", "o"} <= set(group.modules())  # 2 heads, not 8 dims
    pruned, zeroed, removals = prune_zeroed(model, graph, [group], torch.Generator().manual_seed(0))
    assert pruned.v.out_features == 16 - 8 * len(removals[group.index])
    assert_exact(pruned, zeroed, x)


@pytest.mark.parametrize("batch", [1, 2])
def test_one_head_written_out_is_one_channel_in_heads_mode(batch: int) -> None:
    """``q @ kᵀ`` folds batch and heads into one dim (B·1); the size-1 head dim is the inner one, so
    heads mode keeps the head's dims together (PVT-v2's one-head stage; before: its 16 dims were
    channels, and heads mode pruned head dims)."""
    model, x = EagerAttention(lambda q: q.size(-1) ** -0.5, (-1, 16)).eval(), torch.randn(batch, 5, 16)
    assert not DependencyGraph.build(model, x, heads="heads").groups  # the one head cannot go


@pytest.mark.parametrize(
    "scale",
    [lambda q: q.size(-1) ** -0.5, lambda q: 1 / torch.sqrt(torch.tensor(float(q.size(-1))))],
    ids=["python_float", "tensor_from_size"],
)
def test_a_scale_computed_from_a_pruned_head_size_is_caught(scale) -> None:  # type: ignore[no-untyped-def]
    model, x = EagerAttention(scale, (2, -1)).eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x, heads="head_dim")
    (group,) = [g for g in graph.groups if "q" in g.modules()]
    assert group.size == 8 and "v" in group.modules()  # v's head size follows q's (one head_dim)
    changed = r"computes with \[(0\.5|4\.0)\] where the original used \[(0\.35|8\.0)"  # 1/√4 vs 1/√8
    with pytest.raises(ValueError, match=changed):
        apply_plan(model, build_plan(model, graph, 0.5))


def test_a_head_count_stored_is_caught_when_one_head_is_left() -> None:
    model, x = HardCodedHeads().eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x)
    (group,) = [g for g in graph.groups if "qkv" in g.modules()]
    with pytest.raises(
        ValueError, match=r"gives shape \(2, 5, 3, 4, 1\), the plan predicts \(2, 5, 3, 1, 4\)"
    ):
        apply_plan(model, PruningPlan(graph, {group.index: [0, 1, 2]}))  # a size-1 dim: checked too


def test_a_scale_from_a_head_size_pruned_to_one_is_caught() -> None:
    model, x = EagerAttention(lambda q: q.size(-1) ** -0.5, (2, -1)).eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x, heads="head_dim")
    (group,) = [g for g in graph.groups if "q" in g.modules()]
    # the ops after the size-1 head dim are matched by function: the scale is still compared
    with pytest.raises(ValueError, match=r"computes with \[1\.0\] where the original used \[0\.35"):
        apply_plan(model, PruningPlan(graph, {group.index: list(range(1, 8))}))


def test_the_fix_names_every_module_sharing_the_failing_forward_and_it_works() -> None:
    model, x = nn.Sequential(HardCodedHeads(), nn.GELU(), HardCodedHeads()).eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x)
    with pytest.raises(
        ValueError, match=r"module '0' \(HardCodedHeads\).*the model has 2 HardCodedHeads"
    ) as err:
        apply_plan(model, build_plan(model, graph, 0.5))
    suggested = re.search(r"ignore=(\[n for n.*?\]) keeps", str(err.value)).group(1)  # type: ignore[union-attr]
    ignore = eval(suggested, {"model": model})  # the expression the message suggests
    assert ignore == ["0", "2"]
    kept_whole = DependencyGraph.build(model, x, ignore=ignore)
    assert apply_plan(model, build_plan(model, kept_whole, 0.5))(x).shape == x.shape


def test_a_forward_that_fails_on_the_example_inputs_says_so_with_their_shapes() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    with pytest.raises(
        ForwardError, match=r"fails on the example inputs \(\(2, 3\) float32\): RuntimeError: "
    ) as err:
        DependencyGraph.build(model, torch.zeros(2, 3))  # token ids must be integers
    assert isinstance(err.value, ValueError) and isinstance(err.value.__cause__, RuntimeError)
    assert DependencyGraph.build(model, torch.zeros(2, 3, dtype=torch.int64)).groups  # the fix works


class SlicedQkv(nn.Module):
    """A fused ``qkv_proj`` sliced at hard-coded bounds; ``end`` below 24 leaves its tail unread."""

    def __init__(self, end: int = 24) -> None:
        super().__init__()
        self.qkv_proj, self.o_proj, self.end = nn.Linear(8, 24), nn.Linear(8, 4), end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        q, k, v = qkv[..., :8], qkv[..., 8:16], qkv[..., 16 : self.end]
        return self.o_proj(q * k + F.pad(v, (0, 24 - self.end)))


def test_slices_of_a_fused_qkv_proj_at_hard_coded_bounds_are_caught() -> None:
    """Slices that tile a ``qkv_proj`` pass channels through (Phi-3 computes its bounds from head counts);
    bounds the forward hard-codes then cut the wrong width, and the pruned-model check says so."""
    model, x = SlicedQkv().eval(), torch.randn(2, 8)
    graph = DependencyGraph.build(model, x)
    group = next(g for g in graph.groups if "qkv_proj" in g.modules())
    with pytest.raises(
        PrunedModelMismatchError,
        match=r"aten\.slice\.Tensor, gives shape \(2, 8\), the plan predicts \(2, 7\)",
    ):
        apply_plan(model, PruningPlan(graph, {group.index: [0]}))
    assert not any("qkv_proj" in g.modules() for g in DependencyGraph.build(SlicedQkv(20), x).groups)


class StoredSplit(nn.Module):
    """Res2Net-style ``torch.split(x, self.width)`` or YOLOv8's ``split((self.c, self.c))``: stored
    sizes, which pruning ``a`` makes stale."""

    def __init__(self, sizes: bool) -> None:
        super().__init__()
        self.a, self.b, self.c, self.sizes = (
            nn.Conv2d(3, 8, 1),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.Conv2d(8, 2, 1),
            sizes,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = self.a(x).split((4, 4) if self.sizes else 4, 1)
        return self.c(torch.cat([self.b(left), right], 1))


@pytest.mark.parametrize("sizes", [False, True], ids=["split_width", "split_with_sizes"])
def test_a_stale_split_size_names_the_layers_to_keep_and_keeping_them_works(sizes: bool) -> None:
    """The op where the pruned forward first went wrong (before it fails, or the one it failed in) is
    named, with the layers whose pruned channels reach it; ignoring those prunes the rest."""
    model, x = StoredSplit(sizes).eval(), torch.randn(1, 3, 6, 6)
    graph = DependencyGraph.build(model, x)
    where = (
        r"fails on the example inputs .*split_with_sizes" if sizes else r"aten\.split\.Tensor, gives shape"
    )
    with pytest.raises(PrunedModelMismatchError, match=where) as caught:
        apply_plan(model, build_plan(model, graph, 0.5))
    ignore = ast.literal_eval(re.search(r"whole with ignore=(\[[^\]]*\])", str(caught.value)).group(1))
    assert ignore == ["a"]
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, x, ignore=ignore), 0.5))
    assert pruned.b.out_channels == 2 and pruned.a.out_channels == 8


class LearnedTokens(nn.Module):
    """Perceiver-style learned queries and learned key/value slots: positions, not channels."""

    def __init__(self, eager: bool) -> None:
        super().__init__()
        self.latents, self.memory = nn.Parameter(torch.randn(6, 16)), nn.Parameter(torch.randn(1, 1, 5, 16))
        self.fc, self.head, self.eager = nn.Linear(16, 16), nn.Linear(16, 4), eager

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 1, L, 16)
        q = self.latents.expand(x.shape[0], 1, -1, -1)
        kv = torch.cat([x, self.memory.expand(x.shape[0], -1, -1, -1)], 2)
        if self.eager:
            out = (q @ kv.transpose(-2, -1) * 0.25).softmax(-1) @ kv
        else:
            out = F.scaled_dot_product_attention(q, kv, kv, scale=0.25)
        return self.head(self.fc(out[:, 0]).sum(1))


@pytest.mark.parametrize("eager", [False, True], ids=["sdpa", "eager"])
def test_learned_query_and_key_positions_are_not_channels(eager: bool) -> None:
    """A zeroed key still takes softmax weight and a zeroed query still averages v: removing one
    changes the output, so their token dims never prune (their feature dims meet the input's here)."""
    model = LearnedTokens(eager).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 1, 7, 16))
    assert [g.modules() for g in graph.groups] == [["fc", "head"]]


class ParallelBlock(nn.Module):
    """GPT-J-style parallel MLP and attention; the head count is stored as ``nh``, a name prunekit does
    not update. The MLP runs first, so its width reaching one channel makes the module's later ops
    decompose differently."""

    def __init__(self) -> None:
        super().__init__()
        self.nh, self.fc_in, self.fc_out = 4, nn.Linear(16, 8), nn.Linear(8, 16)
        self.q, self.k, self.v, self.o = (nn.Linear(16, 16) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        mlp = self.fc_out(F.gelu(self.fc_in(x)))
        q, k, v = (p(x).view(b, n, self.nh, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        attention = F.scaled_dot_product_attention(q, k, v, scale=0.5).transpose(1, 2).reshape(b, n, -1)
        return x + mlp + self.o(attention)


def test_a_stale_head_count_is_caught_after_another_dim_went_down_to_one() -> None:
    model, x = ParallelBlock().eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x)
    (ffn,) = [g for g in graph.groups if "fc_in" in g.modules()]
    (heads,) = [g for g in graph.groups if "q" in g.modules()]
    with pytest.raises(PrunedModelMismatchError, match=r"aten\.view\.default, gives shape \(2, 5, 4, 2\)"):
        apply_plan(model, PruningPlan(graph, {ffn.index: list(range(1, 8)), heads.index: [1, 2]}))


class ClosureBlock(nn.Module):
    """minGPT's block: ``self.mlpf`` is a lambda made in ``__init__`` over the MLP modules, which a
    deep copy keeps pointing at the original model's."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.head = nn.Linear(6, 8), nn.Linear(8, 3)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(8, 16), "c_proj": nn.Linear(16, 8)})
        m = self.mlp
        self.mlpf = lambda x: m.c_proj(torch.relu(m.c_fc(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        return self.head(x + self.mlpf(x))


def test_a_copy_whose_forward_reaches_the_original_weights_is_refused_and_inplace_prunes() -> None:
    """Before, the pruned copy passed the check and computed exactly what the unpruned model does."""
    torch.manual_seed(0)
    model, x = ClosureBlock().eval(), torch.randn(5, 6)
    graph = DependencyGraph.build(model, x)
    hidden = [g for g in graph.groups if g.size == 16]
    with pytest.raises(PrunedModelMismatchError, match=r"original model's 'mlp\.c_fc\.weight'.*inplace=True"):
        apply_plan(model, PruningPlan(graph, {hidden[0].index: list(range(8))}))
    assert model.mlp.c_fc.out_features == 16
    with torch.no_grad():
        model.mlp.c_fc.weight[:8] = 0
        model.mlp.c_fc.bias[:8] = 0
        expected = model(x)
    pruned = apply_plan(model, PruningPlan(graph, {hidden[0].index: list(range(8))}), inplace=True)
    assert pruned is model and model.mlp.c_fc.out_features == 8
    assert_exact(pruned, lambda _: expected, x)


class ShortcutIfWidthsMatch(nn.Module):
    """Adds the shortcut only where both widths agree: 16 and 15 here, so the trace has no add."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.conv, self.fc = nn.Conv2d(3, 16, 3, 1, 1), nn.Conv2d(16, 15, 3, 1, 1), nn.Linear(15, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.inp(x))
        y = F.relu(self.conv(x))
        if y.shape[1] == x.shape[1]:
            y = y + x
        return self.fc(y.mean((2, 3)))


def test_a_branch_taken_once_pruned_widths_agree_is_refused() -> None:
    """Pruning 16 → 8 and 15 → 8 makes the forward add a shortcut the trace never saw: before, the check
    passed and the outputs were those of another network (rel. error ~0.8)."""
    torch.manual_seed(0)
    model, x = ShortcutIfWidthsMatch().eval(), torch.randn(2, 3, 8, 8)
    graph = DependencyGraph.build(model, x)
    wide, narrow = sorted((g for g in graph.groups if g.size in (15, 16)), key=lambda g: -g.size)
    plan = PruningPlan(graph, {wide.index: list(range(8)), narrow.index: list(range(7))})
    with pytest.raises(PrunedModelMismatchError, match=r"another path .*aten\.add\.Tensor where the"):
        apply_plan(model, plan)
    assert apply_plan(model, PruningPlan(graph, {wide.index: list(range(8))})).conv.out_channels == 15
    assert graph.trace.shapes_only  # its runs put module state back: a difference is the branch
    with pytest.raises(PrunedModelMismatchError, match=r"another path .*aten\.add\.Tensor where the"):
        apply_plan(model, plan, inplace=True)  # before, in place, this passed with another network


class ShortcutIfWidthsMatchCounted(ShortcutIfWidthsMatch):
    """The same, counting its calls: a forward that changes module state is recorded for real."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls = getattr(self, "calls", 0) + 1
        return super().forward(x)


def test_a_path_change_in_place_after_a_real_recording_is_a_warning() -> None:
    torch.manual_seed(0)
    model, x = ShortcutIfWidthsMatchCounted().eval(), torch.randn(2, 3, 8, 8)
    graph = DependencyGraph.build(model, x)
    assert not graph.trace.shapes_only
    wide, narrow = sorted((g for g in graph.groups if g.size in (15, 16)), key=lambda g: -g.size)
    plan = PruningPlan(graph, {wide.index: list(range(8)), narrow.index: list(range(7))})
    with pytest.raises(PrunedModelMismatchError, match="another path"):
        apply_plan(model, plan)
    with pytest.warns(
        UserWarning,
        match=r"runs other ops than the traced original in the model's own forward: .*inplace=False",
    ) as caught:
        apply_plan(model, plan, inplace=True)
    assert caught[0].filename == __file__
