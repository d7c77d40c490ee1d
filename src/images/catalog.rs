//! The image catalog: the built-in `images/catalog.yaml` plus an optional user catalog whose
//! entries add to it or replace built-in entries of the same name.

use super::{Digest, ImageError, valid_name};
use crate::facts::OsFamily;
use serde::{Deserialize, Serialize};
use std::path::Path;

const BUILTIN: &str = include_str!("../../images/catalog.yaml");

/// Environment variable naming a user catalog file.
pub const CATALOG_ENV: &str = "KUBEDRILL_CATALOG";

/// How a hypervisor boots an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    /// The image's own bootloader (vendor cloud images).
    Disk,
    /// Kernel, initrd and command line given by the hypervisor (built images).
    Direct,
}

/// One catalog image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Name used on the command line and as the cache directory (`[a-z0-9._-]`).
    pub name: String,
    /// OS family (`debian` or `rhel`).
    pub os_family: OsFamily,
    /// One line for `image ls`.
    #[serde(default)]
    pub description: String,
    /// Download URL (http or https).
    pub url: String,
    /// The vendor's checksum file listing the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_url: Option<String>,
    /// A pinned SHA-256; wins over `checksum_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The name to look up in the checksum file (default: the URL's last segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// How the image boots.
    pub boot: BootMode,
    /// The offline build recipe's name, when the image can be built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
}

impl CatalogEntry {
    /// The file name the checksum file lists.
    pub fn checksum_file_name(&self) -> &str {
        self.file_name.as_deref().unwrap_or_else(|| {
            let path = self.url.split(['?', '#']).next().unwrap_or(&self.url);
            path.rsplit('/').next().unwrap_or(path)
        })
    }

    /// The pinned digest, when there is one.
    pub fn pinned(&self) -> Option<Digest> {
        self.sha256.as_deref().and_then(Digest::from_hex)
    }

    fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "image name {:?}: use lowercase letters, digits, '.', '_' and '-'",
                self.name
            ));
        }
        if !matches!(self.os_family, OsFamily::Debian | OsFamily::Rhel) {
            return Err(format!("{}: os_family must be debian or rhel", self.name));
        }
        check_url(&self.url).map_err(|m| format!("{}: url: {m}", self.name))?;
        if let Some(u) = &self.checksum_url {
            check_url(u).map_err(|m| format!("{}: checksum_url: {m}", self.name))?;
        }
        match &self.sha256 {
            Some(h) if h.len() != 64 || Digest::from_hex(h).is_none() => {
                return Err(format!("{}: sha256 must be 64 hex digits", self.name));
            }
            None if self.checksum_url.is_none() => {
                return Err(format!(
                    "{}: needs checksum_url or sha256 (kubedrill never caches an unverified download)",
                    self.name
                ));
            }
            _ => {}
        }
        if let Some(r) = &self.recipe
            && super::build::recipe_text(r).is_none()
        {
            return Err(format!("{}: unknown recipe {r:?}", self.name));
        }
        Ok(())
    }
}

fn check_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("{u:?} is not an http(s) URL"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || path.is_empty() || u.chars().any(char::is_whitespace) {
        return Err(format!("{u:?} needs a host and a file path"));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    images: Vec<CatalogEntry>,
}

/// The known images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// The built-in catalog (`images/catalog.yaml`, embedded at compile time).
    pub fn builtin() -> Result<Self, ImageError> {
        Self::parse(BUILTIN, "built-in catalog")
    }

    /// The built-in catalog plus `user` (else `$KUBEDRILL_CATALOG`, when set).
    pub fn load(user: Option<&Path>) -> Result<Self, ImageError> {
        let mut c = Self::builtin()?;
        let env = std::env::var_os(CATALOG_ENV).filter(|v| !v.is_empty());
        if let Some(path) = user.map(Path::to_path_buf).or(env.map(Into::into)) {
            let text = crate::files::read_text_bounded(&path, crate::files::MAX_RECORD_BYTES)
                .map_err(ImageError::io("reading", &path))?;
            c.merge(Self::parse(&text, &path.display().to_string())?);
        }
        Ok(c)
    }

    /// Parse catalog YAML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ImageError> {
        let invalid = |message: String| ImageError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let file: CatalogFile = serde_saphyr::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for e in &file.images {
            e.validate().map_err(invalid)?;
            if !seen.insert(e.name.as_str()) {
                return Err(invalid(format!("image {:?} is listed twice", e.name)));
            }
        }
        Ok(Catalog {
            entries: file.images,
        })
    }

    /// Add `other`'s entries, replacing entries of the same name.
    pub fn merge(&mut self, other: Catalog) {
        for e in other.entries {
            match self.entries.iter_mut().find(|x| x.name == e.name) {
                Some(slot) => *slot = e,
                None => self.entries.push(e),
            }
        }
    }

    /// All entries, in catalog order.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Result<&CatalogEntry, ImageError> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| ImageError::UnknownImage {
                name: name.to_owned(),
                known: self.names(|_| true),
            })
    }

    /// Names of the entries matching `f`, comma-separated.
    pub(crate) fn names(&self, f: impl Fn(&CatalogEntry) -> bool) -> String {
        let v: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| f(e))
            .map(|e| e.name.as_str())
            .collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    }
}
