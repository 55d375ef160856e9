//! What both reconcilers do with the Kubernetes API the same way: apply a status as the
//! operator's field manager, publish an Event about their object, count consecutive failures for
//! the backoff, and treat an already-deleted object as deleted.

use crate::pipeline::render::MANAGER;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Mutex;
use tracing::warn;

/// `namespace/name` of an object: the key of its failure count and its logs.
pub fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The Event recorder of this operator replica.
pub fn recorder(client: Client) -> Recorder {
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    Recorder::new(client, reporter)
}

/// Server-side apply of `status` to `obj`'s status subresource.
pub async fn apply_status<K>(
    client: &Client,
    ns: &str,
    obj: &K,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Publish an Event about `obj`, and about `related` when it concerns a second object; a
/// failure to publish is logged, not returned.
///
/// The recorder folds events with the same type, reason, action and objects into one series
/// that keeps the first note, so events that say different things about different runs or
/// stages must name them in `related` (six runs measured are six events, not one shown six
/// times).
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    related: Option<ObjectReference>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: related,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish an event");
    }
}

/// A delete that found nothing to delete succeeded.
pub fn not_found_is_ok(err: kube::Error) -> Result<(), kube::Error> {
    match err {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        other => Err(other),
    }
}

/// Consecutive failed reconciles per object, for the backoff.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Failures of `key` so far, after counting this one.
    pub fn fail(&self, key: &str) -> u32 {
        let mut f = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// A reconcile of `key` succeeded: its count starts over.
    pub fn succeed(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}
