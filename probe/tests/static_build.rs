//! The static build: `scripts/build-probe.sh` builds the release binary with
//! `+crt-static` (and checks it with `file`/`ldd` itself); this test then reads the ELF file and
//! asserts what "static" means for copying it into any node or pod: no program interpreter
//! (`PT_INTERP`) and no shared-library dependencies (`DT_NEEDED`). It also runs the binary.
//!
//! The release build takes a while on a cold cache (about 25 s on 2 cores here); set
//! `KUBEDRILL_SKIP_STATIC_BUILD=1` to skip it in a quick local run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// (has a PT_INTERP, number of DT_NEEDED entries) of an ELF64 little-endian file.
fn elf_dynamic_facts(b: &[u8]) -> (bool, usize) {
    assert_eq!(&b[..4], b"\x7fELF", "not ELF");
    assert_eq!(b[4], 2, "not ELF64");
    assert_eq!(b[5], 1, "not little-endian");
    let phoff = u64_at(b, 0x20) as usize;
    let phentsize = usize::from(u16_at(b, 0x36));
    let phnum = usize::from(u16_at(b, 0x38));
    let mut interp = false;
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(b, ph);
        if p_type == PT_INTERP {
            interp = true;
        }
        if p_type == PT_DYNAMIC {
            // A static-pie keeps a dynamic section for self-relocation, but needs nothing.
            let off = u64_at(b, ph + 0x08) as usize;
            let size = u64_at(b, ph + 0x20) as usize;
            for e in (off..off + size).step_by(16) {
                match u64_at(b, e) {
                    DT_NULL => break,
                    DT_NEEDED => needed += 1,
                    _ => {}
                }
            }
        }
    }
    (interp, needed)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn elf_check_tells_dynamic_from_static() {
    // The test binary itself is dynamically linked: the check must see that.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let (interp, needed) = elf_dynamic_facts(&me);
    assert!(interp, "a dynamic executable has PT_INTERP");
    assert!(needed > 0, "a dynamic executable needs libc");
}

#[test]
fn static_build_has_no_interpreter_and_no_needed_libraries() {
    if std::env::var("KUBEDRILL_SKIP_STATIC_BUILD").as_deref() == Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIP static build check (KUBEDRILL_SKIP_STATIC_BUILD=1) ***\n"
        );
        return;
    }
    let root = repo_root();
    let out = Command::new("bash")
        .arg(root.join("scripts/build-probe.sh"))
        .current_dir(&root)
        .output()
        .expect("run scripts/build-probe.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build-probe.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target_dir = if target_dir.is_relative() {
        root.join(target_dir)
    } else {
        target_dir
    };
    let bin = target_dir.join("x86_64-unknown-linux-gnu/release/kubedrill-probe");
    let bytes = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let (interp, needed) = elf_dynamic_facts(&bytes);
    assert!(!interp, "{} has a program interpreter", bin.display());
    assert_eq!(needed, 0, "{} needs shared libraries", bin.display());
    assert!(stdout.contains("build-probe: OK static"), "{stdout}");
    eprintln!("static probe: {} ({} bytes)", bin.display(), bytes.len());
    // It runs without a loader, and rejects a bad spec with exit code 2.
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(v.status.success());
    let bad = Command::new(&bin)
        .args(["run", "--spec", "/nonexistent.json"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
