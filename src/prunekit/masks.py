"""Masks: parameter name → boolean keep-mask, applied permanently, ephemerally or during training.

A mask is ``True`` where a weight is kept and ``False`` where it is pruned. Masks never change a
model's ``state_dict`` keys (no ``weight_orig``/``weight_mask`` re-parametrisation): permanent
pruning writes exact zeros into the parameter, the ephemeral context restores the saved tensors
bit-for-bit, and masked training keeps pruned entries at exactly zero through optimizer steps.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

_FORMAT = "prunekit.masks"
_VERSION = "1"


class Masks(Mapping[str, torch.Tensor]):
    """An immutable mapping from parameter names to boolean keep-masks of the parameter's shape."""

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        items: dict[str, torch.Tensor] = {}
        for name, mask in masks.items():
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise TypeError(f"mask for {name!r} must be a torch.bool tensor, got {got}")
            items[name] = mask.detach()
        self._masks = items

    # -- mapping -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, sparsity={self.sparsity:.4f})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Masks):
            return NotImplemented
        return self.keys() == other.keys() and all(torch.equal(self[n], other[n]) for n in self)

    __hash__ = None  # type: ignore[assignment]

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module, names: list[str]) -> Masks:
        """All-kept masks for the named parameters of ``model``."""
        params = dict(model.named_parameters())
        _check_names(names, params)
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in names})

    @classmethod
    def from_zeros(cls, model: nn.Module, names: list[str]) -> Masks:
        """Masks that keep exactly the nonzero entries of the named parameters."""
        params = dict(model.named_parameters())
        _check_names(names, params)
        return cls({n: params[n].detach() != 0 for n in names})

    # -- algebra -------------------------------------------------------------------------------
    def __and__(self, other: Masks) -> Masks:
        """Intersection: kept only where both keep. A name missing from one side counts as all-kept."""
        out = dict(self._masks)
        for name, mask in other.items():
            if name in out:
                _check_same_shape(name, out[name], mask)
                out[name] = out[name] & mask
            else:
                out[name] = mask
        return Masks(out)

    def __or__(self, other: Masks) -> Masks:
        """Union: kept where either keeps. Only names in both stay masked (missing = all-kept)."""
        out = {}
        for name in self._masks.keys() & other.keys():
            _check_same_shape(name, self[name], other[name])
            out[name] = self[name] | other[name]
        return Masks({n: out[n] for n in self if n in out})

    def to(self, device: torch.device | str) -> Masks:
        return Masks({n: m.to(device) for n, m in self.items()})

    # -- statistics ----------------------------------------------------------------------------
    @property
    def numel(self) -> int:
        return sum(m.numel() for m in self._masks.values())

    @property
    def kept(self) -> int:
        return sum(int(m.sum()) for m in self._masks.values())

    @property
    def sparsity(self) -> float:
        """Fraction of masked-over entries that are pruned (0 for empty masks)."""
        total = self.numel
        return 0.0 if total == 0 else 1.0 - self.kept / total

    def layer_sparsity(self) -> dict[str, float]:
        return {n: 1.0 - int(m.sum()) / max(m.numel(), 1) for n, m in self.items()}

    def empty_layers(self) -> list[str]:
        """Names whose every entry is pruned (a collapsed layer)."""
        return [n for n, m in self.items() if m.numel() > 0 and not bool(m.any())]

    # -- checking against a model --------------------------------------------------------------
    def validate(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Return the masked parameters, or raise ``ValueError`` naming unknown names or bad shapes."""
        params = dict(model.named_parameters())
        _check_names(list(self), params)
        for name, mask in self.items():
            if mask.shape != params[name].shape:
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(mask.shape)} but the parameter has shape "
                    f"{tuple(params[name].shape)}; masks must come from this model's architecture"
                )
        return {n: params[n] for n in self}

    # -- applying ------------------------------------------------------------------------------
    def apply(self, model: nn.Module, *, inplace: bool = False) -> nn.Module:
        """Zero the pruned entries (model pruning). Returns a pruned deep copy unless ``inplace``."""
        self.validate(model)
        target = model if inplace else copy.deepcopy(model)
        with torch.no_grad():
            for name, param in self.validate(target).items():
                param.masked_fill_(~self[name].to(param.device), 0)
        return target

    @contextmanager
    def ephemeral(self, model: nn.Module) -> Iterator[nn.Module]:
        """Zero pruned entries only inside the ``with`` body, then restore every masked tensor exactly.

        The saved copies are written back bit-for-bit on exit, also when the body raises, so any change
        the body made to the masked parameters is undone. Parameter objects keep their identity.
        """
        params = self.validate(model)
        saved = {n: p.detach().clone() for n, p in params.items()}
        try:
            with torch.no_grad():
                for name, param in params.items():
                    param.masked_fill_(~self[name].to(param.device), 0)
            yield model
        finally:
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(saved[name])

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the masks to a safetensors file (atomically: temporary file, then rename)."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {n: m.contiguous().cpu() for n, m in self.items()}
        save_file(tensors, str(tmp), metadata={"format": _FORMAT, "version": _VERSION})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Masks:
        """Read masks written by :meth:`save`; a file that is not such a file raises ``ValueError``."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"masks file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT:
                    raise ValueError(
                        f"{str(path)!r} is not a prunekit masks file "
                        f"(metadata format={meta.get('format')!r}); write masks with Masks.save"
                    )
                if meta.get("version") != _VERSION:
                    raise ValueError(
                        f"{str(path)!r} has masks format version {meta.get('version')!r}; "
                        f"this prunekit reads version {_VERSION!r}"
                    )
                return cls({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
        except (SafetensorError, json.JSONDecodeError, OSError) as err:
            raise ValueError(f"{str(path)!r} is not a readable masks file: {err}") from err


@dataclass
class MaskedTraining:
    """Keeps pruned weights at exactly zero while a model trains.

    Gradients of pruned entries are zeroed as they are computed, and after every optimizer step the
    masks are re-applied, so momentum, Adam moments and (decoupled) weight decay cannot revive a
    pruned weight. Call :meth:`remove` (or leave the ``with`` block) to detach.
    """

    model: nn.Module
    masks: Masks
    optimizer: torch.optim.Optimizer

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(self.optimizer).__name__}")
        self._params = self.masks.validate(self.model)
        self._device_masks = {n: self.masks[n].to(p.device) for n, p in self._params.items()}
        self.masks.apply(self.model, inplace=True)
        self._zero_optimizer_state()
        self._handles = [
            p.register_hook(_grad_masker(self._device_masks[n])) for n, p in self._params.items()
        ]
        self._handles.append(self.optimizer.register_step_post_hook(lambda *_: self.reapply()))

    def reapply(self) -> None:
        with torch.no_grad():
            for name, param in self._params.items():
                param.masked_fill_(~self._device_masks[name], 0)

    def _zero_optimizer_state(self) -> None:
        with torch.no_grad():
            for name, param in self._params.items():
                for value in self.optimizer.state.get(param, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape:
                        value.masked_fill_(~self._device_masks[name], 0)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> MaskedTraining:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _grad_masker(mask: torch.Tensor):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(~mask, 0)

    return hook


def _check_names(names: list[str], params: Mapping[str, torch.Tensor]) -> None:
    unknown = [n for n in names if n not in params]
    if unknown:
        sample = ", ".join(list(params)[:8]) + (", ..." if len(params) > 8 else "")
        raise ValueError(
            f"masks name parameters the model does not have: {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}; the model's parameters are: {sample}"
        )


def _check_same_shape(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"cannot combine masks for {name!r}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ"
        )
