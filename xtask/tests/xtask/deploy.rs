//! The deployment files: Kubernetes manifests (generated, rendered by kustomize, validated
//! against a current Kubernetes), the workflows (actionlint), the Dockerfile (hadolint), and
//! `cargo xtask release` in a clone. The linters come from `cargo xtask tools`
//! (`target/deploy/venv`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use xtask::{k8s, python, release, services};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// A tool of the deploy set; a clear failure when `cargo xtask tools` has not run.
pub fn tool(root: &Path, name: &str) -> PathBuf {
    let path = python::DEPLOY.work_dir(root).join("venv/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask tools` (it installs {})",
        path.display(),
        python::DEPLOY.requirements.join(" ")
    );
    path
}

fn run(command: &mut Command) -> String {
    let out = command.stdin(Stdio::null()).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}\n{doc}")))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
}

#[test]
fn kubernetes_manifests_cover_every_service_and_validate() {
    let root = root();
    // The committed manifests are what `cargo xtask k8s` generates for today's services.
    k8s::check(&root).unwrap_or_else(|e| panic!("{e:#}"));
    let found = services::discover(&root).unwrap();
    missing_manifests_are_named(&root, &found);
    let kubectl = tool(&root, "kubectl");
    let validate = tool(&root, "kubernetes-validate");
    let scratch = std::env::temp_dir().join(format!("hatchery-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    for overlay in ["dev", "prod"] {
        let rendered = k8s::kustomize(&root, &kubectl, overlay).unwrap_or_else(|e| panic!("{e:#}"));
        let docs = documents(&rendered);
        for service in &found {
            let name = &service.name;
            let deployment = find(&docs, "Deployment", name)
                .unwrap_or_else(|| panic!("{overlay}: no Deployment {name}"));
            let pod = &deployment["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            assert_eq!(
                container["readinessProbe"]["httpGet"]["path"], "/readyz",
                "{overlay}/{name}"
            );
            assert_eq!(
                container["livenessProbe"]["httpGet"]["path"], "/healthz",
                "{overlay}/{name}"
            );
            for limit in ["cpu", "memory"] {
                assert!(
                    container["resources"]["limits"][limit].is_string(),
                    "{overlay}/{name}: {limit} limit"
                );
                assert!(
                    container["resources"]["requests"][limit].is_string(),
                    "{overlay}/{name}: {limit} request"
                );
            }
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{overlay}/{name}"
            );
            assert_eq!(
                container["securityContext"]["readOnlyRootFilesystem"], true,
                "{overlay}/{name}"
            );
            assert!(
                container["lifecycle"]["preStop"].is_object(),
                "{overlay}/{name}: preStop"
            );
            assert_eq!(
                container["ports"][0]["containerPort"],
                u64::from(service.port)
            );
            let sources: Vec<&str> = container["envFrom"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|source| {
                    source["configMapRef"]["name"]
                        .as_str()
                        .or(source["secretRef"]["name"].as_str())
                })
                .collect();
            assert_eq!(
                sources,
                [format!("{name}-config"), format!("{name}-secrets")]
            );
            for kind in [
                "Service",
                "PodDisruptionBudget",
                "HorizontalPodAutoscaler",
                "ConfigMap",
            ] {
                let resource_name = if kind == "ConfigMap" {
                    format!("{name}-config")
                } else {
                    name.clone()
                };
                assert!(
                    find(&docs, kind, &resource_name).is_some(),
                    "{overlay}: no {kind} {resource_name}"
                );
            }
            let jobs: Vec<&Value> = docs
                .iter()
                .filter(|doc| {
                    doc["kind"] == "Job"
                        && doc["metadata"]["labels"]["app.kubernetes.io/name"] == name.as_str()
                })
                .collect();
            if k8s::has_database(&root, service) {
                assert_eq!(jobs.len(), 1, "{overlay}: {name} has one migration Job");
                let job = &jobs[0]["spec"]["template"]["spec"]["containers"][0];
                assert_eq!(job["args"], serde_json::json!(["migrate"]));
            } else {
                assert!(jobs.is_empty(), "{overlay}: {name} has no database");
            }
            let secret = find(&docs, "Secret", &format!("{name}-secrets"));
            // Development values come with the dev overlay; production never carries a secret.
            assert_eq!(
                secret.is_some(),
                overlay == "dev",
                "{overlay}: Secret {name}-secrets"
            );
        }
        if overlay == "prod" {
            let broker = find(&docs, "Deployment", "broker").expect("the broker");
            assert!(
                broker["spec"]["replicas"].as_u64().unwrap() >= 3,
                "several broker replicas"
            );
            assert!(docs.iter().all(|doc| doc["kind"] != "Secret"));
        } else {
            for server in ["postgres", "redis", "rabbitmq", "mailpit"] {
                assert!(
                    find(&docs, "Service", server).is_some(),
                    "dev runs {server}"
                );
            }
        }
        let file = scratch.join(format!("{overlay}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        run(Command::new(&validate)
            .args(["--strict", "--quiet"])
            .arg(&file));
    }
    std::fs::remove_dir_all(&scratch).ok();
}

/// A service without its manifests (a copy of the repository's manifests, one service's file
/// removed, another's edited) fails the check, naming both files.
fn missing_manifests_are_named(root: &Path, found: &[services::Service]) {
    let copy = std::env::temp_dir().join(format!("hatchery-k8s-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    for file in ["Cargo.toml", "docker-compose.yml"] {
        std::fs::copy(root.join(file), copy_path(&copy, file)).unwrap();
    }
    for service in found {
        let manifest = service.dir.join("Cargo.toml");
        std::fs::copy(
            root.join(&manifest),
            copy_path(&copy, manifest.to_str().unwrap()),
        )
        .unwrap();
        if k8s::has_database(root, service) {
            std::fs::create_dir_all(copy.join(&service.dir).join("migrations")).unwrap();
        }
    }
    for path in k8s::render(root).unwrap().keys() {
        std::fs::copy(root.join(path), copy_path(&copy, path.to_str().unwrap())).unwrap();
    }
    k8s::check(&copy).unwrap_or_else(|e| panic!("the copy: {e:#}"));
    let services_dir = copy.join(k8s::K8S_DIR).join("base/services");
    std::fs::remove_file(services_dir.join("mail.yaml")).unwrap();
    let auth = services_dir.join("auth.yaml");
    let edited = std::fs::read_to_string(&auth)
        .unwrap()
        .replace("/readyz", "/ready");
    std::fs::write(&auth, edited).unwrap();
    let error = format!("{:#}", k8s::check(&copy).unwrap_err());
    assert!(
        error.contains("base/services/mail.yaml is missing"),
        "{error}"
    );
    assert!(
        error.contains("base/services/auth.yaml is out of date"),
        "{error}"
    );
    assert!(error.contains("cargo xtask k8s"), "{error}");
    std::fs::remove_dir_all(&copy).ok();
}

fn copy_path(copy: &Path, relative: &str) -> PathBuf {
    let path = copy.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    path
}

#[test]
fn workflows_and_dockerfile_pass_their_linters() {
    let root = root();
    let workflows: Vec<PathBuf> = ["ci.yml", "release.yml"]
        .iter()
        .map(|name| root.join(".github/workflows").join(name))
        .collect();
    for workflow in &workflows {
        let text = std::fs::read_to_string(workflow).unwrap();
        // The workflows call the commands a developer runs.
        assert!(text.contains("cargo xtask "), "{}", workflow.display());
    }
    run(Command::new(tool(&root, "actionlint"))
        .args(&workflows)
        .current_dir(&root));
    run(Command::new(tool(&root, "hadolint"))
        .arg(root.join("ci/Dockerfile"))
        .current_dir(&root));
}

#[test]
fn release_bumps_commits_and_tags_a_clone() {
    let root = root();
    let clone = std::env::temp_dir().join(format!("hatchery-release-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&clone);
    run(Command::new("git")
        .args(["clone", "--quiet", "--local", "--no-hardlinks"])
        .arg(&root)
        .arg(&clone));
    for (key, value) in [
        ("user.name", "Release Test"),
        ("user.email", "release@example.com"),
    ] {
        run(Command::new("git")
            .arg("-C")
            .arg(&clone)
            .args(["config", key, value]));
    }
    let released = release::release(&clone, "9.8.7", false).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(released.tag, "v9.8.7");
    assert_eq!(xtask::images::workspace_version(&clone).unwrap(), "9.8.7");
    let lock = std::fs::read_to_string(clone.join("Cargo.lock")).unwrap();
    for service in services::discover(&clone).unwrap() {
        assert!(
            lock.contains(&format!("name = \"{}\"\nversion = \"9.8.7\"", service.name)),
            "Cargo.lock: {}",
            service.name
        );
        let manifest = std::fs::read_to_string(
            clone.join(format!("deploy/k8s/base/services/{}.yaml", service.name)),
        )
        .unwrap();
        assert!(manifest.contains(&format!("image: hatchery/{}:9.8.7", service.name)));
    }
    let git = |args: &[&str]| {
        run(Command::new("git").arg("-C").arg(&clone).args(args))
            .trim()
            .to_string()
    };
    assert_eq!(git(&["rev-parse", "v9.8.7^{commit}"]), released.commit);
    assert_eq!(git(&["log", "-1", "--format=%s"]), "release: v9.8.7");
    assert_eq!(git(&["status", "--porcelain"]), "", "everything committed");
    k8s::check(&clone).unwrap_or_else(|e| panic!("{e:#}"));

    // The same version again, or a bad one, is refused before anything changes.
    let again = release::release(&clone, "9.8.7", false).unwrap_err();
    assert!(format!("{again:#}").contains("already exists"), "{again:#}");
    let bad = release::release(&clone, "9.8", false).unwrap_err();
    assert!(format!("{bad:#}").contains("MAJOR.MINOR.PATCH"), "{bad:#}");
    assert_eq!(git(&["rev-parse", "HEAD"]), released.commit);
    std::fs::remove_dir_all(&clone).ok();
}
