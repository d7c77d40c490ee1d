//! Benchmark: `kubedrill plan` on a generated 1,000-node Kubespray inventory (target ≤ 200 ms wall).
//!
//! Measures the library pipeline (load → spec → plan) in-process and the whole CLI
//! (`kubedrill plan -i … --output json`) as a process, each over several runs, and prints the
//! median and best. Run with `cargo bench --bench plan`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 1000;
const RUNS: usize = 15;

fn generate(dir: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::create(dir.join("hosts.yaml"))?;
    writeln!(f, "all:\n  hosts:")?;
    for i in 0..NODES {
        writeln!(
            f,
            "    node{i:04}:\n      ansible_host: 10.{}.{}.{}\n      ip: 10.{}.{}.{}",
            20 + i / 65536,
            (i / 256) % 256,
            i % 256,
            20 + i / 65536,
            (i / 256) % 256,
            i % 256
        )?;
    }
    writeln!(
        f,
        "  children:\n    kube_control_plane:\n      hosts:\n        node0000:\n        node0001:\n        node0002:"
    )?;
    writeln!(
        f,
        "    etcd:\n      hosts:\n        node0000:\n        node0001:\n        node0002:"
    )?;
    writeln!(f, "    kube_node:\n      hosts:")?;
    for i in 3..NODES {
        writeln!(f, "        node{i:04}:")?;
    }
    writeln!(
        f,
        "    k8s_cluster:\n      children:\n        kube_control_plane:\n        kube_node:"
    )?;
    std::fs::create_dir_all(dir.join("group_vars"))?;
    std::fs::write(
        dir.join("group_vars/k8s_cluster.yml"),
        "kube_version: \"1.34.2\"\ncilium_version: \"1.19.6\"\nkube_pods_subnet: 10.233.64.0/18\n\
         kube_service_addresses: 10.233.0.0/18\nkubedrill_cilium_maglev_hash_seed: a3ViZWRyaWxsLWxi\n\
         cilium_extra_values:\n  prometheus:\n    enabled: true\n",
    )?;
    Ok(())
}

fn stats(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (d[d.len() / 2], d[0])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    generate(dir.path())?;
    let inv_path = dir.path().join("hosts.yaml");

    let mut lib = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let inv = kubedrill::inventory::load(&inv_path)?;
        let (spec, _) =
            kubedrill::spec::build(&inv, &Default::default()).map_err(|d| d.to_string())?;
        let plan = kubedrill::plan::build(&spec, &inv)?;
        std::hint::black_box(&plan);
        lib.push(t.elapsed());
    }
    let (med, best) = stats(lib);
    println!(
        "plan/library   {NODES} nodes: median {:>7.1} ms, best {:>7.1} ms ({RUNS} runs)",
        med.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3
    );

    let exe = env!("CARGO_BIN_EXE_kubedrill");
    let mut cli = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let status = Command::new(exe)
            .args(["plan", "-i"])
            .arg(&inv_path)
            .args(["--output", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        cli.push(t.elapsed());
        if !status.success() {
            return Err(format!("kubedrill plan failed: {status}").into());
        }
    }
    let (med, best) = stats(cli);
    println!(
        "plan/cli       {NODES} nodes: median {:>7.1} ms, best {:>7.1} ms ({RUNS} runs; target ≤ 200 ms)",
        med.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3
    );
    Ok(())
}
