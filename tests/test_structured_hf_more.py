"""Structured pruning of more transformers families: DistilBERT, T5, BLOOM, Qwen2, StableLM attention, and the
FFN width under each family's config field (OPT, GPT-NeoX, GPT-J, BART, Phi-3, gated T5, DistilBERT)."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.graph.hf import attention_modules, load_pretrained
from prunekit.plan import PruningPlan, apply_plan, build_plan
from test_structured_hf import _unit_weights, _zero_producers

tf = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
TOKENS = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
SMALL = {"vocab_size": 50, "max_position_embeddings": 16, **TOKENS}
DECODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, **SMALL}


def _t5(cls: type | None = None, **extra: object) -> nn.Module:
    sizes = {"d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
    config = tf.T5Config(**sizes, relative_attention_num_buckets=8, vocab_size=50, decoder_start_token_id=0,
                         **TOKENS, **extra)  # fmt: skip
    return (cls or tf.T5EncoderModel)(config)


def _eager(model: nn.Module) -> nn.Module:
    model.set_attn_implementation("eager")  # T5 adds its position bias to the scores, not as an SDPA mask
    return model


MODELS: dict[str, Callable[[], nn.Module]] = {
    "distilbert": lambda: tf.DistilBertModel(
        tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **SMALL)
    ),
    "t5": _t5,
    "t5_eager": lambda: _eager(_t5()),
    "t5_gated": lambda: _t5(feed_forward_proj="gated-gelu"),
    "t5_encoder_decoder": lambda: _t5(tf.T5Model),
    "bloom": lambda: tf.BloomModel(tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **SMALL)),
    "qwen2": lambda: tf.Qwen2Model(tf.Qwen2Config(intermediate_size=64, num_key_value_heads=2, **DECODER)),
    "opt": lambda: tf.OPTModel(tf.OPTConfig(ffn_dim=64, word_embed_proj_dim=32, **DECODER)),
    "gpt_neox": lambda: tf.GPTNeoXModel(tf.GPTNeoXConfig(intermediate_size=64, **DECODER)),
    "gptj": lambda: tf.GPTJModel(tf.GPTJConfig(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=64,
                                               vocab_size=50, n_positions=16, **TOKENS)),
    "bart": lambda: tf.BartModel(tf.BartConfig(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, **SMALL)),
    "phi3": lambda: tf.Phi3Model(tf.Phi3Config(intermediate_size=64, num_key_value_heads=2, **DECODER)),
    "falcon_new": lambda: tf.FalconModel(tf.FalconConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
        new_decoder_architecture=True, **SMALL)),
    "qwen2_moe": lambda: tf.Qwen2MoeModel(tf.Qwen2MoeConfig(
        intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=64, num_experts=4,
        num_experts_per_tok=2, num_key_value_heads=2, **DECODER)),
    "gpt_neo": lambda: tf.GPTNeoModel(tf.GPTNeoConfig(  # masks its scores with where(causal, scores, min)
        hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=4,
        intermediate_size=64, **SMALL)),
    "stablelm": lambda: tf.StableLmModel(tf.StableLmConfig(intermediate_size=64, num_key_value_heads=2,
                                                           **DECODER)),
}  # fmt: skip


ENCODERS = ("distilbert", "t5", "t5_eager", "t5_gated")


def _model(name: str) -> nn.Module:
    """The tiny model ``name`` with unit-scale weights (init std 0.02 hides a wrong scale or bias)."""
    torch.manual_seed(0)
    return _unit_weights(MODELS[name]().eval())


def _inputs(name: str) -> dict[str, torch.Tensor | bool]:
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    inputs: dict[str, torch.Tensor | bool] = {"input_ids": ids}
    if name == "t5_encoder_decoder":
        inputs["decoder_input_ids"] = ids[:, :5]
    if name not in ENCODERS:
        inputs["use_cache"] = False
    return inputs


def _output(model: nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _prune(name: str, heads: str) -> tuple[nn.Module, dict]:
    model, inputs = _model(name), _inputs(name)
    plan = build_plan(model, DependencyGraph.build(model, inputs, heads=heads), 0.5)
    return apply_plan(model, plan), inputs


@pytest.mark.parametrize("heads", ["heads", "head_dim"])
@pytest.mark.parametrize(
    "name",
    ["distilbert", "t5", "t5_eager", "t5_encoder_decoder", "bloom", "qwen2", "phi3", "falcon_new", "gpt_neo"],
)
def test_pruning_zeroed_channels_is_exact(name: str, heads: str) -> None:
    model, inputs = _model(name), _inputs(name)
    graph = DependencyGraph.build(model, inputs, heads=heads)
    groups = [g for g in graph.groups if g.exact]  # not under LayerNorm / RMSNorm statistics
    generator = torch.Generator().manual_seed(0)
    removals = {g.index: torch.randperm(g.size, generator=generator)[: g.size // 2].tolist() for g in groups}
    zeroed = copy.deepcopy(model)
    for group in groups:
        _zero_producers(zeroed, group, removals[group.index])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers pruned unequally: which reload works is tested below
        pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    expected, actual = _output(zeroed, inputs), _output(pruned, inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())


QWEN2_FIELDS = {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "intermediate_size": 32}


@pytest.mark.parametrize(
    "name, heads, fields",
    [
        ("t5", "heads", {"num_heads": 2, "d_kv": 8, "d_ff": 32, "d_model": 32}),
        ("t5", "head_dim", {"num_heads": 4, "d_kv": 4, "d_ff": 32}),
        ("t5_encoder_decoder", "head_dim", {"num_heads": 4, "d_kv": 4, "d_ff": 32}),
        ("qwen2", "heads", QWEN2_FIELDS),  # head_dim is not hidden_size // num_attention_heads any more
        ("phi3", "heads", {"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 32}),
    ],
)
def test_config_describes_pruned_attention_for_from_pretrained(
    tmp_path: Path, name: str, heads: str, fields: dict
) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*load_pretrained")
        pruned, inputs = _prune(name, heads)
    assert {k: getattr(pruned.config, k) for k in fields} == fields
    pruned.save_pretrained(tmp_path)
    loaded = type(pruned).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_phi3_fused_qkv_proj_is_sliced_by_heads() -> None:
    """Phi-3 slices q, k and v off one ``qkv_proj`` at bounds it computes from its head counts: the
    slices pass channels through, so whole kv-head groups (2 q heads, 1 k and 1 v head) go."""
    model, inputs = _model("phi3"), _inputs("phi3")
    graph = DependencyGraph.build(model, inputs)
    attention = [g for g in graph.groups if "layers.0.self_attn.o_proj" in g.modules()]
    assert len(attention) == 1 and attention[0].size == 2  # 2 kv heads: q 4 × 8, k 2 × 8, v 2 × 8
    qkv = next(k for k, m in enumerate(attention[0].members) if m.tensor.endswith("qkv_proj.weight"))
    assert attention[0].indices(qkv, [1]).tolist() == [*range(16, 32), *range(40, 48), *range(56, 64)]
    pruned = apply_plan(model, PruningPlan(graph, {g.index: [1] for g in graph.groups if g.size == 2}))
    assert pruned.layers[1].self_attn.qkv_proj.out_features == 32  # (2 + 1 + 1) · 8
    assert pruned.layers[1].self_attn.num_key_value_heads == 1


def test_falcon_grouped_qkv_loses_whole_kv_groups_and_counts_follow() -> None:
    """Falcon's new decoder: one fused query_key_value viewed as (kv heads, q per kv + 2, head_dim)."""
    model, inputs = _model("falcon_new"), _inputs("falcon_new")
    graph = DependencyGraph.build(model, inputs)
    (group,) = [g for g in graph.groups if "h.0.self_attention.dense" in g.modules()]
    assert group.size == 2  # 2 kv heads, each with its 2 q heads
    pruned = apply_plan(model, PruningPlan(graph, {group.index: [0]}))
    attention = pruned.h[0].self_attention
    assert (attention.num_heads, attention.num_kv_heads, attention.query_key_value.out_features) == (2, 1, 32)


def test_phi3_refuses_layers_with_different_head_counts_before_changing_anything() -> None:
    """Phi-3 finds where q ends from the config's head count, which all layers share."""
    model, inputs = _model("phi3"), _inputs("phi3")
    graph = DependencyGraph.build(model, inputs)
    first = next(g for g in graph.groups if "layers.0.self_attn.o_proj" in g.modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"q slices of different widths .*qkv_proj 16, .*global_ranking=False"
    ):
        apply_plan(model, PruningPlan(graph, {first.index: [0]}), inplace=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_t5_heads_take_the_shared_relative_position_bias_along() -> None:
    model, inputs = _model("t5"), _inputs("t5")
    graph = DependencyGraph.build(model, inputs)
    bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    group = next(g for g in graph.groups if bias in {m.tensor for m in g.members})
    assert group.size == 4 and {m.module.split(".")[2] for m in group.members} == {"0", "1"}  # both blocks
    pruned = apply_plan(model, PruningPlan(graph, {group.index: [0, 3]}))
    attention = pruned.encoder.block[1].layer[0].SelfAttention
    assert (attention.n_heads, attention.key_value_proj_dim, attention.inner_dim) == (2, 8, 16)
    assert pruned.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.shape == (8, 2)


@pytest.mark.parametrize(
    "name, heads, attention, fields",
    [
        ("distilbert", "heads", {"n_heads": 2, "attention_head_size": 8}, {"n_heads": 2, "hidden_dim": 32}),
        ("distilbert", "head_dim", {"n_heads": 4, "attention_head_size": 4}, {"n_heads": 4, "dim": 32}),
        ("bloom", "head_dim", {"num_heads": 4, "head_dim": 4, "split_size": 16}, {"n_head": 4}),
        (  # stores its kv head count on the module (before: stale after pruning and after reloading)
            "stablelm",
            "heads",
            {"num_heads": 2, "num_key_value_heads": 1, "num_key_value_groups": 2, "head_dim": 8},
            {"num_attention_heads": 2, "num_key_value_heads": 1},
        ),
    ],
)
def test_config_that_cannot_say_the_head_size_reloads_with_load_pretrained(
    tmp_path: Path, name: str, heads: str, attention: dict, fields: dict
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned, inputs = _prune(name, heads)
    assert any("scaling of the pruned model is not 1/sqrt" in str(w.message) for w in caught) == (
        heads == "head_dim"
    )
    assert {k: getattr(pruned.config, k) for k in fields} == fields
    pruned.save_pretrained(tmp_path)
    loaded = load_pretrained(type(pruned), tmp_path)
    module = loaded.get_submodule(attention_modules(loaded)[0])
    assert {k: getattr(module, k) for k in attention} == attention
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_bloom_keeps_whole_heads_as_its_alibi_slopes_depend_on_their_count(tmp_path: Path) -> None:
    model, inputs = _model("bloom"), _inputs("bloom")
    graph = DependencyGraph.build(model, inputs, heads="heads")
    assert not any("self_attention" in name for g in graph.groups for name in g.modules())
    pruned = apply_plan(model, build_plan(model, graph, 0.5))
    assert pruned.h[0].self_attention.num_heads == 4 and pruned.h[0].mlp.dense_h_to_4h.out_features == 64
    pruned.save_pretrained(tmp_path)  # BLOOM's MLP is 4 · hidden_size wide: no config field says 64
    loaded = load_pretrained(tf.BloomModel, tmp_path)
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def _ffn_plan(model: nn.Module, graph: DependencyGraph, decoder_share: float) -> PruningPlan:
    """Remove half of every group outside the attention modules (FFN neurons), ``decoder_share`` of
    those under ``decoder.`` in an encoder-decoder model."""
    attention = tuple(f"{name}." for name in attention_modules(model))
    removals = {}
    for group in graph.groups:
        modules = group.modules()
        if not any(m.startswith(attention) for m in modules):
            share = decoder_share if modules[0].startswith("decoder.") else 0.5
            removals[group.index] = list(range(int(group.size * share)))
    return PruningPlan(graph, removals)


@pytest.mark.parametrize(
    "name, heads, fields",
    [
        ("opt", "heads", {"ffn_dim": 32}),
        ("gpt_neox", "heads", {"intermediate_size": 32}),
        ("gptj", "head_dim", {"n_inner": 32}),  # heads: GPT-J's rotary torch.stack has no channel rule
        ("phi3", "heads", {"intermediate_size": 32}),  # gate_up_proj: gate and up, 2 × 32
        ("t5_gated", "heads", {"d_ff": 32}),  # wi_0, wi_1
        ("distilbert", "heads", {"hidden_dim": 32}),
        ("bart", "heads", {"encoder_ffn_dim": 32, "decoder_ffn_dim": 48}),
        # experts and the shared expert have fields of their own; intermediate_size (dense layers) stays
        (
            "qwen2_moe",
            "head_dim",
            {"moe_intermediate_size": 16, "shared_expert_intermediate_size": 32, "intermediate_size": 64},
        ),
    ],
)
def test_ffn_width_config_field_reloads_with_from_pretrained(
    tmp_path: Path, name: str, heads: str, fields: dict
) -> None:
    model, inputs = _model(name), _inputs(name)
    graph = DependencyGraph.build(model, inputs, heads=heads)
    plan = _ffn_plan(model, graph, decoder_share=0.25 if name == "bart" else 0.5)
    assert plan.removals
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*load_pretrained")
        pruned = apply_plan(model, plan)
    assert {k: getattr(pruned.config, k) for k in fields} == fields
    pruned.save_pretrained(tmp_path)
    loaded = type(pruned).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_bart_encoder_and_decoder_heads_go_to_their_own_fields(tmp_path: Path) -> None:
    model, inputs = _model("bart"), _inputs("bart")
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups if g.size == 4]
    removals = {g.index: [0, 1] if g.modules()[0].startswith("encoder.") else [2] for g in heads}
    pruned = apply_plan(model, PruningPlan(graph, removals))
    assert (pruned.config.encoder_attention_heads, pruned.config.decoder_attention_heads) == (2, 3)
    pruned.save_pretrained(tmp_path)  # BART derives the head size from d_model: load_pretrained
    loaded = load_pretrained(tf.BartModel, tmp_path)
    decoder = loaded.decoder.layers[0]
    assert loaded.encoder.layers[0].self_attn.num_heads == 2
    assert decoder.self_attn.num_heads == decoder.encoder_attn.num_heads == 3
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


@pytest.mark.parametrize("name", ["gptj", "bloom", "distilbert", "gpt_neox"])
def test_apply_plan_says_when_only_load_pretrained_can_rebuild(tmp_path: Path, name: str) -> None:
    """Whole heads go from every layer alike (GPT-J: head size is n_embd // n_head, and its 0-dim tensor
    scale_attn = sqrt(head size); GPT-NeoX: rotary dims from hidden_size // heads, so load_pretrained
    builds the unpruned config's model first); BLOOM's FFN width is 4 · hidden_size: the config cannot
    say either."""
    with pytest.warns(UserWarning, match="reload with prunekit.graph.hf.load_pretrained"):
        pruned, inputs = _prune(name, "heads")
    pruned.save_pretrained(tmp_path)
    loaded = load_pretrained(type(pruned), tmp_path)
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_swin_with_per_stage_head_counts_prunes_exactly_and_reloads(tmp_path: Path) -> None:
    config = tf.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4
    )
    torch.manual_seed(0)
    model, x = tf.SwinModel(config).eval(), {"pixel_values": torch.randn(1, 3, 32, 32)}
    graph = DependencyGraph.build(model, x)
    groups = [g for g in graph.groups if g.exact]  # not under LayerNorm / RMSNorm statistics
    removals = {g.index: list(range(g.size // 2)) for g in groups}
    zeroed = copy.deepcopy(model)
    for group in groups:
        _zero_producers(zeroed, group, removals[group.index])
    with pytest.warns(UserWarning, match="load_pretrained"):
        pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    torch.testing.assert_close(_output(pruned, x), _output(zeroed, x), rtol=1e-5, atol=1e-5)
    assert pruned.config.num_heads == [2, 4]  # a per-stage list stays a list; the weights say the rest
    pruned.save_pretrained(tmp_path)
    torch.testing.assert_close(_output(load_pretrained(tf.SwinModel, tmp_path), x), _output(pruned, x))


def test_mixture_of_experts_ffn_width_prunes_exactly_across_experts_and_reloads(tmp_path: Path) -> None:
    config = tf.MixtralConfig(intermediate_size=32, num_key_value_heads=2, num_local_experts=2, **DECODER)
    torch.manual_seed(0)
    model, inputs = (
        _unit_weights(tf.MixtralModel(config).eval()),
        {"input_ids": _inputs("qwen2")["input_ids"]},
    )
    graph = DependencyGraph.build(model, inputs, heads="head_dim")  # RoPE: only the experts' width prunes
    groups = [g for g in graph.groups if g.modules()[0].endswith("mlp.experts")]
    assert [g.modules() for g in groups] == [["layers.0.mlp.experts"], ["layers.1.mlp.experts"]]
    assert groups[0].size == 32  # one width for every expert (the weights are one (experts, …) tensor)
    zeroed = copy.deepcopy(model)
    for group in groups:
        _zero_producers(zeroed, group, list(range(0, 32, 2)))
    pruned = apply_plan(zeroed, PruningPlan(graph, {g.index: list(range(0, 32, 2)) for g in groups}))
    assert pruned.layers[0].mlp.experts.down_proj.shape[-1] == 16
    torch.testing.assert_close(_output(pruned, inputs), _output(zeroed, inputs), rtol=1e-5, atol=1e-5)
    assert pruned.config.intermediate_size == 16  # transformers saves one tensor per expert: from_pretrained
    pruned.save_pretrained(tmp_path)  # stacks them again, at the width the config says
    loaded = tf.MixtralModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs))


def test_mixture_of_experts_width_keeps_the_multiple_grouped_mm_needs() -> None:
    """torch._grouped_mm needs 16-byte strides: a float32 expert width stays a multiple of 4."""
    config = tf.MixtralConfig(intermediate_size=32, num_key_value_heads=2, num_local_experts=2, **DECODER)
    torch.manual_seed(0)
    model, inputs = tf.MixtralModel(config).eval(), {"input_ids": _inputs("qwen2")["input_ids"]}
    graph = DependencyGraph.build(model, inputs, heads="head_dim")
    group = next(g for g in graph.groups if g.modules() == ["layers.0.mlp.experts"])
    assert group.multiple == 4 and all(
        g.multiple == 1 for g in graph.groups if g is not group and g.size > 32
    )
    with pytest.raises(ValueError, match=r"keeps 30 channels .*_grouped_mm .*keep a multiple of 4"):
        PruningPlan(graph, {group.index: [0, 1]})
    pruned = apply_plan(model, build_plan(model, graph, 0.9))  # 3.2 kept → 4
    assert pruned.layers[0].mlp.experts.down_proj.shape[-1] == 4


def test_attention_whose_heads_were_not_recognised_is_refused_not_given_zero_heads() -> None:
    torch.manual_seed(0)
    model = tf.HieraModel(tf.HieraConfig(  # mask-unit attention: (batch, heads, windows, tokens, head dim)
        image_size=[32, 32], patch_size=[3, 3], patch_stride=[2, 2], patch_padding=[1, 1], embed_dim=16,
        num_heads=[1, 2], depths=[1, 1], query_stride=[2, 2], masked_unit_size=[4, 4],
        masked_unit_attention=[True, False], num_query_pool=1)).eval()  # fmt: skip
    inputs = {"pixel_values": torch.randn(1, 3, 32, 32)}
    graph = DependencyGraph.build(model, inputs, heads="heads")
    (group,) = (g for g in graph.groups if g.modules() == ["encoder.stages.0.layers.0.attn.proj",
                                                         "encoder.stages.0.layers.0.attn.qkv"])  # fmt: skip
    with pytest.raises(ValueError, match=r"'encoder.stages.0.layers.0.attn' .* not whole heads of 16"):
        apply_plan(model, PruningPlan(graph, {group.index: list(range(8))}), verify=False)


def test_cvt_attention_storing_its_query_width_as_embed_dim_loses_whole_heads_exactly() -> None:
    torch.manual_seed(0)
    # projection_query / projection_key; the head size is embed_dim // num_heads, computed in the forward
    model = _unit_weights(tf.CvtModel(tf.CvtConfig(
        embed_dim=[16, 32], num_heads=[1, 2], depth=[1, 2], patch_sizes=[7, 3], patch_stride=[4, 2],
        patch_padding=[2, 1], mlp_ratio=[2.0, 2.0], attention_drop_rate=[0.0, 0.0], drop_rate=[0.0, 0.0],
        drop_path_rate=[0.0, 0.0], qkv_bias=[True, True], cls_token=[False, True], kernel_qkv=[3, 3],
        qkv_projection_method=["dw_bn", "dw_bn"], padding_kv=[1, 1], stride_kv=[2, 2], padding_q=[1, 1],
        stride_q=[1, 1])).eval())  # fmt: skip
    inputs = {"pixel_values": torch.randn(1, 3, 32, 32)}
    graph = DependencyGraph.build(model, inputs, heads="heads")
    heads = [
        g for g in graph.groups if any(m.role == "out" and m.module.endswith("query") for m in g.members)
    ]
    assert [g.size for g in heads] == [2, 2]  # two heads in each layer of stage 1 (stage 0 has one)
    removals = {g.index: [1] for g in heads if g.size == 2}
    zeroed = copy.deepcopy(model)
    for group in heads:
        _zero_producers(zeroed, group, removals.get(group.index, []))
    pruned = apply_plan(zeroed, PruningPlan(graph, removals))
    attention = pruned.encoder.stages[1].layers[0].attention.attention
    assert (attention.num_heads, attention.embed_dim) == (1, 16)
    with torch.no_grad():
        expected, actual = zeroed(**inputs).last_hidden_state, pruned(**inputs).last_hidden_state
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_experts_pruned_unequally_reload_with_load_pretrained_from_one_tensor_per_expert(
    tmp_path: Path,
) -> None:
    config = tf.MixtralConfig(intermediate_size=32, num_key_value_heads=2, num_local_experts=2, **DECODER)
    torch.manual_seed(0)
    model, inputs = (
        _unit_weights(tf.MixtralModel(config).eval()),
        {"input_ids": _inputs("qwen2")["input_ids"]},
    )
    graph = DependencyGraph.build(model, inputs, heads="head_dim")
    groups = [g for g in graph.groups if g.modules()[0].endswith("mlp.experts")]
    removals = {groups[0].index: list(range(0, 32, 2)), groups[1].index: list(range(8))}  # widths 16 and 24
    with pytest.warns(UserWarning, match="load_pretrained"):  # one intermediate_size cannot say both
        pruned = apply_plan(model, PruningPlan(graph, removals))
    pruned.save_pretrained(tmp_path)  # transformers writes experts.0.gate_proj.weight, … one per expert
    loaded = load_pretrained(tf.MixtralModel, tmp_path)
    assert [layer.mlp.experts.down_proj.shape[-1] for layer in loaded.layers] == [16, 24]
    torch.testing.assert_close(_output(loaded, inputs), _output(pruned, inputs), rtol=0, atol=0)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_multi_query_attention_loses_query_heads_around_its_one_kv_head(implementation: str) -> None:
    config = tf.LlamaConfig(intermediate_size=64, num_key_value_heads=1, **DECODER)
    torch.manual_seed(0)
    model = _unit_weights(tf.LlamaModel(config).eval())
    model.set_attn_implementation(implementation)  # eager: repeat_kv expands the one kv head 4 times
    inputs = {"input_ids": _inputs("qwen2")["input_ids"]}
    graph = DependencyGraph.build(model, inputs)
    heads = [g for g in graph.groups if "layers.0.self_attn.q_proj" in g.modules()]
    assert [g.size for g in heads] == [4] and "layers.0.self_attn.k_proj" not in heads[0].modules()
    zeroed, (group,) = copy.deepcopy(model), heads
    tensors = dict(zeroed.named_parameters())
    with torch.no_grad():  # a zero query still averages v: a query head is silenced by o_proj's columns
        for m, member in enumerate(group.members):
            tensors[member.tensor].index_fill_(member.dim, torch.as_tensor(group.indices(m, [0, 2])), 0.0)
    pruned = apply_plan(zeroed, PruningPlan(graph, {group.index: [0, 2]}))
    attention = pruned.layers[0].self_attn
    assert (attention.q_proj.out_features, attention.num_key_value_groups) == (16, 2)
    torch.testing.assert_close(_output(pruned, inputs), _output(zeroed, inputs), rtol=1e-5, atol=1e-5)
