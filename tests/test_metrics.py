import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunekit.metrics import (
    count_nonzeros,
    count_parameters,
    dense_bytes,
    layer_macs,
    measure_latency,
    nonzero_bytes,
    sparse_macs,
)
from structured_zoo import HF_ZOO, ZOO, build, hf_inputs


class Tiny(nn.Module):
    """Linear(4, 3) on a vector and Conv2d(1, 2, 3) on a 5×5 image."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x), self.conv(img)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 5, 8)
        q, k, v = self.qkv(x).view(x.shape[0], 5, 3, 2, 4).permute(2, 0, 3, 1, 4)  # each (batch, 2, 5, 4)
        return F.scaled_dot_product_attention(q, k, v)


def inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 4), torch.randn(batch, 1, 5, 5)


def zero_first_half(weight: torch.Tensor) -> None:
    with torch.no_grad():
        weight.view(-1)[: weight.numel() // 2] = 0


def test_counts_and_bytes_by_hand() -> None:
    model = Tiny()
    assert count_parameters(model) == 12 + 3 + 18 + 2
    assert count_nonzeros(model) == 35
    zero_first_half(model.fc.weight)  # 6 of 12
    with torch.no_grad():
        model.conv.bias.zero_()  # 2
    assert count_nonzeros(model) == 35 - 6 - 2
    assert dense_bytes(model) == 35 * 4
    assert nonzero_bytes(model) == 27 * 4
    model.double()
    assert dense_bytes(model) == 35 * 8


def test_shared_parameters_count_once() -> None:
    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    assert count_parameters(model) == 9
    assert dense_bytes(model) == 36


def test_layer_macs_linear_and_conv_by_hand() -> None:
    macs = layer_macs(Tiny(), inputs(batch=2))
    # Linear: batch · in · out; Conv: batch · out_ch · in_ch · kh · kw · out_h · out_w (3×3 output)
    assert macs == {"fc": 2 * 4 * 3, "conv": 2 * 2 * 1 * 3 * 3 * 3 * 3}


def test_layer_macs_grouped_strided_conv_and_single_tensor_input() -> None:
    conv = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2)
    # out 3×3 from 6×6; each output sees in_ch/groups = 2 channels
    assert layer_macs(conv, torch.randn(1, 4, 6, 6)) == {"": 4 * 2 * 3 * 3 * 3 * 3}


def test_layer_macs_counts_each_op_once_in_its_innermost_module() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.ReLU()), nn.Linear(5, 2))
    macs = layer_macs(model, torch.randn(3, 4))
    assert macs == {"0.0": 3 * 4 * 5, "1": 3 * 5 * 2}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(3, 4))
    assert sum(macs.values()) == counter.get_total_flops() // 2


def test_cpu_attention_kernel_is_counted_like_explicit_matmuls() -> None:
    macs = layer_macs(Attention(), torch.randn(2, 5, 8))
    # q·kᵀ and softmax·v: batch 2 · heads 2 · 5 · 5 · (4 + 4); the projection sits in its Linear
    assert macs == {"": 2 * 2 * 5 * 5 * (4 + 4), "qkv": 2 * 5 * 8 * 24}
    q, k, v = torch.randn(3, 2, 2, 5, 4)
    with FlopCounterMode(display=False) as counter:
        torch.softmax(q @ k.transpose(-1, -2), -1) @ v
    assert macs[""] == counter.get_total_flops() // 2


def test_multihead_attention_fast_path_is_counted_and_restored() -> None:
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    macs = layer_macs(mha, (x, x, x))
    in_proj, scores, out_proj = 10 * 8 * 24, 2 * 2 * 5 * 5 * (4 + 4), 10 * 8 * 8
    assert sum(macs.values()) == in_proj + scores + out_proj
    assert torch.backends.mha.get_fastpath_enabled()


def test_training_modes_are_restored() -> None:
    model = Tiny().train()
    model.conv.eval()
    layer_macs(model, inputs())
    measure_latency(model, inputs(), warmup=0, repeats=1)
    assert model.training and model.fc.training and not model.conv.training


def test_sparse_macs_scale_by_weight_density() -> None:
    model = Tiny()
    zero_first_half(model.fc.weight)  # density 1/2
    with torch.no_grad():
        model.conv.weight[0] = 0  # one of two output channels: density 1/2
        model.conv.weight[1, 0, 0] = 0  # and 3 more of 18: density 6/18
    dense = layer_macs(model, inputs(batch=2))
    assert sparse_macs(model, dense) == {"fc": 24 // 2, "conv": 324 * 6 // 18}


def test_sparse_macs_count_modules_without_weight_as_dense() -> None:
    model = Attention()
    with torch.no_grad():
        model.qkv.weight.zero_()
    dense = layer_macs(model, torch.randn(2, 5, 8))
    assert sparse_macs(model, dense) == {"": dense[""], "qkv": 0}


def test_input_errors_name_the_fix() -> None:
    with pytest.raises(TypeError, match="wrap several inputs in a tuple"):
        layer_macs(Tiny(), list(inputs()))
    with pytest.raises(TypeError, match="layer_macs"):
        sparse_macs(Tiny(), inputs())
    with pytest.raises(ValueError, match="'missing'"):
        sparse_macs(Tiny(), {"missing": 3})
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        count_parameters({"w": torch.ones(2)})


def test_measure_latency_reports_percentiles_and_restores_threads() -> None:
    threads = torch.get_num_threads()
    result = measure_latency(Tiny(), inputs(), warmup=1, repeats=5, threads=1)
    assert set(result) == {"median_s", "p90_s", "repeats", "warmup", "threads"}
    assert result["threads"] == 1 and result["repeats"] == 5
    assert 0 < result["median_s"] <= result["p90_s"]
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup"), ({"threads": 0}, "threads")]
)
def test_measure_latency_rejects_bad_counts(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        measure_latency(Tiny(), inputs(), **kwargs)


def _reference_macs(model: nn.Module, inputs: object) -> tuple[int, dict[str, int]]:
    """Total MACs and those of every leaf module, by PyTorch's FlopCounterMode (fast path off)."""
    from prunekit.metrics import _sdpa_cpu_flops

    args, kwargs = ((), inputs) if isinstance(inputs, dict) else ((inputs,), {})
    sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(display=False, custom_mapping={sdpa: _sdpa_cpu_flops})
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            model.eval()(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    root = type(model).__name__ + "."
    leaves = {n for n, m in model.named_modules() if n and not any(True for _ in m.children())}
    per_leaf = {
        name[len(root) :]: sum(ops.values()) // 2
        for name, ops in counter.get_flop_counts().items()
        if name[len(root) :] in leaves and name.startswith(root)
    }
    return counter.get_total_flops() // 2, {n: c for n, c in per_leaf.items() if c}


@pytest.mark.parametrize("name", [*sorted(ZOO), *sorted(HF_ZOO)])
def test_layer_macs_equal_pytorchs_flop_counter(name: str) -> None:
    torch.manual_seed(0)
    model, inputs = (HF_ZOO[name]().eval(), hf_inputs(name)) if name in HF_ZOO else build(name)
    total, leaves = _reference_macs(model, inputs)
    macs = layer_macs(model, inputs)
    assert sum(macs.values()) == total > 0
    assert {n: c for n, c in macs.items() if n in leaves} == leaves


def test_layer_macs_do_not_import_dynamo() -> None:
    # FlopCounterMode's first forward imports torch._dynamo (1.1 s in a fresh process)
    code = (
        "import sys, torch\n"
        "from prunekit.metrics import layer_macs\n"
        "print(layer_macs(torch.nn.Linear(4, 3), torch.randn(2, 4)), 'torch._dynamo' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["{'':", "24}", "False"]  # 2 · 4 · 3
