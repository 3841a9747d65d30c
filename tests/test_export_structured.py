"""Export of structurally pruned models: compressed files, ONNX and Hugging Face checkpoints."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from prunekit import Masks
from prunekit.export import ArchitectureMismatchError, load_compressed, read_manifest, save_compressed
from prunekit.graph import DependencyGraph
from prunekit.plan import apply_plan, build_plan
from structured_zoo import HF_ZOO, build, hf_inputs, resnet18, vgg11_bn

torch.set_num_threads(1)


def _pruned(name: str) -> tuple[nn.Module, torch.Tensor]:
    model, x = build(name)
    return apply_plan(model, build_plan(model, DependencyGraph.build(model, x), 0.5)).eval(), x


def _sparse(model: nn.Module) -> nn.Module:
    """``model`` with half of every conv / linear weight zeroed (unstructured masks)."""
    weights = {n: p for n, p in model.named_parameters() if p.dim() >= 2}
    return Masks({n: torch.rand(p.shape) > 0.5 for n, p in weights.items()}).apply(model)


@pytest.mark.parametrize("unstructured", [False, True])
def test_structurally_pruned_cnn_loads_into_its_original_architecture(tmp_path, unstructured) -> None:
    pruned, x = _pruned("resnet18")
    if unstructured:
        pruned = _sparse(pruned)
    path = save_compressed(pruned, tmp_path / "m.safetensors")
    loaded = load_compressed(resnet18, path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))
    assert loaded[2].body[0][0].out_channels == pruned[2].body[0][0].out_channels < 16
    assert all(torch.equal(v, pruned.state_dict()[k]) for k, v in loaded.state_dict().items())
    weights = {n for n, p in pruned.named_parameters() if p.dim() >= 2}
    encodings = {t["encoding"] for n, t in read_manifest(path)["tensors"].items() if n in weights}
    assert ("dense" not in encodings) if unstructured else encodings == {"dense"}  # "auto" picks them


def test_vgg_loads_into_a_model_instance_and_tied_sizes_follow(tmp_path) -> None:
    pruned, x = _pruned("vgg11_bn")
    model = vgg11_bn()
    assert load_compressed(model, save_compressed(pruned, tmp_path / "v.st")) is model
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), pruned(x), rtol=0, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in pruned.parameters())


def test_shapes_no_pruning_gives_still_raise_before_the_model_changes(tmp_path) -> None:
    pruned, _ = _pruned("resnet18")
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ArchitectureMismatchError, match=r"missing \['0\.bias'"):
        load_compressed(other, save_compressed(pruned, tmp_path / "a.st"))
    wider = nn.Sequential(nn.Linear(8, 32), nn.Linear(32, 4), nn.Embedding(10, 6))
    smaller = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4), nn.Embedding(7, 6))
    with pytest.raises(ArchitectureMismatchError, match=r"2\.weight: file \(7, 6\) vs model \(10, 6\)"):
        load_compressed(wider, save_compressed(smaller, tmp_path / "b.st"))  # vocabulary is no channel
    grown = nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 4), nn.Embedding(10, 6))
    with pytest.raises(ArchitectureMismatchError, match=r"0\.weight: file \(64, 8\) vs model \(32, 8\)"):
        load_compressed(wider, save_compressed(grown, tmp_path / "c.st"))  # pruning only shrinks
    assert wider[0].weight.shape == (32, 8) and wider[0].out_features == 32


def test_structurally_pruned_onnx_is_a_smaller_dense_graph(tmp_path) -> None:
    onnx = pytest.importorskip("onnx", reason="optional extra: pip install prunekit[onnx]")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from prunekit.export import export_onnx

    pruned, x = _pruned("vgg11_bn")
    masks = Masks({n: torch.rand(p.shape) > 0.5 for n, p in pruned.named_parameters() if p.dim() == 4})
    result = export_onnx(pruned, x, tmp_path / "p.onnx", masks=masks, atol=1e-4)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    graph = onnx.load(str(result.path)).graph
    convs = sorted((tuple(i.dims) for i in graph.initializer if len(i.dims) == 4), key=lambda s: -s[0] * s[1])
    expected = sorted(
        (tuple(m.weight.shape) for m in pruned.modules() if isinstance(m, nn.Conv2d)),
        key=lambda s: -s[0] * s[1],
    )
    widest = max(m.out_channels for m in vgg11_bn().modules() if isinstance(m, nn.Conv2d))
    assert convs == expected and max(c[0] for c in convs) < widest
    zeros = sum(
        int((onnx.numpy_helper.to_array(i) == 0).sum()) for i in graph.initializer if len(i.dims) == 4
    )
    assert zeros >= sum(int((~m).sum()) for m in masks.values())  # masks baked in


@pytest.mark.parametrize("name", ["hf_bert", "hf_llama"])
def test_structurally_pruned_hf_model_round_trips_through_save_pretrained(tmp_path, name) -> None:
    transformers = pytest.importorskip("transformers")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from prunekit.export.huggingface import save_pretrained
    from prunekit.graph.hf import load_pretrained

    torch.manual_seed(0)
    model, inputs = HF_ZOO[name]().eval(), hf_inputs(name)
    pruned = apply_plan(model, build_plan(model, DependencyGraph.build(model, inputs), 0.5))
    save_pretrained(pruned, tmp_path)
    cls = type(model)
    if name == "hf_bert":  # built without its pooler: without the argument, load_pretrained says so
        with pytest.raises(ValueError, match=r"lacks tensors \['pooler\.dense\.weight'.*add_pooling_layer"):
            load_pretrained(cls, tmp_path)
    loaded = (
        load_pretrained(cls, tmp_path, add_pooling_layer=False)
        if name == "hf_bert"
        else cls.from_pretrained(tmp_path).eval()
    )
    with torch.no_grad():
        expected = pruned(**inputs).last_hidden_state
        torch.testing.assert_close(loaded(**inputs).last_hidden_state, expected, rtol=0, atol=1e-6)
    config = json.loads((tmp_path / "config.json").read_text())
    heads, intermediate = (2, 24) if name == "hf_bert" else (4, 24)
    assert (config["num_attention_heads"], config["intermediate_size"]) == (heads, intermediate)
    assert config["prunekit"]["version"] == 1 and isinstance(loaded, transformers.PreTrainedModel)
    assert (model.config.num_attention_heads, model.config.intermediate_size) == (
        HF_ZOO[name]().config.num_attention_heads,
        48,
    )  # the original is untouched
    compressed = load_compressed(HF_ZOO[name](), save_compressed(pruned, tmp_path / "c.st")).eval()
    with torch.no_grad():  # the file keeps the head counts (before, it was refused: they were not saved)
        torch.testing.assert_close(compressed(**inputs).last_hidden_state, expected, rtol=0, atol=1e-6)
