//! `kubedrill image`: list, pull and build lab VM images.

use super::exit::Exit;
use super::{Output, print_json};
use clap::{Args, Subcommand};
use kubedrill::images::cache::CACHE_ENV;
use kubedrill::images::catalog::CATALOG_ENV;
use kubedrill::images::progress::mib;
use kubedrill::images::{
    self, BuildOptions, CachedImage, Catalog, ImageCache, ImageState, Progress, Ready,
};
use std::path::PathBuf;
use std::process::ExitCode;

/// `image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// List the catalog's images and the cached ones, with size and state.
    Ls(Where),
    /// Download a catalog image, verify its checksum, and cache it.
    Pull {
        /// Catalog image name (see `kubedrill image ls`).
        name: String,
        #[command(flatten)]
        place: Where,
    },
    /// Build an image offline from its recipe (debian-12: mmdebstrap from Debian's mirror).
    Build {
        /// Image name with a recipe.
        name: String,
        /// Debian mirror URL (default: the machine's apt sources, else deb.debian.org).
        #[arg(long, value_name = "URL")]
        mirror: Option<String>,
        /// Rebuild even when the cached image was built from the same recipe.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        place: Where,
    },
}

/// Where the catalog and the cache are.
#[derive(Debug, Args)]
pub struct Where {
    /// A user catalog (YAML) adding to or overriding the built-in one.
    #[arg(long, value_name = "FILE", env = CATALOG_ENV)]
    catalog: Option<PathBuf>,
    /// Cache directory (default: $XDG_CACHE_HOME/kubedrill, else ~/.cache/kubedrill).
    #[arg(long, value_name = "DIR", env = CACHE_ENV)]
    cache_dir: Option<PathBuf>,
}

impl Where {
    fn open(&self) -> anyhow::Result<(Catalog, ImageCache)> {
        let catalog = Catalog::load(self.catalog.as_deref())?;
        let cache = match &self.cache_dir {
            Some(d) => ImageCache::at(d),
            None => ImageCache::from_env()?,
        };
        Ok((catalog, cache))
    }
}

/// Run an `image` subcommand.
pub fn run(cmd: ImageCmd, out: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        ImageCmd::Ls(place) => ls(&place, out),
        ImageCmd::Pull { name, place } => {
            let (catalog, cache) = place.open()?;
            let ready = images::pull(&catalog, &cache, &name, &Progress::stderr())?;
            report(&ready, out)
        }
        ImageCmd::Build {
            name,
            mirror,
            force,
            place,
        } => {
            let (catalog, cache) = place.open()?;
            let opts = BuildOptions { mirror, force };
            let ready = images::build(&catalog, &cache, &name, &opts, &Progress::stderr())?;
            report(&ready, out)
        }
    }
}

fn report(ready: &Ready, out: Output) -> anyhow::Result<ExitCode> {
    if out == Output::Json {
        print_json(ready)?;
    } else {
        let m = &ready.manifest;
        println!(
            "{}: {} {} ({}, {} {})",
            m.name,
            if ready.cached { "cached" } else { "ready" },
            ready.disk().display(),
            mib(m.size),
            m.format,
            &m.sha256
        );
    }
    Ok(Exit::Ok.into())
}

fn ls(place: &Where, out: Output) -> anyhow::Result<ExitCode> {
    let (catalog, cache) = place.open()?;
    let cached = cache.list()?;
    if out == Output::Json {
        print_json(&serde_json::json!({
            "cache_dir": cache.root(),
            "catalog": catalog.entries(),
            "cached": cached,
        }))?;
        return Ok(Exit::Ok.into());
    }
    println!(
        "{:<14} {:<7} {:<6} {:<6} CACHED",
        "NAME", "FAMILY", "BOOT", "BUILD"
    );
    for e in catalog.entries() {
        let mine: Vec<&CachedImage> = cached.iter().filter(|c| c.name == e.name).collect();
        println!(
            "{:<14} {:<7} {:<6} {:<6} {}",
            e.name,
            serde_json::to_value(e.os_family)?.as_str().unwrap_or("?"),
            serde_json::to_value(e.boot)?.as_str().unwrap_or("?"),
            if e.recipe.is_some() { "yes" } else { "-" },
            cached_text(&mine)
        );
    }
    for c in cached.iter().filter(|c| catalog.get(&c.name).is_err()) {
        println!(
            "{:<14} {:<7} {:<6} {:<6} {} (not in the catalog)",
            c.name,
            "?",
            "?",
            "-",
            cached_text(&[c])
        );
    }
    println!("\ncache: {}", cache.root().display());
    Ok(Exit::Ok.into())
}

fn cached_text(images: &[&CachedImage]) -> String {
    if images.is_empty() {
        return "-".to_owned();
    }
    images
        .iter()
        .map(|c| match (&c.state, &c.manifest) {
            (ImageState::Ready, Some(m)) => {
                format!("{}: {} {} ({})", c.source, mib(m.size), m.format, m.created)
            }
            (ImageState::Broken(why), _) => format!("{}: broken ({why})", c.source),
            (ImageState::Ready, None) => format!("{}: ?", c.source),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
