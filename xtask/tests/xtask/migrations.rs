//! Every migration of the suite is linted by squawk, and passes.

use std::path::PathBuf;

use xtask::migrations;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// The template's, every service's and every crate's migrations are found, without a list
/// to keep up to date: a service added later is linted as soon as it has a migration.
#[test]
fn every_migration_of_the_suite_is_found() {
    let root = root();
    let found = migrations::files(&root).unwrap();
    let mut expected = Vec::new();
    for parent in ["template/service", "services/*", "crates/*"] {
        let pattern_dirs: Vec<PathBuf> = match parent.strip_suffix("/*") {
            Some(dir) => std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect(),
            None => vec![root.join(parent)],
        };
        for dir in pattern_dirs {
            let Ok(entries) = std::fs::read_dir(dir.join("migrations")) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                expected.push(path.strip_prefix(&root).unwrap().to_path_buf());
            }
        }
    }
    expected.sort();
    assert_eq!(found, expected);
    for owner in [
        "crates/kit",
        "crates/bus",
        "crates/identity",
        "template/service",
        "services/auth",
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(owner)),
            "{owner}'s migrations are linted: {found:?}"
        );
    }
}

#[test]
fn squawk_passes_on_every_migration() {
    let checked = migrations::lint(&root()).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(checked >= 9, "{checked}");
}
