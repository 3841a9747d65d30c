"""Calibration and evaluation text for transformer recipes (Shakespeare, tokenised offline)."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import nn

from ..sentence_fidelity import sentence_embeddings
from ..text import calibration_and_heldout, token_windows
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
    shuffled = random.Random(recipe.seed).sample(calib_sentences, len(calib_sentences))
    calibration = token_windows(tokenizer, shuffled, data.calibration_samples, data.seq_len)
    picked = random.Random(recipe.seed).sample(heldout, data.eval_samples)
    encoded = [
        dict(tokenizer(picked[i : i + EVAL_BATCH], padding=True, return_tensors="pt"))
        for i in range(0, len(picked), EVAL_BATCH)
    ]
    dense = sentence_embeddings(model, encoded)

    def cosine(m: nn.Module) -> dict[str, float]:
        return {"cosine_to_dense": float((sentence_embeddings(m, encoded) * dense).sum(1).mean())}

    first = calibration[0]
    example = (first["input_ids"][:1], first["attention_mask"][:1])
    return calibration, example, cosine
