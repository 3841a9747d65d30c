"""The one table of channel rules, keyed by ATen op packet (in-place ``op_`` uses ``op``'s rule)."""

from __future__ import annotations

from . import rules_layers as layers
from . import rules_shape as shape
from .attention import SDPA, sdpa
from .propagate import register_op_rule
from .rules_view import view

ELEMENTWISE = (
    "add", "sub", "rsub", "mul", "div", "where", "maximum", "minimum", "pow", "clamp", "clamp_min",
    "clamp_max", "relu", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh",
    "leaky_relu", "elu", "softplus", "mish", "exp", "log", "sqrt", "rsqrt", "neg", "abs", "erf", "sin",
    "cos", "reciprocal", "square", "masked_fill", "clone", "alias", "detach", "_to_copy", "lift_fresh",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "native_dropout",
    "copy", "zero", "fill", "lerp", "addcmul", "addcdiv", "threshold", "glu_backward", "logical_not",
    "eq", "ne", "lt", "le", "gt", "ge", "sign", "round", "floor", "ceil", "trunc", "frac", "log1p", "expm1",
    "log2", "log10", "exp2", "atan", "tan", "asin", "acos", "sinh", "cosh", "asinh", "atanh", "nan_to_num",
    "celu", "selu", "log_sigmoid_forward", "hardshrink", "softshrink", "rrelu_with_noise", "logit", "sgn",
    "xlogy", "fmod", "remainder", "floor_divide", "isnan", "isinf", "logical_and", "logical_or",
    "logical_xor", "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor",
)  # fmt: skip
REDUCTIONS = (
    "mean", "sum", "amax", "amin", "max", "min", "var", "std", "prod", "logsumexp", "linalg_vector_norm",
    "norm", "argmax", "argmin", "all", "any", "var_mean", "std_mean",
)  # fmt: skip
WINDOWED = (
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d",
    "adaptive_max_pool2d", "adaptive_max_pool1d", "upsample_nearest1d", "upsample_nearest2d",
    "upsample_nearest3d", "upsample_bilinear2d", "upsample_linear1d", "upsample_bicubic2d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact1d", "_upsample_nearest_exact3d",
    "upsample_trilinear3d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa", "adaptive_max_pool3d",
    "max_pool1d_with_indices", "fractional_max_pool2d", "fractional_max_pool3d",
)  # fmt: skip
PADS = (
    "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d",
    "replication_pad2d", "replication_pad3d",
)  # fmt: skip
ALONG_DIM = (
    "_softmax", "_log_softmax", "softmax", "log_softmax", "cumsum", "cumprod",
    "logcumsumexp", "cummax", "cummin",
)  # fmt: skip
RECURRENT = (
    "mkldnn_rnn_layer", "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell",
    "rnn_relu_cell", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell",
)  # fmt: skip
POSITIONAL = ("flip", "sort", "topk", "unfold", "_fft_c2c", "_fft_r2c", "_fft_c2r")
BATCH_NORMS = (
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "batch_norm",
)  # fmt: skip


def _register() -> None:
    register_op_rule(ELEMENTWISE, shape.elementwise)
    register_op_rule(REDUCTIONS, shape.reduction)
    register_op_rule(WINDOWED, shape.windowed)
    register_op_rule(PADS, shape.same_rank)
    register_op_rule(ALONG_DIM, shape.along_dim)
    register_op_rule(RECURRENT, shape.pinned)
    register_op_rule(("new_ones", "new_zeros", "new_full", "new_empty", "new_empty_strided"), shape.fresh)
    register_op_rule("cat", shape.cat)
    register_op_rule("glu", shape.glu)
    register_op_rule(("view_as_complex", "view_as_real"), shape.complex_view)
    register_op_rule(POSITIONAL, shape.along_positions)
    register_op_rule(("tril", "triu"), shape.triangle)
    register_op_rule(("scatter", "scatter_add", "scatter_reduce"), shape.scatter)
    register_op_rule("im2col", shape.im2col)
    register_op_rule("col2im", shape.col2im)
    register_op_rule(("grid_sampler_2d", "grid_sampler_3d"), shape.grid_sample)
    register_op_rule("gather", shape.gather)
    register_op_rule("as_strided", shape.as_strided)
    register_op_rule("stack", shape.stack)
    register_op_rule(("split", "split_with_sizes", "unsafe_split"), shape.split)
    register_op_rule("slice", shape.slice_)
    register_op_rule("select", shape.select)
    register_op_rule("index", shape.index)
    register_op_rule("index_put", shape.index_put)
    register_op_rule("index_select", shape.index_select)
    register_op_rule("index_add", shape.index_add)
    register_op_rule("roll", shape.roll)
    register_op_rule(("channel_shuffle", "native_channel_shuffle"), shape.channel_shuffle)
    register_op_rule("pixel_shuffle", shape.pixel_shuffle)
    register_op_rule("pixel_unshuffle", shape.pixel_unshuffle)
    register_op_rule("unbind", shape.unbind)
    register_op_rule(("permute", "transpose", "t"), shape.permute)
    register_op_rule("expand", shape.expand)
    register_op_rule("repeat", shape.repeat)
    register_op_rule(("view", "_unsafe_view", "reshape", "squeeze", "unsqueeze", "flatten"), view)
    register_op_rule(("convolution", "_convolution"), layers.convolution)  # _convolution: TorchScript traces
    register_op_rule("_weight_norm_interface", layers.weight_norm)
    register_op_rule(("mm", "addmm", "bmm", "baddbmm"), layers.mm)
    register_op_rule("mv", layers.mv)
    register_op_rule(("dot", "vdot"), layers.dot)
    register_op_rule("_trilinear", layers.trilinear)
    register_op_rule("_grouped_mm", layers.grouped_mm)
    register_op_rule(BATCH_NORMS, layers.batch_norm)
    register_op_rule("native_layer_norm", layers.layer_norm)
    register_op_rule("native_group_norm", layers.group_norm)
    register_op_rule("_prelu_kernel", layers.prelu)
    register_op_rule("embedding", layers.embedding)
    register_op_rule("embedding_renorm", layers.embedding_renorm)
    register_op_rule("_cdist_forward", layers.cdist)
    register_op_rule(("_embedding_bag", "_embedding_bag_forward_only"), layers.embedding_bag)
    register_op_rule(SDPA, sdpa)


_register()
