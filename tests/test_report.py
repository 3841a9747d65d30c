import json
import math

import pytest
import torch
from torch import nn

from prunekit.masks import Masks
from prunekit.report import LayerRow, PruningReport, build_report


class Tiny(nn.Module):
    """Linear(4, 3) on a vector and Conv2d(1, 2, 3) on a 5×5 image: 35 parameters, 30 of them weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.LayerNorm(3)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.norm(self.fc(x)), self.conv(img)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 4), torch.randn(2, 1, 5, 5)  # MACs: fc 2·4·3 = 24, conv 2·2·9·9 = 324


@pytest.fixture
def pruned() -> Tiny:
    """Half of fc.weight zeroed (6 of 12); the rest dense."""
    model = Tiny()
    with torch.no_grad():
        model.fc.weight.view(-1)[:6] = 0
    return model


def test_rows_default_to_linear_and_conv_weights(pruned: Tiny) -> None:
    report = build_report(pruned)
    assert report.rows == (
        LayerRow("fc.weight", (3, 4), 12, 6, 0.5, None, None, None),
        LayerRow("conv.weight", (2, 1, 3, 3), 18, 18, 0.0, None, None, None),
    )
    assert (report.prunable_params, report.prunable_nonzeros) == (30, 24)
    assert report.achieved_sparsity == pytest.approx(6 / 30)
    # whole model: fc 15 + conv 20 + LayerNorm 6 parameters; LayerNorm's bias starts at zero (3 zeros)
    assert (report.total_params, report.total_nonzeros) == (41, 41 - 6 - 3)
    assert report.model_sparsity == pytest.approx(9 / 41)
    assert (report.dense_bytes, report.nonzero_bytes) == (41 * 4, 32 * 4)
    assert report.dense_macs is None and report.theoretical_speedup is None


def test_macs_and_theoretical_speedup(pruned: Tiny) -> None:
    report = build_report(pruned, example_inputs=inputs())
    fc, conv = report.rows
    assert (fc.macs, fc.sparse_macs) == (24, 12)
    assert (conv.macs, conv.sparse_macs) == (324, 324)
    assert (report.dense_macs, report.sparse_macs) == (348, 336)
    assert report.theoretical_speedup == pytest.approx(348 / 336)


def test_requested_float_and_per_layer(pruned: Tiny) -> None:
    report = build_report(pruned, requested=0.5)
    assert [r.requested_sparsity for r in report.rows] == [None, None]  # a global target: no per-row targets
    assert report.requested_sparsity == 0.5
    per_layer = build_report(pruned, requested_per_layer={"fc.weight": 0.5})
    assert [r.requested_sparsity for r in per_layer.rows] == [0.5, None]
    assert per_layer.requested_sparsity == pytest.approx(0.5 * 12 / 30)  # the conv counts as requested 0


def test_rows_follow_masks_and_masks_must_be_applied() -> None:
    model = Tiny()
    mask = torch.ones(3, dtype=torch.bool)
    mask[0] = False
    masks = Masks({"fc.bias": mask})
    with pytest.raises(ValueError, match=r"'fc.bias' has 1 nonzero entries where its mask prunes.*apply"):
        build_report(model, masks=masks)
    report = build_report(masks.apply(model), masks=masks, example_inputs=inputs())
    assert [(r.name, r.params, r.nonzeros) for r in report.rows] == [("fc.bias", 3, 2)]
    assert report.rows[0].macs is None  # a bias does not own its layer's MACs
    assert report.achieved_sparsity == pytest.approx(1 / 3)


def test_empty_layers_are_listed_and_json_stays_strict() -> None:
    model = Tiny()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.conv.weight.zero_()
    report = build_report(model, example_inputs=inputs(), requested=0.9)
    assert report.empty_layers == ("fc.weight", "conv.weight")
    assert report.sparse_macs == 0 and report.theoretical_speedup is None
    assert json.loads(report.to_json())["theoretical_speedup"] is None
    assert "empty (collapsed) layers: fc.weight, conv.weight" in report.to_text()


def test_json_round_trip_keeps_raw_numbers(pruned: Tiny) -> None:
    report = build_report(
        pruned, example_inputs=inputs(), requested_per_layer={"fc.weight": 0.5}, method="magnitude"
    )
    data = json.loads(report.to_json())
    assert data == report.to_dict()
    assert data["rows"][0] == {
        "name": "fc.weight",
        "shape": [3, 4],
        "params": 12,
        "nonzeros": 6,
        "sparsity": 0.5,
        "requested_sparsity": 0.5,
        "macs": 24,
        "sparse_macs": 12,
    }
    assert data["requested_sparsity"] == pytest.approx(0.2)
    assert data["achieved_sparsity"] == pytest.approx(0.2)
    assert (data["method"], data["scope"], data["empty_layers"]) == ("magnitude", None, [])
    assert set(data) == {f.name for f in PruningReport.__dataclass_fields__.values()}


def test_text_table(pruned: Tiny) -> None:
    text = build_report(
        pruned,
        example_inputs=inputs(),
        requested_per_layer={"fc.weight": 0.5, "conv.weight": 0.5},
        method="magnitude",
        scope="layer",
    ).to_text()
    lines = text.splitlines()
    assert lines[0] == "Pruning report (method: magnitude, scope: layer)"
    assert lines[1].split() == [
        "layer",
        "shape",
        "params",
        "nonzeros",
        "sparsity",
        "requested",
        "MACs",
        "sparse",
        "MACs",
    ]
    assert lines[2].split() == ["fc.weight", "3×4", "12", "6", "50.00", "%", "50.00", "%", "24", "12"]
    assert len(lines[1]) == len(lines[2]) == len(lines[3])  # aligned columns
    assert "sparsity: requested 50.00 % vs achieved 20.00 % (over 30 prunable weights)" in text
    assert "params: 41 total / 32 nonzero (×1.28 compression)" in text
    assert "MACs: 348 dense → 336 sparse (×1.04 theoretical speed-up)" in text
    assert "bytes: 164 B dense → 128 B nonzero (values only, before any index overhead)" in text
    assert "empty" not in text


def test_text_formats_large_numbers_for_humans() -> None:
    model = nn.Linear(1000, 300, bias=False)
    text = build_report(model, example_inputs=torch.randn(50, 1000)).to_text()
    assert "300,000" in text  # params
    assert "15.0 M" in text  # 50 · 1000 · 300 MACs
    assert "1.1 MiB" in text  # 1,200,000 bytes
    assert build_report(model, example_inputs=torch.randn(50, 1000)).dense_macs == 15_000_000


def test_shared_weights_give_one_row() -> None:
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    report = build_report(nn.Sequential(a, b))
    assert [r.name for r in report.rows] == ["0.weight"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"requested": 1.0}, ValueError, r"requested must be in \[0, 1\)"),
        ({"requested": "0.5"}, TypeError, "requested must be a float"),
        ({"requested_per_layer": {"nope.weight": 0.5}}, ValueError, "nope.weight.*the rows are"),
        ({"requested_per_layer": {"fc.weight": -0.1}}, ValueError, r"requested_per_layer\['fc.weight'\]"),
        ({"requested_per_layer": 0.5}, TypeError, "requested_per_layer must be a mapping"),
        ({"masks": {"fc.weight": torch.ones(3, 4, dtype=torch.bool)}}, TypeError, "Masks"),
        ({"method": 3}, TypeError, "method must be a str"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_report(Tiny(), **kwargs)


def test_report_counts_input_output_paths_and_flags_a_disconnected_network() -> None:
    from torch import nn

    from prunekit import Masks

    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # only x0 → h0 kept
        model[1].weight.copy_(torch.tensor([[0.0, 1.0]]))  # only h1 → y kept: no path
    disconnected = Masks({n: p != 0 for n, p in model.named_parameters()})
    report = build_report(model, masks=disconnected, example_inputs=torch.zeros(1, 2))
    assert report.empty_layers == () and report.has_path is False and report.log10_paths is None
    assert "no input→output path of kept weights remains" in report.to_text()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1.0]]))
    connected = Masks({n: p != 0 for n, p in model.named_parameters()})
    report = build_report(model, masks=connected, example_inputs=torch.zeros(1, 2))
    assert report.has_path is True and report.log10_paths == pytest.approx(0.0)  # exactly one path
    assert json.loads(report.to_json())["log10_max_compression"] == pytest.approx(math.log10(6 / 2))
