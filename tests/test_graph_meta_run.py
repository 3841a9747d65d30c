"""Shape-only recording (``prunekit.graph.meta_run``): it must record what a real forward records, fall
back to the real forward wherever it cannot, and leave the model as it found it."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from prunekit.graph.meta_run import MetaRunner, _channels_last_strides
from prunekit.graph.trace import Trace, trace_model
from structured_zoo import HF_ZOO, ZOO, build, hf_inputs
from test_structured_random_dags import RandomDag, node

aten = torch.ops.aten


def _summary(trace: Trace) -> list[tuple[str, str, list[tuple[int, ...]]]]:
    """Each op with its module and the shapes of its tensor outputs."""
    return [
        (str(op.func), op.module, [trace.shapes[o.node] for o in op.outputs if hasattr(o, "node")])
        for op in trace.ops
    ]


def _assert_same_recording(model: nn.Module, inputs: Any, shapes_only: bool | None = True) -> Trace:
    """``shapes_only``: which way the default recording must have gone (None: either)."""
    fast, real = trace_model(model, inputs), trace_model(model, inputs, shapes_only=False)
    assert shapes_only is None or fast.shapes_only is shapes_only
    assert _summary(fast) == _summary(real)
    assert fast.shapes == real.shapes and fast.outputs == real.outputs and fast.sources == real.sources
    assert fast.module_inputs == real.module_inputs and fast.module_outputs == real.module_outputs
    return fast


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_record_the_same_ops_and_shapes_without_computing(name: str) -> None:
    model, x = build(name)
    # nn.MultiheadAttention calls attention from inside a torch function: recorded for real (below)
    _assert_same_recording(model, x, shapes_only=name != "vit")


@pytest.mark.parametrize("name", sorted(HF_ZOO))
def test_transformers_models_record_the_same_ops_and_shapes_without_computing(name: str) -> None:
    torch.manual_seed(0)
    _assert_same_recording(HF_ZOO[name]().eval(), hf_inputs(name))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.lists(node, min_size=1, max_size=7), batch=st.sampled_from((1, 2)))
def test_random_dags_record_the_same_ops_and_shapes_without_computing(
    spec: list[tuple[str, int, int, int]], batch: int
) -> None:
    # permuted Linear outputs reach convs in the channels-last layout (recorded for real), chunks are
    # strided views; most of these DAGs record shape-only
    _assert_same_recording(RandomDag(spec).eval(), torch.randn(batch, 3, 4, 4), None)


def _dense(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def _cl(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).transpose(-1, -2)


def _bn(x: torch.Tensor, *rest: Any) -> tuple[Any, ...]:
    """Batch-norm arguments: ``x``, weight, bias, running mean and variance, then ``rest``."""
    return (x, *(_dense(x.shape[1]) for _ in range(4)), *rest)


_CONV = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1)  # stride, padding, dilation, transposed, pad, groups
_CASES: dict[str, tuple[Any, Callable[[], tuple[Any, ...]], dict[str, Any]]] = {
    "relu": (aten.relu.default, lambda: (_cl(2, 4, 3, 5),), {}),
    "gelu transposed": (aten.gelu.default, lambda: (_t(2, 4, 3),), {"approximate": "tanh"}),
    "hardtanh_": (aten.hardtanh_.default, lambda: (_dense(2, 3), 0.0, 6.0), {}),
    "clone contiguous": (
        aten.clone.default,
        lambda: (_cl(2, 4, 3, 5),),
        {"memory_format": torch.contiguous_format},
    ),
    "clone": (aten.clone.default, lambda: (_cl(2, 4, 3, 5),), {}),
    "add same": (aten.add.Tensor, lambda: (_cl(2, 4, 3, 5), _cl(2, 4, 3, 5)), {}),
    "add mixed layouts": (aten.add.Tensor, lambda: (_cl(2, 4, 3, 5), _dense(2, 4, 3, 5)), {}),
    "add broadcast": (aten.add.Tensor, lambda: (_dense(2, 4, 3), _dense(3)), {}),
    "mul number": (aten.mul.Tensor, lambda: (_dense(2, 4), torch.tensor(0.5, dtype=torch.float64)), {}),
    "mul broadcast both ways": (aten.mul.Tensor, lambda: (_dense(2, 1, 3), _dense(4, 1)), {}),
    "mul broadcast transposed": (aten.mul.Tensor, lambda: (_t(2, 3, 4), _dense(3)), {}),
    "add broadcast int": (aten.add.Tensor, lambda: (_dense(2, 3), torch.arange(3)), {}),
    "pow": (aten.pow.Tensor_Scalar, lambda: (_cl(2, 4, 3, 5), 2), {}),
    "mean keepdim": (aten.mean.dim, lambda: (_dense(2, 5, 4), [-1], True), {}),
    "mean pooled": (aten.mean.dim, lambda: (_dense(2, 4, 3, 5), [-1, -2]), {}),
    "mean channels last": (aten.mean.dim, lambda: (_cl(2, 4, 3, 5), [-1, -2], True), {}),
    "mul scalar": (aten.mul.Scalar, lambda: (_t(2, 4, 3), 0.5), {}),
    "mul int by float": (aten.mul.Scalar, lambda: (torch.arange(6), 0.5), {}),
    "div half by float": (aten.div.Tensor, lambda: (_dense(2, 3).half(), _dense(2, 3)), {}),
    "add_ broadcast": (aten.add_.Tensor, lambda: (_dense(2, 4, 3), _dense(4, 1)), {}),
    "add_ same": (aten.add_.Tensor, lambda: (_dense(2, 4, 3), _dense(2, 4, 3)), {"alpha": 2}),
    "softmax": (aten._softmax.default, lambda: (_t(2, 4, 3), -1, False), {}),
    "safe softmax": (aten._safe_softmax.default, lambda: (_cl(2, 4, 3, 5), 1), {}),
    "batch norm eval": (aten.native_batch_norm.default, lambda: _bn(_cl(2, 4, 3, 5), False, 0.1, 1e-5), {}),
    "batch norm train": (aten.native_batch_norm.default, lambda: _bn(_dense(2, 4, 3), True, 0.1, 1e-5), {}),
    "batch norm no training": (
        aten._native_batch_norm_legit_no_training.default,
        lambda: _bn(_dense(2, 4, 3), 0.1, 1e-5),
        {},
    ),
    "layer norm": (
        aten.native_layer_norm.default,
        lambda: (_t(2, 4, 5), [4], _dense(4), _dense(4), 1e-5),
        {},
    ),
    "layer norm 2 dims": (
        aten.native_layer_norm.default,
        lambda: (_dense(2, 5, 4), [5, 4], None, None, 1e-5),
        {},
    ),
    "addmm": (aten.addmm.default, lambda: (_dense(6), _dense(3, 4), _t(6, 4)), {}),
    "addmm row bias": (aten.addmm.default, lambda: (_dense(3, 6), _dense(3, 4), _dense(4, 6)), {"beta": 0.5}),
    "mm": (aten.mm.default, lambda: (_t(4, 3), _dense(4, 6)), {}),
    "bmm": (aten.bmm.default, lambda: (_dense(2, 3, 4), _t(2, 6, 4)), {}),
    "cat": (aten.cat.default, lambda: ([_dense(2, 3, 4), _dense(2, 5, 4)], 1), {}),
    "cat channels last": (aten.cat.default, lambda: ([_cl(2, 3, 4, 4), _cl(2, 5, 4, 4)], -3), {}),
    "cat 1x1 pixels": (aten.cat.default, lambda: ([_cl(2, 3, 1, 1), _dense(2, 5, 1, 1)], 1), {}),
    "cat mixed": (aten.cat.default, lambda: ([_cl(2, 3, 4, 4), _dense(2, 5, 4, 4)], 1), {}),
    "convolution": (
        aten.convolution.default,
        lambda: (_dense(1, 4, 6, 6), _dense(8, 4, 3, 3), None, *_CONV),
        {},
    ),
    "convolution strided grouped": (
        aten.convolution.default,
        lambda: (_dense(2, 8, 9, 7), _dense(6, 4, 3, 2), _dense(6), [2, 3], [1, 0], [1, 2], False, [0, 0], 2),
        {},
    ),
    "convolution 1d dilated": (
        aten.convolution.default,
        lambda: (_dense(2, 3, 11), _dense(5, 3, 3), None, [1], [2], [3], False, [0], 1),
        {},
    ),
    "convolution transposed": (
        aten.convolution.default,
        lambda: (_dense(2, 4, 5, 5), _dense(4, 3, 2, 2), None, [2, 2], [0, 0], [1, 1], True, [0, 0], 1),
        {},
    ),
    "convolution of a channel slice": (
        aten.convolution.default,
        lambda: (_dense(2, 8, 6, 6)[:, 4:], _dense(8, 4, 1, 1), None, *_CONV),
        {},
    ),
}


def _strides(t: torch.Tensor) -> tuple[int, ...]:
    """Strides of the dims longer than one (a size-1 dim's stride is arbitrary)."""
    return tuple(s for s, n in zip(t.stride(), t.shape, strict=True) if n > 1)


@pytest.mark.parametrize("name", list(_CASES))
def test_each_op_gets_the_shapes_strides_and_dtypes_of_the_real_kernel(name: str) -> None:
    func, make, kwargs = _CASES[name]
    args = make()
    weights = [a for a in args if isinstance(a, torch.Tensor)]  # run as weights: on meta stand-ins
    weights += [t for a in args if isinstance(a, list) for t in a]
    real = func(*copy.deepcopy(args), **kwargs)
    shaped = MetaRunner(weights, torch.device("cpu"))(func, tuple(_meta_in_place(func, args)), kwargs)
    real, shaped = (r if isinstance(r, tuple) else (r,) for r in (real, shaped))
    described = [[(t.shape, t.dtype, _strides(t)) for t in outputs] for outputs in (shaped, real)]
    assert described[0] == described[1]
    assert all(t.is_meta for t in shaped)


def test_shapes_that_do_not_broadcast_fail_as_for_real() -> None:
    a, b = _dense(2, 3), _dense(3, 1, 2)
    with pytest.raises(RuntimeError, match="broadcast"):
        MetaRunner([a, b], torch.device("cpu"))(aten.mul.Tensor, (a, b), {})


def _meta_in_place(func: Any, args: tuple) -> list[Any]:
    """``args`` with a tensor an op writes into made meta (a real one is refused, tested below)."""
    if not func._schema.is_mutable:
        return list(args)
    first = args[0]
    return [torch.empty_strided(first.shape, first.stride(), dtype=first.dtype, device="meta"), *args[1:]]


def test_an_op_writing_into_a_weight_or_reading_a_value_is_refused_and_remembered() -> None:
    weight, counts = torch.ones(3), torch.ones(3, dtype=torch.long)
    runner = MetaRunner([weight, counts], torch.device("cpu"))
    with pytest.raises(RuntimeError, match="writes a real tensor in place"):
        runner(aten.mul_.Tensor, (weight, weight), {})
    assert torch.equal(weight, torch.ones(3))
    later = MetaRunner([weight, counts], torch.device("cpu"))
    with pytest.raises(RuntimeError, match="reads values"):
        later(aten._local_scalar_dense.default, (weight,), {})
    with pytest.raises(RuntimeError, match="meta tensor without output_size"):  # PyTorch's meta kernel
        later(aten.repeat_interleave.Tensor, (counts,), {})  # refuses a size that depends on values
    assert "reads values" in str(later.error)  # the first failure is kept: the forward may catch them


def test_batch_norm_statistics_of_no_elements_stay_empty_if_one_is_resized() -> None:
    """Eval-mode batch norm's saved statistics are one shared tensor of no elements per dtype."""
    weight = torch.ones(3)
    runner = MetaRunner([weight], torch.device("cpu"))
    args = (torch.empty(2, 3, 4, device="meta"), weight, weight, weight, weight, False, 0.1, 1e-5)
    _, mean, invstd = runner(aten.native_batch_norm.default, args, {})
    assert mean.shape == invstd.shape == (0,) and mean.is_meta
    mean.resize_(5)  # no forward does this; if one did, the next batch norm still gets empty statistics
    assert runner(aten.native_batch_norm.default, args, {})[1].shape == (0,)


def test_a_convolution_in_channels_last_runs_for_real() -> None:
    # PyTorch's meta kernel gives a contiguous output where the CPU kernel keeps channels-last
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8)).to(memory_format=torch.channels_last)
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    _assert_same_recording(model, x, shapes_only=False)


def _layouts() -> list[torch.Tensor]:
    """Tensors of every 4-d and 5-d memory order, with sizes of 1 (where layouts coincide), expanded
    (stride 0) and sliced dims, and empty ones."""
    found = []
    for shape in itertools.product((1, 2, 3), repeat=4):
        for order in itertools.permutations(range(4)):
            x = torch.empty([shape[d] for d in order]).permute(*(order.index(d) for d in range(4)))
            found += [x, x[:, :, ::2], x.expand(2, *shape[1:]) if shape[0] == 1 else x[::2]]
            found += [x.expand(shape[0], 3, *shape[2:])] if shape[1] == 1 else []
    for order in itertools.permutations(range(5)):
        found.append(torch.empty(2, 3, 1, 4, 5).permute(*order))
    empty = [torch.empty(2, 3, 0, 5), torch.empty(2, 0, 4, 5)]
    empty += [t.contiguous(memory_format=torch.channels_last) for t in empty]
    return [*found, *empty, torch.empty(3, 4)]


def test_the_channels_last_rule_is_pytorchs() -> None:
    from torch._prims_common import suggest_memory_format  # imports sympy: what the rule avoids

    layouts = _layouts()
    differ = [
        (tuple(x.shape), x.stride())
        for x in layouts
        if _channels_last_strides(x) != (suggest_memory_format(x) != torch.contiguous_format)
    ]
    assert not differ and sum(map(_channels_last_strides, layouts)) > 100


class _RecordsItsMode(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 4))
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.body[1].training)
        return self.body(x)


@pytest.mark.parametrize("shapes_only", [True, False])
def test_the_forward_runs_in_eval_mode_and_each_module_keeps_its_mode(shapes_only: bool) -> None:
    model = _RecordsItsMode().train()
    model.body[2].eval()  # a frozen layer in a training model
    trace_model(model, torch.randn(2, 4), shapes_only=shapes_only)
    assert model.seen == [False] and [m.training for m in model.modules()] == [True, True, True, True, False]
    model.eval()
    trace_model(model, torch.randn(2, 4), shapes_only=shapes_only)
    assert not any(m.training for m in model.modules())


def test_graph_and_prune_import_nothing_heavy_on_a_first_call() -> None:
    # torch._prims_common's layout helpers import sympy: ~0.35 s on a first prune in a fresh process
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from prunekit.graph import DependencyGraph\n"
        "from prunekit.plan import apply_plan, build_plan\n"
        "model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))\n"
        "graph = DependencyGraph.build(model, torch.randn(1, 3, 8, 8))\n"
        "apply_plan(model, build_plan(model, graph, 0.5))\n"
        "print(graph.trace.shapes_only, sorted(m for m in ('sympy', 'torch._dynamo') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "[]"]


class _ReadsAWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if float(self.fc.weight.sum()) < 1e9 else -x


class _SwallowsTheFailure(_ReadsAWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        try:
            big = bool((y > 0).any())
        except RuntimeError:  # would take the other path on meta tensors, silently
            big = False
        return y * 2 if big else y


class _CachesAnActivation(_ReadsAWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = self.fc(x)
        return self.last


class _RescalesOnce(_ReadsAWeight):
    """RWKV-style: rescales a weight in place on its first call in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "rescaled", False):
            with torch.no_grad():
                self.fc.weight.div_(2)
            self.rescaled = True
        return self.fc(x)


class _RoutesByValue(_ReadsAWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y[y > 0].sum() + y.sum()


@pytest.mark.parametrize("cls", [_ReadsAWeight, _SwallowsTheFailure, _CachesAnActivation, _RoutesByValue])
def test_a_forward_that_needs_values_or_stores_state_is_recorded_for_real(cls: type) -> None:
    torch.manual_seed(0)
    model, x = cls(), torch.randn(3, 4)
    before = copy.deepcopy(model.state_dict())
    _assert_same_recording(model, x, shapes_only=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_forward_writing_a_weight_in_place_runs_for_real_once() -> None:
    torch.manual_seed(0)
    model, x = _RescalesOnce(), torch.randn(3, 4)
    weight = model.fc.weight.detach().clone()
    trace = trace_model(model, x)
    assert not trace.shapes_only and any(op.name == "div_" for op in trace.ops)
    assert torch.equal(model.fc.weight, weight / 2)  # as its own first forward does: once, not twice


class _CachesByDevice(_ReadsAWeight):
    """LeViT-style: a cache in a dict attribute, keyed by the device of the activations."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        self.cache.setdefault(str(y.device), y)
        return y


class _CollectsFeatures(_ReadsAWeight):
    """Appends each activation to a list attribute (feature extraction)."""

    def __init__(self) -> None:
        super().__init__()
        self.features: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features.append(y := self.fc(x))
        return y


def test_the_model_state_a_shapes_only_forward_changes_is_put_back() -> None:
    model = _CachesByDevice()
    trace = trace_model(model, torch.randn(3, 4))
    assert not trace.shapes_only  # it changed the model: recorded for real, as its own forward runs
    assert list(model.cache) == ["cpu"] and not model.cache["cpu"].is_meta  # no stand-in left behind
    collector = _CollectsFeatures()
    assert not trace_model(collector, torch.randn(3, 4)).shapes_only
    assert [t.is_meta for t in collector.features] == [False]  # before: a meta stand-in stayed there


class _Attention(nn.Module):
    def __init__(self, kv_heads: int, **options: Any) -> None:
        super().__init__()
        self.q, self.kv, self.o = nn.Linear(16, 16), nn.Linear(16, 8 * kv_heads), nn.Linear(16, 16)
        self.kv_heads, self.options = kv_heads, options

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, 4, 4).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2 * self.kv_heads, 4).transpose(1, 2).chunk(2, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **self.options)
        return self.o(out.transpose(1, 2).reshape(b, n, 16))


@pytest.mark.parametrize(
    "kv_heads, mask, options",
    [
        (4, None, {}),
        (4, None, {"is_causal": True, "scale": 0.3}),
        (4, torch.rand(5, 5) > 0.3, {}),  # a boolean mask: made additive by the same ops as for real
        (4, torch.randn(1, 1, 5, 5), {}),
        (2, None, {"enable_gqa": True}),
    ],
)
def test_attention_runs_the_kernel_a_real_forward_runs(kv_heads: int, mask: Any, options: dict) -> None:
    torch.manual_seed(0)
    model, x = _Attention(kv_heads, **options), torch.randn(2, 5, 16)
    trace = _assert_same_recording(model, (x, mask))
    assert "_scaled_dot_product_flash_attention_for_cpu" in {op.name for op in trace.ops}


class _MovesABuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("scale", torch.full((4,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        positions = torch.arange(x.shape[0], device=y.device).to(y.device)
        return y * self.scale.to(y.device) + positions[:, None]


def test_moving_to_the_device_of_a_stand_in_records_no_op_as_for_real() -> None:
    trace = _assert_same_recording(_MovesABuffer(), torch.randn(3, 4))
    assert "_to_copy" not in {op.name for op in trace.ops}


def test_a_forward_that_fails_raises_the_real_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 2))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="fails on the example inputs.*mat1 and mat2 shapes cannot be"):
        trace_model(model, torch.randn(3, 4))
    after = model.state_dict()  # the model keeps its real weights, untouched
    assert all(not v.is_meta and torch.equal(v, before[k]) for k, v in after.items())
