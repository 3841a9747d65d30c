import itertools

import pytest
import torch
from torch import nn

from prunekit import Masks
from prunekit.schedules import GradualPruning, iterative_prune, sparsity_steps


def test_exponential_steps_prune_the_same_fraction_of_what_remains():
    steps = sparsity_steps(0.96, 2, "exponential")
    assert steps == pytest.approx([0.8, 0.96])
    assert sparsity_steps(0.9, 3, "linear") == pytest.approx([0.3, 0.6, 0.9])
    assert sparsity_steps(0.9, 1)[-1] == 0.9


@pytest.mark.parametrize(
    ("args", "match"),
    [((1.0, 3), "final sparsity"), ((0.5, 0), "rounds"), ((0.5, 2, "cubic"), "kind must be one of")],
)
def test_bad_schedules(args, match):
    with pytest.raises(ValueError, match=match):
        sparsity_steps(*args)


def test_iterative_prune_calls_finetune_each_round_and_keeps_pruned_weights(mlp):
    seen = []

    def finetune(model: nn.Module, masks: Masks, round_index: int) -> None:
        seen.append((round_index, masks.sparsity))
        with torch.no_grad():  # a careless fine-tune that revives everything
            for p in model.parameters():
                p.add_(1.0)

    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    result = iterative_prune(mlp, "magnitude", 0.875, 3, finetune, scope="layer")
    assert [r for r, _ in seen] == [1, 2, 3]
    assert [h["requested"] for h in result.history] == pytest.approx([0.5, 0.75, 0.875])
    for earlier, later in itertools.pairwise(seen):
        assert later[1] > earlier[1]
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())  # a copy was pruned
    assert result.masks.sparsity == pytest.approx(0.875, abs=0.01)


def test_gradual_cubic_schedule_values_and_masks_held(mlp):
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9)
    pruner = GradualPruning(mlp, optimizer, final_sparsity=0.8, start_step=10, end_step=40, frequency=10)
    assert pruner.sparsity_at(0) == 0.0
    assert pruner.sparsity_at(10) == 0.0
    assert pruner.sparsity_at(25) == pytest.approx(0.8 - 0.8 * 0.5**3)
    assert pruner.sparsity_at(40) == pruner.sparsity_at(100) == pytest.approx(0.8)
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    for step in range(1, 51):
        optimizer.zero_grad()
        nn.functional.cross_entropy(mlp(x), y).backward()
        optimizer.step()
        pruner.callback(step)
    assert [h["step"] for h in pruner.history] == [10, 20, 30, 40]
    assert pruner.masks.sparsity == pytest.approx(0.8, abs=0.01)
    for name, param in mlp.named_parameters():
        if name in pruner.masks:
            assert torch.all(param[~pruner.masks[name]] == 0)
    pruner.remove()


def test_gradual_rejects_bad_steps(mlp):
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="start_step < end_step"):
        GradualPruning(mlp, optimizer, final_sparsity=0.5, start_step=10, end_step=10)
    with pytest.raises(ValueError, match="final_sparsity"):
        GradualPruning(mlp, optimizer, final_sparsity=1.5, start_step=0, end_step=10)
