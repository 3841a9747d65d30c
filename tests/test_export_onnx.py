import pytest
import torch
from torch import nn

from prunekit import Masks
from prunekit.export import export_onnx, export_program, run_onnx
from prunekit.export import onnx_export as ox

onnx = pytest.importorskip("onnx", reason="optional extra: pip install prunekit[onnx]")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def masked_mlp() -> tuple[nn.Module, Masks]:
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    masks = Masks({n: torch.rand(p.shape) > 0.8 for n, p in model.named_parameters() if p.dim() == 2})
    return model, masks


def test_onnx_matches_pytorch_with_masks_baked_in(tmp_path):
    model, masks = masked_mlp()
    x = torch.randn(3, 20)
    result = export_onnx(model, x, tmp_path / "m.onnx", masks=masks)
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    (out,) = run_onnx(result.path, [x])
    assert torch.allclose(out, masks.apply(model)(x), atol=1e-4)
    assert not torch.allclose(out, model(x), atol=1e-2)  # the unmasked model differs: masks are in
    graph = onnx.load(str(result.path)).graph
    weights = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.dims[-1:] == [20]]
    assert len(weights) == 1 and int((weights[0] != 0).sum()) == int(masks["0.weight"].sum())
    assert torch.equal(model[0].weight != 0, torch.ones(32, 20, dtype=torch.bool))  # user's model kept


def test_verification_failure_and_missing_extra_raise(tmp_path, monkeypatch):
    model, _ = masked_mlp()
    with pytest.raises(ValueError, match="differ from PyTorch's"):
        ox._verify(
            nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)),
            (torch.randn(2, 20),),
            export_onnx(model, torch.randn(2, 20), tmp_path / "m.onnx").path,
            1e-4,
        )

    def missing():
        raise ImportError(f"{ox._MISSING} (missing: onnxruntime)")

    monkeypatch.setattr(ox, "_require_onnx", missing)
    with pytest.raises(ImportError, match=r"pip install prunekit\[onnx\]"):
        export_onnx(model, torch.randn(2, 20), tmp_path / "n.onnx")


def test_export_program_bakes_masks_and_saves(tmp_path):
    model, masks = masked_mlp()
    x = torch.randn(2, 20)
    program = export_program(model, x, masks=masks, path=tmp_path / "m.pt2")
    assert torch.allclose(program.module()(x), masks.apply(model)(x), atol=1e-6)
    loaded = torch.export.load(str(tmp_path / "m.pt2"))
    assert torch.allclose(loaded.module()(x), masks.apply(model)(x), atol=1e-6)
