#!/usr/bin/env bash
# The Kubernetes side of the Makefile: images, up, down, e2e.
# Every step says what it does; a missing prerequisite is one line, not a stack of errors.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${IMAGE_TAG:-dev}"
# Fully qualified: podman names an unqualified `observatory/pipeline:dev` as
# `localhost/observatory/pipeline:dev`, which k3s would import under that name while the pods
# ask for `docker.io/observatory/pipeline:dev` (what containerd makes of the manifests' name).
DEFAULT_PIPELINE_IMAGE="docker.io/observatory/pipeline:dev"
DEFAULT_OPERATOR_IMAGE="docker.io/observatory/operator:dev"
DEFAULT_LEADERBOARD_IMAGE="docker.io/observatory/leaderboard:dev"
PIPELINE_IMAGE="${PIPELINE_IMAGE:-docker.io/observatory/pipeline:$TAG}"
OPERATOR_IMAGE="${OPERATOR_IMAGE:-docker.io/observatory/operator:$TAG}"
LEADERBOARD_IMAGE="${LEADERBOARD_IMAGE:-docker.io/observatory/leaderboard:$TAG}"
NS=observatory

step() { printf '\n==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$CMD" "$*" >&2; exit 1; }

# The first container engine whose daemon answers.
engine() {
  for e in docker podman nerdctl; do
    if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then
      echo "$e"
      return 0
    fi
  done
  return 1
}

need_cluster() {
  command -v kubectl >/dev/null 2>&1 || die "kubectl is not installed (https://kubernetes.io/docs/tasks/tools/)"
  if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
    if [ -z "${KUBECONFIG:-}" ] && [ -r /etc/rancher/k3s/k3s.yaml ]; then
      die "no cluster reachable; on this k3s host run: export KUBECONFIG=/etc/rancher/k3s/k3s.yaml"
    fi
    die "no Kubernetes cluster reachable (KUBECONFIG=${KUBECONFIG:-unset}); start k3s or point KUBECONFIG at a cluster"
  fi
}

images() {
  local e
  e="$(engine)" || die "no container engine with a running daemon (docker, podman or nerdctl); install one to build images, or, with the images already in the cluster, run with SKIP_IMAGES=1"
  step "building $PIPELINE_IMAGE, $OPERATOR_IMAGE and $LEADERBOARD_IMAGE with $e"
  "$e" build -f deploy/docker/Dockerfile --target pipeline -t "$PIPELINE_IMAGE" .
  "$e" build -f deploy/docker/Dockerfile --target operator -t "$OPERATOR_IMAGE" .
  "$e" build -f deploy/docker/Dockerfile --target leaderboard -t "$LEADERBOARD_IMAGE" .
}

# Put the images where k3s's containerd finds them (k3s does not read the engine's store).
import_k3s() {
  local e
  e="$(engine)" || die "no container engine to export the images from"
  if ! command -v k3s >/dev/null 2>&1; then
    echo "    not a k3s host: make sure the cluster can pull $PIPELINE_IMAGE, $OPERATOR_IMAGE and $LEADERBOARD_IMAGE (push them to its registry)"
    return 0
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  for img in "$PIPELINE_IMAGE" "$OPERATOR_IMAGE" "$LEADERBOARD_IMAGE"; do
    step "importing $img into k3s's containerd"
    "$e" save "$img" | $sudo k3s ctr images import -
  done
}

up() {
  need_cluster
  if [ "${SKIP_IMAGES:-0}" != 1 ]; then
    images
    import_k3s
  fi
  step "applying deploy/base: namespace $NS, the Pipeline and Experiment CRDs, RBAC, the operator"
  kubectl apply -k deploy/base
  if [ "$OPERATOR_IMAGE" != "$DEFAULT_OPERATOR_IMAGE" ]; then
    kubectl -n "$NS" set image deployment/observatory-operator operator="$OPERATOR_IMAGE"
  fi
  step "waiting (up to 60 s) for both CRDs to be established"
  kubectl wait --for=condition=Established crd/pipelines.observatory.dev crd/experiments.observatory.dev --timeout=60s
  if [ "${SKIP_IMAGES:-0}" != 1 ]; then
    # Same tag, new build: restart, or the running pods keep the image they started with.
    kubectl -n "$NS" rollout restart deployment/observatory-operator >/dev/null
  fi
  step "waiting (up to 180 s) for the operator to roll out"
  kubectl -n "$NS" rollout status deployment/observatory-operator --timeout=180s
  step "applying deploy/monitoring: Prometheus (pod discovery in $NS) and Grafana with the dashboards"
  kubectl apply -k deploy/monitoring
  if ! kubectl -n "$NS" get secret leaderboard-admin >/dev/null 2>&1; then
    step "making Secret leaderboard-admin (the leaderboard's admin token, random)"
    local token
    token="obs_$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    kubectl -n "$NS" create secret generic leaderboard-admin --from-literal=token="$token" >/dev/null
  fi
  step "applying deploy/leaderboard: the cohort leaderboard (SQLite on a PersistentVolumeClaim)"
  kubectl apply -k deploy/leaderboard
  if [ "$LEADERBOARD_IMAGE" != "$DEFAULT_LEADERBOARD_IMAGE" ]; then
    kubectl -n "$NS" set image deployment/leaderboard leaderboard="$LEADERBOARD_IMAGE"
  fi
  if [ "${SKIP_IMAGES:-0}" != 1 ]; then
    kubectl -n "$NS" rollout restart deployment/leaderboard >/dev/null
  fi
  step "applying the sample Pipeline (deploy/samples)"
  kubectl apply -k deploy/samples
  if [ "$PIPELINE_IMAGE" != "$DEFAULT_PIPELINE_IMAGE" ]; then
    kubectl -n "$NS" patch pipeline demo --type merge -p "{\"spec\":{\"image\":\"$PIPELINE_IMAGE\"}}"
  fi
  step "waiting (up to 300 s) for pipeline/demo to be Ready"
  if ! kubectl -n "$NS" wait --for=condition=Ready pipeline/demo --timeout=300s; then
    kubectl -n "$NS" get pipeline demo -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' || true
    die "pipeline/demo did not become Ready; see: kubectl -n $NS describe pipeline demo"
  fi
  step "waiting (up to 180 s and 300 s) for Prometheus and Grafana"
  kubectl -n "$NS" rollout status deployment/prometheus --timeout=180s
  kubectl -n "$NS" rollout status deployment/grafana --timeout=300s
  step "waiting (up to 180 s) for the leaderboard"
  kubectl -n "$NS" rollout status deployment/leaderboard --timeout=180s
  step "running"
  kubectl -n "$NS" get pipelines,pods -o wide
  local node
  node="$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')"
  cat <<EOF

Grafana (anonymous, read-only): http://${node:-<node-ip>}:30300/d/obs-pipeline-overview
  dashboards: Pipeline overview, Stage detail, Lab comparison, Operator (folder "Observatory")
Prometheus: kubectl -n $NS port-forward svc/prometheus 9090   # then http://localhost:9090
Leaderboard: http://${node:-<node-ip>}:30888/   (instructors: README, "Cohort leaderboards")
  admin token: kubectl -n $NS get secret leaderboard-admin -o jsonpath='{.data.token}' | base64 -d

The pipeline runs in namespace $NS. To look at it:
  kubectl -n $NS get pipelines                      # READY, STATUS, AGE
  kubectl -n $NS describe pipeline demo             # conditions and events
  kubectl -n $NS port-forward svc/demo-sink 9000    # then http://localhost:9000/metrics, /stats, /debug/pprof/flamegraph?seconds=10
Change a knob (the parse stage rolls, nothing else):
  kubectl -n $NS patch pipeline demo --type merge -p '{"spec":{"parse":{"knobs":{"mode":"owned"}}}}'
EOF
}

down() {
  need_cluster
  step "deleting the sample Pipeline (its stages go with it)"
  kubectl delete -k deploy/samples --ignore-not-found --wait=true
  step "deleting the leaderboard and its database volume (export a cohort first: observatory leaderboard export)"
  kubectl delete -k deploy/leaderboard --ignore-not-found --wait=true
  step "deleting Prometheus and Grafana"
  kubectl delete -k deploy/monitoring --ignore-not-found --wait=true
  step "deleting the operator, RBAC, the CRD and namespace $NS"
  kubectl delete -k deploy/base --ignore-not-found --wait=true
}

e2e() {
  if [ -z "${KUBECONFIG:-}" ] || ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
    echo "e2e: SKIPPED: KUBECONFIG does not point at a reachable cluster (KUBECONFIG=${KUBECONFIG:-unset})"
    return 0
  fi
  kubectl -n "$NS" get deployment observatory-operator >/dev/null 2>&1 ||
    die "no operator in namespace $NS: run \`make up\` first (the suite tests what is deployed)"
  kubectl -n "$NS" get svc prometheus >/dev/null 2>&1 ||
    die "no Prometheus in namespace $NS: run \`make up\` first (the Experiment test reads the cluster's Prometheus)"
  if [ "${SKIP_IMAGES:-0}" != 1 ]; then
    images
    import_k3s
    step "restarting the operator on the new image"
    kubectl -n "$NS" rollout restart deployment/observatory-operator >/dev/null
  fi
  kubectl -n "$NS" rollout status deployment/observatory-operator --timeout=180s
  step "port-forwarding the cluster's Prometheus to 127.0.0.1:19090 (the Experiment test reads it)"
  kubectl -n "$NS" port-forward svc/prometheus 19090:9090 >/dev/null 2>&1 &
  FORWARD=$!
  # EXIT, not RETURN: under `set -e` a failing step leaves the function without RETURN.
  trap 'kill "$FORWARD" 2>/dev/null || true' EXIT
  local i
  for i in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/19090) 2>/dev/null && break
    sleep 0.2
  done
  step "running the live-cluster suite against $(kubectl config current-context) (the deployed operator reconciles)"
  # --workspace: the same features as make test, so its build is reused (-p operator resolves the
  # operator's alone and compiled 87 crates again: 7 min 47 s). dashboards/tests/live.rs has no
  # ignored tests, so only the operator's run.
  E2E_PIPELINE_IMAGE="$PIPELINE_IMAGE" E2E_PROMETHEUS_URL=http://127.0.0.1:19090 \
    cargo test --release --workspace --test live -- --ignored --nocapture --test-threads 1
}

CMD="make ${1:-}"
case "${1:-}" in
  images) images ;;
  up) up ;;
  down) down ;;
  e2e) e2e ;;
  *) echo "usage: $0 images|up|down|e2e" >&2; exit 2 ;;
esac
