"""Model weights on disk without pickle: safetensors files, written atomically.

Reading also accepts a ``torch.save``'d state_dict, loaded with ``weights_only=True`` (no code runs).
Anything else raises ``ValueError`` saying what the file is not and what would work.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``model.state_dict()`` to a safetensors file (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(_untie(tensors), str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.safetensors`` file or a ``torch.save``'d state_dict (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    state = _read_safetensors(path) if _looks_like_safetensors(path) else _read_torch(path)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"{str(path)!r} does not hold a state_dict (a mapping of names to tensors); save one with "
            "prunekit.checkpoints.save_weights(model, path) or torch.save(model.state_dict(), path)"
        )
    return state


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load ``path`` into ``model`` in place; mismatched names or shapes raise ``ValueError``."""
    state = read_weights(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{str(path)!r} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {wrong[:5]}; check the model name and its arguments"
        )
    model.load_state_dict(state)
    return model


def _looks_like_safetensors(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{str(path)!r} is a corrupt or truncated safetensors file: {err}") from err


def _read_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # garbage input raises anything from deep inside the unpickler
        raise ValueError(
            f"{str(path)!r} is not a model weights file (neither safetensors nor a torch.save'd state_dict "
            f"loadable with weights_only=True): {str(err).splitlines()[0]}"
        ) from err


def _untie(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory; give tied weights their own copy."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        pointer = value.untyped_storage().data_ptr()
        out[key] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return out
