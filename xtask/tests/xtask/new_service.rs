//! The generator test: hatch a service in a copy of the repository and run
//! its tests there.
//!
//! The copy lives at `<target>/xtask-tests/new-service/repo` and the service
//! is always called `scratchsvc`, and the copy keeps the files' modification
//! times: with the real workspace's target directory, cargo then reuses every
//! compiled dependency (including the copy's `kit`, `testkit`, `populator`)
//! from one run to the next instead of piling up new artifacts. A lock file
//! serialises concurrent runs.

use std::ffi::OsStr;
use std::fs::{self, File, FileTimes};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use xtask::{checks, compose, services};

const NAME: &str = "scratchsvc";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Files of the repository: git's view (tracked + untracked, not ignored),
/// or a walk that skips `target/` and `.git/`.
fn repo_files(root: &Path) -> Vec<PathBuf> {
    let output = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .stderr(Stdio::null())
        .output();
    if let Ok(output) = output
        && output.status.success()
    {
        return output
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .filter(|p| root.join(p).is_file())
            .collect();
    }
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(root.join(&dir)).unwrap() {
            let entry = entry.unwrap();
            let relative = dir.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                if entry.file_name() != OsStr::new("target")
                    && entry.file_name() != OsStr::new(".git")
                {
                    stack.push(relative);
                }
            } else if kind.is_file() {
                files.push(relative);
            }
        }
    }
    files
}

/// Copy `files` from `root` to a fresh `dest`, keeping modification times.
fn copy_repo(root: &Path, files: &[PathBuf], dest: &Path) {
    if dest.exists() {
        fs::remove_dir_all(dest).unwrap();
    }
    for file in files {
        let from = root.join(file);
        let to = dest.join(file);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        let modified = fs::metadata(&from).unwrap().modified().unwrap();
        File::options()
            .write(true)
            .open(&to)
            .unwrap()
            .set_times(FileTimes::new().set_modified(modified))
            .unwrap();
    }
}

/// Whole-word occurrences of the template's name left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            for (number, line) in text.lines().enumerate() {
                let probe = xtask::rewrite::Renamer::new("template", "x", 8005, 1);
                if probe.apply(line) != line {
                    found.push(format!("{}:{}: {line}", path.display(), number + 1));
                }
            }
        }
    }
    found
}

/// Gives the copy's crates a version of their own. Cargo names a workspace crate's build
/// artifacts after its name, version and path inside the workspace, so without this the copy's
/// `kit` (same name, same relative path) would overwrite the real workspace's in the shared
/// target directory, and a later build of the real one would reuse artifacts made from the
/// copy's sources. Registry dependencies are still shared.
fn set_scratch_version(copy: &Path) {
    let path = copy.join("Cargo.toml");
    let manifest = fs::read_to_string(&path).unwrap();
    let modified = fs::metadata(&path).unwrap().modified().unwrap();
    let version_line = manifest
        .lines()
        .find(|line| line.starts_with("version = "))
        .expect("the workspace version in [workspace.package]");
    let scratch = manifest.replacen(version_line, "version = \"0.0.0-scratch\"", 1);
    fs::write(&path, scratch).unwrap();
    // Same time as the original, so the copy's build stays cached from one run to the next.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(modified))
        .unwrap();
}

struct Lock(File);

impl Lock {
    fn acquire(path: &Path) -> Lock {
        let file = File::create(path).unwrap();
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "cannot lock {}", path.display());
        Lock(file)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[test]
fn new_service_builds_and_passes_its_tests_in_a_copy() {
    let root = root();
    let target = target_dir(&root);
    let work = target.join("xtask-tests").join("new-service");
    fs::create_dir_all(&work).unwrap();
    let _lock = Lock::acquire(&work.join("lock"));
    let copy = work.join("repo");

    let files = repo_files(&root);
    assert!(
        files.iter().any(|f| f == Path::new("Cargo.lock")),
        "Cargo.lock must be in the copy"
    );
    copy_repo(&root, &files, &copy);
    set_scratch_version(&copy);
    let lock_before = fs::read_to_string(copy.join("Cargo.lock")).unwrap();

    let before = services::discover(&copy).unwrap();
    let done = xtask::new_service(&copy, NAME, None).unwrap_or_else(|e| panic!("{e:#}"));
    let expected_port = before.iter().map(|s| s.port).max().unwrap() + 1;
    assert_eq!(done.port, expected_port.max(8005));
    println!("{}", done.summary());

    // Registration.
    let manifest = fs::read_to_string(copy.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!("\"services/{NAME}\",")),
        "{manifest}"
    );
    let members: toml::Table = toml::from_str(&manifest).unwrap();
    assert!(
        members["workspace"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str() == Some(&format!("services/{NAME}")))
    );
    let compose_text = fs::read_to_string(copy.join("docker-compose.yml")).unwrap();
    let parsed = compose::parse(&compose_text).unwrap();
    assert!(parsed.services.contains_key(NAME));
    assert!(parsed.services.contains_key("template"));
    let marker_line = format!("\n  {}\n", compose::MARKER);
    assert!(
        compose_text.find(&format!("\n  {NAME}:\n")).unwrap()
            < compose_text.find(&marker_line).unwrap()
    );
    let listed = checks::read_services_txt(&copy).unwrap();
    assert_eq!(listed.first().map(String::as_str), Some("template"));
    assert!(listed.iter().any(|l| l == NAME));
    checks::check_all(&copy).unwrap_or_else(|e| panic!("{e:#}"));

    // The service itself.
    let after = services::discover(&copy).unwrap();
    let hatched = after.iter().find(|s| s.name == NAME).expect("discovered");
    assert_eq!(hatched.port, done.port);
    assert_eq!(hatched.dir, Path::new("services").join(NAME));
    let service_dir = copy.join("services").join(NAME);
    assert!(!service_dir.join("target").exists());
    let left = leftovers(&service_dir);
    assert!(
        left.is_empty(),
        "the template's name is left in:\n{}",
        left.join("\n")
    );

    // Seed data for every scenario that has the template's.
    for scenario in fs::read_dir(copy.join("populator")).unwrap() {
        let scenario = scenario.unwrap().path();
        if scenario.join("template").is_dir() {
            let copied = scenario.join(NAME);
            assert!(copied.is_dir(), "{} missing", copied.display());
            let count = |dir: &Path| fs::read_dir(dir).unwrap().count();
            assert_eq!(count(&copied), count(&scenario.join("template")));
            let left = leftovers(&copied);
            assert!(
                left.is_empty(),
                "the template's name is left in:\n{}",
                left.join("\n")
            );
        }
    }

    // A second run refuses to overwrite.
    let again = xtask::new_service(&copy, NAME, None).unwrap_err();
    assert!(format!("{again:#}").contains("already exists"), "{again:#}");

    // Its tests pass, built with the real target dir so dependencies are reused.
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(&copy)
        .args(["test", "-p", NAME])
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let leaks = key.starts_with("CARGO_PKG_")
            || key.starts_with("NEXTEST")
            || matches!(
                key.as_str(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            );
        if leaks {
            command.env_remove(&key);
        }
    }
    let status = command.status().expect("run cargo test in the copy");
    assert!(
        status.success(),
        "`cargo test -p {NAME}` failed in {} ({status})",
        copy.display()
    );

    // Only the new package was added to the lock file.
    let lock_after = fs::read_to_string(copy.join("Cargo.lock")).unwrap();
    let packages = |lock: &str| lock.matches("[[package]]").count();
    assert_eq!(packages(&lock_after), packages(&lock_before) + 1);
}
