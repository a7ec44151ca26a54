# The two commands of the README:  `make run`  and  `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000
STORE ?= model_store

.PHONY: run test venv dev-venv store lint typecheck clean-store bench

# The environment of `make run`: serving runtime + conversion (torch pinned to the local CPU wheel).
.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[convert]"
	$(PIP) install -q --no-deps recbole==1.2.1
	touch $@

# On top of it, for the tests, lint, benchmarks and load tests: locust, the dev tools and the client SDKs
# (~20 s that `make run` does not wait for).
.venv/.installed-dev: .venv/.installed
	$(PIP) install -q -e ".[convert,loadtest,dev]"
	touch $@

venv: .venv/.installed
dev-venv: .venv/.installed-dev

# Builds the default model store (product-embedder, review-sentiment) if a version is missing.
store: venv
	$(PY) -u -m conversion.cli build-defaults --store $(STORE)

run: store
	INFERENCE_MODEL_STORE=$(STORE) INFERENCE_HOST=$(HOST) INFERENCE_PORT=$(PORT) $(PY) -m app

# The suite includes tests against the real default models, so it builds the store first (skipped when it exists).
test: store dev-venv
	bash scripts/install-test-tools.sh
	.venv/bin/ruff check app conversion bench tests loadtest
	.venv/bin/mypy
	.venv/bin/pytest

# Issue 5's benchmarks (~30 min, run on a quiet machine): the benchmark-only builds (fp32, pruned + distilled
# int8), then the serving comparison against the PyTorch baseline and the model-level roofline.
bench: store dev-venv
	$(PY) -m bench.prepare_store
	-$(PY) -m bench.student
	$(PY) -m bench.serving
	$(PY) -m bench.model

lint: dev-venv
	.venv/bin/ruff check app conversion bench tests loadtest
	.venv/bin/mypy

# Issue 11's soak benchmark (30 min, run on a quiet machine): storefront + hostile locust load against the
# service started on $(STORE); prints RSS growth (goal < 5%), responses by status and p99 per minute, and
# writes bench_results/soak/. Options go in SOAK_ARGS, e.g. `make soak SOAK_ARGS="--minutes 5"`.
.PHONY: soak
soak: store dev-venv
	$(PY) -m loadtest.soak --store $(STORE) $(SOAK_ARGS)
