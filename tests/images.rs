//! Images: the catalog, checksum files, `pull` against a local HTTP server, and (ignored, slow)
//! the real offline Debian 12 build.

use kubedrill::facts::OsFamily;
use kubedrill::images::checksum::find;
use kubedrill::images::{
    Algorithm, Boot, BootMode, BuildOptions, BuiltFrom, Catalog, ImageCache, ImageError,
    ImageState, Progress, Source, build, pull,
};
use sha2::{Digest as _, Sha256, Sha512};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn builtin_catalog_is_valid() {
    let c = Catalog::builtin().expect("built-in catalog parses");
    let names: Vec<&str> = c.entries().iter().map(|e| e.name.as_str()).collect();
    for n in [
        "ubuntu-24.04",
        "ubuntu-22.04",
        "debian-12",
        "rocky-9",
        "alma-9",
        "fedora-42",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    for e in c.entries() {
        assert!(e.url.starts_with("https://"), "{}: {}", e.name, e.url);
        assert!(
            matches!(e.os_family, OsFamily::Debian | OsFamily::Rhel),
            "{}",
            e.name
        );
        assert!(
            e.sha256.is_some()
                || e.checksum_url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
            "{}: no checksum source",
            e.name
        );
        assert_eq!(e.boot, BootMode::Disk, "{}", e.name);
        assert!(!e.checksum_file_name().is_empty());
    }
    let debian = c.get("debian-12").expect("debian-12");
    assert_eq!(debian.recipe.as_deref(), Some("debian-12"));
    assert_eq!(
        debian.checksum_file_name(),
        "debian-12-genericcloud-amd64.qcow2"
    );
    let err = c.get("windows-11").expect_err("unknown").to_string();
    assert!(
        err.contains("windows-11") && err.contains("ubuntu-24.04"),
        "{err}"
    );
}

#[test]
fn catalog_rejects_bad_entries() {
    let entry = |extra: &str| {
        format!(
            "images:\n  - name: x-1\n    os_family: debian\n    url: https://h/x.qcow2\n    boot: disk\n{extra}"
        )
    };
    let err = Catalog::parse(&entry(""), "user.yaml").expect_err("no checksum");
    assert!(err.to_string().contains("checksum_url or sha256"), "{err}");
    assert!(Catalog::parse(&entry("    sha256: abc\n"), "u").is_err());
    assert!(Catalog::parse(&entry("    checksum_url: ftp://h/SUMS\n"), "u").is_err());
    assert!(
        Catalog::parse(
            &entry("    checksum_url: https://h/SUMS\n    color: red\n"),
            "u"
        )
        .is_err()
    );
    assert!(Catalog::parse(&entry("    checksum_url: https://h/SUMS\n"), "u").is_ok());
    let traversal = entry("    checksum_url: https://h/SUMS\n").replace("x-1", "../x");
    assert!(Catalog::parse(&traversal, "u").is_err());
    // A user catalog replaces a built-in entry of the same name and adds new ones.
    let mut c = Catalog::builtin().expect("builtin");
    let n = c.entries().len();
    c.merge(
        Catalog::parse(
            &entry("    checksum_url: https://h/SUMS\n").replace("x-1", "debian-12"),
            "u",
        )
        .expect("valid"),
    );
    assert_eq!(c.entries().len(), n);
    assert_eq!(c.get("debian-12").expect("entry").url, "https://h/x.qcow2");
}

#[test]
fn checksum_files_gnu_and_bsd() {
    let h256 = hex(&Sha256::digest(b"a"));
    let h512 = hex(&Sha512::digest(b"a"));
    // coreutils, text and binary markers, as Ubuntu and Debian publish them.
    let gnu = format!("{h256} *ubuntu-24.04-server-cloudimg-amd64.img\n{h256}  other.img\n");
    let d = find(&gnu, "ubuntu-24.04-server-cloudimg-amd64.img", "SUMS").expect("found");
    assert_eq!(
        (d.algorithm, d.hex.as_str()),
        (Algorithm::Sha256, h256.as_str())
    );
    let sha512sums = format!("{h512}  debian-12-genericcloud-amd64.qcow2\n");
    let d = find(
        &sha512sums,
        "debian-12-genericcloud-amd64.qcow2",
        "SHA512SUMS",
    )
    .expect("found");
    assert_eq!(d.algorithm, Algorithm::Sha512);
    assert_eq!(d.hex, h512);
    // BSD tags inside a PGP-signed file, as Fedora and Rocky publish them.
    let bsd = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2: 123 bytes\n\
         SHA256 (Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2) = {}\n-----BEGIN PGP SIGNATURE-----\n",
        h256.to_uppercase()
    );
    let d = find(
        &bsd,
        "Fedora-Cloud-Base-Generic-42-1.1.x86_64.qcow2",
        "CHECKSUM",
    )
    .expect("found");
    assert_eq!(d.hex, h256, "lowercased");
    let bsd512 = format!("SHA512 (a.qcow2) = {h512}\nSHA256 (a.qcow2) = {h256}\n");
    assert_eq!(
        find(&bsd512, "a.qcow2", "C").expect("found").algorithm,
        Algorithm::Sha512
    );
    // A tag that does not match the digest's length is not trusted.
    assert!(find(&format!("SHA512 (a.qcow2) = {h256}\n"), "a.qcow2", "C").is_err());
    // Not listed: the error names the file and the checksum file.
    let err = find(&gnu, "ubuntu-22.04.img", "https://h/SHA256SUMS").expect_err("missing");
    assert!(matches!(err, ImageError::ChecksumNotFound { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("ubuntu-22.04.img") && msg.contains("https://h/SHA256SUMS"),
        "{msg}"
    );
    // A prefix of a listed name is not a match.
    assert!(find(&gnu, "other", "S").is_err());
}

/// A tiny HTTP/1.1 server on 127.0.0.1 serving fixed files; counts requests.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(files: Vec<(&'static str, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (h, p) = (hits.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                h.fetch_add(1, Ordering::SeqCst);
                serve(stream, &files, &p);
            }
        });
        Server { port, hits, paths }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

fn serve(stream: TcpStream, files: &[(&'static str, Vec<u8>)], paths: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).map_or(true, |n| n == 0) || l == "\r\n" {
            break;
        }
    }
    let path = request
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
    paths.lock().expect("lock").push(path.clone());
    let mut stream = stream;
    match files.iter().find(|(p, _)| *p == path) {
        Some((_, body)) => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
        None => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}

fn test_catalog(server_url: impl Fn(&str) -> String, sha256: Option<&str>) -> Catalog {
    let pin = sha256
        .map(|h| format!("    sha256: {h}\n"))
        .unwrap_or_default();
    let text = format!(
        "images:\n  - name: tiny-1\n    os_family: debian\n    url: {}\n    checksum_url: {}\n    boot: disk\n{pin}",
        server_url("images/tiny-1.qcow2"),
        server_url("images/SHA256SUMS"),
    );
    Catalog::parse(&text, "test catalog").expect("test catalog")
}

fn fake_qcow2() -> Vec<u8> {
    let mut v = b"QFI\xfb".to_vec();
    v.extend((0..300_000u32).map(|i| (i % 251) as u8));
    v
}

#[test]
fn pull_downloads_verifies_and_caches() {
    let body = fake_qcow2();
    let sums = format!(
        "{}  tiny-1.qcow2\n{}  unrelated.img\n",
        hex(&Sha256::digest(&body)),
        "0".repeat(64)
    );
    let server = Server::start(vec![
        ("images/tiny-1.qcow2", body.clone()),
        ("images/SHA256SUMS", sums.into_bytes()),
    ]);
    let catalog = test_catalog(|p| server.url(p), None);
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = ImageCache::at(tmp.path());

    let ready = pull(&catalog, &cache, "tiny-1", &Progress::quiet()).expect("pull");
    assert!(!ready.cached);
    assert_eq!(ready.dir, tmp.path().join("images/tiny-1/pull"));
    assert_eq!(std::fs::read(ready.disk()).expect("disk"), body);
    let m = &ready.manifest;
    assert_eq!(
        (m.name.as_str(), m.format.as_str(), m.size),
        ("tiny-1", "qcow2", body.len() as u64)
    );
    assert_eq!(m.sha256, hex(&Sha256::digest(&body)));
    assert_eq!(m.boot, Boot::Disk);
    assert!(
        matches!(&m.built_from, BuiltFrom::Url { url, checksum } if *url == server.url("images/tiny-1.qcow2") && checksum.algorithm == Algorithm::Sha256)
    );
    let on_disk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ready.dir.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(on_disk["sha256"], m.sha256);
    assert_eq!(on_disk["boot"]["mode"], "disk");
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "{:?}",
        server.paths.lock().expect("lock")
    );

    // Second pull: verified from the cache, no request at all.
    let again = pull(&catalog, &cache, "tiny-1", &Progress::quiet()).expect("pull again");
    assert!(again.cached);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);

    let listed = cache.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].source, &listed[0].state),
        (Source::Pull, &ImageState::Ready)
    );
    // Nothing but the image directory is left behind.
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("images/tiny-1"))
        .expect("dir")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(left, ["pull"]);

    // A corrupted cached disk is detected and downloaded again.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(ready.disk())
        .expect("open");
    f.write_all(b"QFI\xfbX").expect("corrupt");
    drop(f);
    let fixed = pull(&catalog, &cache, "tiny-1", &Progress::quiet()).expect("re-pull");
    assert!(!fixed.cached);
    assert_eq!(std::fs::read(fixed.disk()).expect("disk"), body);
}

#[test]
fn pull_with_a_pinned_sha256_skips_the_checksum_file() {
    let body = b"not a qcow2, just raw bytes".to_vec();
    let server = Server::start(vec![("images/tiny-1.qcow2", body.clone())]);
    let catalog = test_catalog(|p| server.url(p), Some(&hex(&Sha256::digest(&body))));
    let tmp = tempfile::tempdir().expect("tmp");
    let ready = pull(
        &catalog,
        &ImageCache::at(tmp.path()),
        "tiny-1",
        &Progress::quiet(),
    )
    .expect("pull");
    assert_eq!(ready.manifest.format, "raw");
    assert_eq!(
        server.paths.lock().expect("lock").as_slice(),
        ["images/tiny-1.qcow2"]
    );
}

#[test]
fn pull_rejects_a_corrupted_download() {
    let body = fake_qcow2();
    let mut corrupted = body.clone();
    corrupted[1000] ^= 0xff;
    let want = hex(&Sha256::digest(&body));
    let sums = format!("{want}  tiny-1.qcow2\n");
    let server = Server::start(vec![
        ("images/tiny-1.qcow2", corrupted.clone()),
        ("images/SHA256SUMS", sums.into_bytes()),
    ]);
    let catalog = test_catalog(|p| server.url(p), None);
    let tmp = tempfile::tempdir().expect("tmp");
    let err = pull(
        &catalog,
        &ImageCache::at(tmp.path()),
        "tiny-1",
        &Progress::quiet(),
    )
    .expect_err("mismatch");
    let msg = err.to_string();
    assert!(matches!(err, ImageError::ChecksumMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&want) && msg.contains(&hex(&Sha256::digest(&corrupted))),
        "{msg}"
    );
    assert!(msg.contains("tiny-1.qcow2"), "{msg}");
    // Nothing cached, no temp file left.
    let dir = tmp.path().join("images/tiny-1");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.map(|e| e.expect("e").file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(ImageCache::at(tmp.path()).list().expect("list").is_empty());
}

#[test]
fn pull_names_the_url_when_the_server_is_down_or_missing_the_file() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = |p: &str| format!("http://127.0.0.1:{port}/{p}");
    let catalog = test_catalog(url, None);
    let tmp = tempfile::tempdir().expect("tmp");
    let err = pull(
        &catalog,
        &ImageCache::at(tmp.path()),
        "tiny-1",
        &Progress::quiet(),
    )
    .expect_err("down");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("http://127.0.0.1:{port}/images/SHA256SUMS")),
        "{msg}"
    );

    let server = Server::start(vec![(
        "images/SHA256SUMS",
        format!("{}  tiny-1.qcow2\n", "a".repeat(64)).into_bytes(),
    )]);
    let catalog = test_catalog(|p| server.url(p), None);
    let err = pull(
        &catalog,
        &ImageCache::at(tmp.path()),
        "tiny-1",
        &Progress::quiet(),
    )
    .expect_err("404");
    let msg = err.to_string();
    assert!(
        msg.contains(&server.url("images/tiny-1.qcow2")) && msg.contains("404"),
        "{msg}"
    );
    assert!(ImageCache::at(tmp.path()).list().expect("list").is_empty());
}

#[test]
fn build_refuses_images_without_a_recipe() {
    let tmp = tempfile::tempdir().expect("tmp");
    let err = build(
        &Catalog::builtin().expect("catalog"),
        &ImageCache::at(tmp.path()),
        "ubuntu-24.04",
        &BuildOptions::default(),
        &Progress::quiet(),
    )
    .expect_err("no recipe");
    let msg = err.to_string();
    assert!(
        msg.contains("debian-12") && msg.contains("image pull ubuntu-24.04"),
        "{msg}"
    );
}

fn debugfs(raw: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(raw)
        .output()
        .expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "slow: real mmdebstrap build; run by scripts/lab-test.sh"]
fn build_debian_12_image() {
    // Honour KUBEDRILL_CACHE_DIR so CI can keep the image between runs.
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = match std::env::var_os("KUBEDRILL_CACHE_DIR") {
        Some(_) => ImageCache::from_env().expect("cache"),
        None => ImageCache::at(tmp.path()),
    };
    let catalog = Catalog::builtin().expect("catalog");
    let start = Instant::now();
    let ready = build(
        &catalog,
        &cache,
        "debian-12",
        &BuildOptions::default(),
        &Progress::stderr(),
    )
    .expect("build");
    eprintln!(
        "build: {:.1} s (cached: {}), disk {} bytes",
        start.elapsed().as_secs_f64(),
        ready.cached,
        ready.manifest.size
    );
    let m = &ready.manifest;
    assert_eq!(
        (m.name.as_str(), m.format.as_str(), m.os_family),
        ("debian-12", "qcow2", OsFamily::Debian)
    );
    let Boot::Direct {
        kernel,
        initrd,
        cmdline,
    } = &m.boot
    else {
        panic!("direct boot expected: {:?}", m.boot)
    };
    assert_eq!(cmdline, "root=/dev/vda rw console=ttyS0 net.ifnames=0");
    let kernel_len = std::fs::metadata(ready.dir.join(kernel))
        .expect("kernel")
        .len();
    let initrd_len = std::fs::metadata(ready.dir.join(initrd))
        .expect("initrd")
        .len();
    assert!(kernel_len > 4 << 20, "kernel {kernel_len}");
    assert!(
        initrd_len > 1 << 20 && initrd_len < 20 << 20,
        "MODULES=list initrd is small: {initrd_len}"
    );
    let BuiltFrom::Recipe { hash, .. } = &m.built_from else {
        panic!("recipe expected")
    };

    let info = Command::new("qemu-img")
        .args(["info", "--output", "json"])
        .arg(ready.disk())
        .output()
        .expect("qemu-img");
    assert!(info.status.success());
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 4u64 << 30);

    // Look inside without booting: back to raw, then debugfs.
    let raw = tmp.path().join("check.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(ready.disk())
        .arg(&raw)
        .status()
        .expect("convert");
    assert!(st.success());
    let marker = debugfs(&raw, "cat /etc/kubedrill-image");
    assert!(marker.contains(&format!("recipe_hash={hash}")), "{marker}");
    for f in [
        "/usr/sbin/sshd",
        "/usr/bin/cloud-init",
        "/usr/sbin/ethtool",
        "/usr/sbin/qemu-ga",
        "/usr/sbin/bpftool",
        "/usr/bin/ip",
    ] {
        let s = debugfs(&raw, &format!("stat {f}"));
        assert!(s.contains("Type: regular"), "{f}: {s}");
    }
    // What `apply` installs from a bundle is deliberately not in the image.
    for f in [
        "/usr/bin/containerd",
        "/usr/sbin/runc",
        "/usr/sbin/conntrack",
        "/usr/bin/socat",
    ] {
        let s = debugfs(&raw, &format!("stat {f}"));
        assert!(
            !s.contains("Type: regular"),
            "{f} should not be in the image: {s}"
        );
    }
    assert!(debugfs(&raw, "cat /etc/initramfs-tools/modules").contains("virtio_blk"));
    assert!(
        debugfs(&raw, "cat /etc/cloud/cloud.cfg.d/90-kubedrill.cfg")
            .contains("ssh_genkeytypes: [ed25519]")
    );
    assert!(debugfs(&raw, "cat /etc/fstab").contains("/dev/vda"));
    assert!(
        debugfs(&raw, "ls /etc/systemd/system/getty.target.wants")
            .contains("serial-getty@ttyS0.service")
    );
    assert!(
        !debugfs(&raw, "ls /etc/ssh").contains("ssh_host_"),
        "no baked-in host keys"
    );
    std::fs::remove_file(&raw).expect("rm raw");

    // Second build: a cache hit, no mmdebstrap.
    let start = Instant::now();
    let again = build(
        &catalog,
        &cache,
        "debian-12",
        &BuildOptions::default(),
        &Progress::quiet(),
    )
    .expect("cached");
    assert!(again.cached);
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    assert_eq!(again.manifest, ready.manifest);
}

fn kubedrill(args: &[&str], cache: &Path, catalog: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubedrill"));
    cmd.args(args)
        .env("KUBEDRILL_CACHE_DIR", cache)
        .env_remove("KUBEDRILL_CATALOG");
    if let Some(c) = catalog {
        cmd.env("KUBEDRILL_CATALOG", c);
    }
    cmd.output().expect("kubedrill runs")
}

#[test]
fn cli_image_pull_and_ls() {
    let body = fake_qcow2();
    let sums = format!("SHA256 (tiny-1.qcow2) = {}\n", hex(&Sha256::digest(&body)));
    let server = Server::start(vec![
        ("images/tiny-1.qcow2", body.clone()),
        ("images/SHA256SUMS", sums.into_bytes()),
    ]);
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("cache");
    let user_catalog = tmp.path().join("catalog.yaml");
    std::fs::write(
        &user_catalog,
        format!(
            "images:\n  - name: tiny-1\n    os_family: rhel\n    url: {}\n    checksum_url: {}\n    boot: disk\n",
            server.url("images/tiny-1.qcow2"),
            server.url("images/SHA256SUMS")
        ),
    )
    .expect("write catalog");

    let out = kubedrill(&["image", "pull", "tiny-1"], &cache, Some(&user_catalog));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // stderr is not a terminal here: plain progress lines, no bar.
    assert!(
        stderr.contains(&format!(
            "downloading {}",
            server.url("images/tiny-1.qcow2")
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tiny-1: ready"));
    let again = kubedrill(
        &["image", "pull", "tiny-1", "--output", "json"],
        &cache,
        Some(&user_catalog),
    );
    let ready: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(ready["cached"], true);
    assert_eq!(ready["manifest"]["os_family"], "rhel");

    let ls = kubedrill(
        &["image", "ls", "--output", "json"],
        &cache,
        Some(&user_catalog),
    );
    assert!(ls.status.success());
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
    let names: Vec<&str> = v["catalog"]
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.contains(&"ubuntu-24.04") && names.contains(&"tiny-1"),
        "{names:?}"
    );
    assert_eq!(v["cached"][0]["name"], "tiny-1");
    assert_eq!(v["cached"][0]["state"], "ready");
    let text = kubedrill(&["image", "ls"], &cache, Some(&user_catalog));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("tiny-1") && l.contains("pull: 0.3 MiB qcow2")),
        "{text}"
    );

    let unknown = kubedrill(&["image", "pull", "nope"], &cache, None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown image \"nope\""));
}

#[test]
fn cache_reports_broken_images() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = ImageCache::at(tmp.path());
    assert!(cache.list().expect("empty cache").is_empty());
    let dir = cache.image_dir("half-1", Source::Build);
    std::fs::create_dir_all(&dir).expect("mkdir");
    assert!(
        matches!(&cache.list().expect("list")[0].state, ImageState::Broken(why) if why.contains("manifest.json"))
    );
    let manifest = serde_json::json!({
        "name": "half-1", "os_family": "debian", "format": "qcow2", "disk": "disk.qcow2",
        "sha256": "0".repeat(64), "size": 10,
        "boot": {"mode": "direct", "kernel": "vmlinuz", "initrd": "initrd.img", "cmdline": "x"},
        "built_from": {"kind": "recipe", "name": "half-1", "hash": "h", "mirror": "m"},
        "created": "2026-11-22T00:00:00Z", "format_version": 1
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("manifest");
    std::fs::write(dir.join("disk.qcow2"), b"0123456789").expect("disk");
    let listed = cache.list().expect("list");
    assert!(
        matches!(&listed[0].state, ImageState::Broken(why) if why.contains("vmlinuz")),
        "{:?}",
        listed[0].state
    );
    std::fs::write(dir.join("vmlinuz"), b"k").expect("kernel");
    std::fs::write(dir.join("initrd.img"), b"i").expect("initrd");
    assert_eq!(cache.list().expect("list")[0].state, ImageState::Ready);
    std::fs::write(dir.join("disk.qcow2"), b"012").expect("truncate");
    assert!(
        matches!(&cache.list().expect("list")[0].state, ImageState::Broken(why) if why.contains("3 bytes"))
    );
}

#[test]
fn a_failed_build_leaves_no_image_and_keeps_its_log() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !is_root
        || Command::new("mmdebstrap")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("skipped: needs root and mmdebstrap (scripts/setup.sh)");
        return;
    }
    // Nothing listens on that port: apt-get update fails within seconds.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = ImageCache::at(tmp.path());
    let opts = BuildOptions {
        mirror: Some(format!("http://127.0.0.1:{port}/debian")),
        force: false,
    };
    let err = build(
        &Catalog::builtin().expect("catalog"),
        &cache,
        "debian-12",
        &opts,
        &Progress::quiet(),
    )
    .expect_err("no mirror");
    let msg = err.to_string();
    assert!(msg.starts_with("mmdebstrap failed"), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")),
        "the tail shows apt's error: {msg}"
    );
    let left: Vec<String> = std::fs::read_dir(tmp.path().join("images/debian-12"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["build-failed.log"],
        "no staging directory or half image left"
    );
    assert!(cache.list().expect("list").is_empty());
}
