//! `kubedrill bundle build`: collect packages (with every dependency, resolved by apt for this
//! machine's release), helm, the Cilium chart and image tarballs into a bundle directory.
//!
//! Packages come from this machine's apt sources; `--kubernetes` adds the per-minor
//! `pkgs.k8s.io` repository in a private apt configuration (the machine's own is not touched).
//! helm and the chart are downloaded and verified against their published checksums.
//!
//! With a files repository (Kubespray's `files_repo`: an internal file server, or a local
//! directory, in the download sites' own path layout), kubelet, kubeadm, kubectl, crictl and
//! helm come from it as release binaries instead, each verified against the checksum file
//! published beside it (`kubeadm.sha256`, `crictl-….tar.gz.sha256`, `helm-….tar.gz.sha256sum`).

use super::{Artifact, BundleError, Family, MANIFEST, Manifest, Package, SCHEMA, hash_file};
use crate::spec::version::Version;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to put into a bundle.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Output directory (created; must be empty or absent).
    pub out: PathBuf,
    /// Packages to install on every node (their dependencies are added).
    pub packages: Vec<String>,
    /// Add kubelet/kubeadm/kubectl of this version from pkgs.k8s.io.
    pub kubernetes: Option<Version>,
    /// Add helm of this version (`3.19.0`) from get.helm.sh.
    pub helm: Option<String>,
    /// Add the Cilium charts of these versions from helm.cilium.io (more than one for a drill).
    pub cilium_charts: Vec<Version>,
    /// A Helm repository mirror to take the chart from instead (a directory, `file://` or
    /// `http(s)://` URL holding `index.yaml` and the chart files), e.g. Harbor or ChartMuseum
    /// inside an air gap.
    pub chart_repo: Option<String>,
    /// Image tarballs to copy in.
    pub images: Vec<PathBuf>,
    /// Kubespray's `files_repo`: a directory, `file://` or `http(s)://` URL in the download
    /// sites' layout; with `kubernetes`, the Kubernetes binaries (and helm) come from it.
    pub files_repo: Option<String>,
    /// crictl version taken from the files repository (default `1.<minor>.0`).
    pub crictl: Option<String>,
}

/// Where a release binary sits below a files repository (Kubespray's `*_download_url` paths).
pub fn files_repo_path(name: &str, version: &str) -> String {
    let v = version.trim_start_matches('v');
    match name {
        "crictl" => format!(
            "github.com/kubernetes-sigs/cri-tools/releases/download/v{v}/crictl-v{v}-linux-amd64.tar.gz"
        ),
        "helm" => format!("get.helm.sh/helm-v{v}-linux-amd64.tar.gz"),
        _ => format!("dl.k8s.io/release/v{v}/bin/linux/amd64/{name}"),
    }
}

fn fail(step: &str) -> impl Fn(String) -> BundleError + '_ {
    move |message| BundleError::Build {
        step: step.to_string(),
        message,
    }
}

fn run(step: &str, cmd: &mut Command) -> Result<String, BundleError> {
    let out = cmd
        .output()
        .map_err(|e| fail(step)(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.trim_end().lines().rev().take(6).collect();
        return Err(fail(step)(format!(
            "{:?} exited with {}:\n{}",
            cmd.get_program(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// apt with an optional private configuration (sources and lists of its own).
struct Apt {
    opts: Vec<String>,
}

impl Apt {
    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        c
    }
}

/// The distribution release of this machine (`VERSION_CODENAME`).
fn release() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("VERSION_CODENAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Build a bundle. Returns its manifest (also written to `out/bundle.json`).
pub fn build(o: &BuildOptions, say: &dyn Fn(&str)) -> Result<Manifest, BundleError> {
    if o.out.join(MANIFEST).exists() {
        return Err(fail("output")(format!(
            "{} already holds a bundle; choose another directory or remove it",
            o.out.display()
        )));
    }
    let debs = o.out.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| fail("output")(e.to_string()))?;
    // The files repository first: a missing binary fails before minutes of package downloads.
    let mut binaries = Vec::new();
    let mut kubernetes_binaries = None;
    if let (Some(k), Some(repo)) = (o.kubernetes, &o.files_repo) {
        binaries.extend(fetch_kubernetes_binaries(
            &o.out,
            repo,
            k,
            o.crictl.as_deref(),
            say,
        )?);
        kubernetes_binaries = Some(k.to_string());
    }
    let mut requested = o.packages.clone();
    let private = tempfile::tempdir().map_err(|e| fail("apt")(e.to_string()))?;
    // Kubernetes as packages from pkgs.k8s.io, unless a files repository provides binaries.
    let packaged_kubernetes = o.kubernetes.filter(|_| o.files_repo.is_none());
    let apt = match packaged_kubernetes {
        None => Apt { opts: Vec::new() },
        Some(k) => {
            requested.extend(super::KUBERNETES_PACKAGES.iter().map(|s| s.to_string()));
            kubernetes_apt(private.path(), k, say)?
        }
    };
    requested.sort();
    requested.dedup();
    if requested.is_empty() {
        return Err(fail("packages")("no packages asked for".into()));
    }

    say(&format!(
        "resolving dependencies of {}",
        requested.join(" ")
    ));
    let pinned: Vec<String> = requested
        .iter()
        .map(|p| {
            match (
                packaged_kubernetes,
                super::KUBERNETES_PACKAGES.contains(&p.as_str()),
            ) {
                (Some(k), true) => format!("{p}={k}-*"),
                _ => p.clone(),
            }
        })
        .collect();
    let tree = run(
        "resolving dependencies",
        apt.cmd("apt-cache")
            .args([
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .args(&requested),
    )?;
    let mut names: Vec<String> = tree
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    names.sort();
    names.dedup();
    // The requested ones with their pins replace the plain names.
    names.retain(|n| !requested.contains(n));
    names.extend(pinned);
    say(&format!("downloading {} packages", names.len()));
    run(
        "downloading packages",
        apt.cmd("apt-get")
            .arg("download")
            .args(&names)
            .current_dir(&debs),
    )?;
    run(
        "indexing packages",
        Command::new("sh")
            .arg("-c")
            .arg("dpkg-scanpackages --multiversion . > Packages")
            .current_dir(&debs),
    )?;

    let mut packages = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&debs)
        .map_err(|e| fail("indexing packages")(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    files.sort();
    for f in files {
        let fields = run(
            "reading packages",
            Command::new("dpkg-deb")
                .arg("-f")
                .arg(&f)
                .args(["Package", "Version", "Architecture"]),
        )?;
        let get = |k: &str| {
            fields
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")).map(str::to_string))
                .unwrap_or_default()
        };
        packages.push(Package {
            name: get("Package"),
            version: get("Version"),
            arch: get("Architecture"),
            artifact: artifact(&o.out, &f, "apt-get download")?,
        });
    }
    for r in &requested {
        if !packages.iter().any(|p| &p.name == r) {
            return Err(fail("packages")(format!("`{r}` was not downloaded")));
        }
    }

    if let Some(v) = &o.helm {
        let base = match (&o.files_repo, std::env::var("KUBEDRILL_HELM_URL")) {
            (_, Ok(url)) => url,
            (Some(repo), Err(_)) => format!("{}/get.helm.sh", repo.trim_end_matches('/')),
            (None, Err(_)) => "https://get.helm.sh".into(),
        };
        binaries.push(fetch_helm(&o.out, &base, v, say)?);
    }
    let mut charts = Vec::new();
    let base = o.chart_repo.clone().unwrap_or_else(chart_base);
    let mut wanted = o.cilium_charts.clone();
    wanted.sort();
    wanted.dedup();
    for v in wanted {
        charts.push(fetch_chart(&o.out, &base, v, say)?);
    }
    let mut images = Vec::new();
    if !o.images.is_empty() {
        let mut seen = std::collections::HashSet::new();
        for i in &o.images {
            if !seen.insert(i.file_name()) {
                return Err(fail("images")(format!(
                    "{}: two image tarballs share this file name",
                    i.display()
                )));
            }
        }
        let dir = o.out.join("images");
        std::fs::create_dir_all(&dir).map_err(|e| fail("images")(e.to_string()))?;
        for i in &o.images {
            let name = i
                .file_name()
                .ok_or_else(|| fail("images")(format!("{}: not a file", i.display())))?;
            let to = dir.join(name);
            std::fs::copy(i, &to).map_err(|e| fail("images")(format!("{}: {e}", i.display())))?;
            images.push(artifact(&o.out, &to, &i.display().to_string())?);
        }
    }

    let manifest = Manifest {
        schema: SCHEMA,
        created: crate::lab::xml::now_rfc3339(),
        family: Family::Deb,
        release: release(),
        requested,
        packages,
        binaries,
        charts,
        images,
        kubernetes_binaries,
    };
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| fail("manifest")(e.to_string()))?;
    crate::files::write(o.out.join(MANIFEST), text).map_err(|e| fail("manifest")(e.to_string()))?;
    Ok(manifest)
}

fn artifact(root: &Path, file: &Path, source: &str) -> Result<Artifact, BundleError> {
    let (size, sha256) =
        hash_file(file).map_err(|e| fail("hashing")(format!("{}: {e}", file.display())))?;
    let rel = file
        .strip_prefix(root)
        .map_err(|e| fail("hashing")(e.to_string()))?
        .to_string_lossy()
        .into_owned();
    Ok(Artifact {
        file: rel,
        sha256,
        size,
        source: source.to_string(),
    })
}

/// A private apt configuration: this machine's sources plus `pkgs.k8s.io` for one minor, with
/// their own lists, updated.
fn kubernetes_apt(dir: &Path, k: Version, say: &dyn Fn(&str)) -> Result<Apt, BundleError> {
    let minor = format!("v{}.{}", k.major, k.minor);
    let base = format!("https://pkgs.k8s.io/core:/stable:/{minor}/deb/");
    say(&format!("adding {base} (private apt configuration)"));
    let key = fetch(&format!("{base}Release.key"))?;
    let armored = dir.join("kubernetes.asc");
    crate::files::write(&armored, key).map_err(|e| fail("apt")(e.to_string()))?;
    let keyring = dir.join("kubernetes.gpg");
    run(
        "kubernetes key",
        Command::new("gpg")
            .args(["--batch", "--yes", "--dearmor", "-o"])
            .arg(&keyring)
            .arg(&armored),
    )?;
    let parts = dir.join("sources.list.d");
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial")).map_err(|e| fail("apt")(e.to_string()))?;
    std::fs::create_dir_all(&parts).map_err(|e| fail("apt")(e.to_string()))?;
    for f in std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::copy(f.path(), parts.join(f.file_name()));
    }
    crate::files::write(
        parts.join("kubernetes.list"),
        format!("deb [signed-by={}] {base} /\n", keyring.display()),
    )
    .map_err(|e| fail("apt")(e.to_string()))?;
    let apt = Apt {
        opts: vec![
            format!("Dir::Etc::SourceParts={}", parts.display()),
            format!("Dir::State::Lists={}", lists.display()),
            format!("Dir::Cache={}", dir.join("cache").display()),
        ],
    };
    std::fs::create_dir_all(dir.join("cache/archives/partial"))
        .map_err(|e| fail("apt")(e.to_string()))?;
    run("apt-get update", apt.cmd("apt-get").arg("update"))?;
    Ok(apt)
}

/// Download with rustls, or read a local path / `file://` URL; the body in memory (the largest
/// artifacts, kubelet and kubectl, are well under 512 MiB).
fn fetch(url: &str) -> Result<Vec<u8>, BundleError> {
    if let Some(path) = local_path(url) {
        return crate::files::read_bounded(Path::new(path), 512 << 20)
            .map_err(|e| fail("download")(format!("{url}: {e}")));
    }
    let mut resp = ureq::get(url)
        .call()
        .map_err(|e| fail("download")(format!("{url}: {e}")))?;
    resp.body_mut()
        .with_config()
        .limit(512 << 20)
        .read_to_vec()
        .map_err(|e| fail("download")(format!("{url}: {e}")))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The path of a local source (`/dir/…` or `file:///dir/…`), `None` for a URL.
fn local_path(url: &str) -> Option<&str> {
    url.strip_prefix("file://")
        .or_else(|| url.starts_with('/').then_some(url))
}

/// kubelet, kubeadm, kubectl and crictl from a files repository, each verified against the
/// checksum file beside it, into `bin/`.
fn fetch_kubernetes_binaries(
    root: &Path,
    repo: &str,
    k: Version,
    crictl: Option<&str>,
    say: &dyn Fn(&str),
) -> Result<Vec<Artifact>, BundleError> {
    let repo = repo.trim_end_matches('/');
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| fail("binaries")(e.to_string()))?;
    let kv = k.to_string();
    let crictl_v = crictl
        .map(|c| c.trim_start_matches('v').to_string())
        .unwrap_or_else(|| format!("{}.{}.0", k.major, k.minor));
    let mut out = Vec::new();
    for name in super::KUBERNETES_BINARIES {
        let version = if *name == "crictl" { &crictl_v } else { &kv };
        let rel = files_repo_path(name, version);
        let url = format!("{repo}/{rel}");
        say(&format!("taking {url}"));
        let missing = |e: BundleError| {
            fail("files repository")(format!(
                "{e}\n`{rel}` is missing below the files repository {repo} (Kubespray's files_repo layout). Put the release file and its checksum file there, or build it from source here: scripts/upstream-build.sh --kubernetes {kv}"
            ))
        };
        let data = fetch(&url).map_err(missing)?;
        let want = String::from_utf8_lossy(&fetch(&format!("{url}.sha256")).map_err(missing)?)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_lowercase();
        let got = sha256_hex(&data);
        if want != got {
            return Err(fail("files repository")(format!(
                "{url}: SHA-256 {got}, its checksum file says `{want}`"
            )));
        }
        let to = bin.join(name);
        let content = if *name == "crictl" {
            untar_one(&data, "crictl")?
        } else {
            data
        };
        crate::files::write(&to, content).map_err(|e| fail("binaries")(e.to_string()))?;
        out.push(artifact(root, &to, &format!("{url} (sha256 {want})"))?);
    }
    Ok(out)
}

/// One member of a gzipped tarball, by file name (any directory).
fn untar_one(tgz: &[u8], name: &str) -> Result<Vec<u8>, BundleError> {
    let tmp = tempfile::tempdir().map_err(|e| fail("unpack")(e.to_string()))?;
    let archive = tmp.path().join("a.tgz");
    crate::files::write(&archive, tgz).map_err(|e| fail("unpack")(e.to_string()))?;
    run(
        "unpack",
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(tmp.path())
            .arg("--no-same-owner")
            .arg("--wildcards")
            .arg(format!("*{name}")),
    )?;
    let found = walk(tmp.path())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|f| f == name))
        .ok_or_else(|| fail("unpack")(format!("the archive holds no `{name}`")))?;
    std::fs::read(found).map_err(|e| fail("unpack")(e.to_string()))
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

/// Base URL of the Cilium chart repository (`KUBEDRILL_CHART_URL` overrides, for mirrors).
fn chart_base() -> String {
    std::env::var("KUBEDRILL_CHART_URL").unwrap_or_else(|_| "https://helm.cilium.io".into())
}

/// helm's release tarball, verified against its `.sha256sum`, unpacked to `bin/helm`.
fn fetch_helm(
    root: &Path,
    base: &str,
    version: &str,
    say: &dyn Fn(&str),
) -> Result<Artifact, BundleError> {
    let v = version.trim_start_matches('v');
    let name = format!("helm-v{v}-linux-amd64.tar.gz");
    let url = format!("{}/{name}", base.trim_end_matches('/'));
    say(&format!("downloading {url}"));
    let tgz = fetch(&url)?;
    let sums = String::from_utf8_lossy(&fetch(&format!("{url}.sha256sum"))?).into_owned();
    let want = sums
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let got = sha256_hex(&tgz);
    if want != got {
        return Err(fail("helm")(format!(
            "{name}: SHA-256 {got}, the published checksum is `{want}`"
        )));
    }
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| fail("helm")(e.to_string()))?;
    let tmp = tempfile::tempdir().map_err(|e| fail("helm")(e.to_string()))?;
    let archive = tmp.path().join(&name);
    crate::files::write(&archive, &tgz).map_err(|e| fail("helm")(e.to_string()))?;
    run(
        "helm",
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(tmp.path())
            .arg("linux-amd64/helm"),
    )?;
    let to = bin.join("helm");
    std::fs::copy(tmp.path().join("linux-amd64/helm"), &to)
        .map_err(|e| fail("helm")(e.to_string()))?;
    artifact(root, &to, &format!("{url} (sha256 {want})"))
}

/// The Cilium chart, verified against the digest in the repository's `index.yaml`.
fn fetch_chart(
    root: &Path,
    base: &str,
    v: Version,
    say: &dyn Fn(&str),
) -> Result<Artifact, BundleError> {
    let name = format!("cilium-{v}.tgz");
    let base = base.trim_end_matches('/');
    let url = format!("{base}/{name}");
    say(&format!("downloading {url}"));
    let tgz = fetch(&url)?;
    let index = String::from_utf8_lossy(&fetch(&format!("{base}/index.yaml"))?).into_owned();
    let want = chart_digest(&index, &v.to_string()).ok_or_else(|| {
        fail("chart")(format!("{base}/index.yaml lists no digest for cilium {v}"))
    })?;
    let got = sha256_hex(&tgz);
    if want != got {
        return Err(fail("chart")(format!(
            "{name}: SHA-256 {got}, index.yaml says {want}"
        )));
    }
    let dir = root.join("charts");
    std::fs::create_dir_all(&dir).map_err(|e| fail("chart")(e.to_string()))?;
    let to = dir.join(&name);
    crate::files::write(&to, &tgz).map_err(|e| fail("chart")(e.to_string()))?;
    artifact(root, &to, &format!("{url} (digest from index.yaml)"))
}

/// The `digest:` of `version` in a Helm repository index (entries are lists of maps with
/// `version:` and `digest:` keys; read line by line to avoid parsing a 10 MB YAML). Only keys at
/// an entry's own indentation count: `helm repo index` writes chart annotations as multi-line
/// strings that hold `- kind:` and `version:` lines of their own, and lists (`keywords:`) whose
/// items sit at the keys' indentation.
pub fn chart_digest(index: &str, version: &str) -> Option<String> {
    let mut digest: Option<String> = None;
    let mut ver: Option<String> = None;
    // Indentation of the current entry's keys: the column after its `- `.
    let mut keys_at: Option<usize> = None;
    for line in index.lines() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim_start();
        let entry = keys_at.is_none_or(|k| indent + 2 == k);
        let key = if let Some(rest) = t.strip_prefix("- ").filter(|_| entry) {
            if ver.as_deref() == Some(version) && digest.is_some() {
                return digest;
            }
            digest = None;
            ver = None;
            keys_at = Some(indent + 2);
            rest
        } else if Some(indent) == keys_at {
            t
        } else {
            continue;
        };
        if let Some(d) = key.strip_prefix("digest:") {
            digest = Some(d.trim().trim_matches('"').to_string());
        } else if let Some(v) = key.strip_prefix("version:") {
            ver = Some(v.trim().trim_matches('"').to_string());
        }
    }
    (ver.as_deref() == Some(version))
        .then_some(digest)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_digest_from_index() {
        let idx = "apiVersion: v1\nentries:\n  cilium:\n  - apiVersion: v2\n    appVersion: 1.19.6\n    digest: aaa\n    name: cilium\n    version: 1.19.6\n  - apiVersion: v2\n    digest: \"bbb\"\n    name: cilium\n    version: 1.18.12\n";
        assert_eq!(chart_digest(idx, "1.19.6").as_deref(), Some("aaa"));
        assert_eq!(chart_digest(idx, "1.18.12").as_deref(), Some("bbb"));
        assert_eq!(chart_digest(idx, "1.17.0"), None);
    }

    #[test]
    fn chart_digest_skips_annotation_text() {
        // As `helm repo index` writes it: an annotation string whose continuation lines hold
        // `- kind:` and `version:` of their own.
        let idx = "apiVersion: v1\nentries:\n  cilium:\n  - annotations:\n      artifacthub.io/crds: \"- kind: CiliumNode\\n  version: v2\\n\n        \\ name: x\\n- kind: CiliumEndpointSlice\\n\n        \\ version: v2alpha1\\n\"\n    apiVersion: v2\n    digest: a1bd\n    keywords:\n    - BPF\n    name: cilium\n    version: 1.19.7\n  - annotations: {}\n    digest: f820\n    version: 1.18.11\ngenerated: \"2026-12-06T10:00:00Z\"\n";
        assert_eq!(chart_digest(idx, "1.19.7").as_deref(), Some("a1bd"));
        assert_eq!(chart_digest(idx, "1.18.11").as_deref(), Some("f820"));
        assert_eq!(chart_digest(idx, "v2"), None);
    }
}

#[cfg(test)]
mod files_repo_tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        sha256_hex(data)
    }

    /// A files repository with kubelet/kubeadm/kubectl 1.34.4 and crictl 1.34.0, each with its
    /// checksum file, laid out like the download sites.
    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for name in ["kubelet", "kubeadm", "kubectl"] {
            let p = d.path().join(files_repo_path(name, "1.34.4"));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            let body = format!("#!/bin/sh\necho {name}\n");
            std::fs::write(&p, &body).expect("write");
            std::fs::write(
                p.with_file_name(format!("{name}.sha256")),
                sha(body.as_bytes()),
            )
            .expect("sum");
        }
        let tgz = d.path().join(files_repo_path("crictl", "1.34.0"));
        std::fs::create_dir_all(tgz.parent().expect("parent")).expect("mkdir");
        let src = d.path().join("crictl-src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("crictl"), "crictl binary").expect("write");
        let ok = Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&src)
            .arg("crictl")
            .status()
            .expect("tar");
        assert!(ok.success());
        let data = std::fs::read(&tgz).expect("read");
        std::fs::write(
            format!("{}.sha256", tgz.display()),
            format!("{}  crictl-v1.34.0-linux-amd64.tar.gz\n", sha(&data)),
        )
        .expect("sum");
        d
    }

    #[test]
    fn binaries_come_from_the_files_repo_verified() {
        let r = repo();
        let out = tempfile::tempdir().expect("out");
        let got = fetch_kubernetes_binaries(
            out.path(),
            &format!("file://{}", r.path().display()),
            Version::new(1, 34, 4),
            Some("v1.34.0"),
            &|_| {},
        )
        .expect("fetch");
        let files: Vec<&str> = got.iter().map(|a| a.file.as_str()).collect();
        assert_eq!(
            files,
            ["bin/kubelet", "bin/kubeadm", "bin/kubectl", "bin/crictl"]
        );
        assert_eq!(
            std::fs::read_to_string(out.path().join("bin/crictl")).expect("crictl"),
            "crictl binary"
        );
        assert!(
            got[1]
                .source
                .contains("dl.k8s.io/release/v1.34.4/bin/linux/amd64/kubeadm")
        );
    }

    #[test]
    fn a_missing_binary_names_its_path_and_how_to_build_it() {
        let r = repo();
        std::fs::remove_file(r.path().join(files_repo_path("kubectl", "1.34.4"))).expect("rm");
        let out = tempfile::tempdir().expect("out");
        let e = fetch_kubernetes_binaries(
            out.path(),
            &r.path().display().to_string(),
            Version::new(1, 34, 4),
            Some("1.34.0"),
            &|_| {},
        )
        .expect_err("missing")
        .to_string();
        assert!(
            e.contains("dl.k8s.io/release/v1.34.4/bin/linux/amd64/kubectl")
                && e.contains("scripts/upstream-build.sh --kubernetes 1.34.4"),
            "{e}"
        );
        // crictl's default version follows the Kubernetes minor.
        let e = fetch_kubernetes_binaries(
            out.path(),
            &r.path().display().to_string(),
            Version::new(1, 35, 4),
            None,
            &|_| {},
        )
        .expect_err("missing")
        .to_string();
        assert!(e.contains("v1.35.4"), "{e}");
    }

    #[test]
    fn a_wrong_checksum_is_refused() {
        let r = repo();
        let p = r.path().join(files_repo_path("kubeadm", "1.34.4"));
        std::fs::write(&p, "tampered").expect("write");
        let out = tempfile::tempdir().expect("out");
        let e = fetch_kubernetes_binaries(
            out.path(),
            &r.path().display().to_string(),
            Version::new(1, 34, 4),
            Some("1.34.0"),
            &|_| {},
        )
        .expect_err("checksum")
        .to_string();
        assert!(
            e.contains("kubeadm: SHA-256") && e.contains("checksum file"),
            "{e}"
        );
    }
}
