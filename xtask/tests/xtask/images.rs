//! One service image, built by `cargo xtask images`' code with buildah, inspected, exported to
//! an OCI layout, unpacked, and its binary run from the unpacked root filesystem (`--version`,
//! then `check` against the local servers): the image holds everything the service needs.
//! Reuses the binary already built (the suite's debug build, else a release one), so the test
//! costs seconds; `cargo xtask images` builds every image from release binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use xtask::images::{self, ImageOptions, Profile, buildah, output};

const SERVICE: &str = "template";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Removes the test's image, and its export, however the test ends.
struct Cleanup {
    image: String,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = buildah()
            .args(["rmi", "--force", &self.image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}

/// `buildah push <image> oci:<dir>`, then every layer unpacked into `rootfs`, in order.
fn export(image: &str, work: &Path) -> PathBuf {
    let layout = work.join("oci");
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    output(buildah().args([
        "push",
        "--quiet",
        image,
        &format!("oci:{}", layout.display()),
    ]))
    .unwrap_or_else(|e| panic!("{e:#}"));
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob(
        &layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    for layer in manifest["layers"].as_array().unwrap() {
        let path = blob(&layout, layer["digest"].as_str().unwrap());
        output(
            Command::new("tar")
                .args(["--extract", "--no-same-owner", "--file"])
                .arg(&path)
                .arg("--directory")
                .arg(&rootfs),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    rootfs
}

/// The binary inside `rootfs`, run with only the image's files: chrooted as the image's user
/// when we are root, else through the image's own dynamic loader after checking that every
/// library resolves inside the image.
fn run_inside(rootfs: &Path, args: &[&str], env: &[(String, String)]) -> std::process::Output {
    let binary = format!("/usr/local/bin/{SERVICE}");
    let mut command = if xtask::util::is_root() {
        // An absolute path: the child's environment is cleared, PATH included.
        let chroot = xtask::util::which("chroot").expect("chroot (coreutils)");
        let mut command = Command::new(chroot);
        command
            .arg(format!("--userspec={0}:{0}", images::USER_ID))
            .arg(rootfs)
            .arg(&binary);
        command
    } else {
        let loader = rootfs.join("lib64/ld-linux-x86-64.so.2");
        let library_path = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"]
            .map(|dir| rootfs.join(dir).display().to_string())
            .join(":");
        let listing = output(
            Command::new(&loader)
                .args(["--list", "--library-path", &library_path])
                .arg(rootfs.join(binary.trim_start_matches('/'))),
        )
        .unwrap();
        for line in listing.lines().filter(|line| line.contains("=>")) {
            assert!(
                line.contains(&rootfs.display().to_string()),
                "a library is not in the image: {line}"
            );
        }
        let mut command = Command::new(loader);
        command
            .args(["--library-path", &library_path])
            .arg(rootfs.join(binary.trim_start_matches('/')));
        command
    };
    command
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir(rootfs)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn service_image_runs_its_binary_from_the_exported_filesystem() {
    let root = root();
    let target = xtask::util::target_dir(&root);
    let (profile, build) = if target.join("release").join(SERVICE).is_file() {
        (Profile::Release, false)
    } else {
        (
            Profile::Debug,
            !target.join("debug").join(SERVICE).is_file(),
        )
    };
    let tag = format!("test-{}", std::process::id());
    let work = std::env::temp_dir().join(format!("hatchery-image-{}", std::process::id()));
    let _cleanup = Cleanup {
        image: images::image_name(SERVICE, &tag),
        dir: work.clone(),
    };
    let built = images::images(
        &root,
        &ImageOptions {
            tag: Some(tag.clone()),
            only: vec![SERVICE.to_string()],
            profile,
            build,
            push: None,
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(built.len(), 1);
    let image = &built[0].image;
    assert_eq!(image, &format!("hatchery/{SERVICE}:{tag}"));
    assert!(images::present(&tag).unwrap().contains(image.as_str()));

    // The configuration: entrypoint, command, a non-root user, the labels.
    let inspect: Value = serde_json::from_str(
        &output(buildah().args(["inspect", "--type", "image", image])).unwrap(),
    )
    .unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!([format!("/usr/local/bin/{SERVICE}")])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(config["User"], format!("{0}:{0}", images::USER_ID));
    assert_eq!(config["WorkingDir"], "/srv");
    let labels = &config["Labels"];
    let version = images::workspace_version(&root).unwrap();
    assert_eq!(labels["org.opencontainers.image.title"], SERVICE);
    assert_eq!(labels["org.opencontainers.image.version"], version.as_str());
    let revision = images::git_revision(&root);
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        revision.as_str()
    );
    for key in ["source", "created"] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or("");
        assert!(!value.is_empty(), "label {key}");
    }

    // The files: the binary and its libraries, certificates, time zones, seed data, users; no
    // shell.
    let rootfs = export(image, &work);
    for path in [
        "usr/local/bin/template",
        "usr/local/bin/service",
        "lib64/ld-linux-x86-64.so.2",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/zoneinfo/Europe/Berlin",
        "srv/populator/demo/template/10-users.yaml",
    ] {
        assert!(
            rootfs.join(path).exists(),
            "{path} is missing from the image"
        );
    }
    for shell in ["bin/sh", "bin/bash", "usr/bin/sh", "bin/busybox"] {
        assert!(
            !rootfs.join(shell).exists(),
            "{shell} must not be in the image"
        );
    }
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains(&format!("hatchery:x:{0}:{0}:", images::USER_ID)),
        "{passwd}"
    );

    // The binary runs from it.
    let out = run_inside(&rootfs, &["--version"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--version: {out:?}");
    assert_eq!(stdout.trim(), format!("{SERVICE} {version}"));

    let settings = |redis: &str| {
        vec![
            (
                "TEMPLATE__DATABASE__URL".to_string(),
                "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
            ),
            ("TEMPLATE__REDIS__URL".to_string(), redis.to_string()),
            (
                "TEMPLATE__AMQP__URL".to_string(),
                "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            ),
        ]
    };
    let out = run_inside(&rootfs, &["check"], &settings("redis://127.0.0.1:6379"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check against the local servers failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for dependency in ["database", "redis", "rabbitmq"] {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with(dependency) && line.contains(" up ")),
            "{dependency} not up:\n{stdout}"
        );
    }
    // And `check` does look: a server that is not there fails it.
    let out = run_inside(&rootfs, &["check"], &settings("redis://127.0.0.1:1"));
    assert!(!out.status.success(), "check passed without Redis");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DOWN"));
}
