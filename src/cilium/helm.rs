//! Typed Helm command lines for the Cilium release, run on the first control plane over SSH.
//!
//! Each command is an argv vector ([`HelmCommand::argv`]); [`HelmCommand::shell`] quotes it for
//! `sh -c` with [`crate::ssh::shell::quote`], and [`HelmCommand::ssh_command`] wraps it as an
//! [`crate::ssh::Command`] (privileged: kubeadm's `admin.conf` is readable by root only).
//!
//! Choices:
//! - No `--wait` on install or upgrade: kubedrill waits itself through the API
//!   ([`crate::k8s::wait`]), with per-node progress and a timeout error that names the object
//!   and its last status, which `--wait` cannot give.
//! - Upgrades always pass the complete values file kubedrill computed. `--reuse-values` is
//!   refused across minors ([`HelmError::ReuseValuesAcrossMinors`]): the new chart's defaults
//!   would be lost and renamed values would break its templates (Cilium's upgrade guide). With a
//!   values file and neither `--reuse-values` nor `--reset-values`, Helm 3 starts from the new
//!   chart's defaults and applies the file, which is what kubedrill wants; `--reset-values` is
//!   therefore not needed and not used.
//! - Upgrades go one minor at a time and never backwards ([`HelmError::SkipsMinor`],
//!   [`HelmError::Downgrade`]); going back is `helm rollback`.
//! - The pre-flight release (`cilium-preflight`) is the same chart with
//!   `preflight.enabled=true`, `agent=false`, `operator.enabled=false`, plus `k8sServiceHost` /
//!   `k8sServicePort` when kube-proxy is absent (the pre-flight pods cannot reach the API
//!   through a ClusterIP without kube-proxy). These keys exist in every chart 1.11–1.20 (in 1.11
//!   and 1.12 `k8sServiceHost/Port` are commented-out defaults the templates still read). The
//!   pre-flight image is `preflight.image`, whose default tag and digest are the chart's own
//!   release, so the chart version selects the image; [`PreflightOptions::image_tag`] overrides
//!   it (and turns `useDigest` off, or the chart's digest would win). From chart 1.16 the
//!   standalone `cilium-envoy` DaemonSet is not rendered when `preflight.enabled` is set; from
//!   1.18 the pre-flight DaemonSet also pre-pulls the Envoy image (`preflight.envoy.image`).

use crate::k8s::KUBE_SYSTEM;
use crate::spec::{Endpoint, Version};
use crate::ssh;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The Cilium release's name.
pub const RELEASE: &str = "cilium";
/// The upgrade pre-flight release's name.
pub const PREFLIGHT_RELEASE: &str = "cilium-preflight";
/// The repository chart (after `helm repo add cilium https://helm.cilium.io/`).
pub const REPO_CHART: &str = "cilium/cilium";
/// Where kubeadm writes the admin kubeconfig on control planes.
pub const ADMIN_KUBECONFIG: &str = "/etc/kubernetes/admin.conf";

/// What Helm prints when an overloaded API server, not the release, failed a request: the
/// stream of the release's secrets dropped ("… Please retry", the first real drill), the API
/// server's own 60 s request limit (the ninth lab run's `helm upgrade --install` after 529 s at
/// load 14), its "unable to return a response in the time allotted", etcd timing out. Helm's
/// commands are declarative: the same command again converges on the same release.
pub const TRANSIENT_API_ERRORS: &[&str] = &[
    "may be caused by closed connection. Please retry",
    "Timeout: request did not complete within requested timeout",
    "the server was unable to return a response in the time allotted",
    "etcdserver: request timed out",
];

/// Whether Helm's output names only an overloaded API server ([`TRANSIENT_API_ERRORS`]).
pub fn transient(output: &str) -> bool {
    TRANSIENT_API_ERRORS.iter().any(|e| output.contains(e))
}

/// A shell snippet running `cmd` (a Helm command line) up to `attempts` times while it fails
/// with one of [`TRANSIENT_API_ERRORS`], `pause_secs` apart; any other failure ends it at once.
pub fn retrying(cmd: &str, attempts: u32, pause_secs: u32) -> String {
    let patterns: Vec<String> = TRANSIENT_API_ERRORS
        .iter()
        .map(|e| format!("*'{e}'*"))
        .collect();
    format!(
        "n=1
         while :; do
           if out=$({cmd} 2>&1); then printf '%s\n' \"$out\"; break; fi
           printf '%s\n' \"$out\" >&2
           case \"$out\" in {}) ;; *) exit 1 ;; esac
           [ \"$n\" -lt {attempts} ] || exit 1
           n=$((n + 1))
           echo \"the API server did not answer in time; the same helm command again in {pause_secs} s (attempt $n of {attempts})\" >&2
           sleep {pause_secs}
         done
",
        patterns.join("|")
    )
}

/// Why a Helm command cannot be built, or its output not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelmError {
    /// `--reuse-values` across minors would drop the new chart's defaults.
    #[error(
        "refusing `helm upgrade --reuse-values` from {from} to {to}: across minor releases the new chart's defaults would be lost and renamed values break its templates; upgrade with the complete values file instead"
    )]
    ReuseValuesAcrossMinors {
        /// Deployed version.
        from: Version,
        /// Target version.
        to: Version,
    },
    /// More than one minor at a time.
    #[error(
        "refusing to upgrade Cilium from {from} to {to} in one step: upgrade one minor release at a time (to the latest {}.{} patch first)",
        from.major,
        from.minor
    )]
    SkipsMinor {
        /// Deployed version.
        from: Version,
        /// Target version.
        to: Version,
    },
    /// Target older than deployed.
    #[error(
        "refusing to \"upgrade\" Cilium from {from} down to {to}: roll back with `helm rollback` to the revision that ran {to}"
    )]
    Downgrade {
        /// Deployed version.
        from: Version,
        /// Target version.
        to: Version,
    },
    /// A chart archive whose file name names another version.
    #[error("chart archive {path} is named for Cilium {named}, not {wanted}")]
    ArchiveVersion {
        /// The archive.
        path: String,
        /// The version in its name.
        named: Version,
        /// The version asked for.
        wanted: Version,
    },
    /// `helm rollback` needs a revision ≥ 1.
    #[error("helm rollback needs a revision number of 1 or more, got {0}")]
    BadRevision(u32),
    /// Helm's output did not parse.
    #[error("reading `helm {command}` output: {message}")]
    Output {
        /// The helm verb.
        command: &'static str,
        /// The parser's message.
        message: String,
    },
}

/// Where the chart comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "ref", rename_all = "kebab-case")]
pub enum ChartSource {
    /// A packaged chart already on the control plane (`.../cilium-1.16.5.tgz`).
    Archive(String),
    /// A repository chart, e.g. `cilium/cilium`.
    Repo(String),
}

/// A chart at a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chart {
    /// Where from.
    pub source: ChartSource,
    /// Its version (= the Cilium version).
    pub version: Version,
}

impl Chart {
    /// `cilium/cilium` at `version` (`--version X.Y.Z`).
    pub fn repo(version: Version) -> Self {
        Chart {
            source: ChartSource::Repo(REPO_CHART.to_owned()),
            version,
        }
    }

    /// A local archive on the control plane. When its file name has the usual
    /// `cilium-X.Y.Z.tgz` form, the version in it must be `version`.
    pub fn archive(path: impl Into<String>, version: Version) -> Result<Self, HelmError> {
        let path = path.into();
        let file = path.rsplit('/').next().unwrap_or(&path);
        if let Some(named) = file
            .strip_prefix("cilium-")
            .and_then(|r| r.strip_suffix(".tgz"))
            .and_then(|v| v.parse::<Version>().ok())
            && named != version
        {
            return Err(HelmError::ArchiveVersion {
                path,
                named,
                wanted: version,
            });
        }
        Ok(Chart {
            source: ChartSource::Archive(path),
            version,
        })
    }

    /// The chart argument(s): the archive path, or the repo chart and `--version X.Y.Z`.
    fn args(&self) -> Vec<String> {
        match &self.source {
            ChartSource::Archive(p) => vec![p.clone()],
            ChartSource::Repo(r) => vec![r.clone(), "--version".into(), self.version.to_string()],
        }
    }
}

/// One Helm invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelmCommand {
    argv: Vec<String>,
    read_only: bool,
}

impl HelmCommand {
    /// The argument vector, program first.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Only reads (history, status, get values): safe to retry.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The command as one POSIX shell line, each word quoted.
    pub fn shell(&self) -> String {
        self.argv
            .iter()
            .map(|a| ssh::shell::quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The command for [`ssh::Session::exec`]: privileged, labelled, and idempotent when it
    /// only reads. Stdout may hold a whole release document (`helm status -o json` carries the
    /// chart's templates and manifest), so it gets the large output limit.
    pub fn ssh_command(&self) -> ssh::Command {
        let cmd = ssh::Command::new(self.shell())
            .privileged()
            .label(self.shell())
            .stdout_limit(ssh::OutputLimit::LARGE);
        if self.read_only {
            cmd.idempotent()
        } else {
            cmd
        }
    }
}

impl fmt::Display for HelmCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shell())
    }
}

/// Which release a command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Release {
    /// `cilium`.
    Cilium,
    /// `cilium-preflight`.
    Preflight,
}

impl Release {
    /// The release name.
    pub fn name(self) -> &'static str {
        match self {
            Release::Cilium => RELEASE,
            Release::Preflight => PREFLIGHT_RELEASE,
        }
    }
}

/// How `helm upgrade` gets its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpgradeValues {
    /// The complete values file kubedrill computed (the only choice across minors).
    File(String),
    /// `--reuse-values` plus this file of overrides: only between patches of one minor.
    ReuseWith(String),
}

/// Options of the pre-flight release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PreflightOptions {
    /// The API server for pods when kube-proxy is absent (`k8sServiceHost/Port`).
    pub api_server: Option<Endpoint>,
    /// Override the pre-flight image tag (`preflight.image.tag`, with `useDigest=false`).
    pub image_tag: Option<String>,
    /// The values file the upgrade will pass (on the node): the pre-flight then pulls the same
    /// images from the same registry, and leaves out what the release leaves out (the Envoy
    /// pre-pull of `envoy.enabled: false`, which an air gap without that image never pulls —
    /// seen on the lab: ImagePullBackOff for `cilium-envoy@sha256:…`).
    pub values: Option<String>,
}

/// Helm on the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helm {
    binary: String,
    kubeconfig: Option<String>,
}

impl Default for Helm {
    /// `helm` from `PATH` with kubeadm's admin kubeconfig.
    fn default() -> Self {
        Helm {
            binary: "helm".to_owned(),
            kubeconfig: Some(ADMIN_KUBECONFIG.to_owned()),
        }
    }
}

impl Helm {
    /// A helm binary and kubeconfig (`None`: helm's own default, `$KUBECONFIG`).
    pub fn new(binary: impl Into<String>, kubeconfig: Option<String>) -> Self {
        Helm {
            binary: binary.into(),
            kubeconfig,
        }
    }

    fn cmd(&self, words: &[&str], read_only: bool) -> HelmCommand {
        let mut argv = vec![self.binary.clone()];
        argv.extend(words.iter().map(|w| (*w).to_owned()));
        HelmCommand { argv, read_only }
    }

    /// `--namespace kube-system [--kubeconfig FILE]`, appended last.
    fn finish(&self, mut c: HelmCommand) -> HelmCommand {
        c.argv.push("--namespace".into());
        c.argv.push(KUBE_SYSTEM.into());
        if let Some(k) = &self.kubeconfig {
            c.argv.push("--kubeconfig".into());
            c.argv.push(k.clone());
        }
        c
    }

    /// `helm install cilium CHART [--version V] --values FILE`.
    pub fn install(&self, chart: &Chart, values_file: &str) -> HelmCommand {
        let mut c = self.cmd(&["install", RELEASE], false);
        c.argv.extend(chart.args());
        c.argv
            .extend(["--values".to_owned(), values_file.to_owned()]);
        self.finish(c)
    }

    /// `helm upgrade cilium CHART [--version V] [--reuse-values] --values FILE`, from the
    /// deployed version to the chart's: refused across more than one minor, backwards, or with
    /// `--reuse-values` across a minor.
    pub fn upgrade(
        &self,
        chart: &Chart,
        deployed: Version,
        values: &UpgradeValues,
    ) -> Result<HelmCommand, HelmError> {
        let to = chart.version;
        if to < deployed {
            return Err(HelmError::Downgrade { from: deployed, to });
        }
        let same_minor = to.minor_pair() == deployed.minor_pair();
        let next_minor = to.major == deployed.major && to.minor == deployed.minor + 1;
        if !same_minor && !next_minor {
            return Err(HelmError::SkipsMinor { from: deployed, to });
        }
        let mut c = self.cmd(&["upgrade", RELEASE], false);
        c.argv.extend(chart.args());
        let file = match values {
            UpgradeValues::File(f) => f,
            UpgradeValues::ReuseWith(f) => {
                if !same_minor {
                    return Err(HelmError::ReuseValuesAcrossMinors { from: deployed, to });
                }
                c.argv.push("--reuse-values".into());
                f
            }
        };
        c.argv.extend(["--values".to_owned(), file.clone()]);
        Ok(self.finish(c))
    }

    /// `helm upgrade` for a step the user forced across minors the release table lacks
    /// (`drill run --force`): the one-minor-at-a-time rule is waived, a downgrade is still
    /// refused, and only the complete values file is accepted (never `--reuse-values`).
    pub fn upgrade_forced(
        &self,
        chart: &Chart,
        deployed: Version,
        values_file: &str,
    ) -> Result<HelmCommand, HelmError> {
        let to = chart.version;
        if to < deployed {
            return Err(HelmError::Downgrade { from: deployed, to });
        }
        let mut c = self.cmd(&["upgrade", RELEASE], false);
        c.argv.extend(chart.args());
        c.argv
            .extend(["--values".to_owned(), values_file.to_owned()]);
        Ok(self.finish(c))
    }

    /// `helm rollback cilium REV`.
    pub fn rollback(&self, revision: u32) -> Result<HelmCommand, HelmError> {
        if revision == 0 {
            return Err(HelmError::BadRevision(revision));
        }
        let rev = revision.to_string();
        Ok(self.finish(self.cmd(&["rollback", RELEASE, &rev], false)))
    }

    /// `helm history cilium --output json` (read with [`parse_history`]).
    pub fn history(&self) -> HelmCommand {
        self.finish(self.cmd(&["history", RELEASE, "--output", "json"], true))
    }

    /// `helm get values cilium --output yaml [--all]`: the user-supplied values, or with `all`
    /// the computed ones (chart defaults merged).
    pub fn get_values(&self, all: bool) -> HelmCommand {
        let mut words = vec!["get", "values", RELEASE, "--output", "yaml"];
        if all {
            words.push("--all");
        }
        self.finish(self.cmd(&words, true))
    }

    /// `helm get manifest cilium`: the objects the deployed revision created, as Helm rendered them.
    pub fn get_manifest(&self) -> HelmCommand {
        self.finish(self.cmd(&["get", "manifest", RELEASE], true))
    }

    /// `helm template cilium CHART [--version V] --values FILE…`: what an upgrade with these
    /// values would deploy, rendered without touching the cluster.
    pub fn template(&self, chart: &Chart, values_files: &[&str]) -> HelmCommand {
        let mut c = self.cmd(&["template", RELEASE], true);
        c.argv.extend(chart.args());
        for f in values_files {
            c.argv.extend(["--values".to_owned(), (*f).to_owned()]);
        }
        self.finish(c)
    }

    /// `helm status RELEASE --output json` (read with [`parse_status`]).
    pub fn status(&self, release: Release) -> HelmCommand {
        self.finish(self.cmd(&["status", release.name(), "--output", "json"], true))
    }

    /// `helm uninstall RELEASE`.
    pub fn uninstall(&self, release: Release) -> HelmCommand {
        self.finish(self.cmd(&["uninstall", release.name()], false))
    }

    /// `helm install cilium-preflight CHART [--version V] --set preflight.enabled=true
    /// --set agent=false --set operator.enabled=false [--set k8sServiceHost=H
    /// --set k8sServicePort=P] [--set preflight.image.tag=T --set preflight.image.useDigest=false]`.
    pub fn preflight_install(&self, chart: &Chart, opts: &PreflightOptions) -> HelmCommand {
        let mut c = self.cmd(&["install", PREFLIGHT_RELEASE], false);
        c.argv.extend(chart.args());
        if let Some(f) = &opts.values {
            c.argv.push("--values".into());
            c.argv.push(f.clone());
        }
        let mut set = |kv: String| {
            c.argv.push("--set".into());
            c.argv.push(kv);
        };
        set("preflight.enabled=true".into());
        set("agent=false".into());
        set("operator.enabled=false".into());
        if let Some(ep) = &opts.api_server {
            set(format!("k8sServiceHost={}", ep.host));
            set(format!("k8sServicePort={}", ep.port));
        }
        if let Some(tag) = &opts.image_tag {
            set(format!("preflight.image.tag={tag}"));
            set("preflight.image.useDigest=false".into());
        }
        self.finish(c)
    }
}

/// A Helm release status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseStatus {
    /// `deployed`.
    Deployed,
    /// `superseded`.
    Superseded,
    /// `failed`.
    Failed,
    /// `uninstalled`.
    Uninstalled,
    /// `uninstalling`.
    Uninstalling,
    /// `pending-install`.
    PendingInstall,
    /// `pending-upgrade`.
    PendingUpgrade,
    /// `pending-rollback`.
    PendingRollback,
    /// Anything else, verbatim.
    Other(String),
}

impl ReleaseStatus {
    fn parse(s: &str) -> Self {
        match s {
            "deployed" => ReleaseStatus::Deployed,
            "superseded" => ReleaseStatus::Superseded,
            "failed" => ReleaseStatus::Failed,
            "uninstalled" => ReleaseStatus::Uninstalled,
            "uninstalling" => ReleaseStatus::Uninstalling,
            "pending-install" => ReleaseStatus::PendingInstall,
            "pending-upgrade" => ReleaseStatus::PendingUpgrade,
            "pending-rollback" => ReleaseStatus::PendingRollback,
            other => ReleaseStatus::Other(other.to_owned()),
        }
    }

    /// A pending operation: another helm run is (or died) in the middle of this release.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            ReleaseStatus::PendingInstall
                | ReleaseStatus::PendingUpgrade
                | ReleaseStatus::PendingRollback
        )
    }
}

/// One revision of `helm history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revision {
    /// Revision number.
    pub revision: u32,
    /// When, as Helm prints it.
    pub updated: String,
    /// Status.
    pub status: ReleaseStatus,
    /// `cilium-1.16.5`.
    pub chart: String,
    /// The chart version from `chart`.
    pub chart_version: Option<Version>,
    /// App version.
    pub app_version: String,
    /// Helm's description (`Install complete`, `Upgrade complete`, `Rollback to 2`, ...).
    pub description: String,
}

/// A release's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct History(pub Vec<Revision>);

impl History {
    /// The revision in force (`deployed`), newest if several.
    pub fn deployed(&self) -> Option<&Revision> {
        self.0
            .iter()
            .rev()
            .find(|r| r.status == ReleaseStatus::Deployed)
    }

    /// The revision a rollback returns to: the newest `superseded` one before the deployed one.
    pub fn rollback_target(&self) -> Option<&Revision> {
        let current = self.deployed()?.revision;
        self.0
            .iter()
            .rev()
            .find(|r| r.revision < current && r.status == ReleaseStatus::Superseded)
    }

    /// The newest revision that ran this chart version (for rolling back to a version).
    pub fn last_with_version(&self, version: Version) -> Option<&Revision> {
        self.0
            .iter()
            .rev()
            .find(|r| r.chart_version == Some(version))
    }
}

#[derive(Deserialize)]
struct RawRevision {
    revision: u32,
    #[serde(default)]
    updated: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    chart: String,
    #[serde(default)]
    app_version: String,
    #[serde(default)]
    description: String,
}

/// `helm history RELEASE --output json`, sorted by revision.
pub fn parse_history(json: &str) -> Result<History, HelmError> {
    let raw: Vec<RawRevision> =
        serde_json::from_str(json.trim()).map_err(|e| HelmError::Output {
            command: "history",
            message: e.to_string(),
        })?;
    let mut revs: Vec<Revision> = raw
        .into_iter()
        .map(|r| Revision {
            chart_version: r.chart.rsplit_once('-').and_then(|(_, v)| v.parse().ok()),
            revision: r.revision,
            updated: r.updated,
            status: ReleaseStatus::parse(&r.status),
            chart: r.chart,
            app_version: r.app_version,
            description: r.description,
        })
        .collect();
    revs.sort_by_key(|r| r.revision);
    Ok(History(revs))
}

/// The useful part of `helm status RELEASE --output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseInfo {
    /// Release name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Current revision.
    pub revision: u32,
    /// Status.
    pub status: ReleaseStatus,
    /// Chart version, when the output has the chart. Helm 3.17 and Helm 4 leave the chart out of
    /// `helm status` (checked in tests/k8s_real.rs), so with them this is `None`: take the
    /// version from [`History::deployed`] (`helm history`) instead.
    pub chart_version: Option<Version>,
    /// Helm's description of the last operation.
    pub description: String,
}

#[derive(Deserialize)]
struct RawStatus {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    version: u32,
    #[serde(default)]
    info: RawInfo,
    #[serde(default)]
    chart: Option<RawChart>,
}

#[derive(Deserialize, Default)]
struct RawInfo {
    #[serde(default)]
    status: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct RawChart {
    metadata: Option<RawMeta>,
}

#[derive(Deserialize)]
struct RawMeta {
    version: Option<String>,
}

/// `helm status RELEASE --output json`.
pub fn parse_status(json: &str) -> Result<ReleaseInfo, HelmError> {
    let raw: RawStatus = serde_json::from_str(json.trim()).map_err(|e| HelmError::Output {
        command: "status",
        message: e.to_string(),
    })?;
    Ok(ReleaseInfo {
        name: raw.name,
        namespace: raw.namespace,
        revision: raw.version,
        status: ReleaseStatus::parse(&raw.info.status),
        chart_version: raw
            .chart
            .and_then(|c| c.metadata)
            .and_then(|m| m.version)
            .and_then(|v| v.parse().ok()),
        description: raw.info.description,
    })
}

/// `helm get values ... --output yaml` as data (`null`, for no user values, is an empty map).
pub fn parse_values(yaml: &str) -> Result<serde_json::Value, HelmError> {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).map_err(|e| HelmError::Output {
        command: "get values",
        message: e.to_string(),
    })?;
    Ok(match v {
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The retry loop under `sh`, with a stand-in Helm that fails as told: transient failures are
    /// tried again up to the limit, anything else ends it at once, success prints Helm's output.
    #[test]
    fn the_retry_loop_repeats_only_transient_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |failures: &str, attempts: u32| {
            let script = dir.path().join("helm.sh");
            let count = dir.path().join("count");
            let _ = std::fs::remove_file(&count);
            // Fails with the n-th line of `failures` on the n-th call, succeeds past the end.
            std::fs::write(
                &script,
                format!(
                    "n=$(($(cat {c} 2>/dev/null || echo 0) + 1)); echo $n > {c}\nmsg=$(printf '%s\\n' {f} | sed -n ${{n}}p)\n[ -z \"$msg\" ] && {{ echo deployed; exit 0; }}\necho \"Error: $msg\" >&2; exit 1\n",
                    c = count.display(),
                    f = crate::ssh::shell::quote(failures)
                ),
            )
            .expect("stand-in");
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(retrying(&format!("sh {}", script.display()), attempts, 0))
                .output()
                .expect("sh");
            let calls: u32 = std::fs::read_to_string(&count)
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or(0);
            (
                o.status.success(),
                calls,
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        };
        let timeout = "1 error occurred: * Timeout: request did not complete within requested timeout - context deadline exceeded";
        let (ok, calls, out) = run(&format!("{timeout}\n{timeout}"), 3);
        assert!(
            ok && calls == 3 && out.trim() == "deployed",
            "{ok} {calls} {out}"
        );
        let (ok, calls, _) = run(&format!("{timeout}\n{timeout}\n{timeout}"), 3);
        assert!(!ok && calls == 3, "gives up after 3: {ok} {calls}");
        let (ok, calls, _) = run(
            "cannot patch \"cilium\" with kind DaemonSet: field is immutable",
            3,
        );
        assert!(
            !ok && calls == 1,
            "a real failure is not repeated: {ok} {calls}"
        );
        assert!(transient(
            "stream error when reading response body, may be caused by closed connection. Please retry."
        ));
        assert!(!transient("Error: context deadline exceeded"));
    }

    #[test]
    fn archive_names_must_agree() {
        let v = Version::new(1, 16, 5);
        assert!(Chart::archive("/var/lib/kubedrill/cilium-1.16.5.tgz", v).is_ok());
        assert!(Chart::archive("/srv/charts/my-cilium.tgz", v).is_ok());
        assert_eq!(
            Chart::archive("/var/lib/kubedrill/cilium-1.15.9.tgz", v),
            Err(HelmError::ArchiveVersion {
                path: "/var/lib/kubedrill/cilium-1.15.9.tgz".into(),
                named: Version::new(1, 15, 9),
                wanted: v
            })
        );
    }

    #[test]
    fn forced_upgrades_skip_minors_but_never_go_down() {
        let h = Helm::default();
        let from = Version::new(1, 14, 19);
        let c = h
            .upgrade_forced(&Chart::repo(Version::new(1, 16, 19)), from, "/v.yaml")
            .expect("forced");
        assert!(c.shell().starts_with(
            "helm upgrade cilium cilium/cilium --version 1.16.19 --values /v.yaml --namespace kube-system"
        ));
        assert!(!c.argv().iter().any(|a| a == "--reuse-values"));
        assert!(
            h.upgrade(
                &Chart::repo(Version::new(1, 16, 19)),
                from,
                &UpgradeValues::File("/v.yaml".into())
            )
            .is_err()
        );
        assert_eq!(
            h.upgrade_forced(&Chart::repo(Version::new(1, 13, 0)), from, "/v.yaml"),
            Err(HelmError::Downgrade {
                from,
                to: Version::new(1, 13, 0)
            })
        );
    }

    #[test]
    fn rollback_revision_zero_is_refused() {
        assert_eq!(Helm::default().rollback(0), Err(HelmError::BadRevision(0)));
    }

    #[test]
    fn values_null_is_empty() {
        assert_eq!(parse_values("null\n"), Ok(serde_json::json!({})));
        assert!(parse_values("a: [1\n").is_err());
    }
}
