//! Engine-free checks of docker-compose.yml, ci/services.txt and
//! ci/Dockerfile against the services discovered in this repository.

use std::path::PathBuf;

use xtask::{checks, services};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

#[test]
fn services_are_discovered_with_unique_ports() {
    let found = services::discover(&root()).unwrap();
    let template = services::template(&found).unwrap();
    assert_eq!(template.name, "template");
    assert_eq!(template.port, 8005);
}

#[test]
fn compose_has_a_complete_block_per_service() {
    let root = root();
    let found = services::discover(&root).unwrap();
    checks::check_compose(&root, &found).unwrap_or_else(|e| panic!("{e:#}"));
    // Where Docker Compose exists, it agrees the file is valid.
    let compose = std::process::Command::new("docker")
        .args(["compose", "version"])
        .stdin(std::process::Stdio::null())
        .output();
    if compose.is_ok_and(|out| out.status.success()) {
        let out = std::process::Command::new("docker")
            .args(["compose", "--file"])
            .arg(root.join("docker-compose.yml"))
            .args(["config", "--quiet"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker compose config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        println!("docker compose is not installed: `docker compose config` not run");
    }
}

#[test]
fn services_txt_lists_exactly_the_services() {
    let root = root();
    let found = services::discover(&root).unwrap();
    checks::check_services_txt(&root, &found).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn dockerfile_is_consistent_with_the_repository() {
    checks::check_dockerfile(&root()).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn ci_scripts_are_executable_bash() {
    use std::os::unix::fs::PermissionsExt;
    let root = root();
    for script in ["ci/build-images.sh", ".ci/run"] {
        let path = root.join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#!/usr/bin/env bash\n"),
            "{script}: shebang"
        );
        assert!(text.contains("set -euo pipefail"), "{script}: strict mode");
        let syntax = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        assert!(syntax.success(), "{script} has bash syntax errors");
    }
}

#[test]
fn the_checks_catch_a_broken_compose_file() {
    // Guard against checks that always pass: break a copy and expect errors.
    let root = root();
    let found = services::discover(&root).unwrap();
    let dir = std::env::temp_dir().join(format!("xtask-ci-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let broken = compose
        .replace("\"8005:8005\"", "\"9999:8005\"")
        .replace("SERVICE: template", "SERVICE: other")
        .replace("TEMPLATE__REDIS__URL", "REDIS_URL")
        .replace(
            "TEMPLATE__POPULATE__SCENARIO=demo",
            "TEMPLATE__POPULATE__SCENARIO=other",
        );
    std::fs::write(dir.join("docker-compose.yml"), broken).unwrap();
    let error = format!("{:#}", checks::check_compose(&dir, &found).unwrap_err());
    for expected in [
        "8005:8005",
        "SERVICE=template",
        "REDIS_URL",
        "TEMPLATE__REDIS__URL",
        "demo scenario",
    ] {
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_service_copies_a_shared_table() {
    let root = root();
    let services = xtask::services::discover(&root).unwrap();
    xtask::checks::check_shared_tables(&root, &services).unwrap_or_else(|e| panic!("{e:#}"));

    // A copy is caught, in any spelling.
    let copy = std::env::temp_dir().join(format!("hatchery-shared-{}", std::process::id()));
    let migrations = copy.join("services/copycat/migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(
        migrations.join("1_outbox.sql"),
        "-- CREATE TABLE outbox in a comment is fine\nALTER TABLE users ADD COLUMN nick text;\nCreate Table If Not Exists Outbox (id bigint);\n",
    )
    .unwrap();
    let service = xtask::services::Service {
        name: "copycat".into(),
        port: 9999,
        dir: "services/copycat".into(),
    };
    let error = xtask::checks::check_shared_tables(&copy, &[service]).unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("1_outbox.sql:3"), "{text}");
    assert!(
        !text.contains("1_outbox.sql:1") && !text.contains("1_outbox.sql:2"),
        "{text}"
    );
    std::fs::remove_dir_all(&copy).ok();
}
