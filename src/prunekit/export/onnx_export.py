"""ONNX export of pruned models, verified with onnxruntime on the same inputs.

Masks are baked in: the exported copy has its pruned weights set to exact zeros, so the graph holds
ordinary dense initializers (a structurally pruned model, being smaller, exports as a smaller graph).
The exporter is ``torch.onnx.export(..., dynamo=True)`` — the supported path on torch ≥ 2.9, built on
``torch.export`` and onnxscript; it works offline. The TorchScript exporter is deprecated and unused.

Needs the optional packages onnx, onnxscript and onnxruntime: ``pip install prunekit[onnx]``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..masks import Masks

_MISSING = (
    "ONNX export needs the optional packages onnx, onnxscript and onnxruntime: pip install prunekit[onnx]"
)


@dataclass(frozen=True)
class OnnxExport:
    """Where the model was written and how far onnxruntime's outputs are from PyTorch's (max |Δ|)."""

    path: Path
    max_abs_diff: float | None


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike[str],
    *,
    masks: Masks | None = None,
    verify: bool = True,
    atol: float = 1e-4,
    opset_version: int | None = None,
) -> OnnxExport:
    """Export ``model`` (eval mode, ``masks`` applied to a copy) to one ``.onnx`` file.

    With ``verify`` the file is run in onnxruntime on ``example_inputs`` and every output must be within
    ``atol`` (max absolute difference) of the PyTorch model's, else ``ValueError``.
    """
    _require_onnx()
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    target = masks.apply(model) if masks is not None else copy.deepcopy(model)
    target.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress lines
        torch.onnx.export(
            target, args, str(path), dynamo=True, external_data=False, opset_version=opset_version
        )
    diff = _verify(target, args, path, atol) if verify else None
    return OnnxExport(path=path, max_abs_diff=diff)


def run_onnx(path: str | os.PathLike[str], inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Run an ONNX file in onnxruntime (CPU) on ``inputs``, in the graph's input order."""
    _require_onnx()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"the ONNX graph takes {len(names)} inputs ({names}), got {len(inputs)}")
    feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs, strict=True)}
    return [torch.from_numpy(o) for o in session.run(None, feed)]


def _verify(model: nn.Module, args: tuple[Any, ...], path: Path, atol: float) -> float:
    with torch.inference_mode():
        expected = model(*args)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    got = run_onnx(path, [a for a in args if isinstance(a, torch.Tensor)])
    if len(got) != len(expected):
        raise ValueError(f"onnxruntime returned {len(got)} outputs, PyTorch {len(expected)}; check {path}")
    diff = max(float((g - e).abs().max()) if e.numel() else 0.0 for g, e in zip(got, expected, strict=True))
    if diff > atol:
        raise ValueError(
            f"onnxruntime's outputs differ from PyTorch's by {diff:.3g} > atol={atol:g} for {str(path)!r}; "
            f"the exported graph does not reproduce the model"
        )
    return diff


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{_MISSING} (missing: {err.name})") from err
