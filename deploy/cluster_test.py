#!/usr/bin/env python3
"""Tests of deploy/cluster.sh (`make up`, `make e2e`) with stand-in commands on PATH.

There is no cluster and no container engine on the machines that run `make test`, so the
script's decisions are checked against recording stand-ins for podman, docker, k3s, kubectl
and cargo: which engine builds, under which image names, what is imported into k3s, what is
applied and waited for, and that a failing `make e2e` leaves no port-forward behind. What the
real tools then do is the live-cluster suite's business (`make e2e`).
"""
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "cluster.sh"

STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
case "$(basename "$0") $1" in
  "docker info") exit 1 ;;           # a client without a daemon, as on this machine
  "podman info"|"nerdctl info") exit 0 ;;
  "podman save"|"nerdctl save") echo "image-tar:$2" ;;
  "k3s ctr") cat >> "$STUB_IMPORTS" ;;
  "cargo test") exit 1 ;;             # the live suite failing
esac
case "$(basename "$0") $*" in
  "kubectl get nodes"*) echo 10.0.0.9 ;;
  "kubectl -n observatory get secret leaderboard-admin"*) [ -n "${STUB_SECRET_EXISTS:-}" ]; exit $? ;;
  kubectl*port-forward*) echo $$ > "$STUB_FORWARD_PID"; exec sleep 300 ;;
esac
exit 0
"""


def run(tools, args, env_extra=None):
    """Run cluster.sh with only `tools` stubbed on PATH (plus the system's basics)."""
    tmp = pathlib.Path(tempfile.mkdtemp())
    bindir = tmp / "bin"
    bindir.mkdir()
    for t in tools:
        p = bindir / t
        p.write_text(STUB)
        p.chmod(0o755)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": str(tmp),
        "STUB_LOG": str(tmp / "log"),
        "STUB_IMPORTS": str(tmp / "imports"),
        "STUB_FORWARD_PID": str(tmp / "forward.pid"),
        "KUBECONFIG": str(tmp / "kubeconfig"),
    }
    env.update(env_extra or {})
    r = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                       timeout=60)
    log = (tmp / "log").read_text().splitlines() if (tmp / "log").exists() else []
    imports = (tmp / "imports").read_text() if (tmp / "imports").exists() else ""
    return r, log, imports, tmp


def check(cond, what, r=None):
    if not cond:
        detail = f"\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}" if r else ""
        sys.exit(f"cluster.sh: FAILED: {what}{detail}")
    print(f"cluster.sh: ok: {what}")


def main():
    # A k3s host with podman and no docker daemon: podman builds, under fully qualified names
    # (podman would otherwise call them localhost/...), and k3s imports what podman saved.
    r, log, imports, _ = run(["docker", "podman", "k3s", "kubectl"], ["up"])
    check(r.returncode == 0, "`make up` runs to its end with podman and no docker", r)
    builds = [l for l in log if l.startswith("podman build")]
    check(any("-t docker.io/observatory/pipeline:dev" in b and "--target pipeline" in b for b in builds)
          and any("-t docker.io/observatory/operator:dev" in b and "--target operator" in b for b in builds),
          "podman builds both images as docker.io/observatory/...:dev", r)
    check(any("-t docker.io/observatory/leaderboard:dev" in b and "--target leaderboard" in b for b in builds),
          "podman builds the leaderboard's image", r)
    check("image-tar:docker.io/observatory/pipeline:dev" in imports
          and "image-tar:docker.io/observatory/operator:dev" in imports
          and "image-tar:docker.io/observatory/leaderboard:dev" in imports,
          "k3s imports the three images podman saved")
    check(not any(l.startswith("docker build") for l in log), "docker without a daemon is not used")
    check(any("wait --for=condition=Established crd/pipelines.observatory.dev crd/experiments.observatory.dev" in l
              for l in log), "both CRDs are waited for")
    check(any("rollout restart deployment/observatory-operator" in l for l in log),
          "the operator restarts on the freshly imported image")
    applied = [l.split("-k ")[1] for l in log if "kubectl apply -k" in l]
    check(applied == ["deploy/base", "deploy/monitoring", "deploy/leaderboard", "deploy/samples"],
          f"base, monitoring, leaderboard, samples applied in that order ({applied})")
    check("http://10.0.0.9:30300/" in r.stdout, "the Grafana URL is printed", r)
    made = [l for l in log if "create secret generic leaderboard-admin" in l]
    token = made[0].split("--from-literal=token=")[1].split()[0] if made else ""
    check(len(made) == 1 and token.startswith("obs_") and len(token) == 4 + 48
          and all(c in "0123456789abcdef" for c in token[4:]),
          f"the leaderboard's admin token is made once, 24 random bytes in hex ({made})", r)
    check(log.index(made[0]) < next(i for i, l in enumerate(log) if "apply -k deploy/leaderboard" in l),
          "the admin Secret exists before the leaderboard that mounts it is applied")
    check(token not in r.stdout + r.stderr, "the admin token is not printed", r)
    check(any("rollout status deployment/leaderboard" in l for l in log)
          and "http://10.0.0.9:30888/" in r.stdout, "the leaderboard is waited for and its URL printed", r)
    r2, log2, _, _ = run(["kubectl"], ["up"], {"SKIP_IMAGES": "1", "STUB_SECRET_EXISTS": "1"})
    check(r2.returncode == 0 and not any("create secret" in l for l in log2),
          "a later `make up` keeps the admin Secret it finds (the instructor's token stays valid)", r2)

    # Images already in the cluster, no engine at all: SKIP_IMAGES=1 deploys without building.
    r, log, _, _ = run(["kubectl"], ["up"], {"SKIP_IMAGES": "1"})
    check(r.returncode == 0, "SKIP_IMAGES=1 `make up` works without any container engine", r)
    check(not any(l.startswith(("podman", "docker", "nerdctl", "k3s")) for l in log),
          "SKIP_IMAGES=1 builds and imports nothing")
    check(not any("rollout restart" in l for l in log), "SKIP_IMAGES=1 does not restart the operator")

    # No engine and no SKIP_IMAGES: one clear line saying what to do.
    r, _, _, _ = run(["kubectl"], ["up"])
    check(r.returncode != 0 and "SKIP_IMAGES=1" in r.stderr,
          "without an engine, `make up` says to install one or use SKIP_IMAGES=1", r)

    # nerdctl alone works the same way.
    r, log, imports, _ = run(["nerdctl", "k3s", "kubectl"], ["images"])
    check(r.returncode == 0 and any(l.startswith("nerdctl build") for l in log),
          "nerdctl builds when it is the only engine", r)

    # `make e2e` whose suite fails: the port-forward it started is gone afterwards.
    r, log, _, tmp = run(["kubectl", "cargo"], ["e2e"], {"SKIP_IMAGES": "1"})
    check(r.returncode != 0, "a failing live suite fails `make e2e`", r)
    pid = int((tmp / "forward.pid").read_text())
    for _ in range(50):
        if not pathlib.Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    alive = pathlib.Path(f"/proc/{pid}").exists()
    if alive:
        os.kill(pid, 9)
    check(not alive, "the port-forward does not outlive a failed `make e2e`")
    check(any("cargo test --release --workspace --test live" in l for l in log),
          "the live suite runs against the deployed operator, built with the workspace's "
          "features (the test build is reused)")

    # Without a reachable cluster, e2e skips and says so.
    r, _, _, _ = run(["cargo"], ["e2e"], {"KUBECONFIG": ""})
    check(r.returncode == 0 and "SKIPPED" in r.stdout, "e2e without a cluster skips, saying so", r)


if __name__ == "__main__":
    main()
