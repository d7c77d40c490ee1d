//! Local port forwarding over a session (`ssh -L` without the ssh binary): the Kubernetes API of
//! a control plane becomes reachable on `127.0.0.1:PORT` wherever kubedrill runs, through the
//! host's existing connection.

use super::Session;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running forward; stops when dropped.
#[derive(Debug)]
pub struct Forward {
    /// The local address to connect to.
    pub local: SocketAddr,
    /// Where connections go, as seen from the session's host (`host:port`).
    pub remote: String,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listen on `127.0.0.1:0`; every accepted connection is carried to `host:port` as seen from
/// the session's host (a `direct-tcpip` channel).
pub async fn forward_local(
    session: Arc<Session>,
    host: String,
    port: u16,
) -> std::io::Result<Forward> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let local = listener.local_addr()?;
    let remote = format!("{host}:{port}");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let s = session.clone();
            let host = host.clone();
            tokio::spawn(async move {
                let Ok(ch) = s.tunnel(&host, port).await else {
                    return;
                };
                let mut stream = ch.into_stream();
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
            });
        }
    });
    Ok(Forward {
        local,
        remote,
        task,
    })
}
