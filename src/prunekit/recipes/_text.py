"""Calibration and evaluation text for transformer recipes (Shakespeare, tokenised offline)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..text import calibration_and_heldout
from .schema import Recipe
from .sections import hf_directory

EVAL_BATCH = 32


def text_job_parts(
    recipe: Recipe, model: nn.Module
) -> tuple[list[dict[str, torch.Tensor]], tuple[torch.Tensor, ...], Callable[[nn.Module], dict[str, float]]]:
    """(calibration batches, example inputs, metric function) for a Hugging Face encoder.

    The metric is ``cosine_to_dense``: the mean cosine similarity of mean-pooled sentence embeddings
    of the pruned and the dense model on held-out sentences (plays disjoint from the calibration).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(hf_directory(recipe.model.huggingface or "")))
    data = recipe.data
    calib_sentences, heldout = calibration_and_heldout()
    calibration = windows(tokenizer, calib_sentences, data.calibration_samples, data.seq_len, recipe.seed)
    picked = random.Random(recipe.seed).sample(heldout, data.eval_samples)
    encoded = [
        dict(tokenizer(picked[i : i + EVAL_BATCH], padding=True, return_tensors="pt"))
        for i in range(0, len(picked), EVAL_BATCH)
    ]
    dense = embed(model, encoded)

    def cosine(m: nn.Module) -> dict[str, float]:
        return {"cosine_to_dense": float((embed(m, encoded) * dense).sum(1).mean())}

    first = calibration[0]
    example = (first["input_ids"][:1], first["attention_mask"][:1])
    return calibration, example, cosine


def windows(tokenizer: Any, sentences: list[str], n: int, seq: int, seed: int, batch: int = 8) -> list[dict]:
    """``n`` windows of ``seq`` tokens ([CLS] body [SEP]) cut from seeded-shuffled sentences."""
    order = sentences[:]
    random.Random(seed).shuffle(order)
    ids: list[int] = []
    for sentence in order:
        ids.extend(tokenizer(sentence, add_special_tokens=False)["input_ids"])
        if len(ids) >= n * (seq - 2):
            break
    body = torch.tensor(ids[: n * (seq - 2)]).reshape(n, seq - 2)
    cls = torch.full((n, 1), tokenizer.cls_token_id)
    sep = torch.full((n, 1), tokenizer.sep_token_id)
    tokens = torch.cat([cls, body, sep], dim=1)  # (n, seq)
    return [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in tokens.split(batch)]


@torch.no_grad()
def embed(model: nn.Module, encoded: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings ``(n, hidden)``."""
    out = []
    for batch in encoded:
        hidden = model(**batch).last_hidden_state  # (b, t, d)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)
