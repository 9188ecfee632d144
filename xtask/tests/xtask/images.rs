//! One service image, built by `cargo xtask images`' code with buildah, inspected, exported to
//! an OCI layout, unpacked, and its binary run from the unpacked root filesystem (`--version`,
//! then `check` against the local servers): the image holds everything the service needs.
//! Reuses the binary already built (the suite's debug build, else a release one), so the test
//! costs seconds; `cargo xtask images` builds every image from release binaries.

use std::path::PathBuf;
use std::process::Stdio;

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
            check: false,
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
    let rootfs = images::export(image, &work).unwrap_or_else(|e| panic!("{e:#}"));
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
    let out = images::run_inside(&rootfs, SERVICE, &["--version"], &[]).unwrap();
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
    let out = images::run_inside(
        &rootfs,
        SERVICE,
        &["check"],
        &settings("redis://127.0.0.1:6379"),
    )
    .unwrap();
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
    let out = images::run_inside(
        &rootfs,
        SERVICE,
        &["check"],
        &settings("redis://127.0.0.1:1"),
    )
    .unwrap();
    assert!(!out.status.success(), "check passed without Redis");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DOWN"));
}
