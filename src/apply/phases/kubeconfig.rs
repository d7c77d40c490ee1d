//! `kubeconfig/fetch`: admin.conf to `<state>/clusters/<cluster>/admin.conf`, mode 0600.

use crate::apply::cluster::ADMIN_CONF;
use crate::apply::{Input, Run};
use crate::phase::{Failure, HostResult, Outcome, Phase, PhaseError, PhaseFuture, Step, Target};
use crate::render::RenderedFile;
use std::time::Instant;

/// `kubeconfig/fetch`.
pub struct Fetch;

impl<'a> Phase<Run<'a>> for Fetch {
    fn name(&self) -> &str {
        "fetch"
    }
    fn title(&self) -> String {
        "Fetch admin.conf to a local kubeconfig (mode 0600)".into()
    }
    fn unchanged_when(&self) -> &str {
        "the local kubeconfig matches"
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        Ok(vec![
            Step::check(
                Target::Hosts(vec![input.first_cp()]),
                format!("read {ADMIN_CONF}"),
            ),
            Step::Write {
                target: Target::Local,
                file: RenderedFile {
                    path: "admin.conf (in the cluster's state directory)".into(),
                    mode: 0o600,
                    content: format!(
                        "# admin.conf of {} with server https://{}\n",
                        input.spec.label, input.spec.endpoint
                    ),
                    sensitive: true,
                },
            },
        ])
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let t = Instant::now();
            let (host, Some(s)) = run.first_cp() else {
                return Vec::new();
            };
            let text = match run
                .capture(
                    s.as_ref(),
                    name,
                    "read admin.conf",
                    &format!("cat {ADMIN_CONF}"),
                )
                .await
            {
                Ok(t) => t,
                Err(f) => {
                    let f = f.with_hint("kubeadm/init has not run on the first control plane");
                    return vec![HostResult::timed(host, Err(f), t)];
                }
            };
            let path = run.opts.state_dir.join("admin.conf");
            let same = std::fs::read_to_string(&path).is_ok_and(|old| old == text);
            let r = if same {
                Ok(Outcome::Unchanged)
            } else {
                crate::files::write_private(&path, text.as_bytes())
                    .map(|()| Outcome::Changed)
                    .map_err(|e| {
                        Failure::new("(local)", name, format!("write {}", path.display()), e)
                    })
            };
            run.kubeconfig = Some(path);
            vec![HostResult::timed(host, r, t)]
        })
    }
}
