//! `preflight`: the Helm values saved and migrated per step, charts, the Cilium pre-flight release.

#[allow(unused_imports)]
use super::super::*;

impl Ctx<'_> {
    pub(in crate::drill::engine) async fn preflight(&mut self) -> PhaseResult {
        let phase = "preflight";
        let d = self.d;
        let cp = self.cp.clone();
        // Cilium ↔ Kubernetes, before and after: an older Kubernetes than the release was tested
        // with is refused, a newer one is a warning (crate::cilium::compat cites the tables).
        for cilium in [d.drill.from, d.drill.to] {
            let pair = crate::cilium::compat::Pair::new(cilium, d.spec.kubernetes);
            if pair.compat.refused() {
                return Err(self.fail("(local)", phase, "Cilium ↔ Kubernetes compatibility", pair));
            }
            if pair.compat.warns() {
                self.say(&format!("  warning: {pair}"));
                self.notes.push(pair.to_string());
            }
        }
        let Some(client) = self.client() else {
            return Err(self.fail("(local)", phase, "kubernetes client", "not connected"));
        };
        // What runs now, and since when.
        let hist = self.history(phase).await?;
        let Some(dep) = hist.deployed().cloned() else {
            return Err(self.fail(
                &cp,
                phase,
                "helm history cilium",
                "no deployed revision of release cilium in kube-system",
            ));
        };
        if dep.chart_version != Some(d.drill.from) {
            return Err(self.fail(
                &cp,
                phase,
                "helm history cilium",
                format!(
                    "the cluster runs chart {} (revision {}), but the drill starts from Cilium {}: reset the lab to a snapshot at {} (--reset), or pass --from",
                    dep.chart, dep.revision, d.drill.from, d.drill.from
                ),
            ));
        }
        self.pre_revision = Some(dep.revision);
        let first_minor = hist
            .0
            .first()
            .and_then(|r| r.chart_version)
            .map_or(Minor::of(d.drill.from), Minor::of);

        // The values as deployed, kept in the run directory (0600: they may hold secrets).
        let values_text = self.helm(phase, &d.helm.get_values(false)).await?;
        let before_path = self.run_dir.join("values-before.yaml");
        if let Err(e) = crate::files::write_private(&before_path, values_text.as_bytes()) {
            return Err(self.fail(
                "(local)",
                phase,
                &format!("write {}", before_path.display()),
                e,
            ));
        }
        let mut current = match helm::parse_values(&values_text) {
            Ok(v) => v,
            Err(e) => return Err(self.fail(&cp, phase, "helm get values cilium", e)),
        };

        // kube-proxy now: only a kube-proxy-free cluster can see it come back.
        match kube_proxy::detect(&client).await {
            Ok(p) => {
                self.kube_proxy_absent_at_start = Some(p.is_absent());
                if !p.is_absent() {
                    self.notes.push(format!("kube-proxy at the start: {p}"));
                }
            }
            Err(e) => {
                let h = self.api_host();
                return Err(self.fail(&h, phase, "detect kube-proxy", e));
            }
        }

        // Values per step.
        let native_cidr = match &d.spec.cilium_intent.routing {
            RoutingMode::Native(n) => Some(ipnet::IpNet::V4(n.cidr)),
            RoutingMode::Tunnel(_) => None,
        };
        let extra = serde_json::Value::Object(d.drill.definition.values.clone());
        let steps = d.drill.plan.steps().to_vec();
        let mut step_values = BTreeMap::new();
        for step in &steps {
            let opts = MigrateOptions {
                keep_unknown: false,
                upgrade_compatibility: Some(first_minor),
                native_cidr,
            };
            let m = match migrate::migrate(&current, step.from(), step.to(), &opts) {
                Ok(m) => m,
                Err(e) => {
                    return Err(self.fail(
                        "(local)",
                        phase,
                        &format!("migrate values {} → {}", step.from(), step.to()),
                        e,
                    ));
                }
            };
            for w in &m.warnings {
                self.say(&format!("  warning: {w}"));
                self.notes.push(format!("values {step}: {w}"));
            }
            let mut merged = m.clone();
            crate::render::cilium::merge(&mut merged.values, &extra);
            // The bad-value fault goes into the first step's values only.
            if steps.first().map(|s| s.to()) == Some(step.to())
                && d.drill
                    .definition
                    .faults
                    .contains(&crate::drill::fault::Fault::BadValue)
            {
                if let serde_json::Value::Object(v) = &mut merged.values {
                    crate::drill::fault::inject_bad_value(v);
                }
                let f = crate::drill::fault::Fault::BadValue;
                self.say(&format!("  fault: {}", f.describe()));
                self.b.faults.push(FaultEvent {
                    at: now(),
                    kind: f.kind().to_owned(),
                    node: None,
                    detail: format!("{} (values of {step})", f.describe()),
                    injected: true,
                });
            }
            let diff = record::redact_diff(&migrate::diff(&current, &merged.values));
            self.say(&format!("  values {step}: {} changed line(s)", diff.len()));
            for l in &diff {
                self.say(&format!("    {l}"));
            }
            self.b.values_diff.push(format!("  # {step}"));
            self.b.values_diff.extend(diff);
            let yaml = match merged.values_yaml() {
                Ok(y) => y,
                Err(e) => return Err(self.fail("(local)", phase, "write the values as YAML", e)),
            };
            let local = self.run_dir.join(format!("values-{}.yaml", step.to()));
            if let Err(e) = crate::files::write_private(&local, yaml.as_bytes()) {
                return Err(self.fail("(local)", phase, &format!("write {}", local.display()), e));
            }
            let remote = format!("/etc/kubernetes/kubedrill/drill-values-{}.yaml", step.to());
            let Some(s) = self.host(&cp) else {
                return Err(self.fail(&cp, phase, "upload values", "no session"));
            };
            let mk = Command::new("mkdir -p /etc/kubernetes/kubedrill")
                .privileged()
                .idempotent();
            self.exec(&cp, phase, &mk).await?;
            if let Err(e) = s.upload(yaml.as_bytes(), &remote, 0o600, true).await {
                return Err(self.fail(&cp, phase, &format!("upload {remote}"), e));
            }
            self.remote_values.insert(step.to(), remote);
            current = merged.values.clone();
            step_values.insert(step.to(), merged);
        }

        // Charts: a bundled archive on the control plane, else the repository.
        let mut need_repo = false;
        for step in &steps {
            let v = step.to();
            let archive = format!("{CHART_DIR}/cilium-{v}.tgz");
            let has = match self.host(&cp) {
                Some(s) => s
                    .exec(
                        &Command::new(format!("test -f {}", quote(&archive)))
                            .privileged()
                            .idempotent(),
                    )
                    .await
                    .is_ok_and(|o| o.success()),
                None => false,
            };
            let chart = if has {
                Chart::archive(archive, v).ok()
            } else {
                None
            };
            let chart = chart.unwrap_or_else(|| {
                need_repo = true;
                Chart::repo(v)
            });
            self.charts.insert(v, chart);
        }
        if need_repo {
            let cmd = Command::new(
                "helm repo add cilium https://helm.cilium.io >/dev/null 2>&1 || true; helm repo update cilium >/dev/null",
            )
            .privileged()
            .label("helm repo add/update cilium")
            .timeout(d.timeouts.helm);
            self.exec(&cp, phase, &cmd).await?;
        }

        self.config_drift(phase, &steps, &mut step_values).await?;

        // The agents' datapath before anything changes.
        match agents::list_agents(&client).await {
            Ok(list) => {
                for a in list {
                    let Some(node) = a.node.clone() else { continue };
                    match agents::agent_status(&client, &a, d.timeouts.agent_status).await {
                        Ok(r) => {
                            self.b.before.insert(node, record::datapath_of(&r.status));
                        }
                        Err(e) => self
                            .notes
                            .push(format!("{node}: agent status before the upgrade: {e}")),
                    }
                }
            }
            Err(e) => self.notes.push(format!("agents before the upgrade: {e}")),
        }

        // The pre-flight of every step's version: pre-pull images, validate policies.
        let kpr_free = self.kube_proxy_absent_at_start == Some(true);
        for step in &steps {
            let v = step.to();
            let Some(chart) = self.charts.get(&v).cloned() else {
                continue;
            };
            if let Some(s) = self.host(&cp)
                && s.exec(&d.helm.status(Release::Preflight).ssh_command())
                    .await
                    .is_ok_and(|o| o.success())
            {
                self.say("  removing a cilium-preflight release left by an earlier run");
                self.helm(phase, &d.helm.uninstall(Release::Preflight))
                    .await?;
            }
            let opts = PreflightOptions {
                api_server: kpr_free.then(|| d.spec.endpoint.clone()),
                image_tag: None,
                values: self.remote_values.get(&v).cloned(),
            };
            self.helm(phase, &d.helm.preflight_install(&chart, &opts))
                .await?;
            let mut last = String::new();
            let progress = self.progress.clone();
            let waited =
                preflight::wait(&client, d.timeouts.preflight, Duration::from_secs(5), |r| {
                    let line = format!("  pre-flight {v}: {r}");
                    if line != last {
                        progress.println(&line);
                        last = line;
                    }
                })
                .await;
            // Uninstall in any case; a failed uninstall after a failed wait reports the wait.
            let un = self
                .helm(phase, &d.helm.uninstall(Release::Preflight))
                .await;
            if let Err(e) = waited {
                let h = self.api_host();
                return Err(self.fail(
                    &h,
                    phase,
                    &format!("wait for the Cilium {v} pre-flight"),
                    e,
                ));
            }
            un?;
        }
        Ok(PhaseOutcome::Ok)
    }

    /// Config drift, step by step: the agent settings the deployed release gives the agents now
    /// against the first step's chart rendered with that step's values, then each step against
    /// the next. With `pin_config`, the pins Helm shows to take effect go into the step's values
    /// (uploaded again). What cannot be computed is a note: the drift informs, the upgrade decides.
    async fn config_drift(
        &mut self,
        phase: &str,
        steps: &[crate::drill::path::Step],
        step_values: &mut BTreeMap<Version, migrate::Migration>,
    ) -> Result<(), Stop> {
        use crate::drill::drift::{self, AgentConfig};
        let d = self.d;
        let cp = self.cp.clone();
        let Some(s) = self.host(&cp) else {
            return Err(self.fail(&cp, phase, "config drift", "no session"));
        };
        let read = |cmd: Command| {
            let s = s.clone();
            async move {
                match s.exec(&cmd).await {
                    Ok(o) if o.success() => Ok(o.stdout_text()),
                    Ok(o) => Err(format!(
                        "{}: exit {}: {}",
                        cmd.label_text(),
                        o.status.map_or_else(
                            || o.signal.clone().unwrap_or_default(),
                            |c| c.to_string()
                        ),
                        o.stderr_text().trim()
                    )),
                    Err(e) => Err(format!("{}: {e}", cmd.label_text())),
                }
            }
        };
        let render = |what: String, cmd: HelmCommand| {
            let read = &read;
            async move {
                let text = read(cmd.ssh_command().timeout(d.timeouts.helm)).await?;
                AgentConfig::from_manifest(&what, &text).map_err(|e| e.to_string())
            }
        };
        let mut before = match render("the deployed release".into(), d.helm.get_manifest()).await {
            Ok(c) => c,
            Err(e) => {
                self.say(&format!("  config drift not computed: {e}"));
                self.notes.push(format!("config drift not computed: {e}"));
                return Ok(());
            }
        };
        for step in steps {
            let v = step.to();
            let (Some(chart), Some(values)) = (
                self.charts.get(&v).cloned(),
                self.remote_values.get(&v).cloned(),
            ) else {
                continue;
            };
            let after =
                match render(format!("chart {v}"), d.helm.template(&chart, &[&values])).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.notes.push(format!("config drift {step}: {e}"));
                        continue;
                    }
                };
            // Which value writes which key, from the step's own chart (an archive on the node).
            let paths = match &chart.source {
                helm::ChartSource::Archive(a) => {
                    let cmd = Command::new(format!(
                        "tar -xzOf {} cilium/templates/cilium-configmap.yaml",
                        quote(a)
                    ))
                    .privileged()
                    .idempotent()
                    .stdout_limit(crate::ssh::OutputLimit::LARGE);
                    match read(cmd).await {
                        Ok(t) => drift::value_paths(&t),
                        Err(e) => {
                            self.notes
                                .push(format!("config drift {step}: no pins: {e}"));
                            BTreeMap::new()
                        }
                    }
                }
                helm::ChartSource::Repo(_) => BTreeMap::new(),
            };
            let found = drift::diff(&before, &after, &paths);
            let mut next = after;
            let mut pinned = Vec::new();
            if d.drill.definition.pin_config && found.changes.iter().any(|c| c.pin.is_some()) {
                let pins_remote = format!("/etc/kubernetes/kubedrill/drill-pins-{v}.json");
                let body = serde_json::to_vec(&found.pins()).unwrap_or_default();
                if let Err(e) = s.upload(&body, &pins_remote, 0o600, true).await {
                    return Err(self.fail(&cp, phase, &format!("upload {pins_remote}"), e));
                }
                match render(
                    format!("chart {v} pinned"),
                    d.helm.template(&chart, &[&values, &pins_remote]),
                )
                .await
                {
                    Ok(with_pins) => {
                        pinned = found.pins_that_hold(&with_pins);
                        if let Some(m) = step_values.get_mut(&v) {
                            crate::render::cilium::merge(&mut m.values, &found.pins_of(&pinned));
                            let yaml = match m.values_yaml() {
                                Ok(y) => y,
                                Err(e) => {
                                    return Err(self.fail(
                                        "(local)",
                                        phase,
                                        "write the values as YAML",
                                        e,
                                    ));
                                }
                            };
                            let local = self.run_dir.join(format!("values-{v}.yaml"));
                            if let Err(e) = crate::files::write_private(&local, yaml.as_bytes()) {
                                return Err(self.fail(
                                    "(local)",
                                    phase,
                                    &format!("write {}", local.display()),
                                    e,
                                ));
                            }
                            if let Err(e) = s.upload(yaml.as_bytes(), &values, 0o600, true).await {
                                return Err(self.fail(&cp, phase, &format!("upload {values}"), e));
                            }
                        }
                        next = with_pins;
                    }
                    Err(e) => self
                        .notes
                        .push(format!("config drift {step}: pins not applied: {e}")),
                }
            }
            let datapath = found.datapath().count();
            self.say(&format!(
                "  agent settings {step}: {} change(s), {datapath} touching the datapath{}",
                found.changes.len(),
                if pinned.is_empty() {
                    String::new()
                } else {
                    format!(", {} pinned to the old value", pinned.len())
                }
            ));
            for l in found.lines() {
                self.say(&format!("    {l}"));
            }
            self.b.config_drift.push(found.record(
                &step.from().to_string(),
                &v.to_string(),
                pinned,
            ));
            before = next;
        }
        Ok(())
    }
}
