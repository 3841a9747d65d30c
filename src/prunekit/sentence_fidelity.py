"""How close a pruned sentence encoder stays to its dense original: embeddings and neighbour agreement."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def sentence_embeddings(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Mean-pooled (over the attention mask), L2-normalised last hidden states: ``(n, hidden)``.

    ``batches`` are tokenizer outputs (``input_ids``, ``attention_mask`` …), as sentence-transformers
    pools them; the cosine of two models' embeddings is then a plain dot product.
    """
    out = []
    for batch in batches:
        hidden = model(**batch).last_hidden_state  # (b, t, d)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def nn_agreement(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Fraction of sentences whose nearest other sentence is the same under both embeddings ``(n, d)``."""

    def nearest(e: torch.Tensor) -> torch.Tensor:
        sim = e @ e.T  # (n, n) cosines
        sim.fill_diagonal_(-2.0)
        return sim.argmax(1)

    return float((nearest(dense) == nearest(pruned)).double().mean())
