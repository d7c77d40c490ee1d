//! kube-proxy detection and removal (converting a running kubeadm cluster to Cilium's
//! kube-proxy replacement).
//!
//! Both `ds/kube-proxy` and `cm/kube-proxy` in kube-system go: `kubeadm upgrade` re-creates the
//! kube-proxy addon unless its ConfigMap is missing. Service traffic stops on a node once its
//! kube-proxy pod is gone and its KUBE-* iptables rules are flushed, until Cilium's replacement
//! runs, so the caller must confirm first: [`remove`] takes a [`RemovalConfirmed`] token that
//! only [`KubeProxyPresence::confirm_removal`] makes. The iptables flush on each node is an SSH
//! step, not part of this module.

use super::{K8sError, KUBE_SYSTEM, ObjectRef, is_not_found};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::{Api, Client};
use serde::Serialize;
use std::fmt;

/// The name of both kube-proxy objects kubeadm creates.
pub const NAME: &str = "kube-proxy";

/// One kube-proxy object as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// `metadata.uid`: removal deletes this object only, not one re-created since.
    pub uid: Option<String>,
    /// For the DaemonSet: pods scheduled (`currentNumberScheduled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pods: Option<i32>,
}

/// What of kube-proxy exists in kube-system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KubeProxyPresence {
    /// `daemonset/kube-proxy`.
    pub daemonset: Option<Found>,
    /// `configmap/kube-proxy`.
    pub configmap: Option<Found>,
}

impl KubeProxyPresence {
    /// Neither object exists.
    pub fn is_absent(&self) -> bool {
        self.daemonset.is_none() && self.configmap.is_none()
    }

    /// The caller's confirmation (an interactive answer or `--yes`) that exactly these objects
    /// may be deleted.
    pub fn confirm_removal(self) -> RemovalConfirmed {
        RemovalConfirmed { presence: self }
    }
}

impl fmt::Display for KubeProxyPresence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ds = match &self.daemonset {
            Some(Found { pods: Some(p), .. }) => format!("daemonset/kube-proxy present ({p} pods)"),
            Some(_) => "daemonset/kube-proxy present".to_owned(),
            None => "daemonset/kube-proxy absent".to_owned(),
        };
        let cm = if self.configmap.is_some() {
            "configmap/kube-proxy present"
        } else {
            "configmap/kube-proxy absent"
        };
        write!(f, "{ds}, {cm} (in {KUBE_SYSTEM})")
    }
}

/// Proof that the user confirmed deleting what [`detect`] found. It cannot be built any other
/// way, so [`remove`] cannot run unconfirmed.
#[derive(Debug)]
pub struct RemovalConfirmed {
    presence: KubeProxyPresence,
}

impl RemovalConfirmed {
    /// What was confirmed.
    pub fn presence(&self) -> &KubeProxyPresence {
        &self.presence
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It was not there when detected; nothing sent.
    NotPresent,
    /// Deleted now.
    Deleted,
    /// Gone by the time of the delete (404): someone else removed it.
    AlreadyGone,
}

/// The removal's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovalReport {
    /// `daemonset/kube-proxy`.
    pub daemonset: Outcome,
    /// `configmap/kube-proxy`.
    pub configmap: Outcome,
}

impl fmt::Display for RemovalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = |o: Outcome| match o {
            Outcome::NotPresent => "was not present",
            Outcome::Deleted => "deleted",
            Outcome::AlreadyGone => "already gone",
        };
        write!(
            f,
            "daemonset/kube-proxy {}, configmap/kube-proxy {}",
            word(self.daemonset),
            word(self.configmap)
        )
    }
}

/// Look for kube-proxy's DaemonSet and ConfigMap in kube-system (two GETs).
pub async fn detect(client: &Client) -> Result<KubeProxyPresence, K8sError> {
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let daemonset = dss
        .get_opt(NAME)
        .await
        .map_err(K8sError::api(
            "get",
            ObjectRef::namespaced("daemonset", KUBE_SYSTEM, NAME),
        ))?
        .map(|ds| Found {
            uid: ds.metadata.uid.clone(),
            pods: ds.status.as_ref().map(|s| s.current_number_scheduled),
        });
    let configmap = cms
        .get_opt(NAME)
        .await
        .map_err(K8sError::api(
            "get",
            ObjectRef::namespaced("configmap", KUBE_SYSTEM, NAME),
        ))?
        .map(|cm| Found {
            uid: cm.metadata.uid.clone(),
            pods: None,
        });
    Ok(KubeProxyPresence {
        daemonset,
        configmap,
    })
}

/// Delete what was confirmed: the DaemonSet first (its pods are garbage-collected in the
/// background), then the ConfigMap. Each DELETE carries the detected UID as a precondition, so
/// an object re-created since detection is left alone (the API server answers 409 Conflict,
/// reported as an error). Objects already gone count as [`Outcome::AlreadyGone`].
pub async fn remove(
    client: &Client,
    confirmed: RemovalConfirmed,
) -> Result<RemovalReport, K8sError> {
    let p = confirmed.presence;
    let dss: Api<DaemonSet> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), KUBE_SYSTEM);
    let daemonset = match &p.daemonset {
        None => Outcome::NotPresent,
        Some(found) => {
            let r = dss.delete(NAME, &delete_params(found)).await;
            outcome(
                r.map(|_| ()),
                ObjectRef::namespaced("daemonset", KUBE_SYSTEM, NAME),
            )?
        }
    };
    let configmap = match &p.configmap {
        None => Outcome::NotPresent,
        Some(found) => {
            let r = cms.delete(NAME, &delete_params(found)).await;
            outcome(
                r.map(|_| ()),
                ObjectRef::namespaced("configmap", KUBE_SYSTEM, NAME),
            )?
        }
    };
    Ok(RemovalReport {
        daemonset,
        configmap,
    })
}

fn delete_params(found: &Found) -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: found.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

fn outcome(r: Result<(), kube::Error>, object: ObjectRef) -> Result<Outcome, K8sError> {
    match r {
        Ok(()) => Ok(Outcome::Deleted),
        Err(e) if is_not_found(&e) => Ok(Outcome::AlreadyGone),
        Err(source) => Err(K8sError::Api {
            action: "delete",
            object,
            source: Box::new(source),
        }),
    }
}
