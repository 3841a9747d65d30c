"""Save a pruned model without pickle and load it back into its original architecture.

``save_pruned`` writes ``weights.safetensors`` and ``manifest.json`` (the shape of every parameter and
buffer, and the attributes no tensor records: an ``InstanceNorm2d(affine=False)``'s ``num_features``, an
``nn.Unflatten``'s ``unflattened_size``, an attention module's head count, a stored width).
``load_pruned`` builds the original model (a module instance, or a class / factory called without
arguments), gives every tensor the manifest's shape, updates module attributes through the module
handlers, sets the saved attributes, then loads the weights. :func:`resize_to_shapes` and
:func:`resize_problems` are shared with :func:`prunekit.export.load_compressed` and
:func:`prunekit.graph.hf.load_pretrained`, the saved attributes (:func:`layer_sizes`) with the first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import load_weights, save_weights
from .hf import attention_modules
from .modules import handler_for, parametrized_module, update_attributes
from .stored_sizes import stored_numbers, tensor_shapes, update_stored_sizes

FORMAT = "prunekit-structured/1"


def save_pruned(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write ``directory/weights.safetensors`` and ``directory/manifest.json``; returns ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    save_weights(model, directory / "weights.safetensors")
    manifest = {"format": FORMAT, "architecture": type(model).__qualname__, "shapes": shapes}
    manifest["layers"] = layer_sizes(model)
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
    resize_to_shapes(model, {k: tuple(v) for k, v in manifest["shapes"].items()})
    set_layer_sizes(model, manifest.get("layers", {}))
    return load_weights(model, directory / "weights.safetensors")


def resize_problems(
    model: nn.Module,
    shapes: Mapping[str, tuple[int, ...]],
    layers: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Why ``model`` cannot be resized to ``shapes`` (empty when it can), one line per tensor.

    A tensor keeps its number of dims and can only shrink, along the channel dims its module handler
    names (any dim longer than one for a module without a handler, as structured pruning slices it);
    an attention module's projections change only where ``layers`` (:func:`layer_sizes`) holds its head
    bookkeeping (a file written before it was saved has none).
    """
    saved = layers or {}
    attention = [f"{name}." for name in attention_modules(model) if not saved.get(name)]
    problems = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        handler = handler_for(module)
        dims = handler.dims(module) if handler is not None else None
        for local, tensor in _tensors(module):
            name, shape = prefix + local, shapes.get(prefix + local)
            if shape is None or tuple(tensor.shape) == tuple(shape):
                continue
            changed = [d for d, (a, b) in enumerate(zip(tensor.shape, shape, strict=False)) if a != b]
            plain = {d for d, n in enumerate(tensor.shape) if n > 1}  # sliced as a plain tensor
            allowed = dims.get(local, {}) if dims is not None else plain
            shrinks = all(d in allowed and shape[d] < tensor.shape[d] for d in changed)
            fits = len(shape) == tensor.dim() and shrinks
            if not fits or any(name.startswith(a) for a in attention):
                kind = type(module).__name__
                problems.append(f"{name}: file {tuple(shape)} vs model {tuple(tensor.shape)} ({kind})")
    return problems


def resize_to_shapes(model: nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> nn.Module:
    """Give each parameter / buffer its shape from ``shapes`` (zeros, tied tensors stay tied) and update
    the resized modules' attributes through their handlers; returns ``model``."""
    new: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(old) -> (old kept alive, replacement)
    before = tensor_shapes(model)
    touched = []
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        resized = False
        for local, tensor in _tensors(module):
            shape = shapes.get(prefix + local)
            if id(tensor) not in new and (shape is None or tuple(tensor.shape) == tuple(shape)):
                continue
            if id(tensor) not in new:
                zeros = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
                is_param = isinstance(tensor, nn.Parameter)
                replacement = nn.Parameter(zeros, requires_grad=tensor.requires_grad) if is_param else zeros
                new[id(tensor)] = (tensor, replacement)
            store = module._parameters if local in module._parameters else module._buffers
            store[local] = new[id(tensor)][1]
            resized = True
            if (parent := parametrized_module(prefix + local)) is not None:  # weight_norm's g and v
                touched.append(model.get_submodule(parent))
        if resized:
            touched.append(module)
    for module in dict.fromkeys(touched):  # a weight_norm layer is reached from g and from v
        update_attributes(module)
    update_stored_sizes(model, before)
    return model


def layer_sizes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Module name → the attributes no tensor records, JSON-ready: its handler's ``sizes`` and the
    numbers pruning rewrote (head counts, head sizes, stored widths, scales: see
    :func:`~.stored_sizes.stored_numbers`)."""
    out = {}
    for name, module in model.named_modules():
        handler = handler_for(module)
        values = {a: _plain(getattr(module, a)) for a in handler.sizes} if handler is not None else {}
        values |= stored_numbers(module)
        if values:
            out[name] = values
    return out


def set_layer_sizes(model: nn.Module, sizes: Mapping[str, Mapping[str, Any]]) -> None:
    """Set the attributes :func:`layer_sizes` saved (lists back to tuples)."""
    modules = dict(model.named_modules())
    for name, attributes in sizes.items():
        if name not in modules:
            raise ValueError(
                f"the saved sizes name module {name!r}, which {type(model).__name__} does not have; load "
                "into the architecture the model was saved from"
            )
        for attribute, value in attributes.items():
            setattr(modules[name], attribute, tuple(value) if isinstance(value, list) else value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list, torch.Size)) else value


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The module's own (not its children's) parameters and buffers that are set."""
    own = [*module._parameters.items(), *module._buffers.items()]
    return [(local, t) for local, t in own if t is not None]
