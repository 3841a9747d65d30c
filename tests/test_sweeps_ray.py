"""The Ray backend on a local Ray instance gives the same table as local worker processes."""

import json
import sys

import pytest

from prunekit.sweeps import parse_sweep, run_sweep
from prunekit.sweeps.ray_backend import INSTALL_HINT
from test_sweeps import EXAMPLES, GRID, local_reference, sweep_dict, table_rows, without_wall_time


def test_missing_ray_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    spec = parse_sweep(sweep_dict(tmp_path / "out", backend="ray"), base_dir=EXAMPLES)
    with pytest.raises(ModuleNotFoundError, match=r"pip install prunekit\[ray\]"):
        run_sweep(spec, progress=False)
    assert "prunekit[ray]" in INSTALL_HINT and not (tmp_path / "out").exists()


def test_ray_backend_matches_the_local_backend(tmp_path, tmp_path_factory, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # start (and stop) a local instance
    reference = {row["run"]: row for row in without_wall_time(table_rows(local_reference(tmp_path_factory)))}
    grid = {**GRID, "seed": [0]}  # half of the local grid, one collapsing run included
    spec = parse_sweep(sweep_dict(tmp_path, backend="ray", grid=grid), base_dir=EXAMPLES)
    result = run_sweep(spec, progress=False)
    rows = without_wall_time(table_rows(tmp_path))
    assert len(rows) == 4 and len(result.ran) == 4 and len(result.failed) == 1
    assert rows == [reference[row["run"]] for row in rows]
    assert json.loads((tmp_path / "sweep.json").read_text())["keys"] == list(grid)
