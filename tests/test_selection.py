import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunekit import (
    LayerCollapseError,
    LayerCollapseWarning,
    Masks,
    compute_masks,
    prunable_parameters,
    prune,
    prune_lowest,
    select,
)


def _reference_lowest(tensors: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Sort-based reference: stable ascending sort over the concatenation, first k pruned."""
    flat = torch.cat([t.flatten().float() for t in tensors])
    pruned = torch.zeros_like(flat, dtype=torch.bool)
    pruned[torch.sort(flat, stable=True).indices[:k]] = True
    return list(pruned.split([t.numel() for t in tensors]))


floats = st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 3e-39, -3e-39, 1e30, -1e30, float("inf"), float("-inf")])


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    k_fraction=st.floats(0, 1),
    seed=st.integers(0, 2**16),
    tie_heavy=st.booleans(),
)
def test_prune_lowest_matches_a_stable_sort(sizes, k_fraction, seed, tie_heavy):
    gen = torch.Generator().manual_seed(seed)
    if tie_heavy:  # few distinct values, signed zeros, subnormals, infinities
        choices = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, 3e-39, -3e-39, 1e30, -1e30, math.inf, -math.inf])
        tensors = [choices[torch.randint(0, len(choices), (n,), generator=gen)] for n in sizes]
    else:
        tensors = [
            torch.randn(n, generator=gen) * 10 ** torch.randint(-5, 5, (1,), generator=gen) for n in sizes
        ]
    total = sum(sizes)
    k = round(k_fraction * total)
    got = prune_lowest([lambda t=t: t for t in tensors], k)
    expected = _reference_lowest(tensors, k)
    reference_order = torch.cat([t.flatten() for t in tensors])
    # −0.0 sorts below +0.0 for us but equal in a float sort: compare the multiset of pruned values instead.
    got_values = torch.sort(reference_order[torch.cat(got)]).values
    expected_values = torch.sort(reference_order[torch.cat(expected)]).values
    assert int(torch.cat(got).sum()) == k
    assert torch.equal(got_values, expected_values)


def test_ties_prune_the_earliest_positions_first():
    scores = {"a": torch.ones(3), "b": torch.ones(4)}
    masks = select(scores, 4 / 7, scope="global", on_collapse="ignore")
    assert masks["a"].tolist() == [False, False, False]
    assert masks["b"].tolist() == [False, True, True, True]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.333, 0.5, 0.9, 0.95, 0.999])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exact_sparsity(sparsity, scope, mlp):
    masks = compute_masks(mlp, "magnitude", sparsity, scope=scope, on_collapse="ignore")
    if scope == "global":
        assert masks.numel - masks.kept == round(sparsity * masks.numel)
    else:
        for mask in masks.values():
            assert int((~mask).sum()) == round(sparsity * mask.numel())


def test_matches_torch_l1_unstructured_per_layer():
    for shape, amount in [((30, 20), 0.5), ((7, 3, 3, 3), 0.9), ((100,), 0.33)]:
        weight = torch.randn(shape)
        module = nn.Linear(1, 1)
        module.weight = nn.Parameter(weight.clone())
        ours = select({"w": weight.abs()}, amount, scope="layer")["w"]
        torch_prune.l1_unstructured(module, "weight", amount=amount)
        assert torch.equal(ours, module.weight_mask.bool())


def test_matches_torch_global_unstructured(mlp):
    ours = compute_masks(mlp, "magnitude", 0.8, scope="global")
    reference = [(m, "weight") for m in mlp if isinstance(m, nn.Linear)]
    torch_prune.global_unstructured(reference, pruning_method=torch_prune.L1Unstructured, amount=0.8)
    for index in (0, 2, 4):
        assert torch.equal(ours[f"{index}.weight"], mlp[index].weight_mask.bool())


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "4:8", "3:8"])
def test_nm_groups_are_valid(pattern, convnet):
    n, m = map(int, pattern.split(":"))
    model = nn.Sequential(nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(16, 8))
    masks = compute_masks(model, "magnitude", None, pattern=pattern)
    for name, mask in masks.items():
        groups = mask.movedim(1, -1).reshape(-1, m)
        assert bool((groups.sum(1) == n).all()), name
    assert masks.sparsity == pytest.approx(1 - n / m)


def test_nm_keeps_the_largest_of_each_group_along_the_input_dimension():
    weights = torch.tensor([[1.0, -4.0, 3.0, 2.0, 0.1, 0.2, 0.3, -0.4]])
    masks = select({"w": weights.abs()}, None, pattern="2:4")
    assert masks["w"].tolist() == [[False, True, True, False, False, False, True, True]]


def test_blocks_are_all_or_nothing():
    weights = torch.randn(8, 12)
    masks = select({"w": weights.abs()}, 0.5, pattern="4x4", scope="layer")["w"]
    blocks = masks.reshape(2, 4, 3, 4).permute(0, 2, 1, 3).reshape(6, 16)
    assert bool(((blocks.sum(1) == 0) | (blocks.sum(1) == 16)).all())
    assert int((~masks).sum()) == 3 * 16
    # The pruned blocks are those with the lowest mean score.
    means = weights.abs().reshape(2, 4, 3, 4).mean((1, 3)).flatten()
    pruned_blocks = (blocks.sum(1) == 0).nonzero().flatten()
    assert set(pruned_blocks.tolist()) == set(torch.sort(means).indices[:3].tolist())


def test_one_by_four_blocks_on_conv():
    conv = nn.Conv2d(4, 8, 2)  # as a matrix 8 × 16
    masks = compute_masks(conv, "magnitude", 0.75, pattern="1x4")
    rows = masks["weight"].reshape(8, 4, 4)
    assert bool(((rows.sum(2) == 0) | (rows.sum(2) == 4)).all())
    assert masks.sparsity == 0.75


def test_prior_masks_stay_pruned_and_count(mlp):
    first = compute_masks(mlp, "random", 0.5, seed=3)
    second = compute_masks(mlp, "magnitude", 0.75, prior=first)
    for name in first:
        assert not bool((second[name] & ~first[name]).any())
    assert second.numel - second.kept == round(0.75 * second.numel)


def test_overrides_by_module_name_and_glob(mlp):
    masks = compute_masks(mlp, "magnitude", 0.5, scope="layer", overrides={"4": 0.25, "[02].weight": 0.75})
    assert masks.layer_sparsity() == {"0.weight": 0.75, "2.weight": 0.75, "4.weight": 0.25}
    masks = compute_masks(mlp, "magnitude", 0.5, scope="global", overrides={"4": 0.0})
    assert masks.layer_sparsity()["4.weight"] == 0.0
    shared = masks["0.weight"].numel() + masks["2.weight"].numel()
    assert int((~masks["0.weight"]).sum() + (~masks["2.weight"]).sum()) == round(0.5 * shared)
    with pytest.raises(ValueError, match=r"overrides keys \['fc9'\] match no prunable parameter"):
        compute_masks(mlp, "magnitude", 0.5, overrides={"fc9": 0.1})


def test_ignore_by_name_glob_and_type(convnet):
    assert prunable_parameters(convnet) == ["0.weight", "4.weight"]
    assert prunable_parameters(convnet, ignore=["4"]) == ["0.weight"]
    assert prunable_parameters(convnet, ignore=["0.*"]) == ["4.weight"]
    assert prunable_parameters(convnet, ignore=[nn.Conv2d]) == ["4.weight"]
    with pytest.raises(ValueError, match=r"ignore entries \['classifier'\] match no prunable layer"):
        prunable_parameters(convnet, ignore=["classifier"])
    masks = compute_masks(convnet, "magnitude", 0.5, ignore=[nn.Linear])
    assert list(masks) == ["0.weight"]


def test_collapse_guard_warns_or_raises():
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1e-3)
    with pytest.warns(LayerCollapseWarning, match=r"layer collapse.*'0.weight'"):
        compute_masks(model, "magnitude", 0.5)
    with pytest.raises(LayerCollapseError, match=r"'0.weight'"):
        compute_masks(model, "magnitude", 0.5, on_collapse="raise")
    masks = compute_masks(model, "magnitude", 0.5, on_collapse="ignore")
    assert masks.empty_layers() == ["0.weight"]


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.0, 1.5, float("inf")])
def test_bad_sparsity_raises_and_names_the_parameter(bad, mlp):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        prune(mlp, "magnitude", bad)


@pytest.mark.parametrize("bad", ["0.5", True, None])
def test_sparsity_of_wrong_type(bad, mlp):
    error = ValueError if bad is None else TypeError
    with pytest.raises(error, match="sparsity"):
        compute_masks(mlp, "magnitude", bad)


def test_bad_patterns(mlp):
    with pytest.raises(ValueError, match=r"N < M.*got 4:4"):
        compute_masks(mlp, "magnitude", None, pattern="4:4")
    with pytest.raises(ValueError, match=r"N < M.*got 5:4"):
        compute_masks(mlp, "magnitude", None, pattern="5:4")
    odd = nn.Linear(6, 4)
    with pytest.raises(ValueError, match=r"input dimension of 'weight' \(size 6.*divisible by M=4"):
        compute_masks(odd, "magnitude", None, pattern="2:4")
    with pytest.raises(ValueError, match=r"fixes sparsity at 0.5.*sparsity=0.7"):
        compute_masks(mlp, "magnitude", 0.7, pattern="2:4")
    with pytest.raises(ValueError, match="does not tile"):
        compute_masks(odd, "magnitude", 0.5, pattern="4x4")
    with pytest.raises(ValueError, match="unknown pattern 'diagonal'"):
        compute_masks(mlp, "magnitude", 0.5, pattern="diagonal")
    with pytest.raises(ValueError, match=r"scope must be one of 'global', 'layer'; got 'local'"):
        compute_masks(mlp, "magnitude", 0.5, scope="local")


def test_no_prunable_parameters():
    with pytest.raises(ValueError, match="no prunable parameters"):
        compute_masks(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), "magnitude", 0.5)


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="'w' contain NaN"):
        select({"w": torch.tensor([1.0, float("nan")])}, 0.5)


def test_prune_returns_a_copy_and_a_report(mlp):
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    result = prune(mlp, "magnitude", 0.6, example_inputs=torch.randn(1, 8))
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert result.model is not mlp
    assert isinstance(result.masks, Masks)
    report = result.report.to_dict()
    assert report["requested_sparsity"] == 0.6
    assert report["achieved_sparsity"] == pytest.approx(result.masks.sparsity)
    inplace = prune(mlp, "magnitude", 0.6, inplace=True)
    assert inplace.model is mlp
