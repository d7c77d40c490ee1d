//! `cilium/install`: Helm installs Cilium with the rendered values and the settings the kernel
//! verdicts allow, from the bundle's chart (and helm) when there is one.

use crate::apply::cluster::{effective_values, install_change};
use crate::apply::{Input, Run};
use crate::phase::{Phase, PhaseError, PhaseFuture, Step, Target};

/// `cilium/install`.
pub struct Install;

impl<'a> Phase<Run<'a>> for Install {
    fn name(&self) -> &str {
        "install"
    }
    fn title(&self) -> String {
        "Install Cilium with Helm as the kube-proxy replacement".into()
    }
    fn unchanged_when(&self) -> &str {
        "release `cilium` is deployed with the same chart and values"
    }
    fn steps(&self, input: &Input<'a>) -> Result<Vec<Step>, PhaseError> {
        // Before the kernels are judged, the values are the rendered ones.
        let c = install_change(input, &effective_values(input, &[]))?;
        Ok(c.steps(Target::Hosts(vec![input.first_cp()])))
    }
    fn run<'r>(&'r self, name: &'r str, run: &'r mut Run<'a>) -> PhaseFuture<'r> {
        Box::pin(async move {
            let values = effective_values(&run.input, &run.reports);
            match install_change(&run.input, &values) {
                Ok(c) => run.on_first_cp(name, c).await,
                Err(e) => crate::apply::fail_all(name, "values", e),
            }
        })
    }
}
