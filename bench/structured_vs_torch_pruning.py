"""Structured pruning: prunekit vs Torch-Pruning 1.6.1, same run, same models, 50% of channels (L1).

Per model: graph + prune time (median of ``--repeats`` runs on fresh copies, each library in a
subprocess with a timeout, so a hang or crash is recorded, not fatal; Python's cyclic garbage is
collected before each run, untimed, else a run pays for its predecessor's), parameters and MACs after
pruning, and 2-thread CPU latency of the dense model vs prunekit's pruned model at batch 1 and 32
(in a process of its own: median of alternating runs after a warm-up, and the median of per-round
speed-ups). Both libraries protect only the model's outputs (the classifier keeps its classes; its
input features are pruned like any layer). For latency both models are put in the same deployment
form: BatchNorm folded into the preceding conv and channels-last for CNNs (``--no-fuse`` to measure
them as built).

    python bench/structured_vs_torch_pruning.py              # all six models
    python bench/structured_vs_torch_pruning.py --quick      # ≤ 60 s: ResNet-18, MobileNetV2, tiny LLaMA
    python bench/structured_vs_torch_pruning.py --json       # last stdout line: one JSON summary
    python bench/structured_vs_torch_pruning.py --thp-malloc # workers' malloc on transparent huge pages
    python bench/structured_vs_torch_pruning.py --rounds 3   # the two libraries' workers taking turns

With ``--rounds N`` each library's worker runs N times per model (``--repeats`` runs each), the two
taking turns (the first one flips every round); the times are pooled, and ``round_ratios`` holds each
round's ratio of the medians: a slow spell of the machine then falls on both libraries, not on one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"


def _cbr(cin: int, cout: int, k: int = 1, s: int = 1, g: int = 1, act: type = nn.ReLU) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout), act(inplace=True)]


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, w: int, s: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, w, 3, s, 1, bias=False), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w)
        down = s != 1 or cin != w
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, w, 1, s, bias=False), nn.BatchNorm2d(w)) if down else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)), inplace=True)))
        out += x if self.downsample is None else self.downsample(x)  # in place, as torchvision
        return F.relu(out, inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, w: int, s: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, w, 1, bias=False), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = nn.Conv2d(w, w, 3, s, 1, bias=False), nn.BatchNorm2d(w)
        self.conv3, self.bn3 = nn.Conv2d(w, w * 4, 1, bias=False), nn.BatchNorm2d(w * 4)
        down = s != 1 or cin != w * 4
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, w * 4, 1, s, bias=False), nn.BatchNorm2d(w * 4)) if down else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)), inplace=True))), inplace=True)
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)  # in place, as torchvision
        return F.relu(out, inplace=True)


class ResNet(nn.Module):
    """torchvision's ResNet (same module names and parameter counts; ReLU and the residual add in place)."""

    def __init__(self, block: type, depths: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (w, n) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, 2 if j == 0 and i > 0 else 1))
                cin = w * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(cin, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, s: int, t: int) -> None:
        super().__init__()
        mid, self.res = cin * t, s == 1 and cin == cout
        layers = _cbr(cin, mid, act=nn.ReLU6) if t != 1 else []
        layers += [
            *_cbr(mid, mid, 3, s, mid, nn.ReLU6),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (same module names: features.*, classifier.1)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_cbr(3, 32, 3, 2, act=nn.ReLU6))]
        cin = 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                           (6, 160, 3, 2), (6, 320, 1, 1)):  # fmt: skip
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(*_cbr(cin, 1280, act=nn.ReLU6)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class DenseNet(nn.Module):
    """torchvision's DenseNet-201 layout (growth 32, blocks 6-12-48-32, bottleneck 4)."""

    def __init__(self, blocks: tuple[int, ...] = (6, 12, 48, 32), growth: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.blocks, self.transitions, c = nn.ModuleList(), nn.ModuleList(), 64
        for i, n in enumerate(blocks):
            layers = nn.ModuleList()
            for j in range(n):
                w = c + j * growth
                bottleneck = [nn.BatchNorm2d(w), nn.ReLU(True), nn.Conv2d(w, 4 * growth, 1, bias=False)]
                conv = [
                    nn.BatchNorm2d(4 * growth),
                    nn.ReLU(True),
                    nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False),
                ]
                layers.append(nn.Sequential(*bottleneck, *conv))
            self.blocks.append(layers)
            c += n * growth
            if i < len(blocks) - 1:
                self.transitions.append(
                    nn.Sequential(
                        nn.BatchNorm2d(c), nn.ReLU(True), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)
                    )
                )
                c //= 2
        self.norm5, self.classifier = nn.BatchNorm2d(c), nn.Linear(c, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, layers in enumerate(self.blocks):
            features = [x]
            for layer in layers:
                features.append(layer(torch.cat(features, 1)))
            x = torch.cat(features, 1)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.norm5(x)), 1), 1))


def vit_b_16() -> nn.Module:
    import transformers

    config = transformers.ViTConfig(image_size=224, patch_size=16, num_labels=1000)
    return transformers.ViTForImageClassification(config)


def tiny_llama() -> nn.Module:
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
    )
    return transformers.LlamaForCausalLM(config)


MODELS: dict[str, tuple[Callable[[], nn.Module], str, str]] = {  # factory, input kind, classifier
    "resnet18": (lambda: ResNet(Basic, (2, 2, 2, 2)), "image", "fc"),
    "resnet50": (lambda: ResNet(Bottleneck, (3, 4, 6, 3)), "image", "fc"),
    "mobilenet_v2": (MobileNetV2, "image", "classifier"),
    "densenet201": (DenseNet, "image", "classifier"),
    "tiny_llama": (tiny_llama, "tokens", "lm_head"),
    "vit_b_16": (vit_b_16, "image", "classifier"),
}
QUICK = ("resnet18", "mobilenet_v2", "tiny_llama")
# glibc's malloc backed by transparent huge pages (glibc ≥ 2.35; a no-op where THP is "never"): eager
# PyTorch allocates every activation afresh, and with 4 KiB pages ResNet-50 at batch 32 spends ~40% of its
# CPU time in page faults (591 k per forward), a cost that follows activation bytes, not MACs.
THP_MALLOC = "glibc.malloc.hugetlb=1"
# --quick: latency runs, graph + prune runs, latency image side, timeouts (s) for ours and TP
QUICK_REPS, QUICK_REPEATS, QUICK_SIZE, QUICK_TIMEOUTS = 3, 3, 112, (60, 5)


def _input(kind: str, batch: int, size: int = 224) -> torch.Tensor:
    if kind == "image":
        return torch.randn(batch, 3, size, size)
    return torch.randint(0, 1000, (batch, 64), generator=torch.Generator().manual_seed(0))


class _Logits(nn.Module):
    """HF models return ModelOutput; both libraries and the latency loop see plain logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if isinstance(out, torch.Tensor) else out.logits


def _build(name: str) -> tuple[nn.Module, str, str]:
    torch.manual_seed(0)
    factory, kind, head = MODELS[name]
    model = factory().eval()
    if hasattr(model, "config"):
        model.config.use_cache = False
        return _Logits(model).eval(), kind, f"model.{head}"
    return model, kind, head


def _count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    from prunekit.metrics import layer_macs

    return sum(p.numel() for p in model.parameters()), sum(layer_macs(model, x).values())


def _ours(model: nn.Module, x: torch.Tensor, round_to: int) -> nn.Module:
    from prunekit.graph import DependencyGraph
    from prunekit.plan import apply_plan, build_plan

    graph = DependencyGraph.build(model, x)  # the model's outputs are pinned: logits keep their classes
    return apply_plan(model, build_plan(model, graph, 0.5, "l1", round_to=round_to), inplace=True)


def _torch_pruning(model: nn.Module, x: torch.Tensor, head: str, round_to: int) -> nn.Module:
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
        ignored_layers=[model.get_submodule(head)], round_to=round_to if round_to > 1 else None,
    )  # fmt: skip
    pruner.step()
    return model


def _deploy(model: nn.Module, kind: str, fuse: bool) -> nn.Module:
    """``model`` (changed in place) in the form a CNN is served in on CPU: BatchNorm folded into its conv,
    channels-last.

    The fold is done on the model's own modules (``torch.fx`` only finds each conv → BatchNorm pair), so
    its forward runs as written: ``torch.fx``'s ``fuse`` regenerates the forward and turns an in-place
    residual ``out += x`` into an out-of-place add, a fresh activation per block at batch 32.
    """
    if not fuse or not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = model.eval()
    modules = dict(model.named_modules())
    for node in torch.fx.symbolic_trace(model).graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if (
            isinstance(modules.get(node.target), nn.BatchNorm2d)
            and getattr(source, "op", None) == "call_module"
            and isinstance(modules[source.target], nn.Conv2d)
            and len(source.users) == 1
        ):
            _replace(model, source.target, fuse_conv_bn_eval(modules[source.target], modules[node.target]))
            _replace(model, node.target, nn.Identity())
    return model.to(memory_format=torch.channels_last)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, local = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, local, new)


def _latency(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Median ms of ``dense(x)`` and ``pruned(x)``, runs alternating (after one warm-up each), and the
    median of the per-round speed-ups (each round times both models back to back, so load that changes
    between rounds cancels out of its ratio)."""
    models, times = (dense, pruned), ([], [])
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for rep in range(reps + 1):
            for k in (0, 1) if rep % 2 else (1, 0):
                start = time.perf_counter()
                models[k](x)
                if rep:
                    times[k].append(time.perf_counter() - start)
    return {
        "dense_ms": 1e3 * statistics.median(times[0]),
        "pruned_ms": 1e3 * statistics.median(times[1]),
        "paired_speedup": statistics.median(d / p for d, p in zip(*times, strict=True)),
    }


def worker(name: str, library: str, opts: argparse.Namespace) -> dict:
    """One library on one model, in this process: prune time, params, MACs; or (``library ==
    "latency"``) dense vs prunekit-pruned latency, in a process of its own so that the heap left by the
    timed prune runs does not change it (glibc reuses freed memory: page faults depend on history)."""
    import copy
    import gc

    torch.set_num_threads(2)
    if library == "latency":
        return _latency_worker(name, opts)
    model, kind, head = _build(name)
    x = _input(kind, 1)
    params, macs = _count(model, x)
    times, cpu = [], []
    for _ in range(opts.repeats):
        work = copy.deepcopy(model)
        gc.collect()  # not timed: the previous run's reference cycles (TP's graph: 2–5 k objects)
        start, start_cpu = time.perf_counter(), time.process_time()
        if library == "prunekit":
            pruned = _ours(work, x, opts.round_to)
        else:
            pruned = _torch_pruning(work, x, head, opts.round_to)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    with torch.no_grad():
        pruned(x)  # the pruned model runs
    result = {"seconds": statistics.median(times), "seconds_all": times, "params": params, "macs": macs}
    result["cpu_seconds"] = statistics.median(cpu)  # process CPU time: less sensitive to other jobs
    result["cpu_seconds_all"] = cpu
    result["params_after"], result["macs_after"] = _count(pruned, x)
    return result


def _latency_worker(name: str, opts: argparse.Namespace) -> dict:
    import copy

    model, kind, _ = _build(name)
    pruned = _ours(copy.deepcopy(model), _input(kind, 1), opts.round_to)
    dense, pruned = _deploy(model, kind, opts.fuse), _deploy(pruned, kind, opts.fuse)
    return {f"latency_b{b}": _latency(dense, pruned, _input(kind, b, opts.size), opts.reps) for b in (1, 32)}


def _run(name: str, library: str, opts: argparse.Namespace, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, library, "--reps", str(opts.reps)]
    cmd += ["--repeats", str(opts.repeats), "--round-to", str(opts.round_to), "--size", str(opts.size)]
    cmd += [] if opts.fuse else ["--no-fuse"]
    env = {**os.environ, "GLIBC_TUNABLES": THP_MALLOC} if opts.thp_malloc else None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"status": f"crash: {tail[:160]}"}
    return {"status": "ok", **json.loads(done.stdout.strip().splitlines()[-1])}


def _rounds(name: str, opts: argparse.Namespace, timeouts: tuple[float, float]) -> dict:
    """Both libraries' graph + prune workers on ``name``, ``opts.rounds`` times each, taking turns; a
    library that fails (timeout, crash) is not run again and reports that status."""
    libraries = {"prunekit": timeouts[0], "torch_pruning": timeouts[1]}
    runs: dict[str, list[dict]] = {library: [] for library in libraries}
    status = dict.fromkeys(libraries, "ok")
    for turn in range(opts.rounds):
        for library in list(libraries) if turn % 2 == 0 else list(libraries)[::-1]:
            if status[library] == "ok":
                run = _run(name, library, opts, libraries[library])
                status[library] = run["status"]
                runs[library].append(run)
    result = {library: _pooled(runs[library]) for library in libraries}
    if opts.rounds > 1 and all(s == "ok" for s in status.values()):
        pairs = zip(runs["prunekit"], runs["torch_pruning"], strict=True)
        result["round_ratios"] = [a["seconds"] / b["seconds"] for a, b in pairs]
    return result


def _pooled(runs: list[dict]) -> dict:
    """One worker's result, or several workers' pooled: every run's time, medians over all of them."""
    if runs[-1]["status"] != "ok" or len(runs) == 1:
        return runs[-1]
    pooled = {**runs[0], "workers": len(runs)}
    for key in ("seconds", "cpu_seconds"):
        pooled[f"{key}_all"] = [t for run in runs for t in run[f"{key}_all"]]
        pooled[key] = statistics.median(pooled[f"{key}_all"])
    return pooled


def _table(results: dict[str, dict]) -> str:
    lines = [
        "| model | params | ours: time s | ours: params | ours: MACs | TP: time s | TP: params | TP: MACs "
        "| time ours/TP | b1 speed-up | b32 speed-up | MAC reduction |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ours, tp = r["prunekit"], r["torch_pruning"]
        if ours["status"] != "ok":
            lines.append(f"| {name} | | {ours['status']} |||||||||")
            continue
        cells = [f"{ours['params'] / 1e6:.2f} M", f"{ours['seconds']:.2f}"]
        cells += [f"{ours['params_after'] / 1e6:.2f} M", f"{ours['macs_after'] / 1e9:.3f} G"]
        if tp["status"] == "ok":
            cells += [f"{tp['seconds']:.2f}", f"{tp['params_after'] / 1e6:.2f} M"]
            cells += [f"{tp['macs_after'] / 1e9:.3f} G", f"{ours['seconds'] / tp['seconds']:.2f}"]
        else:
            cells += [tp["status"], "", "", ""]
        for batch in (1, 32):
            lat = ours.get(f"latency_b{batch}")
            cells.append(f"{lat['paired_speedup']:.2f}×" if lat else "")
        cells.append(f"{ours['macs'] / ours['macs_after']:.2f}×")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three models, fewer runs (≤ 60 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "LIBRARY"), help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=5, help="latency runs per model and batch")
    parser.add_argument("--repeats", type=int, default=3, help="graph + prune runs (median)")
    parser.add_argument("--round-to", type=int, default=1, help="kept channels rounded up to a multiple")
    parser.add_argument("--no-fuse", dest="fuse", action="store_false", help="latency without BN folding")
    parser.add_argument("--size", type=int, default=224, help="image side for the latency runs")
    parser.add_argument(
        "--thp-malloc",
        action="store_true",
        help=f"run both libraries' workers with GLIBC_TUNABLES={THP_MALLOC}",
    )
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), help="a subset of the models")
    parser.add_argument(
        "--rounds", type=int, default=1, help="graph + prune workers per library and model, taking turns"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        parser.error(f"--rounds and --repeats must be at least 1, got {args.rounds} and {args.repeats}")
    return args


def main() -> None:
    args = _parse()
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return
    if args.quick:
        args.reps, args.repeats, args.size = QUICK_REPS, QUICK_REPEATS, QUICK_SIZE
    names = args.models or (QUICK if args.quick else tuple(MODELS))
    timeouts = QUICK_TIMEOUTS if args.quick else (600, 300)
    start, results = time.perf_counter(), {}
    for name in names:
        results[name] = _rounds(name, args, timeouts)
        ours = results[name]["prunekit"]
        if ours["status"] == "ok" and args.reps:
            latency = _run(name, "latency", args, timeouts[0])
            ours.update(latency if latency["status"] == "ok" else {"latency_status": latency["status"]})
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    print(_table(results))
    if args.json:
        keys = ("quick", "reps", "repeats", "rounds", "round_to", "fuse", "size", "thp_malloc")
        settings = {k: getattr(args, k) for k in keys}
        settings["transparent_hugepage"] = _read("/sys/kernel/mm/transparent_hugepage/enabled")
        settings["timeouts_s"] = {"prunekit": timeouts[0], "torch_pruning": timeouts[1]}
        summary = {"bench": "structured_vs_torch_pruning", **settings, "loadavg": _read("/proc/loadavg")}
        summary["wall_s"] = time.perf_counter() - start
        print(json.dumps({**summary, "results": results}))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
