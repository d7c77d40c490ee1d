//! The apply pipeline as an ordered tree of named phases (kubeadm-style names), each with a
//! title, what it would do (the dry run), and every file it would write and command it would run.
//! `kubedrill plan` prints this; `kubedrill apply` will run it.

use crate::inventory::{Host, Inventory};
use crate::render::{RenderError, RenderedFile, Secrets, Templates, cilium, containerd, kubeadm};
use crate::spec::ClusterSpec;
use serde::Serialize;

/// A phase of the pipeline: its name and what it is for.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PhaseDef {
    /// kubeadm-style name, `group/phase`.
    pub name: &'static str,
    /// One-line title.
    pub title: &'static str,
    /// When a re-run leaves the phase alone.
    pub unchanged_when: &'static str,
}

/// Every phase in order. `--skip-phases` and `--only` take these names (or a group prefix).
pub const PHASES: &[PhaseDef] = &[
    PhaseDef {
        name: "preflight/connect",
        title: "Connect to every host over SSH (one connection per host)",
        unchanged_when: "always runs; changes nothing",
    },
    PhaseDef {
        name: "preflight/kernel",
        title: "Gather facts and check each kernel for the requested Cilium features",
        unchanged_when: "always runs; changes nothing",
    },
    PhaseDef {
        name: "node/packages",
        title: "Install kubelet, kubeadm, kubectl (held at the chosen patch) and containerd",
        unchanged_when: "the held versions are already installed",
    },
    PhaseDef {
        name: "node/containerd",
        title: "Configure containerd: systemd cgroups, registry mirrors",
        unchanged_when: "config files already have this content",
    },
    PhaseDef {
        name: "node/kernel-modules",
        title: "Load overlay and br_netfilter, now and at boot",
        unchanged_when: "modules loaded and the boot file matches",
    },
    PhaseDef {
        name: "node/sysctl",
        title: "Enable IP forwarding and bridge netfilter",
        unchanged_when: "the sysctl file matches and values are live",
    },
    PhaseDef {
        name: "node/swap",
        title: "Turn swap off, now and at boot",
        unchanged_when: "no active swap and none in /etc/fstab",
    },
    PhaseDef {
        name: "kubeadm/init",
        title: "kubeadm init on the first control plane, kube-proxy addon skipped",
        unchanged_when: "/etc/kubernetes/admin.conf exists and the API answers",
    },
    PhaseDef {
        name: "kubeadm/join-control-plane",
        title: "Join the other control planes, one at a time",
        unchanged_when: "the node is already registered",
    },
    PhaseDef {
        name: "kubeadm/join-worker",
        title: "Join the workers, in batches of --concurrency",
        unchanged_when: "the node is already registered",
    },
    PhaseDef {
        name: "kubeconfig/fetch",
        title: "Fetch admin.conf to a local kubeconfig (mode 0600)",
        unchanged_when: "the local kubeconfig matches",
    },
    PhaseDef {
        name: "cilium/install",
        title: "Install Cilium with Helm as the kube-proxy replacement",
        unchanged_when: "release `cilium` is deployed with the same chart and values",
    },
    PhaseDef {
        name: "cilium/wait",
        title: "Wait for nodes Ready, Cilium rolled out, no kube-proxy left",
        unchanged_when: "always runs; changes nothing",
    },
    PhaseDef {
        name: "cluster/verify",
        title: "Read each agent's status: KPR, DSR, Maglev, XDP mode in force",
        unchanged_when: "always runs; changes nothing",
    },
];

/// Where a step happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "on", content = "hosts")]
pub enum Target {
    /// On the machine running kubedrill.
    Local,
    /// On these hosts.
    Hosts(Vec<String>),
}

/// One thing a phase does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Step {
    /// Write a file.
    Write {
        /// Where.
        target: Target,
        /// What.
        file: RenderedFile,
    },
    /// Run a command.
    Run {
        /// Where.
        target: Target,
        /// The command line (secrets only ever as file paths).
        command: String,
        /// Only on hosts of this OS family (`deb` or `rpm`), when set.
        #[serde(skip_serializing_if = "Option::is_none")]
        os_family: Option<&'static str>,
    },
    /// Check or wait for something (no change).
    Check {
        /// Where.
        target: Target,
        /// What is checked.
        what: String,
    },
}

/// A phase with its concrete steps for this inventory.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedPhase {
    /// The phase.
    #[serde(flatten)]
    pub def: PhaseDef,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Kubernetes version.
    pub kubernetes: String,
    /// kubeadm config API.
    pub kubeadm_api: &'static str,
    /// Cilium version.
    pub cilium: String,
    /// Control-plane endpoint.
    pub endpoint: String,
    /// Node count.
    pub nodes: usize,
    /// Phases in order.
    pub phases: Vec<PlannedPhase>,
}

fn hosts<'a>(it: impl Iterator<Item = &'a Host>) -> Target {
    Target::Hosts(it.map(|h| h.name.clone()).collect())
}

const MODULES_FILE: &str = "/etc/modules-load.d/kubedrill.conf";
const SYSCTL_FILE: &str = "/etc/sysctl.d/99-kubedrill.conf";

/// Build the plan. Secrets are placeholders: nothing printed or written by `plan` holds one.
pub fn build(spec: &ClusterSpec, inv: &Inventory) -> Result<Plan, RenderError> {
    let t = Templates::load()?;
    let secrets = Secrets::placeholders();
    let all = || hosts(inv.hosts.iter());
    let first = inv.first_control_plane();
    let first_t = Target::Hosts(vec![first.name.clone()]);
    let k = spec.kubernetes;
    let minor = format!("v{}.{}", k.major, k.minor);
    let multi_cp = inv.control_planes().count() > 1;

    let mut phases = Vec::new();
    let mut add = |name: &str, steps: Vec<Step>| {
        if let Some(def) = PHASES.iter().find(|p| p.name == name) {
            phases.push(PlannedPhase { def: *def, steps });
        }
    };

    add("preflight/connect", vec![Step::Check { target: all(), what: "SSH answers, host key matches known_hosts, sudo -n works where ansible_become is set".into() }]);
    add(
        "preflight/kernel",
        vec![Step::Check {
            target: all(),
            what: format!(
                "kernel, kconfig, NIC driver/queues/offloads/MTU against Cilium {} needs (kubedrill check)",
                spec.cilium
            ),
        }],
    );
    add(
        "node/packages",
        vec![
            Step::Run {
                target: all(),
                os_family: Some("deb"),
                command: format!(
                    "curl -fsSL https://pkgs.k8s.io/core:/stable:/{minor}/deb/Release.key | gpg --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg && echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/{minor}/deb/ /' > /etc/apt/sources.list.d/kubernetes.list"
                ),
            },
            Step::Run {
                target: all(),
                os_family: Some("deb"),
                command: format!(
                    "apt-get update && apt-get install -y containerd kubelet={k}-1.1 kubeadm={k}-1.1 kubectl={k}-1.1 && apt-mark hold kubelet kubeadm kubectl"
                ),
            },
            Step::Run {
                target: all(),
                os_family: Some("rpm"),
                command: format!(
                    "printf '[kubernetes]\\nname=Kubernetes\\nbaseurl=https://pkgs.k8s.io/core:/stable:/{minor}/rpm/\\nenabled=1\\ngpgcheck=1\\ngpgkey=https://pkgs.k8s.io/core:/stable:/{minor}/rpm/repodata/repomd.xml.key\\nexclude=kubelet kubeadm kubectl\\n' > /etc/yum.repos.d/kubernetes.repo"
                ),
            },
            Step::Run {
                target: all(),
                os_family: Some("rpm"),
                command: format!(
                    "dnf install -y containerd kubelet-{k} kubeadm-{k} kubectl-{k} --disableexcludes=kubernetes"
                ),
            },
            Step::Run {
                target: all(),
                os_family: None,
                command: "systemctl enable --now kubelet".into(),
            },
        ],
    );
    let mut containerd_steps: Vec<Step> = containerd::files(&t, spec)?
        .into_iter()
        .map(|file| Step::Write {
            target: all(),
            file,
        })
        .collect();
    containerd_steps.push(Step::Run {
        target: all(),
        os_family: None,
        command: "systemctl restart containerd".into(),
    });
    add("node/containerd", containerd_steps);
    add(
        "node/kernel-modules",
        vec![
            Step::Write {
                target: all(),
                file: RenderedFile {
                    path: MODULES_FILE.into(),
                    mode: 0o644,
                    content: "overlay\nbr_netfilter\n".into(),
                    sensitive: false,
                },
            },
            Step::Run {
                target: all(),
                os_family: None,
                command: "modprobe overlay && modprobe br_netfilter".into(),
            },
        ],
    );
    add("node/sysctl", vec![
        Step::Write { target: all(), file: RenderedFile { path: SYSCTL_FILE.into(), mode: 0o644, content: "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n".into(), sensitive: false } },
        Step::Run { target: all(), os_family: None, command: format!("sysctl -p {SYSCTL_FILE}") },
    ]);
    add(
        "node/swap",
        vec![Step::Run {
            target: all(),
            os_family: None,
            command: r"swapoff -a && sed -ri '/\sswap\s/s/^([^#])/#\1/' /etc/fstab".into(),
        }],
    );

    let upload = if multi_cp { " --upload-certs" } else { "" };
    add(
        "kubeadm/init",
        vec![
            Step::Write {
                target: first_t.clone(),
                file: kubeadm::init(&t, spec, inv, &secrets)?,
            },
            Step::Run {
                target: first_t.clone(),
                os_family: None,
                command: format!(
                    "kubeadm init --config {}{upload}",
                    kubeadm::INIT_CONFIG_PATH
                ),
            },
            Step::Run {
                target: first_t.clone(),
                os_family: None,
                command: format!("rm -f {}", kubeadm::INIT_CONFIG_PATH),
            },
        ],
    );
    let join_steps = |hs: Vec<&Host>| -> Result<Vec<Step>, RenderError> {
        let mut steps = Vec::new();
        for h in hs {
            let target = Target::Hosts(vec![h.name.clone()]);
            steps.push(Step::Write {
                target: target.clone(),
                file: kubeadm::join(&t, spec, inv, h, &secrets)?,
            });
            steps.push(Step::Run {
                target: target.clone(),
                os_family: None,
                command: format!(
                    "kubeadm join --config {} && rm -f {}",
                    kubeadm::JOIN_CONFIG_PATH,
                    kubeadm::JOIN_CONFIG_PATH
                ),
            });
        }
        Ok(steps)
    };
    add(
        "kubeadm/join-control-plane",
        join_steps(inv.control_planes().skip(1).collect())?,
    );
    add("kubeadm/join-worker", join_steps(inv.workers().collect())?);
    add(
        "kubeconfig/fetch",
        vec![
            Step::Check {
                target: first_t.clone(),
                what: "read /etc/kubernetes/admin.conf".into(),
            },
            Step::Write {
                target: Target::Local,
                file: RenderedFile {
                    path: format!("{}.kubeconfig", spec.label),
                    mode: 0o600,
                    content: format!(
                        "# admin.conf of {} with server https://{}\n",
                        spec.label, spec.endpoint
                    ),
                    sensitive: true,
                },
            },
        ],
    );
    add(
        "cilium/install",
        vec![
            Step::Write {
                target: first_t.clone(),
                file: cilium::values_file(spec, inv.hosts.len())?,
            },
            Step::Run {
                target: first_t.clone(),
                os_family: None,
                command: format!(
                    "helm upgrade --install cilium cilium/cilium --version {} --namespace kube-system --values {} --kubeconfig /etc/kubernetes/admin.conf",
                    spec.cilium,
                    cilium::VALUES_PATH
                ),
            },
        ],
    );
    add(
        "cilium/wait",
        vec![
            Step::Check {
                target: Target::Local,
                what: format!(
                    "{} nodes Ready; daemonset/cilium and deployment/cilium-operator rolled out",
                    inv.hosts.len()
                ),
            },
            Step::Check {
                target: Target::Local,
                what: "no daemonset/kube-proxy or configmap/kube-proxy in kube-system".into(),
            },
        ],
    );
    add(
        "cluster/verify",
        vec![Step::Check {
            target: all(),
            what: format!(
                "cilium-dbg status --verbose: KubeProxyReplacement True, LB mode {}, algorithm {}, XDP {}",
                spec.cilium_intent.lb_mode,
                spec.cilium_intent.algorithm,
                spec.cilium_intent.acceleration
            ),
        }],
    );

    Ok(Plan {
        kubernetes: k.to_string(),
        kubeadm_api: spec.kubeadm_api.api_version(),
        cilium: spec.cilium.to_string(),
        endpoint: spec.endpoint.to_string(),
        nodes: inv.hosts.len(),
        phases,
    })
}
