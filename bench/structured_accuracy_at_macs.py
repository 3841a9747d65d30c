"""Accuracy at equal MACs: prunekit's importances vs Torch-Pruning's group magnitude, small ResNet.

Per seed: train a small ResNet, then for each MAC target (2× and 4× fewer MACs) and each method,
prune a copy to the target (the channel ratio is found by bisection on the measured MACs), fine-tune
it with the same fixed budget and report test accuracy. "ours: best" is the prunekit importance with
the best *validation* accuracy, reported on the test set. Methods live in one table (:data:`METHODS`):
add a criterion registered in ``prunekit.graph.IMPORTANCES`` (e.g. NISP) with one line.

Data: real Fashion-MNIST (Debian package ``dataset-fashion-mnist``; ``--dataset mnist`` for MNIST).

    python bench/structured_accuracy_at_macs.py            # 3 seeds, 2× and 4×
    python bench/structured_accuracy_at_macs.py --quick    # 1 seed, small subsets (labelled)
    python bench/structured_accuracy_at_macs.py --json     # last stdout line: one JSON summary
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

Pruner = Callable[[nn.Module, torch.Tensor, float], nn.Module]  # (model, example, ratio) → pruned


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        short = stride != 1 or cin != cout
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if short
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.short is None else self.short(x)))


class SmallResNet(nn.Module):
    """ResNet for 28×28 inputs: stride-2 stem 32, stages 32-64-128 of two blocks each (0.7 M params)."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
            cin = w
        self.blocks, self.fc = nn.Sequential(*blocks), nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def ours(importance: str) -> Pruner:
    """prunekit with ``importance``; gradients (for taylor / obd) come from one calibration batch."""

    def prune(model: nn.Module, example: torch.Tensor, ratio: float) -> nn.Module:
        from prunekit.graph import DependencyGraph
        from prunekit.plan import apply_plan, build_plan

        graph = DependencyGraph.build(model, example)
        return apply_plan(model, build_plan(model, graph, ratio, importance))

    return prune


def tp_group_magnitude(model: nn.Module, example: torch.Tensor, ratio: float) -> nn.Module:
    """Torch-Pruning 1.6.1 MetaPruner with GroupMagnitudeImportance (L2, its default)."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=[model.fc],
    )  # fmt: skip
    pruner.step()
    return model


METHODS: dict[str, Pruner] = {
    "ours:l1": ours("l1"),
    "ours:l2": ours("l2"),
    "ours:lamp": ours("lamp"),
    "ours:fpgm": ours("fpgm"),
    "ours:taylor": ours("taylor"),
    "ours:bn_scale": ours("bn_scale"),
    "ours:nisp": ours("nisp"),
    "tp:group_magnitude": tp_group_magnitude,
}


@dataclass(frozen=True)
class Budget:
    train_samples: int
    epochs: int
    finetune_steps: int
    seeds: int
    bisect_steps: int
    batch: int = 128


FULL, QUICK = Budget(54_000, 2, 200, 3, 8), Budget(3_000, 1, 8, 1, 4)


def _batches(data: TensorDataset, batch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    x, y = data.tensors
    return [(x[order[i : i + batch]], y[order[i : i + batch]]) for i in range(0, len(data), batch)]


def _train(model: nn.Module, data: TensorDataset, steps: int, lr: float, seed: int, batch: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    done, epoch = 0, 0
    while done < steps:
        for x, y in _batches(data, batch, seed * 1000 + epoch):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            schedule.step()
            done += 1
            if done == steps:
                break
        epoch += 1
    model.eval()


def _accuracy(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        hits = sum(
            int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum()) for i in range(0, len(y), 1000)
        )
    return 100.0 * hits / len(y)


def _macs(model: nn.Module, example: torch.Tensor) -> int:
    from prunekit.metrics import layer_macs

    return sum(layer_macs(model, example).values())


def _at_macs(
    prune: Pruner, model: nn.Module, example: torch.Tensor, target: int, steps: int
) -> tuple[nn.Module, float]:
    """The least-pruned model with at most ``target`` MACs, by ``steps`` bisections on the channel ratio."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        candidate = prune(_copy(model), example, mid)
        if _macs(candidate, example) <= target:
            hi, best = mid, (candidate, mid)
        else:
            lo = mid
    if best is None:
        best = (prune(_copy(model), example, hi), hi)
    return best


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy that keeps ``.grad`` (``deepcopy`` drops it; gradient-based importances read it)."""
    clone = copy.deepcopy(model)
    for source, target in zip(model.parameters(), clone.parameters(), strict=True):
        target.grad = None if source.grad is None else source.grad.clone()
    return clone


def _gradients(model: nn.Module, data: TensorDataset) -> None:
    """One calibration batch's gradients in ``.grad`` (read by gradient-based importances)."""
    model.zero_grad()
    x, y = data.tensors
    model.eval()
    F.cross_entropy(model(x[:256]), y[:256]).backward()


def run_seed(seed: int, budget: Budget, splits: dict[str, TensorDataset], factors: tuple[float, ...]) -> dict:
    torch.manual_seed(seed)
    model = SmallResNet()
    steps = budget.epochs * -(-budget.train_samples // budget.batch)
    _train(model, splits["train"], steps, 0.05, seed, budget.batch)
    example = splits["train"].tensors[0][:1]
    dense_macs = _macs(model, example)
    result = {"dense_acc": _accuracy(model, splits["test"]), "dense_macs": dense_macs, "targets": {}}
    for factor in factors:
        rows = {}
        for name, prune in METHODS.items():
            _gradients(model, splits["train"])
            pruned, ratio = _at_macs(prune, model, example, int(dense_macs / factor), budget.bisect_steps)
            _train(pruned, splits["train"], budget.finetune_steps, 0.01, seed, budget.batch)
            rows[name] = {"ratio": ratio, "macs": _macs(pruned, example)}
            rows[name].update(val=_accuracy(pruned, splits["val"]), test=_accuracy(pruned, splits["test"]))
        result["targets"][f"{factor:g}x"] = rows
    return result


def _summary(seeds: list[dict]) -> dict:
    """Per target: median test accuracy per method, ours' best (picked on val) and ours − TP."""
    out = {}
    for target in seeds[0]["targets"]:
        per = {m: [s["targets"][target][m] for s in seeds] for m in METHODS}
        ours_names = [m for m in METHODS if m.startswith("ours:")]
        best = max(ours_names, key=lambda m: statistics.mean(r["val"] for r in per[m]))
        test = {m: statistics.mean(r["test"] for r in rows) for m, rows in per.items()}
        out[target] = {
            "test_mean": test,
            "ours_best": best,
            "ours_minus_tp": test[best] - test["tp:group_magnitude"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 4k training samples, short budgets")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    parser.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "mnist"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when the machine is shared)")
    args = parser.parse_args()
    from prunekit.data import load_dataset, subset

    torch.set_num_threads(args.threads)
    budget = QUICK if args.quick else FULL
    train = load_dataset(args.dataset, "train")
    evaluation = 2_000 if args.quick else 6_000
    splits = {
        "train": subset(train, budget.train_samples, 0) if budget.train_samples < len(train) else train,
        "val": subset(load_dataset(args.dataset, "val"), evaluation, 0),
        "test": load_dataset(args.dataset, "test")
        if not args.quick
        else subset(load_dataset(args.dataset, "test"), 2_000, 0),
    }
    start = time.perf_counter()
    seeds = [run_seed(seed, budget, splits, (2.0, 4.0)) for seed in range(budget.seeds)]
    summary = _summary(seeds)
    for target, row in summary.items():
        cells = ", ".join(f"{m} {acc:.2f}" for m, acc in row["test_mean"].items())
        print(f"{target}: {cells}; ours best ({row['ours_best']}) − TP = {row['ours_minus_tp']:+.2f} points")
    if args.json:
        head = {"bench": "structured_accuracy_at_macs", "quick": args.quick, "dataset": args.dataset}
        head.update(budget=budget.__dict__, threads=args.threads, loadavg=os.getloadavg())
        wall = time.perf_counter() - start
        print(json.dumps({**head, "wall_s": wall, "summary": summary, "seeds": seeds}))


if __name__ == "__main__":
    main()
