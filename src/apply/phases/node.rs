//! The node phases: packages, containerd, kernel modules, sysctls, swap, a lab's agent CPU
//! weight — each a
//! [`HostChange`](crate::apply::HostChange) made on every host (built in [`crate::apply::node`]).

use crate::apply::{HostChange, Input, Run, node};
use crate::phase::{Phase, PhaseError, PhaseFuture, Step, step::hosts};

/// A phase that makes one change on every host.
struct OnEveryHost {
    name: &'static str,
    title: &'static str,
    unchanged_when: &'static str,
    change: fn(&Input<'_>) -> Result<HostChange, PhaseError>,
}

impl<'a> Phase<Run<'a>> for OnEveryHost {
    fn name(&self) -> &str {
        self.name
    }
    fn title(&self) -> String {
        self.title.into()
    }
    fn unchanged_when(&self) -> &str {
        self.unchanged_when
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok((self.change)(input)?.steps(hosts(input.inv.hosts.iter())))
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            match (self.change)(&run.input) {
                Ok(c) => run.on_all(name, c).await,
                Err(e) => crate::apply::fail_all(name, "render", e),
            }
        })
    }
}

/// `node/packages` … `node/agent-cpu-weight`.
pub fn phases<'a>() -> Vec<Box<dyn Phase<Run<'a>>>> {
    vec![
        Box::new(OnEveryHost {
            name: "packages",
            title: "Install kubelet, kubeadm, kubectl (held at the chosen patch) and containerd",
            unchanged_when: "the held versions are already installed",
            change: |i| node::packages(&i.templates, i.spec, i.source),
        }),
        Box::new(OnEveryHost {
            name: "containerd",
            title: "Configure containerd: systemd cgroups, registry mirrors, bundle images",
            unchanged_when: "config files already have this content and the images are imported",
            change: |i| Ok(node::containerd(&i.templates, i.spec, i.source)?),
        }),
        Box::new(OnEveryHost {
            name: "kernel-modules",
            title: "Load overlay and br_netfilter, now and at boot",
            unchanged_when: "modules loaded and the boot file matches",
            change: |_| Ok(node::kernel_modules()),
        }),
        Box::new(OnEveryHost {
            name: "sysctl",
            title: "Enable IP forwarding and bridge netfilter",
            unchanged_when: "the sysctl file matches and values are live",
            change: |_| Ok(node::sysctl()),
        }),
        Box::new(OnEveryHost {
            name: "swap",
            title: "Turn swap off, now and at boot",
            unchanged_when: "no active swap and none in /etc/fstab",
            change: |_| Ok(node::swap()),
        }),
        Box::new(AgentCpuWeight),
    ]
}

/// `node/agent-cpu-weight`: only where the inventory sets `kubedrill_cilium_agent_cpu_weight`
/// (labs under TCG do; production inventories normally do not, and then it is skipped).
struct AgentCpuWeight;

impl AgentCpuWeight {
    /// The change, when the inventory asks for it.
    fn change(input: &Input<'_>) -> Option<HostChange> {
        input
            .spec
            .cilium_agent_cpu_weight
            .map(node::agent_cpu_weight)
    }
}

impl<'a> Phase<Run<'a>> for AgentCpuWeight {
    fn name(&self) -> &str {
        "agent-cpu-weight"
    }
    fn title(&self) -> String {
        "Keep the Cilium agent pods at the inventory's CPU weight (a lab adjustment)".into()
    }
    fn unchanged_when(&self) -> &str {
        "the service has this weight and runs"
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(Self::change(input)
            .map(|c| c.steps(hosts(input.inv.hosts.iter())))
            .unwrap_or_default())
    }
    fn skip_reason(&self, run: &Run<'a>) -> Option<String> {
        Self::change(&run.input)
            .is_none()
            .then(|| "kubedrill_cilium_agent_cpu_weight is not set".to_string())
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            // Never reached without the variable: the runner skips the phase first.
            match Self::change(&run.input) {
                Some(c) => run.on_all(name, c).await,
                None => Vec::new(),
            }
        })
    }
}
