//! Python tools the project uses (schemathesis for `contract`, localstripe for the payments
//! tests), installed from PyPI at pinned versions into virtualenvs under `target/`: nothing is
//! installed outside the checkout, and a fresh clone needs only `python3` with `venv`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// The virtualenv `<work>/venv` with `requirements` installed, made (or updated when the pins
/// changed) if needed; `probe` is a file inside it that exists once they are installed
/// (`bin/st`). `purpose` names what it is for, in messages.
pub fn ensure(work: &Path, requirements: &[&str], probe: &str, purpose: &str) -> Result<PathBuf> {
    let venv = work.join("venv");
    let marker = venv.join("hatchery-requirements.txt");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|have| have == wanted)
        && venv.join(probe).is_file()
    {
        return Ok(venv);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find_map(util::which)
        .with_context(|| {
            format!("python3 is needed to install {purpose} (e.g. `apt-get install python3-venv`)")
        })?;
    println!(
        "==> installing {} into {}",
        requirements.join(" "),
        venv.display()
    );
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    util::run(Command::new(&python).arg("-m").arg("venv").arg(&venv))
        .context("cannot create the virtualenv (on Debian: `apt-get install python3-venv`)")?;
    util::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(requirements),
    )?;
    std::fs::write(&marker, wanted)
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(venv)
}
