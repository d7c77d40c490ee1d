//! `kubedrill bundle build|show`: offline bundles for `apply --bundle`.

use super::exit::Exit;
use super::{Output, print_json};
use anyhow::Context;
use clap::{Args, Subcommand};
use kubedrill::bundle::{self, Bundle, build::BuildOptions};
use kubedrill::spec::version::Version;
use std::path::PathBuf;
use std::process::ExitCode;

/// `bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Build a bundle on a connected machine of the nodes' distribution release.
    Build(Box<BuildArgs>),
    /// Verify a bundle (every file against its manifest) and list it.
    Show(ShowArgs),
}

/// `bundle build` options.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Output directory.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Take what the options below leave unset from a Kubespray inventory: `kube_version`
    /// (--kubernetes), `files_repo` (--files-repo), `crictl_version` (--crictl), `helm_version`
    /// (--helm). Options given on the command line win.
    #[arg(short = 'i', long, value_name = "INV")]
    pub inventory: Option<PathBuf>,
    /// Node packages (default: containerd runc conntrack socat ethtool iptables), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Add kubelet, kubeadm and kubectl of this version (from pkgs.k8s.io, or as binaries from
    /// --files-repo).
    #[arg(long, value_name = "VERSION")]
    pub kubernetes: Option<Version>,
    /// Kubespray's `files_repo`: a local directory, file:// or http(s):// URL laid out like the
    /// download sites (dl.k8s.io/release/vV/bin/linux/amd64/kubeadm, get.helm.sh/…,
    /// github.com/kubernetes-sigs/cri-tools/releases/download/…). With --kubernetes, kubelet,
    /// kubeadm, kubectl and crictl come from it as checksum-verified binaries; helm too.
    #[arg(long, value_name = "DIR|URL")]
    pub files_repo: Option<String>,
    /// crictl version taken from --files-repo (default: 1.<kubernetes minor>.0).
    #[arg(long, value_name = "VERSION", requires = "files_repo")]
    pub crictl: Option<String>,
    /// A directory of image tarballs (every `*.tar` in it), e.g. a local image store.
    #[arg(long, value_name = "DIR")]
    pub images_dir: Option<PathBuf>,
    /// Add helm of this version from get.helm.sh (checksum-verified).
    #[arg(long, value_name = "VERSION")]
    pub helm: Option<String>,
    /// Add the Cilium chart of this version from helm.cilium.io (digest-verified). Repeat it
    /// (or give a comma-separated list) for a drill: `apply` installs the inventory's
    /// `cilium_version` and leaves the others on the control planes for `drill run`.
    #[arg(long, value_name = "VERSION", value_delimiter = ',')]
    pub cilium: Vec<Version>,
    /// Take the chart from this Helm repository instead of helm.cilium.io: a directory,
    /// file:// or http(s):// URL with `index.yaml` and the chart (an internal mirror; the
    /// digest in its index is checked).
    #[arg(long, value_name = "DIR|URL", requires = "cilium")]
    pub chart_repo: Option<String>,
    /// Image tarballs to include (imported with `ctr -n k8s.io images import`).
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,
}

/// `bundle show` options.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Bundle directory.
    pub dir: PathBuf,
}

/// Run a `bundle` subcommand.
pub fn run(cmd: BundleCmd, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCmd::Build(mut a) => {
            let packages = if a.packages.is_empty() {
                bundle::NODE_PACKAGES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                std::mem::take(&mut a.packages)
            };
            if let Some(path) = a.inventory.clone() {
                let Some((inv, spec, _)) = super::inventory::load_for(&path, out, "bundle")? else {
                    return Ok(Exit::Invalid.into());
                };
                let vars = &inv.first_control_plane().vars;
                let var = |name: &str| -> anyhow::Result<Option<String>> {
                    vars.get(name)
                        .map(|v| v.string(name).map_err(|d| anyhow::anyhow!("{d}")))
                        .transpose()
                };
                a.kubernetes.get_or_insert(spec.kubernetes);
                if a.files_repo.is_none() {
                    a.files_repo = var("files_repo")?;
                }
                if a.crictl.is_none() && a.files_repo.is_some() {
                    a.crictl = var("crictl_version")?;
                }
                if a.helm.is_none() {
                    a.helm = var("helm_version")?;
                }
                eprintln!(
                    "bundle: from {}: Kubernetes {}{}",
                    path.display(),
                    spec.kubernetes,
                    a.files_repo
                        .as_deref()
                        .map(|r| format!(", files_repo {r}"))
                        .unwrap_or_default()
                );
            }
            let mut images = a.images;
            if let Some(d) = &a.images_dir {
                let mut found: Vec<PathBuf> = std::fs::read_dir(d)
                    .with_context(|| format!("--images-dir {}", d.display()))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file())
                    .collect();
                if found.is_empty() {
                    anyhow::bail!("--images-dir {}: no *.tar image tarballs", d.display());
                }
                found.sort();
                images.extend(found);
            }
            let o = BuildOptions {
                out: a.out,
                packages,
                kubernetes: a.kubernetes,
                helm: a.helm,
                cilium_charts: a.cilium,
                chart_repo: a.chart_repo,
                images,
                files_repo: a.files_repo,
                crictl: a.crictl,
            };
            let t = std::time::Instant::now();
            match bundle::build::build(&o, &|s| eprintln!("bundle: {s}")) {
                Ok(m) => {
                    if out == Output::Json {
                        print_json(&m)?;
                    } else {
                        let bytes: u64 = m.packages.iter().map(|p| p.artifact.size).sum();
                        println!(
                            "bundle {}: {} packages ({} asked for, {:.1} MiB), {} binaries, {} charts, {} images in {:.1} s",
                            o.out.display(),
                            m.packages.len(),
                            m.requested.len(),
                            bytes as f64 / 1048576.0,
                            m.binaries.len(),
                            m.charts.len(),
                            m.images.len(),
                            t.elapsed().as_secs_f64()
                        );
                    }
                    Ok(Exit::Ok.into())
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(Exit::Invalid.into())
                }
            }
        }
        BundleCmd::Show(a) => match Bundle::open(&a.dir) {
            Ok(b) => {
                if out == Output::Json {
                    print_json(&b.manifest)?;
                } else {
                    println!(
                        "bundle {} (built {}, {} {}): every file matches its SHA-256",
                        b.dir.display(),
                        b.manifest.created,
                        b.manifest.release,
                        if b.manifest.family == bundle::Family::Deb {
                            "deb"
                        } else {
                            "rpm"
                        }
                    );
                    for p in b.requested() {
                        println!("  {:<12} {}", p.name, p.version);
                    }
                    println!(
                        "  (+{} dependencies); kubelet/kubeadm/kubectl: {}",
                        b.manifest.packages.len() - b.requested().len(),
                        match (b.kubernetes_binaries(), b.kubernetes_version()) {
                            (Some((v, _)), _) => format!("{v} (release binaries)"),
                            (None, Some(v)) => format!("{v} (packages)"),
                            (None, None) => "no".into(),
                        }
                    );
                    for a in b
                        .manifest
                        .binaries
                        .iter()
                        .chain(&b.manifest.charts)
                        .chain(&b.manifest.images)
                    {
                        println!("  {} ({})", a.file, a.source);
                    }
                }
                Ok(Exit::Ok.into())
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(Exit::Invalid.into())
            }
        },
    }
}
