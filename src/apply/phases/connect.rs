//! `preflight/connect`: one session per host, all in parallel, and the node lock on each.

use crate::apply::{Reach, Run};
use crate::phase::{CleanUpFuture, Failure, HostResult, Outcome, Phase, PhaseError, PhaseFuture};
use crate::phase::{Step, step::hosts};

/// `preflight/connect`.
pub struct Connect;

impl Connect {
    /// The phase (shared by `apply` and `reset`).
    pub fn boxed<'a>() -> Box<dyn Phase<Run<'a>>> {
        Box::new(Connect)
    }
}

impl<'a> Phase<Run<'a>> for Connect {
    fn name(&self) -> &str {
        "connect"
    }
    fn title(&self) -> String {
        "Connect to every host over SSH (one connection per host)".into()
    }
    fn required(&self) -> bool {
        true // every other phase needs the sessions
    }
    fn steps(&self, input: &crate::apply::Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![Step::check(
            hosts(input.inv.hosts.iter()),
            "SSH answers, host key matches known_hosts, sudo -n works where ansible_become is set; take the node lock",
        )])
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let mut out = Vec::new();
            match run.reach.take() {
                Some(Reach::Given(hosts)) => {
                    for (h, s) in hosts {
                        out.push(HostResult {
                            host: h.clone(),
                            result: Ok(Outcome::Unchanged),
                            secs: 0.0,
                        });
                        run.hosts.insert(h, s);
                    }
                }
                Some(Reach::Ssh(ssh, only)) => {
                    let results = match crate::connect::connect_all(
                        run.input.inv,
                        &ssh,
                        &only,
                        run.opts.concurrency,
                        run.progress,
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(e) => return crate::apply::fail_all(name, "known_hosts", e),
                    };
                    for r in results {
                        let secs = r.duration.as_secs_f64();
                        match r.result {
                            Ok(s) => {
                                run.hosts.insert(r.host.clone(), s.clone());
                                run.sessions.insert(r.host.clone(), s);
                                out.push(HostResult {
                                    host: r.host,
                                    result: Ok(Outcome::Unchanged),
                                    secs,
                                });
                            }
                            Err(e) => out.push(HostResult {
                                host: r.host.clone(),
                                result: Err(Failure::new(r.host, name, "ssh connect", e)
                                    .with_hint("`kubedrill check -i INVENTORY` shows every host's SSH state")),
                                secs,
                            }),
                        }
                    }
                    // One kubedrill per node: another apply, reset or drill (from any machine)
                    // holds it.
                    let (locks, refused) = crate::ssh::node_lock::lock_all(&run.sessions).await;
                    run.node_locks = locks;
                    for (host, e) in refused {
                        out.retain(|r| r.host != host);
                        out.push(HostResult {
                            host: host.clone(),
                            result: Err(Failure::new(host, name, "node lock", e)),
                            secs: 0.0,
                        });
                    }
                }
                None => {}
            }
            out
        })
    }
    fn clean_up<'r>(&'r self, run: &'r mut Run<'a>) -> CleanUpFuture<'r> {
        Box::pin(async move {
            crate::ssh::node_lock::release_all(std::mem::take(&mut run.node_locks)).await;
            for s in run.hosts.values() {
                s.close().await;
            }
        })
    }
}
