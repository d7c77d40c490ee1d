//! `lab up`, `down`, `ls`, `snapshot`, `reset`: the lab's life on a libvirt hypervisor.
//!
//! `up` records the lab instance before touching libvirt and after every object it creates, so a
//! failure at any point leaves something `down` can remove — and only that.

use super::accel::{self, HostVirt};
use super::definition::{Lab, VmRole};
use super::hypervisor::{Hypervisor, HypervisorError, Teardown};
use super::seed;
use super::state::{self, LabState, ObjRef};
use super::storage;
use super::xml::{self, Boot, Instance, VmFiles};
use crate::fleet::{self, Connector, Progress};
use crate::images::{ImageCache, Source};
use crate::render::{RenderError, Templates};
use crate::ssh::{Command, Destination, HostKeyMode, HostKeyPolicy, Options, SshError};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Host memory QEMU needs beyond the guest's own, per VM (TCG measured 570–800 MiB for 1 GiB
/// guests, so guest size + this is a safe bound).
pub const QEMU_OVERHEAD_MIB: u64 = 256;

/// Lab lifecycle failures.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// libvirt.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// Templates.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// No usable image.
    #[error(
        "image `{0}` is not in the cache: run `kubedrill image build {0}` (offline, Debian 12) or `kubedrill image pull {0}`"
    )]
    NoImage(String),
    /// Not enough memory; nothing was created.
    #[error(
        "not enough memory for lab `{lab}`: {vms} VMs need about {need} MiB ({guest} MiB guests + {QEMU_OVERHEAD_MIB} MiB QEMU each), the hypervisor has {free} MiB available. Nothing was created; shrink `sizing` or free memory"
    )]
    Memory {
        /// Lab.
        lab: String,
        /// VM count.
        vms: usize,
        /// Guest memory.
        guest: u64,
        /// Needed.
        need: u64,
        /// Available.
        free: u64,
    },
    /// Already up.
    #[error(
        "lab `{lab}` is already up (instance {id}, created {created}); `kubedrill lab down {lab}` first"
    )]
    AlreadyUp {
        /// Lab.
        lab: String,
        /// Instance id.
        id: String,
        /// When.
        created: String,
    },
    /// No record of the lab.
    #[error("lab `{0}` is not up here (no state in {1})")]
    NotUp(String, PathBuf),
    /// Acceleration.
    #[error("{0}")]
    Accel(String),
    /// A local step (files, tools).
    #[error("{step}: {message}")]
    Local {
        /// Step.
        step: String,
        /// Why.
        message: String,
    },
    /// A key or a seed ISO.
    #[error("{step}")]
    Seed {
        /// Step.
        step: &'static str,
        /// Why.
        #[source]
        source: super::seed::SeedError,
    },
    /// VMs that never answered SSH.
    #[error("{} VM(s) did not answer SSH: {}", .0.len(), .0.join("; "))]
    NotReady(Vec<String>),
    /// Teardown left objects.
    #[error("teardown left: {}", .0.iter().map(|(n, w)| format!("{n} ({w})")).collect::<Vec<_>>().join("; "))]
    Leftovers(Vec<(String, String)>),
}

fn seed_error(step: &'static str) -> impl Fn(seed::SeedError) -> LifecycleError {
    move |source| LifecycleError::Seed { step, source }
}

fn local(step: &str) -> impl Fn(String) -> LifecycleError + '_ {
    move |message| LifecycleError::Local {
        step: step.to_string(),
        message,
    }
}

/// Options of `lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Override the lab's `accel`.
    pub accel: Option<super::definition::Accel>,
    /// How long to wait for every VM to answer SSH.
    pub ssh_timeout: Duration,
    /// NAT network (guests reach the outside) instead of an isolated one.
    pub nat: bool,
}

/// What `lab up` did, with timings.
#[derive(Debug, Serialize)]
pub struct UpReport {
    /// Lab.
    pub lab: String,
    /// Instance.
    pub instance: Instance,
    /// libvirt domain type used.
    pub domain_type: String,
    /// Generated inventory.
    pub inventory: PathBuf,
    /// known_hosts with the guests' keys.
    pub known_hosts: PathBuf,
    /// Seconds to define everything (overlays, seeds, network, domains).
    pub define_secs: f64,
    /// Per VM: seconds from start to SSH ready (first answer, then first-boot setup done).
    pub ssh_ready_secs: Vec<(String, f64)>,
    /// Per VM: how the wait split up.
    pub boot: Vec<BootTiming>,
    /// Total seconds.
    pub total_secs: f64,
}

/// Where one VM's time to SSH-ready went.
#[derive(Debug, Clone, Serialize)]
pub struct BootTiming {
    /// VM.
    pub vm: String,
    /// From domain start until sshd first accepted the lab key (kernel, systemd, sshd).
    pub boot_secs: f64,
    /// From then until cloud-init's last stage wrote the lab marker (first-boot setup).
    pub first_boot_secs: f64,
}

/// True for a libvirt URI that names another machine (`qemu+ssh://host/system`,
/// `qemu+tcp://…`, `qemu://host/system`).
pub fn is_remote(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let transport = scheme.split_once('+').map(|(_, t)| t);
    !host.is_empty()
        || matches!(
            transport,
            Some("ssh" | "tcp" | "tls" | "libssh" | "libssh2")
        )
}

/// State directory of a lab.
pub fn lab_dir(lab: &str) -> PathBuf {
    state::lab_dir(&state::state_root(), lab)
}

/// Bring a lab up: check memory, record, create overlays and seeds, define and start the
/// network and domains, wait for SSH, write the lab's inventory and known_hosts.
pub async fn up(
    lab: &Lab,
    opts: &UpOptions,
    progress: &Progress,
) -> Result<UpReport, LifecycleError> {
    let t0 = Instant::now();
    let dir = lab_dir(&lab.name);
    if let Ok(Some(s)) = LabState::load(&dir) {
        return Err(LifecycleError::AlreadyUp {
            lab: lab.name.clone(),
            id: s.instance.id,
            created: s.instance.created,
        });
    }
    // A remote hypervisor's CPU and /dev/kvm are judged from its libvirt capabilities.
    let host = if is_remote(&lab.uri) {
        let uri = lab.uri.clone();
        tokio::task::spawn_blocking(move || Hypervisor::open(&uri).map(|h| h.host_virt()))
            .await
            .map_err(|e| local("libvirt")(e.to_string()))??
    } else {
        HostVirt::probe()
    };
    let choice = accel::choose(opts.accel.unwrap_or(lab.accel), host, lab.vms.len())
        .map_err(LifecycleError::Accel)?;
    if let Some(w) = &choice.warning {
        progress.println(&format!("warning: {w}"));
    }
    let cache = ImageCache::from_env().map_err(|e| local("image cache")(e.to_string()))?;
    let image = cache
        .get(&lab.image, Source::Build)
        .or_else(|| cache.get(&lab.image, Source::Pull))
        .filter(|c| c.state == crate::images::cache::ImageState::Ready)
        .and_then(|c| c.manifest.clone().map(|m| (c.dir.clone(), m)))
        .ok_or_else(|| LifecycleError::NoImage(lab.image.clone()))?;
    let (image_dir, manifest) = image;
    let base_disk = image_dir.join(&manifest.disk);

    let step =
        |what: &str| progress.println(&format!("[{:>6.1} s] {what}", t0.elapsed().as_secs_f64()));
    step("connecting to libvirt");
    let uri = lab.uri.clone();
    let hv = tokio::task::spawn_blocking(move || Hypervisor::open(&uri))
        .await
        .map_err(|e| local("libvirt")(e.to_string()))??;
    // Memory: refuse before creating anything.
    let guest = lab.memory_mib();
    let need = guest + QEMU_OVERHEAD_MIB * lab.vms.len() as u64;
    let free = available_memory_mib(&hv, &lab.uri);
    if let Some(free) = free
        && need > free
    {
        return Err(LifecycleError::Memory {
            lab: lab.name.clone(),
            vms: lab.vms.len(),
            guest,
            need,
            free,
        });
    }

    let instance = Instance::new(&lab.name);
    let hosts: Vec<state::VmHost> = lab
        .vms
        .iter()
        .map(|v| state::VmHost {
            name: v.name.clone(),
            address: v.address.to_string(),
        })
        .collect();
    let st = LabState {
        instance: instance.clone(),
        uri: lab.uri.clone(),
        definition: lab.path.clone(),
        network: None,
        pool: None,
        domains: Vec::new(),
        dir: dir.clone(),
        hosts: hosts.clone(),
    };
    st.save()
        .map_err(|e| local("recording the lab")(e.to_string()))?;

    // Keys: the client key, and one host key per VM (known before the VM boots).
    let client =
        seed::ed25519(&format!("kubedrill-lab-{}", lab.name)).map_err(seed_error("key"))?;
    let key_path = dir.join("id_ed25519");
    write_private(&key_path, &client.private)?;
    crate::files::write(dir.join("id_ed25519.pub"), format!("{}\n", client.public))
        .map_err(|e| local("key")(e.to_string()))?;
    let t = Templates::load()?;
    let mut known_hosts = String::new();
    let mut seeds = Vec::new();
    for vm in &lab.vms {
        let hk = seed::ed25519(&vm.name).map_err(seed_error("host key"))?;
        known_hosts.push_str(&format!("{} {}\n", vm.address, hk.public));
        let s = seed::render(&t, lab, vm, &instance, &client.public, &hk)?;
        let iso = dir.join(format!("{}-seed.iso", vm.name));
        seed::write_iso(&s, &iso).map_err(seed_error("seed"))?;
        seeds.push(iso);
    }
    step("NoCloud seeds written");
    let kh_path = dir.join("known_hosts");
    write_private(&kh_path, &known_hosts)?;

    // Storage on the hypervisor: the lab's pool (recorded before it is defined), the base image,
    // kernel and initrd uploaded into it, one overlay and one seed volume per VM. Nothing in a
    // domain then refers to a file on this side, so a remote hypervisor works the same way.
    let pool = storage::pool_name(&lab.name);
    let pool_uuid = xml::random_uuid();
    let mut st = st;
    st.pool = Some(ObjRef {
        name: pool.clone(),
        uuid: pool_uuid.clone(),
    });
    st.save()
        .map_err(|e| local("recording the lab")(e.to_string()))?;
    let vm_list: Vec<(String, u64)> = lab
        .vms
        .iter()
        .map(|v| (v.name.clone(), v.size.disk_gib))
        .collect();
    let pool_path = storage::pool_path(&lab.name);
    let boot_src = manifest.boot.clone();
    let (hv, st, placed) = tokio::task::spawn_blocking(move || {
        let res = (|| -> Result<(Boot, Vec<VmFiles>), LifecycleError> {
            hv.create_pool(&pool, &pool_uuid, &pool_path)?;
            let base = hv.upload_volume(&pool, "base.qcow2", &base_disk, "qcow2")?;
            let boot = match boot_src {
                crate::images::cache::Boot::Disk => Boot::Disk,
                crate::images::cache::Boot::Direct {
                    kernel,
                    initrd,
                    cmdline,
                } => Boot::Direct {
                    kernel: hv.upload_volume(&pool, "vmlinuz", &image_dir.join(kernel), "raw")?,
                    initrd: hv.upload_volume(
                        &pool,
                        "initrd.img",
                        &image_dir.join(initrd),
                        "raw",
                    )?,
                    cmdline,
                },
            };
            let mut files = Vec::new();
            for ((vm, disk_gib), iso) in vm_list.iter().zip(&seeds) {
                let disk = hv.create_overlay(&pool, &format!("{vm}.qcow2"), &base, *disk_gib)?;
                let seed = hv.upload_volume(&pool, &format!("{vm}-seed.iso"), iso, "raw")?;
                files.push(VmFiles {
                    disk,
                    seed,
                    console_log: format!("{pool_path}/{vm}-console.log"),
                });
            }
            Ok((boot, files))
        })();
        (hv, st, res)
    })
    .await
    .map_err(|e| local("libvirt")(e.to_string()))?;
    let (boot, placed) = placed?;
    step("storage pool with base image, overlays and seeds ready");

    // libvirt objects, recorded one by one.
    let net_uuid = xml::random_uuid();
    let net_xml = xml::network(&t, lab, &net_uuid, opts.nat)?;
    let mut domains = Vec::new();
    for (vm, files) in lab.vms.iter().zip(&placed) {
        let uuid = xml::random_uuid();
        let x = xml::domain(
            &t,
            lab,
            vm,
            &instance,
            choice.domain_type,
            &boot,
            files,
            &uuid,
        )?;
        domains.push((xml::domain_name(&lab.name, &vm.name), uuid, x));
    }
    let net_name = xml::network_name(&lab.name);
    step("defining and starting the network and domains");
    let (hv, st, started) = tokio::task::spawn_blocking(move || {
        let mut st = st;
        let res = (|| -> Result<Vec<(String, Instant)>, LifecycleError> {
            hv.create_network(&net_name, &net_xml)?;
            st.network = Some(ObjRef {
                name: net_name.clone(),
                uuid: net_uuid.clone(),
            });
            st.save()
                .map_err(|e| local("recording the lab")(e.to_string()))?;
            let mut started = Vec::new();
            for (name, uuid, x) in &domains {
                // Record first: a domain defined but not recorded could not be removed by name.
                st.domains.push(ObjRef {
                    name: name.clone(),
                    uuid: uuid.clone(),
                });
                st.save()
                    .map_err(|e| local("recording the lab")(e.to_string()))?;
                if let Err(e) = hv.create_domain(name, x, true) {
                    if matches!(e, HypervisorError::NameTaken { .. }) {
                        // Not ours: forget the record so `down` does not even look at it.
                        st.domains.pop();
                        st.save()
                            .map_err(|e| local("recording the lab")(e.to_string()))?;
                    }
                    return Err(e.into());
                }
                started.push((name.clone(), Instant::now()));
            }
            Ok(started)
        })();
        (hv, st, res)
    })
    .await
    .map_err(|e| local("libvirt")(e.to_string()))?;
    let started = started?;
    drop(hv);
    let _ = st;
    let define_secs = t0.elapsed().as_secs_f64();
    step("all domains started; waiting for SSH");

    let inventory = write_inventory(lab, &dir, &key_path, &kh_path, choice.domain_type == "qemu")?;
    let wait = SshWaitOptions {
        timeout: opts.ssh_timeout,
        poll: Duration::from_secs(2),
        set_clock: false,
    };
    let ready = wait_for_ssh(&hosts, &key_path, &kh_path, &wait, progress).await;
    let mut ssh_ready_secs = Vec::new();
    let mut boot = Vec::new();
    let mut failed = Vec::new();
    for (vm, (name, start)) in lab.vms.iter().zip(&started) {
        match ready.iter().find(|(h, _)| h == &vm.name) {
            Some((_, Ok(w))) => {
                let secs = |t: Instant| t.saturating_duration_since(*start).as_secs_f64();
                ssh_ready_secs.push((vm.name.clone(), secs(w.ready)));
                boot.push(BootTiming {
                    vm: vm.name.clone(),
                    boot_secs: secs(w.first_answer),
                    first_boot_secs: w
                        .ready
                        .saturating_duration_since(w.first_answer)
                        .as_secs_f64(),
                });
            }
            Some((_, Err(e))) => failed.push(format!("{name}: {e}")),
            None => failed.push(format!("{name}: not checked")),
        }
    }
    if !failed.is_empty() {
        return Err(LifecycleError::NotReady(failed));
    }
    Ok(UpReport {
        lab: lab.name.clone(),
        instance,
        domain_type: choice.domain_type.to_string(),
        inventory,
        known_hosts: kh_path,
        define_secs,
        ssh_ready_secs,
        boot,
        total_secs: t0.elapsed().as_secs_f64(),
    })
}

fn write_private(path: &Path, text: &str) -> Result<(), LifecycleError> {
    crate::files::write_private(path, text.as_bytes())
        .map_err(|e| local("key")(format!("{}: {e}", path.display())))
}

/// Memory the hypervisor can give: `MemAvailable` for a local URI, libvirt's free memory else.
fn available_memory_mib(hv: &Hypervisor, uri: &str) -> Option<u64> {
    if !is_remote(uri)
        && let Ok(m) = std::fs::read_to_string("/proc/meminfo")
        && let Some(kib) = m
            .lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    {
        return Some(kib / 1024);
    }
    hv.free_memory_mib()
}

/// The lab's own Kubespray inventory: same names and roles, lab addresses, the lab key and
/// known_hosts; `group_vars/` copied from the mirrored inventory (versions, CIDRs, Cilium).
fn write_inventory(
    lab: &Lab,
    dir: &Path,
    key: &Path,
    known_hosts: &Path,
    emulated: bool,
) -> Result<PathBuf, LifecycleError> {
    let inv_dir = dir.join("inventory");
    std::fs::create_dir_all(&inv_dir).map_err(|e| local("inventory")(e.to_string()))?;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut y = format!(
        "# Generated by `kubedrill lab up {}`: the lab's VMs, as a Kubespray inventory.\nall:\n  vars:\n    kubedrill_known_hosts: {}\n",
        lab.name,
        q(&known_hosts.display().to_string())
    );
    if emulated {
        // A lab adjustment, visible here and in `inventory show`, never a silent difference:
        // under TCG every control-plane component starts several times slower than on
        // hardware, beyond kubeadm's default 4-minute waits.
        y.push_str(concat!(
            "    # lab adjustment: the VMs run under TCG emulation (no KVM), so kubeadm waits longer\n",
            "    kubedrill_kubeadm_timeout: \"20m\"\n",
            "    # lab adjustment: kubeadm's upgrade health check gives its Job a hard-coded 15 s,\n",
            "    # which a pod on a TCG control plane cannot meet (Kubespray ignores all there)\n",
            "    kubeadm_ignore_preflight_errors: [\"CreateJob\"]\n",
            "    # lab adjustment: under TCG the Cilium agent compiles its datapath many times slower\n",
            "    # than on hardware; its startup probe allows this long (the chart's default: 10m)\n",
            "    kubedrill_cilium_startup_timeout: \"40m\"\n",
            "    # lab adjustment: under TCG a busy API server answers slowly; with kubeadm's 15 s leases\n",
            "    # the controller manager and scheduler lost theirs, exited and restarted in a loop\n",
            "    kube_controller_manager_leader_elect_lease_duration: \"60s\"\n",
            "    kube_controller_manager_leader_elect_renew_deadline: \"40s\"\n",
            "    kube_scheduler_leader_elect_lease_duration: \"60s\"\n",
            "    kube_scheduler_leader_elect_renew_deadline: \"40s\"\n",
            "    # lab adjustment: the Cilium operator lost its 15 s lease the same way while registering\n",
            "    # Cilium's CRDs, and exited\n",
            "    kubedrill_cilium_operator_leader_elect_lease_duration: \"60s\"\n",
            "    kubedrill_cilium_operator_leader_elect_renew_deadline: \"40s\"\n",
            "    # lab adjustment: Cilium gives each datapath compile a fixed 5 minutes; at the CPU weight\n",
            "    # of an agent without a request (4 against etcd's 20) the control plane's agent was\n",
            "    # starved past that, exited and restarted; a request gives it a share\n",
        ));
        y.push_str(&format!(
            "    kubedrill_cilium_agent_cpu_request: \"{}\"\n",
            crate::spec::patches::TCG_AGENT_CPU_REQUEST
        ));
        y.push_str(concat!(
            "    # lab adjustment: with that request (weight 20) the control plane's agent still had\n",
            "    # its compiles killed at the 5-minute limit and restarted; the nodes keep agent pods at\n",
            "    # the weight of 100 (what the kubelet and containerd have) — node/agent-cpu-weight\n",
            "    kubedrill_cilium_agent_cpu_weight: 100\n",
        ));
        y.push_str(concat!(
            "    # lab adjustment: under TCG a saturated control plane starved etcd (cgroup CPU weight 4\n",
            "    # against the kubelet's 100), its reads timed out and the API server exited; etcd and the\n",
            "    # API server get CPU requests (a larger share), and liveness probes that allow 5 minutes\n",
        ));
        y.push_str(&format!(
            "    kubeadm_patches: {}\n",
            serde_json::to_string(&crate::spec::patches::tcg_lab_adjustment()).unwrap_or_default()
        ));
    }
    if lab.mirrors.is_none() {
        if let Some(v) = &lab.kubernetes_version {
            y.push_str(&format!("    kube_version: {}\n", q(v)));
        }
        if let Some(v) = &lab.cilium_version {
            y.push_str(&format!("    cilium_version: {}\n", q(v)));
        }
    }
    y.push_str("  hosts:\n");
    for v in &lab.vms {
        y.push_str(&format!(
            "    {}:\n      ansible_host: {}\n      ansible_user: root\n      ansible_ssh_private_key_file: {}\n      ip: {}\n",
            v.name,
            v.address,
            q(&key.display().to_string()),
            v.address
        ));
    }
    let group = |name: &str, pick: &dyn Fn(&super::VmSpec) -> bool| {
        let mut s = format!("    {name}:\n      hosts:\n");
        for v in lab.vms.iter().filter(|v| pick(v)) {
            s.push_str(&format!("        {}:\n", v.name));
        }
        s
    };
    y.push_str("  children:\n");
    y.push_str(&group("kube_control_plane", &|v| {
        matches!(v.role, VmRole::ControlPlane { .. })
    }));
    y.push_str(&group("kube_node", &|v| {
        matches!(
            v.role,
            VmRole::Worker | VmRole::ControlPlane { also_worker: true }
        )
    }));
    y.push_str(&group("etcd", &|v| v.etcd));
    y.push_str(
        "    k8s_cluster:\n      children:\n        kube_control_plane:\n        kube_node:\n",
    );
    let path = inv_dir.join("hosts.yaml");
    crate::files::write_private(&path, y.as_bytes())
        .map_err(|e| local("inventory")(e.to_string()))?;
    if let Some(src) = &lab.mirrors {
        let src_dir = if src.is_dir() {
            src.clone()
        } else {
            src.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let gv = src_dir.join("group_vars");
        if gv.is_dir() {
            copy_dir(&gv, &inv_dir.join("group_vars"))
                .map_err(|e| local("inventory group_vars")(e.to_string()))?;
        }
    }
    Ok(path)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            copy_dir(&p, &to.join(e.file_name()))?;
        } else if e.file_type()?.is_file() {
            std::fs::copy(&p, to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// How kubedrill reaches a lab VM: root with the lab's own key.
fn lab_destination(v: &state::VmHost, key: &Path) -> Destination {
    Destination {
        name: v.name.clone(),
        address: v.address.clone(),
        port: 22,
        user: "root".into(),
        key: Some(key.to_path_buf()),
        become_user: None,
    }
}

/// The lab's first-boot setup is done (cloud-init's last stage writes it).
const LAB_MARKER_PROBE: &str = "test -f /etc/kubedrill-lab";

/// After a revert: the marker, the guest's clock set to the host's `now`, and every TCP
/// connection to another lab VM (`others`) reset. The VMs are saved one after the other, so
/// their TCP states disagree after a revert: the worker's kubelet kept writing into a
/// connection the control plane no longer had (10 KB stuck in its send queue), the node went
/// `NotReady` and the first drill after a reset failed its 2-minute wait; with its socket reset
/// (`ss -K`) it reconnected and was Ready within 20 s. Connections inside one VM are consistent
/// and stay.
fn after_revert_probe(now: std::time::SystemTime, others: &[&str]) -> String {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut p = format!(
        "{LAB_MARKER_PROBE} && date -u -s @{}.{:03} >/dev/null && {{ ",
        now.as_secs(),
        now.subsec_millis()
    );
    for a in others {
        p.push_str(&format!("ss -K dst {}; ", crate::ssh::shell::quote(a)));
    }
    p.push_str("true; } >/dev/null 2>&1");
    p
}

/// How to wait for SSH.
struct SshWaitOptions {
    timeout: Duration,
    /// Pause between attempts.
    poll: Duration,
    /// Once ready, set the guest's clock to the host's and reset its connections to the other
    /// VMs ([`after_revert_probe`]; after a snapshot revert).
    set_clock: bool,
}

/// When a VM first answered SSH, and when its first-boot setup was done.
#[derive(Debug, Clone, Copy)]
struct SshWait {
    first_answer: Instant,
    ready: Instant,
}

/// Poll every VM until an authenticated SSH session with a verified host key works and the
/// lab marker exists; returns when that happened (or the last error).
async fn wait_for_ssh(
    hosts: &[state::VmHost],
    key: &Path,
    known_hosts: &Path,
    wait: &SshWaitOptions,
    progress: &Progress,
) -> Vec<(String, Result<SshWait, String>)> {
    let (timeout, poll, set_clock) = (wait.timeout, wait.poll, wait.set_clock);
    let peers: Arc<Vec<String>> = Arc::new(hosts.iter().map(|v| v.address.clone()).collect());
    let policy = match HostKeyPolicy::load(known_hosts, HostKeyMode::Strict) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            return hosts
                .iter()
                .map(|v| (v.name.clone(), Err(e.to_string())))
                .collect();
        }
    };
    let mut o = Options::new(policy);
    o.identities = Vec::new();
    o.agent = None;
    o.connect_timeout = Duration::from_secs(10);
    let connector = Connector::new(Arc::new(o), None);
    let inputs: Vec<(String, Destination)> = hosts
        .iter()
        .map(|v| (v.name.clone(), lab_destination(v, key)))
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let results = fleet::run(
        "booting, waiting for SSH",
        inputs,
        hosts.len().max(1),
        progress,
        |_: &SshWait| "SSH ready".to_string(),
        |dest, _p| {
            let c = connector.clone();
            let peers = peers.clone();
            async move {
                let mut last = String::from("no attempt");
                let mut first_answer = None;
                while tokio::time::Instant::now() < deadline {
                    match c.connect(dest.clone()).await {
                        Ok(s) => {
                            let first = *first_answer.get_or_insert_with(Instant::now);
                            let probe = if set_clock {
                                let others: Vec<&str> = peers
                                    .iter()
                                    .map(String::as_str)
                                    .filter(|a| *a != dest.address)
                                    .collect();
                                after_revert_probe(std::time::SystemTime::now(), &others)
                            } else {
                                LAB_MARKER_PROBE.to_string()
                            };
                            let ok = s
                                .exec(&Command::new(probe).idempotent())
                                .await
                                .map(|o| o.success())
                                .unwrap_or(false);
                            s.close().await;
                            if ok {
                                return Ok(SshWait {
                                    first_answer: first,
                                    ready: Instant::now(),
                                });
                            }
                            last = "SSH up, cloud-init not finished".into();
                        }
                        // A changed key is never retried: it is not "not booted yet".
                        Err(e @ SshError::HostKeyChanged { .. }) => return Err(e.to_string()),
                        Err(e) => last = e.to_string(),
                    }
                    tokio::time::sleep(poll).await;
                }
                Err(format!("no SSH within {timeout:?}; last: {last}"))
            }
        },
    )
    .await;
    results.into_iter().map(|r| (r.host, r.result)).collect()
}

impl From<fleet::TaskFailed> for String {
    fn from(t: fleet::TaskFailed) -> Self {
        t.to_string()
    }
}

/// Remove the lab: exactly its marked domains and recorded network, then its files.
pub fn down(lab_name: &str) -> Result<Teardown, LifecycleError> {
    // The name picks a directory to delete: only a lab name (never a path) can do that, and
    // only when kubedrill's own record there says it is that lab.
    if !super::definition::is_dns_label(lab_name) {
        return Err(local("lab name")(format!(
            "`{}` is not a lab name (lowercase letters, digits and `-`)",
            lab_name.escape_debug()
        )));
    }
    let dir = lab_dir(lab_name);
    let st = LabState::load(&dir)
        .map_err(|e| local("reading the lab state")(e.to_string()))?
        .ok_or_else(|| LifecycleError::NotUp(lab_name.to_string(), dir.clone()))?;
    if st.instance.lab != lab_name {
        return Err(local("reading the lab state")(format!(
            "{} records lab `{}`, not `{lab_name}`; nothing was removed",
            dir.display(),
            st.instance.lab.escape_debug()
        )));
    }
    let hv = Hypervisor::open(&st.uri)?;
    let td = hv.teardown(&st);
    if !td.refused.is_empty() {
        // Keep the record so a retry (or the user) can finish; files stay too.
        return Err(LifecycleError::Leftovers(td.refused));
    }
    std::fs::remove_dir_all(&dir).map_err(|e| local("removing lab files")(e.to_string()))?;
    Ok(td)
}

/// One lab as found on this machine.
#[derive(Debug, Serialize)]
pub struct LabListing {
    /// Lab.
    pub lab: String,
    /// Instance.
    pub instance: Instance,
    /// URI.
    pub uri: String,
    /// Domain name → state (`absent` when gone).
    pub domains: Vec<(String, String)>,
}

/// Every lab recorded on this machine, with its VMs' states.
pub fn list() -> Vec<LabListing> {
    let root = state::state_root().join("labs");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&root) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(Some(st)) = LabState::load(&e.path()) else {
            continue;
        };
        let hv = Hypervisor::open(&st.uri).ok();
        let domains = st
            .domains
            .iter()
            .map(|d| {
                let s = hv
                    .as_ref()
                    .and_then(|h| h.domain_state(&d.name))
                    .unwrap_or_else(|| "absent".into());
                (d.name.clone(), s)
            })
            .collect();
        out.push(LabListing {
            lab: st.instance.lab.clone(),
            instance: st.instance.clone(),
            uri: st.uri.clone(),
            domains,
        });
    }
    out.sort_by(|a, b| a.lab.cmp(&b.lab));
    out
}

/// Snapshot every VM of the lab (memory + disk when running).
pub fn snapshot(lab_name: &str, snap: &str) -> Result<Duration, LifecycleError> {
    let t = Instant::now();
    let (hv, st) = open_state(lab_name)?;
    for d in &st.domains {
        hv.snapshot(&d.name, snap)?;
    }
    Ok(t.elapsed())
}

/// What `lab reset` did, with timings.
#[derive(Debug, Serialize)]
pub struct ResetReport {
    /// Seconds to revert every domain (in parallel).
    pub revert_secs: f64,
    /// Seconds from the reverts until every VM answered SSH again.
    pub ssh_secs: f64,
    /// Guests whose clock was set back to the host's time (a revert restores the snapshot's).
    pub clock_synced: Vec<String>,
    /// Total seconds.
    pub total_secs: f64,
}

/// Revert every VM of the lab to a snapshot (all domains at once), wait until each answers SSH,
/// and set each guest's clock to the host's (a revert restores the snapshot's time, which would
/// break anything that checks certificates).
pub async fn reset(
    lab_name: &str,
    snap: &str,
    ssh_timeout: Duration,
    progress: &Progress,
) -> Result<ResetReport, LifecycleError> {
    let t0 = Instant::now();
    let dir = lab_dir(lab_name);
    let st = LabState::load(&dir)
        .map_err(|e| local("reading the lab state")(e.to_string()))?
        .ok_or_else(|| LifecycleError::NotUp(lab_name.to_string(), dir.clone()))?;
    // Each revert restarts a QEMU process (seconds); one connection per domain, all in parallel.
    let mut jobs = Vec::new();
    for d in st.domains.clone() {
        let uri = st.uri.clone();
        let snap = snap.to_string();
        jobs.push(tokio::task::spawn_blocking(move || {
            Hypervisor::open(&uri)?.revert(&d.name, &snap)
        }));
    }
    for j in jobs {
        j.await.map_err(|e| local("libvirt")(e.to_string()))??;
    }
    let revert_secs = t0.elapsed().as_secs_f64();
    progress.println(&format!(
        "[{revert_secs:>6.1} s] {} domains reverted to {snap}; waiting for SSH",
        st.domains.len()
    ));
    let key = dir.join("id_ed25519");
    let kh = dir.join("known_hosts");
    // A reverted guest is already running: poll fast, and set its clock in the same session.
    let wait = SshWaitOptions {
        timeout: ssh_timeout,
        poll: Duration::from_millis(300),
        set_clock: true,
    };
    let ready = wait_for_ssh(&st.hosts, &key, &kh, &wait, progress).await;
    let failed: Vec<String> = ready
        .iter()
        .filter_map(|(h, r)| r.as_ref().err().map(|e| format!("{h}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Err(LifecycleError::NotReady(failed));
    }
    let ssh_secs = t0.elapsed().as_secs_f64() - revert_secs;
    let clock_synced = st.hosts.iter().map(|h| h.name.clone()).collect();
    Ok(ResetReport {
        revert_secs,
        ssh_secs,
        clock_synced,
        total_secs: t0.elapsed().as_secs_f64(),
    })
}

fn open_state(lab_name: &str) -> Result<(Hypervisor, LabState), LifecycleError> {
    let dir = lab_dir(lab_name);
    let st = LabState::load(&dir)
        .map_err(|e| local("reading the lab state")(e.to_string()))?
        .ok_or_else(|| LifecycleError::NotUp(lab_name.to_string(), dir.clone()))?;
    Ok((Hypervisor::open(&st.uri)?, st))
}

#[cfg(test)]
mod tests {
    use super::{LAB_MARKER_PROBE, after_revert_probe, is_remote};

    /// The probe run by `sh` with stand-ins for `date` and `ss` that log their arguments, and
    /// the marker in a scratch directory: the clock is set, each other VM's connections are
    /// reset, and a missing marker fails the probe before anything is touched.
    #[test]
    fn after_a_revert_the_clock_is_set_and_connections_to_the_other_vms_reset() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        let log = dir.path().join("log");
        for tool in ["date", "ss"] {
            let script = format!("#!/bin/sh\necho \"{tool} $*\" >> {}\n", log.display());
            crate::files::write_atomic(&bin.join(tool), script.as_bytes(), 0o755).expect("tool");
        }
        let marker = dir.path().join("kubedrill-lab");
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_611_501_429);
        let probe = after_revert_probe(at, &["10.234.0.12", "10.234.0.13"])
            .replace("/etc/kubedrill-lab", &marker.display().to_string());
        assert!(probe.starts_with(
            &LAB_MARKER_PROBE.replace("/etc/kubedrill-lab", &marker.display().to_string())
        ));
        let run = || {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(&probe)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .status()
                .expect("sh")
        };
        assert!(!run().success(), "no marker: not ready");
        assert!(!log.exists(), "nothing touched before the marker");
        std::fs::write(&marker, "").expect("marker");
        assert!(run().success());
        let logged = std::fs::read_to_string(&log).expect("log");
        assert_eq!(
            logged,
            "date -u -s @1796611501.429\nss -K dst 10.234.0.12\nss -K dst 10.234.0.13\n"
        );
    }

    #[test]
    fn remote_uris() {
        for u in [
            "qemu+ssh://root@hv1/system",
            "qemu+tcp://hv1/system",
            "qemu://hv1.example/system",
            "qemu+libssh2://u@h/system?known_hosts=/x",
        ] {
            assert!(is_remote(u), "{u}");
        }
        for u in [
            "qemu:///system",
            "qemu:///session",
            "test:///default",
            "qemu+unix:///system?socket=/run/x/libvirt-sock",
        ] {
            assert!(!is_remote(u), "{u}");
        }
    }
}
