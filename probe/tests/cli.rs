//! The binary end to end on loopback (127.0.0.1 only): exit codes and messages on bad input,
//! a clean run against `serve`, and every way a run stops.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kubedrill-probe");

fn probe(args: &[&str], stdin: &str) -> Output {
    let mut c = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

fn events(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Kills (by PID) and reaps the child on drop; keeps the reader of its stdout.
struct Guard(Child, Option<BufReader<std::process::ChildStdout>>);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on loopback ephemeral ports; returns it and its (tcp, udp) addresses.
fn serve() -> (Guard, String, String) {
    let mut c = Command::new(BIN)
        .args(["serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(c.stdout.take().unwrap());
    reader.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "listening");
    let tcp = v["tcp"][0].as_str().unwrap().to_string();
    let udp = v["udp"][0].as_str().unwrap().to_string();
    (Guard(c, Some(reader)), tcp, udp)
}

fn write_spec(name: &str, spec: &Value) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("kdprobe-{}-{name}.json", std::process::id()));
    std::fs::write(&p, spec.to_string()).unwrap();
    p
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["run", "--spec", "-"], "", "stdin is empty"),
        (
            &["run", "--spec", "-"],
            "{not json",
            "not a valid probe list",
        ),
        (
            &["run", "--spec", "-"],
            r#"[{"id":"a","kind":"udp","target":"10.0.0.1:7","rate_per_s":0}]"#,
            "probes[0] (\"a\"): rate_per_s: 0 is outside 1..=1000",
        ),
        (
            &["run", "--spec", "-"],
            r#"[{"id":"a","kind":"tcp","target":"db.internal:5432"}]"#,
            "no host names",
        ),
        (
            &["run", "--spec", "-"],
            r#"[{"id":"a","kind":"icmp","target":"10.0.0.1","timeout_ms":60001}]"#,
            "timeout_ms: 60001 is outside",
        ),
        (
            &["run", "--spec", "/nonexistent/spec.json"],
            "",
            "spec /nonexistent/spec.json",
        ),
        (&["run"], "", "--spec"),
        (
            &["run", "--spec", "-", "--duration", "soon"],
            "",
            "not a duration",
        ),
        (&["serve"], "", "--tcp"),
        (&["serve", "--tcp", "localhost:80"], "", "invalid"),
        (&["frobnicate"], "", "unrecognized subcommand"),
    ];
    // More sockets in flight than any open-files limit the prober would raise itself to (2^20):
    // 20 TCP probes x 1000/s x 60 s.
    let many: Vec<Value> = (0..20)
        .map(|i| json!({"id":format!("t{i}"),"kind":"tcp","target":"127.0.0.1:1","rate_per_s":1000,"timeout_ms":60000}))
        .collect();
    let many = Value::Array(many).to_string();
    let cases: Vec<(&[&str], &str, &str)> = cases
        .iter()
        .copied()
        .chain([(&["run", "--spec", "-"][..], many.as_str(), "open sockets")])
        .collect();
    for (args, stdin, want) in &cases {
        let out = probe(args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {stdin:?}: {err}");
        assert!(
            err.contains(want),
            "{args:?} {stdin:?}: want {want:?} in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: no events on bad input");
    }
}

#[test]
fn setup_failures_exit_1() {
    let out = probe(
        &["run", "--spec", "-", "--netns", "/nonexistent/ns"],
        r#"[{"id":"a","kind":"udp","target":"127.0.0.1:9"}]"#,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("probe \"a\": netns /nonexistent/ns: No such file"),
        "{err}"
    );
    let out = probe(
        &[
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--netns",
            "/proc/self/status",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    // Binding an address this host does not have.
    let out = probe(&["serve", "--tcp", "192.0.2.1:7"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bind TCP 192.0.2.1:7"), "{err}");
}

#[test]
fn clean_loopback_run_has_no_window_and_full_counts() {
    let (_srv, tcp, udp) = serve();
    let mut probes = vec![
        json!({"id":"tcp","kind":"tcp","target":tcp,"rate_per_s":100}),
        json!({"id":"udp","kind":"udp","target":udp,"rate_per_s":100,"payload_bytes":1400}),
    ];
    if root() {
        probes.push(json!({"id":"icmp","kind":"icmp","target":"127.0.0.1","rate_per_s":100}));
    } else {
        eprintln!("not root: no ICMP probe on loopback (ping_group_range may forbid it)");
    }
    let spec = write_spec("clean", &json!({ "probes": probes }));
    let out = probe(
        &[
            "run",
            "--spec",
            spec.to_str().unwrap(),
            "--duration",
            "1200ms",
            "--stats-interval",
            "500ms",
        ],
        "",
    );
    let _ = std::fs::remove_file(&spec);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    assert!(ev.iter().all(|e| e["event"] != "loss"), "{ev:#?}");
    for p in &probes {
        let id = p["id"].as_str().unwrap();
        let mine: Vec<&Value> = ev.iter().filter(|e| e["probe"] == id).collect();
        assert_eq!(mine[0]["event"], "start");
        let stats = mine.iter().filter(|e| e["event"] == "stats").count();
        assert_eq!(stats, 2, "{id}: stats at 500 and 1000 ms");
        let s = mine.last().unwrap();
        assert_eq!(s["event"], "summary");
        assert_eq!(s["stop"], "duration");
        assert_eq!(s["lost"], 0, "{s}");
        assert_eq!(s["windows"], 0);
        let sent = s["sent"].as_u64().unwrap();
        assert!(
            (100..=125).contains(&sent),
            "{id}: {sent} probes in 1.2 s at 100/s"
        );
        assert_eq!(s["ok"].as_u64().unwrap(), sent);
        assert!(s["rtt_ms"]["p50"].as_f64().unwrap() < 50.0, "{s}");
        assert!(s["rtt_ms"]["max"].as_f64().unwrap() >= s["rtt_ms"]["p99"].as_f64().unwrap());
    }
}

#[test]
fn sigterm_flushes_an_open_window_and_the_summary() {
    // A port nothing listens on: every probe is refused, so the window never closes.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = write_spec(
        "sigterm",
        &json!([{"id":"down","kind":"tcp","target":format!("127.0.0.1:{port}"),"rate_per_s":50}]),
    );
    let mut c = Command::new(BIN)
        .args(["run", "--spec", spec.to_str().unwrap(), "--ignore-stdin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = c.id();
    let mut stdout = BufReader::new(c.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"event\":\"start\""), "{first}");
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    // SAFETY: signalling the child we started, by its PID.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let status = c.wait().unwrap();
    let _ = std::fs::remove_file(&spec);
    assert!(status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(3), "stops promptly");
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut rest).unwrap();
    let ev = events(&rest);
    assert_eq!(ev.len(), 2, "{ev:#?}");
    let w = &ev[0];
    assert_eq!(w["event"], "loss");
    assert_eq!(w["open"], true);
    assert!(
        w["reason"]
            .as_str()
            .unwrap()
            .starts_with("connect: Connection refused"),
        "{w}"
    );
    let d = w["duration_ms"].as_u64().unwrap();
    assert!((400..=1500).contains(&d), "{d}");
    assert_eq!(ev[1]["event"], "summary");
    assert_eq!(ev[1]["stop"], "signal");
    assert_eq!(ev[1]["windows"], 1);
    assert_eq!(ev[1]["lost"], w["lost"]);
}

#[test]
fn stdin_eof_stops_run_and_serve() {
    let (mut srv, tcp, _) = serve();
    let mut c = Command::new(BIN)
        .args(["run", "--spec", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    // The spec, then stdin stays open: the run goes on until it closes.
    writeln!(stdin, "{}", json!([{"id":"t","kind":"tcp","target":tcp}])).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        c.try_wait().unwrap().is_none(),
        "still running while stdin is open"
    );
    drop(stdin);
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    let ev = events(&out.stdout);
    let s = ev.last().unwrap();
    assert_eq!(s["event"], "summary");
    assert_eq!(s["stop"], "stdin-eof");
    assert!(s["ok"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(s["lost"], 0);

    drop(srv.0.stdin.take());
    let mut rest = String::new();
    std::io::Read::read_to_string(srv.1.as_mut().unwrap(), &mut rest).unwrap();
    let status = srv.0.wait().unwrap();
    assert!(status.success());
    let stopped: Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(stopped["event"], "stopped");
    assert_eq!(stopped["stop"], "stdin-eof");
    assert_eq!(stopped["tcp_connections"], s["ok"]);
}

#[test]
fn ipv6_loopback_all_kinds() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIP ipv6_loopback_all_kinds: no ::1 on this host ***\n"
        );
        return;
    }
    let mut c = Command::new(BIN)
        .args(["serve", "--tcp", "[::1]:0", "--udp", "[::1]:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(c.stdout.take().unwrap());
    reader.read_line(&mut line).unwrap();
    let _srv = Guard(c, Some(reader));
    let v: Value = serde_json::from_str(&line).unwrap();
    let mut probes = vec![
        json!({"id":"tcp6","kind":"tcp","target":v["tcp"][0]}),
        json!({"id":"udp6","kind":"udp","target":v["udp"][0]}),
    ];
    if root() {
        probes.push(json!({"id":"icmp6","kind":"icmp","target":"::1","icmp_socket":"raw"}));
    }
    let out = probe(
        &[
            "run",
            "--spec",
            "-",
            "--duration",
            "600ms",
            "--stats-interval",
            "0",
        ],
        &Value::Array(probes.clone()).to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events(&out.stdout);
    for p in &probes {
        let s = ev
            .iter()
            .find(|e| e["event"] == "summary" && e["probe"] == p["id"])
            .unwrap();
        assert!(s["ok"].as_u64().unwrap() >= 10, "{s}");
        assert_eq!(s["lost"], 0, "{s}");
    }
}
