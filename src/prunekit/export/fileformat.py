"""Compressed, pickle-free model files: one safetensors file with a checksummed JSON manifest.

Layout: every tensor ``name`` is stored as its encoded parts ``"name::part"`` (see
:mod:`prunekit.export.encodings`); the safetensors metadata holds ``format``, ``version``, the
``manifest`` (JSON: per tensor its encoding, shape, dtype, integer params, part dtypes and sizes, and
the CRC-32 of its encoded bytes and of the decoded bytes) and ``manifest_sha256``. Every shape is in
the manifest, so :func:`load_compressed` checks a file against the model and loads one saved from a
structurally pruned model into its original architecture (resized to the manifest's shapes).

Writes go to a temporary file in the same directory, then ``os.replace``: an interrupted save leaves
the previous file intact. Reading never unpickles and raises, naming the problem:

- :class:`CorruptFileError` — truncated, a flipped byte, a checksum mismatch (naming the tensor);
- :class:`FormatVersionError` — not a prunekit compressed file, or a version this code cannot read;
- :class:`ArchitectureMismatchError` — the file's tensor names differ from the model's, or its shapes
  are not ones structured pruning of the model gives.

All three subclass :class:`CompressedFileError`, itself a ``ValueError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from .encodings import ENCODINGS, Encoded, decode, encode

FORMAT = "prunekit.compressed"
VERSION = "1"
_SEP = "::"


class CompressedFileError(ValueError):
    """A compressed model file that cannot be used as it is."""


class CorruptFileError(CompressedFileError):
    """Truncated or altered bytes: the file must be written again."""


class FormatVersionError(CompressedFileError):
    """Not a prunekit compressed file, or written in a format version this prunekit cannot read."""


class ArchitectureMismatchError(CompressedFileError):
    """The file's tensor names or shapes do not match the model it is loaded into."""


def save_compressed(
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    encoding: str | Mapping[str, str] = "auto",
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model``'s state_dict (or a name → tensor mapping) compressed, atomically.

    ``encoding`` is ``"auto"`` (smallest per tensor), one encoding name for every tensor, or a mapping
    from tensor names to encodings (the rest ``"auto"``). ``metadata`` (str → str) is kept in the
    manifest under ``"user"``.
    """
    state = _state(model)
    choices = _encoding_choices(encoding, state)
    encoded = {name: encode(t, choices.get(name, "auto")) for name, t in state.items()}
    manifest = {
        "tensors": {name: _entry(e, state[name]) for name, e in encoded.items()},
        "user": dict(metadata or {}),
    }
    if isinstance(model, nn.Module):
        from ..graph.io import layer_sizes

        manifest["layers"] = layer_sizes(model)  # sizes of a structurally pruned model that no tensor records
    text = json.dumps(manifest, sort_keys=True, allow_nan=False)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "manifest": text,
        "manifest_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    from safetensors.torch import save

    parts = {f"{name}{_SEP}{p}": t.contiguous() for name, e in encoded.items() for p, t in e.parts.items()}
    path = Path(path)
    _write_atomic(path, save(parts, metadata=header))
    return path


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified manifest of a compressed file (tensor names, encodings, shapes, dtypes, checksums)."""
    path = Path(path)
    return _manifest(path, _read_bytes(path))


def read_compressed(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The exact state_dict stored in ``path``, every checksum verified."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    data = _read_bytes(path)
    manifest = _manifest(path, data)
    try:
        stored = load(data)
    except SafetensorError as err:
        raise CorruptFileError(f"{str(path)!r} is truncated or corrupt: {err}; write it again") from err
    return {name: _decode_entry(path, name, entry, stored) for name, entry in manifest["tensors"].items()}


def load_compressed(model: nn.Module | Callable[[], nn.Module], path: str | os.PathLike[str]) -> nn.Module:
    """Load a compressed file into ``model`` in place and return it.

    ``model`` is a module or a class / factory called without arguments. Tensor names must match; a
    file saved from a structurally pruned model loads into the original architecture: its layers are
    first resized to the manifest's shapes (as :func:`prunekit.graph.load_pruned` does). Shapes that no
    resize can give (another dim, a layer whose handler cannot resize that dim) raise
    :class:`ArchitectureMismatchError` naming the tensor and both shapes, before ``model`` changes.
    """
    from ..graph.io import resize_problems, resize_to_shapes, set_layer_sizes

    if not isinstance(model, nn.Module):
        model = model()
    manifest = read_manifest(path)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: tuple(v["shape"]) for k, v in manifest["tensors"].items()}
    missing = sorted(expected.keys() - stored.keys())
    unexpected = sorted(stored.keys() - expected.keys())
    layers = manifest.get("layers", {})
    wrong = resize_problems(model, stored, layers) if not (missing or unexpected) else []
    if missing or unexpected or wrong:
        raise ArchitectureMismatchError(
            f"{str(path)!r} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shapes no resize can give {wrong[:5]}; build the architecture the file "
            f"was saved from (read_manifest(path) lists every tensor's shape)"
        )
    resize_to_shapes(model, stored)
    set_layer_sizes(model, layers)
    model.load_state_dict(read_compressed(path))
    return model


# -- writing ---------------------------------------------------------------------------------------
def _state(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    bad = [
        k for k, v in state.items() if not isinstance(k, str) or _SEP in k or not isinstance(v, torch.Tensor)
    ]
    if bad:
        raise TypeError(f"tensors to save need str names without {_SEP!r} and tensor values; bad: {bad[:5]}")
    return {k: v.detach().cpu() for k, v in state.items()}


def _encoding_choices(encoding: str | Mapping[str, str], state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    if isinstance(encoding, str):
        if encoding != "auto":
            ENCODINGS.get(encoding)
        return dict.fromkeys(state, encoding)
    unknown = sorted(set(encoding) - set(state))
    if unknown:
        raise ValueError(f"encoding names tensors the model does not have: {unknown[:5]}")
    for name in encoding.values():
        if name != "auto":
            ENCODINGS.get(name)
    return dict(encoding)


def _entry(e: Encoded, tensor: torch.Tensor) -> dict[str, Any]:
    return {
        "encoding": e.encoding,
        "shape": list(e.shape),
        "dtype": str(e.dtype).removeprefix("torch."),
        "params": e.params,
        "parts": {p: [str(t.dtype).removeprefix("torch."), t.numel()] for p, t in e.parts.items()},
        "crc32": _parts_crc(e.parts),
        "decoded_crc32": _crc(tensor),
    }


def _crc(*tensors: torch.Tensor) -> int:
    crc = 0
    for t in tensors:
        crc = zlib.crc32(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), crc)
    return crc


def _parts_crc(parts: Mapping[str, torch.Tensor]) -> int:
    """CRC-32 of the encoded parts in name order (the manifest's JSON keys are sorted)."""
    return _crc(*(parts[p] for p in sorted(parts)))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_payload(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_payload(f: BinaryIO, data: bytes) -> None:
    f.write(data)


# -- reading ---------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"compressed model file {str(path)!r} does not exist")
    return path.read_bytes()


def _manifest(path: Path, data: bytes) -> dict[str, Any]:
    """Parse the safetensors header, check format and version, verify the manifest's SHA-256."""
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if size < 2 or len(data) < 8 + size:
        raise CorruptFileError(f"{str(path)!r} is truncated (header of {size} bytes, file {len(data)} bytes)")
    try:
        meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise CorruptFileError(f"{str(path)!r} has a corrupt header: {err}; write it again") from err
    if meta.get("format") != FORMAT:
        raise FormatVersionError(
            f"{str(path)!r} is not a prunekit compressed file (format={meta.get('format')!r}); "
            f"write one with prunekit.export.save_compressed, or read plain weights with read_weights"
        )
    if meta.get("version") != VERSION:
        raise FormatVersionError(
            f"{str(path)!r} has compressed format version {meta.get('version')!r}; this prunekit reads "
            f"version {VERSION!r}: use the prunekit release that wrote it, or save the model again"
        )
    text = meta.get("manifest", "")
    if hashlib.sha256(text.encode()).hexdigest() != meta.get("manifest_sha256"):
        raise CorruptFileError(f"{str(path)!r}: the manifest checksum does not match; write the file again")
    return json.loads(text)


def _decode_entry(
    path: Path, name: str, entry: dict[str, Any], stored: dict[str, torch.Tensor]
) -> torch.Tensor:
    parts = {}
    for part, (dtype, numel) in entry["parts"].items():
        tensor = stored.get(f"{name}{_SEP}{part}")
        if tensor is None or str(tensor.dtype).removeprefix("torch.") != dtype or tensor.numel() != numel:
            raise CorruptFileError(f"{str(path)!r}: part {part!r} of tensor {name!r} is missing or altered")
        parts[part] = tensor
    if _parts_crc(parts) != entry["crc32"]:
        raise CorruptFileError(f"{str(path)!r}: checksum mismatch in tensor {name!r}; the file is corrupt")
    dtype = getattr(torch, entry["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise CorruptFileError(f"{str(path)!r}: tensor {name!r} has an unknown dtype {entry['dtype']!r}")
    encoded = Encoded(entry["encoding"], tuple(entry["shape"]), dtype, parts, entry["params"])
    try:
        tensor = decode(encoded)
    except (ValueError, RuntimeError, IndexError) as err:
        raise CorruptFileError(f"{str(path)!r}: tensor {name!r} does not decode: {err}") from err
    if _crc(tensor) != entry["decoded_crc32"]:
        raise CorruptFileError(f"{str(path)!r}: decoded tensor {name!r} fails its checksum")
    return tensor
