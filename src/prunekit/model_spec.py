"""The model a command works on: a zoo name, or ``module:function`` naming the user's own factory."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from torch import nn

from . import zoo


def build_model(spec: str, **kwargs: object) -> nn.Module:
    """``zoo.get_model(spec, **kwargs)``, or, for ``"package.module:function"``, that function called
    with ``kwargs`` (imported as ``python -c "import package.module"`` would from the current folder).

    The function may be a class or any callable returning an ``nn.Module``; ``module:Class.method``
    reaches attributes of attributes.
    """
    if ":" not in spec:
        if spec not in zoo.model_names():
            raise ValueError(
                f"--model {spec!r} is neither a zoo model ({', '.join(zoo.model_names())}) nor "
                "module:function naming a function that builds your model (e.g. mypackage.models:build_model)"
            )
        return zoo.get_model(spec, **kwargs)
    module_name, _, path = spec.partition(":")
    if not module_name or not path:
        raise ValueError(f"--model {spec!r}: write module:function, e.g. mypackage.models:build_model")
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` does: modules beside the caller import
    try:
        factory: object = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"--model {spec!r}: cannot import {module_name!r} ({error}); run prunekit from the folder that "
            "holds it, or install its package"
        ) from error
    for part in path.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"--model {spec!r}: {module_name!r} has no attribute {path!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise TypeError(f"--model {spec!r}: {path!r} ({type(factory).__name__}) is not a function or class")
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
