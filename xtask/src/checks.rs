//! Engine-free consistency checks of the CI files against the discovered
//! services: `docker-compose.yml`, `ci/services.txt` and `ci/Dockerfile`.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::compose::{self, HealthTest, INFRA_SERVICES, MARKER};
use crate::generator::{COMPOSE_FILE, SERVICES_TXT};
use crate::services::{self, Service};

/// The shared Dockerfile.
pub const DOCKERFILE: &str = "ci/Dockerfile";

fn fail_if_any(what: &str, problems: Vec<String>) -> Result<()> {
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{what}:\n  - {}", problems.join("\n  - "))
    }
}

/// Every service has a compose block built from `ci/Dockerfile` with
/// `SERVICE=<name>`, its `<NAME>__` environment, its port published, and
/// healthy-conditions on the infrastructure; the marker comment is present.
pub fn check_compose(root: &Path, services: &[Service]) -> Result<()> {
    let path = root.join(COMPOSE_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let parsed =
        compose::parse(&text).with_context(|| format!("{} does not parse", path.display()))?;
    let mut problems = Vec::new();
    if !text.lines().any(|line| line.trim() == MARKER) {
        problems.push(format!("the marker comment `  {MARKER}` is missing"));
    }
    for infra in INFRA_SERVICES.iter().chain(&["mailpit"]) {
        match parsed.services.get(*infra) {
            None => problems.push(format!("no `{infra}` service")),
            Some(block) if block.healthcheck.is_none() => {
                problems.push(format!("`{infra}` has no healthcheck"));
            }
            Some(_) => {}
        }
    }
    for service in services {
        let name = &service.name;
        let Some(block) = parsed.services.get(name) else {
            problems.push(format!("no block for service `{name}`"));
            continue;
        };
        match &block.build {
            None => problems.push(format!("`{name}` has no build section")),
            Some(build) => {
                if build.dockerfile() != Some(DOCKERFILE) {
                    problems.push(format!("`{name}` is not built from {DOCKERFILE}"));
                }
                if build.args().get("SERVICE") != Some(name) {
                    problems.push(format!("`{name}` lacks build arg SERVICE={name}"));
                }
            }
        }
        let image_prefix = format!("{}/{name}:", crate::images::IMAGE_PREFIX);
        if !block
            .image
            .as_deref()
            .is_some_and(|image| image.starts_with(&image_prefix))
        {
            problems.push(format!(
                "`{name}` does not name its image {image_prefix}${{HATCHERY_TAG:-dev}}"
            ));
        }
        let port = service.port.to_string();
        let published = block
            .ports
            .iter()
            .filter_map(compose::Port::mapping)
            .any(|(host, container)| host == port && container == port);
        if !published {
            problems.push(format!("`{name}` does not publish \"{port}:{port}\""));
        }
        let env = block.environment.to_map();
        let prefix = format!("{}__", service.env_prefix());
        for key in env.keys() {
            if !key.starts_with(&prefix) {
                problems.push(format!(
                    "`{name}` sets {key}, which lacks the service prefix {prefix}"
                ));
            }
        }
        for (key, expected) in [
            ("HTTP__HOST", Some("0.0.0.0".to_string())),
            ("HTTP__PORT", Some(port.clone())),
            ("DATABASE__URL", None),
            ("REDIS__URL", None),
            ("AMQP__URL", None),
        ] {
            let key = service.env(key);
            match (env.get(&key), expected) {
                (None, _) => problems.push(format!("`{name}` does not set {key}")),
                (Some(value), Some(expected)) if *value != expected => {
                    problems.push(format!("`{name}` sets {key}={value}, expected {expected}"));
                }
                _ => {}
            }
        }
        if let Some(url) = env.get(&service.env("DATABASE__URL"))
            && !url.ends_with(&format!("/{name}"))
        {
            problems.push(format!(
                "`{name}` database URL {url} does not name database `{name}`"
            ));
        }
        match env.get(&service.env("POPULATE__SCENARIO")) {
            Some(scenario) if scenario == "demo" => {}
            _ => problems.push(format!(
                "`{name}` does not load the demo scenario ({}=demo)",
                service.env("POPULATE__SCENARIO")
            )),
        }
        let depends = block.depends_on.to_map();
        // Tokens are verified with auth's keys: every other service waits for auth.
        let auth_exists = services.iter().any(|s| s.name == AUTH_SERVICE);
        if auth_exists && name != AUTH_SERVICE {
            if depends.get(AUTH_SERVICE).map(String::as_str) != Some("service_healthy") {
                problems.push(format!(
                    "`{name}` does not depend on {AUTH_SERVICE} with condition service_healthy"
                ));
            }
            if !env.contains_key(&service.env("AUTH__JWKS_URL")) {
                problems.push(format!(
                    "`{name}` does not set {} (auth's keys)",
                    service.env("AUTH__JWKS_URL")
                ));
            }
        }
        for infra in INFRA_SERVICES {
            match depends.get(infra).map(String::as_str) {
                Some("service_healthy") => {}
                Some(other) => problems.push(format!(
                    "`{name}` depends on {infra} with condition {other}, expected service_healthy"
                )),
                None => problems.push(format!("`{name}` does not depend on {infra}")),
            }
        }
        let healthcheck_ok = block
            .healthcheck
            .as_ref()
            .and_then(|health| health.test.as_ref())
            .is_some_and(|test| match test {
                HealthTest::List(items) => items.iter().any(|item| item == "check"),
                HealthTest::Shell(command) => command.contains(" check"),
            });
        if !healthcheck_ok {
            problems.push(format!(
                "`{name}` has no healthcheck running `/usr/local/bin/service check`"
            ));
        }
    }
    fail_if_any(&format!("{COMPOSE_FILE} is out of date"), problems)
}

/// The service whose keys verify every other service's tokens.
pub const AUTH_SERVICE: &str = "auth";

/// The names listed in `ci/services.txt` (blank lines and `#` comments skipped).
pub fn read_services_txt(root: &Path) -> Result<Vec<String>> {
    let path = root.join(SERVICES_TXT);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect())
}

/// `ci/services.txt` lists exactly the discovered services, template first.
pub fn check_services_txt(root: &Path, services: &[Service]) -> Result<()> {
    let listed = read_services_txt(root)?;
    let mut problems = Vec::new();
    let listed_set: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let discovered: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    if listed_set.len() != listed.len() {
        problems.push("some names are listed twice".to_string());
    }
    for missing in discovered.difference(&listed_set) {
        problems.push(format!("`{missing}` is a service but is not listed"));
    }
    for extra in listed_set.difference(&discovered) {
        problems.push(format!("`{extra}` is listed but no such service exists"));
    }
    if listed.first().map(String::as_str) != Some(services::TEMPLATE_NAME) {
        problems.push("the first line should be `template`".to_string());
    }
    fail_if_any(&format!("{SERVICES_TXT} is out of date"), problems)
}

/// `ci/Dockerfile` declares `ARG SERVICE`, builds `-p ${SERVICE}` and copies
/// only sources that exist.
pub fn check_dockerfile(root: &Path) -> Result<()> {
    let path = root.join(DOCKERFILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let instructions = dockerfile_instructions(&text);
    let mut problems = Vec::new();
    let has_arg = instructions
        .iter()
        .any(|(keyword, args)| keyword == "ARG" && args.split('=').next() == Some("SERVICE"));
    if !has_arg {
        problems.push("no `ARG SERVICE`".to_string());
    }
    let builds_service = instructions.iter().any(|(keyword, args)| {
        keyword == "RUN" && args.contains("cargo build") && args.contains("${SERVICE}")
    });
    if !builds_service {
        problems.push("no `RUN ... cargo build ... -p ${SERVICE}`".to_string());
    }
    for (keyword, args) in &instructions {
        if keyword != "COPY" && keyword != "ADD" {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.iter().any(|word| word.starts_with("--from")) {
            continue;
        }
        let paths: Vec<&str> = words
            .iter()
            .copied()
            .filter(|word| !word.starts_with("--"))
            .collect();
        if paths.len() < 2 {
            problems.push(format!("`{keyword} {args}` has no source"));
            continue;
        }
        for source in &paths[..paths.len() - 1] {
            let source = source.trim_matches(|c| c == '"' || c == '[' || c == ']' || c == ',');
            if source.contains("://") {
                continue;
            }
            if !root.join(source).exists() {
                problems.push(format!(
                    "`{keyword}` source {source} does not exist in the repository"
                ));
            }
        }
    }
    let entrypoint = instructions
        .iter()
        .any(|(keyword, args)| keyword == "ENTRYPOINT" && args.contains("/usr/local/bin/service"));
    if !entrypoint {
        problems.push("no ENTRYPOINT running /usr/local/bin/service".to_string());
    }
    fail_if_any(&format!("{DOCKERFILE} has problems"), problems)
}

/// `(KEYWORD, arguments)` per instruction, with line continuations joined
/// and comments dropped.
pub fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            continue; // comment inside a continued instruction
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let instruction = std::mem::take(&mut current);
        let instruction = instruction.trim();
        if instruction.is_empty() {
            continue;
        }
        let (keyword, args) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction, ""));
        instructions.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
    }
    instructions
}

/// Tables owned by shared crates (bus: outbox, inbox; kit: idempotency; identity: users):
/// defined in those crates' `migrations/`, never in a service's.
pub const SHARED_TABLES: [&str; 4] = ["outbox", "inbox", "idempotency", "users"];

/// No service's migration creates, drops or renames a shared table (a service gets them by
/// listing the crate's schema in its `kit::Database::shared`).
pub fn check_shared_tables(root: &Path, services: &[Service]) -> Result<()> {
    let mut offences = Vec::new();
    for service in services {
        let dir = root.join(&service.dir).join("migrations");
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("sql") {
                continue;
            }
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let code = line.split("--").next().unwrap_or("").to_ascii_lowercase();
                let words: Vec<&str> = code
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .collect();
                let touches = words.iter().enumerate().any(|(i, word)| {
                    if *word != "table" || i == 0 {
                        return false;
                    }
                    let name = words[i + 1..]
                        .iter()
                        .find(|w| !matches!(**w, "if" | "not" | "exists" | "only"));
                    let shared = name.is_some_and(|name| SHARED_TABLES.contains(name));
                    let verb = words[i - 1];
                    shared
                        && (matches!(verb, "create" | "drop")
                            || (verb == "alter" && words.contains(&"rename")))
                });
                if touches {
                    offences.push(format!(
                        "{}:{}: {}",
                        path.strip_prefix(root).unwrap_or(&path).display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    if offences.is_empty() {
        Ok(())
    } else {
        bail!(
            "shared tables are defined by their crates (bus::SCHEMA, identity::SCHEMA, kit::idempotency::SCHEMA), not copied into a service:\n{}",
            offences.join("\n")
        )
    }
}

/// All engine-free checks for the repository at `root`.
pub fn check_all(root: &Path) -> Result<()> {
    let services = services::discover(root)?;
    let results = [
        check_compose(root, &services),
        check_services_txt(root, &services),
        check_dockerfile(root),
        check_shared_tables(root, &services),
        crate::k8s::check(root),
    ];
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|result| result.err().map(|error| format!("{error:#}")))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_dockerfile_instructions() {
        let text = "# syntax=docker/dockerfile:1\nFROM rust AS build\nARG SERVICE\nRUN a \\\n    # inner comment\n    && b\ncopy x y\n";
        let instructions = dockerfile_instructions(text);
        assert_eq!(
            instructions,
            vec![
                ("FROM".to_string(), "rust AS build".to_string()),
                ("ARG".to_string(), "SERVICE".to_string()),
                ("RUN".to_string(), "a  && b".to_string()),
                ("COPY".to_string(), "x y".to_string()),
            ]
        );
    }
}
