//! `kubedrill reset`: undo a cluster on its nodes — `kubeadm reset -f`, then Cilium's and the
//! CNI's leftovers (links, BPF pins, iptables chains, `/etc/cni/net.d`), kubeconfigs and
//! kubedrill's own files. Packages, containerd and sysctls stay (a re-apply reuses them).
//! A phase tree on the same runner as apply: `preflight/connect`, `reset/node`, `reset/local`.

use super::{ApplyError, ApplyOptions, ApplyReport, Input, Reach, Run};
use crate::fleet::{self, Progress};
use crate::inventory::Inventory;
use crate::phase::step::hosts;
use crate::phase::{
    Failure, Group, HostResult, Outcome, Phase, PhaseError, PhaseFuture, Step, Target, Tree,
};
use crate::spec::ClusterSpec;
use crate::ssh::Command;
use std::time::{Duration, Instant};

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
# Programs the agent attached to the node's own devices outlive it: XDP (native or generic) and
# its tc clsact hooks. Only hooks whose programs Cilium named (cil_*) are removed. After the pins:
# an XDP program Cilium attached through a bpf_link (1.16+) goes with its pinned link, and
# netlink cannot detach it while the link exists.
for d in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vE '^(lo|cilium_|lxc)'); do
  if ip -d link show dev "$d" 2>/dev/null | grep -qE 'prog/xdp.* name cil_|xdp.*cil_'; then
    ip link set dev "$d" xdp off 2>/dev/null; ip link set dev "$d" xdpgeneric off 2>/dev/null
    echo "XDP program on $d"
  fi
  if tc filter show dev "$d" ingress 2>/dev/null | grep -q 'cil_' || tc filter show dev "$d" egress 2>/dev/null | grep -q 'cil_'; then
    tc qdisc del dev "$d" clsact 2>/dev/null && echo "tc clsact (Cilium) on $d"
  fi
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

/// The phases of a reset.
pub fn tree<'a>() -> Tree<Run<'a>> {
    Tree {
        groups: vec![
            Group {
                name: "preflight",
                title: "Connect to the nodes to reset",
                phases: vec![super::phases::connect::Connect::boxed()],
            },
            Group {
                name: "reset",
                title: "Undo the cluster",
                phases: vec![Box::new(Nodes), Box::new(Local)],
            },
        ],
    }
}

/// Reset the hosts named in `only` (every host when empty), `opts.concurrency` at a time.
pub async fn reset(
    inv: &Inventory,
    spec: &ClusterSpec,
    opts: &ApplyOptions,
    only: &[String],
    progress: &Progress,
) -> Result<ApplyReport, ApplyError> {
    let reach = Reach::Ssh(opts.ssh.clone(), only.to_vec());
    super::execute(&tree(), "reset", inv, spec, opts, reach, progress).await
}

/// `reset/node`: the reset script on every connected node.
struct Nodes;

impl<'a> Phase<Run<'a>> for Nodes {
    fn name(&self) -> &str {
        "node"
    }
    fn title(&self) -> String {
        "kubeadm reset -f, then Cilium and CNI leftovers, on every node".into()
    }
    fn unchanged_when(&self) -> &str {
        "nothing of a cluster is left on the node"
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![Step::Run {
            target: hosts(input.inv.hosts.iter()),
            command: "kubeadm reset -f; delete cilium_*/lxc* links, BPF pins, CILIUM/KUBE- iptables rules, /etc/cni/net.d/*, kubedrill's files".into(),
            script: Some(RESET_SCRIPT.into()),
        }])
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let inputs = run
                .hosts
                .iter()
                .map(|(h, s)| (h.clone(), s.clone()))
                .collect();
            let results = fleet::run(
                name,
                inputs,
                run.opts.concurrency,
                run.progress,
                |v: &Vec<String>| format!("{} removed", v.len()),
                |s, p| async move {
                    p.set("kubeadm reset, CNI and Cilium leftovers");
                    let host = s.name().to_string();
                    let o = s
                        .exec(
                            &Command::new(RESET_SCRIPT)
                                .privileged()
                                .label("kubedrill reset script")
                                .timeout(Duration::from_secs(300)),
                        )
                        .await
                        .map_err(|e| Failure::new(&host, "", "kubedrill reset script", e))?;
                    if !o.success() {
                        return Err(Failure {
                            status: o.status,
                            ..Failure::new(&host, "", "kubedrill reset script", o.stderr_tail(5))
                        });
                    }
                    Ok(o.stdout_text().lines().map(str::to_string).collect())
                },
            )
            .await;
            let mut out = Vec::new();
            for r in results {
                let secs = r.duration.as_secs_f64();
                let result = r.result.map(|removed| {
                    let o = if removed.is_empty() {
                        Outcome::Unchanged
                    } else {
                        Outcome::Changed
                    };
                    run.removed.insert(r.host.clone(), removed);
                    o
                });
                out.push(HostResult {
                    host: r.host,
                    result,
                    secs,
                });
            }
            out
        })
    }
}

/// `reset/local`: the local kubeconfig of a cluster that no longer exists.
struct Local;

impl<'a> Phase<Run<'a>> for Local {
    fn name(&self) -> &str {
        "local"
    }
    fn title(&self) -> String {
        "Remove the fetched kubeconfig (when every node was reset)".into()
    }
    fn unchanged_when(&self) -> &str {
        "there is no local kubeconfig"
    }
    fn steps(&self, _: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![Step::run(
            Target::Local,
            "rm admin.conf (in the cluster's state directory)",
        )])
    }
    fn skip_reason(&self, run: &Run<'a>) -> Option<String> {
        (run.hosts.len() < run.input.inv.hosts.len())
            .then(|| "only some nodes were reset: the cluster may still exist".to_string())
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = Instant::now();
            let path = run.opts.state_dir.join("admin.conf");
            let r = match std::fs::remove_file(&path) {
                Ok(()) => Ok(Outcome::Changed),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::Unchanged),
                Err(e) => Err(Failure::new(
                    "(local)",
                    name,
                    format!("rm {}", path.display()),
                    e,
                )),
            };
            vec![HostResult::timed("(local)", r, t)]
        })
    }
}
