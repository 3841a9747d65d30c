"""Structured pruning across Hugging Face architectures: exact, refused with a reason, or wrong.

For each architecture (a tiny random config built offline, weights of unit scale: the default init
std 0.02 makes attention near uniform and hides a wrong scale) and each head mode (``heads``: whole
heads go; ``head_dim``: dims of every head go): build the graph, choose half the channels of every
group without a norm layer, zero their weights, prune exactly those with ``apply_plan`` (its
pruned-model check on), and compare outputs with the zeroed model's (relative error of the first
output). Then ``save_pretrained`` and reload with ``from_pretrained``, or with
``prunekit.graph.hf.load_pretrained`` where ``apply_plan`` warned that the config cannot describe
the pruned model, and compare again. Two more runs per mode: "one left" keeps one channel of every
group (size-1 heads and head dims take other code paths), "twice" prunes half, then half of what is
left, tracing the pruned model. A refusal is a success when its reason is stated; "WRONG" is the
only failure.

    python bench/structured_hf_coverage.py            # all architectures (~30 s)
    python bench/structured_hf_coverage.py --quick    # ≤ 60 s: eight of them
    python bench/structured_hf_coverage.py --json     # last stdout line: one JSON summary
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"
import transformers as tf

from prunekit.graph import DependencyGraph
from prunekit.graph.hf import load_pretrained
from prunekit.plan import PruningPlan, apply_plan

_G = torch.Generator().manual_seed(0)
_IDS = {"input_ids": torch.randint(0, 50, (2, 7), generator=_G)}
_PADDED = {**_IDS, "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])}
_PIXELS = {"pixel_values": torch.randn(1, 3, 32, 32, generator=_G)}
_TEXT = {"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64}  # fmt: skip
_SEQ2SEQ = {"vocab_size": 50, "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64}  # fmt: skip
_VISION = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
           "image_size": 32, "patch_size": 8}  # fmt: skip

Case = tuple[Callable[[], nn.Module], dict]
CASES: dict[str, Case] = {
    "bert (sdpa, padded)": (lambda: tf.BertModel(tf.BertConfig(**_TEXT)), _PADDED),
    "bert (eager)": (lambda: tf.BertModel(tf.BertConfig(**_TEXT, attn_implementation="eager")), _IDS),
    "roberta (eager)": (
        lambda: tf.RobertaModel(tf.RobertaConfig(**_TEXT, attn_implementation="eager")),
        _IDS,
    ),
    "xlm-roberta": (lambda: tf.XLMRobertaModel(tf.XLMRobertaConfig(**_TEXT)), _PADDED),
    "albert": (lambda: tf.AlbertModel(tf.AlbertConfig(**_TEXT, embedding_size=16)), _IDS),
    "electra": (lambda: tf.ElectraModel(tf.ElectraConfig(**_TEXT, embedding_size=16)), _IDS),
    "distilbert": (
        lambda: tf.DistilBertModel(
            tf.DistilBertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
        ),
        _IDS,
    ),
    "deberta-v2": (lambda: tf.DebertaV2Model(tf.DebertaV2Config(**_TEXT)), _IDS),
    "mpnet": (lambda: tf.MPNetModel(tf.MPNetConfig(**_TEXT)), _IDS),
    "gpt2 (eager)": (
        lambda: tf.GPT2Model(
            tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, attn_implementation="eager")
        ),
        _IDS,
    ),
    "gpt-j": (
        lambda: tf.GPTJModel(tf.GPTJConfig(vocab_size=50, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)),
        _IDS,
    ),
    "gpt-neox": (lambda: tf.GPTNeoXModel(tf.GPTNeoXConfig(**_TEXT)), _IDS),
    "bloom": (
        lambda: tf.BloomModel(tf.BloomConfig(vocab_size=50, hidden_size=32, n_layer=2, n_head=4)),
        _IDS,
    ),
    "opt": (
        lambda: tf.OPTModel(
            tf.OPTConfig(**{**_TEXT, "intermediate_size": 0}, ffn_dim=64, word_embed_proj_dim=32)
        ),
        _IDS,
    ),
    "llama (gqa, eager)": (
        lambda: tf.LlamaModel(tf.LlamaConfig(**_TEXT, num_key_value_heads=2, attn_implementation="eager")),
        _IDS,
    ),
    "llama (gqa, padded)": (lambda: tf.LlamaModel(tf.LlamaConfig(**_TEXT, num_key_value_heads=2)), _PADDED),
    "mistral": (lambda: tf.MistralModel(tf.MistralConfig(**_TEXT, num_key_value_heads=2)), _IDS),
    "qwen2": (lambda: tf.Qwen2Model(tf.Qwen2Config(**_TEXT, num_key_value_heads=2)), _IDS),
    "gemma2": (lambda: tf.Gemma2Model(tf.Gemma2Config(**_TEXT, num_key_value_heads=2, head_dim=8)), _IDS),
    "phi": (lambda: tf.PhiModel(tf.PhiConfig(**_TEXT)), _IDS),
    "phi3 (gqa, fused qkv_proj)": (
        lambda: tf.Phi3Model(tf.Phi3Config(**_TEXT, num_key_value_heads=2, pad_token_id=0)),
        _IDS,
    ),
    "mpt (fused Wqkv)": (
        lambda: tf.MptModel(tf.MptConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2)),
        _IDS,
    ),
    "modernbert (fused Wqkv)": (
        lambda: tf.ModernBertModel(
            tf.ModernBertConfig(
                **_TEXT,
                global_attn_every_n_layers=1,
                local_attention=8,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
                cls_token_id=1,
                sep_token_id=2,
            )
        ),
        _IDS,
    ),
    "falcon": (
        lambda: tf.FalconModel(
            tf.FalconConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
        ),
        _IDS,
    ),
    "t5 encoder": (
        lambda: tf.T5EncoderModel(
            tf.T5Config(vocab_size=50, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        ),
        _IDS,
    ),
    "bart": (
        lambda: tf.BartModel(tf.BartConfig(**_SEQ2SEQ, max_position_embeddings=16)),
        _IDS,
    ),
    "clip text": (
        lambda: tf.CLIPTextModel(tf.CLIPTextConfig(**_TEXT, bos_token_id=0, eos_token_id=1, pad_token_id=2)),
        _IDS,
    ),
    "vit (eager)": (lambda: tf.ViTModel(tf.ViTConfig(**_VISION, attn_implementation="eager")), _PIXELS),
    "dinov2": (lambda: tf.Dinov2Model(tf.Dinov2Config(**_VISION)), _PIXELS),
    "siglip vision": (lambda: tf.SiglipVisionModel(tf.SiglipVisionConfig(**_VISION)), _PIXELS),
    "mobilevit": (
        lambda: tf.MobileViTModel(
            tf.MobileViTConfig(
                image_size=32,
                hidden_sizes=[16, 24, 32],
                neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                num_attention_heads=4,
            )
        ),
        _PIXELS,
    ),
    "swin": (
        lambda: tf.SwinModel(
            tf.SwinConfig(
                image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4
            )
        ),
        _PIXELS,
    ),
    "qwen3": (lambda: tf.Qwen3Model(tf.Qwen3Config(**_TEXT, num_key_value_heads=2, head_dim=8)), _IDS),
    "gemma": (lambda: tf.GemmaModel(tf.GemmaConfig(**_TEXT, num_key_value_heads=2, head_dim=8)), _IDS),
    "olmo2": (lambda: tf.Olmo2Model(tf.Olmo2Config(**_TEXT, num_key_value_heads=2)), _IDS),
    "stablelm": (lambda: tf.StableLmModel(tf.StableLmConfig(**_TEXT, num_key_value_heads=2)), _IDS),
    "granite": (lambda: tf.GraniteModel(tf.GraniteConfig(**_TEXT, num_key_value_heads=2)), _IDS),
    "whisper encoder": (
        lambda: tf.WhisperModel(
            tf.WhisperConfig(
                **_SEQ2SEQ,
                num_mel_bins=8,
                max_source_positions=8,
                max_target_positions=8,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=2,
                decoder_start_token_id=1,
            )
        ).get_encoder(),
        {"input_features": torch.randn(1, 8, 16, generator=_G)},
    ),
    "wav2vec2": (
        lambda: tf.Wav2Vec2Model(
            tf.Wav2Vec2Config(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=4,
                intermediate_size=64,
                conv_dim=(8, 8),
                conv_stride=(5, 2),
                conv_kernel=(10, 3),
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4,
            )
        ),
        {"input_values": torch.randn(1, 400, generator=_G)},
    ),
    "deit": (lambda: tf.DeiTModel(tf.DeiTConfig(**_VISION)), _PIXELS),
    "beit": (lambda: tf.BeitModel(tf.BeitConfig(**_VISION, vocab_size=50)), _PIXELS),
    "clip vision": (lambda: tf.CLIPVisionModel(tf.CLIPVisionConfig(**_VISION)), _PIXELS),
    "vit-mae (fixed noise)": (
        lambda: tf.ViTMAEModel(tf.ViTMAEConfig(**_VISION, mask_ratio=0.0)),
        {**_PIXELS, "noise": torch.rand(1, 16, generator=_G)},  # its patch shuffle is random otherwise
    ),
    "convnext": (
        lambda: tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])),
        _PIXELS,
    ),
    "segformer": (
        lambda: tf.SegformerModel(
            tf.SegformerConfig(
                hidden_sizes=[8, 16, 24, 32],
                num_attention_heads=[1, 2, 2, 4],
                depths=[1, 1, 1, 1],
                decoder_hidden_size=16,
            )
        ),
        _PIXELS,
    ),
    "gpt-bigcode (multi-query)": (
        lambda: tf.GPTBigCodeModel(
            tf.GPTBigCodeConfig(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_inner=64)
        ),
        _IDS,
    ),
    "falcon (new decoder arch, gqa)": (
        lambda: tf.FalconModel(
            tf.FalconConfig(
                vocab_size=50,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_kv_heads=2,
                new_decoder_architecture=True,
            )
        ),
        _IDS,
    ),
    "cohere": (lambda: tf.CohereModel(tf.CohereConfig(**_TEXT, num_key_value_heads=2)), _IDS),
    "gemma3": (
        lambda: tf.Gemma3TextModel(tf.Gemma3TextConfig(**_TEXT, num_key_value_heads=2, head_dim=8)),
        _IDS,
    ),
    "mixtral (moe)": (
        lambda: tf.MixtralModel(tf.MixtralConfig(**_TEXT, num_key_value_heads=2, num_local_experts=4)),
        _IDS,
    ),
    "qwen2-moe (shared expert)": (
        lambda: tf.Qwen2MoeModel(
            tf.Qwen2MoeConfig(
                **_TEXT,
                num_key_value_heads=2,
                num_experts=4,
                moe_intermediate_size=32,
                shared_expert_intermediate_size=64,
            )
        ),
        _IDS,
    ),
    "esm (rotary)": (
        lambda: tf.EsmModel(tf.EsmConfig(**_TEXT, position_embedding_type="rotary", pad_token_id=1)),
        _IDS,
    ),
    "xlnet": (
        lambda: tf.XLNetModel(tf.XLNetConfig(vocab_size=50, d_model=32, n_layer=2, n_head=4, d_inner=64)),
        _IDS,
    ),
    "funnel": (
        lambda: tf.FunnelBaseModel(
            tf.FunnelConfig(vocab_size=50, d_model=32, n_head=4, d_head=8, d_inner=64, block_sizes=[1, 1])
        ),
        _IDS,
    ),
    "resnet": (
        lambda: tf.ResNetModel(tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1])),
        _PIXELS,
    ),
    "regnet": (
        lambda: tf.RegNetModel(
            tf.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8)
        ),
        _PIXELS,
    ),
    "levit": (
        lambda: tf.LevitModel(
            tf.LevitConfig(
                image_size=32,
                hidden_sizes=[32, 48, 64],
                num_attention_heads=[2, 2, 2],
                depths=[1, 1, 1],
                key_dim=[8, 8, 8],
            )
        ),
        _PIXELS,
    ),
    "pvt-v2": (
        lambda: tf.PvtV2Model(
            tf.PvtV2Config(
                hidden_sizes=[16, 32],
                num_encoder_blocks=2,
                depths=[1, 1],
                sr_ratios=[2, 1],
                num_attention_heads=[1, 2],
                patch_sizes=[7, 3],
                strides=[4, 2],
                mlp_ratios=[2, 2],
            )
        ),
        _PIXELS,
    ),
}
QUICK = ("bert (eager)", "distilbert", "gpt2 (eager)", "llama (gqa, padded)", "t5 encoder", "bloom")
QUICK += ("clip text", "dinov2")


def _unit_weights(model: nn.Module) -> nn.Module:
    """Weights of unit-scale outputs (init std 0.02 hides a wrong scale or bias): 1/√fan-in, a conv's
    fan-in being its input channels per group times its kernel (EfficientNet's activations vanish to
    ~1e-32 with the last dim alone, and relative errors become 0/0)."""
    generator = torch.Generator().manual_seed(0)
    convs = {id(m.weight) for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)}
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel() if id(p) in convs else p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=generator) * fan_in**-0.5)
    return model.eval()


def _first(output: object) -> torch.Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if isinstance(hidden, torch.Tensor) else output[0]  # type: ignore[index]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖a‖ in float64 (MobileViT's outputs with one channel left are ~1e-33: float32 squares
    underflow to 0/0); 0 where both are equal."""
    if a.shape != b.shape:
        return float("inf")
    a, b = a.double(), b.double()
    return 0.0 if torch.equal(a, b) else ((a - b).norm() / a.norm()).item()


def check(name: str, heads: str, one_left: bool = False, rounds: int = 1) -> dict:
    """One architecture in one head mode: ``status`` ok / refused / WRONG and the measurements.
    ``one_left``: every group keeps one channel (one head, one head dim) instead of half; ``rounds``:
    prune that many times, each time tracing the model the round before pruned."""
    factory, inputs = CASES[name]
    torch.manual_seed(0)
    model = pruned = _unit_weights(factory())
    generator, errors, groups, use_ours = torch.Generator().manual_seed(0), [], [], False
    for _ in range(rounds):
        outcome = _prune_zeroed(pruned, inputs, heads, one_left, generator)
        if isinstance(outcome, dict):
            return outcome
        zeroed, pruned, count, warned = outcome
        with torch.no_grad():
            expected, got = _first(zeroed(**inputs)), _first(pruned(**inputs))
        errors.append(_rel(expected, got))
        groups.append(count)
        use_ours |= warned
    result = {
        "groups": groups[0] if rounds == 1 else groups,
        "params_kept": sum(p.numel() for p in pruned.parameters())
        / sum(p.numel() for p in model.parameters()),
        "rel_error": max(errors),
    }
    with tempfile.TemporaryDirectory() as directory:
        pruned.save_pretrained(directory)
        loaded = (
            load_pretrained(type(pruned), directory) if use_ours else type(pruned).from_pretrained(directory)
        )
    with torch.no_grad():
        result["reload_rel_error"] = _rel(got, _first(loaded.eval()(**inputs)))
    result["reload"] = "load_pretrained" if use_ours else "from_pretrained"
    exact = result["rel_error"] < 1e-5 and result["reload_rel_error"] < 1e-5
    return {"status": "ok" if exact else "WRONG", **result}


def _prune_zeroed(
    model: nn.Module, inputs: dict, heads: str, one_left: bool, generator: torch.Generator
) -> tuple[nn.Module, nn.Module, int, bool] | dict:
    """Choose channels of every group without a norm layer, zero their weights on both sides (a query
    head alone is silenced by its output-projection columns only), prune exactly those:
    ``(zeroed, pruned, groups, whether apply_plan pointed to load_pretrained)``, or a refusal."""
    try:
        with warnings.catch_warnings():  # parameters the forward does not read (a mask token) stay whole
            warnings.simplefilter("ignore")
            graph = DependencyGraph.build(model, inputs, heads=heads)
    except ValueError as error:
        return {"status": "refused", "at": "graph", "reason": f"{type(error).__name__}: {error}"[:200]}
    groups = [g for g in graph.groups if g.size > 1 and g.exact]  # not under LayerNorm, RMSNorm, a mean …
    removals = {
        g.index: torch.randperm(g.size, generator=generator)[
            : g.size - g.multiple if one_left else g.size // 2
        ].tolist()
        for g in groups
    }
    zeroed = copy.deepcopy(model)
    tensors = dict(zeroed.named_parameters())
    with torch.no_grad():
        for group in groups:
            for m, member in enumerate(group.members):
                if member.tensor in tensors:  # a batch norm's statistics need not be zeroed: its scale is
                    index = torch.as_tensor(group.indices(m, removals[group.index]))
                    tensors[member.tensor].index_fill_(member.dim, index, 0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pruned = apply_plan(zeroed, PruningPlan(graph, removals))
        except ValueError as error:
            return {"status": "refused", "at": "prune", "reason": f"{type(error).__name__}: {error}"[:200]}
    return zeroed, pruned, len(groups), any("load_pretrained" in str(w.message) for w in caught)


def _table(results: dict[str, dict[str, dict]]) -> str:
    lines = ["| architecture | mode | status | groups | params kept | rel. error | reload (rel. error) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, modes in results.items():
        for heads, r in modes.items():
            if r["status"] == "refused":
                lines.append(f"| {name} | {heads} | refused at {r['at']}: {r['reason'][:110]}… | | | | |")
                continue
            lines.append(
                f"| {name} | {heads} | {r['status']} | {r['groups']} | {r['params_kept']:.2f} | "
                f"{r['rel_error']:.1e} | {r['reload']} ({r['reload_rel_error']:.1e}) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="eight architectures (≤ 60 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    opts = parser.parse_args(argv)
    torch.set_num_threads(2)
    tf.utils.logging.set_verbosity_error()
    tf.utils.logging.disable_progress_bar()
    start, results = time.perf_counter(), {}
    for name in QUICK if opts.quick else CASES:
        results[name] = {
            f"{heads}{suffix}": check(name, heads, one_left, rounds)
            for suffix, one_left, rounds in (("", False, 1), (", one left", True, 1), (", twice", False, 2))
            for heads in ("heads", "head_dim")
        }
    print(_table(results))
    statuses = [r["status"] for modes in results.values() for r in modes.values()]
    summary = {
        "transformers": tf.__version__,
        "ok": statuses.count("ok"),
        "refused": statuses.count("refused"),
        "wrong": statuses.count("WRONG"),
        "wall_s": time.perf_counter() - start,
        "results": results,
    }
    if opts.json:
        print(json.dumps(summary))
    return 1 if summary["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
