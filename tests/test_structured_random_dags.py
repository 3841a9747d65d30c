"""Property: on random DAGs of conv / linear / BatchNorm layers with adds, concats and splits, pruning
chosen channels of every group after zeroing their producers leaves the output unchanged."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from prunekit.graph import DependencyGraph
from test_structured_exact import assert_exact, exact_groups, prune_zeroed

KINDS = ("conv", "conv_bn", "depthwise", "linear", "add", "cat", "split")


class RandomDag(nn.Module):
    """Node 0 is a stem conv; node i applies ``spec[i-1] = (kind, a, b, width)`` to earlier nodes."""

    def __init__(self, spec: list[tuple[str, int, int, int]]) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        widths, self.plan, self.layers = [4], [], nn.ModuleList()
        for kind, a, b, width in spec:
            a, b = a % len(widths), b % len(widths)
            kind = self._feasible(kind, widths, a, b)
            layer, out = self._layer(kind, widths[a], width)
            self.layers.append(layer)
            self.plan.append((kind, a, b))
            widths.append(
                out if kind not in ("add", "cat") else (widths[a] + widths[b] if kind == "cat" else widths[a])
            )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * 4 * 4, 3))

    @staticmethod
    def _feasible(kind: str, widths: list[int], a: int, b: int) -> str:
        if (kind == "add" and widths[a] != widths[b]) or (kind == "split" and widths[a] % 2):
            return "conv"
        return kind

    @staticmethod
    def _layer(kind: str, cin: int, width: int) -> tuple[nn.Module, int]:
        if kind == "conv":
            return nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()), width
        if kind == "conv_bn":
            return nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)), width
        if kind == "depthwise":
            return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.BatchNorm2d(cin)), cin
        if kind == "linear":
            return nn.Linear(cin, width), width
        return nn.Identity(), cin // 2 if kind == "split" else cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [self.stem(x)]
        for layer, (kind, a, b) in zip(self.layers, self.plan, strict=True):
            v = values[a]
            if kind == "linear":
                values.append(layer(v.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
            elif kind == "add":
                values.append(v + values[b])
            elif kind == "cat":
                values.append(torch.cat([v, values[b]], 1))
            elif kind == "split":
                values.append(v.chunk(2, dim=1)[b % 2])
            else:
                values.append(layer(v))
        return self.head(values[-1])


node = st.tuples(st.sampled_from(KINDS), st.integers(0, 20), st.integers(0, 20), st.sampled_from((2, 4, 6)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(node, min_size=1, max_size=7), seed=st.integers(0, 2**16))
def test_random_dag_pruning_is_exact(spec: list[tuple[str, int, int, int]], seed: int) -> None:
    torch.manual_seed(seed)
    model = RandomDag(spec).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 4, 4)
    graph = DependencyGraph.build(model, x)
    groups = exact_groups(model, graph)
    pruned, zeroed, _ = prune_zeroed(model, graph, groups, torch.Generator().manual_seed(seed))
    assert_exact(pruned, zeroed, x)
    for name, module in pruned.named_modules():
        if isinstance(module, nn.Conv2d):
            assert module.weight.shape[0] == module.out_channels, name
            assert module.weight.shape[1] * module.groups == module.in_channels, name
