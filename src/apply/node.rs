//! The node phases: packages, containerd, kernel modules, sysctls, swap, and a lab's agent CPU
//! weight. Each is a
//! [`HostChange`]: a precondition, a check that says "already done", files, and a script.

use super::HostChange;
use crate::bundle::{Bundle, KUBERNETES_PACKAGES};
use crate::render::{RenderError, RenderedFile, Templates, containerd};
use crate::spec::ClusterSpec;
use crate::ssh::shell::quote;

/// Where a bundle's packages go on a node (a local apt repository).
pub const BUNDLE_DEBS: &str = "/var/cache/kubedrill/bundle/debs";
/// The apt source that points at it.
pub const BUNDLE_LIST: &str = "/etc/apt/sources.list.d/kubedrill-bundle.list";
/// Kernel modules loaded at boot.
pub const MODULES_FILE: &str = "/etc/modules-load.d/kubedrill.conf";
/// Sysctls.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/99-kubedrill.conf";
/// The loop that keeps the Cilium agent's pod at a CPU weight (a lab adjustment).
pub const AGENT_WEIGHT_SCRIPT: &str = "/usr/local/libexec/kubedrill-agent-cpu-weight";
/// Its systemd service.
pub const AGENT_WEIGHT_UNIT: &str = "kubedrill-agent-cpu-weight.service";

/// Every 5 s, the pod cgroup of each `cilium-agent` process gets the weight: the clang and llc
/// the agent runs are in the same pod, and a new agent pod (an upgrade, a restart) is caught
/// within seconds — long before its first compile could hit Cilium's 5-minute limit. Shell
/// builtins only between scans of `/proc`, which run while no agent is known, when one went,
/// and once a minute: the loop with `pgrep`, `sed` and `cat` every 5 s cost the lab's starved
/// control plane 128 s of CPU in its first 46 minutes (4.6 % of a vCPU).
/// `KUBEDRILL_PROC`, `KUBEDRILL_CGROUP` and `KUBEDRILL_ONCE` are for its test.
const AGENT_WEIGHT_LOOP: &str = r#"#!/bin/sh
# Written by kubedrill (node/agent-cpu-weight): a lab adjustment, set by
# kubedrill_cilium_agent_cpu_weight. Keeps each Cilium agent pod at CPU weight $1.
weight="$1"
proc="${KUBEDRILL_PROC:-/proc}"
cgroot="${KUBEDRILL_CGROUP:-/sys/fs/cgroup}"
agents=""
tick=0
while :; do
  scan=$((tick % 12 == 0))
  [ -n "$agents" ] || scan=1
  for pid in $agents; do [ -d "$proc/$pid" ] || scan=1; done
  if [ "$scan" = 1 ]; then
    agents=""
    for d in "$proc"/[0-9]*; do
      c=""
      { read -r c < "$d/comm"; } 2>/dev/null
      [ "$c" = cilium-agent ] && agents="$agents ${d##*/}"
    done
  fi
  for pid in $agents; do
    line=""
    { read -r line < "$proc/$pid/cgroup"; } 2>/dev/null
    cg=${line#0::}
    case "$cg" in */kubepods*/*) ;; *) continue ;; esac
    f="$cgroot${cg%/*}/cpu.weight"
    cur=""
    { read -r cur < "$f"; } 2>/dev/null
    if [ -w "$f" ] && [ "$cur" != "$weight" ]; then
      echo "$weight" > "$f" && echo "pod ${cg%/*}: cpu.weight $weight"
    fi
  done
  [ -z "${KUBEDRILL_ONCE:-}" ] || exit 0
  tick=$((tick + 1))
  sleep 5
done
"#;

/// `node/agent-cpu-weight`: the loop above as a service, with the inventory's weight.
pub fn agent_cpu_weight(weight: u32) -> HostChange {
    let unit = format!(
        "# Written by kubedrill (node/agent-cpu-weight): a lab adjustment.\n\
         [Unit]\nDescription=kubedrill lab adjustment: Cilium agent pods at CPU weight {weight}\n\
         After=containerd.service\n\n\
         [Service]\nExecStart={AGENT_WEIGHT_SCRIPT} {weight}\nRestart=always\nRestartSec=5\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    HostChange {
        precondition: Some((
            "[ -f /sys/fs/cgroup/cgroup.controllers ]".into(),
            "the node does not use the unified cgroup hierarchy (cgroup v2), whose cpu.weight this sets".into(),
        )),
        check: format!(
            "systemctl is-active --quiet {AGENT_WEIGHT_UNIT} || {{ echo '{AGENT_WEIGHT_UNIT} is not running'; exit 1; }}\n\
             systemctl is-enabled --quiet {AGENT_WEIGHT_UNIT} || {{ echo '{AGENT_WEIGHT_UNIT} is not enabled'; exit 1; }}\n"
        ),
        files: vec![
            RenderedFile {
                path: AGENT_WEIGHT_SCRIPT.into(),
                mode: 0o755,
                content: AGENT_WEIGHT_LOOP.into(),
                sensitive: false,
            },
            RenderedFile {
                path: format!("/etc/systemd/system/{AGENT_WEIGHT_UNIT}"),
                mode: 0o644,
                content: unit,
                sensitive: false,
            },
        ],
        uploads: Vec::new(),
        apply: format!(
            "set -e\nsystemctl daemon-reload\nsystemctl enable --quiet {AGENT_WEIGHT_UNIT}\nsystemctl restart {AGENT_WEIGHT_UNIT}\n"
        ),
        apply_label: format!("systemctl enable, restart {AGENT_WEIGHT_UNIT}"),
        timeout_secs: 60,
        error_lines: 0,
    }
}

/// The packages a node gets and where they come from.
#[derive(Debug, Clone)]
pub enum PackageSource {
    /// An offline bundle, uploaded to each node.
    Bundle(Box<Bundle>),
    /// The distribution's repositories and `pkgs.k8s.io` (the node needs the internet).
    Online,
}

/// `node/packages`. A bundle whose Kubernetes is not the inventory's is refused before anything
/// is installed.
pub fn packages(
    t: &Templates,
    spec: &ClusterSpec,
    source: &PackageSource,
) -> Result<HostChange, crate::phase::PhaseError> {
    match source {
        PackageSource::Bundle(b) => {
            if let Some(v) = b.kubernetes_version()
                && v != spec.kubernetes.to_string()
            {
                return Err(crate::phase::PhaseError::Refused(format!(
                    "the bundle {} carries Kubernetes {v}, the inventory asks for {} (kube_version): build a bundle for {}",
                    b.dir.display(),
                    spec.kubernetes,
                    spec.kubernetes
                )));
            }
            let mut c = bundle_packages(b);
            if let Some((v, bins)) = b.kubernetes_binaries() {
                add_binaries(&mut c, t, b, v, &bins)?;
            }
            Ok(c)
        }
        PackageSource::Online => Ok(online_packages(spec)),
    }
}

/// kubelet, kubeadm, kubectl and crictl from the bundle's release binaries, with the unit and
/// drop-in the official packages ship; checked by the versions they report.
fn add_binaries(
    c: &mut HostChange,
    t: &Templates,
    b: &Bundle,
    version: &str,
    bins: &[&crate::bundle::Artifact],
) -> Result<(), RenderError> {
    use crate::render::kubelet::{self, BIN_DIR};
    for a in bins {
        c.uploads.push(super::Upload {
            local: b.dir.join(&a.file),
            remote: format!("{BIN_DIR}/{}", file_name(&a.file)),
            sha256: a.sha256.clone(),
            mode: 0o755,
        });
    }
    c.files.extend(kubelet::files(t)?);
    c.check.push_str(&binaries_check(version));
    // The uploads are checked by SHA-256 before `apply` runs; this makes systemd see the unit.
    c.apply.push_str(
        "systemctl daemon-reload
systemctl enable kubelet >/dev/null 2>&1 || true
",
    );
    c.apply_label.push_str(&format!(
        "; kubelet/kubeadm/kubectl/crictl {version} (release binaries) with kubelet's unit"
    ));
    Ok(())
}

/// Exits non-zero (saying which) unless kubeadm, kubelet and kubectl report `v<version>`,
/// crictl is installed, and the files' modes are executable.
fn binaries_check(version: &str) -> String {
    let want = format!("v{version}");
    let mut s = String::new();
    for (tool, cmd) in [
        ("kubeadm", "kubeadm version -o short"),
        ("kubelet", "kubelet --version | awk '{print $2}'"),
        (
            "kubectl",
            "kubectl version --client | awk '/Client Version/ {print $3}'",
        ),
    ] {
        s.push_str(&format!(
            "v=$({cmd} 2>/dev/null || true)\n[ \"$v\" = {want} ] || {{ echo \"{tool}: want {want}, have ${{v:-nothing}}\"; exit 1; }}\n"
        ));
    }
    s.push_str("command -v crictl >/dev/null || { echo 'crictl: not installed'; exit 1; }\n");
    s.push_str(
        "systemctl is-enabled --quiet kubelet || { echo 'kubelet: not enabled'; exit 1; }\n",
    );
    s
}

fn bundle_packages(b: &Bundle) -> HostChange {
    let wanted: Vec<String> = b
        .requested()
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    let names: Vec<&str> = b.requested().iter().map(|p| p.name.as_str()).collect();
    let holds: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| KUBERNETES_PACKAGES.contains(n))
        .collect();
    let mut uploads: Vec<super::Upload> = b
        .manifest
        .packages
        .iter()
        .map(|p| super::Upload {
            local: b.dir.join(&p.artifact.file),
            remote: format!("{BUNDLE_DEBS}/{}", file_name(&p.artifact.file)),
            sha256: p.artifact.sha256.clone(),
            mode: 0o644,
        })
        .collect();
    if let Ok((_, sha)) = crate::bundle::hash_file(&b.dir.join("debs/Packages")) {
        uploads.push(super::Upload {
            local: b.dir.join("debs/Packages"),
            remote: format!("{BUNDLE_DEBS}/Packages"),
            sha256: sha,
            mode: 0o644,
        });
    }
    let apt_only = format!(
        "-o Dir::Etc::SourceList={BUNDLE_LIST} -o Dir::Etc::SourceParts=- -o APT::Get::List-Cleanup=0"
    );
    let mut apply = format!(
        "set -e\nexport DEBIAN_FRONTEND=noninteractive\n\
         echo 'deb [trusted=yes] file:{BUNDLE_DEBS} ./' > {BUNDLE_LIST}\n\
         apt-get {apt_only} -qq update\n\
         apt-get {apt_only} install -y -q --no-install-recommends --allow-downgrades --allow-change-held-packages {}\n",
        wanted.join(" ")
    );
    if !holds.is_empty() {
        apply.push_str(&format!("apt-mark hold {} >/dev/null\n", holds.join(" ")));
    }
    if names.contains(&"kubelet") {
        apply.push_str("systemctl enable kubelet >/dev/null 2>&1 || true\n");
    }
    HostChange {
        precondition: Some((
            "command -v apt-get >/dev/null".into(),
            "this bundle holds .deb packages, and the node has no apt-get (an rpm-family node needs an rpm bundle)".into(),
        )),
        check: installed_check(&b.requested().iter().map(|p| (p.name.clone(), p.version.clone())).collect::<Vec<_>>()),
        files: Vec::new(),
        uploads,
        apply,
        apply_label: format!("apt-get install {} (from the bundle)", names.join(" ")),
        timeout_secs: 900,
        error_lines: 0,
    }
}

/// A check that every `(package, version)` is installed at exactly that version.
fn installed_check(pkgs: &[(String, String)]) -> String {
    let mut s = String::from("ok=0\n");
    for (n, v) in pkgs {
        s.push_str(&format!(
            "got=$(dpkg-query -W -f='${{Version}} ${{db:Status-Abbrev}}' {n} 2>/dev/null || true)\n\
             case \"$got\" in {v}\\ ii*) ;; *) echo \"{n}: want {v}, have ${{got:-nothing}}\"; ok=1;; esac\n",
            n = quote(n),
            v = glob_quote(v),
        ));
    }
    // Not `exit $ok`: more checks may follow (the release binaries).
    s.push_str("[ $ok = 0 ] || exit 1\n");
    s
}

/// A `case` pattern matching the literal string.
fn glob_quote(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn online_packages(spec: &ClusterSpec) -> HostChange {
    let k = spec.kubernetes;
    let minor = format!("v{}.{}", k.major, k.minor);
    let apply = format!(
        "set -e\n\
         if command -v apt-get >/dev/null; then\n\
         export DEBIAN_FRONTEND=noninteractive\n\
         apt-get -qq update && apt-get install -y -q curl gpg ca-certificates >/dev/null\n\
         mkdir -p /etc/apt/keyrings\n\
         curl -fsSL --max-time 30 https://pkgs.k8s.io/core:/stable:/{minor}/deb/Release.key | gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg\n\
         echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/{minor}/deb/ /' > /etc/apt/sources.list.d/kubernetes.list\n\
         apt-get -qq update\n\
         apt-get install -y -q --allow-downgrades --allow-change-held-packages containerd conntrack socat ethtool kubelet={k}-1.1 kubeadm={k}-1.1 kubectl={k}-1.1\n\
         apt-mark hold kubelet kubeadm kubectl >/dev/null\n\
         else\n\
         printf '[kubernetes]\\nname=Kubernetes\\nbaseurl=https://pkgs.k8s.io/core:/stable:/{minor}/rpm/\\nenabled=1\\ngpgcheck=1\\ngpgkey=https://pkgs.k8s.io/core:/stable:/{minor}/rpm/repodata/repomd.xml.key\\nexclude=kubelet kubeadm kubectl\\n' > /etc/yum.repos.d/kubernetes.repo\n\
         dnf install -y containerd conntrack-tools socat ethtool kubelet-{k} kubeadm-{k} kubectl-{k} --disableexcludes=kubernetes\n\
         fi\n\
         systemctl enable kubelet >/dev/null 2>&1 || true\n"
    );
    let check = format!(
        "v=$(kubeadm version -o short 2>/dev/null || true)\n\
         [ \"$v\" = v{k} ] || {{ echo \"kubeadm: want v{k}, have ${{v:-nothing}}\"; exit 1; }}\n\
         v=$(kubelet --version 2>/dev/null | awk '{{print $2}}')\n\
         [ \"$v\" = v{k} ] || {{ echo \"kubelet: want v{k}, have ${{v:-nothing}}\"; exit 1; }}\n\
         command -v containerd >/dev/null || {{ echo 'containerd: not installed'; exit 1; }}\n"
    );
    HostChange {
        precondition: Some((
            "curl -fsS --max-time 10 -o /dev/null https://pkgs.k8s.io/ 2>&1 || wget -q -T 10 -O /dev/null https://pkgs.k8s.io/ 2>&1".into(),
            "no package source: the node cannot reach pkgs.k8s.io and no --bundle was given. Build a bundle on a connected machine (`kubedrill bundle build --kubernetes VERSION ...`) and pass `--bundle DIR`".into(),
        )),
        check,
        files: Vec::new(),
        uploads: Vec::new(),
        apply,
        apply_label: format!("install kubelet/kubeadm/kubectl {k} from pkgs.k8s.io and containerd"),
        timeout_secs: 900,
        error_lines: 0,
    }
}

pub(crate) fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Where a bundle's image tarballs go on a node, and the marks of the ones imported.
pub const BUNDLE_IMAGES: &str = "/var/cache/kubedrill/bundle/images";
/// One empty file per imported tarball, named by its SHA-256.
pub const IMPORTED_MARKS: &str = "/var/lib/kubedrill/images-imported";

/// `node/containerd`: the rendered config and registry mirrors, containerd restarted and
/// answering, and a bundle's image tarballs imported (`ctr -n k8s.io images import`, once per
/// tarball, remembered by its SHA-256).
pub fn containerd(
    t: &Templates,
    spec: &ClusterSpec,
    source: &PackageSource,
) -> Result<HostChange, RenderError> {
    let files = containerd::files(t, spec)?;
    let images: Vec<&crate::bundle::Artifact> = match source {
        PackageSource::Bundle(b) => b.manifest.images.iter().collect(),
        PackageSource::Online => Vec::new(),
    };
    let mut check = String::from(
        "systemctl is-active --quiet containerd || { echo 'containerd is not running'; exit 1; }\n",
    );
    let mut apply = String::from(
        "set -e\nsystemctl enable containerd >/dev/null 2>&1 || true\nsystemctl restart containerd\n\
         i=0; until ctr version >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 60 ] || { echo 'containerd did not answer within 60 s' >&2; journalctl -u containerd -n 20 --no-pager >&2 || true; exit 1; }; sleep 1; done\n",
    );
    let mut uploads = Vec::new();
    if let PackageSource::Bundle(b) = source {
        let i = image_imports(&b.dir, &images);
        check.push_str(&i.check);
        apply.push_str(&i.apply);
        uploads = i.uploads;
    }
    Ok(HostChange {
        precondition: Some((
            "command -v containerd >/dev/null".into(),
            "containerd is not installed (node/packages installs it; run without --skip-phases node/packages, or install it)".into(),
        )),
        check,
        files,
        uploads,
        apply,
        apply_label: if images.is_empty() {
            "systemctl restart containerd".into()
        } else {
            format!("systemctl restart containerd; ctr images import ({} tarballs)", images.len())
        },
        timeout_secs: import_timeout_secs(images.iter().map(|a| a.size)),
        error_lines: 0,
    })
}

/// A bundle's image tarballs on a node: uploaded to [`BUNDLE_IMAGES`], imported into
/// containerd's `k8s.io` namespace once each (remembered by SHA-256 under [`IMPORTED_MARKS`]).
pub struct ImageImports {
    /// Exits non-zero (naming it) while a tarball is not imported.
    pub check: String,
    /// Imports what is not yet imported.
    pub apply: String,
    /// The tarballs.
    pub uploads: Vec<super::Upload>,
}

/// [`ImageImports`] of `images` from the bundle at `dir` (`node/containerd`, and a drill's
/// Kubernetes target).
pub fn image_imports(dir: &std::path::Path, images: &[&crate::bundle::Artifact]) -> ImageImports {
    let mut i = ImageImports {
        check: String::new(),
        apply: String::new(),
        uploads: Vec::new(),
    };
    if !images.is_empty() {
        i.apply.push_str(&format!("mkdir -p {IMPORTED_MARKS}\n"));
    }
    for a in images {
        let remote = format!("{BUNDLE_IMAGES}/{}", file_name(&a.file));
        let mark = format!("{IMPORTED_MARKS}/{}", a.sha256);
        i.check.push_str(&format!(
            "[ -f {mark} ] || {{ echo '{} not imported'; exit 1; }}\n",
            file_name(&a.file).replace('\'', "")
        ));
        i.apply.push_str(&format!(
            "if [ ! -f {mark} ]; then ctr -n k8s.io images import {} >/dev/null && touch {mark}; fi\n",
            quote(&remote)
        ));
        i.uploads.push(super::Upload {
            local: dir.join(&a.file),
            remote,
            sha256: a.sha256.clone(),
            mode: 0o644,
        });
    }
    i
}

/// Time allowed for restarting containerd and importing the image tarballs: 10 minutes, plus
/// 4 s per MiB of tarball. `ctr import` decompresses and unpacks every layer; a Cilium agent
/// image (≈300 MB of gzip, ≈1 GB unpacked) took ≈10 minutes on a lab VM under TCG emulation.
pub fn import_timeout_secs(sizes: impl Iterator<Item = u64>) -> u64 {
    600 + sizes.map(|b| b.div_ceil(1 << 20)).sum::<u64>() * 4
}

/// `node/kernel-modules`: overlay and br_netfilter, now and at boot.
pub fn kernel_modules() -> HostChange {
    HostChange {
        precondition: None,
        check: "for m in overlay br_netfilter; do [ -d /sys/module/$m ] || { echo \"$m is not loaded\"; exit 1; }; done\n".into(),
        files: vec![RenderedFile {
            path: MODULES_FILE.into(),
            mode: 0o644,
            content: "overlay\nbr_netfilter\n".into(),
            sensitive: false,
        }],
        uploads: Vec::new(),
        apply: "set -e\nmodprobe overlay\nmodprobe br_netfilter\n".into(),
        apply_label: "modprobe overlay br_netfilter".into(),
        timeout_secs: 60,
        error_lines: 0,
    }
}

const SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
];

/// `node/sysctl`: forwarding and bridge netfilter, live and persistent.
pub fn sysctl() -> HostChange {
    let content: String = SYSCTLS
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect();
    let check: String = SYSCTLS
        .iter()
        .map(|(k, v)| {
            format!(
                "[ \"$(sysctl -n {k} 2>/dev/null)\" = {v} ] || {{ echo \"{k} is $(sysctl -n {k} 2>/dev/null || echo unset), want {v}\"; exit 1; }}\n"
            )
        })
        .collect();
    HostChange {
        precondition: Some((
            "[ -d /sys/module/br_netfilter ]".into(),
            "br_netfilter is not loaded, so the bridge sysctls do not exist (node/kernel-modules loads it)".into(),
        )),
        check,
        files: vec![RenderedFile {
            path: SYSCTL_FILE.into(),
            mode: 0o644,
            content,
            sensitive: false,
        }],
        uploads: Vec::new(),
        apply: format!("sysctl -q -p {SYSCTL_FILE}\n"),
        apply_label: format!("sysctl -p {SYSCTL_FILE}"),
        timeout_secs: 60,
        error_lines: 0,
    }
}

/// `node/swap`: swap off now, and no swap line active in /etc/fstab.
pub fn swap() -> HostChange {
    HostChange {
        precondition: None,
        check: "[ -z \"$(swapon --noheadings --show 2>/dev/null)\" ] || { echo 'swap is on'; exit 1; }\n\
                ! grep -Eq '^[^#]\\S*\\s+\\S+\\s+swap\\s' /etc/fstab || { echo '/etc/fstab has a swap line'; exit 1; }\n".into(),
        files: Vec::new(),
        uploads: Vec::new(),
        apply: "set -e\nswapoff -a\nsed -ri 's/^([^#]\\S*\\s+\\S+\\s+swap\\s)/# kubedrill: \\1/' /etc/fstab\n".into(),
        apply_label: "swapoff -a; comment out swap in /etc/fstab".into(),
        timeout_secs: 120,
        error_lines: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_patterns_are_literal() {
        assert_eq!(glob_quote("1.6.20~ds1-1+deb12u3"), "1.6.20\\~ds1-1+deb12u3");
        let c = installed_check(&[("containerd".into(), "1.6.20~ds1-1".into())]);
        assert!(c.contains("case \"$got\" in 1.6.20\\~ds1-1\\ ii*)"), "{c}");
    }

    #[test]
    fn the_agent_weight_loop_sets_the_pod_cgroup_of_each_agent() {
        let c = agent_cpu_weight(100);
        let unit = &c.files[1];
        assert!(unit.path.ends_with(AGENT_WEIGHT_UNIT), "{}", unit.path);
        assert!(
            unit.content
                .contains(&format!("ExecStart={AGENT_WEIGHT_SCRIPT} 100\n")),
            "{}",
            unit.content
        );
        assert_eq!(
            (c.files[0].path.as_str(), c.files[0].mode),
            (AGENT_WEIGHT_SCRIPT, 0o755)
        );
        assert!(c.apply.contains("systemctl restart"), "{}", c.apply);
    }

    /// The loop itself, run by `sh` against a fake `/proc` and `/sys/fs/cgroup`: the path
    /// arithmetic (container scope -> pod slice) and finding the agent among other processes
    /// by its `comm` are what matter, and they cannot be seen by reading the script.
    #[test]
    fn the_agent_weight_loop_writes_the_pod_slice_not_the_container_scope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let pod = |p: &str| {
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{p}.slice")
        };
        for (pid, comm, p) in [("42", "cilium-agent", "X"), ("7", "etcd", "Y")] {
            let slice = root.join("cg").join(pod(p));
            std::fs::create_dir_all(slice.join("cri-containerd-1.scope")).expect("cgroup dirs");
            std::fs::write(slice.join("cpu.weight"), "20\n").expect("weight");
            let proc = root.join("proc").join(pid);
            std::fs::create_dir_all(&proc).expect("proc");
            std::fs::write(proc.join("comm"), format!("{comm}\n")).expect("comm");
            std::fs::write(
                proc.join("cgroup"),
                format!("0::/{}/cri-containerd-1.scope\n", pod(p)),
            )
            .expect("cgroup file");
        }
        // A process that is gone between the scan and the read, as on a real node.
        std::fs::create_dir_all(root.join("proc/99")).expect("proc");
        let pass = || {
            let out = std::process::Command::new("sh")
                .args(["-c", AGENT_WEIGHT_LOOP, "loop", "100"])
                .env("KUBEDRILL_PROC", root.join("proc"))
                .env("KUBEDRILL_CGROUP", root.join("cg"))
                .env("KUBEDRILL_ONCE", "1")
                .output()
                .expect("sh");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let said = pass();
        let weight = |p: &str| {
            std::fs::read_to_string(root.join("cg").join(pod(p)).join("cpu.weight"))
                .expect("weight")
                .trim()
                .to_owned()
        };
        assert_eq!((weight("X").as_str(), weight("Y").as_str()), ("100", "20"));
        assert_eq!(said, format!("pod /{}: cpu.weight 100\n", pod("X")));
        // Already there: nothing written, nothing said.
        assert_eq!(pass(), "");
    }

    #[test]
    fn sysctl_check_names_every_key() {
        let h = sysctl();
        for (k, _) in SYSCTLS {
            assert!(h.check.contains(k));
            assert!(h.files[0].content.contains(k));
        }
    }
}
