# Two commands do everything after cloning:  `make run`  and  `make test`.
# Every target creates the environment from requirements.lock first if it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.10
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# Python 3.10 from pyenv when installed, else python3.10 on PATH.
PYENV_PREFIX := $(shell pyenv prefix $(PYTHON_VERSION) 2>/dev/null | head -n1)
BASE_PYTHON ?= $(if $(PYENV_PREFIX),$(PYENV_PREFIX)/bin/python,$(shell command -v python$(PYTHON_VERSION)))
UV_VERSION := 0.13.9

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
# The known-noise warnings our entry points ignore (components/runtime.py NOISE_WARNINGS; a unit test
# keeps the two equal), for processes that are not ours: Beam workers, benchmarks, notebook kernels.
export PYTHONWARNINGS := ignore:You are using a non-supported Python version:FutureWarning,ignore:Support for google-cloud-storage < 3.0.0:FutureWarning

DATA ?= data/shop
ROWS ?= 100000
SPANS ?= 2
SEED ?= 42
RUN_ARGS ?=
COMPILE_ARGS ?=
GOLDEN := tests/golden/kfp_pipeline.yaml
# The model server's own environment: kserve 0.15 needs protobuf >= 4.25, TFX 1.16 < 4.21 (docs/environment.md).
SERVING_VENV ?= .venv-serving
SERVING_PY := $(SERVING_VENV)/bin/python
# The event stream's environment (features/: the consumer, Feast): Feast 0.67 needs numpy >= 2,
# TensorFlow 2.16 numpy < 2 (features/requirements.in).
FEATURES_VENV ?= .venv-features
FEATURES_PY := $(FEATURES_VENV)/bin/python
KFP_LATEST_VENV := .cache/kfp-latest

.PHONY: help env serving-env serving-lock features-env features-lock services-install lock run tune data test test-unit test-e2e test-notebooks docs lab lint format schema clean \
	compile golden check-kfp-latest katib-manifest kserve-manifest score serve serve-ab replay ab-report \
	bench-serving bench-recommend recommend bench-pipeline bench-stream monitor scenario stream container-tools base-image images

help:
	@echo "make run    - set up if needed, generate $(SPANS) spans of $(ROWS) rows, run the pipeline locally"
	@echo "make test   - set up if needed, run the whole test suite"
	@echo "make tune   - make run with the KatibTuner step (local trials); prints tuned vs untuned AUC"
	@echo "make score  - batch-score span SPAN (default: the newest) of $(DATA) with the newest pushed model (extra flags: SCORE_ARGS)"
	@echo "make serve  - serve the newest pushed model on :$(PORT) (V1 + V2 REST, /metrics); after make run"
	@echo "make serve-ab - the same, users split $(AB_PERCENT)% newest / rest previous version (sticky A/B)"
	@echo "make replay SPAN=2 - send span rows to the running server;  make ab-report SPAN=2 - compare the variants"
	@echo "make bench-serving - p50/p99 and requests/s at several concurrencies vs the in-process model call"
	@echo "make bench-pipeline - time and peak memory per stage at 10k/100k/1M rows, Beam modes, the TFX taxi peer (~1 h)"
	@echo "make monitor - drift/quality check of the last hour of served traffic; retrains when it crosses"
	@echo "make stream - $(STREAM_SPANS) days of the shop through RabbitMQ ($(STREAM_CONSUMERS) consumers) into $(STREAM_DATA) and Redis, then the pipeline on them"
	@echo "make recommend - after make stream: Redis, Feast's feature server, the predictor and the recommendation transformer on :$(RECOMMEND_PORT)"
	@echo "make bench-recommend - a whole recommendation (lookup, 100 candidates, ranking) vs the predictor's 100-row request vs the model in process; then the transformer's hop to the predictor, REST vs gRPC"
	@echo "make bench-stream - events/s through the broker into spans and the online store, publish->online lag, 1 and 2 consumers"
	@echo "make scenario - the loop here: train, serve, drift, detect, retrain, push; live AUC before/after"
	@echo "make env    - create $(VENV), $(SERVING_VENV) and $(FEATURES_VENV) from their locks"
	@echo "make services-install - install RabbitMQ and Redis from Debian's packages if missing (root, apt-get)"
	@echo "make lock   - re-resolve requirements.lock from pyproject.toml"
	@echo "make lab    - JupyterLab on the project's kernel;  make docs - the docs site (MkDocs, --strict) in outputs/docs/site"
	@echo "make lint   - ruff check + format check + import layers;  make schema - regenerate the curated schema"
	@echo "make compile - compile the Kubeflow Pipelines v2 package (extra flags: COMPILE_ARGS='--output PATH')"
	@echo "make golden  - regenerate $(GOLDEN)"
	@echo "make katib-manifest - regenerate manifests/katib/experiment.yaml from settings/conf/kubeflow.yaml"
	@echo "make kserve-manifest - regenerate manifests/kserve/ (KServe InferenceServices) from settings/conf/kubeflow.yaml (shop-serve kserve-manifest)"
	@echo "make check-kfp-latest - load $(GOLDEN) with the newest kfp SDK (throwaway $(KFP_LATEST_VENV))"
	@echo "make images - build $(PIPELINE_TAG) and $(SERVING_TAG) with podman (cached layers)"
	@echo "make base-image - the local python:3.10-slim-bookworm stand-in they build on (once)"
	@echo "make container-tools - install podman, runc, debootstrap, catatonit if missing (root, apt-get)"

# --compile-bytecode: the .pyc files are written once here. Without them every process compiles
# TensorFlow/TFX from source (about 35 s per pipeline, test or trial process here, docs/benchmarks.md),
# since uv does not compile on install and PYTHONDONTWRITEBYTECODE=1 stops Python caching them.
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(BASE_PYTHON)" || { echo "Python $(PYTHON_VERSION) not found (pyenv install $(PYTHON_VERSION))"; exit 1; }
	@echo "Creating $(VENV) with $(BASE_PYTHON) from requirements.lock"
	$(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(UV) pip sync --compile-bytecode -p $(PY) requirements.lock
	$(UV) pip install -p $(PY) --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name shop-ranking --display-name "Python (shop-ranking)" \
	  --env TF_USE_LEGACY_KERAS 1
	@touch $@

# The serving environment from serving/requirements.lock (TensorFlow + kserve; no TFX).
$(SERVING_VENV)/.installed: serving/requirements.lock | $(VENV)/.installed
	@echo "Creating $(SERVING_VENV) with $(BASE_PYTHON) from serving/requirements.lock"
	$(UV) venv -q --allow-existing -p $(BASE_PYTHON) $(SERVING_VENV)
	$(UV) pip sync --compile-bytecode -p $(SERVING_PY) serving/requirements.lock
	@touch $@

# The features environment from features/requirements.lock (Feast, pika, redis; numpy 2), and the
# repo without dependencies, so `features`, `contract` and `settings` import there.
$(FEATURES_VENV)/.installed: features/requirements.lock pyproject.toml | $(VENV)/.installed
	@echo "Creating $(FEATURES_VENV) with $(BASE_PYTHON) from features/requirements.lock"
	$(UV) venv -q --allow-existing -p $(BASE_PYTHON) $(FEATURES_VENV)
	$(UV) pip sync --compile-bytecode -p $(FEATURES_PY) features/requirements.lock
	$(UV) pip install -p $(FEATURES_PY) --no-deps -e .
	@touch $@

env: $(VENV)/.installed $(SERVING_VENV)/.installed $(FEATURES_VENV)/.installed

serving-env: $(SERVING_VENV)/.installed

features-env: $(FEATURES_VENV)/.installed

serving-lock: $(VENV)/.installed
	$(UV) pip compile serving/requirements.in --python-version $(PYTHON_VERSION) \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -o serving/requirements.lock

features-lock: $(VENV)/.installed
	$(UV) pip compile features/requirements.in --python-version $(PYTHON_VERSION) \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -o features/requirements.lock

lock: $(VENV)/.installed
	$(UV) pip compile pyproject.toml --extra dev --python-version $(PYTHON_VERSION) \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements.lock

$(DATA)/manifest.json: | $(VENV)/.installed
	$(VENV)/bin/shop-sim --out $(DATA) --rows $(ROWS) --spans $(SPANS) --seed $(SEED)

data: $(DATA)/manifest.json

run: $(VENV)/.installed $(DATA)/manifest.json
	$(VENV)/bin/shop-pipeline run --set data.root=$(DATA) $(RUN_ARGS)

# The same run with the KatibTuner step (local backend; settings/conf/local.yaml's tuning section).
# After `make run`, the Evaluator compares the tuned model with the untuned one on the same rows.
tune: $(VENV)/.installed $(DATA)/manifest.json
	$(VENV)/bin/shop-pipeline run --set data.root=$(DATA) --set tuning.enabled=true $(RUN_ARGS)

# Batch inference (pipelines/batch_scoring.py): `make score SPAN=2` scores data/shop/span-2 with the
# newest pushed model and writes outputs/predictions/<model>/span-2/; SCORE_ARGS='--model-version V'.
SCORE_ARGS ?=
score: $(VENV)/.installed
	$(VENV)/bin/shop-pipeline score --set data.root=$(DATA) $(if $(SPAN),--span $(SPAN)) $(SCORE_ARGS)

# The model server (serving/, in $(SERVING_VENV)) on the newest version under outputs/serving/.
PORT ?= 8080
AB_PERCENT ?= 30
SERVE_ARGS ?=
serve: $(VENV)/.installed $(SERVING_VENV)/.installed
	$(VENV)/bin/shop-serve start --set data.root=$(DATA) --port $(PORT) $(SERVE_ARGS)

serve-ab: $(VENV)/.installed $(SERVING_VENV)/.installed
	$(VENV)/bin/shop-serve start --set data.root=$(DATA) --port $(PORT) \
	  --set serving.ab_candidate_percent=$(AB_PERCENT) $(SERVE_ARGS)

replay: $(VENV)/.installed
	$(VENV)/bin/shop-serve replay --set data.root=$(DATA) --span $(or $(SPAN),$(SPANS)) \
	  --url http://127.0.0.1:$(PORT)

ab-report: $(VENV)/.installed
	$(VENV)/bin/shop-serve ab-report --set data.root=$(DATA) --span $(or $(SPAN),$(SPANS))

# The drift monitor (monitoring/) on the last monitoring.window_minutes of the request log; exits 1
# on an alert. A confirmed crossing retrains (monitoring.retrain); MONITOR_ARGS='--no-retrain'.
MONITOR_ARGS ?=
monitor: $(VENV)/.installed
	$(VENV)/bin/shop-monitor check --set data.root=$(DATA) $(MONITOR_ARGS)

# The whole loop in outputs/scenario/: train on day 1, serve, a normal day, two drifted days;
# the monitor detects the drift, retrains on the newest span, pushes, and the live AUC improves.
# 100 steps of 512 = about 3 epochs of a day's 16k training rows (more overfits the hashed ids);
# no per-slice bar: a day's tablet slice has about 400 eval rows.
SCENARIO_ROWS ?= 20000
SCENARIO_ARGS ?=
# The event stream (docs/event-stream.md): the shop's app publishes STREAM_SPANS days to RabbitMQ,
# STREAM_CONSUMERS consumers seal them into STREAM_DATA/span-N and keep Redis current (the broker
# and Redis run on loopback under outputs/services/stream/ for the target's duration), then the
# pipeline trains on the newest sealed span. The lake is rebuilt each time (seeded: same bytes).
STREAM_DATA ?= data/stream
STREAM_SPANS ?= 2
STREAM_CONSUMERS ?= 2
STREAM_ARGS ?=
stream: $(VENV)/.installed $(FEATURES_VENV)/.installed
	rm -rf $(STREAM_DATA)
	$(FEATURES_PY) -m features.play --lake $(STREAM_DATA) --spans $(STREAM_SPANS) \
	  --consumers $(STREAM_CONSUMERS) --set output_root=outputs/stream -- $(VENV)/bin/shop-sim stream --broker {broker} \
	  --out $(STREAM_DATA) --rows $(ROWS) --spans $(STREAM_SPANS) --seed $(SEED) $(STREAM_ARGS)
	$(VENV)/bin/shop-pipeline run --set data.root=$(STREAM_DATA) --set output_root=outputs/stream $(RUN_ARGS)

# The recommendation endpoint (docs/recommendations.md) on what `make stream` made: Redis filled from
# the lake's feature logs, Feast's feature server, the predictor and the transformer, on loopback
# under outputs/stream/services/recommend/ until Ctrl-C.
RECOMMEND_PORT ?= 8090
RECOMMEND_ARGS ?=
recommend: $(VENV)/.installed $(SERVING_VENV)/.installed $(FEATURES_VENV)/.installed
	$(VENV)/bin/shop-serve recommend --set data.root=$(STREAM_DATA) --set output_root=outputs/stream \
	  --port $(RECOMMEND_PORT) $(RECOMMEND_ARGS)

scenario: $(VENV)/.installed $(SERVING_VENV)/.installed
	$(VENV)/bin/shop-monitor scenario --rows $(SCENARIO_ROWS) \
	  --set training.train_steps=100 --set evaluation.min_slice_auc=null $(SCENARIO_ARGS)

# How the pipeline's cost grows with data (docs/benchmarks.md): per stage at 10k, 100k and 1M rows, the
# 'before' settings up to 100k, Beam in-memory vs multi-processing, TFX's taxi pipeline as a peer.
BENCH_PIPELINE_ARGS ?=
bench-pipeline: $(VENV)/.installed
	$(PY) -m benchmarks.pipeline_scaling --json outputs/benchmarks/pipeline_scaling.json $(BENCH_PIPELINE_ARGS)

BENCH_STREAM_ARGS ?=
bench-stream: $(VENV)/.installed $(FEATURES_VENV)/.installed
	$(PY) -m benchmarks.stream_throughput $(BENCH_STREAM_ARGS)

bench-serving: $(VENV)/.installed $(SERVING_VENV)/.installed
	$(PY) -m benchmarks.serving_latency --requests 2000 --concurrency 1 4 16 64 --overload 64 256 \
	  --json outputs/benchmarks/serving_latency.json

bench-recommend: $(VENV)/.installed $(SERVING_VENV)/.installed $(FEATURES_VENV)/.installed
	$(PY) -m benchmarks.recommend_latency --requests 2000 --concurrency 1 8 --set data.root=$(STREAM_DATA) \
	  --json outputs/benchmarks/recommend_latency.json
	PYTHONPATH=. $(SERVING_PY) -m benchmarks.predictor_transport --set output_root=outputs/stream \
	  --span-dir $(STREAM_DATA)/span-$(STREAM_SPANS) --json outputs/benchmarks/predictor_transport.json

# Two pytest-xdist workers; tests that share a pipeline run stay together (tests/conftest.py).
TEST_WORKERS ?= 2
PYTEST = $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The e2e tier runs the compiled Kubeflow package in the built images (tests/e2e/test_kubeflow_harness.py):
# `images` installs podman when missing and builds both (cold about 11 min, then layer-cached).
test: $(VENV)/.installed $(SERVING_VENV)/.installed $(FEATURES_VENV)/.installed images
	$(PYTEST)

test-unit: $(VENV)/.installed
	$(PYTEST) -m unit

test-e2e: $(VENV)/.installed $(SERVING_VENV)/.installed $(FEATURES_VENV)/.installed images
	$(PYTEST) -m e2e

test-notebooks: $(VENV)/.installed $(SERVING_VENV)/.installed $(FEATURES_VENV)/.installed
	$(PYTEST) -m notebooks

# The docs site (mkdocs.yml, docs/build.py): README, docs/ and the notebooks as the test tier
# executed them (outputs/notebooks/executed/; unexecuted ones say so), built with --strict into
# outputs/docs/site/. Executes nothing. DOCS_ARGS='--require-executed' fails without executed copies.
DOCS_ARGS ?=
docs: $(VENV)/.installed
	$(PY) docs/build.py $(DOCS_ARGS)

# JupyterLab on the project's kernel ("Python (shop-ranking)"), notebooks/ ready.
lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab --notebook-dir=. $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/01_data.ipynb

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports  # the layers (.importlinter)

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

schema: $(VENV)/.installed
	$(PY) -m contract.schema_tool

clean:
	rm -rf --one-file-system outputs $(DATA)  # outputs/podman holds the image storage too

compile: $(VENV)/.installed
	$(VENV)/bin/shop-pipeline compile $(COMPILE_ARGS)

katib-manifest: $(VENV)/.installed
	$(VENV)/bin/shop-pipeline katib-manifest --config kubeflow --output manifests/katib/experiment.yaml

kserve-manifest: $(VENV)/.installed
	$(VENV)/bin/shop-serve kserve-manifest --config kubeflow --output-dir manifests/kserve

golden: $(VENV)/.installed
	$(VENV)/bin/shop-pipeline compile --config kubeflow --output $(GOLDEN)

# The newest kfp (>= 2.14 needs protobuf 6, so not in $(VENV)) must still load the golden spec.
# Always --upgrade: checking against today's release is the point. It needs the package index, so
# it is not in `make test`: the scheduled canary runs it (.ci/canary). Another package:
# make check-kfp-latest KFP_LATEST_PACKAGE=path.yaml
check-kfp-latest: $(VENV)/.installed
	@test -n "$(BASE_PYTHON)" || { echo "Python $(PYTHON_VERSION) not found (pyenv install $(PYTHON_VERSION))"; exit 1; }
	test -x $(KFP_LATEST_VENV)/bin/python || $(UV) venv -p $(BASE_PYTHON) $(KFP_LATEST_VENV)
	$(UV) pip install -p $(KFP_LATEST_VENV)/bin/python --upgrade kfp kfp-kubernetes
	$(KFP_LATEST_VENV)/bin/python tests/kfp_latest_check.py $(or $(KFP_LATEST_PACKAGE),$(GOLDEN))

# Container images with podman (tests/podman.py; docs/environment.md, "Containers"): rootful,
# runc, storage and state under outputs/podman/. No registry: the python:3.10-slim-bookworm base
# is a local stand-in (debootstrap + pyenv's CPython 3.10), made once. tests/podman.py is stdlib
# only, so no venv is needed. Layer caching makes a rebuild redo only what changed.
PIPELINE_TAG ?= localhost/shop-ranking:local
SERVING_TAG ?= localhost/shop-ranking-serving:local
PODMAN_PY := $(or $(BASE_PYTHON),python3)
# catatonit: the init `podman run --init` starts (a Recommends of podman, so named here).
CONTAINER_PACKAGES := podman runc debootstrap catatonit
CATATONIT := /usr/libexec/podman/catatonit

# RabbitMQ and Redis (the event stream's broker and online store; features/services.py starts
# them on loopback under outputs/services/): Debian's packages, installed when missing (root,
# apt-get), else a message naming them. Standard library only, so no venv is needed.
services-install:
	@$(PODMAN_PY) -m features.services install

container-tools:
	@missing=""; for tool in podman runc debootstrap; do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	test -x $(CATATONIT) || missing="$$missing catatonit"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing$$missing: apt-get install -y $(CONTAINER_PACKAGES)"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CONTAINER_PACKAGES); \
	  else \
	    echo "Missing:$$missing. Install as root: apt-get install -y $(CONTAINER_PACKAGES)" \
	      "(podman runs rootful here)"; exit 1; \
	  fi; \
	fi
	@$(PODMAN_PY) -m tests.podman check

base-image: container-tools
	$(PODMAN_PY) -m tests.podman base-image

images: base-image
	$(PODMAN_PY) -m tests.podman images --pipeline-tag $(PIPELINE_TAG) --serving-tag $(SERVING_TAG)
