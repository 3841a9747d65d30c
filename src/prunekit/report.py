"""A pruning report: a table a person reads and JSON a machine reads, from one frozen record.

The report describes a model that is already pruned (pruned entries are exact zeros): nonzeros are
counted from the parameter values, so it shows what was achieved, next to what was requested.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._checks import check_sparsity
from .masks import Masks
from .metrics import (
    ExampleInputs,
    count_nonzeros,
    count_parameters,
    dense_bytes,
    layer_macs,
    nonzero_bytes,
    sparse_macs,
)

_DEFAULT_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass(frozen=True)
class LayerRow:
    """One prunable parameter. ``sparsity`` is the fraction of zero entries; MACs are per forward."""

    name: str
    shape: tuple[int, ...]
    params: int
    nonzeros: int
    sparsity: float
    requested_sparsity: float | None
    macs: int | None
    sparse_macs: int | None


@dataclass(frozen=True)
class PruningReport:
    """Requested vs achieved sparsity, counts, MACs and bytes of a pruned model.

    ``achieved_sparsity`` is over the rows (the prunable parameters); ``model_sparsity`` over every
    parameter, biases and norms included. MACs (``None`` without example inputs) cover the whole model;
    ``theoretical_speedup`` = dense / sparse MACs (``None`` when no MACs remain). ``nonzero_bytes`` is
    what the nonzero values take, before any index overhead of a sparse format.
    """

    rows: tuple[LayerRow, ...]
    total_params: int
    total_nonzeros: int
    prunable_params: int
    prunable_nonzeros: int
    requested_sparsity: float | None
    achieved_sparsity: float
    model_sparsity: float
    dense_macs: int | None
    sparse_macs: int | None
    theoretical_speedup: float | None
    dense_bytes: int
    nonzero_bytes: int
    method: str | None
    scope: str | None
    pattern: str | None
    empty_layers: tuple[str, ...]
    log10_paths: float | None = None
    has_path: bool | None = None
    log10_max_compression: float | None = None
    paths_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (ints, floats, strings, None, lists) for ``json``."""
        return _plain(dataclasses.asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (no NaN or Infinity) of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_text(self) -> str:
        """An aligned table of the rows, then the totals, for a person to read."""
        with_macs = self.dense_macs is not None
        header = ["layer", "shape", "params", "nonzeros", "sparsity", "requested"]
        header += ["MACs", "sparse MACs"] if with_macs else []
        table = [header]
        for row in self.rows:
            shape = "×".join(map(str, row.shape)) or "scalar"
            cells = [row.name, shape, f"{row.params:,}", f"{row.nonzeros:,}", _percent(row.sparsity)]
            cells.append(_percent(row.requested_sparsity))
            cells += [_si(row.macs), _si(row.sparse_macs)] if with_macs else []
            table.append(cells)
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = [_title(self.method, self.scope, self.pattern)]
        for line in table:
            cells = (_align(c, w, left=i < 2) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
            lines.append("  ".join(cells).rstrip())
        lines += ["", *self._totals()]
        return "\n".join(lines)

    def _totals(self) -> list[str]:
        compression = self.total_params / self.total_nonzeros if self.total_nonzeros else None
        lines = [
            f"sparsity: requested {_percent(self.requested_sparsity)} vs achieved "
            f"{_percent(self.achieved_sparsity)} (over {self.prunable_params:,} prunable weights)",
            f"model sparsity: {_percent(self.model_sparsity)} (all {self.total_params:,} parameters, "
            "biases and norms included)",
            f"params: {self.total_params:,} total / {self.total_nonzeros:,} nonzero"
            + (f" (×{compression:.2f} compression)" if compression else ""),
        ]
        if self.dense_macs is not None:
            ratio = self.theoretical_speedup
            speedup = f" (×{ratio:.2f} theoretical speed-up)" if ratio else ""
            lines.append(f"MACs: {_si(self.dense_macs)} dense → {_si(self.sparse_macs)} sparse{speedup}")
        lines.append(
            f"bytes: {_bytes(self.dense_bytes)} dense → {_bytes(self.nonzero_bytes)} nonzero "
            "(values only, before any index overhead)"
        )
        if self.empty_layers:
            lines.append(f"empty (collapsed) layers: {', '.join(self.empty_layers)}")
        if self.has_path is not None:
            lines.append(
                f"input→output paths of kept weights: 10^{self.log10_paths:.2f}; maximal compression "
                f"without collapse 10^{self.log10_max_compression:.2f}"
                if self.has_path
                else "no input→output path of kept weights remains: the network is disconnected (collapsed)"
            )
        elif self.paths_note:
            lines.append(f"path count unavailable: {self.paths_note}")
        return lines


def build_report(
    model: nn.Module,
    *,
    masks: Masks | None = None,
    example_inputs: ExampleInputs | None = None,
    requested: float | None = None,
    requested_per_layer: Mapping[str, float] | None = None,
    method: str | None = None,
    scope: str | None = None,
    pattern: str | None = None,
) -> PruningReport:
    """Report on an already pruned ``model`` (pruned entries are exact zeros).

    Rows are the parameters in ``masks`` (the prunable ones; each must be zero wherever its mask prunes),
    or without masks every ``weight`` of Linear and Conv layers. ``requested`` is the overall target
    sparsity; ``requested_per_layer`` maps row names to their own targets (rows it does not name show none;
    without ``requested``, the overall target is their parameter-weighted mean, unnamed rows counting
    as 0). MACs are counted on ``example_inputs`` (a tensor or tuple) when given.
    ``method``, ``scope`` and ``pattern`` are recorded as given.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for label, value in (("method", method), ("scope", scope), ("pattern", pattern)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"{label} must be a str or None (recorded in the report), got {type(value).__name__}"
            )
    params = _row_parameters(model, masks)
    wanted = _requested(requested_per_layer, list(params))
    dense, sparse = (None, None)
    if example_inputs is not None:
        dense = layer_macs(model, example_inputs)
        sparse = sparse_macs(model, dense)
    rows = tuple(_row(name, p, wanted[name], dense, sparse) for name, p in params.items())
    prunable = sum(r.params for r in rows)
    prunable_nonzeros = sum(r.nonzeros for r in rows)
    total, total_nonzeros = count_parameters(model), count_nonzeros(model)
    dense_total = None if dense is None else sum(dense.values())
    sparse_total = None if sparse is None else sum(sparse.values())
    return PruningReport(
        rows=rows,
        total_params=total,
        total_nonzeros=total_nonzeros,
        prunable_params=prunable,
        prunable_nonzeros=prunable_nonzeros,
        requested_sparsity=_overall_requested(requested, requested_per_layer, rows),
        achieved_sparsity=_sparsity(prunable_nonzeros, prunable),
        model_sparsity=_sparsity(total_nonzeros, total),
        dense_macs=dense_total,
        sparse_macs=sparse_total,
        theoretical_speedup=dense_total / sparse_total if sparse_total else None,
        dense_bytes=dense_bytes(model),
        nonzero_bytes=nonzero_bytes(model),
        method=method,
        scope=scope,
        pattern=pattern,
        empty_layers=tuple(r.name for r in rows if r.params > 0 and r.nonzeros == 0),
        **_paths(model, masks, example_inputs),
    )


def _paths(model: nn.Module, masks: Masks | None, example_inputs: ExampleInputs | None) -> dict[str, Any]:
    """Path count of the kept weights (layer-collapse analysis) when masks and a tensor input are given."""
    if masks is None or not isinstance(example_inputs, torch.Tensor):
        return {}
    from .collapse import analyse_collapse  # collapse → at_init → api → report: import when used

    try:
        analysis = analyse_collapse(model, masks, example_inputs)
    except (RuntimeError, TypeError, ValueError) as err:  # e.g. an architecture the path count cannot run
        return {"paths_note": str(err).splitlines()[0]}
    return {
        "log10_paths": analysis.log10_paths if analysis.has_path else None,
        "has_path": analysis.has_path,
        "log10_max_compression": analysis.log10_max_compression,
    }


def _row_parameters(model: nn.Module, masks: Masks | None) -> dict[str, torch.Tensor]:
    if masks is None:
        found: dict[str, torch.Tensor] = {}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            shared = any(weight is seen for seen in found.values())
            if isinstance(module, _DEFAULT_LAYERS) and isinstance(weight, torch.Tensor) and not shared:
                found[f"{name}.weight" if name else "weight"] = weight
        return {name: weight.detach() for name, weight in found.items()}
    if not isinstance(masks, Masks):
        raise TypeError(f"masks must be a prunekit.Masks or None, got {type(masks).__name__}")
    params = masks.validate(model)
    for name, param in params.items():
        revived = int(torch.count_nonzero(param.detach()[~masks[name].to(param.device)]))
        if revived:
            raise ValueError(
                f"parameter {name!r} has {revived} nonzero entries where its mask prunes; the report "
                "describes a pruned model: report on masks.apply(model), or call "
                "masks.apply(model, inplace=True) first"
            )
    return {name: param.detach() for name, param in params.items()}


def _requested(per_layer: Mapping[str, float] | None, names: list[str]) -> dict[str, float | None]:
    if per_layer is None:
        return dict.fromkeys(names)
    if not isinstance(per_layer, Mapping):
        raise TypeError(
            f"requested_per_layer must be a mapping parameter name → sparsity, got {type(per_layer).__name__}"
        )
    unknown = [n for n in per_layer if n not in names]
    if unknown:
        raise ValueError(
            f"requested_per_layer names parameters that are not rows of the report: {unknown[:5]}; the rows "
            f"are {names[:8]}{' ...' if len(names) > 8 else ''} (pass masks to choose the rows)"
        )
    return {
        n: check_sparsity(per_layer[n], f"requested_per_layer[{n!r}]") if n in per_layer else None
        for n in names
    }


def _overall_requested(
    requested: float | None, per_layer: Mapping[str, float] | None, rows: tuple[LayerRow, ...]
) -> float | None:
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, (int, float)):
            raise TypeError(f"requested must be a float sparsity or None, got {type(requested).__name__}")
        return check_sparsity(requested, "requested")
    if per_layer is None:
        return None
    total = sum(r.params for r in rows)
    return sum((r.requested_sparsity or 0.0) * r.params for r in rows) / total if total else 0.0


def _row(
    name: str,
    param: torch.Tensor,
    requested: float | None,
    dense: Mapping[str, int] | None,
    sparse: Mapping[str, int] | None,
) -> LayerRow:
    nonzeros = int(torch.count_nonzero(param))
    module, _, attr = name.rpartition(".")
    owns_macs = dense is not None and sparse is not None and attr == "weight"
    return LayerRow(
        name=name,
        shape=tuple(param.shape),
        params=param.numel(),
        nonzeros=nonzeros,
        sparsity=_sparsity(nonzeros, param.numel()),
        requested_sparsity=requested,
        macs=dense.get(module, 0) if owns_macs else None,
        sparse_macs=sparse.get(module, 0) if owns_macs else None,
    )


def _sparsity(nonzeros: int, total: int) -> float:
    return 1.0 - nonzeros / total if total else 0.0


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _title(method: str | None, scope: str | None, pattern: str | None) -> str:
    parts = [f"{k}: {v}" for k, v in (("method", method), ("scope", scope), ("pattern", pattern)) if v]
    return "Pruning report" + (f" ({', '.join(parts)})" if parts else "")


def _align(cell: str, width: int, *, left: bool) -> str:
    return cell.ljust(width) if left else cell.rjust(width)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _si(value: int | None) -> str:
    """12 → "12"; 12_345_678 → "12.3 M" (thousands, millions, billions, trillions)."""
    if value is None:
        return "-"
    for scale, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {suffix}"
    return str(value)


def _bytes(value: int) -> str:
    """Bytes in binary units: 1536 → "1.5 KiB"."""
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= scale:
            return f"{value / scale:.1f} {suffix}"
    return f"{value} B"
