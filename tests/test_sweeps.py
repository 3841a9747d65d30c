"""Sweeps: grid expansion and validation, parallel runs, the results table, resuming, failures."""

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from prunekit.cli import main
from prunekit.sweeps import SweepError, parse_sweep, plan_runs, run_id, run_sweep
from prunekit.sweeps.worker import DONE, RunTask, finished_record

EXAMPLES = Path(__file__).parent.parent / "examples"
RECIPE = "unstructured_lamp_lenet_mnist.yaml"
# The example recipe shrunk to seconds: 8x8 digits, 200 samples, one epoch, one-shot pruning. Global
# magnitude pruning at 90% empties fc2 (its init scale is smallest): with on_collapse: raise, those
# runs fail at run time, after validation, while LAMP at 90% does not.
TINY = {
    "model.args": {"in_features": 64},
    "data": {"dataset": "digits", "train_samples": 200, "test_samples": 200, "batch_size": 64},
    "pretrain.epochs": 1,
    "method.schedule": "oneshot",
    "method.steps": 1,
    "method.on_collapse": "raise",
    "finetune": None,
    "export": ["masks"],
}
GRID = {"method.scorer": ["magnitude", "lamp"], "method.sparsity": [0.5, 0.9], "seed": [0, 1]}
COLLAPSING = {f"method.scorer=magnitude,method.sparsity=0.9,seed={s}" for s in (0, 1)}
_REFERENCE: dict[str, Path] = {}


def sweep_dict(out: Path, **changes) -> dict:
    return {"recipe": RECIPE, "output": str(out), "workers": 2, "overrides": TINY, "grid": GRID, **changes}


def write_sweep(folder: Path, raw: dict) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(json.dumps({**raw, "recipe": str(EXAMPLES / raw["recipe"])}))  # JSON is YAML
    return path


def local_reference(tmp_path_factory) -> Path:
    """The tiny sweep run once through `prunekit sweep` with 2 local workers (shared with the Ray test)."""
    if "out" not in _REFERENCE:
        out = tmp_path_factory.mktemp("sweep_local")
        assert main(["sweep", str(write_sweep(out, sweep_dict(out / "result"))), "--quiet"]) == 1  # 2 failed
        _REFERENCE["out"] = out / "result"
    return _REFERENCE["out"]


def table_rows(out: Path) -> list[dict]:
    return json.loads((out / "sweep.json").read_text())["runs"]


def without_wall_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return local_reference(tmp_path_factory)


def test_grid_expands_to_the_cartesian_product_with_stable_ids(tmp_path):
    runs = plan_runs(parse_sweep(sweep_dict(tmp_path), base_dir=EXAMPLES))
    assert len(runs) == 8
    assert runs[0].run_id == "method.scorer=magnitude,method.sparsity=0.5,seed=0"
    assert runs[-1].run_id == "method.scorer=lamp,method.sparsity=0.9,seed=1"
    last = runs[-1].recipe
    assert (last.method.scorer, last.method.sparsity, last.seed) == ("lamp", 0.9, 1)
    assert (last.data.dataset, last.method.schedule, last.finetune, last.export) == (
        "digits",
        "oneshot",
        None,
        ("masks",),
    )
    assert len({run.fingerprint for run in runs}) == 8


def test_unsafe_values_get_a_hashed_folder_name():
    name = run_id((("method.pattern", "2:4"), ("model.weights", "/a/b.safetensors")))
    assert name.startswith("method.pattern=2_4,model.weights=_a_b.safetensors-") and "/" not in name
    assert name != run_id((("method.pattern", "2_4"), ("model.weights", "_a_b.safetensors")))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"grid": {**GRID, "method.sparsity": [0.5, 1.5]}},
            "grid['method.sparsity'][1]: method.sparsity: must be in [0, 1)",
        ),
        (
            {"grid": {"method.scorer": ["magnitude", "lamb"]}},
            "grid['method.scorer'][1]: method.scorer: unknown scorer 'lamb'",
        ),
        ({"grid": {"method.scorr": ["lamp"]}}, "grid['method.scorr'][0]: method.scorr: unknown key"),
        (
            {"grid": {"methd.scorer": ["lamp"]}},
            "unknown recipe field 'methd.scorer'; a path starts with one of",
        ),
        ({"grid": {"seed.x": [1]}}, "grid['seed.x'][0]: cannot set 'seed.x': the recipe's 'seed' is 0"),
        ({"grid": {"output": ["a", "b"]}}, "grid['output']: 'output' is set by the sweep"),
        ({"grid": {"seed": []}}, "grid['seed']: must be a non-empty list"),
        ({"grid": {"seed": 3}}, "grid['seed']: must be a list of values"),
        ({"grid": {}}, "grid: is empty"),
        ({"overrides": {**TINY, "seed": 1}}, "overrides['seed']: is also a grid key"),
        (
            {"overrides": {**TINY, "data.batch_size": 0}},
            "overrides['data.batch_size']: data.batch_size: must be a positive int",
        ),
        ({"backend": "slurm"}, "backend: unknown backend 'slurm'; valid backends are: local, ray"),
        ({"workers": 0}, "workers: must be a positive int, got 0"),
        ({"recipe": "missing.yaml"}, "recipe: file"),
        (
            {"worker": 2},
            "worker: unknown key; allowed keys are: recipe, grid, overrides, workers, backend, threads",
        ),
    ],
)
def test_invalid_sweeps_name_the_field_and_value(tmp_path, change, message):
    with pytest.raises(SweepError) as err:
        plan_runs(parse_sweep(sweep_dict(tmp_path, **change), base_dir=EXAMPLES))
    assert message in str(err.value)


def test_the_cli_reports_an_invalid_sweep_without_running(tmp_path, capsys):
    path = write_sweep(tmp_path, sweep_dict(tmp_path / "out", grid={"method.sparsity": [0.5, -0.1]}))
    assert main(["sweep", str(path), "--quiet"]) == 2
    assert "grid['method.sparsity'][1]: method.sparsity: must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_table_has_one_row_per_run_equal_to_its_report(reference):
    rows = table_rows(reference)
    runs = plan_runs(parse_sweep(sweep_dict(reference), base_dir=EXAMPLES))
    assert [row["run"] for row in rows] == [run.run_id for run in runs]
    for row, run in zip(rows, runs, strict=True):
        assert {k: row[k] for k in GRID} == dict(run.values)
        if row["run"] in COLLAPSING:
            assert row["status"] == "failed" and row["error"].startswith("LayerCollapseError: layer collapse")
            assert row["accuracy"] is None and not (reference / "runs" / row["run"] / DONE).exists()
            continue
        report = json.loads((reference / "runs" / row["run"] / "report.json").read_text())
        after = report["after"]
        assert row["status"] == "ok" and row["error"] is None
        assert row["accuracy"] == after["metrics"]["accuracy"]
        assert row["accuracy_before"] == report["before"]["metrics"]["accuracy"]
        assert [row[k] for k in ("params", "nonzeros", "macs", "sparse_macs")] == [
            after[k] for k in ("params", "nonzeros", "macs", "sparse_macs")
        ]
        kept = sum(layer["nonzeros"] for layer in report["layers"])
        total = sum(layer["params"] for layer in report["layers"])
        assert (
            row["sparsity"]
            == pytest.approx(row["method.sparsity"], abs=1e-4)
            == pytest.approx(1 - kept / total)
        )
        assert row["wall_s"] == report["wall_s"] and report["seed"] == row["seed"]


def test_csv_and_markdown_hold_the_same_rows(reference):
    rows = table_rows(reference)
    with (reference / "sweep.csv").open() as f:
        parsed = list(csv.DictReader(f))
    assert [r["run"] for r in parsed] == [r["run"] for r in rows]
    for text, row in zip(parsed, rows, strict=True):
        assert text["status"] == row["status"] and text["error"] == (row["error"] or "")
        if row["status"] == "ok":
            assert float(text["accuracy"]) == row["accuracy"] and int(text["nonzeros"]) == row["nonzeros"]
    markdown = (reference / "sweep.md").read_text()
    assert (
        markdown.count("| method.scorer=") == len(rows) and "![accuracy vs sparsity](sweep.png)" in markdown
    )


def test_aggregate_is_mean_and_std_over_seeds(reference):
    data = json.loads((reference / "sweep.json").read_text())
    groups = {(a["method.scorer"], a["method.sparsity"]): a for a in data["aggregate"]}
    assert len(groups) == 4
    for (scorer, sparsity), agg in groups.items():
        rows = [r for r in data["runs"] if (r["method.scorer"], r["method.sparsity"]) == (scorer, sparsity)]
        accuracies = [r["accuracy"] for r in rows if r["status"] == "ok"]
        assert (agg["runs"], agg["failed"]) == (len(accuracies), 2 - len(accuracies))
        if accuracies:
            assert agg["accuracy_mean"] == pytest.approx(statistics.fmean(accuracies))
            assert agg["accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
        else:
            assert agg["accuracy_mean"] is None
    assert "seed" not in data["aggregate"][0]


def test_html_is_self_contained_with_the_plot(reference):
    html = (reference / "sweep.html").read_text()
    assert (reference / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count('src="data:image/png;base64,') == 1 and "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html and html.count('class="failed"') == 2
    assert 'href="runs/method.scorer=lamp,method.sparsity=0.9,seed=1/report.' in html


def test_resume_reruns_only_unfinished_and_failed_runs(reference, tmp_path):
    out = tmp_path / "result"
    shutil.copytree(reference, out)
    redo = "method.scorer=lamp,method.sparsity=0.5,seed=1"
    (out / "runs" / redo / DONE).unlink()  # as if interrupted before the run finished
    kept = {
        p.parent.name: p.stat().st_mtime_ns
        for p in (out / "runs").glob("*/report.json")
        if p.parent.name != redo
    }
    result = run_sweep(parse_sweep(sweep_dict(out, workers=1), base_dir=EXAMPLES), progress=False)
    assert set(result.ran) == {redo, *COLLAPSING} and len(result.reused) == 5
    assert set(result.failed) == COLLAPSING and not result.ok
    assert {name: (out / "runs" / name / "report.json").stat().st_mtime_ns for name in kept} == kept
    assert (out / "runs" / redo / DONE).exists()
    assert without_wall_time(table_rows(out)) == without_wall_time(table_rows(reference))


def test_a_finished_run_with_another_recipe_is_not_reused(reference):
    folder = reference / "runs" / "method.scorer=lamp,method.sparsity=0.5,seed=0"
    task = RunTask("x", {}, str(folder), fingerprint=json.loads((folder / DONE).read_text())["fingerprint"])
    assert finished_record(task)["after"]["params"] > 0
    assert finished_record(RunTask("x", {}, str(folder), fingerprint="other recipe")) is None
