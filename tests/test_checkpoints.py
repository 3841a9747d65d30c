import pytest
import torch
from torch import nn

from prunekit.checkpoints import load_weights, read_weights, save_weights


def test_round_trip_and_atomic_write(tmp_path, mlp):
    path = save_weights(mlp, tmp_path / "w.safetensors")
    fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    load_weights(fresh, path)
    pairs = zip(mlp.state_dict().values(), fresh.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not list(tmp_path.glob("*.tmp"))


def test_tied_weights_are_saved(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    state = read_weights(save_weights(model, tmp_path / "tied.safetensors"))
    assert torch.equal(state["0.weight"], state["1.weight"])


def test_torch_save_state_dict_is_read_weights_only(tmp_path, mlp):
    torch.save(mlp.state_dict(), tmp_path / "w.pt")
    assert set(read_weights(tmp_path / "w.pt")) == set(mlp.state_dict())


def test_pickled_objects_are_refused(tmp_path, mlp):
    torch.save(mlp, tmp_path / "module.pt")  # a whole pickled module: weights_only refuses it
    with pytest.raises(ValueError, match="is not a model weights file"):
        read_weights(tmp_path / "module.pt")


def test_truncated_safetensors(tmp_path, mlp):
    path = save_weights(mlp, tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt or truncated safetensors"):
        read_weights(path)


def test_wrong_architecture(tmp_path, mlp):
    path = save_weights(mlp, tmp_path / "w.safetensors")
    expected = r"does not fit Linear: missing \['bias', 'weight'\], unexpected \['0.bias'"
    with pytest.raises(ValueError, match=expected):
        load_weights(nn.Linear(8, 16), path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights(tmp_path / "nope.safetensors")
