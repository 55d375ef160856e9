//! Why a stage is not ready, in one line, from its pods: what `kubectl describe pod` would
//! make someone dig for (not scheduled for lack of CPU, an image that cannot be pulled, a
//! container that crashes or was OOM-killed, a readiness probe that fails).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

/// Longest message taken from the API (scheduler messages can list every node).
const MAX_MESSAGE: usize = 200;

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_MESSAGE {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX_MESSAGE).collect::<String>())
    }
}

/// What keeps a container from being ready, if anything does.
fn container_problem(c: &ContainerStatus) -> Option<String> {
    let state = c.state.as_ref()?;
    if let Some(w) = &state.waiting {
        let reason = w.reason.as_deref().unwrap_or("Waiting");
        let mut out = format!("container {} {reason}", c.name);
        if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
            out.push_str(&format!(": {}", short(m)));
        }
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()) {
            out.push_str(&format!(
                " (last exit {}{})",
                t.exit_code,
                t.reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            ));
        }
        return Some(out);
    }
    if let Some(t) = &state.terminated {
        return Some(format!(
            "container {} terminated: exit {}{}",
            c.name,
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        ));
    }
    if state.running.is_some() && !c.ready {
        return Some(format!(
            "container {} running, not ready yet (readiness probe /readyz)",
            c.name
        ));
    }
    None
}

/// The first reason one of `pods` is not ready, as `pod <name>: <why>`; `None` when all are
/// ready, or there is nothing to tell (no pod yet: the workload controller is creating them).
pub fn problem(pods: &[Pod]) -> Option<String> {
    let mut sorted: Vec<&Pod> = pods.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    for p in sorted {
        let name = p.name_any();
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(st) = &p.status else {
            return Some(format!("pod {name}: no status yet"));
        };
        let conditions = st.conditions.as_deref().unwrap_or_default();
        if let Some(c) = conditions
            .iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            return Some(format!(
                "pod {name}: not scheduled ({}): {}",
                c.reason.as_deref().unwrap_or("Unschedulable"),
                short(c.message.as_deref().unwrap_or_default())
            ));
        }
        let statuses = st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(st.container_statuses.iter().flatten());
        for c in statuses {
            if let Some(why) = container_problem(c) {
                return Some(format!("pod {name}: {why}"));
            }
        }
        let ready = conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            return Some(format!(
                "pod {name}: {}",
                st.phase.as_deref().unwrap_or("Pending")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "demo-sink-0", "namespace": "observatory"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn an_unschedulable_pod_says_what_the_scheduler_said() {
        // What a 2-CPU node said of the e2e sink beside `make up`'s demo.
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."}]}));
        let why = problem(&[p]).unwrap();
        assert!(
            why.starts_with("pod demo-sink-0: not scheduled (Unschedulable): 0/1 nodes are available: 1 Insufficient cpu"),
            "{why}"
        );
    }

    #[test]
    fn images_crashes_and_probes_are_named() {
        let waiting = |reason: &str, message: &str| {
            pod(
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "pipeline", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                    "state": {"waiting": {"reason": reason, "message": message}}}]}),
            )
        };
        let why = problem(&[waiting(
            "ErrImageNeverPull",
            "Container image \"observatory/pipeline:dev\" is not present with pull policy of Never",
        )])
        .unwrap();
        assert!(
            why.contains("container pipeline ErrImageNeverPull: Container image"),
            "{why}"
        );

        let crash = pod(json!({"phase": "Running",
            "containerStatuses": [{"name": "pipeline", "ready": false, "restartCount": 3, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        let why = problem(&[crash]).unwrap();
        assert!(
            why.contains("CrashLoopBackOff") && why.contains("last exit 137, OOMKilled"),
            "{why}"
        );

        let unready = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "pipeline", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"running": {}}}]}));
        assert!(problem(&[unready]).unwrap().contains("readiness probe"));
    }

    #[test]
    fn ready_pods_and_no_pods_have_nothing_to_say() {
        let ready = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "pipeline", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"running": {}}}]}));
        assert_eq!(problem(&[ready]), None);
        assert_eq!(problem(&[]), None);
        // A long scheduler message is cut.
        let long = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "x".repeat(5000)}]}),
        );
        assert!(problem(&[long]).unwrap().len() < 400);
    }
}
