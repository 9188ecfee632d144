//! Service discovery: the template at `template/service/` and every crate at
//! `services/<name>/`, each with `[package.metadata.hatchery] port = N`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Where the living template lives, relative to the repository root.
pub const TEMPLATE_DIR: &str = "template/service";
/// The template's package (and binary) name.
pub const TEMPLATE_NAME: &str = "template";
/// Where generated services live, relative to the repository root.
pub const SERVICES_DIR: &str = "services";

/// A discovered service crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Package name, which is also the binary name.
    pub name: String,
    /// HTTP port from `[package.metadata.hatchery] port`.
    pub port: u16,
    /// Crate directory relative to the repository root (`services/mail`).
    pub dir: PathBuf,
}

impl Service {
    /// The configuration environment prefix without the trailing `__` (`MAIL`).
    pub fn env_prefix(&self) -> String {
        env_prefix(&self.name)
    }

    /// `<PREFIX>__<KEY>` for a config key such as `HTTP__PORT`.
    pub fn env(&self, key: &str) -> String {
        format!("{}__{key}", self.env_prefix())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// `mail` → `MAIL` (dashes, which service names cannot have, would become `_`).
pub fn env_prefix(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

#[derive(Deserialize)]
struct Manifest {
    package: Option<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    hatchery: Option<Hatchery>,
}

#[derive(Deserialize)]
struct Hatchery {
    port: Option<i64>,
}

/// Read one service crate's manifest.
pub fn read_service(root: &Path, dir: &Path) -> Result<Service> {
    let manifest_path = root.join(dir).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest: Manifest = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", manifest_path.display()))?;
    let package = manifest
        .package
        .with_context(|| format!("{} has no [package] section", manifest_path.display()))?;
    let port = package
        .metadata
        .and_then(|metadata| metadata.hatchery)
        .and_then(|hatchery| hatchery.port)
        .with_context(|| {
            format!(
                "{} lacks the service port: add\n\n[package.metadata.hatchery]\nport = 8005\n",
                manifest_path.display()
            )
        })?;
    let port = u16::try_from(port)
        .ok()
        .filter(|port| *port > 0)
        .with_context(|| {
            format!(
                "{}: [package.metadata.hatchery] port = {port} is not a valid TCP port",
                manifest_path.display()
            )
        })?;
    Ok(Service {
        name: package.name,
        port,
        dir: dir.to_path_buf(),
    })
}

/// Every service in the repository: the template first, then `services/*`
/// sorted by directory name. Fails on unreadable manifests and on duplicate
/// names or ports.
pub fn discover(root: &Path) -> Result<Vec<Service>> {
    let mut found = Vec::new();
    let template_dir = Path::new(TEMPLATE_DIR);
    if root.join(template_dir).join("Cargo.toml").is_file() {
        found.push(read_service(root, template_dir)?);
    }
    let services_dir = root.join(SERVICES_DIR);
    if services_dir.is_dir() {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(&services_dir)
            .with_context(|| format!("cannot list {}", services_dir.display()))?
        {
            let entry = entry?;
            if entry.path().join("Cargo.toml").is_file() {
                dirs.push(Path::new(SERVICES_DIR).join(entry.file_name()));
            }
        }
        dirs.sort();
        for dir in dirs {
            found.push(read_service(root, &dir)?);
        }
    }
    let mut names: BTreeMap<&str, &Service> = BTreeMap::new();
    let mut ports: BTreeMap<u16, &Service> = BTreeMap::new();
    for service in &found {
        if let Some(other) = names.insert(&service.name, service) {
            bail!(
                "two services are called {:?}: {} and {}",
                service.name,
                other.dir.display(),
                service.dir.display()
            );
        }
        if let Some(other) = ports.insert(service.port, service) {
            bail!(
                "services {} and {} both use port {}: change [package.metadata.hatchery] port in one of them",
                other.name,
                service.name,
                service.port
            );
        }
    }
    Ok(found)
}

/// The template service, which must exist.
pub fn template(services: &[Service]) -> Result<&Service> {
    services
        .iter()
        .find(|service| service.dir == Path::new(TEMPLATE_DIR))
        .with_context(|| format!("the template service is missing ({TEMPLATE_DIR}/Cargo.toml)"))
}
