//! `cargo xtask backup | restore | anonymize`: the service binaries' own `backup`, `restore`
//! and `anonymize` commands (kit's), run for every discovered service (or the one named), so a
//! new service is covered by existing. Each service reads its own settings (its
//! `<SERVICE>__DATABASE__URL`, else the local database named after it); one without a database
//! says so and is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::services::{self, Service};
use crate::{up, util};

/// The services selected by `--service` (all when `None`), their binaries built.
fn selected(root: &Path, only: Option<&str>) -> Result<Vec<Service>> {
    let found = services::discover(root)?;
    let chosen: Vec<Service> = match only {
        None => found,
        Some(name) => {
            let Some(service) = found.iter().find(|s| s.name == name) else {
                let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
                bail!("no service called {name} (services: {})", names.join(", "));
            };
            vec![service.clone()]
        }
    };
    up::build(root, &chosen, false, false)?;
    Ok(chosen)
}

/// `service`'s binary running `args` from the repository root.
fn command(root: &Path, service: &Service, args: &[String]) -> Command {
    let mut command = Command::new(up::bin_dir(root, false).join(&service.name));
    command
        .current_dir(root)
        .args(args)
        .env(service.env("LOG__FORMAT"), "pretty");
    command
}

/// Runs `args` for each service; prints a table of what each took; exit code 1 if any failed.
fn for_each(
    root: &Path,
    services: &[Service],
    what: &str,
    args: impl Fn(&Service) -> Option<Vec<String>>,
    env: &[(&str, String)],
) -> Result<i32> {
    let mut rows = Vec::new();
    let mut failed = 0;
    let started = Instant::now();
    for service in services {
        let Some(args) = args(service) else {
            rows.push(vec![service.name.clone(), "skipped".into(), String::new()]);
            continue;
        };
        let mut command = command(root, service, &args);
        for (key, value) in env {
            command.env(key, value);
        }
        println!("==> {}", util::describe(&command));
        let began = Instant::now();
        let status = util::status(&mut command)?;
        let took = began.elapsed();
        if !status.success() {
            failed += 1;
        }
        rows.push(vec![
            service.name.clone(),
            if status.success() {
                "ok".into()
            } else {
                format!("FAILED ({})", util::describe_status(status))
            },
            format!("{:.2} s", took.as_secs_f64()),
        ]);
    }
    print!("\n{}", util::table(&["SERVICE", what, "TIME"], &rows));
    println!("total {:.2} s", started.elapsed().as_secs_f64());
    Ok(if failed == 0 { 0 } else { 1 })
}

/// `20261201T101500Z` for `time`.
pub fn timestamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `cargo xtask backup [--service S] [--to DIR]`: DIR defaults to `target/backups/<UTC time>`.
pub fn backup(root: &Path, only: Option<&str>, to: Option<PathBuf>) -> Result<i32> {
    let services = selected(root, only)?;
    let dir = match to {
        Some(dir) => dir,
        None => util::target_dir(root)
            .join("backups")
            .join(timestamp(SystemTime::now())),
    };
    let dir = if dir.is_absolute() {
        dir
    } else {
        root.join(dir)
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let code = for_each(
        root,
        &services,
        "BACKUP",
        |_| {
            Some(vec![
                "backup".into(),
                "--to".into(),
                dir.display().to_string(),
            ])
        },
        &[],
    )?;
    println!("backup: {}", dir.display());
    Ok(code)
}

/// `{service}` in `pattern` replaced by the service's name; a pattern without it is allowed
/// for one service only.
pub fn database_name(pattern: &str, service: &str, count: usize) -> Result<String> {
    if !pattern.contains("{service}") && count > 1 {
        bail!(
            "{pattern:?} would name the same database for every service: write {{service}} in it (e.g. '{{service}}_copy') or pick one with --service"
        );
    }
    Ok(pattern.replace("{service}", service))
}

/// `cargo xtask restore --from DIR [--service S] [--into NAME] [--replace]`.
pub fn restore(
    root: &Path,
    from: &Path,
    only: Option<&str>,
    into: Option<&str>,
    replace: bool,
) -> Result<i32> {
    let from = if from.is_absolute() {
        from.to_path_buf()
    } else {
        root.join(from)
    };
    if !from.is_dir() {
        bail!("no backup at {}", from.display());
    }
    let services = selected(root, only)?;
    // Per service: its restore arguments, or None when the backup holds none of it.
    let mut plan = Vec::new();
    for service in &services {
        if !from.join(&service.name).join("manifest.json").is_file() {
            if only.is_some() {
                bail!("{} holds no backup of {}", from.display(), service.name);
            }
            plan.push(None);
            continue;
        }
        let mut args = vec![
            "restore".to_owned(),
            "--from".to_owned(),
            from.display().to_string(),
        ];
        if let Some(pattern) = into {
            let name = database_name(pattern, &service.name, services.len())?;
            args.extend(["--into".to_owned(), name]);
        }
        if replace {
            args.push("--replace".to_owned());
        }
        plan.push(Some(args));
    }
    for_each(
        root,
        &services,
        "RESTORE",
        |service| {
            let index = services.iter().position(|s| s.name == service.name)?;
            plan[index].clone()
        },
        &[],
    )
}

/// 16 random bytes as hex, from the system's generator.
fn random_salt() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `cargo xtask anonymize --database PATTERN [--service S] [--i-mean-it]`: one salt for every
/// service, so a value that belongs to no platform user still gets the same replacement in
/// every database.
pub fn anonymize(root: &Path, pattern: &str, only: Option<&str>, i_mean_it: bool) -> Result<i32> {
    let services = selected(root, only)?;
    let count = services.len();
    let names: Vec<String> = services
        .iter()
        .map(|s| database_name(pattern, &s.name, count))
        .collect::<Result<_>>()?;
    let salt = random_salt()?;
    for_each(
        root,
        &services,
        "ANONYMIZE",
        |service| {
            let index = services.iter().position(|s| s.name == service.name)?;
            let mut args = vec![
                "anonymize".to_owned(),
                "--database".to_owned(),
                names[index].clone(),
            ];
            if i_mean_it {
                args.push("--i-mean-it".to_owned());
            }
            Some(args)
        },
        &[("HATCHERY_ANONYMIZE_SALT", salt)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_and_sortable() {
        let time = UNIX_EPOCH + Duration::from_secs(1_796_119_200); // 2026-12-01T10:00:00Z
        assert_eq!(timestamp(time), "20261201T100000Z");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000Z");
    }

    #[test]
    fn one_database_name_for_many_services_is_refused() {
        assert_eq!(database_name("{service}_qa", "mail", 5).unwrap(), "mail_qa");
        assert_eq!(database_name("copy", "mail", 1).unwrap(), "copy");
        assert!(database_name("copy", "mail", 2).is_err());
    }
}
