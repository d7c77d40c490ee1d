//! `connect`: SSH to every node (node locks), facts, the kubeconfig, the API through the first control plane.

#[allow(unused_imports)]
use super::super::*;

impl Ctx<'_> {
    pub(in crate::drill::engine) async fn connect(&mut self) -> PhaseResult {
        let phase = "connect";
        match self.reach.take() {
            Some(Reach::Given { hosts, client }) => {
                self.hosts = hosts;
                self.gather_facts().await;
                self.nodes_ready(phase, client).await
            }
            Some(Reach::Ssh) => self.connect_ssh(phase).await,
            None => Err(self.fail("(local)", phase, "connect", "connected already")),
        }
    }

    async fn connect_ssh(&mut self, phase: &str) -> PhaseResult {
        let ssh = crate::connect::SshSettings {
            host_keys: self.d.host_keys.clone(),
            connect_timeout: self.d.connect_timeout,
        };
        let results = match crate::connect::connect_all(
            &self.d.inventory,
            &ssh,
            &[],
            self.d.concurrency.max(1),
            self.progress,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let file = ssh.host_keys.file.display().to_string();
                return Err(self.fail("(local)", phase, &format!("read known_hosts {file}"), e));
            }
        };
        let mut failed = false;
        for r in results {
            match r.result {
                Ok(s) => {
                    self.hosts.insert(r.host.clone(), s.clone());
                    self.sessions.insert(r.host, s);
                }
                Err(e) => {
                    self.fail(&r.host, phase, "ssh connect", e);
                    failed = true;
                }
            }
        }
        if failed {
            return Err(Stop);
        }
        // One kubedrill per node for the whole drill (an apply or reset from anywhere waits).
        let (locks, refused) = crate::ssh::node_lock::lock_all(&self.sessions).await;
        self.node_locks = locks;
        if !refused.is_empty() {
            for (host, e) in refused {
                self.fail(&host, phase, "node lock", e);
            }
            return Err(Stop);
        }
        self.gather_facts().await;
        // The kubeconfig, fetched once from the first control plane if it is not here yet.
        let kc = self.d.kubeconfig.clone();
        if !kc.is_file() {
            let cp = self.cp.clone();
            let cmd = Command::new(format!("cat {ADMIN_CONF}"))
                .privileged()
                .label(format!("read {ADMIN_CONF}"))
                .idempotent();
            let text = self.exec(&cp, phase, &cmd).await?;
            if let Err(e) = crate::files::write_private(&kc, text.as_bytes()) {
                return Err(self.fail("(local)", phase, &format!("write {}", kc.display()), e));
            }
        }
        let Some(cp_s) = self.sessions.get(&self.cp).cloned() else {
            let cp = self.cp.clone();
            return Err(self.fail(&cp, phase, "ssh connect", "no session"));
        };
        let (client, fwd) = match client_via_ssh(&kc, cp_s, Duration::from_secs(15)).await {
            Ok(c) => c,
            Err(e) => return Err(self.fail("(local)", phase, "connect to the Kubernetes API", e)),
        };
        self.say(&format!(
            "Kubernetes API {} via {} on 127.0.0.1:{}",
            fwd.remote,
            self.cp,
            fwd.local.port()
        ));
        self.forward = Some(fwd);
        self.nodes_ready(phase, client).await
    }

    /// Facts, for the datapath the kernels allow (as `apply` judges it).
    async fn gather_facts(&mut self) {
        let from_spec = spec_at(&self.d.spec, self.d.drill.from);
        for (host, s) in self.hosts.clone() {
            match check::gather(s.as_ref()).await {
                Ok(f) => self
                    .node_reports
                    .push(kernel::evaluate(&from_spec, &host, &f)),
                Err(e) => self.notes.push(format!(
                    "{host}: facts not gathered ({e}); the expected datapath is the inventory's intent"
                )),
            }
        }
    }

    /// Every inventory node Ready through `client`, which the drill then uses.
    async fn nodes_ready(&mut self, phase: &str, client: kube::Client) -> PhaseResult {
        let n = self.d.inventory.hosts.len();
        if let Err(e) = wait::nodes_ready(&client, n, self.d.timeouts.api, |_| {}).await {
            let h = self.api_host();
            return Err(self.fail(&h, phase, "wait for every node Ready", e));
        }
        self.client = Some(client);
        Ok(PhaseOutcome::Ok)
    }
}
