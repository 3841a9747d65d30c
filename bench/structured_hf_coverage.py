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
left, tracing the pruned model. One more, "width", prunes the residual width as well: the model under a
linear head (its own outputs pin the width), half of every group, norm layers included; no zeroed model
computes the same there, so the pruned model must pass the check and reload to its own outputs. A
refusal is a success when its reason is stated; "WRONG" is the only failure.

    python bench/structured_hf_coverage.py            # all 127 architectures (~75 s)
    python bench/structured_hf_coverage.py --quick    # ≤ 60 s: eight of them
    python bench/structured_hf_coverage.py --json     # last stdout line: one JSON summary
"""

from __future__ import annotations

import argparse
import copy
import inspect
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
_PIXELS64 = {"pixel_values": torch.randn(1, 3, 64, 64, generator=_G)}
_AUDIO = {"input_values": torch.randn(1, 400, generator=_G)}
_W2V = dict(
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
_KV = {**_TEXT, "num_key_value_heads": 2}
_TS = dict(
    prediction_length=4,
    context_length=8,
    lags_sequence=[1, 2],
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    num_time_features=1,
    input_size=1,
)
_past_len = 8 + 2
_TS_IN = {
    "past_values": torch.randn(1, _past_len, generator=_G),
    "past_time_features": torch.randn(1, _past_len, 1, generator=_G),
    "past_observed_mask": torch.ones(1, _past_len),
    "future_values": torch.randn(1, 4, generator=_G),
    "future_time_features": torch.randn(1, 4, 1, generator=_G),
}
_PATCH_IN = {"past_values": torch.randn(1, 32, 3, generator=_G)}
_S2T_IN = {"input_features": torch.randn(1, 16, 8, generator=_G), "decoder_input_ids": _IDS["input_ids"][:1]}

_DETR = {  # a small transformers ResNet backbone: no timm, nothing pretrained
    "use_timm_backbone": False, "use_pretrained_backbone": False,
    "backbone_config": tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                                       out_features=["stage2"]),
    "d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_queries": 4,
}  # fmt: skip

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
    # transformers architectures added in the ninth session (a helper's sweep)
    # decoders
    "gpt-neo": (
        lambda: tf.GPTNeoModel(
            tf.GPTNeoConfig(
                vocab_size=50,
                max_position_embeddings=16,
                hidden_size=32,
                num_layers=2,
                num_heads=4,
                attention_types=[[["global", "local"], 1]],
                window_size=4,
                intermediate_size=64,
            )
        ),
        _IDS,
    ),
    "codegen": (
        lambda: tf.CodeGenModel(
            tf.CodeGenConfig(vocab_size=50, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_inner=64)
        ),
        _IDS,
    ),
    "starcoder2": (lambda: tf.Starcoder2Model(tf.Starcoder2Config(**_KV)), _IDS),
    "persimmon": (lambda: tf.PersimmonModel(tf.PersimmonConfig(**_TEXT)), _IDS),
    "olmo": (lambda: tf.OlmoModel(tf.OlmoConfig(**_KV)), _IDS),
    "nemotron": (lambda: tf.NemotronModel(tf.NemotronConfig(**_KV, head_dim=8)), _IDS),
    "glm": (lambda: tf.GlmModel(tf.GlmConfig(**_KV, head_dim=8, pad_token_id=0)), _IDS),
    "helium": (lambda: tf.HeliumModel(tf.HeliumConfig(**_KV, head_dim=8)), _IDS),
    "qwen3-moe": (
        lambda: tf.Qwen3MoeModel(
            tf.Qwen3MoeConfig(
                **_KV, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32
            )
        ),
        _IDS,
    ),
    "olmoe": (lambda: tf.OlmoeModel(tf.OlmoeConfig(**_KV, num_experts=4, num_experts_per_tok=2)), _IDS),
    "granitemoe": (
        lambda: tf.GraniteMoeModel(tf.GraniteMoeConfig(**_KV, num_local_experts=4, num_experts_per_tok=2)),
        _IDS,
    ),
    "dbrx": (
        lambda: tf.DbrxModel(
            tf.DbrxConfig(
                vocab_size=50,
                d_model=32,
                n_heads=4,
                n_layers=2,
                attn_config={"kv_n_heads": 2, "rope_theta": 10000.0, "clip_qkv": 8.0},
                ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2},
            )
        ),
        _IDS,
    ),
    "jetmoe": (
        lambda: tf.JetMoeModel(
            tf.JetMoeConfig(
                vocab_size=50,
                hidden_size=32,
                num_hidden_layers=2,
                num_key_value_heads=2,
                kv_channels=8,
                intermediate_size=64,
                num_local_experts=4,
                num_experts_per_tok=2,
            )
        ),
        _IDS,
    ),
    "phimoe": (
        lambda: tf.PhimoeModel(tf.PhimoeConfig(**_KV, num_local_experts=4, num_experts_per_tok=2)),
        _IDS,
    ),
    "deepseek-v3 (MLA)": (
        lambda: tf.DeepseekV3Model(
            tf.DeepseekV3Config(
                **{**_TEXT, "num_attention_heads": 4},
                num_key_value_heads=4,
                moe_intermediate_size=32,
                n_routed_experts=4,
                n_shared_experts=1,
                num_experts_per_tok=2,
                n_group=1,
                topk_group=1,
                first_k_dense_replace=1,
                q_lora_rank=16,
                kv_lora_rank=16,
                qk_rope_head_dim=4,
                qk_nope_head_dim=8,
                v_head_dim=8,
            )
        ),
        _IDS,
    ),
    # seq2seq
    "pegasus": (
        lambda: tf.PegasusModel(
            tf.PegasusConfig(**_SEQ2SEQ, max_position_embeddings=16, decoder_start_token_id=0)
        ),
        {**_IDS, "decoder_input_ids": _IDS["input_ids"]},
    ),
    "mbart": (lambda: tf.MBartModel(tf.MBartConfig(**_SEQ2SEQ, max_position_embeddings=16)), _IDS),
    "marian": (
        lambda: tf.MarianModel(
            tf.MarianConfig(**_SEQ2SEQ, max_position_embeddings=16, pad_token_id=0, decoder_start_token_id=0)
        ),
        {**_IDS, "decoder_input_ids": _IDS["input_ids"]},
    ),
    "m2m100": (
        lambda: tf.M2M100Model(
            tf.M2M100Config(**_SEQ2SEQ, max_position_embeddings=16, pad_token_id=1, decoder_start_token_id=2)
        ),
        {**_IDS, "decoder_input_ids": _IDS["input_ids"]},
    ),
    "blenderbot": (
        lambda: tf.BlenderbotModel(
            tf.BlenderbotConfig(**_SEQ2SEQ, max_position_embeddings=16, decoder_start_token_id=1)
        ),
        {**_IDS, "decoder_input_ids": _IDS["input_ids"]},
    ),
    # encoders
    "longformer": (
        lambda: tf.LongformerModel(tf.LongformerConfig(**_TEXT, attention_window=4, pad_token_id=1)),
        {"input_ids": torch.randint(2, 50, (2, 8), generator=_G)},
    ),
    "big_bird": (
        lambda: tf.BigBirdModel(
            tf.BigBirdConfig(**_TEXT, max_position_embeddings=64, attention_type="original_full")
        ),
        _IDS,
    ),
    "squeezebert": (lambda: tf.SqueezeBertModel(tf.SqueezeBertConfig(**_TEXT, embedding_size=32)), _IDS),
    "mobilebert": (
        lambda: tf.MobileBertModel(
            tf.MobileBertConfig(
                **_TEXT, embedding_size=16, intra_bottleneck_size=16, num_feedforward_networks=1
            )
        ),
        _IDS,
    ),
    "convbert": (lambda: tf.ConvBertModel(tf.ConvBertConfig(**_TEXT, embedding_size=32)), _IDS),
    "fnet": (
        lambda: tf.FNetModel(tf.FNetConfig(**{k: v for k, v in _TEXT.items() if k != "num_attention_heads"})),
        _IDS,
    ),
    "canine": (
        lambda: tf.CanineModel(
            tf.CanineConfig(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=4,
                intermediate_size=64,
                num_hash_buckets=64,
                num_hash_functions=4,
                local_transformer_stride=4,
                downsampling_rate=4,
            )
        ),
        {"input_ids": torch.randint(0, 200, (1, 16), generator=_G)},
    ),
    "nystromformer": (
        lambda: tf.NystromformerModel(
            tf.NystromformerConfig(**_TEXT, num_landmarks=4, segment_means_seq_len=8)
        ),
        {"input_ids": torch.randint(0, 50, (1, 8), generator=_G)},
    ),
    "data2vec-text": (lambda: tf.Data2VecTextModel(tf.Data2VecTextConfig(**_TEXT)), _PADDED),
    "roberta-prelayernorm": (
        lambda: tf.RobertaPreLayerNormModel(tf.RobertaPreLayerNormConfig(**_TEXT)),
        _PADDED,
    ),
    "megatron-bert": (lambda: tf.MegatronBertModel(tf.MegatronBertConfig(**_TEXT)), _IDS),
    "layoutlm": (lambda: tf.LayoutLMModel(tf.LayoutLMConfig(**_TEXT, max_2d_position_embeddings=16)), _IDS),
    "rembert": (
        lambda: tf.RemBertModel(tf.RemBertConfig(**_TEXT, input_embedding_size=16, output_embedding_size=16)),
        _IDS,
    ),
    "ernie": (lambda: tf.ErnieModel(tf.ErnieConfig(**_TEXT)), _IDS),
    # vision
    "swinv2": (
        lambda: tf.Swinv2Model(
            tf.Swinv2Config(
                image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4
            )
        ),
        _PIXELS,
    ),
    "convnextv2": (
        lambda: tf.ConvNextV2Model(tf.ConvNextV2Config(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])),
        _PIXELS,
    ),
    "efficientnet": (
        lambda: tf.EfficientNetModel(
            tf.EfficientNetConfig(
                image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320
            )
        ),
        _PIXELS,
    ),
    "mobilenet_v1": (
        lambda: tf.MobileNetV1Model(tf.MobileNetV1Config(image_size=32, depth_multiplier=0.25)),
        _PIXELS,
    ),
    "mobilenet_v2": (
        lambda: tf.MobileNetV2Model(tf.MobileNetV2Config(image_size=32, depth_multiplier=0.25)),
        _PIXELS,
    ),
    "bit": (
        lambda: tf.BitModel(
            tf.BitConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_groups=4)
        ),
        _PIXELS,
    ),
    "dpt": (
        lambda: tf.DPTModel(
            tf.DPTConfig(
                **{**_VISION, "num_hidden_layers": 4},
                backbone_out_indices=[0, 1, 2, 3],
                neck_hidden_sizes=[8, 8, 16, 16],
                fusion_hidden_size=16,
            ),
            add_pooling_layer=False,
        ),
        _PIXELS,
    ),
    "yolos": (
        lambda: tf.YolosModel(
            tf.YolosConfig(**{**_VISION, "image_size": [32, 32]}, num_detection_tokens=4),
            add_pooling_layer=False,
        ),
        _PIXELS,
    ),
    "focalnet": (
        lambda: tf.FocalNetModel(
            tf.FocalNetConfig(
                image_size=32,
                patch_size=4,
                embed_dim=16,
                depths=[1, 1],
                focal_levels=[2, 2],
                focal_windows=[3, 3],
            )
        ),
        _PIXELS,
    ),
    "hiera": (
        lambda: tf.HieraModel(
            tf.HieraConfig(
                image_size=[32, 32],
                patch_size=[3, 3],
                patch_stride=[2, 2],
                patch_padding=[1, 1],
                embed_dim=16,
                num_heads=[1, 2],
                depths=[1, 1],
                query_stride=[2, 2],
                masked_unit_size=[4, 4],
                masked_unit_attention=[True, False],
                num_query_pool=1,
            )
        ),
        _PIXELS,
    ),
    "mobilevitv2": (
        lambda: tf.MobileViTV2Model(tf.MobileViTV2Config(image_size=32, width_multiplier=0.25)),
        _PIXELS64,
    ),
    "cvt": (
        lambda: tf.CvtModel(
            tf.CvtConfig(
                embed_dim=[16, 32],
                num_heads=[1, 2],
                depth=[1, 2],
                patch_sizes=[7, 3],
                patch_stride=[4, 2],
                patch_padding=[2, 1],
                mlp_ratio=[2.0, 2.0],
                attention_drop_rate=[0.0, 0.0],
                drop_rate=[0.0, 0.0],
                drop_path_rate=[0.0, 0.0],
                qkv_bias=[True, True],
                cls_token=[False, True],
                qkv_projection_method=["dw_bn", "dw_bn"],
                kernel_qkv=[3, 3],
                padding_kv=[1, 1],
                stride_kv=[2, 2],
                padding_q=[1, 1],
                stride_q=[1, 1],
            )
        ),
        _PIXELS,
    ),
    "glpn": (
        lambda: tf.GLPNModel(
            tf.GLPNConfig(
                num_encoder_blocks=2,
                depths=[1, 1],
                sr_ratios=[2, 1],
                hidden_sizes=[16, 32],
                patch_sizes=[7, 3],
                strides=[4, 2],
                num_attention_heads=[1, 2],
                mlp_ratios=[2, 2],
            )
        ),
        _PIXELS,
    ),
    "poolformer": (
        lambda: tf.PoolFormerModel(
            tf.PoolFormerConfig(
                hidden_sizes=[16, 32],
                depths=[1, 1],
                num_encoder_blocks=2,
                patch_sizes=[7, 3],
                strides=[4, 2],
                padding=[2, 1],
            )
        ),
        _PIXELS,
    ),
    "data2vec-vision": (lambda: tf.Data2VecVisionModel(tf.Data2VecVisionConfig(**_VISION)), _PIXELS),
    "dinov2-with-registers": (
        lambda: tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(**_VISION, num_register_tokens=2)),
        _PIXELS,
    ),
    # audio
    "hubert": (lambda: tf.HubertModel(tf.HubertConfig(**_W2V)), _AUDIO),
    "wavlm": (lambda: tf.WavLMModel(tf.WavLMConfig(**_W2V, num_buckets=16, max_bucket_distance=32)), _AUDIO),
    "sew": (lambda: tf.SEWModel(tf.SEWConfig(**_W2V, squeeze_factor=2)), _AUDIO),
    "data2vec-audio": (
        lambda: tf.Data2VecAudioModel(
            tf.Data2VecAudioConfig(
                **{k: v for k, v in _W2V.items() if k not in ("num_conv_pos_embeddings",)},
                conv_pos_kernel_size=5,
                num_conv_pos_embeddings=2,
            )
        ),
        _AUDIO,
    ),
    "speech_to_text": (
        lambda: tf.Speech2TextModel(
            tf.Speech2TextConfig(
                **_SEQ2SEQ,
                input_feat_per_channel=8,
                input_channels=1,
                num_conv_layers=1,
                conv_channels=16,
                conv_kernel_sizes=[5],
                max_source_positions=16,
                max_target_positions=16,
                pad_token_id=1,
                decoder_start_token_id=2,
            )
        ),
        _S2T_IN,
    ),
    "audio-spectrogram-transformer": (
        lambda: tf.ASTModel(
            tf.ASTConfig(
                **{k: v for k, v in _VISION.items() if k != "image_size"},
                num_mel_bins=16,
                max_length=32,
                frequency_stride=8,
                time_stride=8,
            )
        ),
        {"input_values": torch.randn(1, 32, 16, generator=_G)},
    ),
    # time series
    "patchtst": (
        lambda: tf.PatchTSTModel(
            tf.PatchTSTConfig(
                num_input_channels=3,
                context_length=32,
                patch_length=8,
                patch_stride=8,
                d_model=32,
                num_attention_heads=4,
                num_hidden_layers=2,
                ffn_dim=64,
                do_mask_input=False,
            )
        ),
        _PATCH_IN,
    ),
    "patchtsmixer": (
        lambda: tf.PatchTSMixerModel(
            tf.PatchTSMixerConfig(
                num_input_channels=3,
                context_length=32,
                patch_length=8,
                patch_stride=8,
                d_model=32,
                num_layers=2,
                self_attn=True,
                self_attn_heads=4,
            )
        ),
        _PATCH_IN,
    ),
    "time_series_transformer": (
        lambda: tf.TimeSeriesTransformerModel(tf.TimeSeriesTransformerConfig(**_TS)),
        _TS_IN,
    ),
    "informer": (lambda: tf.InformerModel(tf.InformerConfig(**_TS, attention_type="full")), _TS_IN),
    # multimodal towers
    "blip vision": (lambda: tf.BlipVisionModel(tf.BlipVisionConfig(**_VISION)), _PIXELS),
    "owlvit vision": (lambda: tf.OwlViTVisionModel(tf.OwlViTVisionConfig(**_VISION)), _PIXELS),
    # state space / recurrent
    "mamba": (
        lambda: tf.MambaModel(
            tf.MambaConfig(
                vocab_size=50,
                hidden_size=32,
                state_size=8,
                num_hidden_layers=2,
                expand=2,
                conv_kernel=4,
                use_mambapy=True,
            )
        ),
        _IDS,
    ),
    "mamba2": (
        lambda: tf.Mamba2Model(
            tf.Mamba2Config(
                vocab_size=50,
                hidden_size=32,
                state_size=8,
                num_hidden_layers=2,
                num_heads=8,
                head_dim=8,
                expand=2,
                n_groups=1,
                conv_kernel=4,
                chunk_size=8,
            )
        ),
        _IDS,
    ),
    "rwkv": (
        lambda: tf.RwkvModel(
            tf.RwkvConfig(
                vocab_size=50,
                hidden_size=32,
                num_hidden_layers=2,
                attention_hidden_size=32,
                intermediate_size=64,
                context_length=16,
            )
        ),
        _IDS,
    ),
    "jamba": (
        lambda: tf.JambaModel(
            tf.JambaConfig(
                **_KV,
                num_experts=2,
                num_experts_per_tok=1,
                expert_layer_period=2,
                expert_layer_offset=1,
                attn_layer_period=2,
                attn_layer_offset=1,
                mamba_d_state=8,
                mamba_d_conv=4,
                mamba_expand=2,
                use_mamba_kernels=False,
            )
        ),
        _IDS,
    ),
    "recurrent_gemma": (
        lambda: tf.RecurrentGemmaModel(
            tf.RecurrentGemmaConfig(
                vocab_size=50,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=1,
                intermediate_size=64,
                lru_width=32,
                attention_window_size=8,
                conv1d_width=4,
                block_types=["recurrent", "attention"],
                head_dim=8,
            )
        ),
        _IDS,
    ),
    # detection
    "detr": (lambda: tf.DetrModel(tf.DetrConfig(**_DETR)), _PIXELS),
    "conditional_detr": (lambda: tf.ConditionalDetrModel(tf.ConditionalDetrConfig(**_DETR)), _PIXELS),
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
    loaded = _reloaded(pruned, use_ours)
    if isinstance(loaded, dict):
        return loaded
    with torch.no_grad():
        result["reload_rel_error"] = _rel(got, _first(loaded(**inputs)))
    result["reload"] = "load_pretrained" if use_ours else "from_pretrained"
    exact = result["rel_error"] < 1e-5 and result["reload_rel_error"] < 1e-5
    return {"status": "ok" if exact else "WRONG", **result}


class _Classifier(nn.Module):
    """A user's linear head on the model's first output: the residual width is no model output then."""

    def __init__(self, model: nn.Module, width: int) -> None:
        super().__init__()
        self.model, self.head = model, nn.Linear(width, 3)

    def forward(self, **inputs: object) -> torch.Tensor:
        return self.head(_first(self.model(**inputs)))


def check_width(name: str) -> dict:
    """The residual width too: the model under a linear head (its outputs pin the width otherwise), half
    of every group pruned, the check on. A norm layer reads the width, so the pruned model cannot be
    compared with a zeroed one: it must pass the check, and reload (``from_pretrained``, or
    ``load_pretrained`` where ``apply_plan`` says so) to the same outputs."""
    factory, inputs = CASES[name]
    torch.manual_seed(0)
    model = _unit_weights(factory())
    with torch.no_grad():
        width = _first(model(**inputs)).shape[-1]
    wrapped = _Classifier(model, width).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = DependencyGraph.build(wrapped, inputs)
    except ValueError as error:
        return {"status": "refused", "at": "graph", "reason": f"{type(error).__name__}: {error}"[:200]}
    generator = torch.Generator().manual_seed(0)
    groups = [g for g in graph.groups if g.size > 1]
    removals = {g.index: torch.randperm(g.size, generator=generator)[: g.size // 2].tolist() for g in groups}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pruned = apply_plan(wrapped, PruningPlan(graph, removals)).model
        except ValueError as error:
            return {"status": "refused", "at": "prune", "reason": f"{type(error).__name__}: {error}"[:200]}
    use_ours = any("load_pretrained" in str(w.message) for w in caught)
    with torch.no_grad():
        got = _first(pruned(**inputs))
    loaded = _reloaded(pruned, use_ours)
    if isinstance(loaded, dict):
        return loaded
    with torch.no_grad():
        reload_error = _rel(got, _first(loaded(**inputs)))
    kept = sum(p.numel() for p in pruned.parameters()) / sum(p.numel() for p in model.parameters())
    return {
        "status": "ok" if reload_error < 1e-5 else "WRONG",
        "groups": len(groups),
        "params_kept": kept,
        "width": [width, got.shape[-1]],
        "rel_error": None,  # no zeroed reference: a norm layer reads the width
        "reload": "load_pretrained" if use_ours else "from_pretrained",
        "reload_rel_error": reload_error,
    }


def _reloaded(pruned: nn.Module, use_ours: bool) -> nn.Module | dict:
    """``pruned`` saved with ``save_pretrained`` and loaded back (with ``load_pretrained`` where
    ``use_ours``), in eval mode; or a refusal where this layout cannot be reloaded (said, not silent)."""
    kwargs = {}  # the constructor arguments the factory used (DPT, YOLOS and ViT are built without a pooler)
    if "add_pooling_layer" in inspect.signature(type(pruned).__init__).parameters:
        kwargs["add_pooling_layer"] = getattr(pruned, "pooler", None) is not None
    with tempfile.TemporaryDirectory() as directory:
        pruned.save_pretrained(directory)
        try:
            if use_ours:
                return load_pretrained(type(pruned), directory, **kwargs)
            return type(pruned).from_pretrained(directory, **kwargs).eval()
        except ValueError as error:
            return {"status": "refused", "at": "reload", "reason": f"{type(error).__name__}: {error}"[:200]}


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
                f"{'—' if r['rel_error'] is None else format(r['rel_error'], '.1e')} | {r['reload']} "
                f"({r['reload_rel_error']:.1e}) |"
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
        results[name]["width"] = check_width(name)
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
