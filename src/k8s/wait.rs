//! Waits built on kube-runtime watchers: every node Ready, a DaemonSet or a Deployment rolled
//! out. Each wait lists then watches (kube-runtime's [`watcher()`]), reports every change it sees
//! to a progress callback, retries transient API errors with kube-runtime's default backoff, and
//! on timeout returns a [`WaitError::Timeout`] naming the object and its last seen status.
//!
//! The rollout rules are kubectl's (`kubectl rollout status`), with the DaemonSet rule tightened
//! to require every desired pod Ready as well as available.

use super::{KUBE_SYSTEM, ObjectRef};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watch_object, watcher};
use kube::{Api, Client};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::pin::pin;
use std::time::Duration;

/// What a wait tells its progress callback.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a, T> {
    /// The latest state seen.
    State(&'a T),
    /// The API call failed and will be retried after a backoff.
    Retrying(&'a str),
}

/// One node's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// The `Ready` condition's status when not `True` (`False` or `Unknown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The `Ready` condition's reason, e.g. `KubeletNotReady`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `Ready` condition's message, e.g. `container runtime network not ready: ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Cordoned (`spec.unschedulable`); does not make the node not Ready.
    pub unschedulable: bool,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ready {
            return write!(f, "{} Ready", self.name);
        }
        write!(f, "{} not Ready", self.name)?;
        match (&self.status, &self.reason, &self.message) {
            (None, None, None) => f.write_str(" (no Ready condition reported yet)"),
            (s, r, m) => {
                let parts: Vec<&str> = [s, r, m]
                    .into_iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                write!(f, " ({})", parts.join(": "))
            }
        }
    }
}

/// The readiness of one node object.
pub fn node_state(node: &Node) -> NodeState {
    let name = node.metadata.name.clone().unwrap_or_default();
    let unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let cond = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    match cond {
        Some(c) if c.status == "True" => NodeState {
            name,
            ready: true,
            status: None,
            reason: None,
            message: None,
            unschedulable,
        },
        Some(c) => NodeState {
            name,
            ready: false,
            status: Some(c.status.clone()),
            reason: non_empty(&c.reason),
            message: non_empty(&c.message),
            unschedulable,
        },
        None => NodeState {
            name,
            ready: false,
            status: None,
            reason: None,
            message: None,
            unschedulable,
        },
    }
}

/// All nodes' readiness against the inventory's node count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodesReport {
    /// How many nodes the inventory has.
    pub expected: usize,
    /// Every registered node, by name.
    pub nodes: Vec<NodeState>,
}

impl NodesReport {
    /// From node states (sorted by name here).
    pub fn new(expected: usize, mut nodes: Vec<NodeState>) -> Self {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        NodesReport { expected, nodes }
    }

    /// Nodes whose `Ready` condition is `True`.
    pub fn ready_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.ready).count()
    }

    /// Registered nodes that are not Ready.
    pub fn not_ready(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.iter().filter(|n| !n.ready)
    }

    /// At least the expected number of nodes registered and every registered node Ready.
    pub fn is_done(&self) -> bool {
        self.ready_count() >= self.expected && self.not_ready().next().is_none()
    }
}

impl fmt::Display for NodesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} expected nodes Ready ({} registered)",
            self.ready_count(),
            self.expected,
            self.nodes.len()
        )?;
        let not_ready: Vec<String> = self.not_ready().map(ToString::to_string).collect();
        if !not_ready.is_empty() {
            write!(f, "; {}", not_ready.join("; "))?;
        }
        Ok(())
    }
}

/// A DaemonSet's or Deployment's rollout, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutStatus {
    /// The object.
    pub object: ObjectRef,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// Pods wanted: `desiredNumberScheduled` (DaemonSet) or `spec.replicas` (Deployment).
    pub desired: i32,
    /// Pods of the current template: `updatedNumberScheduled` / `updatedReplicas`.
    pub updated: i32,
    /// Ready pods: `numberReady` / `readyReplicas`.
    pub ready: i32,
    /// Available pods: `numberAvailable` / `availableReplicas`.
    pub available: i32,
    /// All pods, old and new: `currentNumberScheduled` / `status.replicas`.
    pub current: i32,
    /// Rolled out.
    pub done: bool,
    /// What the rollout waits for, kubectl's wording; `None` when done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// A rollout that cannot finish (a Deployment past its progress deadline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl fmt::Display for RolloutStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: desired {}, updated {}, ready {}, available {}",
            self.object, self.desired, self.updated, self.ready, self.available
        )?;
        if let (Some(g), Some(o)) = (self.generation, self.observed_generation) {
            write!(f, ", generation {g} (observed {o})")?;
        }
        if let Some(w) = &self.failed {
            write!(f, " — failed: {w}")
        } else if let Some(w) = &self.waiting_for {
            write!(f, " — {w}")
        } else {
            f.write_str(" — rolled out")
        }
    }
}

/// A DaemonSet's rollout: done when the controller has observed the current generation and
/// `updatedNumberScheduled == desiredNumberScheduled == numberAvailable == numberReady`.
pub fn daemonset_rollout(ds: &DaemonSet) -> RolloutStatus {
    let object = ObjectRef::namespaced(
        "daemonset",
        ds.metadata.namespace.as_deref().unwrap_or_default(),
        ds.metadata.name.as_deref().unwrap_or_default(),
    );
    let generation = ds.metadata.generation;
    let st = ds.status.clone().unwrap_or_default();
    let desired = st.desired_number_scheduled;
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let available = st.number_available.unwrap_or(0);
    let ready = st.number_ready;
    let observed = st.observed_generation;
    let waiting_for = if !generation_observed(generation, observed) {
        Some("waiting for the DaemonSet spec update to be observed".to_owned())
    } else if updated < desired {
        Some(format!(
            "{updated} out of {desired} new pods have been updated"
        ))
    } else if available < desired {
        Some(format!(
            "{available} of {desired} updated pods are available"
        ))
    } else if ready < desired {
        Some(format!("{ready} of {desired} updated pods are ready"))
    } else {
        None
    };
    RolloutStatus {
        object,
        generation,
        observed_generation: observed,
        desired,
        updated,
        ready,
        available,
        current: st.current_number_scheduled,
        done: waiting_for.is_none(),
        waiting_for,
        failed: None,
    }
}

/// A Deployment's rollout, as kubectl judges it: generation observed, every replica updated,
/// no old replicas left, every updated replica available; failed once the `Progressing`
/// condition says `ProgressDeadlineExceeded`.
pub fn deployment_rollout(d: &Deployment) -> RolloutStatus {
    let object = ObjectRef::namespaced(
        "deployment",
        d.metadata.namespace.as_deref().unwrap_or_default(),
        d.metadata.name.as_deref().unwrap_or_default(),
    );
    let generation = d.metadata.generation;
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let updated = st.updated_replicas.unwrap_or(0);
    let current = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let observed = st.observed_generation;
    let failed = st
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
        .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        .map(|c| {
            format!(
                "exceeded its progress deadline{}",
                c.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )
        });
    let waiting_for = if !generation_observed(generation, observed) {
        Some("waiting for the Deployment spec update to be observed".to_owned())
    } else if updated < desired {
        Some(format!(
            "{updated} out of {desired} new replicas have been updated"
        ))
    } else if current > updated {
        Some(format!(
            "{} old replicas are pending termination",
            current - updated
        ))
    } else if available < updated {
        Some(format!(
            "{available} of {updated} updated replicas are available"
        ))
    } else {
        None
    };
    RolloutStatus {
        object,
        generation,
        observed_generation: observed,
        desired,
        updated,
        ready,
        available,
        current,
        done: waiting_for.is_none() && failed.is_none(),
        waiting_for,
        failed,
    }
}

fn generation_observed(generation: Option<i64>, observed: Option<i64>) -> bool {
    match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// What a wait saw last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LastSeen {
    /// Nothing: no list answered yet.
    Nothing,
    /// The named object does not exist.
    Absent,
    /// Nodes.
    Nodes(NodesReport),
    /// A rollout.
    Rollout(RolloutStatus),
}

impl fmt::Display for LastSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastSeen::Nothing => f.write_str("the API server never answered"),
            LastSeen::Absent => f.write_str("the object does not exist"),
            LastSeen::Nodes(r) => write!(f, "{r}"),
            LastSeen::Rollout(r) => write!(f, "{r}"),
        }
    }
}

fn last_error_suffix(e: &Option<String>) -> String {
    e.as_deref()
        .map(|e| format!(" (last API error: {e})"))
        .unwrap_or_default()
}

/// Why a wait ended without success.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The condition did not hold within the timeout.
    #[error("timed out after {}s waiting for {object}; last seen: {last}{}", timeout.as_secs(), last_error_suffix(last_error))]
    Timeout {
        /// What was waited for.
        object: ObjectRef,
        /// The timeout.
        timeout: Duration,
        /// Its last seen status.
        last: Box<LastSeen>,
        /// The last retried API error, if any.
        last_error: Option<String>,
    },
    /// The rollout cannot finish (a Deployment past its progress deadline).
    #[error("{object} {reason}; last seen: {last}")]
    Failed {
        /// The object.
        object: ObjectRef,
        /// Why.
        reason: String,
        /// Its last seen status.
        last: Box<LastSeen>,
    },
    /// An API error that retrying cannot fix (unauthorized, forbidden, unknown resource).
    #[error("watching {object}: {source}")]
    Watch {
        /// What was watched.
        object: ObjectRef,
        /// The watcher's error.
        #[source]
        source: watcher::Error,
    },
}

/// Errors that retrying cannot fix: the API server does not know the resource (404), or refuses
/// who we are or what we asked for (401/403) while it says it is ready. An API server that has
/// just restarted refuses valid credentials until its RBAC caches are filled — seen for real on
/// a lab control plane under TCG, where that took minutes — and its `/readyz` fails until then,
/// so a refusal from a server that is not ready is retried (within the wait's own timeout).
struct Fatal {
    client: Client,
}

impl Fatal {
    fn new(client: Client) -> Fatal {
        Fatal { client }
    }

    async fn is_fatal(&self, e: &watcher::Error) -> bool {
        let api = match e {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => e,
            watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => return false,
        };
        match api {
            kube::Error::Api(s) if s.code == 404 => true,
            kube::Error::Api(s) if matches!(s.code, 401 | 403) => self.ready().await,
            _ => false,
        }
    }

    /// The event as it came, or the wait's end when it is a fatal error.
    async fn screen<T>(
        &self,
        ev: Result<T, watcher::Error>,
        object: &ObjectRef,
    ) -> Result<Result<T, watcher::Error>, WaitError> {
        match ev {
            Err(e) if self.is_fatal(&e).await => Err(WaitError::Watch {
                object: object.clone(),
                source: e,
            }),
            ev => Ok(ev),
        }
    }

    /// `GET /readyz` answers `ok` (anything else, or no answer, is "not ready").
    async fn ready(&self) -> bool {
        let Ok(req) = http::Request::get("/readyz").body(Vec::new()) else {
            return false;
        };
        matches!(self.client.request_text(req).await, Ok(t) if t.trim() == "ok")
    }
}

/// Wait until at least `expected` nodes are registered and every registered node is Ready.
/// On timeout the error's last seen state names each node that is not Ready with its `Ready`
/// condition's status, reason and message.
pub async fn nodes_ready<F>(
    client: &Client,
    expected: usize,
    timeout: Duration,
    mut progress: F,
) -> Result<NodesReport, WaitError>
where
    F: FnMut(Progress<'_, NodesReport>),
{
    let object = ObjectRef::all("node");
    let api: Api<Node> = Api::all(client.clone());
    let mut last = LastSeen::Nothing;
    let mut last_error: Option<String> = None;
    let run = async {
        let mut stream = pin!(watcher(api, watcher::Config::default()).default_backoff());
        let mut nodes: BTreeMap<String, NodeState> = BTreeMap::new();
        let mut init: Option<BTreeMap<String, NodeState>> = None;
        let fatal = Fatal::new(client.clone());
        while let Some(ev) = stream.next().await {
            let ev = fatal.screen(ev, &object).await?;
            let changed = match ev {
                Ok(Event::Init) => {
                    init = Some(BTreeMap::new());
                    false
                }
                Ok(Event::InitApply(n)) => {
                    let s = node_state(&n);
                    init.get_or_insert_with(BTreeMap::new)
                        .insert(s.name.clone(), s);
                    false
                }
                Ok(Event::InitDone) => {
                    nodes = init.take().unwrap_or_default();
                    true
                }
                Ok(Event::Apply(n)) => {
                    let s = node_state(&n);
                    nodes.insert(s.name.clone(), s);
                    true
                }
                Ok(Event::Delete(n)) => {
                    nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                    true
                }
                Err(e) => {
                    let msg = e.to_string();
                    progress(Progress::Retrying(&msg));
                    last_error = Some(msg);
                    false
                }
            };
            if changed {
                let report = NodesReport::new(expected, nodes.values().cloned().collect());
                progress(Progress::State(&report));
                if report.is_done() {
                    return Ok(report);
                }
                last = LastSeen::Nodes(report);
            }
        }
        Err(stream_ended(&object))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(WaitError::Timeout {
            object,
            timeout,
            last: Box::new(last),
            last_error,
        }),
    }
}

/// Wait until a DaemonSet has rolled out ([`daemonset_rollout`]).
pub async fn daemonset_rolled_out<F>(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    progress: F,
) -> Result<RolloutStatus, WaitError>
where
    F: FnMut(Progress<'_, RolloutStatus>),
{
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let object = ObjectRef::namespaced("daemonset", namespace, name);
    wait_rollout(api, object, name, timeout, daemonset_rollout, progress).await
}

/// Wait until a Deployment has rolled out ([`deployment_rollout`]); fails at once when it
/// exceeds its progress deadline.
pub async fn deployment_rolled_out<F>(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    progress: F,
) -> Result<RolloutStatus, WaitError>
where
    F: FnMut(Progress<'_, RolloutStatus>),
{
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let object = ObjectRef::namespaced("deployment", namespace, name);
    wait_rollout(api, object, name, timeout, deployment_rollout, progress).await
}

/// The Cilium agents' DaemonSet (`kube-system/cilium`) rolled out.
pub async fn cilium_rolled_out<F>(
    client: &Client,
    timeout: Duration,
    progress: F,
) -> Result<RolloutStatus, WaitError>
where
    F: FnMut(Progress<'_, RolloutStatus>),
{
    daemonset_rolled_out(client, KUBE_SYSTEM, "cilium", timeout, progress).await
}

async fn wait_rollout<K, F>(
    api: Api<K>,
    object: ObjectRef,
    name: &str,
    timeout: Duration,
    summarize: fn(&K) -> RolloutStatus,
    mut progress: F,
) -> Result<RolloutStatus, WaitError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + fmt::Debug + Send + 'static,
    F: FnMut(Progress<'_, RolloutStatus>),
{
    let mut last = LastSeen::Nothing;
    let mut last_error: Option<String> = None;
    let run = async {
        let fatal = Fatal::new(Client::from(api.clone()));
        let mut stream = pin!(watch_object(api, name).default_backoff());
        while let Some(ev) = stream.next().await {
            let ev = fatal.screen(ev, &object).await?;
            match ev {
                Ok(Some(obj)) => {
                    let st = summarize(&obj);
                    progress(Progress::State(&st));
                    if st.done {
                        return Ok(st);
                    }
                    if let Some(reason) = st.failed.clone() {
                        return Err(WaitError::Failed {
                            object: object.clone(),
                            reason,
                            last: Box::new(LastSeen::Rollout(st)),
                        });
                    }
                    last = LastSeen::Rollout(st);
                }
                Ok(None) => last = LastSeen::Absent,
                Err(e) => {
                    let msg = e.to_string();
                    progress(Progress::Retrying(&msg));
                    last_error = Some(msg);
                }
            }
        }
        Err(stream_ended(&object))
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(WaitError::Timeout {
            object,
            timeout,
            last: Box::new(last),
            last_error,
        }),
    }
}

/// kube-runtime's watcher streams never end; if one does, say so rather than panic.
fn stream_ended(object: &ObjectRef) -> WaitError {
    WaitError::Failed {
        object: object.clone(),
        reason: "watch stream ended unexpectedly".to_owned(),
        last: Box::new(LastSeen::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(generation: i64, status: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "cilium", "namespace": "kube-system", "generation": generation},
            "status": status,
        }))
        .expect("daemonset")
    }

    #[test]
    fn daemonset_rules() {
        let mid = ds(
            3,
            json!({"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                   "numberReady": 2, "numberAvailable": 2, "updatedNumberScheduled": 1, "observedGeneration": 3}),
        );
        let s = daemonset_rollout(&mid);
        assert!(!s.done);
        assert_eq!(
            s.waiting_for.as_deref(),
            Some("1 out of 3 new pods have been updated")
        );
        let unobserved = ds(
            4,
            json!({"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                   "numberReady": 3, "numberAvailable": 3, "updatedNumberScheduled": 3, "observedGeneration": 3}),
        );
        assert!(!daemonset_rollout(&unobserved).done);
        let not_ready = ds(
            3,
            json!({"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                   "numberReady": 2, "numberAvailable": 3, "updatedNumberScheduled": 3, "observedGeneration": 3}),
        );
        assert_eq!(
            daemonset_rollout(&not_ready).waiting_for.as_deref(),
            Some("2 of 3 updated pods are ready")
        );
        let done = ds(
            3,
            json!({"currentNumberScheduled": 3, "desiredNumberScheduled": 3, "numberMisscheduled": 0,
                   "numberReady": 3, "numberAvailable": 3, "updatedNumberScheduled": 3, "observedGeneration": 3}),
        );
        let s = daemonset_rollout(&done);
        assert!(s.done, "{s}");
        assert_eq!(
            s.to_string(),
            "daemonset kube-system/cilium: desired 3, updated 3, ready 3, available 3, generation 3 (observed 3) — rolled out"
        );
    }

    #[test]
    fn deployment_rules() {
        let d = |status: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "cilium-operator", "namespace": "kube-system", "generation": 2},
                "spec": {"replicas": 2, "selector": {}, "template": {}},
                "status": status,
            }))
            .expect("deployment")
        };
        let old_left = deployment_rollout(&d(json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3})));
        assert_eq!(
            old_left.waiting_for.as_deref(),
            Some("1 old replicas are pending termination")
        );
        let stuck = deployment_rollout(&d(json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 1, "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]})));
        assert!(!stuck.done);
        assert!(
            stuck
                .failed
                .is_some_and(|f| f.contains("progress deadline"))
        );
        let done = deployment_rollout(&d(json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2})));
        assert!(done.done);
    }

    #[test]
    fn node_reasons_are_kept() {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "w1"},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                 "message": "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"}
            ]}
        }))
        .expect("node");
        let s = node_state(&n);
        assert!(!s.ready);
        assert_eq!(s.reason.as_deref(), Some("KubeletNotReady"));
        assert!(s.to_string().starts_with(
            "w1 not Ready (False: KubeletNotReady: container runtime network not ready"
        ));
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "w2"}})).expect("node");
        assert_eq!(
            node_state(&bare).to_string(),
            "w2 not Ready (no Ready condition reported yet)"
        );
        let r = NodesReport::new(3, vec![node_state(&n), node_state(&bare)]);
        assert!(!r.is_done());
        assert_eq!(r.ready_count(), 0);
        // Enough Ready nodes is not enough while a registered node is not Ready.
        let ready = |name: &str| NodeState {
            name: name.to_owned(),
            ready: true,
            status: None,
            reason: None,
            message: None,
            unschedulable: false,
        };
        let r = NodesReport::new(2, vec![ready("cp1"), ready("w2"), node_state(&n)]);
        assert!(!r.is_done());
        assert_eq!(r.nodes[1].name, "w1", "sorted by name");
        assert!(NodesReport::new(2, vec![ready("cp1"), ready("w2")]).is_done());
    }
}
