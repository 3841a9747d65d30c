"""Channel rules for stack, advanced indexing, index_select, roll and the channel / pixel shuffles: the
channels they carry prune exactly, the dims they pick positions along or create are kept whole."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.plan import PruningPlan, apply_plan
from test_structured_exact import assert_exact, prune_zeroed

Op = Callable[[torch.Tensor], torch.Tensor]


class Through(nn.Module):
    """``a`` → ``op`` → ``b``: whether ``a``'s channels may go depends on ``op``."""

    def __init__(self, a: nn.Module, op: Op, b: nn.Module) -> None:
        super().__init__()
        self.a, self.op, self.b = a, op, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.op(self.a(x)))


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    """GPT-J's rotary helper: pairs along the last dim become ``(-x2, x1)``."""
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


GRID = torch.rand(2, 3, 3, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1  # a spatial transformer's
POSITIONS = torch.tensor([4, 1])  # one position per batch row (CLIP's pooled token, GPT-2's last token)
MASK = torch.tensor([[True, False, True, True, False], [False, True, False, False, False]])


def _sizes_of_a(model: nn.Module, x: torch.Tensor) -> list[int]:
    return [g.size for g in DependencyGraph.build(model, x).groups if "a" in g.modules()]


def _assert_a_prunes_exactly(op: Op) -> None:
    """Linear(6, 8) → ``op`` → Linear(8, 3) on (2, 5, 6): the 8 channels form one group, and pruning
    zeroed channels of it leaves the output unchanged."""
    model, x = Through(nn.Linear(6, 8), op, nn.Linear(8, 3)).eval(), torch.randn(2, 5, 6)
    graph = DependencyGraph.build(model, x)
    assert _sizes_of_a(model, x) == [8]
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)


@pytest.mark.parametrize(
    "a, op, b, x, size",
    [
        (nn.Conv1d(3, 6, 1), rotate_every_two, nn.Conv1d(6, 4, 1), (2, 3, 8), 6),
        (nn.Linear(4, 8), lambda h: h[torch.arange(2), POSITIONS], nn.Linear(8, 5), (2, 5, 4), 8),
        (nn.Conv1d(3, 8, 1), lambda h: h[torch.arange(2), :, POSITIONS], nn.Linear(8, 5), (2, 3, 5), 8),
        (
            nn.Conv2d(3, 8, 1),
            lambda h: h.transpose(0, 1)[:, torch.arange(2), :, POSITIONS],
            nn.Conv1d(8, 4, 1),
            (2, 3, 3, 5),
            8,
        ),
        (nn.Conv1d(3, 8, 1), lambda h: h[..., POSITIONS], nn.Conv1d(8, 4, 1), (2, 3, 5), 8),
        (nn.Linear(4, 8), lambda h: h[:, torch.tensor([[0, 1], [2, 3]])], nn.Linear(8, 5), (2, 5, 4), 8),
        (nn.Linear(4, 8), lambda h: h[MASK], nn.Linear(8, 5), (2, 5, 4), 8),
        (nn.Conv1d(3, 8, 1), lambda h: h.index_select(-1, POSITIONS), nn.Conv1d(8, 4, 1), (2, 3, 5), 8),
        (nn.Conv2d(3, 8, 3, padding=1), lambda h: h.roll(1, -1), nn.Conv2d(8, 4, 1), (2, 3, 5, 5), 8),
        (
            nn.Conv2d(3, 8, 3, padding=1),
            lambda h: h.roll((1, 2), (2, 3)),
            nn.Conv2d(8, 4, 1),
            (2, 3, 5, 5),
            8,
        ),
        (nn.Conv2d(3, 8, 1), nn.ChannelShuffle(2), nn.Conv2d(8, 4, 1), (2, 3, 4, 4), 4),
        (
            nn.Conv2d(3, 12, 1),
            lambda h: torch.native_channel_shuffle(h, 3),
            nn.Conv2d(12, 4, 1),
            (2, 3, 4, 4),
            4,
        ),
        (nn.Conv2d(3, 8, 1), nn.PixelShuffle(2), nn.Conv2d(2, 4, 1), (2, 3, 4, 4), 2),
        (nn.Conv2d(3, 2, 1), nn.PixelUnshuffle(2), nn.Conv2d(8, 4, 1), (2, 3, 4, 4), 2),
        (  # Funnel's mask: a new tensor borrows only the dtype and device
            nn.Linear(4, 8),
            lambda h: h * h.new_ones(h.shape[:-1]).unsqueeze(-1) * h.new_full((1,), 2.0) + h.new_zeros(1),
            nn.Linear(8, 5),
            (2, 5, 4),
            8,
        ),
        (
            nn.Conv2d(3, 8, 1),
            lambda h: F.unfold(h, 2, stride=2).transpose(1, 2),
            nn.Linear(32, 5),
            (2, 3, 4, 4),
            8,
        ),
        (nn.Conv1d(3, 32, 1), lambda h: F.fold(h, (4, 4), 2, stride=2), nn.Conv2d(8, 4, 1), (2, 3, 4), 8),
        (
            nn.Conv2d(3, 8, 1),
            lambda h: F.grid_sample(h, GRID, align_corners=False),
            nn.Conv2d(8, 4, 1),
            (2, 3, 5, 5),
            8,
        ),
        (
            nn.Conv3d(3, 8, 1),
            lambda h: F.pad(h, (1,) * 6, mode="reflect"),
            nn.Conv3d(8, 4, 1),
            (2, 3, 3, 3, 3),
            8,
        ),
        (
            nn.Conv3d(3, 8, 1),
            lambda h: F.pad(h, (1,) * 6, mode="replicate"),
            nn.Conv3d(8, 4, 1),
            (2, 3, 3, 3, 3),
            8,
        ),
        (
            nn.Conv3d(3, 8, 1),
            lambda h: F.interpolate(h, scale_factor=2, mode="trilinear"),
            nn.Conv3d(8, 4, 1),
            (2, 3, 3, 3, 3),
            8,
        ),
        (
            nn.Conv2d(3, 8, 1),
            lambda h: F.interpolate(h, size=(3, 3), mode="bilinear", antialias=True),
            nn.Conv2d(8, 4, 1),
            (2, 3, 6, 6),
            8,
        ),
        (nn.Linear(4, 8), lambda h: h * (~(h > 0)).float(), nn.Linear(8, 5), (2, 5, 4), 8),
    ],
    ids=[
        "gptj_rotary_stack",
        "index_pooled_token",
        "index_not_adjacent",
        "index_not_adjacent_goes_first",
        "index_last_dim",
        "index_2d_positions",
        "index_bool_mask",
        "index_select",
        "roll",
        "roll_two_dims",
        "channel_shuffle",
        "native_channel_shuffle",
        "pixel_shuffle",
        "pixel_unshuffle",
        "new_ones_zeros_full",
        "unfold_patches",
        "fold_patches",
        "grid_sample",
        "reflection_pad3d",
        "replication_pad3d",
        "trilinear",
        "bilinear_antialias",
        "bitwise_not",
    ],
)
def test_channels_carried_through_the_op_prune_exactly(
    a: nn.Module, op: Op, b: nn.Module, x: tuple[int, ...], size: int
) -> None:
    model, inputs = Through(a, op, b).eval(), torch.randn(x)
    graph = DependencyGraph.build(model, inputs)
    (group,) = [g for g in graph.groups if "a" in g.modules()]
    assert group.size == size and "b" in group.modules()
    pruned, zeroed, removals = prune_zeroed(model, graph, [group], torch.Generator().manual_seed(0))
    assert removals[group.index] and sum(p.numel() for p in pruned.a.parameters()) < sum(
        p.numel() for p in model.a.parameters()
    )
    assert_exact(pruned, zeroed, inputs)


@pytest.mark.parametrize(
    "op, width",
    [
        (lambda h: h[:, torch.tensor([0, 3, 5])], 3),
        (lambda h: h[torch.arange(2), torch.tensor([0, 3])].unsqueeze(-1), 1),
        (lambda h: h[:, torch.arange(8) % 3 == 0], 3),
        (lambda h: h.index_select(1, torch.tensor([0, 3, 5])), 3),
        (lambda h: h.roll(1, -1), 8),
        (lambda h: h.roll(3), 8),
    ],
    ids=["index", "index_with_batch", "index_bool_mask", "index_select", "roll", "roll_flattened"],
)
def test_positions_picked_or_rolled_along_the_channel_dim_keep_it_whole(op: Op, width: int) -> None:
    model = Through(nn.Linear(4, 8), op, nn.Linear(width, 5)).eval()
    assert _sizes_of_a(model, torch.randn(2, 4)) == []


class Branches(nn.Module):
    """Two branches stacked along ``dim`` and summed over it (users stacking branch outputs)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim, self.a, self.c, self.b = dim, nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.stack((self.a(x), self.c(x).relu()), dim=self.dim).sum(self.dim))


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2, -3])
def test_stacked_branches_lose_the_same_channels(dim: int) -> None:
    model, x = Branches(dim).eval(), torch.randn(2, 4)
    graph = DependencyGraph.build(model, x)
    (group,) = graph.groups
    assert group.size == 8 and group.modules() == ["a", "b", "c"]
    pruned, zeroed, _ = prune_zeroed(model, graph, [group], torch.Generator().manual_seed(0))
    assert pruned.a.out_features == pruned.c.out_features == pruned.b.in_features < 8
    assert_exact(pruned, zeroed, x)


class MixStacked(nn.Module):
    """Stacks two branches on a new last dim and mixes along it with a Linear (no bias: a zeroed
    channel must stay zero for the exactness check)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.c, self.mix, self.b = (
            nn.Linear(4, 8),
            nn.Linear(4, 8),
            nn.Linear(2, 3, bias=False),
            nn.Linear(24, 5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.mix(torch.stack((self.a(x), self.c(x)), dim=-1)).flatten(1))


def test_the_new_stacked_dim_holds_no_channels() -> None:
    model, x = MixStacked().eval(), torch.randn(2, 4)
    graph = DependencyGraph.build(model, x)
    assert not any(m.tensor == "mix.weight" and m.dim == 1 for g in graph.groups for m in g.members)
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert pruned.mix.in_features == 2 and pruned.a.out_features < 8
    assert_exact(pruned, zeroed, x)


def test_adaptive_avg_pool1d_over_a_transposed_sequence_keeps_its_channels_prunable() -> None:
    # Swin's pooler: the pooled (B, C, 1) output is restrided in place (as_strided_, sizes and
    # multi-element strides unchanged), which carries the channels through
    _assert_a_prunes_exactly(lambda y: nn.AdaptiveAvgPool1d(1)(y.transpose(1, 2)).flatten(1))


def test_as_strided_that_reorders_elements_keeps_the_channels_whole() -> None:
    model = Through(nn.Linear(6, 8), lambda y: y.as_strided((2, 8), (1, 2)), nn.Linear(8, 3))  # a transpose
    assert _sizes_of_a(model.eval(), torch.randn(8, 6)) == []


@pytest.mark.parametrize(
    "op",
    [
        lambda y: F.normalize(y, dim=-1),  # divides by the norm expanded to y's shape
        lambda y: y * y.sum(-1, keepdim=True).sigmoid().expand_as(y),  # sum: zeroed channels add nothing
        lambda y: F.glu(torch.cat([y, y], -1), -1),
        lambda y: torch.log1p(y.abs()).round(),
    ],
    ids=["normalize", "expand_as_gate", "glu", "log1p_round"],
)
def test_broadcasting_expands_glu_and_more_elementwise_ops_carry_channels(op: Op) -> None:
    _assert_a_prunes_exactly(op)


def test_torch_rmsnorm_follows_its_channels() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.RMSNorm(8), nn.Linear(8, 3)).eval()
    graph = DependencyGraph.build(model, torch.randn(2, 6))
    pruned = apply_plan(model, PruningPlan(graph, {graph.groups[0].index: [0, 1, 2]}))
    assert pruned[1].normalized_shape == (5,) and pruned(torch.randn(2, 6)).shape == (2, 3)


class HeadsAttention(nn.Module):
    """4 heads of 8 written with einsum (``einsum=True``) or as multi-query SDPA (one k/v head)."""

    def __init__(self, einsum: bool) -> None:
        super().__init__()
        self.einsum, self.head_dim = einsum, 8
        self.q, self.o = nn.Linear(32, 32), nn.Linear(32, 32)
        self.k, self.v = (nn.Linear(32, 32 if einsum else 8) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, -1, self.head_dim) for p in (self.q, self.k, self.v))
        if self.einsum:
            weights = (torch.einsum("bihd,bjhd->bhij", q, k) * 8**-0.5).softmax(-1)
            out = torch.einsum("bhij,bjhd->bihd", weights, v)
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            k, v = k.expand_as(q), v.expand_as(q)
            out = F.scaled_dot_product_attention(q, k, v, scale=8**-0.5).transpose(1, 2)
        return self.o(out.reshape(b, n, -1))


@pytest.mark.parametrize("einsum", [True, False], ids=["einsum", "multi_query"])
def test_whole_heads_of_einsum_and_multi_query_attention_go(einsum: bool) -> None:
    torch.manual_seed(0)
    model, x = HeadsAttention(einsum).eval(), torch.randn(2, 7, 32)
    graph = DependencyGraph.build(model, x, heads="heads")
    (group,) = [g for g in graph.groups if "q" in g.modules()]
    assert group.size == 4  # heads, not head dims
    heads = [0, 2]
    reference = copy.deepcopy(model)  # the shared k/v head still feeds a zeroed q head: silence o instead
    with torch.no_grad():
        for h in heads:
            reference.o.weight[:, 8 * h : 8 * h + 8] = 0
    pruned = apply_plan(reference, PruningPlan(graph, {group.index: heads}))
    assert pruned.q.out_features == 16 and pruned.k.out_features == (16 if einsum else 8)
    assert_exact(pruned, reference, x)


def test_broadcast_copies_reaching_an_op_without_a_rule_are_kept_not_refused() -> None:
    # RoBERTa gathers from a token-type buffer expanded to the batch; here an FFT (no channel rule) of
    # zeros, so a zeroed channel stays zero
    def positions(y: torch.Tensor) -> torch.Tensor:
        return y + torch.fft.fft(torch.zeros(5).expand(2, 5), dim=1).real.unsqueeze(-1)

    _assert_a_prunes_exactly(positions)


@pytest.mark.parametrize(
    "op",
    [
        lambda y: y + y.flip(1),  # bidirectional: the sequence reversed
        lambda y: y.sort(1).values,
        lambda y: y.topk(3, dim=1).values.mean(1, keepdim=True) + y,
        lambda y: y.unfold(1, 2, 1).mean(-1),  # sliding windows over time
        lambda y: y.gather(1, torch.tensor([4, 0, 2]).view(1, 3, 1).expand(2, 3, y.shape[-1])),
        lambda y: torch.fft.rfft(y, dim=1).abs(),
        lambda y: (y @ y.transpose(1, 2)).tril() @ y,  # causal mixing over time
        lambda y: torch.zeros_like(y).scatter_add(
            1, torch.tensor([0, 2, 2, 4, 1])[None, :, None].expand_as(y), y
        ),
        lambda y: torch.cdist(y, y[:, :2]) @ y[:, :2],  # distances to two prototypes
    ],
    ids=["flip", "sort", "topk", "unfold", "gather", "rfft", "tril", "scatter_add", "cdist"],
)
def test_ops_moving_values_along_time_keep_channels_prunable(op: Op) -> None:
    _assert_a_prunes_exactly(op)


def _zero_channels(y: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """``y[..., channels] = 0`` (``aten.index_put_`` along the channel dim)."""
    y = y.clone()
    y[..., channels] = 0.0
    return y


@pytest.mark.parametrize(
    "op",
    [
        lambda y: y.flip(-1),
        lambda y: y.sort(-1).values,
        lambda y: torch.fft.fft(torch.fft.fft(y, dim=-1), dim=-2).real,  # FNet's token mixing
        lambda y: y.tril(),
        lambda y: _zero_channels(y, torch.tensor([1, 3])),
    ],
    ids=["flip", "sort", "fft_fnet", "tril", "index_put"],
)
def test_ops_moving_values_along_channels_keep_them_whole(op: Op) -> None:
    model = Through(nn.Linear(6, 8), op, nn.Linear(8, 3)).eval()
    assert _sizes_of_a(model, torch.randn(2, 5, 6)) == []


class RoutedExperts(nn.Module):
    """A hand-written top-2 mixture of experts: tokens gathered by ``nonzero``, expert outputs added
    back with ``index_add_``."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.gate, self.out = nn.Linear(6, 8), nn.Linear(8, 3), nn.Linear(8, 2)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(8, 12), nn.SiLU(), nn.Linear(12, 8)) for _ in range(3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        weights, chosen = self.gate(x).softmax(-1).topk(2, dim=-1)
        y = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            token, slot = (chosen == i).nonzero(as_tuple=True)
            y.index_add_(0, token, self.run(expert, x[token]) * weights[token, slot, None])
        return self.out(y)

    def run(self, expert: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return expert(tokens)


def test_index_add_of_routed_experts_prunes_their_widths_exactly() -> None:
    model, x = RoutedExperts().eval(), torch.randn(10, 6)
    graph = DependencyGraph.build(model, x)
    experts = [g for g in graph.groups if all(m.startswith("experts.") for m in g.modules())]
    assert [g.size for g in experts] == [12, 12, 12]  # each expert's hidden width (before: refused)
    pruned, zeroed, _ = prune_zeroed(model, graph, experts, torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)


class SwitchExperts(RoutedExperts):
    """Switch-style dispatch: each expert's tokens selected by a mask and written back with
    ``out[mask] = expert(x[mask])`` (``aten.index_put_``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        chosen = self.gate(x).argmax(-1)
        out = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            mask = chosen == i
            out[mask] = expert(x[mask])
        return self.out(out)


def test_index_put_of_switch_experts_prunes_their_widths_exactly() -> None:
    """Before, the graph refused ``aten.index_put_``."""
    model, x = SwitchExperts().eval(), torch.randn(10, 6)
    graph = DependencyGraph.build(model, x)
    experts = [g for g in graph.groups if all(m.startswith("experts.") for m in g.modules())]
    assert [g.size for g in experts] == [12, 12, 12]
    (width,) = [g for g in graph.groups if "gate" in g.modules()]
    assert width.size == 8 and "experts.0.2" in width.modules()  # the written-back width joins x's
    pruned, zeroed, _ = prune_zeroed(model, graph, [*experts, width], torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)


class SplitRoutedExperts(RoutedExperts):
    """JetMoE's dispatch: tokens sorted by expert and split by counts read with ``.tolist()``, which the
    trace does not see."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        chosen = self.gate(x).argmax(-1)
        order = chosen.argsort()
        counts = torch.bincount(chosen, minlength=3).tolist()
        out = torch.cat([e(part) for e, part in zip(self.experts, x[order].split(counts, 0), strict=True)])
        return self.out(out[order.argsort()])


class StaleRoutedExperts(RoutedExperts):
    """Routed experts whose forward reshapes an expert's output by a hard-coded width."""

    def run(self, expert: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return expert(tokens).reshape(-1, 8)


@pytest.mark.parametrize("experts", [RoutedExperts, SplitRoutedExperts], ids=["nonzero", "tolist"])
def test_routing_changed_by_pruning_passes_the_check(experts: type[nn.Module]) -> None:
    """Pruning the width the gate reads changes which tokens go where, so tokens per expert differ
    from the trace's (also where the counts reach the forward through ``.tolist()``). Only dims that
    hold channels must match the plan; before, the check refused. Zeroed channels leave the routing
    as it was, and the prune is exact."""
    torch.manual_seed(0)
    model, x = experts().eval(), torch.randn(64, 6)
    graph = DependencyGraph.build(model, x)
    (width,) = [g for g in graph.groups if "gate" in g.modules()]
    pruned = apply_plan(model, PruningPlan(graph, {width.index: list(range(6))}))
    with torch.no_grad():
        routes = [m.gate(m.inp(x)).argmax(-1) for m in (model, pruned)]
    assert not torch.equal(*routes)  # the routing did change
    assert pruned(x).shape == (64, 2) and pruned.inp.out_features == 2
    pruned, zeroed, _ = prune_zeroed(model, graph, [width], torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)


def test_routed_experts_reshaping_by_a_stale_width_are_still_refused() -> None:
    torch.manual_seed(0)
    model, x = StaleRoutedExperts().eval(), torch.randn(64, 6)
    graph = DependencyGraph.build(model, x)
    (width,) = [g for g in graph.groups if "gate" in g.modules()]
    with pytest.raises(ValueError, match="the pruned model"):
        apply_plan(model, PruningPlan(graph, {width.index: list(range(6))}))


class LengthFromWidth(nn.Module):
    """Returns rows of a table as many as its hidden width: a length (no channel) that pruning changes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 2)
        self.register_buffer("table", torch.randn(16, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.fc1(x))
        return self.fc2(hidden), self.table[: hidden.shape[1]]


def test_a_length_changed_by_pruning_is_refused_where_it_reaches_the_outputs() -> None:
    """Dims that hold no channel may differ inside the forward (routing), not in the outputs."""
    model, x = LengthFromWidth().eval(), torch.randn(5, 6)
    graph = DependencyGraph.build(model, x)
    (hidden,) = graph.groups
    with pytest.raises(ValueError, match=r"outputs have shapes \[\(5, 2\), \(4, 3\)\]"):
        apply_plan(model, PruningPlan(graph, {hidden.index: [0, 1, 2, 3]}))


@pytest.mark.parametrize(
    ("groups", "cin", "cout"),
    [(2, 4, 8), (2, 8, 4), (4, 4, 8), (4, 4, 4)],
    ids=["2g", "2g-narrow", "dw-x2", "dw"],
)
def test_grouped_transposed_convs_prune_exactly_keeping_groups_equal(
    groups: int, cin: int, cout: int
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, cin, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(cin, cout, 2, stride=2, groups=groups),
        nn.ReLU(),
        nn.Conv2d(cout, 2, 1),
    ).eval()
    x = torch.randn(1, 3, 6, 6)
    graph = DependencyGraph.build(model, x)
    assert sum(g.size for g in graph.groups) == (cin if cin == groups else cin // groups + cout // groups)
    for seed in range(4):
        pruned, zeroed, _ = prune_zeroed(
            model, graph, list(graph.groups), torch.Generator().manual_seed(seed)
        )
        assert_exact(pruned, zeroed, x)
        up = pruned[2]
        assert up.weight.shape[0] < cin and up.in_channels == up.weight.shape[0] == pruned[0].out_channels
        assert up.out_channels == up.weight.shape[1] * up.groups == pruned[4].in_channels
        assert up.groups == (up.in_channels if cin == groups else groups)


class GreyToRGB(nn.Module):
    """A grey image expanded to the three channels an RGB stem reads (a hard-coded 3, as usually)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x.expand(-1, 3, -1, -1)).relu())


class MapNextToFeatures(nn.Module):
    """A one-channel map broadcast to the feature width and concatenated beside the features."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.m, self.b = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(3, 1, 3, padding=1),
            nn.Conv2d(24, 4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.cat([self.a(x).relu(), self.m(x).sigmoid().expand(-1, 16, -1, -1)], 1))


@pytest.mark.parametrize(
    ("model", "x"),
    [(GreyToRGB(), torch.randn(2, 1, 6, 6)), (MapNextToFeatures(), torch.randn(2, 3, 6, 6))],
    ids=["grey-to-rgb", "map-beside-features"],
)
def test_broadcast_copies_no_weight_produces_are_kept(model: nn.Module, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = model.eval()
    graph = DependencyGraph.build(model, x)
    assert all(any(m.role == "out" for m in g.members) for g in graph.groups)  # every group can be silenced
    consumer = model.conv1 if isinstance(model, GreyToRGB) else model.b
    (group,) = graph.groups
    assert group.size == 8
    for seed in range(3):
        pruned, zeroed, _ = prune_zeroed(
            model, graph, list(graph.groups), torch.Generator().manual_seed(seed)
        )
        assert_exact(pruned, zeroed, x)
    pruned_consumer = pruned.conv1 if isinstance(model, GreyToRGB) else pruned.b
    kept_copies = 3 if isinstance(model, GreyToRGB) else 16 + pruned.a.out_channels
    assert pruned_consumer.in_channels == kept_copies <= consumer.in_channels
