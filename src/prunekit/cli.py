"""The ``prunekit`` command: ``demo``, ``prune``, ``methods``, ``oneshot``, pruning-at-init commands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import zoo
from .api import prune
from .checkpoints import load_weights, save_weights
from .cli_at_init import add_commands as add_at_init_commands
from .cli_oneshot import add_command as add_oneshot_command
from .cli_run import add_command as add_run_command
from .cli_sweep import add_command as add_sweep_command
from .data import dataset_names, load_dataset, make_loader
from .demo import DemoConfig, run_demo
from .model_spec import build_model
from .scoring import SCORERS
from .selection import COLLAPSE_POLICIES, SCOPES

log = logging.getLogger("prunekit")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"prunekit {args.command}: error: {err}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunekit", description="Pruning for PyTorch models.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_prune(commands)
    _add_methods(commands)
    add_at_init_commands(commands)
    add_run_command(commands, _common())
    add_sweep_command(commands, _common())
    add_oneshot_command(commands)
    return parser


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or info logs")
    return common


def _add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo", parents=[_common()], help="train LeNet-300-100 on MNIST, prune 90%%, fine-tune, report"
    )
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--sparsity", type=float, default=DemoConfig.sparsity)
    p.add_argument("--epochs", type=int, default=DemoConfig.epochs, help="dense training epochs")
    p.add_argument("--finetune-epochs", type=int, default=DemoConfig.finetune_epochs)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    config = DemoConfig(
        sparsity=args.sparsity, epochs=args.epochs, finetune_epochs=args.finetune_epochs, seed=args.seed
    )
    summary = run_demo(args.out, config, progress=not args.quiet)
    print(summary.pop("report_text"))
    print(
        f"\ndense test accuracy {100 * summary['dense_accuracy']:.2f} %, pruned "
        f"({100 * summary['sparsity']:.1f} % sparse, fine-tuned) {100 * summary['pruned_accuracy']:.2f} %"
    )
    print(f"wrote masks, pruned weights and reports to {summary['out_dir']}/")
    print(json.dumps(summary))
    return 0


def _add_prune(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "prune",
        parents=[_common()],
        help="prune saved weights of a zoo model or your own (unstructured, N:M, blocks, or channels)",
    )
    p.add_argument(
        "--model",
        required=True,
        help=f"zoo architecture ({', '.join(zoo.model_names())}) or module:function building your model "
        "(imported from the current folder)",
    )
    p.add_argument(
        "--model-arg", action="append", default=[], help="KEY=INT argument of the model's builder (repeat)"
    )
    p.add_argument("--weights", required=True, help="state_dict: .safetensors or torch.save'd file")
    p.add_argument("--method", default="magnitude", help="criterion (see `prunekit methods`)")
    p.add_argument("--sparsity", type=float, default=None, help="fraction removed, in [0, 1)")
    p.add_argument("--scope", default="global", choices=SCOPES)
    p.add_argument("--pattern", default="element", help="element, N:M such as 2:4, or a block such as 4x4")
    p.add_argument("--ignore", action="append", default=[], help="layer name or glob to keep dense (repeat)")
    p.add_argument("--on-collapse", default="warn", choices=COLLAPSE_POLICIES)
    p.add_argument("--dataset", choices=dataset_names(), help="data for data-needing criteria")
    p.add_argument("--batches", type=int, default=8, help="batches of data read by the criterion")
    p.add_argument("--input-shape", default="1,1,28,28", help="example input shape for MAC counts")
    p.add_argument(
        "--input-dtype",
        default="float32",
        choices=tuple(_DTYPES),
        help="dtype of the example input (int64 for token ids)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/prune", help="output folder")
    _add_structured_options(p)
    p.set_defaults(func=_run_prune)


def _add_structured_options(p: argparse.ArgumentParser) -> None:
    from .graph import IMPORTANCES
    from .graph.attention import HEAD_MODES

    s = p.add_argument_group("structured mode (remove whole channels; --ignore takes module names)")
    s.add_argument("--structured", action="store_true", help="remove channels: a smaller dense model")
    s.add_argument("--ratio", type=float, default=None, help="fraction of channels removed per group, [0, 1)")
    s.add_argument("--importance", default="l1", choices=IMPORTANCES.names(), help="channel criterion")
    s.add_argument("--round-to", type=int, default=1, help="keep a multiple of this many channels per group")
    s.add_argument("--heads", default="heads", choices=HEAD_MODES, help="attention: whole heads or head dims")


def _run_structured(args: argparse.Namespace, model: torch.nn.Module) -> int:
    """Build the graph on a zero input of --input-shape, plan, remove, write model + plan preview."""
    from .graph import DependencyGraph, save_pruned
    from .plan import apply_plan, build_plan

    if args.ratio is None:
        raise ValueError("--structured needs --ratio, the fraction of channels to remove (e.g. --ratio 0.5)")
    example = _example(args)
    graph = DependencyGraph.build(model, example, ignore=args.ignore, heads=args.heads)
    plan = build_plan(
        model, graph, args.ratio, args.importance, round_to=args.round_to, ignore=args.ignore,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    preview = plan.preview(model, example)
    pruned = apply_plan(model, plan)
    out = save_pruned(pruned, args.out)
    (out / "plan.txt").write_text(preview + "\n")
    print(preview)
    params = [sum(p.numel() for p in m.parameters()) for m in (model, pruned)]
    summary = {"params_before": params[0], "params_after": params[1], "out_dir": str(out)}
    print(json.dumps({**summary, "groups_pruned": len(plan.removals), "graph_seconds": graph.seconds}))
    return 0


def _run_prune(args: argparse.Namespace) -> int:
    model = load_weights(build_model(args.model, **_model_args(args.model_arg)), args.weights)
    if args.structured:
        return _run_structured(args, model)
    sparsity = args.sparsity
    if sparsity is None and ":" not in args.pattern:
        raise ValueError("--sparsity is required (a float in [0, 1)) unless --pattern is N:M such as 2:4")
    data = None
    if args.dataset:
        data = make_loader(load_dataset(args.dataset, "train"), 64, shuffle=True, seed=args.seed)
    result = prune(
        model,
        args.method,
        sparsity,
        scope=args.scope,
        pattern=args.pattern,
        ignore=args.ignore,
        on_collapse=args.on_collapse,
        data=data,
        max_batches=args.batches,
        seed=args.seed,
        example_inputs=_example(args),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.masks.save(out / "masks.safetensors")
    save_weights(result.model, out / "pruned.safetensors")
    (out / "report.json").write_text(result.report.to_json() + "\n")
    (out / "report.txt").write_text(result.report.to_text() + "\n")
    print(result.report.to_text())
    print(json.dumps({"sparsity": result.report.achieved_sparsity, "out_dir": str(out)}))
    return 0


def _add_methods(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("methods", parents=[_common()], help="list the registered pruning criteria")
    p.set_defaults(func=_run_methods)


def _run_methods(args: argparse.Namespace) -> int:
    width = max(len(n) for n in SCORERS.names())
    for name in SCORERS.names():
        scorer = SCORERS.get(name)
        data = "needs data" if scorer.needs_data else "data-free "
        print(f"{name:<{width}}  {data}  {scorer.summary}")
    return 0


def _model_args(items: list[str]) -> dict[str, int]:
    parsed = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key or not value.lstrip("-").isdigit():
            raise ValueError(f"--model-arg must look like KEY=INT (e.g. in_features=64), got {item!r}")
        parsed[key] = int(value)
    return parsed


_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
}


def _example(args: argparse.Namespace) -> torch.Tensor:
    """The example input: zeros of ``--input-shape`` and ``--input-dtype`` (token id 0 for int64)."""
    return torch.zeros(_shape(args.input_shape), dtype=_DTYPES[args.input_dtype])


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ValueError(
            f"--input-shape must be comma-separated positive ints such as 1,1,28,28; got {text!r}"
        )
    return shape


if __name__ == "__main__":
    raise SystemExit(main())
