#!/usr/bin/env python3
"""Validate the observatory's Kubernetes manifests offline.

- Built-in kinds (everything in deploy/, and what the operator renders for the sample Pipeline)
  against the Kubernetes OpenAPI schemas, strictly (unknown fields are errors), with the PyPI
  package `kubernetes-validate`, for the oldest and newest Kubernetes versions we support.
- Pipelines and Experiments (deploy/experiments) against their CRDs' own openAPIV3Schema
  (`jsonschema`), also refusing unknown fields: the API server would silently prune them,
  hiding a typo.

- Every workload of deploy/base, deploy/monitoring and deploy/leaderboard against the Pod
  Security Standard `restricted` (security contexts, volume types, host namespaces and ports),
  with a self-test of pods it must refuse.
- deploy/monitoring: the Prometheus config with `promtool check config` (a promtool that knows
  Kubernetes service discovery: deploy/promtool.sh), the Grafana provisioning files (their
  shape, and that they point where the Deployment mounts things), and the dashboards ConfigMap
  kustomize generates (byte-identical to dashboards/*.json: no copies to drift).

Usage: validate.py [--operator PATH] [--promtool PATH] [--self-test]
  --self-test also checks that broken manifests are rejected (the validator can fail).
"""

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = None
VERSIONS = ["1.33.0", "1.37.0"]


def documents(text):
    return [d for d in yaml.safe_load_all(text) if d]


def kustomize(path):
    return subprocess.run(
        ["kubectl", "kustomize", str(ROOT / path)], check=True, capture_output=True, text=True
    ).stdout


CUSTOM = ("Pipeline", "Experiment")


def crd_schema(kind="Pipeline"):
    crd = next(d for d in documents((ROOT / "deploy/base/crd.yaml").read_text())
               if d["spec"]["names"]["kind"] == kind)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def unknown_fields(instance, schema, path="$"):
    """Fields the schema does not describe (which the API server would prune)."""
    found = []
    if isinstance(instance, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        if props is None or schema.get("x-kubernetes-preserve-unknown-fields"):
            return found
        for key, value in instance.items():
            if key in props:
                found += unknown_fields(value, props[key], f"{path}.{key}")
            elif path == "$" and key in ("apiVersion", "kind", "metadata"):
                continue
            else:
                found.append(f"{path}.{key}")
    elif isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def check_pipeline(doc, schema):
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    errors += [f"{f}: unknown field" for f in unknown_fields(doc, schema)]
    return errors


def check_builtin(doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        return [str(e.message)]
    except Exception as e:  # schema not found, etc.
        return [f"{type(e).__name__}: {e}"]


def check(docs, label):
    schemas = {kind: crd_schema(kind) for kind in CUSTOM}
    failures = 0
    for doc in docs:
        name = f"{doc.get('kind')} {doc.get('metadata', {}).get('namespace', '-')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") in CUSTOM:
            errors = check_pipeline(doc, schemas[doc["kind"]])
            against = f"the {doc['kind']} CRD"
        else:
            errors = [f"k8s {v}: {e}" for v in VERSIONS for e in check_builtin(doc, v)]
            against = "Kubernetes " + " and ".join(VERSIONS)
        failures += report(label, name, against, errors)
    return failures


def report(label, name, against, errors):
    """One line per manifest (and one per error); 1 when it failed."""
    if not errors:
        print(f"ok    {label}: {name} ({against})")
        return 0
    print(f"FAIL  {label}: {name} ({against})")
    for e in errors:
        print(f"      {e}")
    return 1


def restricted(doc):
    """What the Pod Security Standard `restricted` (kubernetes.io/docs/concepts/security/
    pod-security-standards) refuses in a workload's pod template; [] when it admits it."""
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    psc = pod.get("securityContext", {})
    errors = []
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(f):
            errors.append(f"{f} is not allowed")
    for v in pod.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                         "persistentVolumeClaim", "projected", "secret"}:
            errors.append(f"volume {v.get('name')}: {sorted(kinds)} is not an allowed volume type")
    if psc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        errors.append("securityContext.seccompProfile.type must be RuntimeDefault or Localhost")
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        csc = c.get("securityContext", {})
        name = f"container {c.get('name')}"
        if csc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in csc.get("capabilities", {}).get("drop", []):
            errors.append(f"{name}: capabilities must drop ALL")
        if set(csc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            errors.append(f"{name}: only NET_BIND_SERVICE may be added")
        if csc.get("privileged"):
            errors.append(f"{name}: privileged")
        if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            errors.append(f"{name}: runAsNonRoot must be true")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            errors.append(f"{name}: runAsUser 0")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            errors.append(f"{name}: hostPort")
    return errors


def check_restricted(docs, label):
    failures = 0
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            continue
        name = f"{doc['kind']} {doc.get('metadata', {}).get('name')}"
        failures += report(label, name, "Pod Security Standard restricted", restricted(doc))
    return failures


def promtool_check(promtool, path):
    out = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    return out.returncode == 0, (out.stdout + out.stderr).strip()


def check_monitoring(promtool, docs):
    failures = 0
    ok, out = promtool_check(promtool, ROOT / "deploy/monitoring/prometheus.yml")
    print(f"{'ok  ' if ok else 'FAIL'}  promtool check config deploy/monitoring/prometheus.yml")
    if not ok:
        print("      " + out.replace("\n", "\n      "))
        failures += 1
    problems = []
    ds = yaml.safe_load((ROOT / "deploy/monitoring/grafana/datasources.yaml").read_text())
    if ds.get("apiVersion") != 1 or not ds.get("datasources"):
        problems.append("datasources.yaml: apiVersion 1 with a datasources list")
    else:
        d = ds["datasources"][0]
        for key, want in [("type", "prometheus"), ("uid", "prometheus"), ("url", "http://prometheus:9090")]:
            if d.get(key) != want:
                problems.append(f"datasources.yaml: {key} is {d.get(key)!r}, want {want!r}")
    prov = yaml.safe_load((ROOT / "deploy/monitoring/grafana/dashboards.yaml").read_text())
    providers = prov.get("providers") or [{}]
    path = providers[0].get("options", {}).get("path")
    if prov.get("apiVersion") != 1 or providers[0].get("type") != "file" or not path:
        problems.append("dashboards.yaml: apiVersion 1 with a file provider and a path")
    grafana = next((d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "grafana"), None)
    mounts = {m["name"]: m["mountPath"] for m in grafana["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]} if grafana else {}
    if mounts.get("dashboards") != path:
        problems.append(f"the provider reads {path} but Grafana mounts the dashboards at {mounts.get('dashboards')}")
    if mounts.get("datasources") != "/etc/grafana/provisioning/datasources":
        problems.append("the datasource file is not mounted where Grafana provisions from")
    cm = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("grafana-dashboards")), None)
    files = {f.name: f.read_text() for f in sorted((ROOT / "dashboards").glob("*.json"))}
    if not cm or cm.get("data") != files:
        problems.append("the generated grafana-dashboards ConfigMap is not exactly dashboards/*.json")
    for f, text in files.items():
        ds_var = [v for v in json.loads(text)["templating"]["list"] if v["type"] == "datasource"]
        if not ds_var or ds_var[0]["current"]["value"] != "prometheus":
            problems.append(f"{f}: its datasource variable does not default to the provisioned uid `prometheus`")
    for p in problems:
        print(f"FAIL  grafana provisioning: {p}")
    if not problems:
        print(f"ok    grafana provisioning: datasource, dashboard provider, {len(files)} dashboards mounted from one generated ConfigMap")
    return failures + len(problems)


def self_test(rendered, operator):
    """Broken manifests must be rejected, or this validator proves nothing."""
    schema = crd_schema()
    sample = documents((ROOT / "deploy/samples/pipeline-demo.yaml").read_text())[0]
    bad_pipelines = []
    p = copy.deepcopy(sample); p["spec"]["parse"]["knobs"]["mode"] = "fast"; bad_pipelines.append(("enum", p))
    p = copy.deepcopy(sample); p["spec"]["parse"]["knobs"]["workers"] = 0; bad_pipelines.append(("range", p))
    p = copy.deepcopy(sample); del p["spec"]["image"]; bad_pipelines.append(("required", p))
    p = copy.deepcopy(sample); p["spec"]["source"]["replicas"] = "two"; bad_pipelines.append(("type", p))
    failures = 0
    for what, p in bad_pipelines:
        if not check_pipeline(p, schema):
            print(f"SELF-TEST FAIL: a Pipeline with a bad {what} passed")
            failures += 1
    # An unknown knob: the schema keeps it (x-kubernetes-preserve-unknown-fields, so it is not
    # pruned with only a warning) and the operator refuses it by name.
    import tempfile
    p = copy.deepcopy(sample); p["spec"]["parse"]["knobs"]["workerz"] = 2
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(p, f)
    r = subprocess.run([operator, "render", f.name], capture_output=True, text=True)
    if r.returncode == 0 or "spec.parse.knobs.workerz" not in r.stderr:
        print(f"SELF-TEST FAIL: the operator rendered a Pipeline with an unknown knob: {r.stderr.strip()}")
        failures += 1
    if unknown_fields(p, schema):
        print("SELF-TEST FAIL: the CRD schema prunes unknown knobs instead of keeping them for the operator")
        failures += 1
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    d = copy.deepcopy(deployment); d["spec"]["replicas"] = "two"; bad = [("type", d)]
    d = copy.deepcopy(deployment); d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicee"] = "x"; bad.append(("unknown field", d))
    d = copy.deepcopy(deployment); del d["spec"]["selector"]; bad.append(("required", d))
    for what, d in bad:
        if not check_builtin(d, VERSIONS[0]):
            print(f"SELF-TEST FAIL: a Deployment with a bad {what} passed")
            failures += 1
    if PROMTOOL:
        good = (ROOT / "deploy/monitoring/prometheus.yml").read_text()
        import tempfile
        for what, text in [("an unknown SD role", good.replace("role: pod", "role: podz")),
                           ("a bad relabel action", good.replace("action: keep", "action: keeep", 1))]:
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
                f.write(text)
            if promtool_check(PROMTOOL, f.name)[0]:
                print(f"SELF-TEST FAIL: a Prometheus config with {what} passed")
                failures += 1
    exp_schema = crd_schema("Experiment")
    exp = documents((ROOT / "deploy/experiments/lab-02-batching.yaml").read_text())[0]
    bad_experiments = []
    e = copy.deepcopy(exp); e["spec"]["metric"] = "speed"; bad_experiments.append(("metric", e))
    e = copy.deepcopy(exp); e["spec"]["pairs"] = 1; bad_experiments.append(("pairs", e))
    e = copy.deepcopy(exp); e["spec"]["runSeconds"] = 5; bad_experiments.append(("window", e))
    e = copy.deepcopy(exp); e["spec"]["pipeline"]["parse"]["knobs"]["mode"] = "fast"; bad_experiments.append(("pipeline knob", e))
    e = copy.deepcopy(exp); e["spec"]["variant"]["sett"] = []; bad_experiments.append(("unknown field", e))
    verify = documents((ROOT / "deploy/experiments/verify-submission.yaml").read_text())[0]
    e = copy.deepcopy(verify); e["spec"]["leaderboard"]["url"] = "file:///etc/passwd"; bad_experiments.append(("leaderboard url", e))
    e = copy.deepcopy(verify); e["spec"]["leaderboard"]["cohort"] = "perf 2026!"; bad_experiments.append(("leaderboard cohort", e))
    e = copy.deepcopy(verify); e["spec"]["leaderboard"]["tokenSecret"] = "Not_A_Name"; bad_experiments.append(("token Secret name", e))
    e = copy.deepcopy(verify); del e["spec"]["leaderboard"]["submission"]; bad_experiments.append(("missing submission", e))
    for what, e in bad_experiments:
        if not check_pipeline(e, exp_schema):
            print(f"SELF-TEST FAIL: an Experiment with a bad {what} passed")
            failures += 1
    board = next(d for d in documents(kustomize("deploy/leaderboard")) if d["kind"] == "Deployment")
    if restricted(board):
        print(f"SELF-TEST FAIL: the leaderboard's own Deployment is not restricted: {restricted(board)}")
        failures += 1
    unsafe = []
    d = copy.deepcopy(board); d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True; unsafe.append(("privilege escalation", d))
    d = copy.deepcopy(board); d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": ["NET_RAW"]}; unsafe.append(("capabilities kept", d))
    d = copy.deepcopy(board); del d["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]; unsafe.append(("no seccomp profile", d))
    d = copy.deepcopy(board); d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False; d["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop("runAsNonRoot"); unsafe.append(("root allowed", d))
    d = copy.deepcopy(board); d["spec"]["template"]["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}); unsafe.append(("a hostPath volume", d))
    for what, d in unsafe:
        if not restricted(d):
            print(f"SELF-TEST FAIL: a pod with {what} passed as restricted")
            failures += 1
    if failures == 0:
        print(f"self-test: {len(unsafe)} pods that are not restricted refused; {len(bad_pipelines)} broken Pipelines (and an unknown knob refused by the operator), {len(bad_experiments)} broken Experiments, {len(bad)} broken Deployments and 2 broken Prometheus configs rejected")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--operator", default=str(ROOT / "target/release/operator"))
    ap.add_argument("--promtool", help="a promtool with Kubernetes SD (default: deploy/promtool.sh fetches one)")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    global PROMTOOL
    PROMTOOL = args.promtool or subprocess.run([str(ROOT / "deploy/promtool.sh")], check=True, capture_output=True, text=True).stdout.strip()
    rendered = []
    for sample in sorted((ROOT / "deploy/samples").glob("*.yaml")):
        docs = documents(sample.read_text())
        if any(d.get("kind") == "Pipeline" for d in docs):
            out = subprocess.run([args.operator, "render", str(sample)], check=True, capture_output=True, text=True).stdout
            rendered += documents(out)
    base = documents(kustomize("deploy/base"))
    failures = check(base, "deploy/base") + check_restricted(base, "deploy/base")
    failures += check(documents(kustomize("deploy/samples")), "deploy/samples")
    failures += check(rendered, "rendered")
    experiments = [d for f in sorted((ROOT / "deploy/experiments").glob("*.yaml")) for d in documents(f.read_text())]
    failures += check(experiments, "deploy/experiments")
    monitoring = documents(kustomize("deploy/monitoring"))
    failures += check(monitoring, "deploy/monitoring")
    failures += check_monitoring(PROMTOOL, monitoring) + check_restricted(monitoring, "deploy/monitoring")
    leaderboard = documents(kustomize("deploy/leaderboard"))
    failures += check(leaderboard, "deploy/leaderboard")
    failures += check_restricted(leaderboard, "deploy/leaderboard")
    if args.self_test:
        failures += self_test(rendered, args.operator)
    if failures:
        print(f"{failures} manifest(s) invalid")
        sys.exit(1)
    print("every manifest is valid")


if __name__ == "__main__":
    main()
