//! `cargo xtask <command>`: see `cargo xtask --help`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xtask::{
    bench, contract, generator, images, infra, k8s, migrations, operations, python, release,
    services, testing, up, util,
};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer commands for the Hatchery workspace",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the discovered services: name, port, path.
    Services,
    /// Make Postgres, Redis, RabbitMQ and the SMTP sink reachable on 127.0.0.1, and install
    /// the fake Stripe (localstripe) under target/.
    Infra,
    /// Install the pinned Python tools into virtualenvs under target/: schemathesis (contract),
    /// the third-party OAuth client auth's tests use (authlib, PyJWT), localstripe, squawk.
    Tools,
    /// Build and run every service with merged logs until Ctrl-C.
    Up {
        /// Seed data scenario (populator/<SCENARIO>/).
        #[arg(long, default_value = "demo")]
        scenario: String,
        /// Build and run release binaries.
        #[arg(long)]
        release: bool,
        /// Seconds each service may take to answer /readyz with 200.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        ready_timeout: u64,
    },
    /// infra, tools, lint-migrations, cargo fmt --check, clippy -D warnings, nextest, contract;
    /// stops at the first failure.
    Test {
        /// Extra arguments for `cargo nextest run` (after `--`).
        #[arg(last = true, value_name = "NEXTEST_ARGS")]
        nextest_args: Vec<String>,
    },
    /// Check every service against its OpenAPI document: openapi-spec-validator, then
    /// schemathesis with all checks as the demo admin (starts what is not running).
    Contract {
        /// Only these services (default: all).
        services: Vec<String>,
        /// Generated requests per operation and test phase.
        #[arg(long, default_value_t = contract::DEFAULT_MAX_EXAMPLES)]
        max_examples: u32,
        /// Random seed: the same seed sends the same requests.
        #[arg(long, default_value_t = contract::DEFAULT_SEED)]
        seed: u64,
        /// Seconds a started service may take to answer /readyz with 200.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        ready_timeout: u64,
    },
    /// Back up every service's database (pg_dump, custom format) with a manifest: row counts,
    /// checksums, migration versions. Restore with `cargo xtask restore`.
    Backup {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Where to write (default: target/backups/<UTC time>/); one folder per service.
        #[arg(long, value_name = "DIR")]
        to: Option<std::path::PathBuf>,
    },
    /// Restore a backup: each service's database into a new one (never over an existing one
    /// without --replace), every table checked against the manifest.
    Restore {
        /// The backup (the folder `cargo xtask backup` printed).
        #[arg(long, value_name = "DIR")]
        from: std::path::PathBuf,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Database to restore into, `{service}` replaced by each service's name
        /// (e.g. '{service}_copy'); default: the service's configured database.
        #[arg(long, value_name = "NAME")]
        into: Option<String>,
        /// Replace an existing database (dropped only once the restored copy is verified).
        #[arg(long)]
        replace: bool,
    },
    /// Replace the personal data in copies of the services' databases (restored backups).
    Anonymize {
        /// The copies, `{service}` replaced by each service's name (e.g. '{service}_copy').
        #[arg(long, value_name = "NAME")]
        database: String,
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Allow rewriting a service's own configured database.
        #[arg(long)]
        i_mean_it: bool,
    },
    /// squawk on every migration (template, services, crates' shared tables): nothing that
    /// could lock a busy table during a deploy.
    LintMigrations,
    /// Hatch services/<NAME> from the template and register it.
    NewService {
        /// 2-30 lowercase letters and digits, starting with a letter.
        name: String,
        /// HTTP port (default: one above the highest port in use).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Build one OCI image per service (buildah, no daemon): release binaries on a minimal
    /// root filesystem, all with the same tag; prints each image's size and the build time.
    Images {
        /// Tag of every image (default: <version>-<short git revision>).
        #[arg(long)]
        tag: Option<String>,
        /// Only this service (repeatable; default: all).
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
        /// Use the binaries already in target/release instead of running `cargo build`.
        #[arg(long)]
        no_build: bool,
        /// Push every image to <REGISTRY>/<service>:<tag> afterwards (buildah push).
        #[arg(long, value_name = "REGISTRY")]
        push: Option<String>,
        /// Export every image and run its binary from it: `--version`, and `check` against
        /// the local Postgres, Redis and RabbitMQ.
        #[arg(long)]
        check: bool,
    },
    /// Release X.Y.Z: bump the workspace version and Cargo.lock, regenerate deploy/k8s, commit,
    /// tag vX.Y.Z, and build every service's image tagged X.Y.Z.
    Release {
        /// The new version, e.g. 0.2.0.
        version: String,
        /// Stop after the tag (the release workflow builds the images).
        #[arg(long)]
        no_images: bool,
    },
    /// Generate deploy/k8s's per-service manifests from the discovered services.
    K8s {
        /// Only check that the committed files are up to date.
        #[arg(long)]
        check: bool,
    },
    /// Benchmark a service (start-to-ready, idle RSS), the test `suite`, or a component:
    /// `bus`, `identity`, `auth`, `broker`, `mail`, `payments`, `events` (release builds printing their own numbers).
    Bench {
        /// A service name (e.g. `template`) or `suite`.
        target: String,
        /// Start-to-ready repetitions.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Exit with 1 if a target is missed.
        #[arg(long)]
        check: bool,
        /// The same load on another implementation, alternating, with the ratios. `auth`: the
        /// URL of a running one, or the directory of the Django peer to start (no value:
        /// `shared/peers/django-auth` next to the repository or above it). `broker`:
        /// `socketshark`.
        #[arg(long, value_name = "URL|DIR|NAME", num_args = 0..=1, default_missing_value = "")]
        against: Option<String>,
        /// `broker --against socketshark`: the peer's folder (default: $SOCKETSHARK_PEER_DIR,
        /// else ../shared/peers/socketshark beside the repository).
        #[arg(long)]
        peer_dir: Option<std::path::PathBuf>,
        /// `auth` only: rounds (each runs every measurement on every server).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// `auth` only: seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let root = util::repo_root();
    match cli.command {
        Cmd::Services => {
            let found = services::discover(&root)?;
            if found.is_empty() {
                println!("no services found (template/service/ or services/*/)");
            } else {
                let rows: Vec<Vec<String>> = found
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.port.to_string(),
                            s.dir.display().to_string(),
                        ]
                    })
                    .collect();
                print!("{}", util::table(&["NAME", "PORT", "PATH"], &rows));
            }
            Ok(0)
        }
        Cmd::Infra => {
            infra::ensure(&root, infra::Smtp::Background)?;
            python::LOCALSTRIPE.ensure(&root)?;
            Ok(0)
        }
        Cmd::Tools => {
            python::ensure_all(&root)?;
            Ok(0)
        }
        Cmd::Up {
            scenario,
            release,
            ready_timeout,
        } => up::up(
            &root,
            &up::UpOptions {
                scenario,
                release,
                ready_timeout: Duration::from_secs(ready_timeout),
            },
        ),
        Cmd::Backup { service, to } => operations::backup(&root, service.as_deref(), to),
        Cmd::Restore {
            from,
            service,
            into,
            replace,
        } => operations::restore(&root, &from, service.as_deref(), into.as_deref(), replace),
        Cmd::Anonymize {
            database,
            service,
            i_mean_it,
        } => operations::anonymize(&root, &database, service.as_deref(), i_mean_it),
        Cmd::LintMigrations => {
            let checked = migrations::lint(&root)?;
            println!("squawk: {checked} migration(s), no offence");
            Ok(0)
        }
        Cmd::Test { nextest_args } => testing::test(&root, &nextest_args),
        Cmd::Contract {
            services,
            max_examples,
            seed,
            ready_timeout,
        } => contract::contract(
            &root,
            &contract::ContractOptions {
                only: services,
                max_examples,
                seed,
                ready_timeout: Duration::from_secs(ready_timeout),
            },
        ),
        Cmd::NewService { name, port } => {
            let done = generator::new_service(&root, &name, port)?;
            print!("{}", done.summary());
            Ok(0)
        }
        Cmd::Images {
            tag,
            services,
            no_build,
            push,
            check,
        } => {
            let started = std::time::Instant::now();
            let built = images::images(
                &root,
                &images::ImageOptions {
                    tag,
                    only: services,
                    build: !no_build,
                    push,
                    check,
                    ..images::ImageOptions::default()
                },
            )?;
            print!("{}", images::summary(&built, started.elapsed()));
            Ok(0)
        }
        Cmd::Release { version, no_images } => {
            release::release(&root, &version, !no_images)?;
            Ok(0)
        }
        Cmd::K8s { check } => k8s::command(&root, check),
        Cmd::Bench {
            target,
            runs,
            check,
            against,
            peer_dir,
            rounds,
            seconds,
        } => {
            if target == "auth" {
                bench::auth(
                    &root,
                    &bench::AuthBench {
                        against,
                        rounds,
                        seconds,
                    },
                )
            } else {
                let peer = bench::Peer {
                    against: against.as_deref().filter(|a| !a.is_empty()),
                    dir: peer_dir.as_deref(),
                };
                bench::bench(&root, &target, runs, check, &peer)
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
