"""Atomic, pickle-free checkpoint files: JSON documents and safetensors tensor dictionaries.

Every write goes to a temporary file first and is moved into place with ``os.replace``, so a run
killed mid-write leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` as strict JSON to ``path`` atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=1, allow_nan=False))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a name → tensor dictionary as safetensors to ``path`` atomically."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimizer's per-parameter state split into tensors (``"opt.<index>.<key>"``) and JSON values."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {}
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{index}.{key}"] = value
            else:
                plain[f"{index}.{key}"] = value
    return tensors, plain


def load_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], plain: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_tensors` (param groups are those the optimizer was built with)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in plain.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
