import json

import pytest

from prunekit.reporting import ChannelChange, Curve, LayerSparsity, ModelMeasures, RunRecord


def _record() -> RunRecord:
    return RunRecord(
        title="magnitude 90%",
        family="unstructured",
        recipe={"method": "magnitude", "sparsity": 0.9},
        before=ModelMeasures(params=100, nonzeros=100, macs=1000, metrics={"accuracy": 98.0}),
        after=ModelMeasures(params=100, nonzeros=10, macs=1000, sparse_macs=100, metrics={"accuracy": 97.5}),
        layers=(LayerSparsity("fc1.weight", 80, 8, 0.9), LayerSparsity("fc2.weight", 20, 2)),
        plan=(ChannelChange("conv1", 32, 16),),
        curves=(Curve("acc", "sparsity", "accuracy (%)", {"magnitude": ((0.5, 98.0), (0.9, 97.5))}),),
        seed=0,
    )


def test_record_round_trips_through_json_exactly() -> None:
    record = _record()
    assert RunRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_layer_sparsity_is_achieved_fraction_removed() -> None:
    assert LayerSparsity("w", 80, 8).sparsity == pytest.approx(0.9)
    assert LayerSparsity("empty", 0, 0).sparsity == 0.0


def test_bad_family_and_counts_are_rejected_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="family must be one of .*structured"):
        RunRecord("t", "pruning", {}, ModelMeasures(1, 1), ModelMeasures(1, 1))
    with pytest.raises(ValueError, match="nonzeros <= params"):
        ModelMeasures(params=3, nonzeros=4)
