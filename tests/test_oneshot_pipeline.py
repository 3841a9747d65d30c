"""Block-by-block one-shot pruning of tiny HF transformers (BERT Linear, GPT-2 Conv1D)."""

import pytest
import torch

from prunekit.oneshot import OneShotConfig, prune_oneshot, wanda_mask

transformers = pytest.importorskip("transformers")


def tiny_bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return transformers.BertModel(cfg).eval()


def tiny_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    return transformers.GPT2LMHeadModel(cfg).eval()


def batches(n: int = 4, seq: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 50, (2, seq), generator=gen)} for _ in range(n)]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize(("pattern", "sparsity"), [("element", 0.6), ("2:4", None), ("4:8", None)])
def test_every_block_linear_pruned_exactly_and_model_untouched(method, pattern, sparsity):
    model = tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = OneShotConfig(method=method, sparsity=sparsity, pattern=pattern, blocksize=16)
    result = prune_oneshot(model, batches(), cfg)
    assert len(result.masks) == 2 * 6  # q, k, v, attention out, intermediate, output per block
    params = dict(result.model.named_parameters())
    for name, keep in result.masks.items():
        assert name.startswith("encoder.layer.")
        w = params[name]
        assert torch.all(w[~keep] == 0)
        if pattern == "element":
            assert keep.sum(1).tolist() == [keep.shape[1] - round(0.6 * keep.shape[1])] * keep.shape[0]
        else:
            n, m = map(int, pattern.split(":"))
            assert torch.all(keep.reshape(keep.shape[0], -1, m).sum(-1) == n)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert result.model.state_dict().keys() == model.state_dict().keys()


def test_second_block_is_calibrated_on_outputs_of_the_pruned_first_block():
    model, data = tiny_bert(), batches()
    result = prune_oneshot(model, data, OneShotConfig(method="wanda", sparsity=0.5))
    pruned = result.model
    sq = torch.zeros(32, dtype=torch.float64)
    with torch.no_grad():
        for batch in data:
            hidden = pruned(**batch, output_hidden_states=True).hidden_states[1]  # input of block 1
            sq += (hidden.reshape(-1, 32).double() ** 2).sum(0)
    name = "encoder.layer.1.attention.self.query.weight"
    dense_w = dict(model.named_parameters())[name]
    assert torch.equal(result.masks[name], wanda_mask(dense_w, sq, 0.5))
    dense_sq = torch.zeros(32, dtype=torch.float64)
    with torch.no_grad():
        for batch in data:
            dense_sq += (model(**batch, output_hidden_states=True).hidden_states[1] ** 2).sum((0, 1)).double()
    assert not torch.equal(result.masks[name], wanda_mask(dense_w, dense_sq, 0.5))


def test_gpt2_conv1d_masks_have_weight_shape_and_skip_globs_apply():
    model = tiny_gpt2()
    cfg = OneShotConfig(method="sparsegpt", sparsity=0.5, skip=("*.mlp.*",), blocksize=16)
    result = prune_oneshot(model, batches(), cfg)
    assert sorted(result.masks) == [
        f"transformer.h.{i}.attn.{p}.weight" for i in (0, 1) for p in ("c_attn", "c_proj")
    ]
    params = dict(result.model.named_parameters())
    for name, keep in result.masks.items():
        assert keep.shape == params[name].shape  # Conv1D weights are (in, out)
        assert torch.all(keep.sum(0) == keep.shape[0] // 2)  # per output column
    assert "lm_head.weight" not in result.masks


def test_sparsegpt_block_outputs_closer_to_dense_than_magnitude():
    model, data = tiny_bert(), batches(n=8)
    held_out = batches(n=2, seed=1)

    def error(method):
        pruned = prune_oneshot(model, data, OneShotConfig(method=method, sparsity=0.5, blocksize=16)).model
        with torch.no_grad():
            return sum(
                float((pruned(**b).last_hidden_state - model(**b).last_hidden_state).norm()) for b in held_out
            )

    assert error("sparsegpt") < error("wanda") < error("magnitude")


def test_float32_hessian_prunes_like_float64():
    model, data, held_out = tiny_bert(), batches(n=8), batches(n=2, seed=1)
    results = {
        d: prune_oneshot(model, data, OneShotConfig(sparsity=0.5, blocksize=16, hessian_dtype=d))
        for d in ("float32", "float64")
    }
    assert OneShotConfig().hessian_dtype == "float32"
    same = sum(int((results["float32"].masks[n] == k).sum()) for n, k in results["float64"].masks.items())
    assert same >= 0.995 * sum(k.numel() for k in results["float64"].masks.values())

    def error(result):
        with torch.no_grad():
            return sum(
                float((result.model(**b).last_hidden_state - model(**b).last_hidden_state).norm())
                for b in held_out
            )

    assert error(results["float32"]) == pytest.approx(error(results["float64"]), rel=0.02)


def test_owl_allocation_keeps_the_mean_and_spreads_blocks():
    model = tiny_bert()
    cfg = OneShotConfig(method="wanda", sparsity=0.5, allocation="owl", owl_lambda=0.1, owl_threshold=2.0)
    result = prune_oneshot(model, batches(), cfg)
    s = result.block_sparsity
    assert len(s) == 2 and abs(sum(s) / 2 - 0.5) < 1e-12 and abs(s[0] - s[1]) == pytest.approx(0.2)
    for name, keep in result.masks.items():
        block = int(name.split(".")[2])
        assert int((~keep).sum(1)[0]) == round(s[block] * keep.shape[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "obs"}, "method must be one of"),
        ({"sparsity": 1.0}, r"sparsity must be in \[0, 1\)"),
        ({"pattern": "2:4", "sparsity": 0.7}, "contradicts pattern"),
        ({"pattern": "2:4", "sparsity": None, "allocation": "owl"}, "needs pattern='element'"),
        ({"pattern": "4:8", "sparsity": None, "blocksize": 12}, "multiple of M=8"),
        ({"percdamp": 0.0}, "percdamp must be in"),
        ({"skip": "lm_head"}, "tuple of glob patterns"),
        ({"hessian_dtype": "float16"}, "hessian_dtype must be one of 'float32', 'float64'; got 'float16'"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        OneShotConfig(**kwargs)


def test_uniform_magnitude_runs_no_forward_pass_and_keeps_the_largest_per_row():
    model = tiny_bert()
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    result = prune_oneshot(model, batches(), OneShotConfig(method="magnitude", sparsity=0.5), inplace=True)
    handle.remove()
    assert calls == []  # data-free: the calibration batches are never run
    w = dict(tiny_bert().named_parameters())["encoder.layer.1.output.dense.weight"]
    keep = result.masks["encoder.layer.1.output.dense.weight"]
    removed = w.shape[1] // 2  # per output row: the 32 smallest of 64 inputs
    assert torch.equal(keep, w.abs() > w.abs().kthvalue(removed, dim=1, keepdim=True).values)
