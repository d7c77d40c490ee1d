//! A [`kube::Client`] from a kubeconfig file (kubeadm's `admin.conf`, fetched from the first
//! control plane), optionally reaching the API server at another URL.
//!
//! The override exists for SSH tunnels: kubedrill may forward `127.0.0.1:PORT` on this machine
//! to the API server. The API server's certificate does not name `127.0.0.1` (kubeadm signs it
//! for the node addresses, the service IP, `kubernetes.default...` and the control-plane
//! endpoint), so when the URL is overridden the TLS server name is pinned to the kubeconfig's
//! original host (kube's `Config::tls_server_name`, which the rustls connector uses both for SNI
//! and for verification). Certificate verification stays on; nothing here ever disables it.

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to build the client.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Reach the API server here instead of the kubeconfig's `server`, e.g.
    /// `https://127.0.0.1:16443` for an SSH tunnel. `host:port` alone means `https://host:port`.
    pub server_override: Option<String>,
    /// Kubeconfig context; the current context when `None`.
    pub context: Option<String>,
    /// TCP connect timeout; kube's default (30 s) when `None`.
    pub connect_timeout: Option<Duration>,
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read or does not say how to reach a cluster.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// kube's reason.
        #[source]
        source: KubeconfigError,
    },
    /// The server override is not a usable URL.
    #[error("API server URL override {url:?}: {reason}")]
    BadOverride {
        /// What was given.
        url: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The local forward to the API server could not be opened.
    #[error("forwarding a local port to the API server {target}: {source}")]
    Forward {
        /// `host:port` as seen from the SSH host.
        target: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// kube refused the configuration (for instance a CA bundle that is not a certificate).
    #[error("building a Kubernetes client from {path}: {source}")]
    Build {
        /// The kubeconfig.
        path: PathBuf,
        /// kube's reason.
        #[source]
        source: kube::Error,
    },
}

/// The kube configuration from a kubeconfig file, with the server override applied: the URL is
/// replaced and, unless the kubeconfig already names one, `tls_server_name` is set to the
/// kubeconfig server's host so the certificate still verifies against the name it was issued for.
pub async fn config_from_kubeconfig(
    path: &Path,
    opts: &ClientOptions,
) -> Result<kube::Config, ClientError> {
    let wrap = |source| ClientError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(wrap)?;
    let options = KubeConfigOptions {
        context: opts.context.clone(),
        cluster: None,
        user: None,
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(wrap)?;
    if let Some(url) = &opts.server_override {
        let uri = parse_override(url)?;
        if config.tls_server_name.is_none() {
            config.tls_server_name = config.cluster_url.host().map(strip_brackets);
        }
        config.cluster_url = uri;
    }
    if let Some(t) = opts.connect_timeout {
        config.connect_timeout = Some(t);
    }
    Ok(config)
}

/// A client from a kubeconfig file; see [`config_from_kubeconfig`]. Nothing is sent to the API
/// server until the first request.
pub async fn client_from_kubeconfig(
    path: &Path,
    opts: &ClientOptions,
) -> Result<kube::Client, ClientError> {
    let config = config_from_kubeconfig(path, opts).await?;
    kube::Client::try_from(config).map_err(|source| ClientError::Build {
        path: path.to_owned(),
        source,
    })
}

/// A client whose connections go through an SSH session: a local port forwarded to the
/// kubeconfig's API server as the session's host sees it (a control plane reaches its own
/// endpoint), with the TLS name still the kubeconfig's. Keep the [`Forward`] alive as long as
/// the client is used.
///
/// [`Forward`]: crate::ssh::forward::Forward
pub async fn client_via_ssh(
    path: &Path,
    session: std::sync::Arc<crate::ssh::Session>,
    connect_timeout: Duration,
) -> Result<(kube::Client, crate::ssh::forward::Forward), ClientError> {
    let cfg = config_from_kubeconfig(path, &ClientOptions::default()).await?;
    let host = cfg
        .cluster_url
        .host()
        .map(strip_brackets)
        .unwrap_or_default();
    let port = cfg.cluster_url.port_u16().unwrap_or(443);
    let fwd = crate::ssh::forward::forward_local(session, host, port)
        .await
        .map_err(|source| ClientError::Forward {
            target: format!("{}:{port}", cfg.cluster_url.host().unwrap_or_default()),
            source,
        })?;
    let opts = ClientOptions {
        server_override: Some(format!("https://{}", fwd.local)),
        context: None,
        connect_timeout: Some(connect_timeout),
    };
    let client = client_from_kubeconfig(path, &opts).await?;
    Ok((client, fwd))
}

/// `[::1]` → `::1`: rustls wants a bare IP address or DNS name.
fn strip_brackets(host: &str) -> String {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned()
}

fn parse_override(url: &str) -> Result<http::Uri, ClientError> {
    let bad = |reason: &str| ClientError::BadOverride {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim();
    let full = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let uri: http::Uri = full
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => {
            return Err(bad(
                "the scheme must be https (or http for a plain local proxy)",
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_accept_host_port_and_urls() {
        let u = parse_override("127.0.0.1:16443").expect("host:port");
        assert_eq!(u.to_string(), "https://127.0.0.1:16443/");
        let u = parse_override("http://127.0.0.1:8001").expect("http");
        assert_eq!(u.scheme_str(), Some("http"));
        assert!(parse_override("ftp://x:1").is_err());
        assert!(parse_override("https://").is_err());
        assert!(parse_override("not a url").is_err());
        assert_eq!(strip_brackets("[fd00::1]"), "fd00::1");
        assert_eq!(strip_brackets("10.0.0.1"), "10.0.0.1");
    }
}
