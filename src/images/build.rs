//! `build`: offline images from a recipe (`images/NAME/recipe.yaml`). `debian-12` runs
//! `mmdebstrap --variant=minbase` against Debian's package mirror, configures the root file
//! system for a virtio guest (fstab, a small `MODULES=list` initrd, cloud-init with NoCloud,
//! serial console, a DHCP fallback, the `/etc/kubedrill-image` marker), copies out the kernel
//! and initrd for direct boot, and packs the tree with `mkfs.ext4 -d` and `qemu-img convert`.
//!
//! Everything happens in a staging directory inside the cache that is removed on failure; the
//! finished image directory is renamed into place. A cached image whose recipe hash matches is
//! reused unless `force` is set.

use super::cache::{Boot, BuiltFrom, ImageState, Manifest, Ready, Source, write_manifest};
use super::{Catalog, ImageCache, ImageError, Progress, checksum};
use crate::facts::OsFamily;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's main mirror, used when neither `--mirror` nor the machine's apt sources name one.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

const RECIPES: &[(&str, &str)] = &[(
    "debian-12",
    include_str!("../../images/debian-12/recipe.yaml"),
)];

/// The text of the built-in recipe `name`.
pub fn recipe_text(name: &str) -> Option<&'static str> {
    RECIPES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// An offline image recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Image name.
    pub name: String,
    /// OS family.
    pub os_family: OsFamily,
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Archive components.
    pub components: Vec<String>,
    /// Packages installed on top of the minbase variant.
    pub packages: Vec<String>,
    /// Modules in the initrd (`MODULES=list`).
    pub initrd_modules: Vec<String>,
    /// Kernel command line for direct boot.
    pub cmdline: String,
    /// Size of the ext4 file system (`4G`).
    pub disk_size: String,
    /// dpkg `path-exclude` patterns (documentation, manuals) to keep the image small.
    #[serde(default)]
    pub path_exclude: Vec<String>,
    /// dpkg `path-include` patterns that win over `path_exclude`.
    #[serde(default)]
    pub path_include: Vec<String>,
}

impl Recipe {
    /// Parse and check a recipe (names and sizes are passed to programs, so they are strict).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ImageError> {
        let invalid = |message: String| ImageError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let r: Recipe = serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let word = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
        };
        if !word(&r.suite, b"-") {
            return Err(invalid(format!("suite {:?} is not a suite name", r.suite)));
        }
        for c in &r.components {
            if !word(c, b"-") {
                return Err(invalid(format!("component {c:?} is not a component name")));
            }
        }
        if r.packages.is_empty() {
            return Err(invalid("packages is empty".into()));
        }
        for p in &r.packages {
            if !word(p, b".+-") {
                return Err(invalid(format!(
                    "package {p:?} is not a Debian package name"
                )));
            }
        }
        for m in &r.initrd_modules {
            if !word(m, b"_-") {
                return Err(invalid(format!("initrd module {m:?} is not a module name")));
            }
        }
        let digits = r.disk_size.trim_end_matches(['K', 'M', 'G', 'T']);
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || r.disk_size.len() - digits.len() > 1
        {
            return Err(invalid(format!(
                "disk_size {:?}: use a number with K, M, G or T",
                r.disk_size
            )));
        }
        for p in r.path_exclude.iter().chain(&r.path_include) {
            if !p.starts_with('/') || p.contains(char::is_whitespace) {
                return Err(invalid(format!(
                    "path pattern {p:?} must be absolute, no spaces"
                )));
            }
        }
        Ok(r)
    }
}

/// mmdebstrap hooks (`--setup-hook`, then `--customize-hook`s); `{OVERLAY}` is the quoted
/// overlay directory, `$1` the root file system.
const SETUP_HOOKS: &[&str] = &[
    // MODULES=list before the kernel is installed: its first initrd is already small (fast);
    // a customize hook regenerates it with the module list in place.
    "mkdir -p \"$1\"/etc/initramfs-tools/conf.d && cp {OVERLAY}/etc/initramfs-tools/conf.d/kubedrill.conf \"$1\"/etc/initramfs-tools/conf.d/",
];
const CUSTOMIZE_HOOKS: &[&str] = &[
    "cp -a {OVERLAY}/. \"$1\"/",
    // Host keys are made per VM on first boot (cloud-init, else kubedrill-ssh-hostkeys).
    "rm -f \"$1\"/etc/ssh/ssh_host_*",
    "chroot \"$1\" systemctl enable serial-getty@ttyS0.service systemd-networkd.service kubedrill-ssh-hostkeys.service",
    "chroot \"$1\" update-initramfs -u -k all",
];

const MARKER: &str = "etc/kubedrill-image";

/// The recipe hash recorded in the manifest and the image: SHA-256 of the format version, the
/// recipe text, the files kubedrill writes into the image and the hooks, so changing any of
/// them rebuilds.
pub fn recipe_hash(recipe: &Recipe, text: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(format!(
        "kubedrill-image-format {}\n",
        super::FORMAT_VERSION
    ));
    h.update(text);
    for (path, content) in overlay_files(recipe, "") {
        if path != MARKER {
            h.update(format!("\0{path}\0{content}"));
        }
    }
    for hook in SETUP_HOOKS.iter().chain(CUSTOMIZE_HOOKS) {
        h.update(format!("\0{hook}"));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Options for [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Package mirror; default: the machine's apt sources, else [`DEFAULT_MIRROR`].
    pub mirror: Option<String>,
    /// Rebuild even when the cached image matches the recipe.
    pub force: bool,
}

/// Build catalog image `name` from its recipe, or reuse the cached build of the same recipe.
pub fn build(
    catalog: &Catalog,
    cache: &ImageCache,
    name: &str,
    opts: &BuildOptions,
    progress: &Progress,
) -> Result<Ready, ImageError> {
    let entry = catalog.get(name)?;
    let text = entry
        .recipe
        .as_deref()
        .and_then(recipe_text)
        .ok_or_else(|| ImageError::NoRecipe {
            name: name.to_owned(),
            buildable: catalog.names(|e| e.recipe.is_some()),
        })?;
    let recipe = Recipe::parse(text, &format!("recipe {name}"))?;
    let hash = recipe_hash(&recipe, text);
    if !opts.force
        && let Some(img) = cache.get(name, Source::Build)
        && let (ImageState::Ready, Some(m)) = (&img.state, &img.manifest)
        && matches!(&m.built_from, BuiltFrom::Recipe { hash: h, .. } if *h == hash)
    {
        return Ok(Ready {
            dir: img.dir.clone(),
            manifest: m.clone(),
            cached: true,
        });
    }
    for (program, package) in [
        ("mmdebstrap", "mmdebstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
    ] {
        if find_program(program).is_none() {
            return Err(ImageError::MissingTool { program, package });
        }
    }
    let mirror = match &opts.mirror {
        Some(m) => m.clone(),
        None => apt_mirror(&recipe.suite).unwrap_or_else(|| DEFAULT_MIRROR.to_owned()),
    };
    let staging = cache.staging(name)?;
    let work = staging.path().join("work");
    let out = staging.path().join("image");
    for d in [&work, &out] {
        std::fs::create_dir(d).map_err(ImageError::io("creating", d))?;
    }
    let log = out.join("build.log");
    let rootfs = work.join("rootfs");
    let overlay = work.join("overlay");
    write_overlay(&overlay, &recipe, &hash)?;

    progress.line(&format!(
        "building {name} from {mirror} ({} {}, {} packages); log: {}",
        recipe.suite,
        recipe.components.join(","),
        recipe.packages.len(),
        log.display()
    ));
    let step = progress.step("mmdebstrap: installing packages (minutes)");
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--variant=minbase")
        .arg("--mode=root")
        .arg(format!("--components={}", recipe.components.join(",")))
        .arg(format!("--include={}", recipe.packages.join(",")));
    for p in &recipe.path_exclude {
        cmd.arg(format!("--dpkgopt=path-exclude={p}"));
    }
    for p in &recipe.path_include {
        cmd.arg(format!("--dpkgopt=path-include={p}"));
    }
    let ov = shell_quote(&overlay.display().to_string());
    for hook in SETUP_HOOKS {
        cmd.arg(format!("--setup-hook={}", hook.replace("{OVERLAY}", &ov)));
    }
    for hook in CUSTOMIZE_HOOKS {
        cmd.arg(format!(
            "--customize-hook={}",
            hook.replace("{OVERLAY}", &ov)
        ));
    }
    cmd.arg(&recipe.suite).arg(&rootfs).arg(&mirror);
    run(&mut cmd, &log)?;
    step.done();

    let (kernel, initrd) = kernel_files(&rootfs)?;
    for (from, to) in [(&kernel, "vmlinuz"), (&initrd, "initrd.img")] {
        std::fs::copy(from, out.join(to)).map_err(ImageError::io("copying", from))?;
    }

    let step = progress.step(&format!(
        "mkfs.ext4 -d ({}) + qemu-img convert",
        recipe.disk_size
    ));
    let raw = work.join("disk.raw");
    run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&rootfs)
            .arg(&raw)
            .arg(&recipe.disk_size),
        &log,
    )?;
    // The tree is packed: free its space before the qcow2 is written.
    std::fs::remove_dir_all(&rootfs).map_err(ImageError::io("removing", &rootfs))?;
    let disk = out.join("disk.qcow2");
    run(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&disk),
        &log,
    )?;
    std::fs::remove_file(&raw).map_err(ImageError::io("removing", &raw))?;
    step.done();

    let size = std::fs::metadata(&disk)
        .map_err(ImageError::io("reading", &disk))?
        .len();
    let manifest = Manifest {
        name: name.to_owned(),
        os_family: recipe.os_family,
        format: "qcow2".to_owned(),
        disk: "disk.qcow2".into(),
        sha256: checksum::sha256_file(&disk)?,
        size,
        boot: Boot::Direct {
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            cmdline: recipe.cmdline.clone(),
        },
        built_from: BuiltFrom::Recipe {
            name: name.to_owned(),
            hash,
            mirror,
        },
        created: super::now_rfc3339(),
        format_version: super::FORMAT_VERSION,
    };
    write_manifest(&out, &manifest)?;
    let dir = cache.commit(&out, name, Source::Build)?;
    Ok(Ready {
        dir,
        manifest,
        cached: false,
    })
}

/// Files written into the root file system (copied over it by a customize hook).
fn overlay_files(recipe: &Recipe, hash: &str) -> Vec<(&'static str, String)> {
    vec![
        ("etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n".into()),
        ("etc/hostname", "kubedrill\n".into()),
        (
            // FSTYPE: the root's type cannot be probed in the chroot; fsck needs it.
            "etc/initramfs-tools/conf.d/kubedrill.conf",
            "MODULES=list\nFSTYPE=ext4\n".into(),
        ),
        (
            "etc/initramfs-tools/modules",
            recipe.initrd_modules.iter().map(|m| format!("{m}\n")).collect(),
        ),
        (
            "etc/cloud/cloud.cfg.d/90-kubedrill.cfg",
            "# kubedrill image: NoCloud seed (or nothing), no locale generation (no locales\n\
             # package), ed25519 host keys only (RSA key generation is slow under emulation).\n\
             datasource_list: [NoCloud, None]\n\
             locale: false\n\
             ssh_genkeytypes: [ed25519]\n\
             ssh_deletekeys: true\n"
                .into(),
        ),
        (
            // Used only when no other .network file matches (cloud-init writes 10-cloud-init-*).
            "etc/systemd/network/90-kubedrill-dhcp.network",
            "[Match]\nName=eth* en*\n\n[Network]\nDHCP=yes\n".into(),
        ),
        (
            "etc/systemd/system/kubedrill-ssh-hostkeys.service",
            "[Unit]\n\
             Description=Generate an ed25519 SSH host key when cloud-init did not\n\
             After=cloud-init.service\n\
             Before=ssh.service\n\
             ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n\
             [Service]\n\
             Type=oneshot\n\
             ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N \"\" -f /etc/ssh/ssh_host_ed25519_key\n\n\
             [Install]\n\
             WantedBy=multi-user.target\n"
                .into(),
        ),
        (
            MARKER,
            format!(
                "name={}\nrecipe_hash={hash}\nformat_version={}\n",
                recipe.name,
                super::FORMAT_VERSION
            ),
        ),
    ]
}

fn write_overlay(dir: &Path, recipe: &Recipe, hash: &str) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    for (rel, content) in overlay_files(recipe, hash) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(ImageError::io("creating", parent))?;
        }
        crate::files::write(&path, content).map_err(ImageError::io("writing", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(ImageError::io("chmod", &path))?;
    }
    // `cp -a overlay/. rootfs/` copies directory modes too: keep them the usual 0755.
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
            .map_err(ImageError::io("chmod", &d))?;
        for e in std::fs::read_dir(&d).map_err(ImageError::io("listing", &d))? {
            let p = e.map_err(ImageError::io("listing", &d))?.path();
            if p.is_dir() {
                dirs.push(p);
            }
        }
    }
    Ok(())
}

/// `boot/vmlinuz-VERSION` and its `boot/initrd.img-VERSION` (the newest version).
fn kernel_files(rootfs: &Path) -> Result<(PathBuf, PathBuf), ImageError> {
    let boot = rootfs.join("boot");
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .map_err(ImageError::io("listing", &boot))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
        .collect();
    versions.sort();
    let missing = |what: String| ImageError::Io {
        action: "finding",
        path: boot.join(what),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    let v = versions.pop().ok_or_else(|| missing("vmlinuz-*".into()))?;
    let initrd = boot.join(format!("initrd.img-{v}"));
    if !initrd.is_file() {
        return Err(missing(format!("initrd.img-{v}")));
    }
    Ok((boot.join(format!("vmlinuz-{v}")), initrd))
}

/// Run a command with its output appended to `log`; a failure carries the log's last lines.
fn run(cmd: &mut Command, log: &Path) -> Result<(), ImageError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(ImageError::io("opening", log))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let _ = writeln!(f, "\n$ {cmd:?}");
    let err = f.try_clone().map_err(ImageError::io("opening", log))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(err)
        .status()
        .map_err(|e| ImageError::Command {
            command: program.clone(),
            status: e.to_string(),
            log: log.to_path_buf(),
            tail: String::new(),
        })?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // The last lines of this command's output (its own command line is in the log).
    let lines: Vec<&str> = text
        .lines()
        .rev()
        .take_while(|l| !l.starts_with("$ "))
        .collect();
    let tail: Vec<&str> = lines.into_iter().take(20).rev().collect();
    let tail = tail.join("\n");
    Err(ImageError::Command {
        command: program.clone(),
        status: status.to_string(),
        // The staging directory is removed on failure: keep the log where it can be read.
        log: keep_log(log),
        tail,
    })
}

/// Copy a failed build's log out of the staging directory (to the cache's `images/` parent).
fn keep_log(log: &Path) -> PathBuf {
    let Some(staging) = log.parent().and_then(Path::parent) else {
        return log.to_path_buf();
    };
    let Some(name_dir) = staging.parent() else {
        return log.to_path_buf();
    };
    let kept = name_dir.join("build-failed.log");
    match std::fs::copy(log, &kept) {
        Ok(_) => kept,
        Err(_) => log.to_path_buf(),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The machine's apt mirror for `suite`: the first `deb` source (one-line `.list` or deb822
/// `.sources`) listing that suite, from `/etc/apt/sources.list` then `sources.list.d/`.
pub fn apt_mirror(suite: &str) -> Option<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|p| {
        let name = p.file_name()?.to_str()?;
        let text = std::fs::read_to_string(p).ok()?;
        if name.ends_with(".sources") {
            mirror_deb822(&text, suite)
        } else if name.ends_with(".list") {
            mirror_one_line(&text, suite)
        } else {
            None
        }
    })
}

/// The first `deb URI SUITE …` line for `suite` (options in `[…]` skipped).
pub fn mirror_one_line(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.split('#').next().unwrap_or("");
        let rest = l.trim().strip_prefix("deb ")?.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (uri, s) = (words.next()?, words.next()?);
        (s == suite && usable_uri(uri)).then(|| uri.trim_end_matches('/').to_owned())
    })
}

/// The first deb822 stanza with `Types: deb` and `suite` in `Suites:`; its first URI.
pub fn mirror_deb822(text: &str, suite: &str) -> Option<String> {
    let mut stanzas = vec![Vec::new()];
    for l in text.lines() {
        if l.trim().is_empty() {
            stanzas.push(Vec::new());
        } else if !l.starts_with('#')
            && let Some(s) = stanzas.last_mut()
        {
            s.push(l);
        }
    }
    stanzas.iter().find_map(|s| {
        let field = |k: &str| {
            s.iter().find_map(|l| {
                let (key, v) = l.split_once(':')?;
                key.trim().eq_ignore_ascii_case(k).then(|| v.trim())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        let deb = field("Types")?.split_whitespace().any(|t| t == "deb");
        let has_suite = field("Suites")?.split_whitespace().any(|x| x == suite);
        let uri = field("URIs")?.split_whitespace().find(|u| usable_uri(u))?;
        (enabled && deb && has_suite).then(|| uri.trim_end_matches('/').to_owned())
    })
}

fn usable_uri(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file:/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipe_parses() {
        let text = recipe_text("debian-12").expect("debian-12 recipe");
        let r = Recipe::parse(text, "debian-12").expect("valid");
        assert_eq!(r.suite, "bookworm");
        for p in [
            "linux-image-amd64",
            "openssh-server",
            "cloud-init",
            "qemu-guest-agent",
            "ethtool",
            "iproute2",
        ] {
            assert!(r.packages.iter().any(|x| x == p), "{p}");
        }
        assert_eq!(
            r.initrd_modules,
            ["virtio_pci", "virtio_blk", "virtio_net", "ext4"]
        );
        let hash = recipe_hash(&r, text);
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, recipe_hash(&r, &format!("{text}\n# changed")));
        let mut other = r.clone();
        other.initrd_modules.push("virtio_scsi".into());
        assert_ne!(
            hash,
            recipe_hash(&other, text),
            "overlay files are part of the hash"
        );
    }

    #[test]
    fn recipe_rejects_unsafe_values() {
        let base = recipe_text("debian-12").expect("recipe");
        let bad = base.replace("  - netbase\n", "  - \"netbase; rm -rf /\"\n");
        assert!(Recipe::parse(&bad, "x").is_err());
        let bad = base.replace("disk_size: 4G", "disk_size: 4GB");
        assert!(Recipe::parse(&bad, "x").is_err());
    }

    #[test]
    fn overlay_has_the_config() {
        let r = Recipe::parse(recipe_text("debian-12").expect("recipe"), "x").expect("valid");
        let files = overlay_files(&r, "abc");
        let get = |p: &str| {
            files
                .iter()
                .find(|(n, _)| *n == p)
                .map(|(_, c)| c.as_str())
                .unwrap_or("")
        };
        assert_eq!(
            get("etc/initramfs-tools/modules"),
            "virtio_pci\nvirtio_blk\nvirtio_net\next4\n"
        );
        assert!(
            get("etc/cloud/cloud.cfg.d/90-kubedrill.cfg").contains("ssh_genkeytypes: [ed25519]")
        );
        assert!(get("etc/cloud/cloud.cfg.d/90-kubedrill.cfg").contains("locale: false"));
        assert!(get("etc/kubedrill-image").contains("recipe_hash=abc"));
    }

    #[test]
    fn mirrors_from_apt_sources() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_deb822(deb822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        assert_eq!(mirror_deb822(deb822, "trixie"), None);
        let disabled = "Enabled: no\nTypes: deb\nURIs: http://a/debian\nSuites: bookworm\n";
        assert_eq!(mirror_deb822(disabled, "bookworm"), None);
        let list = "# comment\ndeb-src http://x/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_one_line(list, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_one_line("deb cdrom:[x]/ bookworm main\n", "bookworm"),
            None
        );
    }
}
