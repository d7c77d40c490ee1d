//! `kubedrill reset`: undo a cluster on its nodes — `kubeadm reset -f`, then Cilium's and the
//! CNI's leftovers (links, BPF pins, iptables chains, `/etc/cni/net.d`), kubeconfigs and
//! kubedrill's own files. Packages, containerd and sysctls stay (a re-apply reuses them).

use crate::fleet::{self, Connector, Progress};
use crate::lock::Holder;
use crate::ssh::node_lock::{NODE_LOCK_DIR, NODE_LOCK_GRACE};
use crate::ssh::{Command, HostKeyPolicy, Options, SshError};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The script run on every node (as root). Every step tolerates "already gone", so a reset can
/// be repeated; it prints one line per thing it removed.
pub const RESET_SCRIPT: &str = r#"
if command -v kubeadm >/dev/null 2>&1; then
  if out=$(kubeadm reset -f 2>&1); then echo "kubeadm reset -f"
  else echo "kubeadm reset -f failed:" >&2; echo "$out" | tail -n 5 >&2; exit 1; fi
fi
rm -f /var/lib/kubedrill/kubeadm-init.* /var/lib/kubedrill/kubeadm-join.*
for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(cilium_|lxc)'); do
  ip link delete "$l" 2>/dev/null && echo "link $l"
done
for p in /sys/fs/bpf/tc/globals /sys/fs/bpf/cilium; do
  if [ -d "$p" ] && [ -n "$(ls -A "$p" 2>/dev/null)" ]; then rm -rf "$p"/* && echo "bpf pins under $p"; fi
done
if command -v iptables-save >/dev/null 2>&1 && iptables-save 2>/dev/null | grep -qE 'CILIUM|KUBE-'; then
  iptables-save | grep -vE 'CILIUM|KUBE-' | iptables-restore && echo "iptables CILIUM_*/KUBE-* rules"
fi
if [ -d /etc/cni/net.d ] && [ -n "$(ls -A /etc/cni/net.d 2>/dev/null)" ]; then
  rm -rf /etc/cni/net.d/* && echo "/etc/cni/net.d/*"
fi
for f in /etc/kubernetes/kubedrill /root/.kube/config /var/cache/kubedrill/charts; do
  [ -e "$f" ] && rm -rf "$f" && echo "$f"
done
true
"#;

/// What reset removed on one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReset {
    /// Host.
    pub host: String,
    /// Removed things, one per line of the script's output; or the error.
    pub result: Result<Vec<String>, String>,
}

/// Reset every host (in parallel, `concurrency` at a time).
pub async fn reset(
    inv: &crate::inventory::Inventory,
    host_keys: &crate::check::HostKeySettings,
    only: &[String],
    concurrency: usize,
    progress: &Progress,
) -> Result<Vec<HostReset>, SshError> {
    let policy = Arc::new(HostKeyPolicy::load(&host_keys.file, host_keys.mode)?);
    let opts = Options::new(policy);
    let (dests, bastion) = crate::check::destinations(inv);
    let connector = Connector::new(Arc::new(opts), bastion);
    let inputs = dests
        .into_iter()
        .filter(|d| only.is_empty() || only.contains(&d.name))
        .map(|d| (d.name.clone(), d))
        .collect();
    let holder = Holder::current();
    let results = fleet::run(
        "resetting",
        inputs,
        concurrency,
        progress,
        |v: &Vec<String>| format!("{} removed", v.len()),
        |dest, p| {
            let c = connector.clone();
            let holder = holder.clone();
            async move {
                let s = c.connect(dest).await.map_err(|e| e.to_string())?;
                // Not under another kubedrill's apply, reset or drill on this node.
                let lock = s
                    .lock_node_within(NODE_LOCK_DIR, &holder, NODE_LOCK_GRACE)
                    .await
                    .map_err(|e| e.to_string())?;
                p.set("kubeadm reset, CNI and Cilium leftovers");
                let o = s
                    .exec(
                        &Command::new(RESET_SCRIPT)
                            .privileged()
                            .label("kubedrill reset script")
                            .timeout(Duration::from_secs(300)),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                lock.release().await;
                s.close().await;
                if !o.success() {
                    return Err(format!("reset script failed: {}", o.stderr_tail(5)));
                }
                Ok(o.stdout_text().lines().map(str::to_string).collect())
            }
        },
    )
    .await;
    Ok(results
        .into_iter()
        .map(|r| HostReset {
            host: r.host,
            result: r.result,
        })
        .collect())
}
