# Rust Performance Observatory — `make help` lists the targets.

CARGO    ?= cargo
RELEASE  := target/release
OBS      := $(RELEASE)/observatory
REPORTS  := reports

.DEFAULT_GOAL := help
.PHONY: help build demo up down images e2e test validate crd lint fmt bench-e2e clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

build: ## Build every binary (release, with frame pointers for cheap profiles)
	$(CARGO) build --release --workspace --bins

demo: build ## Run the local observatory for 30 s with the live display, then print the summary and the report path
	$(OBS) up --local --duration 30 --rate 250000

local: build ## Run the local observatory until Ctrl-C
	$(OBS) up --local

test: build ## Run every test (unit, real processes on loopback, real Prometheus, manifests)
	$(CARGO) test --release --workspace
	$(MAKE) --no-print-directory validate

validate: build ## Validate offline: manifests (Kubernetes schemas, CRD, promtool) and dashboards (@grafana/schema)
	@python3 -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null || \
		{ echo "make validate: needs Python packages: python3 -m pip install kubernetes-validate jsonschema"; exit 1; }
	python3 deploy/validate.py --self-test
	@command -v npm >/dev/null || { echo "make validate: needs Node.js and npm for the dashboard schema"; exit 1; }
	npm ci --prefix dashboards/schema --silent --no-audit --no-fund
	node dashboards/schema/validate.mjs --self-test

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

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

bench-e2e: build ## End-to-end events/s, telemetry on vs off, interleaved; writes reports/bench-e2e/ab.json
	$(OBS) bench ab --events 3000000 --pairs 5 --warmup 1 --profile-seconds 0 \
		--a-label telemetry-on --a all.telemetry=true \
		--b-label telemetry-off --b all.telemetry=false \
		--report-dir $(REPORTS)/bench-e2e

clean: ## Remove build output and reports
	$(CARGO) clean
	rm -rf $(REPORTS)
