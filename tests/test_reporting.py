import base64
import gc
import io
import json
import re

import matplotlib.image
import pytest
from matplotlib.figure import Figure

from prunekit.reporting import (
    ChannelChange,
    Curve,
    LayerSparsity,
    ModelMeasures,
    RunRecord,
    plot_curve,
    plot_layer_sparsity,
    record_plots,
    write_reports,
)
from prunekit.reporting import _format as fmt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)">')


def unstructured() -> RunRecord:
    return RunRecord(
        title="magnitude 90 %",
        family="unstructured",
        recipe={"method": "magnitude", "sparsity": 0.9},
        before=ModelMeasures(
            1000, 1000, macs=1000, dense_bytes=4 * 2**20, latency_ms=10.0, metrics={"accuracy": 98.0}
        ),
        after=ModelMeasures(
            1000,
            100,
            macs=1000,
            sparse_macs=250,
            stored_bytes=2**20,
            latency_ms=5.0,
            metrics={"accuracy": 97.5},
        ),
        layers=(LayerSparsity("fc1.weight", 800, 80, 0.9), LayerSparsity("fc|2.weight", 200, 20)),
        curves=(
            Curve(
                "accuracy vs sparsity", "sparsity", "accuracy (%)", {"magnitude": ((0.5, 98.0), (0.9, 97.5))}
            ),
            Curve("collapse", "compression", "accuracy (%)", {"a": ((10, 90.0), (100, 50.0))}, log_x=True),
        ),
        notes=("fc1 kept 10 %",),
        seed=3,
        wall_s=61.0,
        outputs={"model": "model.safetensors"},
    )


def structured() -> RunRecord:
    return RunRecord(
        title="channels 75 %",
        family="structured",
        recipe={"method": "l1", "ratio": 0.75},
        before=ModelMeasures(params=4_000_000, nonzeros=4_000_000, macs=8_000_000),
        after=ModelMeasures(params=1_000_000, nonzeros=1_000_000, macs=2_000_000),
        plan=(ChannelChange("conv1", 64, 16), ChannelChange("conv2", 128, 128)),
    )


def bare() -> RunRecord:
    return RunRecord("bare", "oneshot", {}, ModelMeasures(10, 10), ModelMeasures(10, 5))


RECORDS = {"unstructured": (unstructured, 4), "structured": (structured, 2), "bare": (bare, 1)}


def test_human_numbers() -> None:
    assert [fmt.count(950), fmt.count(12_345), fmt.count(1_234_567), fmt.count(3.4e9)] == [
        "950",
        "12.3 k",
        "1.2 M",
        "3.4 G",
    ]
    assert [fmt.nbytes(512), fmt.nbytes(4096), fmt.nbytes(3 * 2**20 + 2**19)] == [
        "512 B",
        "4.0 KiB",
        "3.5 MiB",
    ]
    assert fmt.percent(0.345) == "34.5 %"
    assert fmt.seconds(4.25) == "4.2 s" and fmt.seconds(185) == "3 min 05 s"
    assert fmt.millis(0.4212) == "0.42 ms" and fmt.millis(12.34) == "12.3 ms"
    assert fmt.ratio(1000, 250, "fewer MACs", "more MACs") == "4.0× fewer MACs"
    assert fmt.ratio(2, 3, "faster", "slower") == "1.5× slower"
    assert [fmt.ratio(5, 5, "f", "m"), fmt.ratio(5, 0, "f", "m"), fmt.ratio(0, 5, "f", "m")] == [
        "unchanged",
        "none left",
        "was zero",
    ]


@pytest.mark.parametrize("kind", RECORDS)
def test_json_reads_back_equal(kind, tmp_path) -> None:
    record = RECORDS[kind][0]()
    paths = write_reports(record, tmp_path / "out")
    assert paths["json"] == tmp_path / "out" / "report.json"
    assert RunRecord.from_dict(json.loads(paths["json"].read_text())) == record


def test_markdown_shows_known_numbers_and_links_written_plots(tmp_path) -> None:
    paths = write_reports(unstructured(), tmp_path)
    text = paths["markdown"].read_text()
    assert text.startswith("# magnitude 90 %\n")
    for row in (
        "| nonzero weights | 1.0 k | 100 | 10.0× fewer nonzeros |",
        "| MACs | 1.0 k | 1.0 k | unchanged |",
        "| MACs skipping zeros | 1.0 k | 250 | 4.0× fewer MACs |",
        "| stored size | 4.0 MiB | 1.0 MiB | 4.0× smaller |",
        "| latency | 10.0 ms | 5.00 ms | 2.0× faster |",
        "| accuracy | 98.00 | 97.50 | -0.50 |",
        "| fc1.weight | 800 | 80 | 90.0 % | 90.0 % |",
        "| fc\\|2.weight | 200 | 20 | — | 90.0 % |",
        "- **wall time**: 1 min 01 s",
        "- fc1 kept 10 %",
        '  "sparsity": 0.9',
    ):
        assert row in text, row
    links = re.findall(r"!\[[^\]]+\]\((plots/[^)]+\.png)\)", text)
    assert len(links) == 4
    assert sorted(links) == sorted(f"plots/{p.name}" for p in paths["plots"].iterdir())
    assert "dense size" not in text and "## Structured plan" not in text


def test_markdown_plan_table_and_bare_record(tmp_path) -> None:
    text = write_reports(structured(), tmp_path / "s")["markdown"].read_text()
    assert "| conv1 | 64 | 16 | 75.0 % |" in text and "| conv2 | 128 | 128 | 0.0 % |" in text
    assert "| parameters | 4.0 M | 1.0 M | 4.0× fewer parameters |" in text
    assert "## Sparsity per layer" not in text and "## Curves" not in text
    text = write_reports(bare(), tmp_path / "b")["markdown"].read_text()
    assert "| nonzero weights | 10 | 5 | 2.0× fewer nonzeros |" in text
    assert "MACs" not in text and "## Notes" not in text and "latency" not in text


@pytest.mark.parametrize("kind", RECORDS)
def test_html_embeds_one_decodable_png_per_plot_and_nothing_external(kind, tmp_path) -> None:
    make, expected = RECORDS[kind]
    page = write_reports(make(), tmp_path)["html"].read_text()
    images = DATA_IMG.findall(page)
    assert len(images) == page.count("<img") == expected
    for data, alt in images:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.shape[1] == 900 and pixels.shape[0] >= 200
        assert alt.strip()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert f"<title>{make().title}</title>" in page and page.count("<table>") == 1 + (kind != "bare")


def test_text_is_escaped_everywhere(tmp_path) -> None:
    evil = "<script>alert('x')</script> & co"
    record = RunRecord(
        evil,
        "unstructured",
        {"note": evil},
        ModelMeasures(4, 4),
        ModelMeasures(4, 2),
        layers=(LayerSparsity(evil, 4, 2),),
        notes=(evil,),
    )
    paths = write_reports(record, tmp_path)
    page = paths["html"].read_text()
    assert "<script" not in page
    assert "<h1>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co</h1>" in page
    assert page.count("&lt;script&gt;") >= 4
    text = paths["markdown"].read_text()
    prose, recipe = text.split("## Recipe")
    assert "<script" not in prose and "# &lt;script&gt;alert('x')&lt;/script&gt; &amp; co\n" in prose
    assert '```json\n{\n  "note": "<script>' in recipe  # literal inside a code fence


def test_markdown_fence_outgrows_backticks_in_the_recipe(tmp_path) -> None:
    record = RunRecord("t", "oneshot", {"cmd": "a ```` b"}, ModelMeasures(1, 1), ModelMeasures(1, 1))
    text = write_reports(record, tmp_path)["markdown"].read_text()
    assert '`````json\n{\n  "cmd": "a ```` b"\n}\n`````\n' in text


def test_plots_are_deterministic_and_grow_with_layers() -> None:
    few = [LayerSparsity(f"layer{i}", 100, 10 * i, 0.5) for i in range(5)]
    many = [LayerSparsity(f"encoder.layer.{i}.attention.self.query.weight", 100, i, 0.9) for i in range(60)]
    assert plot_layer_sparsity(few) == plot_layer_sparsity(few)
    small = matplotlib.image.imread(io.BytesIO(plot_layer_sparsity(few)), format="png")
    tall = matplotlib.image.imread(io.BytesIO(plot_layer_sparsity(many)), format="png")
    assert small.shape[1] == tall.shape[1] == 900
    assert (
        tall.shape[0] == pytest.approx(100 * (1.6 + 0.22 * 60), abs=1) and tall.shape[0] > 3 * small.shape[0]
    )


def test_log_x_changes_the_curve_and_measures_list_only_known_fields() -> None:
    points = {"s": ((1.0, 1.0), (10.0, 2.0), (100.0, 3.0))}
    assert plot_curve(Curve("c", "x", "y", points)) != plot_curve(Curve("c", "x", "y", points, log_x=True))
    assert "(parameters, nonzero weights)" in record_plots(bare()).measures.alt
    assert "MACs skipping zeros" in record_plots(unstructured()).measures.alt


def test_no_figures_leak_across_many_calls() -> None:
    import matplotlib.pyplot as plt

    def figures() -> int:
        gc.collect()
        return sum(type(obj) is Figure for obj in gc.get_objects())

    record_plots(structured())
    start = figures()
    for _ in range(15):
        record_plots(structured())
    assert figures() == start
    assert plt.get_fignums() == []


def test_write_reports_rejects_what_is_not_a_record(tmp_path) -> None:
    with pytest.raises(TypeError, match="needs a RunRecord as `record`, got dict"):
        write_reports(unstructured().to_dict(), tmp_path)
