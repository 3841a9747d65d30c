"""Save a pruned model without pickle and load it back into its original architecture.

``save_pruned`` writes ``weights.safetensors`` and ``manifest.json`` (the shape of every parameter and
buffer). ``load_pruned`` builds the original model (a module instance, or a class / factory called
without arguments), gives every tensor the manifest's shape, updates module attributes through the
module handlers, then loads the weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_weights, save_weights
from .modules import handler_for

FORMAT = "prunekit-structured/1"


def save_pruned(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write ``directory/weights.safetensors`` and ``directory/manifest.json``; returns ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    save_weights(model, directory / "weights.safetensors")
    manifest = {"format": FORMAT, "architecture": type(model).__qualname__, "shapes": shapes}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory


def load_pruned(model: nn.Module | Callable[[], nn.Module], directory: str | os.PathLike[str]) -> nn.Module:
    """The original architecture resized to the saved shapes, with the saved weights."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{str(manifest_path)!r} does not exist; save with save_pruned(model, directory)"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{str(manifest_path)!r} has format {manifest.get('format')!r}; expected {FORMAT!r}")
    if not isinstance(model, nn.Module):
        model = model()
    _resize(model, {k: tuple(v) for k, v in manifest["shapes"].items()})
    return load_weights(model, directory / "weights.safetensors")


def _resize(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give each parameter / buffer its shape from ``shapes`` (zeros) and update the resized modules."""
    touched = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        resized = False
        for store in (module._parameters, module._buffers):
            for local, tensor in store.items():
                shape = shapes.get(prefix + local)
                if tensor is None or shape is None or tuple(tensor.shape) == shape:
                    continue
                new = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
                is_param = isinstance(tensor, nn.Parameter)
                store[local] = nn.Parameter(new, requires_grad=tensor.requires_grad) if is_param else new
                resized = True
        if resized:
            touched.append(module)
    for module in touched:
        handler = handler_for(module)
        if handler is not None:
            handler.update(module)
