"""Hugging Face ``save_pretrained`` for pruned transformers models (masks baked in, config annotated).

The saved directory is an ordinary transformers checkpoint (``config.json`` + ``model.safetensors``)
that ``AutoModel.from_pretrained`` reads back unchanged; pruned weights are exact zeros and
``config.prunekit`` records the format version, the overall sparsity and each pruned parameter's
sparsity. A structurally pruned model (``prunekit.plan.apply_plan``) is saved at its smaller shapes with
the config :func:`prunekit.graph.hf_config.update_model` already updated (``hidden_size``,
``intermediate_size``, ``num_attention_heads`` …): ``from_pretrained`` reloads it where the config can
describe it, :func:`prunekit.graph.hf.load_pretrained` everywhere else (e.g. BERT with fewer heads of
the same size).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..masks import Masks

CONFIG_VERSION = 1


def save_pretrained(
    model: nn.Module, directory: str | os.PathLike[str], *, masks: Masks | None = None
) -> Path:
    """Apply ``masks`` to a copy of ``model`` (a transformers ``PreTrainedModel``) and ``save_pretrained`` it.

    Without ``masks`` the model is saved as it is and the sparsity is read from its zeros (parameters
    with two or more dimensions). The user's model and its config are left unchanged.
    """
    if not (hasattr(model, "save_pretrained") and hasattr(model, "config")):
        raise TypeError(
            f"save_pretrained needs a transformers PreTrainedModel, got {type(model).__name__}; "
            "for other models use prunekit.export.save_compressed"
        )
    target = masks.apply(model) if masks is not None else copy.deepcopy(model)
    target.config.prunekit = pruning_summary(target, masks)
    target.save_pretrained(str(directory))
    return Path(directory)


def pruning_summary(model: nn.Module, masks: Masks | None = None) -> dict[str, Any]:
    """``{"version", "sparsity", "parameters": {name: sparsity}}`` from ``masks`` or the model's zeros."""
    if masks is not None:
        per_param = masks.layer_sparsity()
        total, kept = masks.numel, masks.kept
    else:
        params = {n: p for n, p in model.named_parameters() if p.dim() >= 2}
        per_param = {n: 1.0 - int(p.count_nonzero()) / p.numel() for n, p in params.items()}
        total = sum(p.numel() for p in params.values())
        kept = sum(int(p.count_nonzero()) for p in params.values())
    return {
        "version": CONFIG_VERSION,
        "sparsity": 1.0 - kept / total if total else 0.0,
        "parameters": {n: s for n, s in per_param.items() if s > 0},
    }
