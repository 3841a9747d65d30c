"""Open a written report.html in headless Chromium: title, tables and every figure must render.

The report carries no script, so the check runs on a test-only copy with a small inline probe that,
after load, writes what the browser saw (decoded images, tables, rows, title) into a ``<pre>``; the
DOM is read back with ``--dump-dom``. A screenshot of the real page is kept as a test artifact under
``$PRUNEKIT_ARTIFACTS`` (default ``test-artifacts/``). The browser is ``$PRUNEKIT_CHROMIUM`` or
``chromium`` on the PATH; without it the test fails and says how to install it, unless
``PRUNEKIT_SKIP_BROWSER=1``.
"""

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from prunekit.reporting import ChannelChange, Curve, LayerSparsity, ModelMeasures, RunRecord, write_reports
from prunekit.reporting.html import CSP

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PRUNEKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
)
PROBE = """<script>
addEventListener("load", () => {
  const images = [...document.images];
  const seen = {
    title: document.title,
    h1: document.querySelector("h1").textContent,
    images: images.length,
    decoded: images.filter((img) => img.complete && img.naturalWidth > 0).length,
    widths: images.map((img) => img.naturalWidth),
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("tr").length,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(seen);
  document.body.appendChild(pre);
});
</script>"""


def realistic() -> RunRecord:
    layers = tuple(
        LayerSparsity(f"encoder.layer.{i // 6}.attention.self.proj{i % 6}.weight", 147_456, 14_746 + i, 0.9)
        for i in range(60)
    )
    curve = {
        "magnitude": ((0.5, 91.2), (0.8, 90.6), (0.9, 89.9), (0.95, 86.0)),
        "random": ((0.5, 90.1), (0.8, 84.0), (0.9, 70.2), (0.95, 41.5)),
    }
    return RunRecord(
        title="Magnitude 90 % on <MiniLM> & friends",
        family="unstructured",
        recipe={"model": "minilm", "method": "magnitude", "sparsity": 0.9, "finetune": {"epochs": 2}},
        before=ModelMeasures(
            22_713_216,
            22_713_216,
            macs=2_900_000_000,
            dense_bytes=90_852_864,
            latency_ms=14.2,
            metrics={"accuracy": 91.3},
        ),
        after=ModelMeasures(
            22_713_216,
            2_271_321,
            macs=2_900_000_000,
            sparse_macs=725_000_000,
            dense_bytes=90_852_864,
            stored_bytes=13_900_000,
            latency_ms=9.8,
            metrics={"accuracy": 89.9},
        ),
        layers=layers,
        plan=tuple(ChannelChange(f"encoder.layer.{i}.intermediate", 1536, 768 + 64 * i) for i in range(6)),
        curves=(
            Curve("Accuracy vs sparsity", "sparsity", "accuracy (%)", curve),
            Curve(
                "Layer collapse", "compression", "accuracy (%)", {"synflow": ((10, 91.0), (1e3, 80.0))}, True
            ),
        ),
        notes=("the classifier kept all its weights", "2 epochs of fine-tuning"),
        seed=0,
        wall_s=312.0,
        outputs={"model": "model.safetensors"},
    )


@pytest.fixture(scope="module")
def chromium() -> str:
    if os.environ.get("PRUNEKIT_SKIP_BROWSER") == "1":
        pytest.skip("PRUNEKIT_SKIP_BROWSER=1")
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"headless Chromium is needed at {CHROMIUM} to check report.html: install it with "
            "`make chromium` (apt-get install chromium), or set PRUNEKIT_SKIP_BROWSER=1 to skip this test"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return write_reports(realistic(), tmp_path_factory.mktemp("report"))["html"]


def run_chromium(chromium: str, profile: Path, *args: str) -> str:
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chromium ran over 60 s: {command}\nstderr:\n{exc.stderr}")
    if done.returncode != 0:
        pytest.fail(f"chromium exited with {done.returncode}: {command}\nstderr:\n{done.stderr}")
    return done.stdout


def test_browser_renders_title_tables_and_every_image(chromium, report, tmp_path) -> None:
    page = report.read_text()
    assert CSP in page
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace("</body>", PROBE + "</body>")
    )
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; DOM starts with:\n{dom[:2000]}"
    seen = json.loads(html.unescape(found.group(1)))
    record = realistic()
    assert seen["title"] == seen["h1"] == record.title
    assert seen["images"] == seen["decoded"] == 5  # measures, layers, plan, two curves
    assert seen["widths"] == [900] * 5
    assert seen["tables"] == 3
    assert seen["rows"] == page.count("<tr>") == 1 + 8 + 1 + 60 + 1 + 6


def test_screenshot_of_the_report_is_kept_and_not_blank(chromium, report, tmp_path) -> None:
    folder = Path(os.environ.get("PRUNEKIT_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    run_chromium(
        chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri()
    )
    assert shot.is_file() and shot.stat().st_size > 10_000
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    colours = np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)
    assert len(colours) > 50, "the screenshot is (almost) one colour"
