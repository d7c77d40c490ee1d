//! `pull`: download a catalog image over HTTP(S), hashing while it arrives, verify it against
//! the pinned SHA-256 or the vendor's checksum file, and cache it.

use super::cache::{Boot, BuiltFrom, ImageState, Manifest, Ready, Source, write_manifest};
use super::checksum::{self, Algorithm, Hasher};
use super::{Catalog, CatalogEntry, ImageCache, ImageError, Progress};
use std::io::{Read, Write};
use std::time::Duration;

/// Checksum files larger than this are refused.
const MAX_CHECKSUM_FILE: u64 = 4 << 20;

/// Download, verify and cache catalog image `name`. An image already cached from the same URL
/// whose disk still has the recorded SHA-256 is reused without touching the network.
pub fn pull(
    catalog: &Catalog,
    cache: &ImageCache,
    name: &str,
    progress: &Progress,
) -> Result<Ready, ImageError> {
    let entry = catalog.get(name)?;
    if let Some(ready) = cached(cache, entry, progress)? {
        return Ok(ready);
    }
    let agent = agent();
    let expected = match entry.pinned() {
        Some(d) => d,
        None => {
            // validate() guarantees checksum_url when there is no pin.
            let url = entry.checksum_url.as_deref().unwrap_or_default();
            let text = fetch_text(&agent, url)?;
            checksum::find(&text, entry.checksum_file_name(), url)?
        }
    };
    let staging = cache.staging(name)?;
    let out = staging.path().join("image");
    std::fs::create_dir(&out).map_err(ImageError::io("creating", &out))?;
    let part = out.join("download.part");
    let (sha256, other) = download(&agent, &entry.url, &part, expected.algorithm, progress)?;
    let got = match expected.algorithm {
        Algorithm::Sha256 => sha256.clone(),
        Algorithm::Sha512 => other.unwrap_or_default(),
    };
    if got != expected.hex {
        // `staging` is removed on return: nothing of the download stays in the cache.
        return Err(ImageError::ChecksumMismatch {
            url: entry.url.clone(),
            algorithm: expected.algorithm,
            expected: expected.hex,
            got,
        });
    }
    let format = if is_qcow2(&part)? { "qcow2" } else { "raw" };
    let disk = format!("disk.{format}");
    let disk_path = out.join(&disk);
    std::fs::rename(&part, &disk_path).map_err(ImageError::io("renaming", &part))?;
    let size = std::fs::metadata(&disk_path)
        .map_err(ImageError::io("reading", &disk_path))?
        .len();
    let manifest = Manifest {
        name: entry.name.clone(),
        os_family: entry.os_family,
        format: format.to_owned(),
        disk: disk.into(),
        sha256,
        size,
        boot: Boot::Disk,
        built_from: BuiltFrom::Url {
            url: entry.url.clone(),
            checksum: expected,
        },
        created: super::now_rfc3339(),
        format_version: super::FORMAT_VERSION,
    };
    write_manifest(&out, &manifest)?;
    let dir = cache.commit(&out, name, Source::Pull)?;
    Ok(Ready {
        dir,
        manifest,
        cached: false,
    })
}

/// The cached copy, when it is from this URL (and this pin) and its disk still hashes right.
fn cached(
    cache: &ImageCache,
    entry: &CatalogEntry,
    progress: &Progress,
) -> Result<Option<Ready>, ImageError> {
    let Some(img) = cache.get(&entry.name, Source::Pull) else {
        return Ok(None);
    };
    let (ImageState::Ready, Some(m)) = (&img.state, &img.manifest) else {
        return Ok(None);
    };
    let same_url = matches!(&m.built_from, BuiltFrom::Url { url, .. } if *url == entry.url);
    let pin_ok = entry.pinned().is_none_or(|p| p.hex == m.sha256);
    if !same_url || !pin_ok {
        return Ok(None);
    }
    let step = progress.step(&format!("verifying cached {}", entry.name));
    let disk = img.dir.join(&m.disk);
    if checksum::sha256_file(&disk)? != m.sha256 {
        drop(step);
        progress.line(&format!(
            "cached {} is corrupt; downloading it again",
            disk.display()
        ));
        return Ok(None);
    }
    step.done();
    Ok(Some(Ready {
        dir: img.dir.clone(),
        manifest: m.clone(),
        cached: true,
    }))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(concat!("kubedrill/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn http_err(url: &str) -> impl Fn(ureq::Error) -> ImageError + '_ {
    move |e| ImageError::Http {
        url: url.to_owned(),
        message: e.to_string(),
    }
}

fn fetch_text(agent: &ureq::Agent, url: &str) -> Result<String, ImageError> {
    let mut resp = agent.get(url).call().map_err(http_err(url))?;
    resp.body_mut()
        .with_config()
        .limit(MAX_CHECKSUM_FILE)
        .read_to_string()
        .map_err(http_err(url))
}

/// Stream `url` into `dest`, hashing as it arrives; returns (SHA-256, SHA-512 when asked).
fn download(
    agent: &ureq::Agent,
    url: &str,
    dest: &std::path::Path,
    algorithm: Algorithm,
    progress: &Progress,
) -> Result<(String, Option<String>), ImageError> {
    let resp = agent.get(url).call().map_err(http_err(url))?;
    let total = resp.body().content_length();
    let mut reader = resp.into_body().into_reader();
    let file = std::fs::File::create(dest).map_err(ImageError::io("creating", dest))?;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Hasher::new(algorithm == Algorithm::Sha512);
    let mut bar = progress.download(url, total);
    let mut buf = vec![0u8; 256 << 10];
    let mut received = 0u64;
    let result = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                break Err(ImageError::Http {
                    url: url.to_owned(),
                    message: format!("after {received} bytes: {e}"),
                });
            }
        };
        hasher.update(&buf[..n]);
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(ImageError::io("writing", dest)(e));
        }
        received += n as u64;
        bar.advance(n as u64);
    };
    bar.finish();
    result?;
    file.into_inner()
        .map_err(|e| ImageError::io("writing", dest)(e.into_error()))?
        .sync_all()
        .map_err(ImageError::io("writing", dest))?;
    if let Some(t) = total.filter(|t| *t != received) {
        return Err(ImageError::Http {
            url: url.to_owned(),
            message: format!("received {received} of {t} bytes"),
        });
    }
    Ok(hasher.finish())
}

fn is_qcow2(path: &std::path::Path) -> Result<bool, ImageError> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(ImageError::io("reading", path))?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == *b"QFI\xfb")
}
