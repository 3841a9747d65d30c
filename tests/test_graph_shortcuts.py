"""Layer shortcuts of the shape-only recording (``prunekit.graph.shortcuts``): a layer handed to the
recorder directly must give the trace its own forward gives (every op with its arguments, shapes,
module attribution), and any case a shortcut does not cover must run the layer's forward."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import pytest
import torch
from torch import nn

from prunekit.graph.shortcuts import shortcut_for
from prunekit.graph.trace import ForwardError, Trace, trace_model
from structured_zoo import HF_ZOO, ZOO, build, hf_inputs


def _fields(trace: Trace) -> dict[str, Any]:
    return {name: getattr(trace, name) for name in Trace.__dataclass_fields__}


def _assert_same(model: nn.Module, inputs: Any) -> Trace:
    """The recording with shortcuts equals the one running every layer's forward, op arguments too."""
    forwards = [vars(m).get("forward") for m in model.modules()]
    fast, slow = trace_model(model, inputs), trace_model(model, inputs, shortcuts=False)
    assert fast.shapes_only and slow.shapes_only
    assert _fields(fast) == _fields(slow)
    assert [vars(m).get("forward") for m in model.modules()] == forwards  # every shortcut taken off
    return fast


# (layer, input shape): each is recorded behind a conv (its input a shape-only stand-in) and alone on
# a real input
TAKEN = {
    "conv1d": (lambda: nn.Conv1d(6, 4, 3, stride=2, padding=1, dilation=2), (2, 6, 9)),
    "conv2d": (lambda: nn.Conv2d(6, 4, 3, padding=(1, 2), bias=False), (2, 6, 7, 5)),
    "conv2d_grouped": (lambda: nn.Conv2d(6, 6, 3, groups=3, stride=(2, 1)), (1, 6, 7, 7)),
    "conv3d": (lambda: nn.Conv3d(6, 4, 2), (1, 6, 3, 4, 5)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(6), (3, 6)),
    "batchnorm1d_3d": (lambda: nn.BatchNorm1d(6, momentum=None), (3, 6, 4)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(6, eps=1e-3, momentum=0.3), (2, 6, 4, 4)),
    "batchnorm2d_plain": (lambda: nn.BatchNorm2d(6, affine=False), (2, 6, 4, 4)),
    "batchnorm3d": (lambda: nn.BatchNorm3d(6), (1, 6, 2, 3, 3)),
    "linear": (lambda: nn.Linear(6, 4), (3, 6)),
    "linear_no_bias": (lambda: nn.Linear(6, 4, bias=False), (3, 6)),
    "linear_tokens": (lambda: nn.Linear(6, 4), (2, 5, 6)),
    "relu": (nn.ReLU, (2, 6)),
    "relu_": (lambda: nn.ReLU(inplace=True), (2, 6)),
    "relu6_": (lambda: nn.ReLU6(inplace=True), (2, 6)),
    "hardtanh": (nn.Hardtanh, (2, 6)),
    "hardtanh_ints": (lambda: nn.Hardtanh(-1, 1), (2, 6)),
    "hardtanh_mixed": (lambda: nn.Hardtanh(-1.0, 1), (2, 6)),
    "silu_": (lambda: nn.SiLU(inplace=True), (2, 6)),
    "hardswish": (nn.Hardswish, (2, 6)),
    "sigmoid": (nn.Sigmoid, (2, 6)),
    "tanh": (nn.Tanh, (2, 6)),
    "leaky_relu": (nn.LeakyReLU, (2, 6)),
    "leaky_relu_slope_": (lambda: nn.LeakyReLU(0.2, inplace=True), (2, 6)),
    "gelu": (nn.GELU, (2, 6)),
    "gelu_tanh": (lambda: nn.GELU("tanh"), (2, 6)),
    "identity": (nn.Identity, (2, 6)),
    "dropout": (lambda: nn.Dropout(0.3), (2, 6)),
}
# layers a shortcut leaves to their own forward (another decomposition, or PyTorch's own error)
NOT_TAKEN = {
    "conv2d_same": (lambda: nn.Conv2d(6, 4, 3, padding="same"), (1, 6, 5, 5)),
    "conv2d_reflect": (lambda: nn.Conv2d(6, 4, 3, padding=1, padding_mode="reflect"), (1, 6, 5, 5)),
    "conv2d_unbatched": (lambda: nn.Conv2d(6, 4, 3), (6, 5, 5)),
    "batchnorm_no_stats": (lambda: nn.BatchNorm2d(6, track_running_stats=False), (2, 6, 4, 4)),
    "linear_4d": (lambda: nn.Linear(6, 4), (2, 3, 5, 6)),
    "linear_tokens_no_bias": (lambda: nn.Linear(6, 4, bias=False), (2, 5, 6)),
}


def _in_front(shape: tuple[int, ...]) -> nn.Module:
    """A layer keeping ``shape`` whose output is computed from a weight (a stand-in when recorded)."""
    if len(shape) == 2:
        return nn.Linear(shape[1], shape[1])
    conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[len(shape)]
    return conv(shape[1], shape[1], 1)


@pytest.mark.parametrize("name", sorted(TAKEN) + sorted(NOT_TAKEN))
def test_a_layer_records_what_its_forward_records(name: str) -> None:
    make, shape = {**TAKEN, **NOT_TAKEN}[name]
    torch.manual_seed(0)
    layer, x = make().eval(), torch.randn(shape)
    _assert_same(layer, x)
    _assert_same(nn.Sequential(_in_front(shape), make().eval()), x)
    # on real tensors the shortcut's ops compute the layer's output; a case it leaves calls no op
    ran = []

    def call(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> Any:
        ran.append(func)
        return func(*args, **kwargs)

    with torch.no_grad():
        out = shortcut_for(layer)(call, layer, x.clone())
        if name in TAKEN:
            torch.testing.assert_close(out, layer(x.clone()), rtol=0, atol=0)
        else:
            assert out is None and not ran


def test_tokens_that_are_not_contiguous_take_the_layers_forward() -> None:
    class Transposed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv1d(6, 6, 1)
            self.fc = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.proj(x).transpose(1, 2))  # (batch, tokens, 6), not contiguous

    trace = _assert_same(Transposed(), torch.randn(2, 6, 5))
    assert "view" not in [op.name for op in trace.ops if op.module == "fc"]


def test_an_empty_tensor_made_from_nothing_is_not_recorded() -> None:
    """Batch norm's CPU reserve (an empty byte tensor no op reads) is left out of every recording, as is
    a forward's own ``torch.empty(0)``: one read later is a constant of no elements."""

    class Gather(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            return torch.cat([torch.empty(0), y.flatten()]).view(y.shape)

    model, x = Gather().eval(), torch.randn(1, 3, 6, 6)
    fast = _assert_same(model, x)
    real = trace_model(model, x, shapes_only=False)
    assert [op.name for op in real.ops] == [op.name for op in fast.ops]
    assert [op.name for op in fast.ops] == ["convolution", "native_batch_norm", "view", "cat", "view"]
    cat = fast.ops[3]
    assert real.sources[real.ops[3].args[0][0].node] == ("constant", "")
    assert fast.shapes[cat.args[0][0].node] == (0,)


@pytest.mark.parametrize("name", sorted(set(ZOO) - {"vit"}))  # the ViT's nn.MultiheadAttention: recorded
def test_zoo_models_record_the_same_trace_with_shortcuts(name: str) -> None:  # for real, no shortcuts
    _assert_same(*build(name))


@pytest.mark.parametrize("name", sorted(HF_ZOO))
def test_transformers_models_record_the_same_trace_with_shortcuts(name: str) -> None:
    torch.manual_seed(0)
    _assert_same(HF_ZOO[name]().eval(), hf_inputs(name))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def test_a_layer_with_a_hook_or_its_own_forward_runs_as_written() -> None:
    net, x = _Net(), torch.randn(1, 3, 6, 6)
    seen = []
    net.bn.register_forward_hook(lambda m, args, out: seen.append(out.shape) or out * 2)
    net.act.forward = lambda x: torch.sigmoid(x)
    assert shortcut_for(net.bn) is None and shortcut_for(net.act) is None
    trace = _assert_same(net, x)
    assert seen == [(1, 4, 4, 4)] * 2  # the hook ran in both recordings
    assert [(op.name, op.module) for op in trace.ops][-2:] == [("mul", "bn"), ("sigmoid", "act")]


def test_a_subclass_of_a_layer_is_not_taken() -> None:
    class Scaled(nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 0.5

    assert shortcut_for(Scaled(3, 4, 3)) is None
    trace = _assert_same(Scaled(3, 4, 3), torch.randn(1, 3, 6, 6))
    assert [op.name for op in trace.ops] == ["convolution", "mul"]


def test_a_global_module_hook_sees_every_layer() -> None:
    net, seen = _Net(), []
    handle = nn.modules.module.register_module_forward_hook(lambda m, args, out: seen.append(type(m)))
    try:
        _assert_same(net, torch.randn(1, 3, 6, 6))
    finally:
        handle.remove()
    assert seen == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, _Net] * 2


_SEEN: list[str] = []


class _PassThrough(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        _SEEN.append(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


def test_a_layer_called_by_keyword_or_under_another_mode_runs_its_forward() -> None:
    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with _PassThrough():  # another mode would see the layer's calls
                y = self.act(self.conv(x))
            return self.act(input=y)

    _SEEN.clear()
    _assert_same(Keyword(), torch.randn(1, 3, 6, 6))
    assert _SEEN.count("conv2d") == 2 and _SEEN.count("relu") == 2  # the other mode saw both recordings


def test_a_layer_given_wrong_channels_fails_with_its_own_error() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5))
    with pytest.raises(ForwardError, match="running_mean should contain 4 elements not 5"):
        trace_model(net, torch.randn(1, 3, 6, 6))
    assert all("forward" not in vars(m) for m in net.modules())


def test_a_forward_the_model_sets_on_a_layer_while_it_runs_is_kept() -> None:
    class Patches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(x)
            self.act.forward = torch.sigmoid  # e.g. a library swapping a layer's forward on first call
            return y

    model = Patches()
    trace_model(model, torch.randn(2, 3))
    assert vars(model.act)["forward"] is torch.sigmoid


_signatures: list[str] = []


class _Child(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise ValueError("too many rows")
        return torch.relu(self.lin(x)) * 2


class _CallsForward(nn.Module):
    """Calls its child's ``forward`` directly, reads its signature, and catches the child's error."""

    def __init__(self) -> None:
        super().__init__()
        self.child = _Child()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _signatures.append(str(inspect.signature(self.child.forward)))
        with contextlib.suppress(ValueError):
            self.child(x.repeat(2, 1))
        return self.child.forward(x) + 1


def test_a_forward_called_directly_or_failing_keeps_the_module_attribution() -> None:
    """Modules without hooks keep the stack in a ``forward`` set on the instance: a forward called
    directly is its module's (in the shape-only and the real recording alike), ``inspect`` sees the
    module's own signature, and a forward that raises leaves the stack as it found it."""
    _signatures.clear()
    model, x = _CallsForward(), torch.randn(2, 4)
    real = trace_model(model, x, shapes_only=False)
    for trace in (_assert_same(model, x), real):
        assert [(op.name, op.module) for op in trace.ops] == [
            ("repeat", ""),
            ("t", "child.lin"),
            ("addmm", "child.lin"),
            ("relu", "child"),
            ("mul", "child"),
            ("add", ""),
        ]
        assert set(trace.module_outputs) == {"", "child", "child.lin"}
    own = str(inspect.signature(_Child().forward))  # (x: torch.Tensor) -> torch.Tensor
    assert _signatures == [own] * 3


def test_sources_name_each_tensor_as_named_parameters_and_named_buffers_do() -> None:
    """A tied weight and a module held under two names are recorded once, under their first name."""
    shared = nn.BatchNorm1d(4)
    model = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4), "n1": shared, "n2": shared}).eval()
    model["b"].weight = model["a"].weight

    class Run(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body["n2"](self.body["b"](self.body["a"](x)))

    net = Run()
    trace = trace_model(net, torch.randn(3, 4))
    want = [("param", n) for n, _ in net.named_parameters()] + [("buffer", n) for n, _ in net.named_buffers()]
    assert [s for s in trace.sources.values() if s[0] in ("param", "buffer")] == want
    assert ("param", "body.b.weight") not in want and ("buffer", "body.n2.running_mean") not in want
