"""Structured pruning: how graph building and pruning time grow with model size, vs Torch-Pruning 1.6.1.

Three families built deeper and deeper: a residual chain (conv-BN-ReLU-conv-BN + add), a dense chain
(every layer concatenates its output onto all before it, so the concat widths and parameters grow with
the square of the depth) and a pre-norm transformer stack (fused qkv, heads by reshape, SDPA, MLP). Inputs
are tiny (8×8 images, 8 tokens), so the forward's compute is negligible and the times are the libraries'
own work. Per depth: traced ops, parameters, our graph time (``DependencyGraph.build``), our graph + prune
time (``build_plan`` at 50% L1 + ``apply_plan`` with its check) and Torch-Pruning's graph + prune time
(``MetaPruner`` + ``step``), each the median of ``--repeats`` runs on fresh copies, garbage collected
before each run, untimed. Growth is the least-squares slope of log time over log size on the deeper half
of the depths (size: traced ops for the residual and transformer chains, parameters for the dense chain,
whose work per op grows with its width): 1.0 is linear, 2.0 quadratic. Torch-Pruning stops growing a
family once one of its runs exceeds ``--tp-budget`` seconds.

    python bench/structured_graph_scaling.py            # depths up to 256 / 128 / 64
    python bench/structured_graph_scaling.py --quick    # ≤ 60 s
    python bench/structured_graph_scaling.py --json     # last stdout line: one JSON summary
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ResidualChain(nn.Module):
    def __init__(self, depth: int, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
            )
            for _ in range(depth)
        )
        self.classifier = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.classifier(x.mean((2, 3)))


class DenseChain(nn.Module):
    def __init__(self, depth: int, stem: int = 16, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(stem + i * growth), nn.ReLU(), nn.Conv2d(stem + i * growth, growth, 1)
            )
            for i in range(depth)
        )
        self.classifier = nn.Linear(stem + depth * growth, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat((x, layer(x)), 1)
        return self.classifier(x.mean((2, 3)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = (
            nn.LayerNorm(width),
            nn.Linear(width, 3 * width),
            nn.Linear(width, width),
        )
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attention = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attention.transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))


class TransformerChain(nn.Module):
    def __init__(self, depth: int, width: int = 32, heads: int = 4, vocab: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm, self.classifier = nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.norm(x))


FAMILIES: dict[str, tuple[Callable[[int], nn.Module], Callable[[], torch.Tensor], str]] = {
    "residual": (ResidualChain, lambda: torch.randn(1, 3, 8, 8), "ops"),
    "dense": (DenseChain, lambda: torch.randn(1, 3, 8, 8), "params"),
    "transformer": (TransformerChain, lambda: torch.randint(0, 64, (1, 8)), "ops"),
}
DEPTHS = {
    "residual": (8, 16, 32, 64, 128, 256),
    "dense": (8, 16, 32, 64, 128),
    "transformer": (4, 8, 16, 32, 64),
}
QUICK = {"residual": (8, 16, 32, 64, 128), "dense": (8, 16, 32, 64), "transformer": (4, 8, 16, 32)}


def _median_seconds(run: Callable[[nn.Module], object], model: nn.Module, repeats: int) -> float:
    """Median wall time of ``run`` on fresh copies of ``model``, garbage collected before each, untimed."""
    times = []
    for _ in range(repeats):
        fresh = copy.deepcopy(model)
        gc.collect()
        start = time.perf_counter()
        run(fresh)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ours(model: nn.Module, x: torch.Tensor, prune: bool) -> None:
    from prunekit.graph import DependencyGraph
    from prunekit.plan import apply_plan, build_plan

    graph = DependencyGraph.build(model, x)
    if prune:
        apply_plan(model, build_plan(model, graph, 0.5, "l1"), inplace=True)


def _torch_pruning(model: nn.Module, x: torch.Tensor) -> None:
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
        ignored_layers=[model.classifier],
    )  # fmt: skip
    pruner.step()


def _slope(sizes: list[float], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) over log(sizes) on the deeper half of the points."""
    half = len(sizes) // 2
    xs, ys = [math.log(s) for s in sizes[half:]], [math.log(t) for t in seconds[half:]]
    if len(xs) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum((a - mx) ** 2 for a in xs)


def measure(family: str, depths: tuple[int, ...], repeats: int, tp_budget: float, with_tp: bool) -> dict:
    from prunekit.graph.trace import trace_model

    factory, make_input, size_name = FAMILIES[family]
    rows, tp_alive = [], with_tp
    for depth in depths:
        torch.manual_seed(0)
        model, x = factory(depth).eval(), make_input()
        row = {
            "depth": depth,
            "ops": len(trace_model(model, x).ops),
            "params": sum(p.numel() for p in model.parameters()),
            "graph_s": _median_seconds(lambda m: _ours(m, x, prune=False), model, repeats),  # noqa: B023
            "graph_prune_s": _median_seconds(lambda m: _ours(m, x, prune=True), model, repeats),  # noqa: B023
        }
        if tp_alive:
            try:
                row["tp_graph_prune_s"] = _median_seconds(lambda m: _torch_pruning(m, x), model, repeats)  # noqa: B023
            except Exception as error:  # a crash is a result here, recorded, not fatal
                row["tp_error"], tp_alive = f"{type(error).__name__}: {error}"[:200], False
            else:
                tp_alive = row["tp_graph_prune_s"] <= tp_budget
        rows.append(row)
        print(json.dumps({"family": family, **row}), flush=True)
    sizes = [r[size_name] for r in rows]
    growth = {
        key: _slope(
            [s for s, r in zip(sizes, rows, strict=True) if key in r], [r[key] for r in rows if key in r]
        )
        for key in ("graph_s", "graph_prune_s", "tp_graph_prune_s")
    }
    return {"size": size_name, "rows": rows, "growth": growth}


def _table(results: dict[str, dict]) -> str:
    lines = [
        "| family | depth | ops | params | graph s | graph + prune s | TP graph + prune s | ours/TP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family, result in results.items():
        for r in result["rows"]:
            tp = r.get("tp_graph_prune_s")
            tp_text = f"{tp:.3f}" if tp is not None else r.get("tp_error", "not run (budget)")[:40]
            ratio = f"{r['graph_prune_s'] / tp:.2f}" if tp else ""
            lines.append(
                f"| {family} | {r['depth']} | {r['ops']} | {r['params']} | {r['graph_s']:.3f} | "
                f"{r['graph_prune_s']:.3f} | {tp_text} | {ratio} |"
            )
        g = result["growth"]
        lines.append(
            f"| {family}: growth (slope over {result['size']}) | | | | {_fmt(g['graph_s'])} | "
            f"{_fmt(g['graph_prune_s'])} | {_fmt(g['tp_graph_prune_s'])} | |"
        )
    return "\n".join(lines)


def _fmt(slope: float | None) -> str:
    return "" if slope is None else f"{slope:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shallower depths (≤ 60 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    parser.add_argument("--repeats", type=int, default=None, help="runs per point (default 3)")
    parser.add_argument(
        "--tp-budget", type=float, default=20.0, help="stop Torch-Pruning's family after a run this long"
    )
    parser.add_argument("--no-tp", action="store_true", help="measure prunekit only")
    opts = parser.parse_args(argv)
    torch.set_num_threads(2)
    repeats = opts.repeats or 3
    with_tp = not opts.no_tp
    if with_tp:
        try:
            import torch_pruning  # noqa: F401
        except ImportError:
            print(
                "torch-pruning is not installed (make bench installs it); measuring prunekit only",
                file=sys.stderr,
            )
            with_tp = False
    start = time.perf_counter()
    results = {
        family: measure(family, (QUICK if opts.quick else DEPTHS)[family], repeats, opts.tp_budget, with_tp)
        for family in FAMILIES
    }
    print(_table(results))
    if opts.json:
        summary = {"bench": "structured_graph_scaling", "quick": opts.quick, "repeats": repeats}
        print(json.dumps({**summary, "wall_s": time.perf_counter() - start, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
