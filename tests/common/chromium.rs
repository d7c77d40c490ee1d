//! Headless Chromium for report tests: find the binary, run it with a timeout and a temporary
//! profile, kill it (and the helpers it started) by PID when it hangs.
//!
//! Tests call [`skip_unless_available`] first: it returns `None` (and prints a loud message)
//! when Chromium is not installed, unless `KUBEDRILL_REQUIRE_CHROMIUM=1` is set, in which case
//! it panics instead (CI on a prepared machine; `scripts/test.sh` sets it as root).

#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Binary names tried, in order, on `PATH`.
pub const NAMES: [&str; 2] = ["chromium", "chromium-browser"];

/// The Chromium binary on `PATH`.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in NAMES {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The Chromium binary, or `None` after printing why the test is skipped; panics instead when
/// `KUBEDRILL_REQUIRE_CHROMIUM=1`.
pub fn skip_unless_available(test: &str) -> Option<PathBuf> {
    match find() {
        Some(p) => Some(p),
        None if std::env::var("KUBEDRILL_REQUIRE_CHROMIUM").as_deref() == Ok("1") => {
            panic!(
                "{test}: KUBEDRILL_REQUIRE_CHROMIUM=1 but chromium is not installed (apt-get install chromium; scripts/setup.sh does)"
            )
        }
        None => {
            // Straight to fd 2, past the test harness's output capture: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPING {test}: chromium is not installed (apt-get install chromium, or \
                 scripts/setup.sh). Set KUBEDRILL_REQUIRE_CHROMIUM=1 to make this a failure. ***\n"
            );
            None
        }
    }
}

/// What a Chromium run left behind.
pub struct Run {
    /// Exit status code (None when killed).
    pub code: Option<i32>,
    /// Standard output (`--dump-dom` writes the DOM here).
    pub stdout: String,
    /// Standard error (Chromium logs a lot of harmless D-Bus noise here).
    pub stderr: String,
}

/// Run headless Chromium with `args` (after the fixed headless flags) and a fresh profile in a
/// temporary directory, at most `timeout`. On timeout its process group is killed by PID and
/// the test panics with Chromium's stderr.
pub fn run(bin: &Path, args: &[String], timeout: Duration) -> Run {
    let tmp = tempfile::Builder::new()
        .prefix("kubedrill-chromium-")
        .tempdir()
        .expect("tempdir");
    let profile = tmp.path().join("profile");
    let out_path = tmp.path().join("stdout");
    let err_path = tmp.path().join("stderr");
    let mut child = Command::new(bin)
        .arg("--headless")
        .arg("--no-sandbox")
        .arg("--disable-gpu")
        .arg("--no-first-run")
        .arg("--no-default-browser-check")
        .arg("--disable-extensions")
        .arg("--disable-background-networking")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        // Its own process group, so that its helpers (zygote, renderer, GPU) can be found.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = child.id();
    let started = Instant::now();
    let code = loop {
        match child.try_wait().expect("wait for chromium") {
            Some(status) => break status.code(),
            None if started.elapsed() > timeout => {
                // The leader is still alive (not reaped), so the group id is still ours.
                let pgid = i32::try_from(pid).expect("pid fits i32");
                // SAFETY: kill(2) with a negative pid signals exactly that process group.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                let _ = child.wait();
                let stderr = fs::read_to_string(&err_path).unwrap_or_default();
                panic!(
                    "chromium {args:?} did not finish within {timeout:?}; killed process group \
                     {pid}. stderr:\n{stderr}"
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    kill_leftovers(pid);
    Run {
        code,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// SIGKILL, by PID, every process still in the process group Chromium was started in (helpers
/// that outlived the browser process). Only that group: processes we started.
fn kill_leftovers(pgid: u32) {
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, …
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let pgrp = rest
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse::<u32>().ok());
        if pgrp == Some(pgid) {
            // SAFETY: kill(2) on a single PID of our own process group.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A decoded 8-bit RGB(A) PNG (non-interlaced, as Chromium writes screenshots).
pub struct Png {
    /// Width in px.
    pub width: u32,
    /// Height in px.
    pub height: u32,
    /// RGB triples, row by row.
    pub rgb: Vec<[u8; 3]>,
}

/// Check the signature and the IHDR chunk, inflate the IDAT chunks and undo the row filters.
pub fn decode_png(data: &[u8]) -> Result<Png, String> {
    const SIG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if data.len() < 33 || &data[..8] != SIG {
        return Err("not a PNG (bad signature)".into());
    }
    let mut pos = 8;
    let mut ihdr = None;
    let mut idat = Vec::new();
    while pos + 8 <= data.len() {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &data[pos + 4..pos + 8];
        let body = data.get(pos + 8..pos + 8 + len).ok_or("truncated chunk")?;
        match kind {
            b"IHDR" => ihdr = Some(body.to_vec()),
            b"IDAT" => idat.extend_from_slice(body),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let ihdr = ihdr.ok_or("no IHDR chunk")?;
    if ihdr.len() != 13 {
        return Err("IHDR is not 13 bytes".into());
    }
    let width = u32::from_be_bytes(ihdr[0..4].try_into().unwrap());
    let height = u32::from_be_bytes(ihdr[4..8].try_into().unwrap());
    let (depth, colour, interlace) = (ihdr[8], ihdr[9], ihdr[12]);
    let channels = match (depth, colour, interlace) {
        (8, 2, 0) => 3,
        (8, 6, 0) => 4,
        _ => {
            return Err(format!(
                "unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}"
            ));
        }
    };
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&idat[..]), &mut raw)
        .map_err(|e| format!("inflating IDAT: {e}"))?;
    let stride = width as usize * channels;
    if raw.len() != (stride + 1) * height as usize {
        return Err(format!(
            "image data is {} bytes, expected {}",
            raw.len(),
            (stride + 1) * height as usize
        ));
    }
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height as usize {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, src) = (line[0], &line[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => return Err(format!("bad filter type {f} in row {y}")),
            };
            cur[i] = src[i].wrapping_add(pred);
        }
        for px in cur.chunks_exact(channels) {
            rgb.push([px[0], px[1], px[2]]);
        }
        prev = cur;
    }
    Ok(Png { width, height, rgb })
}
