//! `cargo xtask images`: one OCI image per service, built without a daemon by buildah from the
//! release binaries built here, on a root filesystem assembled locally:
//!
//! - `/usr/local/bin/<service>` (stripped) and `/usr/local/bin/service` (a link to it, the name
//!   compose's healthchecks and `ci/Dockerfile` use);
//! - exactly the shared libraries `ldd` lists for the binary, the dynamic loader included;
//! - CA certificates (`/etc/ssl/certs/ca-certificates.crt`), time zone data
//!   (`/usr/share/zoneinfo`, `/etc/localtime` = UTC);
//! - the seed data of every scenario that has some for the service (`/srv/populator`);
//! - `/etc/passwd` and `/etc/group` with the non-root user `hatchery` (10001); no shell.
//!
//! `ENTRYPOINT ["/usr/local/bin/<service>"]`, `CMD ["serve"]`, `USER 10001:10001`,
//! `WORKDIR /srv`, and the OCI annotation labels (`org.opencontainers.image.*`). Every image of
//! one run gets the same tag. buildah runs with the `vfs` storage driver, which works without
//! kernel overlay support; it is installed with apt when missing (as `infra` does for the
//! servers).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::generator::POPULATOR_DIR;
use crate::services::{self, Service};
use crate::util;

/// The user the services run as in their images (and in Kubernetes).
pub const USER_ID: u32 = 10001;
/// Repository name prefix of every image: `hatchery/<service>:<tag>`.
pub const IMAGE_PREFIX: &str = "hatchery";
/// Where the service binary lives inside the image.
pub const BIN_DIR: &str = "/usr/local/bin";
/// The working directory (the seed data is `populator/` below it).
pub const WORK_DIR: &str = "/srv";
/// Host files copied into every image.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Which cargo profile's binaries go into the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// What `cargo xtask images` builds.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The tag of every image (default: [`default_tag`]).
    pub tag: Option<String>,
    /// Only these services (default: all discovered).
    pub only: Vec<String>,
    /// Binaries from this profile.
    pub profile: Profile,
    /// Run `cargo build` first (otherwise the binaries must exist).
    pub build: bool,
    /// Push every image to `<registry>/<service>:<tag>` afterwards.
    pub push: Option<String>,
    /// Export every image and run its binary from it ([`verify`]) before pushing.
    pub check: bool,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            tag: None,
            only: Vec::new(),
            profile: Profile::Release,
            build: true,
            push: None,
            check: false,
        }
    }
}

/// One built image.
#[derive(Debug, Clone)]
pub struct Built {
    pub service: String,
    /// `hatchery/<service>:<tag>` (buildah stores it as `localhost/hatchery/...`).
    pub image: String,
    /// Bytes of the root filesystem (= the uncompressed single layer).
    pub size: u64,
    /// Assembling and committing this image (the cargo build is not included).
    pub took: Duration,
}

/// `buildah --storage-driver vfs`.
pub fn buildah() -> Command {
    let mut command = Command::new("buildah");
    command.args(["--storage-driver", "vfs"]);
    command.stdin(Stdio::null());
    command
}

/// Run a buildah (or other) command and return its trimmed standard output.
pub fn output(command: &mut Command) -> Result<String> {
    let out = command
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run `{}`", util::describe(command)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            util::describe(command),
            util::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Make sure `buildah` is installed: on Debian/Ubuntu as root, `apt-get install buildah`.
pub fn ensure_buildah() -> Result<()> {
    if util::which("buildah").is_some() {
        return Ok(());
    }
    if !(Path::new("/etc/debian_version").exists() && util::is_root()) {
        bail!(
            "buildah is needed to build images: `sudo apt-get install buildah` (Debian/Ubuntu), \
             `dnf install buildah` (Fedora), or see https://buildah.io"
        );
    }
    println!("==> installing buildah with apt-get");
    util::run(
        Command::new("apt-get")
            .args(["-q", "update"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["-q", "install", "-y", "--no-install-recommends", "buildah"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
    )?;
    Ok(())
}

/// The workspace version (`[workspace.package] version` in the root Cargo.toml).
pub fn workspace_version(root: &Path) -> Result<String> {
    let path = root.join("Cargo.toml");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    manifest
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no [workspace.package] version", path.display()))
}

/// The git revision of `root` (full hash), with `-dirty` when the work tree has changes.
pub fn git_revision(root: &Path) -> String {
    let head = output(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["rev-parse", "HEAD"]),
    )
    .unwrap_or_else(|_| "unknown".to_string());
    let dirty = output(Command::new("git").arg("-C").arg(root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_ok_and(|status| !status.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

/// Tag when none is given: `<version>-<short revision>` (`0.1.0-1a2b3c4`, `-dirty` appended
/// for uncommitted changes), so a development build never takes a release's tag.
pub fn default_tag(root: &Path) -> Result<String> {
    let version = workspace_version(root)?;
    let revision = git_revision(root);
    let short: String = revision.chars().take(7).collect();
    let dirty = if revision.ends_with("-dirty") {
        "-dirty"
    } else {
        ""
    };
    Ok(format!("{version}-{short}{dirty}"))
}

/// A tag Docker and OCI registries accept: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !tag.starts_with(['.', '-']);
    if !ok {
        bail!(
            "invalid image tag {tag:?}: use up to 128 letters, digits, `_`, `.` and `-`, not \
             starting with `.` or `-` (e.g. `0.2.0`)"
        );
    }
    Ok(())
}

/// `hatchery/<service>:<tag>`.
pub fn image_name(service: &str, tag: &str) -> String {
    format!("{IMAGE_PREFIX}/{service}:{tag}")
}

/// The services selected by `only` (all when empty); unknown names are an error.
pub fn select(all: &[Service], only: &[String]) -> Result<Vec<Service>> {
    if only.is_empty() {
        return Ok(all.to_vec());
    }
    let mut selected = Vec::new();
    for name in only {
        match all.iter().find(|service| &service.name == name) {
            Some(service) => selected.push(service.clone()),
            None => bail!(
                "unknown service {name:?}; services: {}",
                all.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    Ok(selected)
}

/// Build the images; returns what was built.
pub fn images(root: &Path, options: &ImageOptions) -> Result<Vec<Built>> {
    let all = services::discover(root)?;
    let selected = select(&all, &options.only)?;
    if selected.is_empty() {
        bail!("no services found (template/service/ or services/*/)");
    }
    let tag = match &options.tag {
        Some(tag) => tag.clone(),
        None => default_tag(root)?,
    };
    validate_tag(&tag)?;
    let version = workspace_version(root)?;
    // A release tag (given, not the default `<version>-<sha>`) names the release it was built
    // from.
    if options.tag.is_some() && crate::release::validate_version(&tag).is_ok() && tag != version {
        bail!(
            "tag {tag} looks like a release but the workspace version is {version}: release with \
             `cargo xtask release {tag}` first, or build from the tag v{tag}"
        );
    }
    ensure_buildah()?;
    if options.build {
        let mut cargo = util::cargo();
        cargo.current_dir(root).arg("build").arg("--locked");
        if options.profile == Profile::Release {
            cargo.arg("--release");
        }
        for service in &selected {
            cargo.args(["-p", &service.name, "--bin", &service.name]);
        }
        println!("==> {}", util::describe(&cargo));
        util::run(&mut cargo)?;
    }
    let revision = git_revision(root);
    let created = now_rfc3339()?;
    let source = source_url(root);
    let mut built = Vec::new();
    for service in &selected {
        let started = Instant::now();
        let image = image_name(&service.name, &tag);
        println!("==> {image}");
        let rootfs = assemble_rootfs(root, service, options.profile)?;
        let size = dir_size(&rootfs)?;
        let labels = Labels {
            service: &service.name,
            version: &version,
            revision: &revision,
            created: &created,
            source: &source,
        };
        commit_image(&rootfs, service, &image, &labels)?;
        built.push(Built {
            service: service.name.clone(),
            image,
            size,
            took: started.elapsed(),
        });
    }
    if options.check {
        for (service, image) in selected.iter().zip(&built) {
            println!("==> check {}", image.image);
            let report = verify(root, service, image)?;
            for line in report.lines() {
                println!("    {line}");
            }
        }
    }
    if let Some(registry) = &options.push {
        for image in &built {
            let destination = format!(
                "docker://{}/{}:{tag}",
                registry.trim_end_matches('/'),
                image.service
            );
            println!("==> push {} -> {destination}", image.image);
            util::run(buildah().args(["push", &image.image, &destination]))?;
        }
    }
    Ok(built)
}

/// The table `cargo xtask images` prints.
pub fn summary(built: &[Built], total: Duration) -> String {
    let rows: Vec<Vec<String>> = built
        .iter()
        .map(|b| {
            vec![
                b.image.clone(),
                format!("{:.1} MB", b.size as f64 / 1_000_000.0),
                util::human_duration(b.took),
            ]
        })
        .collect();
    format!(
        "{}{} images in {}\n",
        util::table(&["IMAGE", "SIZE", "TIME"], &rows),
        built.len(),
        util::human_duration(total)
    )
}

struct Labels<'a> {
    service: &'a str,
    version: &'a str,
    revision: &'a str,
    created: &'a str,
    source: &'a str,
}

impl Labels<'_> {
    fn pairs(&self) -> Vec<(String, String)> {
        let oci =
            |key: &str, value: &str| (format!("org.opencontainers.image.{key}"), value.to_string());
        vec![
            oci("title", self.service),
            oci("description", &format!("Hatchery {} service", self.service)),
            oci("version", self.version),
            oci("revision", self.revision),
            oci("source", self.source),
            oci("created", self.created),
            oci("licenses", "MIT OR Apache-2.0"),
            ("io.hatchery.service".to_string(), self.service.to_string()),
        ]
    }
}

/// The repository the images come from (label `org.opencontainers.image.source`): the GitHub
/// repository in a workflow, else the `origin` remote, else the local path.
pub fn source_url(root: &Path) -> String {
    if let (Ok(server), Ok(repository)) = (
        std::env::var("GITHUB_SERVER_URL"),
        std::env::var("GITHUB_REPOSITORY"),
    ) && !server.is_empty()
        && !repository.is_empty()
    {
        return format!("{server}/{repository}");
    }
    output(
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(["remote", "get-url", "origin"]),
    )
    .ok()
    .filter(|url| !url.is_empty())
    .unwrap_or_else(|| format!("file://{}", root.display()))
}

fn now_rfc3339() -> Result<String> {
    output(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `binary`, as absolute paths.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libraries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!(
                "{}: shared library missing on this machine: {line}",
                binary.display()
            );
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// `target/images/<service>/rootfs`, made afresh.
fn assemble_rootfs(root: &Path, service: &Service, profile: Profile) -> Result<PathBuf> {
    let binary = util::target_dir(root)
        .join(profile.dir())
        .join(&service.name);
    if !binary.is_file() {
        bail!(
            "{} does not exist: build it first (`cargo build{} -p {}`) or run without --no-build",
            binary.display(),
            if profile == Profile::Release {
                " --release"
            } else {
                ""
            },
            service.name
        );
    }
    let work = util::target_dir(root).join("images").join(&service.name);
    let rootfs = work.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs)
            .with_context(|| format!("cannot remove {}", rootfs.display()))?;
    }
    let inside = |path: &str| rootfs.join(path.trim_start_matches('/'));
    for dir in ["etc/ssl/certs", "usr/local/bin", "srv", "tmp", "usr/share"] {
        fs::create_dir_all(inside(dir))?;
    }
    set_mode(&inside("tmp"), 0o1777)?;

    // The binary, stripped, and `service` pointing at it.
    let target = inside(BIN_DIR).join(&service.name);
    let mut strip = Command::new("strip");
    strip
        .args(["--strip-all", "-o"])
        .arg(&target)
        .arg(&binary)
        .stdin(Stdio::null());
    if util::which("strip").is_none() || !util::status(&mut strip)?.success() {
        fs::copy(&binary, &target).with_context(|| format!("cannot copy {}", binary.display()))?;
    }
    set_mode(&target, 0o755)?;
    std::os::unix::fs::symlink(&service.name, inside(BIN_DIR).join("service"))?;

    // Exactly the shared libraries it needs.
    for library in shared_libraries(&binary)? {
        let real = fs::canonicalize(&library)
            .with_context(|| format!("cannot resolve {}", library.display()))?;
        let destination = rootfs.join(library.strip_prefix("/").unwrap_or(&library));
        if let Some(parent) = destination.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&real, &destination).with_context(|| format!("cannot copy {}", real.display()))?;
        set_mode(&destination, 0o755)?;
    }

    // CA certificates and time zones.
    if !Path::new(CA_BUNDLE).is_file() {
        bail!("{CA_BUNDLE} is missing: `apt-get install ca-certificates`");
    }
    fs::copy(CA_BUNDLE, inside(CA_BUNDLE))?;
    if !Path::new(ZONEINFO).is_dir() {
        bail!("{ZONEINFO} is missing: `apt-get install tzdata`");
    }
    copy_dir(Path::new(ZONEINFO), &inside(ZONEINFO))?;
    std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", inside("etc/localtime"))?;

    // Users (no shell: nologin does not exist in the image either), name resolution.
    fs::write(
        inside("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\nhatchery:x:{USER_ID}:{USER_ID}:hatchery:{WORK_DIR}:/sbin/nologin\n"
        ),
    )?;
    fs::write(
        inside("etc/group"),
        format!("root:x:0:\nhatchery:x:{USER_ID}:\n"),
    )?;
    fs::write(inside("etc/nsswitch.conf"), "hosts: files dns\n")?;

    // Seed data: every scenario (so `POPULATE__SCENARIO=demo` names one that exists), with the
    // service's own files where the scenario has some.
    let populator = root.join(POPULATOR_DIR);
    if populator.is_dir() {
        let mut scenarios: Vec<PathBuf> = fs::read_dir(&populator)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_dir())
            .collect();
        scenarios.sort();
        for scenario in scenarios {
            let name = scenario.file_name().context("scenario without a name")?;
            let to = inside(WORK_DIR).join(POPULATOR_DIR).join(name);
            fs::create_dir_all(&to)?;
            let from = scenario.join(&service.name);
            if from.is_dir() {
                copy_dir(&from, &to.join(&service.name))?;
            }
        }
    }
    Ok(rootfs)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Copy a tree, keeping symbolic links as links.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let entry = entry?;
        let source = entry.path();
        let destination = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&source, &destination)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&source)?, &destination)?;
        } else {
            fs::copy(&source, &destination)
                .with_context(|| format!("cannot copy {}", source.display()))?;
            set_mode(&destination, 0o644)?;
        }
    }
    Ok(())
}

/// Bytes of the regular files below `dir`.
pub fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

fn commit_image(rootfs: &Path, service: &Service, image: &str, labels: &Labels) -> Result<()> {
    let container = format!("hatchery-image-{}-{}", service.name, std::process::id());
    // A leftover of an interrupted run would block the name.
    let _ = buildah()
        .args(["rm", &container])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    output(buildah().args(["from", "--name", &container, "scratch"]))?;
    let result = (|| -> Result<()> {
        let source = format!("{}/", rootfs.display());
        output(buildah().args(["copy", "--chown", "0:0", &container, &source, "/"]))?;
        let entrypoint = format!("[\"{BIN_DIR}/{}\"]", service.name);
        let mut config = buildah();
        config.args([
            "config",
            "--entrypoint",
            &entrypoint,
            "--cmd",
            "[\"serve\"]",
            "--user",
            &format!("{USER_ID}:{USER_ID}"),
            "--workingdir",
            WORK_DIR,
            "--port",
            &format!("{}/tcp", service.port),
            "--env",
            &format!("PATH={BIN_DIR}"),
            "--env",
            &format!("{}=0.0.0.0", service.env("HTTP__HOST")),
            "--env",
            &format!("{}={}", service.env("HTTP__PORT"), service.port),
            "--stop-signal",
            "SIGTERM",
            "--os",
            "linux",
        ]);
        for (key, value) in labels.pairs() {
            config.args(["--label", &format!("{key}={value}")]);
            config.args(["--annotation", &format!("{key}={value}")]);
        }
        config.arg(&container);
        output(&mut config)?;
        output(buildah().args(["commit", "--quiet", "--format", "oci", &container, image]))?;
        Ok(())
    })();
    let _ = buildah()
        .args(["rm", &container])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    result.with_context(|| format!("building {image} failed"))
}

/// `buildah push <image> oci:<work>/oci`, then every layer unpacked in order into
/// `<work>/rootfs` (no mount, no root needed); returns the root filesystem.
pub fn export(image: &str, work: &Path) -> Result<PathBuf> {
    let layout = work.join("oci");
    let rootfs = work.join("rootfs");
    for dir in [&layout, &rootfs] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&rootfs)?;
    output(buildah().args([
        "push",
        "--quiet",
        image,
        &format!("oci:{}", layout.display()),
    ]))?;
    let read_json = |path: PathBuf| -> Result<serde_json::Value> {
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    };
    let blob = |digest: &str| -> Result<PathBuf> {
        let (algorithm, hex) = digest
            .split_once(':')
            .with_context(|| format!("bad digest {digest:?}"))?;
        Ok(layout.join("blobs").join(algorithm).join(hex))
    };
    let index = read_json(layout.join("index.json"))?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("the OCI index names no manifest")?;
    let manifest = read_json(blob(manifest_digest)?)?;
    for layer in manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?
    {
        let digest = layer["digest"].as_str().context("a layer without digest")?;
        output(
            Command::new("tar")
                .args(["--extract", "--no-same-owner", "--file"])
                .arg(blob(digest)?)
                .arg("--directory")
                .arg(&rootfs),
        )?;
    }
    Ok(rootfs)
}

/// Run `/usr/local/bin/<service> <args>` from an unpacked image with only `env`: chrooted as
/// the image's user when we are root; otherwise through the image's own dynamic loader, after
/// checking that every library resolves inside the image.
pub fn run_inside(
    rootfs: &Path,
    service: &str,
    args: &[&str],
    env: &[(String, String)],
) -> Result<std::process::Output> {
    let binary = format!("{BIN_DIR}/{service}");
    let mut command = if util::is_root() {
        // An absolute path: the child's environment is cleared, PATH included.
        let chroot = util::which("chroot").context("chroot (coreutils) is missing")?;
        let mut command = Command::new(chroot);
        command
            .arg(format!("--userspec={USER_ID}:{USER_ID}"))
            .arg(rootfs)
            .arg(&binary);
        command
    } else {
        let loader = rootfs.join("lib64/ld-linux-x86-64.so.2");
        let library_path = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"]
            .map(|dir| rootfs.join(dir).display().to_string())
            .join(":");
        let inside = rootfs.join(binary.trim_start_matches('/'));
        let listing = output(
            Command::new(&loader)
                .args(["--list", "--library-path", &library_path])
                .arg(&inside),
        )?;
        let root_text = rootfs.display().to_string();
        if let Some(line) = listing
            .lines()
            .find(|line| line.contains("=>") && !line.contains(&root_text))
        {
            bail!("a library is not in the image: {}", line.trim());
        }
        let mut command = Command::new(loader);
        command.args(["--library-path", &library_path]).arg(inside);
        command
    };
    command
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .current_dir(rootfs)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {binary} from {}", rootfs.display()))
}

/// Settings pointing a service at the local Postgres (its `postgres` database, which exists
/// everywhere), Redis and RabbitMQ, for `check`.
pub fn local_settings(service: &Service) -> Vec<(String, String)> {
    vec![
        (
            service.env("DATABASE__URL"),
            "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
        ),
        (
            service.env("REDIS__URL"),
            "redis://127.0.0.1:6379".to_string(),
        ),
        (
            service.env("AMQP__URL"),
            "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
        ),
    ]
}

/// Export `built`'s image and prove it holds what its service needs: the files (binary,
/// loader, certificates, time zones, users, no shell), `--version` printing the workspace
/// version, and `check` passing against the local servers. Returns `check`'s output.
pub fn verify(root: &Path, service: &Service, built: &Built) -> Result<String> {
    let work = util::target_dir(root)
        .join("images")
        .join(&service.name)
        .join("verify");
    let rootfs = export(&built.image, &work)?;
    let mut problems = Vec::new();
    for path in [
        format!("usr/local/bin/{}", service.name),
        "lib64/ld-linux-x86-64.so.2".to_string(),
        "etc/ssl/certs/ca-certificates.crt".to_string(),
        "usr/share/zoneinfo/UTC".to_string(),
        "etc/passwd".to_string(),
    ] {
        if !rootfs.join(&path).exists() {
            problems.push(format!("{path} is missing"));
        }
    }
    for shell in ["bin/sh", "bin/bash", "usr/bin/sh", "bin/busybox"] {
        if rootfs.join(shell).exists() {
            problems.push(format!("{shell} is in the image"));
        }
    }
    let version = workspace_version(root)?;
    let out = run_inside(&rootfs, &service.name, &["--version"], &[])?;
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || printed != format!("{} {version}", service.name) {
        problems.push(format!(
            "`--version` printed {printed:?} ({}): {}",
            util::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let out = run_inside(&rootfs, &service.name, &["check"], &local_settings(service))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        problems.push(format!("`check` failed:\n{report}"));
    }
    let _ = fs::remove_dir_all(&work);
    if problems.is_empty() {
        Ok(report)
    } else {
        bail!("{}:\n  - {}", built.image, problems.join("\n  - "))
    }
}

/// The names (`hatchery/<service>:<tag>`) of images present in buildah's storage for `tag`.
pub fn present(tag: &str) -> Result<BTreeSet<String>> {
    let listing = output(buildah().args(["images", "--format", "{{.Name}}:{{.Tag}}"]))?;
    Ok(listing
        .lines()
        .map(|line| line.trim().trim_start_matches("localhost/").to_string())
        .filter(|name| name.ends_with(&format!(":{tag}")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_tags() {
        for good in ["0.2.0", "v1", "0.1.0-1a2b3c4-dirty", "latest", "a_b"] {
            validate_tag(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", "é"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects_services_by_name() {
        let all = vec![
            Service {
                name: "template".into(),
                port: 8005,
                dir: "template/service".into(),
            },
            Service {
                name: "mail".into(),
                port: 8002,
                dir: "services/mail".into(),
            },
        ];
        assert_eq!(select(&all, &[]).unwrap().len(), 2);
        assert_eq!(select(&all, &["mail".into()]).unwrap()[0].name, "mail");
        let error = select(&all, &["nope".into()]).unwrap_err().to_string();
        assert!(error.contains("template, mail"), "{error}");
    }
}
