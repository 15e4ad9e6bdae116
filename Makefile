# whisper-node: set-up, build, run and test. `make help` lists the targets.
#
# One cargo profile only: release, so build, test and lint share one build.
# The engine is not compiled: worker-proc links the prebuilt libctranslate2
# of the PyPI ctranslate2 wheel (`make engine`). ENGINE=source builds it
# from C++ source instead (30-60 min; for platforms without the wheel).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# Prerequisites run in the order written (system packages before the build).
.NOTPARALLEL:

CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target
MODEL_DIR ?= models/tiny.en
LISTEN ?= 127.0.0.1:8080
# Extra flags for the service, e.g. RUN_ARGS="--compute-type float32".
RUN_ARGS ?=
# Extra arguments for cargo test, e.g. TEST_ARGS="-- --test-threads=1".
TEST_ARGS ?=
# Cargo features for build, test and lint alike (the same features everywhere,
# or cargo rebuilds). whisper-node/actix (the actix actor guest) is always on,
# so its example and test are built and run.
CARGO_FEATURES ?=
override CARGO_FEATURES := whisper-node/actix $(CARGO_FEATURES)
# prebuilt (default): the wheel's library in ENGINE_DIR. source: CTranslate2
# compiled by ct2rs with oneDNN (add worker-proc/cuda to CARGO_FEATURES for
# a CUDA build from source; needs the CUDA toolkit).
ENGINE ?= prebuilt
ENGINE_DIR ?= engine/lib
export WHISPER_NODE_ENGINE_DIR := $(abspath $(ENGINE_DIR))
ifeq ($(ENGINE),source)
ENGINE_FEATURES := --no-default-features
CARGO_FEATURES := worker-proc/dnnl $(CARGO_FEATURES)
export CTRANSLATE2_SOURCE_DIR ?= $(CURDIR)/engine/ctranslate2-src
export WHISPER_NODE_NEED_CMAKE := 1
else ifneq ($(ENGINE),prebuilt)
$(error ENGINE must be prebuilt or source, not "$(ENGINE)")
endif
FEATURE_FLAGS := $(ENGINE_FEATURES) $(if $(strip $(CARGO_FEATURES)),--features "$(strip $(CARGO_FEATURES))")
PREFIX ?= /usr/local

RELEASE_DIR := $(abspath $(CARGO_TARGET_DIR))/release
MODEL_PATH := $(abspath $(MODEL_DIR))

# rustup puts cargo in ~/.cargo/bin, which a non-login shell may lack.
CARGO_BIN_DIR := $(or $(CARGO_HOME),$(HOME)/.cargo)/bin
ifeq ($(shell command -v $(CARGO) 2>/dev/null),)
ifneq ($(wildcard $(CARGO_BIN_DIR)/cargo),)
export PATH := $(CARGO_BIN_DIR):$(PATH)
endif
endif

.PHONY: help system engine cuda-libs model setup build run test lint fmt fixtures clean-model install k8s-validate

help: ## List the targets and variables
	@echo "usage: make <target> [VAR=value ...]"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "variables:"
	@echo "  CARGO_TARGET_DIR  $(CARGO_TARGET_DIR)"
	@echo "  MODEL_DIR         $(MODEL_DIR)"
	@echo "  LISTEN            $(LISTEN)"
	@echo "  RUN_ARGS          extra flags for whisper-node (see: whisper-node --help)"
	@echo "  TEST_ARGS         extra arguments for cargo test"
	@echo "  CARGO_FEATURES    extra cargo features"
	@echo "  ENGINE            prebuilt (default: the PyPI wheel's libctranslate2) or source"
	@echo "  ENGINE_DIR        $(ENGINE_DIR) (where make engine puts the prebuilt library)"
	@echo "  PREFIX            $(PREFIX) (make install)"

system: ## Install missing system packages (C/C++ compiler, python3+pip, espeak-ng, sox, ffmpeg, haproxy, postgresql, chromium) and test tools (rotel, prometheus_client)
	@bash scripts/setup-system.sh

engine: system ## Fetch the engine: the prebuilt libctranslate2 (PyPI ctranslate2 4.8.4) into ENGINE_DIR; ENGINE=source: its C++ source
ifeq ($(ENGINE),source)
	@bash scripts/fetch-ctranslate2-source.sh "$(CTRANSLATE2_SOURCE_DIR)" >/dev/null
else
	@bash scripts/fetch-engine.sh "$(WHISPER_NODE_ENGINE_DIR)"
endif

cuda-libs: engine ## Put cuBLAS for CUDA 12 (PyPI nvidia-cublas-cu12) beside the engine, for --device cuda
	@bash scripts/fetch-cuda-libs.sh "$(WHISPER_NODE_ENGINE_DIR)"

model: ## Download the default model (Whisper tiny.en, CTranslate2) into MODEL_DIR
	@bash scripts/fetch-model.sh "$(MODEL_PATH)"

setup: system engine model ## All set-up: system packages, engine and model (fast when already done)

build: system engine ## Build whisper-node and worker-proc (release)
	$(CARGO) build --release --workspace --bins $(FEATURE_FLAGS)

run: setup build ## Set up, build, then serve on LISTEN with the model in MODEL_DIR
	exec "$(RELEASE_DIR)/whisper-node" --model-dir "$(MODEL_PATH)" --listen "$(LISTEN)" $(RUN_ARGS)

test: setup build ## Set up, build, then run every test (release) against the real model
	WHISPER_NODE_TEST_MODEL_DIR="$(MODEL_PATH)" \
	WHISPER_NODE_WORKER_PATH="$(RELEASE_DIR)/worker-proc" \
	WHISPER_NODE_TEST_ENGINE="$(ENGINE)" \
	$(CARGO) test --release --workspace --no-fail-fast $(FEATURE_FLAGS) $(TEST_ARGS)

lint: system engine ## cargo fmt --check, then clippy (release profile, warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets $(FEATURE_FLAGS) -- -D warnings

k8s-validate: ## Validate deploy/k8s against the Kubernetes schemas (kubernetes-validate from PyPI, pinned)
	@bash deploy/k8s/validate.sh

fmt: ## Format the code
	$(CARGO) fmt --all

fixtures: system ## Regenerate tests/fixtures/speech (espeak-ng + sox); verify: scripts/make-fixtures.sh --check
	@bash scripts/make-fixtures.sh

install: build ## Install the binaries into PREFIX/bin and the engine into PREFIX/lib/whisper-node
	install -d "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(PREFIX)/lib/whisper-node"
	install -m 755 "$(RELEASE_DIR)/whisper-node" "$(RELEASE_DIR)/worker-proc" "$(DESTDIR)$(PREFIX)/bin/"
ifeq ($(ENGINE),prebuilt)
	@# The libraries themselves (-L: cuBLAS is linked in from engine/cuda);
	@# the worker's RUNPATH holds $$ORIGIN/../lib/whisper-node.
	cd "$(WHISPER_NODE_ENGINE_DIR)" && for f in *.so.* VERSION; do \
		cp -L --preserve=mode "$$f" "$(DESTDIR)$(PREFIX)/lib/whisper-node/$$f"; done
endif
	@echo "installed: $(PREFIX)/bin/whisper-node (run it with --model-dir DIR)"

clean-model: ## Delete MODEL_DIR (the downloaded wheel stays cached)
	@if [ -e "$(MODEL_PATH)" ] && [ ! -f "$(MODEL_PATH)/model.bin" ]; then \
		echo "clean-model: $(MODEL_PATH) holds no model.bin; not deleting it" >&2; exit 1; fi
	rm -rf -- "$(MODEL_PATH)"

# --- Observability (see otel/README.md) -------------------------------------
.PHONY: jaeger jaeger-down

jaeger: ## Start Jaeger (Docker) for traces; then: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make run
	docker compose -f otel/docker-compose.yml up -d
	@echo "Jaeger UI: http://localhost:16686 (service whisper-node)"

jaeger-down: ## Stop Jaeger
	docker compose -f otel/docker-compose.yml down

# ---------------------------------------------------------------------------
# Benchmarks (bench/README.md). Not part of CI.
#   make bench                      full table -> stdout and BENCHMARKS.md (< 20 min on 2 cores)
#   make bench BENCH_ARGS=--quick   1 clip, 1 setting, 2 runs (development)
#   make soak                       wrk at 10x capacity for 10 min, worker SIGKILLed every 30-60 s
#   SOAK_SECS=60 make soak          short check
#   make overload                   capacity vs overload vs faster-whisper-server (~8 min)
#   make overload-batching          issue 13: 1 and 8 clients, the default (2 workers, --max-batch 4) vs serial, batching alone, workers alone (~13 min)
BENCH_ARGS ?=
OVERLOAD_ARGS ?=
.PHONY: bench soak overload overload-batching bench-realtime

bench: setup build ## faster-whisper vs worker-proc vs service: times, ratios, RTF, WER, RSS (BENCH_ARGS=--quick)
	CARGO_TARGET_DIR="$(abspath $(CARGO_TARGET_DIR))" bash bench/run-bench.sh --model-dir "$(MODEL_PATH)" $(BENCH_ARGS)

soak: setup build ## Soak: wrk at 10x capacity for SOAK_SECS (600) while the worker is SIGKILLed every 30-60 s
	CARGO_TARGET_DIR="$(abspath $(CARGO_TARGET_DIR))" MODEL_DIR="$(MODEL_PATH)" bash bench/soak.sh

overload: setup build ## 8 clients vs 40 retrying at 50 ms, /health, vs faster-whisper-server 0.0.3 (OVERLOAD_ARGS, NODE_ARGS)
	$(CARGO) build --release $(FEATURE_FLAGS) --example overload_client
	CARGO_TARGET_DIR="$(abspath $(CARGO_TARGET_DIR))" bash bench/overload.sh --model-dir "$(MODEL_DIR)" $(OVERLOAD_ARGS)

overload-batching: setup build ## Issue 13: single and cap8 (8 clients, 11 s clip): the default node (2 workers, --max-batch 4) vs one serial worker (queue 3 and 8), batching alone, 2 workers alone; interleaved
	$(CARGO) build --release $(FEATURE_FLAGS) --example overload_client
	CARGO_TARGET_DIR="$(abspath $(CARGO_TARGET_DIR))" bash bench/overload.sh --model-dir "$(MODEL_DIR)" --no-peer --phases single,cap8 --variants '--workers 1 --max-batch 1;--workers 1 --max-batch 1 --queue-capacity 8;--workers 1 --max-batch 8;--workers 2 --max-batch 1' --phase 30 --warm 5 --rounds 2 --tag batching $(OVERLOAD_ARGS)

bench-realtime: setup build ## /v1/realtime: end of speech -> completed vs decode time (p50/p95), 1 and 10 sessions, parent RSS (bench/realtime.sh)
	CARGO_TARGET_DIR="$(abspath $(CARGO_TARGET_DIR))" bash bench/realtime.sh "" "$(MODEL_PATH)"
