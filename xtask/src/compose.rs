//! `docker-compose.yml`: a typed view for checks, and the textual insertion
//! of a new service block before the marker comment.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::rewrite::Renamer;

/// The comment line (indented under `services:`) before which new service
/// blocks are inserted.
pub const MARKER: &str = "# new services above this line";

/// The infrastructure services every application service depends on.
pub const INFRA_SERVICES: [&str; 3] = ["postgres", "redis", "rabbitmq"];

/// The parts of a compose file the checks look at.
#[derive(Debug, Deserialize)]
pub struct Compose {
    #[serde(default)]
    pub services: BTreeMap<String, ComposeService>,
}

/// One entry under `services:`.
#[derive(Debug, Default, Deserialize)]
pub struct ComposeService {
    pub image: Option<String>,
    pub build: Option<Build>,
    #[serde(default)]
    pub environment: KeyValues,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub depends_on: DependsOn,
    pub healthcheck: Option<Healthcheck>,
}

/// `build:` as a context string or a full mapping.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Build {
    Context(String),
    Full {
        context: Option<String>,
        dockerfile: Option<String>,
        #[serde(default)]
        args: KeyValues,
    },
}

impl Build {
    pub fn dockerfile(&self) -> Option<&str> {
        match self {
            Build::Context(_) => None,
            Build::Full { dockerfile, .. } => dockerfile.as_deref(),
        }
    }

    pub fn args(&self) -> BTreeMap<String, String> {
        match self {
            Build::Context(_) => BTreeMap::new(),
            Build::Full { args, .. } => args.to_map(),
        }
    }
}

/// A scalar YAML value as compose accepts it in environment maps.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(value) => write!(f, "{value}"),
            Scalar::Int(value) => write!(f, "{value}"),
            Scalar::Float(value) => write!(f, "{value}"),
            Scalar::Str(value) => f.write_str(value),
        }
    }
}

/// `environment:` / `args:` as a `KEY=VALUE` list or a mapping.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum KeyValues {
    List(Vec<String>),
    Map(BTreeMap<String, Option<Scalar>>),
}

impl Default for KeyValues {
    fn default() -> Self {
        KeyValues::List(Vec::new())
    }
}

impl KeyValues {
    pub fn to_map(&self) -> BTreeMap<String, String> {
        match self {
            KeyValues::List(items) => items
                .iter()
                .map(|item| match item.split_once('=') {
                    Some((key, value)) => (key.to_string(), value.to_string()),
                    None => (item.clone(), String::new()),
                })
                .collect(),
            KeyValues::Map(map) => map
                .iter()
                .map(|(key, value)| {
                    let value = value.as_ref().map(ToString::to_string).unwrap_or_default();
                    (key.clone(), value)
                })
                .collect(),
        }
    }
}

/// A `ports:` entry in short (`"8005:8005"`) or long syntax.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Number(u32),
    Short(String),
    Long {
        target: u32,
        published: Option<Scalar>,
    },
}

impl Port {
    /// `(published, target)` if both are known.
    pub fn mapping(&self) -> Option<(String, String)> {
        match self {
            Port::Number(port) => Some((port.to_string(), port.to_string())),
            Port::Short(text) => {
                let text = text.split('/').next().unwrap_or(text);
                let parts: Vec<&str> = text.split(':').collect();
                match parts.as_slice() {
                    [port] => Some((port.to_string(), port.to_string())),
                    [.., published, target] => Some((published.to_string(), target.to_string())),
                    [] => None,
                }
            }
            Port::Long { target, published } => Some((
                published
                    .as_ref()
                    .map_or_else(|| target.to_string(), ToString::to_string),
                target.to_string(),
            )),
        }
    }
}

/// `depends_on:` as a list or a mapping with conditions.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

impl Default for DependsOn {
    fn default() -> Self {
        DependsOn::List(Vec::new())
    }
}

impl DependsOn {
    /// Dependency name → condition (`service_started` when not given).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let started = || "service_started".to_string();
        match self {
            DependsOn::List(names) => names.iter().map(|name| (name.clone(), started())).collect(),
            DependsOn::Map(map) => map
                .iter()
                .map(|(name, dep)| (name.clone(), dep.condition.clone().unwrap_or_else(started)))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Dependency {
    pub condition: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Healthcheck {
    pub test: Option<HealthTest>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HealthTest {
    List(Vec<String>),
    Shell(String),
}

/// Parse a compose file.
pub fn parse(text: &str) -> Result<Compose> {
    serde_saphyr::from_str(text).map_err(|error| anyhow::anyhow!("{error}"))
}

/// Line range `[start, end)` of the block of service `name` (the `  name:`
/// line and everything indented below it, trailing blank lines excluded).
fn block_lines(lines: &[&str], name: &str) -> Option<(usize, usize)> {
    let header = format!("{name}:");
    let start = lines.iter().position(|line| {
        let line = line.trim_end();
        indent_of(line) == 2 && {
            let rest = line.trim_start();
            rest == header || rest.starts_with(&format!("{header} #"))
        }
    })?;
    let mut end = start + 1;
    while end < lines.len() {
        let line = lines[end];
        if !line.trim().is_empty() && indent_of(line) <= 2 {
            break;
        }
        end += 1;
    }
    while end > start + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    Some((start, end))
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Does the file have a top-level service entry called `name`?
pub fn has_service(compose: &str, name: &str) -> bool {
    let lines: Vec<&str> = compose.lines().collect();
    block_lines(&lines, name).is_some()
}

/// Copy the block of service `template`, rename it with `renamer`, and insert
/// it as service `new_name` before the [`MARKER`] comment.
pub fn add_service(
    compose: &str,
    template: &str,
    new_name: &str,
    renamer: &Renamer,
) -> Result<String> {
    let lines: Vec<&str> = compose.lines().collect();
    if block_lines(&lines, new_name).is_some() {
        bail!("docker-compose.yml already has a service called {new_name:?}");
    }
    let (start, end) = block_lines(&lines, template).with_context(|| {
        format!("docker-compose.yml has no `{template}:` service block (indented by 2 spaces under `services:`) to copy")
    })?;
    let marker = lines
        .iter()
        .position(|line| line.trim() == MARKER)
        .with_context(|| {
            format!(
                "docker-compose.yml lacks the marker comment `  {MARKER}` at the end of `services:`"
            )
        })?;
    let block = renamer.apply(&lines[start..end].join("\n"));
    let mut out: Vec<String> = lines[..marker].iter().map(|l| (*l).to_string()).collect();
    if out.last().is_some_and(|line| !line.trim().is_empty()) {
        out.push(String::new());
    }
    out.push(block);
    out.push(String::new());
    out.extend(lines[marker..].iter().map(|l| (*l).to_string()));
    let mut text = out.join("\n");
    if compose.ends_with('\n') {
        text.push('\n');
    }
    let parsed =
        parse(&text).context("internal error: the edited docker-compose.yml does not parse")?;
    if !parsed.services.contains_key(new_name) {
        bail!("internal error: service {new_name:?} missing from the edited docker-compose.yml");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPOSE: &str = "\
services:
  postgres:
    image: postgres:16

  template:
    build:
      context: .
      dockerfile: ci/Dockerfile
      args:
        SERVICE: template
    environment:
      - TEMPLATE__HTTP__PORT=8005
      - TEMPLATE__DATABASE__URL=postgres://postgres@postgres:5432/template
    ports:
      - \"8005:8005\"
    depends_on:
      postgres:
        condition: service_healthy

  # new services above this line

volumes:
  pgdata:
";

    #[test]
    fn inserts_a_renamed_copy_before_the_marker() {
        let renamer = Renamer::new("template", "mail", 8005, 8006);
        let updated = add_service(COMPOSE, "template", "mail", &renamer).unwrap();
        let expected_block = "\
  mail:
    build:
      context: .
      dockerfile: ci/Dockerfile
      args:
        SERVICE: mail
    environment:
      - MAIL__HTTP__PORT=8006
      - MAIL__DATABASE__URL=postgres://postgres@postgres:5432/mail
    ports:
      - \"8006:8006\"
    depends_on:
      postgres:
        condition: service_healthy

  # new services above this line
";
        assert!(updated.contains(expected_block), "{updated}");
        assert!(updated.ends_with("volumes:\n  pgdata:\n"));
        // The template block is untouched.
        assert!(updated.contains("  template:\n    build:"));
        let compose = parse(&updated).unwrap();
        let mail = &compose.services["mail"];
        assert_eq!(mail.build.as_ref().unwrap().args()["SERVICE"], "mail");
        assert_eq!(mail.environment.to_map()["MAIL__HTTP__PORT"], "8006");
        assert_eq!(
            mail.ports[0].mapping(),
            Some(("8006".to_string(), "8006".to_string()))
        );
        assert_eq!(mail.depends_on.to_map()["postgres"], "service_healthy");

        // A second service goes after the first, still before the marker.
        let renamer = Renamer::new("template", "auth", 8005, 8007);
        let twice = add_service(&updated, "template", "auth", &renamer).unwrap();
        let mail_at = twice.find("  mail:").unwrap();
        let auth_at = twice.find("  auth:").unwrap();
        let marker_at = twice.find(MARKER).unwrap();
        assert!(mail_at < auth_at && auth_at < marker_at);
        assert!(!twice.contains("\n\n\n"), "no double blank lines:\n{twice}");
    }

    #[test]
    fn refuses_duplicates_and_missing_pieces() {
        let renamer = Renamer::new("template", "postgres", 8005, 8006);
        let error = add_service(COMPOSE, "template", "postgres", &renamer).unwrap_err();
        assert!(
            error.to_string().contains("already has a service"),
            "{error}"
        );

        let renamer = Renamer::new("template", "mail", 8005, 8006);
        let no_marker = COMPOSE.replace(MARKER, "# something else");
        let error = add_service(&no_marker, "template", "mail", &renamer).unwrap_err();
        assert!(error.to_string().contains("marker"), "{error}");

        let error = add_service(COMPOSE, "nothere", "mail", &renamer).unwrap_err();
        assert!(error.to_string().contains("no `nothere:`"), "{error}");
    }

    #[test]
    fn reads_port_syntaxes() {
        let mapping = |text: &str| Port::Short(text.to_string()).mapping().unwrap();
        assert_eq!(mapping("8005:8005"), ("8005".into(), "8005".into()));
        assert_eq!(
            mapping("127.0.0.1:1025:25/tcp"),
            ("1025".into(), "25".into())
        );
        assert_eq!(mapping("9000"), ("9000".into(), "9000".into()));
    }
}
