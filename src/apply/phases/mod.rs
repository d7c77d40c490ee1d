//! The phases of `kubedrill apply`, in order; one small file each. The tree is what `plan`,
//! `apply --dry-run`, `--only` and `--skip-phases` (and their help) are made from.

mod cilium_install;
mod cilium_wait;
pub(crate) mod connect;
mod init;
mod join;
mod kernel;
mod kubeconfig;
mod node;
mod verify;

use super::Run;
use crate::phase::{Group, Tree};

/// Every apply phase, grouped, in order.
pub fn tree<'a>() -> Tree<Run<'a>> {
    Tree {
        groups: vec![
            Group {
                name: "preflight",
                title: "Connect, gather facts, judge each kernel",
                phases: vec![Box::new(connect::Connect), Box::new(kernel::Kernel)],
            },
            Group {
                name: "node",
                title: "Prepare every node for kubeadm",
                phases: node::phases(),
            },
            Group {
                name: "kubeadm",
                title: "Create the cluster without kube-proxy",
                phases: vec![
                    Box::new(init::Init),
                    Box::new(join::Join {
                        control_plane: true,
                    }),
                    Box::new(join::Join {
                        control_plane: false,
                    }),
                ],
            },
            Group {
                name: "kubeconfig",
                title: "Bring the admin kubeconfig home",
                phases: vec![Box::new(kubeconfig::Fetch)],
            },
            Group {
                name: "cilium",
                title: "Install Cilium as the kube-proxy replacement",
                phases: vec![
                    Box::new(cilium_install::Install),
                    Box::new(cilium_wait::Wait),
                ],
            },
            Group {
                name: "cluster",
                title: "Verify the datapath the agents run",
                phases: vec![Box::new(verify::Verify)],
            },
        ],
    }
}
