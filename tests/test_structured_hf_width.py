"""Pruning the residual width (``hidden_size``): widths modules store (transformers models and
hand-written ones), a model wrapped in the user's own module, constants a config derives from the width."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.export import load_compressed, save_compressed
from prunekit.graph import DependencyGraph
from prunekit.graph.hf import load_pretrained
from prunekit.graph.io import load_pruned, save_pruned
from prunekit.graph.verify import PrunedModelMismatchError
from prunekit.plan import PruningPlan, apply_plan, build_plan
from test_structured_exact import assert_exact, exact_groups, prune_zeroed
from test_structured_hf import _unit_weights

tf = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
TEXT = {
    "vocab_size": 50,
    "max_position_embeddings": 16,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "pad_token_id": 0,
}
DECODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    **TEXT,
}
IDS = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(0))


class Classifier(nn.Module):
    """A user's module around a transformers model: a linear head on the last hidden state."""

    def __init__(self, base: nn.Module, classes: int = 3) -> None:
        super().__init__()
        self.base, self.head = base, nn.Linear(base.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(input_ids=input_ids, use_cache=False).last_hidden_state)


def _hidden(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, use_cache=False).last_hidden_state


def _pruned_width(factory: type, config: object) -> tuple[nn.Module, nn.Module]:
    """``(original, pruned)``: half of every group of a classifier around ``factory(config)``, the
    residual width among them; the transformers model inside comes back."""
    torch.manual_seed(0)
    model = Classifier(_unit_weights(factory(config).eval())).eval()
    plan = build_plan(model, DependencyGraph.build(model, {"input_ids": IDS}), 0.5)
    return model, apply_plan(model, plan)


def test_wrapped_model_gets_its_config_updated_and_reloads_with_from_pretrained(tmp_path: Path) -> None:
    model, pruned = _pruned_width(tf.LlamaModel, tf.LlamaConfig(intermediate_size=64, **DECODER))
    config = pruned.base.config
    assert (config.hidden_size, config.intermediate_size, config.num_attention_heads) == (16, 32, 2)
    assert model.base.config.hidden_size == 32  # the user's model is untouched
    pruned.base.save_pretrained(tmp_path)
    loaded = tf.LlamaModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_hidden(loaded), _hidden(pruned.base))


def test_widths_stored_beside_the_tensors_follow_the_pruned_sizes() -> None:
    _, pruned = _pruned_width(tf.LlamaModel, tf.LlamaConfig(intermediate_size=64, **DECODER))
    layer = pruned.base.layers[0]
    assert (layer.hidden_size, layer.mlp.hidden_size, layer.mlp.intermediate_size) == (16, 16, 32)


@pytest.mark.parametrize(
    "factory, config",
    [
        (tf.MixtralModel, tf.MixtralConfig(intermediate_size=64, num_local_experts=4, **DECODER)),
        (
            tf.OlmoeModel,
            tf.OlmoeConfig(intermediate_size=64, num_experts=4, num_experts_per_tok=2, **DECODER),
        ),
    ],
    ids=["mixtral", "olmoe"],
)
def test_router_reading_its_stored_hidden_dim_prunes_and_reloads(
    tmp_path: Path, factory: type, config: object
) -> None:
    """The routers view their input as ``(-1, self.hidden_dim)``: before, the check refused the prune."""
    _, pruned = _pruned_width(factory, config)
    router = pruned.base.layers[0].mlp.gate
    assert router.hidden_dim == router.weight.shape[1] == 16
    pruned.base.save_pretrained(tmp_path)
    loaded = factory.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_hidden(loaded), _hidden(pruned.base))


def test_embedding_scale_derived_from_the_width_is_kept_and_the_reload_goes_by_load_pretrained(
    tmp_path: Path,
) -> None:
    """Gemma scales its embeddings by √hidden_size, fixed at build time: the pruned model keeps √32, a
    model built from the pruned config would use √16 (silently other outputs), so apply_plan warns."""
    config = tf.GemmaConfig(intermediate_size=64, head_dim=8, **DECODER)
    with pytest.warns(UserWarning, match="other constants.*load_pretrained"):
        _, pruned = _pruned_width(tf.GemmaModel, config)
    assert pruned.base.embed_tokens.scalar_embed_scale == 32**0.5
    pruned.base.save_pretrained(tmp_path)
    loaded = load_pretrained(tf.GemmaModel, tmp_path)
    assert loaded.embed_tokens.scalar_embed_scale == 32**0.5
    torch.testing.assert_close(_hidden(loaded), _hidden(pruned.base))
    assert not torch.allclose(_hidden(tf.GemmaModel.from_pretrained(tmp_path).eval()), _hidden(pruned.base))


class Router(nn.Module):
    """A hand-written router that stores its input width and reads it in the forward, and a length
    that happens to equal the width."""

    def __init__(self, width: int, experts: int) -> None:
        super().__init__()
        self.hidden_dim, self.num_experts, self.context_size = width, experts, width
        self.weight = nn.Parameter(torch.randn(experts, width) / width**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.hidden_dim) @ self.weight.t()


class Routed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.router, self.out = nn.Linear(6, 8), Router(8, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.router(torch.relu(self.embed(x))))


def test_hand_written_module_storing_its_width_prunes_saves_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = Routed().eval(), torch.randn(5, 6)
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, x), 0.5))
    assert (pruned.router.hidden_dim, pruned.router.num_experts, model.router.hidden_dim) == (4, 2, 8)
    assert pruned.router.context_size == 8  # a length by its name, whatever its value
    save_pruned(pruned, tmp_path)
    loaded = load_pruned(Routed, tmp_path)
    assert loaded.router.hidden_dim == 4
    torch.testing.assert_close(loaded(x), pruned(x))


class NanoAttention(nn.Module):
    """nanoGPT's attention: splits the fused qkv output by the residual width it stores, ``n_embd``."""

    def __init__(self, n_embd: int = 32, n_head: int = 4) -> None:
        super().__init__()
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.size()
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                   for z in self.c_attn(x).split(self.n_embd, dim=2))  # fmt: skip
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class NanoGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte, self.ln, self.attn = nn.Embedding(50, 32), nn.LayerNorm(32), NanoAttention()
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 50)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        x = x + self.attn(self.ln(x))
        return self.head(x + self.mlp(x))


def test_nano_gpt_splitting_by_its_stored_width_loses_width_and_heads_alike(tmp_path: Path) -> None:
    """Before, the check refused: ``split(self.n_embd)`` still cut 32-wide pieces. ``load_pruned``
    restores the head count too (before, it came back as 4 heads of 4 and computed something else), and
    ``load_compressed`` loads it (before: refused, as head counts were not saved)."""
    torch.manual_seed(0)
    model, idx = NanoGPT().eval(), IDS
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, idx), 0.5))
    assert (pruned.attn.n_embd, pruned.attn.n_head, pruned.wte.embedding_dim) == (16, 2, 16)
    assert pruned(idx).shape == (2, 7, 50) and model.attn.n_embd == 32
    save_pruned(pruned, tmp_path)
    compressed = load_compressed(NanoGPT, save_compressed(pruned, tmp_path / "nano.st")).eval()
    for loaded in (load_pruned(NanoGPT, tmp_path).eval(), compressed):
        assert (loaded.attn.n_embd, loaded.attn.n_head) == (16, 2)
        with torch.no_grad():
            torch.testing.assert_close(loaded(idx), pruned(idx))


class TwoWidths(nn.Module):
    """Stores ``width = 8`` and reads it in the forward; its two tensors of width 8 are pruned apart."""

    def __init__(self) -> None:
        super().__init__()
        self.width = 8
        self.a, self.b = nn.Parameter(torch.randn(8, 3)), nn.Parameter(torch.randn(8, 3))
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([(x @ self.a.t()).reshape(-1, self.width), x @ self.b.t()], 1))


def test_stored_width_matching_dims_pruned_to_different_sizes_is_left_for_the_check() -> None:
    torch.manual_seed(0)
    model, x = TwoWidths().eval(), torch.randn(5, 3)
    graph = DependencyGraph.build(model, x)
    a, b = sorted((g for g in graph.groups if g.size == 8), key=lambda g: g.members[0].tensor)
    with pytest.raises(PrunedModelMismatchError, match="the pruned model"):
        apply_plan(model, PruningPlan(graph, {a.index: [0, 1], b.index: [0, 1, 2, 3]}))
    assert model.width == 8


class SqueezeExcite(nn.Module):
    """An SE block that stores its width and reads it in views; its layers sit in an ``nn.Sequential``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Sequential(nn.Linear(channels, 4), nn.ReLU(), nn.Linear(4, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean((2, 3)).view(x.shape[0], self.channels))
        return x * gate.view(x.shape[0], self.channels, 1, 1)


class Res2Split(nn.Module):
    """Res2Net's split: ``torch.split(out, self.width, 1)`` and a ``ModuleList`` of per-split convs."""

    def __init__(self, width: int = 4, scale: int = 3) -> None:
        super().__init__()
        self.width, self.scale = width, scale
        self.conv1 = nn.Conv2d(8, width * scale, 1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, 1, 1) for _ in range(scale - 1))
        self.conv3 = nn.Conv2d(width * scale, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(torch.relu(self.conv1(x)), self.width, 1)
        outs, sp = [], parts[0]
        for i, conv in enumerate(self.convs):
            sp = torch.relu(conv(sp if i == 0 else sp + parts[i]))
            outs.append(sp)
        return self.conv3(torch.cat([*outs, parts[-1]], 1)) + x


class StoredWidthNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.se, self.res2, self.fc = (
            nn.Conv2d(3, 8, 3, 1, 1),
            SqueezeExcite(8),
            Res2Split(),
            nn.Linear(8, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.res2(self.se(torch.relu(self.stem(x)))).mean((2, 3)))


def test_widths_stored_beside_layers_in_containers_follow_and_the_prune_is_exact() -> None:
    """Before, the check refused both: the SE block's ``channels`` and Res2Net's ``width`` stayed."""
    torch.manual_seed(0)
    model, x = StoredWidthNet().eval(), torch.randn(2, 3, 8, 8)
    graph = DependencyGraph.build(model, x)
    pruned, zeroed, _ = prune_zeroed(
        model, graph, exact_groups(model, graph), torch.Generator().manual_seed(0)
    )
    assert_exact(pruned, zeroed, x)
    assert pruned.se.channels == pruned.stem.out_channels < 8
    assert pruned.res2.width == pruned.res2.convs[0].out_channels < 4


class OwnLayerNorm(nn.Module):
    """ConvNeXt's channels-last LayerNorm: ``self.normalized_shape = (C,)`` beside its weight."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))
        self.normalized_shape = (channels,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, 1e-6)


def test_a_layer_norm_of_its_own_gets_its_normalized_shape_and_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), OwnLayerNorm(8), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6)
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, x), 0.5))
    assert pruned[1].normalized_shape == (4,) and model[1].normalized_shape == (8,)
    save_pruned(pruned, tmp_path)
    loaded = load_pruned(lambda: nn.Sequential(nn.Linear(6, 8), OwnLayerNorm(8), nn.Linear(8, 3)), tmp_path)
    assert loaded[1].normalized_shape == (4,)
    torch.testing.assert_close(loaded(x), pruned(x))


class MultiQueryFused(nn.Module):
    """Falcon-7B's layout written by hand: one fused projection of q (4 heads), one k and one v head."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = 4, 8
        self.query_key_value, self.dense = nn.Linear(32, 48, bias=False), nn.Linear(32, 32, bias=False)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        fused = self.query_key_value(x).view(b, t, self.num_heads + 2, self.head_dim).transpose(1, 2)
        q, k, v = fused[:, :-2], fused[:, -2:-1], fused[:, -1:]
        o = F.scaled_dot_product_attention(q, k.expand_as(q), v.expand_as(q))
        return x + self.dense(o.transpose(1, 2).reshape(b, t, -1)) + self.mlp(x)


def test_attention_whose_projections_keep_their_widths_keeps_its_head_count() -> None:
    """Only the MLP is pruned: before, the head count was rewritten as if q, k and v were equal thirds
    of the fused projection (4 → 2 heads) and the check refused."""
    torch.manual_seed(0)
    model, x = MultiQueryFused().eval(), torch.randn(2, 5, 32)
    graph = DependencyGraph.build(model, x)
    (mlp,) = [g for g in graph.groups if g.modules() == ["mlp.0", "mlp.2"]]
    pruned, zeroed, _ = prune_zeroed(model, graph, [mlp], torch.Generator().manual_seed(0))
    assert (pruned.num_heads, pruned.head_dim) == (4, 8) and pruned.mlp[0].out_features < 64
    assert_exact(pruned, zeroed, x)


def test_a_width_the_config_validation_rejects_is_said_at_prune_time() -> None:
    """transformers 5 validates a config on save_pretrained: Llama's hidden size must be a multiple of
    its head count. Before, apply_plan was silent and save_pretrained failed later."""
    torch.manual_seed(0)
    model = Classifier(_unit_weights(tf.LlamaModel(tf.LlamaConfig(intermediate_size=64, **DECODER)).eval()))
    graph = DependencyGraph.build(model.eval(), {"input_ids": IDS})
    (width,) = [g for g in graph.groups if "base.embed_tokens" in g.modules()]
    with pytest.warns(UserWarning, match=r"fails transformers' own validation \(.*\(25\).*round_to"):
        pruned = apply_plan(model, build_plan(model, graph, counts={width.index: 7}))
    assert pruned.base.config.hidden_size == 25 and pruned(IDS).shape == (2, 7, 3)


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def test_a_group_norm_pruned_twice_reloads_with_its_group_count(tmp_path: Path) -> None:
    """The first prune keeps 4 groups of 1 channel (each group loses channels alike); the second is then
    per channel (4 → 3 groups). Before, load_pruned kept the original 4 groups and the forward failed."""
    torch.manual_seed(0)
    model, x = GroupNormNet().eval(), torch.randn(2, 3, 8, 8)
    once = apply_plan(model, build_plan(model, DependencyGraph.build(model, x), counts={0: 3}))
    twice = apply_plan(once, build_plan(once, DependencyGraph.build(once, x), counts={0: 1}))
    assert (twice.norm.num_groups, twice.norm.num_channels) == (3, 3)
    save_pruned(twice, tmp_path)
    loaded = load_pruned(GroupNormNet, tmp_path)
    assert (loaded.norm.num_groups, loaded.norm.num_channels) == (3, 3)
    torch.testing.assert_close(loaded(x), twice(x))
