//! The seam between phases and nodes: what a phase needs from a node — run a command, write a
//! file — as a trait, implemented by the SSH [`Session`] and by [`fake::FakeHost`], so runners,
//! resume after an interruption and the drill's happy path are tested without VMs (besides the
//! real-VM tests, not instead of them).

pub mod fake;

use crate::ssh::{Command, Output, Session, SshError};
use async_trait::async_trait;
use std::sync::Arc;

/// A node a phase works on.
#[async_trait]
pub trait Host: Send + Sync {
    /// The inventory name.
    fn name(&self) -> &str;
    /// Run a command; a non-zero exit is `Ok` (callers decide), transport problems are errors.
    async fn exec(&self, cmd: &Command) -> Result<Output, SshError>;
    /// Write `data` to `path` with `mode`, atomically.
    async fn upload(
        &self,
        data: &[u8],
        path: &str,
        mode: u32,
        privileged: bool,
    ) -> Result<Output, SshError>;
    /// Close the connection.
    async fn close(&self) {}
}

/// A shared host.
pub type SharedHost = Arc<dyn Host>;

#[async_trait]
impl Host for Session {
    fn name(&self) -> &str {
        &self.destination().name
    }
    async fn exec(&self, cmd: &Command) -> Result<Output, SshError> {
        Session::exec(self, cmd).await
    }
    async fn upload(
        &self,
        data: &[u8],
        path: &str,
        mode: u32,
        privileged: bool,
    ) -> Result<Output, SshError> {
        Session::upload(self, data, path, mode, privileged).await
    }
    async fn close(&self) {
        Session::close(self).await
    }
}
