//! Deliberate failures during a drill (`drill.faults`), to prove that its measures can fail: an
//! agent killed in the middle of the rollout, a node's link dropped, a value every new agent
//! refuses. Each fires during the first upgrade step — the first Cilium step, or in a drill that
//! upgrades only Kubernetes, the first control plane's upgrade (bad-value needs a Cilium step) —;
//! the run record lists what was injected and when, next to what the probes, the rollout watch
//! and the verdict made of it.
//!
//! ```yaml
//! drill:
//!   faults:
//!     - {kind: kill-agent, node: w1, after_secs: 30}   # SIGKILL its cilium-agent
//!     - {kind: link-down, node: w1, after_secs: 30, secs: 5}
//!     - {kind: bad-value}                              # the new agents crash-loop
//! ```

use crate::diag::Diagnostics;
use crate::ssh::shell::quote;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use serde_saphyr::Spanned;
use std::path::PathBuf;
use std::sync::Arc;

/// Seconds into the upgrade step when `after_secs` is not given.
pub const DEFAULT_AFTER_SECS: u64 = 20;
/// The agent flag the `bad-value` fault adds: unknown to every agent, which then exits at once.
pub const BAD_FLAG: &str = "--kubedrill-injected-fault";

/// One deliberate failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL the node's `cilium-agent`, `after_secs` into the first upgrade step.
    KillAgent {
        /// Inventory host name.
        node: String,
        /// Seconds after the step began (`helm upgrade` returned, or the first control
        /// plane's Kubernetes upgrade was confirmed).
        after_secs: u64,
    },
    /// The node's default-route link down for `secs`, `after_secs` into the step.
    LinkDown {
        /// Inventory host name.
        node: String,
        /// Seconds after the step began (as for kill-agent).
        after_secs: u64,
        /// How long the link stays down (1–600).
        secs: u64,
    },
    /// The first step's values get an agent flag no agent knows: the new agents crash-loop, the
    /// rollout never completes, and the rollback policy decides.
    BadValue,
}

impl Fault {
    /// The node it acts on, if one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Fault::KillAgent { node, .. } | Fault::LinkDown { node, .. } => Some(node),
            Fault::BadValue => None,
        }
    }

    /// Seconds into the upgrade step, for the faults that act on a node.
    pub fn after_secs(&self) -> Option<u64> {
        match self {
            Fault::KillAgent { after_secs, .. } | Fault::LinkDown { after_secs, .. } => {
                Some(*after_secs)
            }
            Fault::BadValue => None,
        }
    }

    /// Its kind as written in the drill file and the record.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillAgent { .. } => "kill-agent",
            Fault::LinkDown { .. } => "link-down",
            Fault::BadValue => "bad-value",
        }
    }

    /// What it does, for progress lines and the record.
    pub fn describe(&self) -> String {
        match self {
            Fault::KillAgent { node, .. } => format!("SIGKILL cilium-agent on {node}"),
            Fault::LinkDown { node, secs, .. } => {
                format!("{node}'s default-route link down for {secs} s")
            }
            Fault::BadValue => format!("agent flag `{BAD_FLAG}` in the upgrade's values"),
        }
    }

    /// The command that injects it on its node. A link goes down on the interface of the
    /// node's IPv4 default route and comes back by a detached shell on the node (losing the SSH
    /// connection with it cannot leave the node cut off), which also puts the default routes
    /// back: the kernel drops them with the link.
    pub fn command(&self) -> Option<String> {
        match self {
            Fault::KillAgent { .. } => Some(
                "pids=$(pidof cilium-agent) || { echo 'no cilium-agent running' >&2; exit 1; }; kill -KILL $pids; echo \"killed cilium-agent $pids\"".to_owned(),
            ),
            Fault::LinkDown { secs, .. } => {
                let restore = "ip link set dev \"$0\" down; sleep \"$1\"; ip link set dev \"$0\" up; printf '%s\\n' \"$2\" | while read -r r; do [ -n \"$r\" ] && ip route replace $r dev \"$0\"; done";
                Some(format!(
                    "dev=$(ip -4 route show default | awk '{{for (i = 1; i < NF; i++) if ($i == \"dev\") {{print $(i + 1); exit}}}}'); \
                     [ -n \"$dev\" ] || {{ echo 'no IPv4 default route' >&2; exit 1; }}; \
                     saved=$(ip -4 route show default dev \"$dev\"); \
                     nohup sh -c {} \"$dev\" {secs} \"$saved\" >/dev/null 2>&1 </dev/null & \
                     echo \"$dev down for {secs} s\"",
                    quote(restore)
                ))
            }
            Fault::BadValue => None,
        }
    }
}

/// Add the `bad-value` fault to a step's values: the agent's `extraArgs` get [`BAD_FLAG`].
pub fn inject_bad_value(values: &mut Map<String, Value>) {
    let args = values
        .entry("extraArgs")
        .or_insert_with(|| Value::Array(Vec::new()));
    match args {
        Value::Array(list) => list.push(json!(BAD_FLAG)),
        other => *other = json!([BAD_FLAG]),
    }
}

/// One fault as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    kind: Spanned<String>,
    #[serde(default)]
    node: Option<Spanned<String>>,
    #[serde(default)]
    after_secs: Option<Spanned<u64>>,
    #[serde(default)]
    secs: Option<Spanned<u64>>,
}

/// Validate `drill.faults`; every finding names the file, the line and the field.
pub fn parse(file: &Arc<PathBuf>, raw: &[RawFault], d: &mut Diagnostics) -> Vec<Fault> {
    // The drill definition's own helpers: findings read the same everywhere in the section.
    let line = super::definition::line_of;
    let err = |line: Option<u32>, field: String, msg: String| {
        super::definition::err(file, line, &field, msg)
    };
    let mut out = Vec::new();
    let mut bad_value = false;
    for (i, f) in raw.iter().enumerate() {
        let at = |k: &str| format!("drill.faults[{i}].{k}");
        let kline = line(&f.kind);
        let after = match &f.after_secs {
            None => DEFAULT_AFTER_SECS,
            Some(a) if a.value > 3600 => {
                d.push(err(
                    kline,
                    at("after_secs"),
                    format!("{} s is outside 0..=3600", a.value),
                ));
                continue;
            }
            Some(a) => a.value,
        };
        let node = || match &f.node {
            Some(n) if !n.value.trim().is_empty() => Some(n.value.trim().to_owned()),
            _ => None,
        };
        match f.kind.value.as_str() {
            "kill-agent" | "link-down" => {
                let Some(node) = node() else {
                    d.push(
                        err(
                            kline,
                            at("node"),
                            format!("`{}` needs the node it acts on", f.kind.value),
                        )
                        .hint("name an inventory host, e.g. node: w1"),
                    );
                    continue;
                };
                if f.kind.value == "kill-agent" {
                    if f.secs.is_some() {
                        d.push(err(
                            kline,
                            at("secs"),
                            "only link-down lasts for `secs`".to_owned(),
                        ));
                        continue;
                    }
                    out.push(Fault::KillAgent {
                        node,
                        after_secs: after,
                    });
                } else {
                    match f.secs.as_ref().map(|s| s.value) {
                        Some(secs @ 1..=600) => out.push(Fault::LinkDown {
                            node,
                            after_secs: after,
                            secs,
                        }),
                        Some(s) => {
                            d.push(err(kline, at("secs"), format!("{s} s is outside 1..=600")))
                        }
                        None => d.push(err(
                            kline,
                            at("secs"),
                            "link-down needs how long the link stays down".to_owned(),
                        )),
                    }
                }
            }
            "bad-value" => {
                if f.node.is_some() || f.secs.is_some() || f.after_secs.is_some() {
                    d.push(err(
                        kline,
                        at("kind"),
                        "bad-value acts on every new agent through the values: no node, secs or after_secs".to_owned(),
                    ));
                } else if bad_value {
                    d.push(err(
                        kline,
                        at("kind"),
                        "bad-value is given twice".to_owned(),
                    ));
                } else {
                    bad_value = true;
                    out.push(Fault::BadValue);
                }
            }
            other => d.push(
                err(kline, at("kind"), format!("unknown fault `{other}`"))
                    .hint("use kill-agent, link-down or bad-value"),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Fault>, String> {
        let raw: Vec<RawFault> = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut d = Diagnostics::default();
        let f = parse(&Arc::new(PathBuf::from("labs/t.yaml")), &raw, &mut d);
        if d.has_errors() {
            return Err(d.to_string());
        }
        Ok(f)
    }

    #[test]
    fn faults_parse_with_defaults_and_findings_name_the_field() {
        let f = parse_text(
            "- {kind: kill-agent, node: w1}\n- {kind: link-down, node: w1, after_secs: 5, secs: 3}\n- {kind: bad-value}\n",
        )
        .expect("valid");
        assert_eq!(
            f,
            [
                Fault::KillAgent {
                    node: "w1".into(),
                    after_secs: DEFAULT_AFTER_SECS
                },
                Fault::LinkDown {
                    node: "w1".into(),
                    after_secs: 5,
                    secs: 3
                },
                Fault::BadValue
            ]
        );
        for (text, want) in [
            (
                "- {kind: kill-agent}\n",
                "labs/t.yaml:1: `drill.faults[0].node`",
            ),
            ("- {kind: link-down, node: w1}\n", "`drill.faults[0].secs`"),
            (
                "- {kind: link-down, node: w1, secs: 601}\n",
                "601 s is outside 1..=600",
            ),
            (
                "- {kind: bad-value, node: w1}\n",
                "no node, secs or after_secs",
            ),
            (
                "- {kind: bad-value}\n- {kind: bad-value}\n",
                "labs/t.yaml:2",
            ),
            ("- {kind: reboot, node: w1}\n", "unknown fault `reboot`"),
            (
                "- {kind: kill-agent, node: w1, secs: 2}\n",
                "only link-down",
            ),
        ] {
            let e = parse_text(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(parse_text("- {kind: kill-agent, node: w1, when: now}\n").is_err());
    }

    #[test]
    fn commands_and_the_bad_value() {
        let k = Fault::KillAgent {
            node: "w1".into(),
            after_secs: 1,
        };
        assert!(k.command().expect("cmd").contains("kill -KILL"));
        let l = Fault::LinkDown {
            node: "w1".into(),
            after_secs: 1,
            secs: 4,
        };
        let c = l.command().expect("cmd");
        assert!(c.contains(" 4 \"$saved\""), "{c}");
        assert_eq!(Fault::BadValue.command(), None);
        // The record's kind is the serialized tag.
        for f in [k.clone(), l.clone(), Fault::BadValue] {
            assert_eq!(serde_json::to_value(&f).expect("json")["kind"], f.kind());
        }
        let mut v =
            serde_json::from_str::<Map<String, Value>>(r#"{"extraArgs": ["--a"]}"#).expect("json");
        inject_bad_value(&mut v);
        assert_eq!(v["extraArgs"], json!(["--a", BAD_FLAG]));
        let mut v = Map::new();
        inject_bad_value(&mut v);
        assert_eq!(v["extraArgs"], json!([BAD_FLAG]));
    }

    /// The detached shell really brings the link back, in a network namespace of this test.
    #[test]
    fn link_down_restores_the_link_in_a_netns() {
        if !nix_root() {
            if std::env::var("KUBEDRILL_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("not root, and KUBEDRILL_REQUIRE_NETNS=1 requires the netns tests to run");
            }
            eprintln!("\n*** SKIP link_down_restores_the_link_in_a_netns: not root ***\n");
            return;
        }
        let ns = format!("kdfault{}", std::process::id());
        let sh = |c: &str| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(c)
                .output()
                .expect("sh")
        };
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &self.0])
                    .status();
            }
        }
        let _c = Cleanup(ns.clone());
        let o = sh(&format!(
            "ip netns add {ns} && ip -n {ns} link add d0 type veth peer name d1 && ip -n {ns} link set d1 up \
             && ip -n {ns} link set d0 up && ip -n {ns} addr add 10.251.0.2/24 dev d0 \
             && ip -n {ns} route add default via 10.251.0.1 dev d0"
        ));
        assert!(o.status.success(), "{o:?}");
        let l = Fault::LinkDown {
            node: "n".into(),
            after_secs: 0,
            secs: 1,
        };
        let cmd = l.command().expect("cmd");
        let o = sh(&format!("ip netns exec {ns} sh -c {}", quote(&cmd)));
        assert!(o.status.success(), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("d0 down for 1 s"),
            "{o:?}"
        );
        let up = || {
            String::from_utf8_lossy(&sh(&format!("ip -n {ns} -o link show d0")).stdout)
                .contains(",UP")
        };
        let default = || {
            String::from_utf8_lossy(&sh(&format!("ip -n {ns} -4 route show default")).stdout)
                .into_owned()
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!up(), "the link should be down");
        assert_eq!(
            default(),
            "",
            "the kernel drops the default route with the link"
        );
        std::thread::sleep(std::time::Duration::from_millis(1700));
        assert!(up(), "the link should be up again");
        assert!(
            default().contains("default via 10.251.0.1 dev d0"),
            "{}",
            default()
        );
    }

    fn nix_root() -> bool {
        std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
                .unwrap_or(false)
        })
    }
}
