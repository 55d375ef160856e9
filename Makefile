# Rust Performance Observatory — `make help` lists the targets.

CARGO    ?= cargo
RELEASE  := target/release
OBS      := $(RELEASE)/observatory
REPORTS  := reports
# Each step of `make test` and `make lint` prints its wall time (and .ci/run tabulates them).
TIMED    ?= $(CURDIR)/.ci/timed

# `make build LINT=build` and `make test LINT=build` (CI) lint while they compile: the build and
# the test build compile each of the workspace's own crates with rustc, then lint it with clippy
# and -D warnings (.ci/rustc-lint, cargo's RUSTC_WORKSPACE_WRAPPER), instead of a `cargo clippy`
# that checks every dependency a second time. The build adds every library, the test build every
# target (the benches), so that each target `cargo clippy --all-targets` lints is linted.
ifeq ($(LINT),build)
export RUSTC_WORKSPACE_WRAPPER := $(CURDIR)/.ci/rustc-lint
LINTING       := OBSERVATORY_LINT=1
BUILD_TARGETS := --lib
TEST_TARGETS  := --all-targets
endif

.DEFAULT_GOAL := help
.PHONY: help build demo local up down images e2e test test-side-by-side test-run test-validate test-api-check validate api-check lab-check lab-verify crd lint fmt-check fmt bench bench-e2e bench-leaderboard chaos fuzz fuzz-smoke fuzz-build fuzz-tool clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

build: ## Build every binary (release, with frame pointers for cheap profiles)
	$(TIMED) build env $(LINTING) $(CARGO) build --release --workspace --bins $(BUILD_TARGETS)

demo: build ## Run the local observatory for 30 s with the live display, then print the summary and the report path
	$(OBS) up --local --duration 30 --rate 250000

local: build ## Run the local observatory until Ctrl-C
	$(OBS) up --local

test: build ## Run every test (unit, real processes on loopback, real Prometheus, manifests, the leaderboard's API against its OpenAPI document, the labs' authoring check, a fuzz smoke run), then the 10 slowest tests (LINT=build: clippy too, as CI runs it)
	@rm -f target/nextest/default/junit.xml
	$(TIMED) test-build env $(LINTING) $(CARGO) test --release --workspace --no-run $(TEST_TARGETS)
	@echo "--- side by side: the tests, validate, api-check and the fuzz build (each prints its output when it ends)"
	$(MAKE) --no-print-directory -j4 --output-sync=target test-side-by-side
	$(TIMED) lab-check $(MAKE) --no-print-directory lab-check
	$(TIMED) fuzz-run fuzz/smoke.sh 10 $(FUZZ_TARGETS)
	@.ci/slowest

# Four steps side by side: the tests (real processes on loopback: alone they keep the two cores
# ~45% busy, waiting on timers, sockets and children), validate (Python, Node), api-check (a
# server under schemathesis) and the fuzz targets' build (its own fuzz/target); then the lab
# check alone, which measures wall-clock time and wants a quiet machine.
# Each step is timed on its own ("&": it ran beside the others).
test-side-by-side: test-run test-validate test-api-check fuzz-build
test-side-by-side: FUZZ_BUILD_PHASE = fuzz-build &
test-run:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(TIMED) "tests &" $(CARGO) nextest run --release --workspace; \
	else \
		echo "--- cargo-nextest is not installed: cargo test runs the same tests, one binary at a time, without the slow-test report (cargo install cargo-nextest --locked)"; \
		$(TIMED) "tests &" $(CARGO) test --release --workspace; \
	fi
test-validate:
	$(TIMED) "validate &" $(MAKE) --no-print-directory validate
test-api-check:
	$(TIMED) "api-check &" $(MAKE) --no-print-directory api-check

FUZZ_TARGETS := frames hello json compact_event window_result segment
FUZZ_SECONDS ?= 600
FUZZ_BUILD_PHASE ?= fuzz-build
# cargo fuzz wants nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
FUZZ_RUN = cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O

fuzz-tool:
	@command -v cargo-fuzz >/dev/null || { echo "--- installing cargo-fuzz"; $(CARGO) install cargo-fuzz --locked; }

fuzz-smoke: fuzz-build ## Each fuzz target for 10 s from its committed corpus (new finds go to a scratch folder)
	$(TIMED) fuzz-run fuzz/smoke.sh 10 $(FUZZ_TARGETS)

fuzz-build: fuzz-tool
	@echo "--- building the fuzz targets (libFuzzer, AddressSanitizer; a few minutes cold)"
	cd fuzz && RUSTC_BOOTSTRAP=1 $(TIMED) "$(FUZZ_BUILD_PHASE)" cargo fuzz build -O

fuzz: fuzz-tool ## Each fuzz target for FUZZ_SECONDS (600) s, growing its corpus in fuzz/corpus (commit what it adds)
	@for t in $(FUZZ_TARGETS); do \
		echo "--- fuzzing $$t for $(FUZZ_SECONDS) s"; \
		( $(FUZZ_RUN) $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 ) || exit 1; \
	done

lab-check: build ## Authoring check of the labs with deterministic or large effects: baseline fails, reference passes
	OBSERVATORY_HOME=$(REPORTS)/lab-check $(OBS) lab dev-check

lab-verify: build ## Every lab's reference 5 times on this machine, and its baseline once (reports/lab-verify.json)
	mkdir -p $(REPORTS)
	OBSERVATORY_HOME=$(REPORTS)/lab-verify $(OBS) lab dev-check --all --repeat 5 --json $(REPORTS)/lab-verify.json

validate: build ## Validate offline: manifests (Kubernetes schemas, CRD, promtool) and dashboards (@grafana/schema)
	@python3 -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null || \
		{ echo "make validate: needs Python packages: python3 -m pip install kubernetes-validate jsonschema"; exit 1; }
	python3 deploy/validate.py --self-test
	python3 deploy/cluster_test.py
	@command -v npm >/dev/null || { echo "make validate: needs Node.js and npm for the dashboard schema"; exit 1; }
	npm ci --prefix dashboards/schema --silent --no-audit --no-fund
	node dashboards/schema/validate.mjs --self-test

api-check: build ## schemathesis (PyPI) against the leaderboard's served OpenAPI document: no 5xx, no answer outside the schema
	leaderboard-server/api-check/run.sh $(OBS)

crd: ## Regenerate deploy/base/crd.yaml from the operator's types
	$(CARGO) run --release -q -p operator --bin crdgen -- --out deploy/base/crd.yaml

images: ## Build the pipeline and operator images (docker, podman or nerdctl)
	deploy/cluster.sh images

up: ## On a k3s host: build and import the images, deploy the operator and a sample Pipeline, wait until Ready
	deploy/cluster.sh up

down: ## Remove everything `make up` created
	deploy/cluster.sh down

e2e: ## The live-cluster suite (when KUBECONFIG points at a cluster; skipped otherwise)
	deploy/cluster.sh e2e

lint: fmt-check ## rustfmt check and clippy with warnings as errors
	$(TIMED) clippy $(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt-check:
	$(TIMED) fmt $(CARGO) fmt --all -- --check

fmt: ## Format the code
	$(CARGO) fmt --all

bench: ## The criterion benchmarks of the hot paths (time and throughput; flamegraphs with PROFILE=1)
	$(CARGO) bench -p observatory-bench --bench hot_paths -- $(if $(PROFILE),--profile-time 5,)

bench-e2e: build ## End to end, interleaved: the A/A noise floor, then telemetry on vs off (reports/bench-e2e/)
	$(OBS) bench aa --events 2000000 --pairs 8 --warmup 1 --report-dir $(REPORTS)/bench-e2e/aa
	$(OBS) bench ab --events 2000000 --pairs 8 --warmup 1 \
		--a-label telemetry-on --a all.telemetry=true \
		--b-label telemetry-off --b all.telemetry=false \
		--report-dir $(REPORTS)/bench-e2e/telemetry

bench-leaderboard: build ## Load on the leaderboard with wrk (500 students x 14 labs): requests/s and latency (reports/leaderboard-bench/)
	leaderboard-server/bench/run.sh $(OBS)

chaos: build ## Faults to real stage processes (kill -9, SIGSTOP 20 s, a 1000x slower sink for 60 s, a stage that cannot start), then attacks on a real run: reports/chaos/table.md, robustness.md
	$(OBS) chaos --report-dir $(REPORTS)/chaos
	$(OBS) robustness --report-dir $(REPORTS)/chaos

clean: ## Remove build output and reports
	$(CARGO) clean
	rm -rf $(REPORTS)
