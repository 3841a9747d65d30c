import pytest
import torch
from torch import nn

from conftest import bits
from prunekit import MaskedTraining, Masks, compute_masks


def _masks_for(model: nn.Module, sparsity: float = 0.5) -> Masks:
    return compute_masks(model, "magnitude", sparsity, scope="layer")


def test_apply_zeroes_pruned_entries_and_keeps_state_dict_keys(mlp):
    keys = list(mlp.state_dict())
    masks = _masks_for(mlp)
    pruned = masks.apply(mlp)
    assert list(pruned.state_dict()) == keys
    for name, param in pruned.named_parameters():
        if name in masks:
            assert torch.all(param[~masks[name]] == 0)
            assert torch.equal(param[masks[name]], dict(mlp.named_parameters())[name][masks[name]])


def test_apply_leaves_the_original_untouched_unless_inplace(mlp):
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    masks = _masks_for(mlp)
    masks.apply(mlp)
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    weight = mlp[0].weight
    out = masks.apply(mlp, inplace=True)
    assert out is mlp and mlp[0].weight is weight
    assert int((mlp[0].weight == 0).sum()) == int((~masks["0.weight"]).sum())


def test_pruned_zeros_are_positive_zero(mlp):
    masks = _masks_for(mlp, 0.9)
    pruned = masks.apply(mlp)
    for name in masks:
        values = dict(pruned.named_parameters())[name][~masks[name]]
        assert torch.all(bits(values) == 0)


def test_ephemeral_zeroes_inside_and_restores_bit_for_bit(mlp):
    with torch.no_grad():
        mlp[0].weight[0, 0] = -0.0  # a signed zero must survive the round trip
    saved = {k: bits(v).clone() for k, v in mlp.state_dict().items()}
    params = [id(p) for p in mlp.parameters()]
    masks = _masks_for(mlp, 0.75)
    with masks.ephemeral(mlp) as inside:
        assert inside is mlp
        assert torch.all(mlp[0].weight[~masks["0.weight"]] == 0)
        mlp[2].weight.data.add_(1.0)  # the body may even change weights
    assert [id(p) for p in mlp.parameters()] == params
    assert all(torch.equal(saved[k], bits(v)) for k, v in mlp.state_dict().items())


def test_ephemeral_restores_after_an_exception(mlp):
    saved = {k: bits(v).clone() for k, v in mlp.state_dict().items()}
    masks = _masks_for(mlp, 0.5)
    with pytest.raises(RuntimeError, match="boom"), masks.ephemeral(mlp):
        raise RuntimeError("boom")
    assert all(torch.equal(saved[k], bits(v)) for k, v in mlp.state_dict().items())


def test_ephemeral_changes_outputs_only_inside(mlp):
    x = torch.randn(5, 8)
    dense = mlp(x)
    masks = _masks_for(mlp, 0.9)
    with masks.ephemeral(mlp):
        inside = mlp(x)
    assert torch.equal(inside, masks.apply(mlp)(x))
    assert not torch.equal(inside, dense)
    assert torch.equal(mlp(x), dense)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-1),
    ],
    ids=["sgd-momentum-wd", "sgd-nesterov", "adam-wd", "adamw"],
)
def test_masked_training_keeps_pruned_weights_exactly_zero(mlp, make_optimizer):
    optimizer = make_optimizer(mlp.parameters())
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    for _ in range(3):  # build up momentum / Adam moments while dense
        optimizer.zero_grad()
        nn.functional.cross_entropy(mlp(x), y).backward()
        optimizer.step()
    masks = _masks_for(mlp, 0.8)
    with MaskedTraining(mlp, masks, optimizer):
        for _ in range(10):
            optimizer.zero_grad()
            nn.functional.cross_entropy(mlp(x), y).backward()
            for name, p in mlp.named_parameters():
                if name in masks:
                    assert torch.all(p.grad[~masks[name]] == 0)
            optimizer.step()
            for name, p in mlp.named_parameters():
                if name in masks:
                    assert torch.all(p[~masks[name]] == 0)
                    assert bool((p[masks[name]] != 0).all())
    # Detached: the next step may move pruned weights again.
    optimizer.zero_grad()
    nn.functional.cross_entropy(mlp(x), y).backward()
    optimizer.step()
    assert bool((mlp[0].weight[~masks["0.weight"]] != 0).any())


def test_masked_training_rejects_non_optimizer(mlp):
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        MaskedTraining(mlp, _masks_for(mlp), optimizer="adam")


def test_intersection_and_union():
    a = Masks({"w": torch.tensor([True, True, False, False]), "only_a": torch.tensor([False, True])})
    b = Masks({"w": torch.tensor([True, False, True, False]), "only_b": torch.tensor([True, False])})
    both = a & b
    assert torch.equal(both["w"], torch.tensor([True, False, False, False]))
    assert torch.equal(both["only_a"], a["only_a"]) and torch.equal(both["only_b"], b["only_b"])
    either = a | b
    assert list(either) == ["w"]  # a name missing on one side is all-kept there
    assert torch.equal(either["w"], torch.tensor([True, True, True, False]))
    with pytest.raises(ValueError, match="shapes"):
        _ = a & Masks({"w": torch.ones(3, dtype=torch.bool)})


def test_statistics():
    masks = Masks({"a": torch.tensor([True, False, False, False]), "b": torch.zeros(2, 2, dtype=torch.bool)})
    assert masks.numel == 8 and masks.kept == 1
    assert masks.sparsity == pytest.approx(7 / 8)
    assert masks.layer_sparsity() == {"a": 0.75, "b": 1.0}
    assert masks.empty_layers() == ["b"]


def test_masks_must_be_boolean():
    with pytest.raises(TypeError, match="torch.bool"):
        Masks({"w": torch.ones(3)})


def test_mismatched_masks_raise(mlp):
    with pytest.raises(ValueError, match="does not have.*nonexistent.weight"):
        Masks({"nonexistent.weight": torch.ones(2, dtype=torch.bool)}).apply(mlp)
    with pytest.raises(ValueError, match=r"shape \(3, 3\).*\(16, 8\)"):
        Masks({"0.weight": torch.ones(3, 3, dtype=torch.bool)}).apply(mlp)


def test_save_load_round_trip(tmp_path, mlp):
    masks = _masks_for(mlp, 0.6)
    path = masks.save(tmp_path / "masks.safetensors")
    assert Masks.load(path) == masks
    assert not list(tmp_path.glob("*.tmp"))


def test_load_rejects_corrupt_and_foreign_files(tmp_path, mlp):
    from safetensors.torch import save_file

    path = _masks_for(mlp).save(tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    (tmp_path / "truncated.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="not a readable masks file"):
        Masks.load(tmp_path / "truncated.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable masks file"):
        Masks.load(tmp_path / "junk.safetensors")
    save_file({"w": torch.ones(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="not a prunekit masks file"):
        Masks.load(tmp_path / "weights.safetensors")
    with pytest.raises(FileNotFoundError):
        Masks.load(tmp_path / "missing.safetensors")
