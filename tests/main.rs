//! kubedrill's integration tests, in one test binary: one link instead of one per file (measured
//! 2026-12-07 on the 2-core development machine: building the test code 30–36 s instead of
//! 47–76 s for 24 binaries, running it 142 s instead of 237 s, and one ≈100 MB executable instead
//! of 24). Each file below is a module named after its subject; `cargo test --test integration
//! drill_run::` runs one of them. Shared helpers are in `common/`.

mod common;

mod apply_fake;
mod check_cli;
mod cli;
mod drift_real;
mod drill_migrate;
mod drill_report;
mod drill_run;
mod drill_scripted;
mod fuzz_files;
mod fuzz_parsers;
mod hostile;
mod hostile_ssh;
mod images;
mod inventory;
mod k8s_api;
mod k8s_real;
mod kernel;
mod kubeadm_real;
mod lab_e2e;
mod lab_libvirt;
mod locks;
mod render;
mod spec;
mod ssh;
mod sshd_harness;
