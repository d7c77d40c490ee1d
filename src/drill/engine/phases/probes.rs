//! `probes-start`: probe pods, Services, echo responders and probers that run until the report.

#[allow(unused_imports)]
use super::super::*;

/// How long the echo responders may take to bind before the probers start (a busy TCG node
/// starts a process in seconds).
const LISTEN_WAIT: Duration = Duration::from_secs(120);

impl Ctx<'_> {
    pub(in crate::drill::engine) async fn probes_start(&mut self) -> PhaseResult {
        let phase = "probes-start";
        let d = self.d;
        let Some(client) = self.client() else {
            return Err(self.fail("(local)", phase, "kubernetes client", "not connected"));
        };
        let api = self.api_host();
        let nodes = match cluster::list_nodes(&client).await {
            Ok(n) => n,
            Err(e) => return Err(self.fail(&api, phase, "list nodes", e)),
        };
        let placement = match layout::place(&nodes) {
            Ok(p) => p,
            Err(e) => return Err(self.fail(&api, phase, "place the probe pods", e)),
        };
        self.say(&format!(
            "  backend on {}, client on {}, NodePort probed from {} to {} ({})",
            placement.backend,
            placement.client,
            placement.nodeport_prober,
            placement.nodeport_target.name,
            placement.nodeport_target.address
        ));
        let image = self.probe_image();
        let steps: Result<(), (String, ClusterError)> = async {
            cluster::recreate_namespace(&client, d.timeouts.pods)
                .await
                .map_err(|e| ("create namespace kubedrill-drill".to_owned(), e))?;
            cluster::create_probe_pods(&client, &placement, &image, d.timeouts.pods)
                .await
                .map_err(|e| ("create the probe pods".to_owned(), e))?;
            Ok(())
        }
        .await;
        if let Err((what, e)) = steps {
            return Err(self.fail(&api, phase, &what, e));
        }
        let pods =
            match cluster::wait_pods_ready(&client, &[BACKEND_POD, CLIENT_POD], d.timeouts.pods)
                .await
            {
                Ok(p) => p,
                Err(e) => return Err(self.fail(&api, phase, "wait for the probe pods", e)),
            };
        let (cluster_ip, node_port) = match cluster::create_services(&client).await {
            Ok(x) => x,
            Err(e) => return Err(self.fail(&api, phase, "create the Services", e)),
        };
        let mut ends = BTreeMap::new();
        for (pod, node) in [
            (BACKEND_POD, &placement.backend),
            (CLIENT_POD, &placement.client),
        ] {
            let Some(s) = self.host(node) else {
                return Err(self.fail(
                    node,
                    phase,
                    "crictl inspectp",
                    "no SSH session for this node (Kubernetes node names must be the inventory's host names)",
                ));
            };
            let netns = match probes::pod_netns(s.as_ref(), layout::NAMESPACE, pod).await {
                Ok(n) => n,
                Err(e) => return Err(self.fail(node, phase, "crictl pods/inspectp", e)),
            };
            let ip = pods.get(pod).map(|(_, ip)| ip.clone()).unwrap_or_default();
            ends.insert(
                pod,
                PodEnd {
                    name: pod.to_owned(),
                    node: node.clone(),
                    ip,
                    netns,
                },
            );
        }
        let (Some(backend), Some(client_end)) = (ends.remove(BACKEND_POD), ends.remove(CLIENT_POD))
        else {
            return Err(self.fail(&api, phase, "probe pods", "missing pod"));
        };
        let backend_node_address = nodes
            .iter()
            .find(|n| n.name == backend.node)
            .map(|n| n.address.clone())
            .unwrap_or_default();
        let targets = Targets {
            client: client_end,
            backend,
            cluster_ip,
            node_port,
            backend_node_address,
        };
        let planned = layout::probes(
            &d.drill.definition.probes.kinds,
            d.drill.definition.probes.rate_per_s,
            &placement,
            &targets,
        );
        self.b.pairs = planned.iter().map(|p| p.pair.clone()).collect();

        // The agent on every node that runs a part.
        let found = match &d.probe_agent {
            Some(p) => Ok(p.clone()),
            None => probes::agent_binary(),
        };
        let agent_path = match found {
            Ok(p) => p,
            Err(e) => return Err(self.fail("(local)", phase, "find kubedrill-probe", e)),
        };
        let agent = match std::fs::read(&agent_path) {
            Ok(a) => a,
            Err(e) => {
                return Err(self.fail(
                    "(local)",
                    phase,
                    &format!("read {}", agent_path.display()),
                    e,
                ));
            }
        };
        let mut hosts: BTreeSet<String> = planned.iter().map(|p| p.host.clone()).collect();
        hosts.insert(targets.backend.node.clone());
        for h in &hosts {
            let Some(s) = self.host(h) else {
                return Err(self.fail(h, phase, "install kubedrill-probe", "no SSH session"));
            };
            if let Err(e) = probes::install(s.as_ref(), &agent).await {
                return Err(self.fail(h, phase, "install kubedrill-probe", e));
            }
        }
        let life = agent_lifetime(
            &d.timeouts,
            d.drill.plan.steps().len(),
            d.drill.definition.policy.soak_secs,
        );
        // Echo responders in the backend pod.
        let any = if targets.backend.ip.contains(':') {
            "[::]"
        } else {
            "0.0.0.0"
        };
        let Some(bs) = self.host(&targets.backend.node) else {
            return Err(self.fail(&targets.backend.node, phase, "serve", "no SSH session"));
        };
        let serve_tag = format!("{}-serve", self.tag);
        let netns = targets.backend.netns.clone();
        let (tcp, udp) = (format!("{any}:{TCP_PORT}"), format!("{any}:{UDP_PORT}"));
        let st = serve_tag.clone();
        self.servers.push(Bg {
            host: targets.backend.node.clone(),
            tag: serve_tag,
            handle: tokio::spawn(async move {
                probes::serve_detached(bs.as_ref(), Some(&netns), &tcp, &udp, life, &st).await
            }),
        });
        // Probers only once the responders listen: on a busy backend node the responder can
        // start seconds after a prober on an idle one, whose first probes and held connections
        // would then meet a closed port (the lab's eighth Kubernetes drill: every TCP kind lost
        // its first probe and the three held connections "broke" before anything changed).
        let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
        loop {
            if self.servers.iter().any(|b| b.handle.is_finished()) {
                break; // said below, with its error
            }
            let Some(bs) = self.host(&targets.backend.node) else {
                break;
            };
            if probes::peek(bs.as_ref(), &format!("{}-serve", self.tag))
                .await
                .is_ok_and(|r| r.listening)
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.fail(
                    &targets.backend.node,
                    phase,
                    "kubedrill-probe serve",
                    format!(
                        "the echo responders did not listen within {} s",
                        LISTEN_WAIT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Probers, one agent per host.
        let mut by_host: BTreeMap<String, Vec<ProbeSpec>> = BTreeMap::new();
        for p in &planned {
            by_host
                .entry(p.host.clone())
                .or_default()
                .push(p.spec.clone());
        }
        for (h, specs) in by_host {
            let Some(s) = self.host(&h) else {
                return Err(self.fail(&h, phase, "kubedrill-probe run", "no SSH session"));
            };
            let tag = format!("{}-probe", self.tag);
            let t2 = tag.clone();
            self.probers.push(Bg {
                host: h,
                tag,
                handle: tokio::spawn(async move {
                    probes::run_detached(s.as_ref(), &specs, life, &t2).await
                }),
            });
        }
        // An agent that cannot start fails within a moment (bad netns, bind, socket).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut early = Vec::new();
        for bg in &self.servers {
            if bg.handle.is_finished() {
                early.push((bg.host.clone(), "kubedrill-probe serve".to_owned()));
            }
        }
        for bg in &self.probers {
            if bg.handle.is_finished() {
                early.push((bg.host.clone(), "kubedrill-probe run".to_owned()));
            }
        }
        if !early.is_empty() {
            for (h, what) in &early {
                let msg = self.take_finished(h, what).await;
                self.fail(h, phase, what, msg);
            }
            return Err(Stop);
        }
        self.say(&format!(
            "  {} probe(s) at {}/s: {}",
            planned.len(),
            d.drill.definition.probes.rate_per_s,
            planned
                .iter()
                .map(|p| format!("{} from {}", p.pair.kind, p.host))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(PhaseOutcome::Ok)
    }

    /// The result of a background agent that ended early, as a message.
    pub(in crate::drill::engine) async fn take_finished(
        &mut self,
        host: &str,
        what: &str,
    ) -> String {
        if what.ends_with("serve") {
            if let Some(i) = self.servers.iter().position(|b| b.host == host) {
                let bg = self.servers.remove(i);
                return match bg.handle.await {
                    Ok(Ok(())) => "ended at once".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
            }
        } else if let Some(i) = self.probers.iter().position(|b| b.host == host) {
            let bg = self.probers.remove(i);
            return match bg.handle.await {
                Ok(Ok(_)) => "ended at once".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
        }
        "ended".to_owned()
    }
}
