"""``torch.export`` programs of pruned models (masks baked in as exact zeros)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..masks import Masks


def export_program(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    masks: Masks | None = None,
    path: str | os.PathLike[str] | None = None,
    strict: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of an eval-mode copy of ``model`` with ``masks`` applied.

    ``strict=False`` (the default) traces at the ATen level without TorchDynamo's Python checks. With
    ``path`` the program is also written by ``torch.export.save`` (read it back with
    ``torch.export.load``).
    """
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    target = masks.apply(model) if masks is not None else copy.deepcopy(model)
    program = torch.export.export(target.eval(), args, strict=strict)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, str(path))
    return program
