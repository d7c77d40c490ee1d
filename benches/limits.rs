//! Benchmark: peak memory and wall time of `kubedrill inventory check` on the largest inventory
//! kubedrill accepts — 10,000 hosts (`MAX_HOSTS`), 100,000 host entries in groups
//! (`MAX_HOST_ENTRIES`), and `group_vars/` files that use most of the 64 MiB read budget
//! (`MAX_TOTAL_BYTES`). Run with `cargo bench --bench limits`. Memory targets live here, never in
//! timed tests.
//!
//! Peak memory is the child's maximum resident set size (`getrusage(RUSAGE_CHILDREN)`), so
//! the whole process is measured: parsing, resolution, spec and diagnostics.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use kubedrill::inventory::MAX_HOSTS;

/// Extra groups that list every host again (a range each), filling the entry budget.
const EXTRA_GROUPS: usize = 8;
/// `group_vars` payload: four files of 15 MiB (each under the 16 MiB per-file limit).
const VARS_FILES: usize = 4;
const VARS_FILE_BYTES: usize = 15 * 1024 * 1024;

fn generate(dir: &Path) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("hosts.ini"))?);
    writeln!(
        f,
        "[kube_control_plane]\nn00000\nn00001\nn00002\n[kube_node]"
    )?;
    for i in 0..MAX_HOSTS {
        writeln!(
            f,
            "n{i:05} ansible_host=10.{}.{}.{}",
            20 + i / 65536,
            (i / 256) % 256,
            i % 256
        )?;
    }
    for g in 0..EXTRA_GROUPS {
        writeln!(f, "[rack{g}]\nn[00000:{:05}]", MAX_HOSTS - 1)?;
    }
    writeln!(
        f,
        "[etcd]\nn00000\n[k8s_cluster:children]\nkube_control_plane\nkube_node"
    )?;
    f.flush()?;
    let gv = dir.join("group_vars/all");
    std::fs::create_dir_all(&gv)?;
    std::fs::write(
        gv.join("00-versions.yml"),
        "kube_version: \"1.34.4\"\ncilium_version: \"1.19.6\"\n",
    )?;
    for n in 0..VARS_FILES {
        // One long-ish string per line, as in a large values or certificate bundle variable.
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(gv.join(format!("{n:02}-bulk.yml")))?);
        let line = format!("  - \"{}\"\n", "x".repeat(1000));
        writeln!(f, "kubedrill_bench_bulk_{n}:")?;
        for _ in 0..VARS_FILE_BYTES / line.len() {
            f.write_all(line.as_bytes())?;
        }
        f.flush()?;
    }
    Ok(())
}

fn peak_rss_children_mib() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; RUSAGE_CHILDREN has no preconditions.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss as f64 / 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    generate(dir.path())?;
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kubedrill"))
        .args(["inventory", "check", "--output", "json", "-i"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()?;
    let wall = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "no JSON from kubedrill ({e}; {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if v["valid"] != true {
        return Err(format!(
            "the largest accepted inventory was refused: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    println!(
        "inventory check, largest accepted ({MAX_HOSTS} hosts, {} entries, {} MiB of group_vars): {:.2} s wall, peak RSS {:.0} MiB",
        MAX_HOSTS * (EXTRA_GROUPS + 1) + 3,
        VARS_FILES * VARS_FILE_BYTES / (1024 * 1024),
        wall.as_secs_f64(),
        peak_rss_children_mib()
    );
    Ok(())
}
