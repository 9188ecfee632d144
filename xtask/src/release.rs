//! `cargo xtask release X.Y.Z`: one release number for the whole platform. Bumps
//! `[workspace.package] version` (every crate inherits it) and Cargo.lock, regenerates the
//! Kubernetes manifests (their image tags and migration Jobs name the version), commits
//! `release: vX.Y.Z`, tags `vX.Y.Z` (annotated), then builds every service's image tagged
//! `X.Y.Z` — unchanged services too, so one tag names the whole platform.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::images::{self, ImageOptions, output};
use crate::{k8s, util};

/// What `release` did.
#[derive(Debug)]
pub struct Released {
    pub version: String,
    pub tag: String,
    pub commit: String,
    pub images: Vec<images::Built>,
}

/// `X.Y.Z` with optional `-pre` (semver without build metadata, which image tags cannot carry).
pub fn validate_version(version: &str) -> Result<()> {
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let numeric = |part: &&str| {
        !part.is_empty()
            && part.chars().all(|c| c.is_ascii_digit())
            && (part.len() == 1 || !part.starts_with('0'))
    };
    let pre_ok = pre.is_none_or(|pre| {
        !pre.is_empty()
            && pre.split('.').all(|id| {
                !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    });
    if numbers.len() != 3 || !numbers.iter().all(numeric) || !pre_ok {
        bail!("invalid version {version:?}: use MAJOR.MINOR.PATCH, e.g. 0.2.0 (or 0.2.0-rc.1)");
    }
    Ok(())
}

/// Replace the `version = "..."` line of `[workspace.package]` in the root manifest's text.
pub fn set_workspace_version(manifest: &str, version: &str) -> Result<String> {
    let mut in_section = false;
    let mut done = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = trimmed == "[workspace.package]";
        }
        if in_section && !done && trimmed.starts_with("version") && trimmed.contains('=') {
            out.push(format!("version = \"{version}\""));
            done = true;
        } else {
            out.push(line.to_string());
        }
    }
    if !done {
        bail!("Cargo.toml has no `version = ...` in [workspace.package]");
    }
    let mut text = out.join("\n");
    if manifest.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

fn git(root: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(root).stdin(Stdio::null());
    command
}

/// Run the release in the repository at `root`; `build_images: false` stops after the tag.
pub fn release(root: &Path, version: &str, build_images: bool) -> Result<Released> {
    let version = version.strip_prefix('v').unwrap_or(version);
    validate_version(version)?;
    let tag = format!("v{version}");
    let dirty = output(git(root).args(["status", "--porcelain", "--untracked-files=no"]))?;
    if !dirty.is_empty() {
        bail!("the work tree has uncommitted changes; commit or stash them first:\n{dirty}");
    }
    if output(git(root).args(["rev-parse", "-q", "--verify", &format!("refs/tags/{tag}")])).is_ok()
    {
        bail!("tag {tag} already exists");
    }
    let current = images::workspace_version(root)?;
    if current == version {
        bail!("the workspace is already at version {version}");
    }

    println!("==> version {current} -> {version}");
    let manifest_path = root.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    std::fs::write(&manifest_path, set_workspace_version(&manifest, version)?)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    // Cargo.lock records every workspace crate's version: update those entries only.
    let mut lock = util::cargo();
    lock.current_dir(root)
        .args(["update", "--workspace", "--offline", "--quiet"])
        .stdin(Stdio::null());
    if let Err(error) = util::run(&mut lock) {
        let _ = git(root)
            .args(["checkout", "--", "Cargo.toml", "Cargo.lock"])
            .status();
        return Err(error.context("cannot update Cargo.lock; the version was not changed"));
    }
    let mut changed: Vec<PathBuf> = vec!["Cargo.toml".into(), "Cargo.lock".into()];
    changed.extend(k8s::write(root)?);
    let mut add = git(root);
    add.args(["add", "--all", "--"]).args(&changed);
    util::run(&mut add)?;
    util::run(git(root).args(["commit", "--quiet", "-m", &format!("release: {tag}")]))?;
    util::run(git(root).args(["tag", "-a", &tag, "-m", &format!("Hatchery {version}")]))?;
    let commit = output(git(root).args(["rev-parse", "HEAD"]))?;
    println!(
        "==> committed {} and tagged {tag}",
        &commit[..commit.len().min(12)]
    );

    let mut built = Vec::new();
    if build_images {
        let started = Instant::now();
        built = images::images(
            root,
            &ImageOptions {
                tag: Some(version.to_string()),
                ..ImageOptions::default()
            },
        )?;
        print!("{}", images::summary(&built, started.elapsed()));
    }
    println!(
        "Released {version}. Publish with `git push origin {tag}` (the release workflow builds and pushes the images)."
    );
    Ok(Released {
        version: version.to_string(),
        tag,
        commit,
        images: built,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_versions() {
        for good in ["0.2.0", "1.10.3", "2.0.0-rc.1"] {
            validate_version(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "", "1", "1.2", "1.2.3.4", "01.2.3", "1.2.x", "1.2.3-", "1.2.3+b1",
        ] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bumps_only_the_workspace_version() {
        let manifest = "[workspace]\nmembers = []\n\n[workspace.package]\n# note\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace.dependencies]\nfoo = { version = \"0.1.0\" }\n";
        let bumped = set_workspace_version(manifest, "0.2.0").unwrap();
        assert!(bumped.contains("[workspace.package]\n# note\nversion = \"0.2.0\"\n"));
        assert!(bumped.contains("foo = { version = \"0.1.0\" }"));
        assert!(set_workspace_version("[package]\nversion = \"1.0.0\"\n", "2.0.0").is_err());
    }
}
