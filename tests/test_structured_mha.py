"""Attention in a small ViT: nn.MultiheadAttention stays whole (pinned), its MLP neighbours and the heads
of hand-written attention (Linear qkv + SDPA, timm's stored head count and size) are pruned exactly."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.plan import PruningPlan, apply_plan, build_plan
from structured_zoo import SelfAttention, ViT, build
from test_structured_exact import assert_exact, prune_zeroed, zero_producers


def test_mha_is_traced_unfused_and_pinned() -> None:
    model, x = build("vit")
    graph = DependencyGraph.build(model, x)
    names = {op.name for op in graph.trace.ops if op.module == "blocks.0.attn"}
    # the fast path is off: in_proj (E → 3E) as mm, heads via view/transpose, SDPA, out_proj as addmm
    assert "_native_multi_head_attention" not in names
    assert {"mm", "_scaled_dot_product_flash_attention_for_cpu", "addmm"} <= names
    assert [(g.size, g.modules()) for g in graph.groups] == [
        (32, ["blocks.0.fc1", "blocks.0.fc2"]),
        (4, ["blocks.1.attn.proj", "blocks.1.attn.qkv"]),
        (32, ["blocks.1.fc1", "blocks.1.fc2"]),
    ]  # the residual stream is pinned by the MHA's in_proj / out_proj


def test_hand_written_attention_groups_whole_heads_across_q_k_v() -> None:
    model, x = build("vit")
    heads = DependencyGraph.build(model, x).groups[1]
    qkv_rows = heads.channel_of[0]  # (48,) rows of qkv.weight: (q, k, v) × 4 heads × head_dim 4
    assert qkv_rows.tolist() == [r // 4 % 4 for r in range(48)]
    assert heads.channel_of[2].tolist() == [c // 4 for c in range(16)]  # proj.weight columns


def test_pruning_the_vit_keeps_mha_and_shrinks_heads_and_mlps() -> None:
    model, x = build("vit")
    graph = DependencyGraph.build(model, x)
    pruned = apply_plan(model, build_plan(model, graph, 0.5, "l2"))
    mha = pruned.blocks[0].attn
    assert (mha.embed_dim, mha.num_heads, mha.head_dim) == (16, 4, 4)
    assert torch.equal(mha.in_proj_weight, model.blocks[0].attn.in_proj_weight)
    assert torch.equal(mha.out_proj.weight, model.blocks[0].attn.out_proj.weight)
    assert (pruned.blocks[0].fc1.out_features, pruned.blocks[1].fc2.in_features) == (16, 16)
    assert pruned.blocks[1].attn.qkv.weight.shape == (24, 16)  # 2 of 4 heads left, head_dim 4
    assert pruned.blocks[1].attn.proj.weight.shape == (16, 8)
    pruned.train()
    pruned(x).square().mean().backward()
    assert all(p.grad is not None for p in pruned.parameters())
    assert pruned.eval()(x).shape == (2, 5)


def test_removing_two_heads_is_exact() -> None:
    model, x = ViT().eval(), torch.randn(2, 3, 16, 16)
    graph = DependencyGraph.build(model, x)
    zeroed = copy.deepcopy(model)
    zero_producers(zeroed, graph.groups[1], [0, 2])
    pruned = apply_plan(zeroed, PruningPlan(graph, {1: [0, 2]}))
    assert_exact(pruned, zeroed, x)
    kept = torch.cat([torch.arange(4, 8), torch.arange(12, 16)])  # heads 1 and 3 of q
    torch.testing.assert_close(pruned.blocks[1].attn.qkv.weight[:8], model.blocks[1].attn.qkv.weight[kept])
    with torch.no_grad():
        assert not torch.allclose(pruned(x), model(x))  # the removed heads mattered in the original


class UnbindAttention(SelfAttention):
    """The same attention with ``q, k, v = qkv.unbind(0)`` instead of ``qkv[0], qkv[1], qkv[2]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        heads = self.qkv.out_features // (3 * self.head_dim)
        q, k, v = self.qkv(x).view(b, n, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, scale=0.5)  # (B, H, N, D)
        return self.proj(out.transpose(1, 2).reshape(b, n, heads * self.head_dim))


def test_unbind_of_a_fused_qkv_keeps_whole_heads_and_is_exact() -> None:
    model, x = UnbindAttention(16, 4).eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x)
    (group,) = graph.groups
    assert group.channel_of[0].tolist() == [r // 4 % 4 for r in range(48)]
    zeroed = copy.deepcopy(model)
    zero_producers(zeroed, group, [1, 2])
    pruned = apply_plan(zeroed, PruningPlan(graph, {0: [1, 2]}))
    assert_exact(pruned, zeroed, x)
    assert pruned.qkv.weight.shape == (24, 16)


class TimmAttention(nn.Module):
    """timm's ViT attention: a fused ``qkv`` Linear reshaped with the head count and size it stores,
    q scaled by a stored ``scale`` (eager) or SDPA with its default scale."""

    def __init__(self, dim: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.fused = heads, dim // heads, fused
        self.scale = self.head_dim**-0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def _prune_every_other_channel(
    model: nn.Module, x: torch.Tensor, heads: str, tensor: str
) -> tuple[nn.Module, nn.Module]:
    """``(pruned, zeroed)``: channels 0, 2, … of the group holding ``tensor`` zeroed in a copy, pruned."""
    graph = DependencyGraph.build(model, x, heads=heads)
    (group,) = (g for g in graph.groups if any(m.tensor == tensor for m in g.members))
    zeroed = copy.deepcopy(model)
    half = list(range(0, group.size, 2))
    zero_producers(zeroed, group, half)
    return apply_plan(zeroed, PruningPlan(graph, {group.index: half})), zeroed


def _timm_block(fused: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.LayerNorm(32), TimmAttention(32, 4, fused), nn.Linear(32, 64), nn.GELU()).eval()


@pytest.mark.parametrize(
    ("fused", "heads", "kept"),
    [(False, "heads", (2, 8)), (True, "heads", (2, 8)), (False, "head_dim", (4, 4))],
    ids=["eager-heads", "sdpa-heads", "eager-head_dim"],
)
def test_timm_style_attention_prunes_and_updates_the_head_count_and_size_it_stores(
    fused: bool, heads: str, kept: tuple[int, int]
) -> None:
    model, x = _timm_block(fused), torch.randn(2, 5, 32)
    pruned, zeroed = _prune_every_other_channel(model, x, heads, "1.qkv.weight")
    assert (pruned[1].num_heads, pruned[1].head_dim) == kept
    assert pruned[1].scale == 8**-0.5  # the stored scale is kept: the kept dims compute as before
    assert (model[1].num_heads, model[1].head_dim) == (4, 8)  # the user's model is untouched
    assert_exact(pruned, zeroed, x)


def test_sdpa_default_scale_keeps_head_dims_whole() -> None:
    model, x = _timm_block(fused=True), torch.randn(2, 5, 32)
    graph = DependencyGraph.build(model, x, heads="head_dim")
    assert not any(m.tensor == "1.qkv.weight" for g in graph.groups for m in g.members)  # 1/√d would change


class FusedGroupedQueryAttention(nn.Module):
    """A fused ``qkv`` of unequal parts: 4 query heads, 2 kv heads (``num_key_value_heads``)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.num_key_value_heads, self.head_dim = 4, 2, 8
        self.qkv, self.proj = nn.Linear(32, 64), nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        kv = self.num_key_value_heads * self.head_dim
        q, k, v = self.qkv(x).split([self.num_heads * self.head_dim, kv, kv], -1)
        q = q.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (t.view(b, n, self.num_key_value_heads, self.head_dim).transpose(1, 2) for t in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, scale=0.25)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


def test_a_fused_qkv_with_fewer_kv_heads_is_not_read_as_equal_thirds() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(FusedGroupedQueryAttention(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    x = torch.randn(2, 5, 32)
    graph = DependencyGraph.build(model, x)
    (group,) = (g for g in graph.groups if any(m.tensor == "1.weight" and m.role == "out" for m in g.members))
    zeroed = copy.deepcopy(model)
    zero_producers(zeroed, group, [0, 1])
    pruned = apply_plan(zeroed, PruningPlan(graph, {group.index: [0, 1]}))  # the attention's stored
    assert (pruned[0].num_heads, pruned[0].num_key_value_heads) == (4, 2)  # counts stay as they were
    assert_exact(pruned, zeroed, x)


class OneHead(nn.Module):
    """What a pruned attention looks like with one head left: ``view(b, n, -1, head_dim)`` gives
    ``(b, n, 1, 8)``."""

    def __init__(self) -> None:
        super().__init__()
        self.head_dim = 8
        self.q, self.k, self.v, self.o = (
            nn.Linear(16, 8),
            nn.Linear(16, 8),
            nn.Linear(16, 8),
            nn.Linear(8, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, -1, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        return self.o(F.scaled_dot_product_attention(q, k, v, scale=0.3).transpose(1, 2).reshape(b, n, -1))


def test_the_last_head_is_one_channel_in_heads_mode() -> None:
    model, x = OneHead().eval(), torch.randn(2, 5, 16)
    graph = DependencyGraph.build(model, x, heads="heads")
    attention = [g.size for g in graph.groups if {"q", "k", "v"} & set(g.modules())]
    assert attention and set(attention) == {1}  # before: its 8 dims, and pruning them broke the view
    pruned, zeroed, _ = prune_zeroed(model, graph, list(graph.groups), torch.Generator().manual_seed(0))
    assert_exact(pruned, zeroed, x)


class MetaLlamaAttention(nn.Module):
    """Meta's reference Llama attention: ``wq``/``wk``/``wv``/``wo``, head counts stored as
    ``n_local_heads``/``n_local_kv_heads``/``n_rep`` and used in views and ``repeat_kv``."""

    def __init__(self, dim: int = 32, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.n_local_heads, self.n_local_kv_heads = heads, kv_heads
        self.n_rep, self.head_dim = heads // kv_heads, dim // heads
        self.wq, self.wo = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.wk, self.wv = (nn.Linear(dim, kv_heads * self.head_dim, bias=False) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.wq(x).view(b, n, self.n_local_heads, self.head_dim)
        k, v = (p(x).view(b, n, self.n_local_kv_heads, self.head_dim) for p in (self.wk, self.wv))
        k, v = (
            t[:, :, :, None].expand(b, n, self.n_local_kv_heads, self.n_rep, self.head_dim) for t in (k, v)
        )
        k, v = (t.reshape(b, n, self.n_local_heads, self.head_dim) for t in (k, v))
        y = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, n, -1))


def test_meta_llama_attention_names_prune_whole_kv_groups_exactly() -> None:
    model, x = MetaLlamaAttention().eval(), torch.randn(2, 5, 32)
    graph = DependencyGraph.build(model, x)
    (group,) = [g for g in graph.groups if "wq" in g.modules()]
    assert group.size == 2  # a kv head with its 2 query heads
    pruned, zeroed, _ = prune_zeroed(model, graph, [group], torch.Generator().manual_seed(0))
    assert (pruned.n_local_heads, pruned.n_local_kv_heads, pruned.n_rep) == (2, 1, 2)
    assert_exact(pruned, zeroed, x)


class PairRotaryAttention(nn.Module):
    """llama2.c's rotary embedding: (…, D) as (…, D/2, 2) pairs, ``unbind`` into real and imaginary
    parts, rotated, ``stack``-ed back and flattened; or, with ``complex_numbers``, Meta Llama's: the
    pairs viewed as complex numbers, multiplied by unit ones, viewed as real again."""

    def __init__(self, complex_numbers: bool, dim: int = 32, heads: int = 4, length: int = 5) -> None:
        super().__init__()
        self.complex_numbers, self.num_heads, self.head_dim = complex_numbers, heads, dim // heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(dim, dim) for _ in range(4))
        angles = torch.outer(torch.arange(length).float(), 0.5 ** torch.arange(self.head_dim // 2).float())
        self.register_buffer("cos", angles.cos()[None, :, None], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None], persistent=False)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, H, D)
        if self.complex_numbers:
            pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
            return torch.view_as_real(pairs * torch.complex(self.cos, self.sin)).flatten(3)
        re, im = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
        return torch.stack([re * self.cos - im * self.sin, re * self.sin + im * self.cos], -1).flatten(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (
            p(x).view(b, n, self.num_heads, self.head_dim) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k, v = (t.transpose(1, 2) for t in (self.rotate(q), self.rotate(k), v))
        return self.o_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("complex_numbers", [False, True], ids=["unbind_stack", "view_as_complex"])
def test_rotary_on_pairs_keeps_heads_prunable(complex_numbers: bool) -> None:
    model, x = PairRotaryAttention(complex_numbers).eval(), torch.randn(2, 5, 32)
    (group,) = [g for g in DependencyGraph.build(model, x).groups if "q_proj" in g.modules()]
    assert group.size == 4  # heads (before: the rotary pinned every head, or was refused)
    pruned, zeroed, removals = prune_zeroed(
        model, DependencyGraph.build(model, x), [group], torch.Generator()
    )
    assert pruned.num_heads == 4 - len(removals[group.index])
    assert_exact(pruned, zeroed, x)


class HeadCountOnly(nn.Module):
    """vit-pytorch's attention: a fused ``to_qkv``, chunked, split into ``self.heads`` (the head size is
    left to ``-1``), a stored ``scale``; no attribute holds the head size."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_qkv, self.to_out = (
            nn.Linear(dim, 3 * heads * dim_head, bias=False),
            nn.Linear(heads * dim_head, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(x).chunk(3, dim=-1))
        out = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize(("heads", "kept"), [("heads", 2), ("head_dim", 4)])
def test_a_module_storing_only_its_head_count_gets_the_count_its_pruned_heads_need(
    heads: str, kept: int
) -> None:
    torch.manual_seed(0)
    model, x = (
        nn.Sequential(HeadCountOnly(16, 4, 8), nn.GELU(), nn.Linear(16, 4)).eval(),
        torch.randn(2, 5, 16),
    )
    pruned, zeroed = _prune_every_other_channel(model, x, heads, "0.to_qkv.weight")
    assert pruned[0].heads == kept and model[0].heads == 4
    assert pruned[0].to_qkv.out_features == 48
    assert_exact(pruned, zeroed, x)
