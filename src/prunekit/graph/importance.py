"""Group importance: one score per channel of a group (higher = more important, kept longer).

A criterion scores every member of a group per channel, shape ``(members, channels)``, with NaN for
members it does not read; :func:`group_scores` reduces over members (nan-aware mean / sum / max) and
normalises within the group so that scores of different groups can be ranked together.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from .._checks import check_choice
from .._registry import Registry
from .graph import Group, Member

Criterion = Callable[[nn.Module, Group, torch.Generator], torch.Tensor]
IMPORTANCES: Registry[Criterion] = Registry("importance")
REDUCTIONS = ("mean", "sum", "max")
NORMALIZATIONS = ("none", "mean", "max", "sum")


def _rows(
    model: nn.Module, group: Group, member: int, grad: bool = False, importance: str = "taylor"
) -> torch.Tensor:
    """The member tensor (or its ``.grad``) with the member dim first, flattened: ``(dim size, rest)``."""
    m = group.members[member]
    tensor = model.get_parameter(m.tensor) if grad else _tensor(model, m.tensor)
    if grad:
        if tensor.grad is None:
            raise ValueError(
                f"importance {importance!r} reads gradients but {m.tensor}.grad is None; run "
                "loss.backward() on a batch before building the plan"
            )
        tensor = tensor.grad
    return tensor.detach().movedim(m.dim, 0).reshape(tensor.shape[m.dim], -1).float()


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    """The parameter or buffer ``name`` (a state_dict key), by the module tree's own dicts."""
    owner, local = _owner(model, name)
    return getattr(owner, local)


def _is_parameter(model: nn.Module, name: str) -> bool:
    owner, local = _owner(model, name)
    return local in owner._parameters


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, local = name.split(".")
    owner = model
    for atom in path:
        owner = owner._modules[atom]
    return owner, local


def _per_channel(group: Group, member: int, values: torch.Tensor) -> torch.Tensor:
    """Sum per-index ``values`` (dim size,) into the group's channels: ``(size,)``."""
    if group.in_order[member]:
        return values  # index i is channel i
    channel_of = group.channel_of[member]
    channel = torch.from_numpy(channel_of)
    keep = channel >= 0
    return torch.zeros(group.size).index_add_(0, channel[keep], values[keep])


def _power_sums(model: nn.Module, group: Group, member: int, power: int) -> torch.Tensor:
    """Σ |w|^power over every slice of the member dim, ``(dim size,)`` float32.

    Within :func:`shared_reductions`, a tensor with several member dims (a conv weight's out and in
    channels) of at most ``_CHUNK`` elements is raised to the power once for all of them.
    """
    m = group.members[member]
    tensor = _tensor(model, m.tensor).detach()
    memo = _SHARED.get()
    if memo is None or tensor.dim() == 1 or tensor.numel() > _CHUNK or len(memo.dims[m.tensor]) < 2:
        return _dim_power_sums(tensor, m.dim, power)
    sums = memo.sums.get((m.tensor, power))
    if sums is None:
        powered = _power(tensor, power)
        sums = memo.sums[m.tensor, power] = {d: _grid_sums(powered, d) for d in memo.dims[m.tensor]}
    return sums[m.dim]


def _dim_power_sums(tensor: torch.Tensor, dim: int, power: int) -> torch.Tensor:
    """Σ |w|^power over every slice of ``dim`` of ``tensor``, ``(dim size,)`` float32.

    The tensor is viewed as (dims before, member dim, dims after), summed over the leading dims, then
    the trailing ones: contiguous reductions, no copy (dim 1 of a 512×512×3×3 conv weight: 0.6 ms on
    one thread, vs 2.4 ms summing over dims (0, 2, 3) at once and 2.8 ms with
    ``torch.linalg.vector_norm``). |w|^power is formed in slices of at most ``_CHUNK`` elements, so
    large weights never allocate (and page-fault) a full-size temporary: ResNet-18's conv weights,
    both channel dims, in 5.4 ms instead of 7.6 ms.
    """
    if tensor.dim() == 1:  # biases, norm scales, running statistics
        return _power(tensor, power)
    size = tensor.shape[dim]
    grid = tensor.reshape(math.prod(tensor.shape[:dim]), size, -1)  # (before, size, after)
    if grid.numel() <= _CHUNK:
        return _grid_sums(_power(grid, power), 1)
    if len(grid) == 1:  # sum over trailing dims, a block of rows at a time
        rows = max(1, _CHUNK // grid.shape[2])
        return torch.cat([_power(grid[0, i : i + rows], power).sum(1) for i in range(0, size, rows)])
    leads = max(1, _CHUNK // (size * grid.shape[2]))
    total = _power(grid[:leads], power).sum(0)
    for i in range(leads, len(grid), leads):
        total += _power(grid[i : i + leads], power).sum(0)
    return total.sum(1)


def _grid_sums(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums of ``values`` over every slice of ``dim``: over the dims before it, then those after."""
    grid = values.reshape(math.prod(values.shape[:dim]), values.shape[dim], -1)
    return (grid[0] if len(grid) == 1 else grid.sum(0)).sum(1)


class _Reductions:
    """What :func:`shared_reductions` shares: each tensor's member dims, and the sums made so far."""

    def __init__(self, groups: Iterable[Group]) -> None:
        self.dims: dict[str, set[int]] = defaultdict(set)
        for group in groups:
            for m in group.members:
                self.dims[m.tensor].add(m.dim)
        self.sums: dict[tuple[str, int], dict[int, torch.Tensor]] = {}


_SHARED: ContextVar[_Reductions | None] = ContextVar("prunekit_shared_reductions", default=None)


@contextmanager
def shared_reductions(groups: Iterable[Group]) -> Iterator[None]:
    """Score ``groups`` (all a plan scores, their weights unchanged meanwhile) with each weight's
    magnitudes formed once for all its channel dims (ResNet-50, L1: its plan in 17.5 ms, not 19.9 ms)."""
    token = _SHARED.set(_Reductions(groups))
    try:
        yield
    finally:
        _SHARED.reset(token)


_CHUNK = 1 << 20


def _power(values: torch.Tensor, power: int) -> torch.Tensor:
    values = values.float()
    return values.abs() if power == 1 else values.square()


def _member_rows(
    group: Group, reads: Callable[[Member], bool], row: Callable[[int], torch.Tensor]
) -> torch.Tensor:
    """``(members, size)``: ``row(i)`` for the members ``reads`` accepts, NaN rows for the others."""
    unread = torch.full((group.size,), float("nan"))
    return torch.stack([row(i) if reads(m) else unread for i, m in enumerate(group.members)])


def _magnitude(power: int) -> Criterion:
    def score(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
        rows = _member_rows(
            group,
            lambda m: _is_parameter(model, m.tensor),
            lambda i: _per_channel(group, i, _power_sums(model, group, i, power)),
        )
        return rows if power == 1 else rows.pow(1.0 / power)

    score.__doc__ = (
        f"L{power} norm of every weight slice of a channel (Li et al., 2017). Parameters only: NaN for "
        "buffers (a BatchNorm's running variance is a statistic, and a large one scales the channel down)."
    )
    return score


def bn_scale(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
    """|γ| of the group's BatchNorm layers (network slimming, Liu et al., 2017); NaN elsewhere."""

    def reads(m: Member) -> bool:
        is_bn = isinstance(model.get_submodule(m.module), nn.modules.batchnorm._BatchNorm)
        return is_bn and m.tensor.endswith(".weight")

    return _member_rows(group, reads, lambda i: _per_channel(group, i, _rows(model, group, i).abs().sum(1)))


def taylor(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
    """|Σ w·∂L/∂w| over each channel's weights (first-order Taylor, Molchanov et al., 2019)."""

    def row(i: int) -> torch.Tensor:
        product = (_rows(model, group, i) * _rows(model, group, i, grad=True)).sum(1)
        return _per_channel(group, i, product).abs()

    return _member_rows(group, lambda m: _is_parameter(model, m.tensor), row)


def obd(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
    """½·Σ w²·F over each channel's weights, F = g² (Optimal Brain Damage, LeCun et al., 1990).

    Removing weights w changes the loss by ≈ ½·Σ H_ii·w_i² at a minimum; the Hessian diagonal H_ii is
    approximated by the empirical-Fisher diagonal F_ii = g_i², with g = ∂L/∂w the *per-batch*
    gradient read from ``.grad`` (as ``taylor`` does: run ``loss.backward()`` on one batch first; a
    batch of one sample gives the per-sample estimate, a larger batch a lower bound of its mean).
    Parameters only; NaN for buffers.
    """

    def row(i: int) -> torch.Tensor:
        w, g = _rows(model, group, i), _rows(model, group, i, grad=True, importance="obd")  # (n, rest)
        return _per_channel(group, i, 0.5 * (w.square() * g.square()).sum(1))

    return _member_rows(group, lambda m: _is_parameter(model, m.tensor), row)


def fpgm(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
    """Σ_j ‖F_i − F_j‖₂ over the filters j of the same layer (FPGM, He et al., CVPR 2019).

    "Filter pruning via geometric median": filters close to the geometric median of their layer are
    replaceable by the others, so the smallest sum of distances goes first. ``F_i`` is row ``i`` of a
    producing weight (role ``"out"``, at least 2-D), flattened; the distances run over all rows of
    that tensor. A channel spanning several rows (an attention head) sums their scores. NaN for
    consumers, biases and norm scales.
    """

    def row(i: int) -> torch.Tensor:
        filters = _rows(model, group, i).double()  # (n, rest)
        distances = torch.cdist(filters[None], filters[None])[0].sum(1)  # (n,)
        return _per_channel(group, i, distances.float())

    def reads(m: Member) -> bool:
        return m.role == "out" and _is_parameter(model, m.tensor) and _tensor(model, m.tensor).dim() >= 2

    return _member_rows(group, reads, row)


def lamp(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
    """LAMP on channel norms (Lee et al., ICLR 2021): s_c = n_c / Σ_{c′: n_c′ ≥ n_c} n_c′.

    ``n_c = Σ w²`` over channel ``c``'s weights in one parameter (a "layer"); the denominator sums the
    squared norms of every channel of that parameter with a larger *or equal* norm (tied channels get
    equal scores). The largest channel scores 1; a channel of zero norm scores 0. Parameters only.
    """

    def row(i: int) -> torch.Tensor:
        norms = _per_channel(group, i, _rows(model, group, i).square().sum(1)).double()  # (size,)
        ascending = norms.sort().values
        tail = ascending.flip(0).cumsum(0).flip(0)  # tail[k] = Σ_{j ≥ k} ascending[j]
        denominator = tail[torch.searchsorted(ascending, norms)]  # first position with an equal norm
        return torch.where(denominator > 0, norms / denominator.clamp_min(1e-300), 0.0).float()

    return _member_rows(group, lambda m: _is_parameter(model, m.tensor), row)


def random(model: nn.Module, group: Group, generator: torch.Generator) -> torch.Tensor:
    """Uniform random scores from ``generator`` (a baseline)."""
    return torch.rand(1, group.size, generator=generator)


def group_scores(
    model: nn.Module,
    group: Group,
    importance: str = "l1",
    reduction: str = "mean",
    normalize: str = "mean",
    generator: torch.Generator | None = None,
) -> torch.Tensor | None:
    """Scores ``(group.size,)`` of ``group``'s channels; ``None`` when the criterion reads no member."""
    check_choice(reduction, "reduction", REDUCTIONS)
    check_choice(normalize, "normalize", NORMALIZATIONS)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    per_member = IMPORTANCES.get(importance)(model, group, generator)  # (members, size)
    if torch.isnan(per_member).all():
        return None
    if reduction == "mean":
        scores = per_member.nanmean(0)
    elif reduction == "sum":
        scores = per_member.nansum(0)
    else:
        scores = per_member.nan_to_num(nan=-torch.inf).amax(0)
    if normalize == "none":
        return scores
    scale = scores.mean() if normalize == "mean" else scores.max() if normalize == "max" else scores.sum()
    return scores / scale if scale > 0 else scores


IMPORTANCES.register("l1", _magnitude(1))
IMPORTANCES.register("l2", _magnitude(2))
IMPORTANCES.register("bn_scale", bn_scale)
IMPORTANCES.register("taylor", taylor)
IMPORTANCES.register("random", random)
IMPORTANCES.register("obd", obd)
IMPORTANCES.register("fpgm", fpgm)
IMPORTANCES.register("lamp", lamp)
