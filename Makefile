# Two commands set up a fresh machine: `make demo` (the main job) and `make test` (the suite).
SHELL := /bin/bash
UV_VERSION := 0.13.9   # keep equal to uv's pin in pyproject.toml (a test checks)
VENV := .venv
BIN := $(VENV)/bin
# The interpreter that bootstraps uv: the caller's python3, found before the venv goes on PATH.
SYSTEM_PYTHON := $(shell command -v python3)
# The project's own uv, pinned, inside the checkout: never the caller's PATH or ~/.local.
UV := $(CURDIR)/.tools/uv/bin/uv

# Telemetry off everywhere; put the project's tools first on PATH for DVC's stage commands.
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export BENTOML_DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo orchestrate train gate bento pull push rollout serve monitor redis test test-fast lint bench bench-peers clean

$(UV):
	$(SYSTEM_PYTHON) -m pip install --quiet --disable-pip-version-check --target $(CURDIR)/.tools/uv "uv==$(strip $(UV_VERSION))"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

# Servers the tests, `make monitor` and `make redis` run, and the benchmarks' load generator, from
# the Debian archive: downloaded and unpacked into .tools/debian with the libraries they need
# that a minimal Debian lacks (no root, no system service started, nothing outside the checkout).
DEBIAN_PACKAGES := prometheus prometheus-pushgateway \
	redis-server redis-tools libjemalloc2 liblzf1 \
	wrk libluajit2-5.1-2 libluajit2-5.1-common
DEBIAN := $(CURDIR)/.tools/debian
$(DEBIAN)/.unpacked: Makefile
	rm -rf $(DEBIAN) && mkdir -p $(DEBIAN)/archives
	cd $(DEBIAN)/archives && apt-get -q download $(DEBIAN_PACKAGES) >download.log 2>&1 \
	  || { cat download.log; echo "apt-get download failed: is apt's package list current (apt-get update)?"; exit 1; }
	for deb in $(DEBIAN)/archives/*.deb; do dpkg-deb -x "$$deb" $(DEBIAN); done
	@touch $@

install: $(VENV)/.synced $(DEBIAN)/.unpacked  ## Python deps from the lock file, servers from Debian

train: install  ## train with DVC (a missing local source is simulated first)
	python -m pipelines simulate --if-missing
	dvc repro

demo: install  ## the main job: simulate, train, deploy, drift, retrain on its own, serve the new champion (in .demo/)
	python -m pipelines demo

orchestrate: install  ## the Prefect server (UI on 127.0.0.1:4200) and every deployment, until Ctrl-C
	PREFECT_HOME=$(CURDIR)/.prefect prefect server start --host 127.0.0.1 --port 4200 & \
	  trap 'kill %1' EXIT; sleep 10; PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve

gate: install  ## champion/challenger gate on the packaged model (needs the model store: make pull; no server)
	python -m pipelines gate

bento: install  ## the bento a deploy ships, built after the gate: it carries the champion (reports/release.json)
	python -m pipelines bento

pull: install  ## data and outputs (DVC) and the model store from the remotes (DVC_REMOTE, MODEL_REMOTE pick them)
	dvc pull --allow-missing $(if $(DVC_REMOTE),-r $(DVC_REMOTE))
	python -m pipelines registry pull $(if $(MODEL_REMOTE),--remote $(MODEL_REMOTE))

push: install  ## the reverse of pull
	dvc push $(if $(DVC_REMOTE),-r $(DVC_REMOTE))
	python -m pipelines registry push $(if $(MODEL_REMOTE),--remote $(MODEL_REMOTE))

rollout:  ## apply deploy/k8s with the new image (needs kubectl and a cluster: CI only)
	@test -n "$(IMAGE)" && test -n "$(TARGET)" || { echo "usage: make rollout IMAGE=... TARGET=<kube context>"; exit 2; }
	kubectl --context "$(TARGET)" apply -f deploy/k8s/configmap.yaml -f deploy/k8s/service.yaml
	kubectl set image --local -f deploy/k8s/deployment.yaml fraud-service="$(IMAGE)" -o yaml \
	  | kubectl --context "$(TARGET)" apply -f -
	kubectl --context "$(TARGET)" rollout status deployment/fraud-service --timeout=10m

serve: install  ## serve the champion (promote one first: python -m pipelines promote latest)
	python -m pipelines materialize
	python -m pipelines serve

monitor: install  ## Prometheus (127.0.0.1:9090) and a Pushgateway (:9091) with the alert rules, watching `make serve`, until Ctrl-C
	python -m pipelines monitoring --out .monitoring/config  # monitoring/ named for params' project
	$(DEBIAN)/usr/bin/prometheus-pushgateway --web.listen-address=127.0.0.1:9091 & \
	  trap 'kill %1' EXIT; \
	  $(DEBIAN)/usr/bin/prometheus --config.file=.monitoring/config/prometheus.yml --storage.tsdb.path=.monitoring/tsdb \
	    --web.listen-address=127.0.0.1:9090

redis: install  ## Debian's redis-server on 127.0.0.1:6379 (data in .redis/), to try serving.feature_store: redis://127.0.0.1:6379/0
	mkdir -p .redis
	LD_LIBRARY_PATH=$(DEBIAN)/usr/lib/x86_64-linux-gnu $(DEBIAN)/usr/bin/redis-server \
	  --bind 127.0.0.1 --port 6379 --dir $(CURDIR)/.redis --appendonly yes --save ""

test: install  ## the whole test suite
	python -m pytest

test-fast: install
	python -m pytest -m "not integration and not e2e and not slow"

lint: install  ## ruff (lint and format), mypy, and the architecture's import rules
	ruff check pipelines flows tests bench
	ruff format --check pipelines flows tests bench
	mypy
	lint-imports

# The serving bench's peers (MLServer, FastAPI) from their own lock: MLServer needs a FastAPI older
# than Prefect's, so they cannot share the project's environment.
PEERS_VENV := .venv-peers
$(PEERS_VENV)/.synced: bench/peers/pyproject.toml bench/peers/uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(PEERS_VENV) $(UV) sync --frozen --project bench/peers
	@touch $@

bench-peers: $(PEERS_VENV)/.synced  ## MLServer and FastAPI for bench/serving.py's side-by-side rows

bench: install bench-peers
	python bench/model_quality.py
	python bench/pipeline_scaling.py
	python bench/serving.py

clean:
	rm -rf data/raw data/features models metrics plots reports
