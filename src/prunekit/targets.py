"""Which parameters are prunable.

Default: the ``weight`` of every ``nn.Linear``, ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d``
(including the output layer). Biases, normalisation layers and embeddings are not pruned by default:
they hold few parameters and pruning them costs accuracy for no saving. ``ignore`` removes parameters
by parameter name, module name, glob (``"features.*"``) or module type (``nn.Conv2d``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

IgnoreSpec = str | type[nn.Module]


def prunable_parameters(
    model: nn.Module,
    *,
    ignore: Iterable[IgnoreSpec] = (),
    types: tuple[type[nn.Module], ...] = PRUNABLE_TYPES,
) -> list[str]:
    """Names of the prunable weights of ``model``, in ``named_parameters`` order.

    Raises ``ValueError`` when nothing is left to prune, or when an ``ignore`` entry matches nothing
    (a typo would otherwise silently prune a layer the user meant to keep).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ignore = list(ignore)
    for spec in ignore:
        if not (isinstance(spec, str) or (isinstance(spec, type) and issubclass(spec, nn.Module))):
            raise TypeError(f"ignore entries must be names, globs or nn.Module types, got {spec!r}")
    candidates = [
        (f"{module_name}.weight" if module_name else "weight", module_name, module)
        for module_name, module in model.named_modules()
        if isinstance(module, types) and isinstance(getattr(module, "weight", None), nn.Parameter)
    ]
    kept, used = [], set()
    for param_name, module_name, module in candidates:
        hits = [spec for spec in ignore if _matches(spec, param_name, module_name, module)]
        used.update(map(id, hits))
        if not hits:
            kept.append(param_name)
    unused = [spec for spec in ignore if id(spec) not in used]
    if unused:
        raise ValueError(
            f"ignore entries {unused} match no prunable layer; prunable weights are: "
            f"{[c[0] for c in candidates][:10]}"
        )
    if not kept:
        names = ", ".join(t.__name__ for t in types)
        raise ValueError(
            f"no prunable parameters: the model has no {names} weights"
            + (" left after ignore" if ignore else "")
            + "; pass targets=[parameter names] to choose parameters explicitly"
        )
    return kept


def _matches(spec: IgnoreSpec, param_name: str, module_name: str, module: nn.Module) -> bool:
    if isinstance(spec, type):
        return isinstance(module, spec)
    return any(fnmatch.fnmatchcase(candidate, spec) for candidate in (param_name, module_name))
