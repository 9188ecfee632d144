//! `cargo xtask new-service <name>`: hatch a new service from the template.

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::compose;
use crate::manifest;
use crate::rewrite::Renamer;
use crate::services::{self, SERVICES_DIR, Service, TEMPLATE_NAME};

/// Crate names that are taken by the platform itself.
pub const RESERVED_NAMES: [&str; 10] = [
    "kit",
    "populator",
    "testkit",
    "xtask",
    "identity",
    "bus",
    "realtime",
    "contracts",
    "smtp-sink",
    "template",
];

/// Names of infrastructure containers in docker-compose.yml.
const COMPOSE_NAMES: [&str; 4] = ["postgres", "redis", "rabbitmq", "mailpit"];

/// The lowest port a service gets.
pub const FIRST_PORT: u16 = 8005;

/// The services list used by CI.
pub const SERVICES_TXT: &str = "ci/services.txt";
/// The compose file at the repository root.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// Seed data root.
pub const POPULATOR_DIR: &str = "populator";

/// Check a service name: `^[a-z][a-z0-9]{1,29}$`, not reserved.
pub fn validate_name(name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !(valid_chars && starts_with_letter && (2..=30).contains(&name.len())) {
        bail!(
            "invalid service name {name:?}: use 2 to 30 characters, lowercase letters a-z and \
             digits only (no '-', '_' or capitals), starting with a letter, e.g. `billing`"
        );
    }
    if RESERVED_NAMES.contains(&name) {
        bail!(
            "{name:?} is reserved for a platform crate; reserved names: {}",
            RESERVED_NAMES.join(", ")
        );
    }
    if COMPOSE_NAMES.contains(&name) {
        bail!(
            "{name:?} is the name of an infrastructure container in docker-compose.yml; pick another name"
        );
    }
    Ok(())
}

/// The next free port: one above the highest port in use, at least [`FIRST_PORT`].
pub fn next_free_port(services: &[Service]) -> u16 {
    services
        .iter()
        .map(|service| service.port.saturating_add(1))
        .max()
        .unwrap_or(FIRST_PORT)
        .max(FIRST_PORT)
}

/// What [`new_service`] did.
#[derive(Debug, Clone)]
pub struct NewService {
    pub name: String,
    pub port: u16,
    /// Directories created, relative to the repository root.
    pub created: Vec<PathBuf>,
    /// Files edited, relative to the repository root.
    pub updated: Vec<PathBuf>,
}

impl NewService {
    /// Human-readable summary with the next steps.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "Hatched service `{}` on port {}.\n\nCreated:\n",
            self.name, self.port
        );
        for path in &self.created {
            out.push_str(&format!("  {}/\n", path.display()));
        }
        out.push_str("Updated:\n");
        for path in &self.updated {
            out.push_str(&format!("  {}\n", path.display()));
        }
        let name = &self.name;
        let steps = [
            (
                format!("cargo build -p {name}"),
                "also adds it to Cargo.lock".to_string(),
            ),
            (
                format!("cargo nextest run -p {name}"),
                "its tests (need Postgres on 127.0.0.1:5432)".to_string(),
            ),
            (
                "cargo xtask up".to_string(),
                format!(
                    "runs every service; {name} at http://127.0.0.1:{}",
                    self.port
                ),
            ),
            (
                format!(
                    "git add services/{name} {POPULATOR_DIR} {SERVICES_TXT} {COMPOSE_FILE} deploy/k8s Cargo.toml Cargo.lock"
                ),
                String::new(),
            ),
        ];
        let width = steps
            .iter()
            .filter(|(_, note)| !note.is_empty())
            .map(|(command, _)| command.len())
            .max()
            .unwrap_or(0);
        out.push_str("\nNext steps:\n");
        for (command, note) in steps {
            if note.is_empty() {
                out.push_str(&format!("  {command}\n"));
            } else {
                out.push_str(&format!("  {command:<width$}  # {note}\n"));
            }
        }
        out
    }
}

/// Create `services/<name>/` from the template and register it everywhere.
///
/// Everything is validated and every edited file computed before anything is
/// written; if copying fails half-way, the created directories are removed.
pub fn new_service(root: &Path, name: &str, port: Option<u16>) -> Result<NewService> {
    validate_name(name)?;
    let services = services::discover(root)?;
    let template = services::template(&services)?.clone();
    if let Some(existing) = services.iter().find(|service| service.name == name) {
        bail!(
            "a service called {name:?} already exists at {}",
            existing.dir.display()
        );
    }
    let target_dir = Path::new(SERVICES_DIR).join(name);
    if root.join(&target_dir).exists() {
        bail!("{} already exists", target_dir.display());
    }
    let port = match port {
        Some(port) => {
            if let Some(user) = services.iter().find(|service| service.port == port) {
                bail!("port {port} is already used by {}", user.name);
            }
            if port < 1024 {
                bail!("port {port} is privileged; pick one above 1024");
            }
            port
        }
        None => next_free_port(&services),
    };
    let renamer = Renamer::new(TEMPLATE_NAME, name, template.port, port);

    // Seed data directories to copy.
    let mut populator_copies = Vec::new();
    let populator_root = root.join(POPULATOR_DIR);
    if populator_root.is_dir() {
        let mut scenarios: Vec<PathBuf> = fs::read_dir(&populator_root)
            .with_context(|| format!("cannot list {}", populator_root.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.join(TEMPLATE_NAME).is_dir())
            .collect();
        scenarios.sort();
        for scenario in scenarios {
            let scenario_name = scenario
                .file_name()
                .context("scenario directory without a name")?;
            let from = Path::new(POPULATOR_DIR)
                .join(scenario_name)
                .join(TEMPLATE_NAME);
            let to = Path::new(POPULATOR_DIR).join(scenario_name).join(name);
            if root.join(&to).exists() {
                bail!("{} already exists", to.display());
            }
            populator_copies.push((from, to));
        }
    }

    // Compute all edits up front.
    let cargo_path = root.join("Cargo.toml");
    let cargo_text = read(&cargo_path)?;
    let member = format!("{SERVICES_DIR}/{name}");
    let cargo_new = manifest::add_workspace_member(&cargo_text, &member)
        .with_context(|| format!("cannot add {member:?} to {}", cargo_path.display()))?;

    let compose_path = root.join(COMPOSE_FILE);
    let compose_text = read(&compose_path)?;
    let compose_new = compose::add_service(&compose_text, TEMPLATE_NAME, name, &renamer)
        .with_context(|| format!("cannot add {name:?} to {}", compose_path.display()))?;

    let services_txt_path = root.join(SERVICES_TXT);
    let services_txt = read(&services_txt_path)?;
    let listed = services_txt.lines().any(|line| line.trim() == name);
    let services_txt_new = if listed {
        None
    } else {
        let mut text = services_txt.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(name);
        text.push('\n');
        Some(text)
    };

    // Copy (and roll back on failure).
    let mut created: Vec<PathBuf> = Vec::new();
    let copy_result = (|| -> Result<()> {
        created.push(target_dir.clone());
        copy_tree(&root.join(&template.dir), &root.join(&target_dir), &renamer)?;
        for (from, to) in &populator_copies {
            created.push(to.clone());
            copy_tree(&root.join(from), &root.join(to), &renamer)?;
        }
        Ok(())
    })();
    if let Err(error) = copy_result {
        for dir in &created {
            let _ = fs::remove_dir_all(root.join(dir));
        }
        return Err(error.context("copying the template failed; nothing was registered"));
    }

    let mut updated = Vec::new();
    if let Some(text) = cargo_new {
        write(&cargo_path, &text)?;
        updated.push(PathBuf::from("Cargo.toml"));
    }
    write(&compose_path, &compose_new)?;
    updated.push(PathBuf::from(COMPOSE_FILE));
    if let Some(text) = services_txt_new {
        write(&services_txt_path, &text)?;
        updated.push(PathBuf::from(SERVICES_TXT));
    }
    // Its Kubernetes manifests (deploy/k8s), generated like everyone else's.
    updated.extend(crate::k8s::write(root)?);

    Ok(NewService {
        name: name.to_string(),
        port,
        created,
        updated,
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Copy `from` to `to` recursively, skipping `target/` directories, rewriting
/// the contents of every UTF-8 file, and renaming path components — except
/// below a `migrations/` directory, whose file names stay as they are.
pub fn copy_tree(from: &Path, to: &Path, renamer: &Renamer) -> Result<()> {
    copy_dir(from, to, renamer, false)
}

fn copy_dir(from: &Path, to: &Path, renamer: &Renamer, in_migrations: bool) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut entries: Vec<_> = fs::read_dir(from)
        .with_context(|| format!("cannot list {}", from.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", from.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let file_name = entry.file_name();
        let source = entry.path();
        let file_type = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", source.display()))?;
        if file_type.is_dir() && file_name == "target" {
            continue;
        }
        let new_name = match file_name.to_str() {
            Some(text) if !in_migrations => renamer.apply(text),
            _ => file_name.to_string_lossy().into_owned(),
        };
        if Path::new(&new_name).components().count() != 1
            || matches!(
                Path::new(&new_name).components().next(),
                Some(Component::ParentDir | Component::CurDir)
            )
        {
            bail!("refusing to create {new_name:?} from {}", source.display());
        }
        let destination = to.join(&new_name);
        if file_type.is_dir() {
            let migrations = in_migrations || file_name == "migrations";
            copy_dir(&source, &destination, renamer, migrations)?;
        } else if file_type.is_symlink() {
            let link = fs::read_link(&source)
                .with_context(|| format!("cannot read link {}", source.display()))?;
            std::os::unix::fs::symlink(&link, &destination)
                .with_context(|| format!("cannot create link {}", destination.display()))?;
        } else {
            let bytes =
                fs::read(&source).with_context(|| format!("cannot read {}", source.display()))?;
            let output = match String::from_utf8(bytes) {
                Ok(text) => renamer.apply(&text).into_bytes(),
                Err(error) => error.into_bytes(),
            };
            fs::write(&destination, output)
                .with_context(|| format!("cannot write {}", destination.display()))?;
            let permissions = fs::metadata(&source)
                .with_context(|| format!("cannot stat {}", source.display()))?
                .permissions();
            fs::set_permissions(&destination, permissions)
                .with_context(|| format!("cannot set permissions on {}", destination.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for name in ["billing", "ab", "mail2", "a0123456789012345678901234567x"] {
            validate_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_names_clearly() {
        for name in [
            "",
            "a",
            "Billing",
            "2fa",
            "my-service",
            "my_service",
            "bill ing",
            "billé",
            "a01234567890123456789012345678x",
        ] {
            let error = validate_name(name).unwrap_err().to_string();
            assert!(
                error.contains("lowercase letters a-z and digits only"),
                "{name:?}: {error}"
            );
        }
    }

    #[test]
    fn rejects_reserved_names() {
        for name in [
            "kit",
            "template",
            "xtask",
            "identity",
            "contracts",
            "postgres",
        ] {
            let error = validate_name(name).unwrap_err().to_string();
            assert!(
                error.contains("reserved") || error.contains("infrastructure"),
                "{name}: {error}"
            );
        }
    }

    fn service(name: &str, port: u16) -> Service {
        Service {
            name: name.into(),
            port,
            dir: PathBuf::from(name),
        }
    }

    #[test]
    fn next_port_is_max_plus_one_and_at_least_8005() {
        assert_eq!(next_free_port(&[]), 8005);
        assert_eq!(next_free_port(&[service("template", 8005)]), 8006);
        assert_eq!(
            next_free_port(&[
                service("template", 8005),
                service("b", 8010),
                service("a", 8007)
            ]),
            8011
        );
        assert_eq!(next_free_port(&[service("broker", 8000)]), 8005);
    }
}
