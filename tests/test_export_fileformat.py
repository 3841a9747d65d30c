import json

import pytest
import torch
from safetensors.torch import load, save
from torch import nn

from prunekit import Masks, save_weights
from prunekit.export import (
    ArchitectureMismatchError,
    CorruptFileError,
    FormatVersionError,
    fileformat,
    load_compressed,
    read_compressed,
    read_manifest,
    save_compressed,
)


def pruned_mlp(sparsity: float = 0.9) -> nn.Module:
    model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 8), nn.BatchNorm1d(8))
    masks = Masks({n: torch.rand(p.shape) >= sparsity for n, p in model.named_parameters() if p.dim() == 2})
    return masks.apply(model)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and torch.equal(raw(sa[k]), raw(sb[k])) for k in sa
    )


def raw(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def fresh() -> nn.Module:
    return pruned_mlp(0.0)


@pytest.mark.parametrize("encoding", ["auto", "dense", "bitmap", "csr", "relative"])
def test_round_trip_into_the_original_architecture(tmp_path, encoding):
    model = pruned_mlp()
    path = save_compressed(model, tmp_path / "m.safetensors", encoding=encoding, metadata={"run": "7"})
    loaded = load_compressed(fresh(), path)
    assert same_state(loaded, model)
    manifest = read_manifest(path)
    assert manifest["user"] == {"run": "7"}
    assert manifest["tensors"]["0.weight"]["shape"] == [32, 40]
    assert manifest["tensors"]["3.num_batches_tracked"]["dtype"] == "int64"
    if encoding != "auto":
        assert {e["encoding"] for e in manifest["tensors"].values()} == {encoding}


def test_per_tensor_encoding_choice_and_unknown_names(tmp_path):
    path = save_compressed(pruned_mlp(), tmp_path / "m.st", encoding={"0.weight": "csr"})
    assert read_manifest(path)["tensors"]["0.weight"]["encoding"] == "csr"
    with pytest.raises(ValueError, match="does not have: \\['nope'\\]"):
        save_compressed(pruned_mlp(), tmp_path / "m.st", encoding={"nope": "csr"})
    with pytest.raises(ValueError, match="unknown encoding 'zip'"):
        save_compressed(pruned_mlp(), tmp_path / "m.st", encoding="zip")


def test_compressed_file_is_much_smaller_than_dense(tmp_path):
    model = nn.Linear(512, 512, bias=False)
    model = Masks({"weight": torch.rand(512, 512) >= 0.95}).apply(model)
    dense = save_weights(model, tmp_path / "dense.safetensors").stat().st_size
    compressed = save_compressed(model, tmp_path / "c.safetensors").stat().st_size
    assert compressed * 12 < dense


def test_wrong_architecture_names_the_tensor_and_shapes(tmp_path):
    path = save_compressed(pruned_mlp(), tmp_path / "m.st")
    narrower = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 8), nn.BatchNorm1d(8))
    with pytest.raises(ArchitectureMismatchError, match=r"0\.weight: file \(32, 40\) vs model \(16, 40\)"):
        load_compressed(narrower, path)
    with pytest.raises(ArchitectureMismatchError, match=r"missing \['extra'\]"):
        model = fresh()
        model.register_buffer("extra", torch.zeros(1))
        load_compressed(model, path)


def test_every_flipped_byte_raises(tmp_path):
    path = save_compressed(Masks({"weight": torch.rand(3, 4) > 0.5}).apply(nn.Linear(4, 3)), tmp_path / "a")
    data = path.read_bytes()
    bad = tmp_path / "bad"
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with pytest.raises((CorruptFileError, FormatVersionError)):
            read_compressed(bad)


def test_flipped_value_byte_names_the_tensor(tmp_path):
    model = pruned_mlp()
    path = save_compressed(model, tmp_path / "m.st", encoding="dense")
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8 : 8 + size])["3.running_var::values"]["data_offsets"]
    data[8 + size + (start + end) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum mismatch in tensor '3.running_var'"):
        load_compressed(fresh(), path)


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1])
def test_truncated_file_raises(tmp_path, keep):
    path = save_compressed(pruned_mlp(), tmp_path / "m.st")
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_compressed(path)


def test_wrong_version_and_foreign_file_raise(tmp_path):
    path = save_compressed(pruned_mlp(), tmp_path / "m.st")
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    path.write_bytes(save(load(raw), metadata={**header, "version": "99"}))
    with pytest.raises(FormatVersionError, match="version '99'; this prunekit reads version '1'"):
        read_compressed(path)
    plain = save_weights(pruned_mlp(), tmp_path / "plain.safetensors")
    with pytest.raises(FormatVersionError, match="not a prunekit compressed file"):
        load_compressed(fresh(), plain)


def test_interrupted_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = save_compressed(pruned_mlp(), tmp_path / "m.st")
    before = path.read_bytes()

    def crash(f, data):
        f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(fileformat, "_write_payload", crash)
    with pytest.raises(OSError, match="disk full"):
        save_compressed(pruned_mlp(0.5), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.st"]  # no temporary file left behind


def test_file_stores_only_the_encoded_parts(tmp_path):
    path = save_compressed(pruned_mlp(), tmp_path / "m.st", encoding="relative")
    stored = load(path.read_bytes())  # plain safetensors: no pickle anywhere
    assert set(stored) == {f"{n}::{p}" for n in fresh().state_dict() for p in ("gaps", "values")}
    assert stored["0.weight::gaps"].dtype == torch.uint8
