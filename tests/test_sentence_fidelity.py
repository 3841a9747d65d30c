from types import SimpleNamespace

import pytest
import torch
from torch import nn

from prunekit.sentence_fidelity import nn_agreement, sentence_embeddings


class _Echo(nn.Module):
    """Hidden state (id, 1) per token: (b, t, 2)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        hidden = torch.stack([input_ids.float(), torch.ones_like(input_ids, dtype=torch.float)], dim=-1)
        return SimpleNamespace(last_hidden_state=hidden)


def test_embeddings_average_only_unmasked_tokens_then_normalise() -> None:
    batch = {"input_ids": torch.tensor([[3, 5, 100]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    (row,) = sentence_embeddings(_Echo(), [batch])
    assert row.tolist() == pytest.approx((torch.tensor([4.0, 1.0]) / torch.tensor(17.0).sqrt()).tolist())


def test_nn_agreement_counts_sentences_with_the_same_nearest_neighbour() -> None:
    points = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    dense = torch.nn.functional.normalize(points, dim=1)  # neighbours: 0↔1, 2↔3
    assert nn_agreement(dense, dense) == 1.0
    swapped = dense[[0, 2, 1, 3]]  # sentences 1 and 2 exchange embeddings
    assert nn_agreement(dense, swapped) == 0.0
