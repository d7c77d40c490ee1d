//! `kubedrill reset`: undo a cluster on its nodes — `kubeadm reset -f`, then Cilium's and the
//! CNI's leftovers (links, BPF pins, iptables chains, `/etc/cni/net.d`), kubeconfigs and
//! kubedrill's own files. Packages, containerd and sysctls stay (a re-apply reuses them).
//! A phase tree on the same runner as apply: `preflight/connect`, `reset/drain`, `reset/node`,
//! `reset/delete-node`, `reset/local`. Resetting some nodes of a cluster that stays is Kubespray's
//! remove-node: a control plane that is not reset drains each node first and deletes its Node
//! object after, so that the node can join again (kubeadm refuses to join a node whose name a
//! Ready Node already has).

use super::{ApplyError, ApplyOptions, ApplyReport, Input, Reach, Run};
use crate::fleet::{self, Progress};
use crate::inventory::Inventory;
use crate::phase::step::hosts;
use crate::phase::{
    Failure, Group, HostResult, Outcome, Phase, PhaseError, PhaseFuture, Step, Target, Tree,
};
use crate::spec::ClusterSpec;
use crate::ssh::Command;
use crate::ssh::shell::quote;
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

/// Which nodes a reset undoes, and through which control plane the cluster that stays forgets
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The nodes to reset, in inventory order.
    pub nodes: Vec<String>,
    /// A control plane that is not reset (the first in inventory order), when the cluster stays.
    pub via: Option<String>,
}

impl Scope {
    /// `only` (every host when empty) of `inv`.
    pub fn of(inv: &Inventory, only: &[String]) -> Scope {
        let nodes: Vec<String> = inv
            .hosts
            .iter()
            .filter(|h| only.is_empty() || only.contains(&h.name))
            .map(|h| h.name.clone())
            .collect();
        let via = inv
            .control_planes()
            .find(|h| !nodes.contains(&h.name))
            .map(|h| h.name.clone());
        Scope { nodes, via }
    }

    /// The hosts to connect to: the nodes, and the control plane that stays.
    pub fn hosts(&self) -> Vec<String> {
        self.nodes.iter().chain(&self.via).cloned().collect()
    }
}

/// The phases of a reset of `scope`.
pub fn tree<'a>(scope: &Scope) -> Tree<Run<'a>> {
    let through = |action| {
        Box::new(ThroughControlPlane {
            action,
            via: scope.via.clone(),
            nodes: scope.nodes.clone(),
        })
    };
    Tree {
        groups: vec![
            Group {
                name: "preflight",
                title: "Connect to the nodes to reset (and to a control plane that stays)",
                phases: vec![super::phases::connect::Connect::boxed()],
            },
            Group {
                name: "reset",
                title: "Undo the cluster",
                phases: vec![
                    through(ApiAction::Drain),
                    Box::new(Nodes {
                        nodes: scope.nodes.clone(),
                    }),
                    through(ApiAction::DeleteNode),
                    Box::new(Local),
                ],
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
    let scope = Scope::of(inv, only);
    let reach = Reach::Ssh(opts.ssh.clone(), scope.hosts());
    reset_on(inv, spec, opts, &scope, reach, progress).await
}

/// Reset `scope` on nodes reached as `reach` says.
pub async fn reset_on(
    inv: &Inventory,
    spec: &ClusterSpec,
    opts: &ApplyOptions,
    scope: &Scope,
    reach: Reach,
    progress: &Progress,
) -> Result<ApplyReport, ApplyError> {
    super::execute(&tree(scope), "reset", inv, spec, opts, reach, progress).await
}

/// Seconds `kubectl drain` may take per node (evictions wait for graceful termination).
const DRAIN_SECS: u64 = 300;

/// What the cluster that stays does about the nodes being reset.
#[derive(Debug, Clone, Copy)]
enum ApiAction {
    /// `reset/drain`, before their reset.
    Drain,
    /// `reset/delete-node`, after it: their Node objects, so that they can join again.
    DeleteNode,
}

impl ApiAction {
    /// The kubectl arguments after `kubectl`, for the (quoted) node.
    fn kubectl(self, node: &str) -> String {
        match self {
            ApiAction::Drain => format!(
                "drain {node} --ignore-daemonsets --delete-emptydir-data --force --timeout {DRAIN_SECS}s"
            ),
            ApiAction::DeleteNode => format!("delete node {node}"),
        }
    }

    /// The command's label, and the word printed per node acted on.
    fn label(self) -> (&'static str, &'static str) {
        match self {
            ApiAction::Drain => ("kubectl drain", "drained"),
            ApiAction::DeleteNode => ("kubectl delete node", "deleted node"),
        }
    }
}

/// `reset/drain` and `reset/delete-node`: kubectl on a control plane that is not reset, for
/// each node being reset that the API still knows. Skipped when no control plane stays.
struct ThroughControlPlane {
    action: ApiAction,
    via: Option<String>,
    nodes: Vec<String>,
}

impl ThroughControlPlane {
    /// One line printed per node acted on: the phase's outcome is whether any was.
    fn script(&self) -> String {
        let kc = format!("kubectl --kubeconfig {}", super::cluster::ADMIN_CONF);
        let word = self.action.label().1;
        let mut s = String::from("set -e\n");
        for n in &self.nodes {
            let q = quote(n);
            s.push_str(&format!(
                "n=$({kc} get node {q} --ignore-not-found -o name)\nif [ -n \"$n\" ]; then\n{kc} {} >&2\necho \"{word} \"{q}\nfi\n",
                self.action.kubectl(&q)
            ));
        }
        s
    }
}

impl<'a> Phase<Run<'a>> for ThroughControlPlane {
    fn name(&self) -> &str {
        match self.action {
            ApiAction::Drain => "drain",
            ApiAction::DeleteNode => "delete-node",
        }
    }
    fn title(&self) -> String {
        match self.action {
            ApiAction::Drain => "Drain the nodes to reset (from a control plane that stays)",
            ApiAction::DeleteNode => {
                "Delete the reset nodes' Node objects, so that they can join again"
            }
        }
        .into()
    }
    fn unchanged_when(&self) -> &str {
        "the cluster does not know the nodes"
    }
    fn steps(&self, _: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![Step::run(
            Target::Hosts(self.via.iter().cloned().collect()),
            format!("kubectl {}", self.action.kubectl(&self.nodes.join(" "))),
        )])
    }
    fn skip_reason(&self, _: &Run<'a>) -> Option<String> {
        self.via
            .is_none()
            .then(|| "no control plane stays: the cluster goes with its nodes".to_string())
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = Instant::now();
            let Some(via) = &self.via else {
                return Vec::new();
            };
            let label = self.action.label().0;
            let r = match run.hosts.get(via) {
                None => Err(Failure::new(
                    via,
                    name,
                    label,
                    "no connection to this control plane",
                )),
                Some(s) => {
                    let cmd = Command::new(self.script())
                        .privileged()
                        .label(label)
                        .timeout(Duration::from_secs(
                            DRAIN_SECS * self.nodes.len() as u64 + 60,
                        ));
                    match s.exec(&cmd).await {
                        Err(e) => Err(Failure::new(via, name, label, e)),
                        Ok(o) if !o.success() => Err(Failure {
                            status: o.status,
                            ..Failure::new(via, name, label, o.stderr_tail(5))
                        }),
                        Ok(o) if o.stdout_text().trim().is_empty() => Ok(Outcome::Unchanged),
                        Ok(_) => Ok(Outcome::Changed),
                    }
                }
            };
            vec![HostResult::timed(via, r, t)]
        })
    }
}

/// `reset/node`: the reset script on every node to reset.
struct Nodes {
    nodes: Vec<String>,
}

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
            target: hosts(
                input
                    .inv
                    .hosts
                    .iter()
                    .filter(|h| self.nodes.contains(&h.name)),
            ),
            command: "kubeadm reset -f; delete cilium_*/lxc* links, BPF pins, CILIUM/KUBE- iptables rules, /etc/cni/net.d/*, kubedrill's files".into(),
            script: Some(RESET_SCRIPT.into()),
        }])
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let inputs = run
                .hosts
                .iter()
                .filter(|(h, _)| self.nodes.contains(h))
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
        (run.removed.len() < run.input.inv.hosts.len())
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
