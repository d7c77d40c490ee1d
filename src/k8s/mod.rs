//! The Kubernetes API side: a [`kube::Client`] from the admin kubeconfig (optionally through an
//! SSH tunnel), waits built on kube-runtime watchers, kube-proxy removal, and the Cilium agents'
//! own view of their datapath (`cilium-dbg status --verbose`).
//!
//! Types come from `k8s-openapi` with its `v1_33` feature, the lowest API level that crate
//! offers: kubedrill only reads and deletes long-stable objects (core/v1 Node, Pod, ConfigMap;
//! apps/v1 DaemonSet, Deployment), whose wire format is unchanged from Kubernetes 1.22 (the
//! oldest kubedrill installs) to 1.36. Every field newer than a cluster is optional in the
//! generated types, so the lowest level is the one that assumes the least of the API server.

pub mod agents;
pub mod client;
pub mod kube_proxy;
pub mod status;
pub mod wait;

use std::fmt;

pub use client::{ClientError, ClientOptions, client_from_kubeconfig, config_from_kubeconfig};

/// The namespace kubeadm and Cilium put their system objects in.
pub const KUBE_SYSTEM: &str = "kube-system";

/// A named Kubernetes object, for messages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectRef {
    /// Lower-case kind, as kubectl spells it (`daemonset`, `node`, ...).
    pub kind: &'static str,
    /// Namespace, for namespaced objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name; `None` for a collection (all nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ObjectRef {
    /// A namespaced object.
    pub fn namespaced(kind: &'static str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind,
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
        }
    }

    /// Every object of a cluster-scoped kind.
    pub fn all(kind: &'static str) -> Self {
        ObjectRef {
            kind,
            namespace: None,
            name: None,
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => write!(f, "{} {ns}/{n}", self.kind),
            (None, Some(n)) => write!(f, "{} {n}", self.kind),
            (Some(ns), None) => write!(f, "all {}s in {ns}", self.kind),
            (None, None) => write!(f, "all {}s", self.kind),
        }
    }
}

/// A failed Kubernetes API call.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The API server (or the connection to it) failed a request.
    #[error("{action} {object}: {source}")]
    Api {
        /// What kubedrill was doing (`get`, `list`, `delete`, `exec in`).
        action: &'static str,
        /// On what.
        object: ObjectRef,
        /// kube's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A command run in a pod failed or could not be read.
    #[error("exec `{command}` in pod {pod}: {message}")]
    Exec {
        /// Pod (`namespace/name`).
        pod: String,
        /// The command line.
        command: String,
        /// What went wrong, with the API server's status message when there is one.
        message: String,
    },
}

impl K8sError {
    fn api(action: &'static str, object: ObjectRef) -> impl FnOnce(kube::Error) -> K8sError {
        move |source| K8sError::Api {
            action,
            object,
            source: Box::new(source),
        }
    }
}

/// True when kube's error is the API server answering 404 Not Found.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
