//! Token verification throughput on one core: `cargo run --release -p identity --bin
//! identity-bench [-- --seconds N]`.
//!
//! Verifies a typical user token (EdDSA signature, header and claims parsing, `iss`/`aud`/
//! `exp`/`nbf` checks) in a loop on a single-threaded runtime and prints verifications per
//! second, next to the target. Exit code 1 when the target is missed and `--check` is given.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use identity::{Claims, SigningKey, Verifier};
use kit::config::AuthSettings;
use uuid::Uuid;

/// The target: one core verifies at least this many tokens per second.
const TARGET_PER_SECOND: f64 = 20_000.0;

fn main() -> ExitCode {
    let mut seconds = 3.0_f64;
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => match args.next().and_then(|v| v.parse().ok()) {
                Some(value) if value > 0.0 => seconds = value,
                _ => return usage("--seconds needs a positive number"),
            },
            "--check" => check = true,
            "-h" | "--help" => return usage(""),
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("identity-bench: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Duration::from_secs_f64(seconds))) {
        Ok(rate) => {
            let met = rate >= TARGET_PER_SECOND;
            println!(
                "verifications/s per core (cold): {rate:.0} (target >= {TARGET_PER_SECOND:.0}): {}",
                if met { "ok" } else { "MISSED" }
            );
            if check && !met {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("identity-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("identity-bench: {problem}");
    }
    eprintln!("usage: identity-bench [--seconds N] [--check]");
    if problem.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

async fn run(duration: Duration) -> anyhow::Result<f64> {
    let settings = AuthSettings::default();
    let key = SigningKey::generate("bench")?;
    let verifier = Verifier::with_public_key(key.public_key(), &settings);
    let now = Utc::now().timestamp();
    let claims = Claims {
        iss: settings.issuer.clone(),
        aud: vec![settings.audience.clone()],
        sub: Uuid::now_v7(),
        sid: Some(Uuid::now_v7()),
        jti: Uuid::now_v7(),
        iat: now,
        exp: now + 900,
        nbf: None,
        roles: vec!["admin".into()],
        email: Some("ada@hatchery.test".into()),
        name: Some("Ada Admin".into()),
        email_verified: true,
        scope: None,
    };
    let token = key.sign(&claims)?;
    anyhow::ensure!(
        verifier.verify(&token).await? == claims,
        "the token does not round-trip"
    );

    let cold = measure(&verifier.clone().without_cache(), &token, duration).await?;
    println!(
        "cold (signature checked every time): {:.1} µs of CPU each, {:.0}/s per core ({}-byte token)",
        1e6 / cold,
        cold,
        token.len()
    );
    let signature_only = signature_check_cost(&key)?;
    println!("  of which the bare Ed25519 signature check (aws-lc): {signature_only:.1} µs");
    let warm = measure(&verifier, &token, duration).await?;
    println!(
        "warm (token seen before, time checks only): {:.2} µs of CPU each, {:.0}/s per core",
        1e6 / warm,
        warm
    );
    Ok(cold)
}

/// Verifications per second of CPU time of this thread. CPU time rather than wall time: on a
/// shared machine other processes take turns on the core, and "per core" means per second of
/// a core actually spent here.
async fn measure(verifier: &Verifier, token: &str, duration: Duration) -> anyhow::Result<f64> {
    for _ in 0..1_000 {
        verifier.verify(token).await?;
    }
    const BATCH: u64 = 500;
    let started = Instant::now();
    let cpu_started = thread_cpu_time();
    let mut done = 0u64;
    while started.elapsed() < duration {
        for _ in 0..BATCH {
            std::hint::black_box(verifier.verify(std::hint::black_box(token)).await?);
        }
        done += BATCH;
    }
    let cpu = (thread_cpu_time() - cpu_started).as_secs_f64();
    anyhow::ensure!(cpu > 0.0, "cannot read the thread's CPU time");
    Ok(done as f64 / cpu)
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant Linux defines.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Average CPU µs of one bare Ed25519 verification (aws-lc), for comparison.
fn signature_check_cost(key: &SigningKey) -> anyhow::Result<f64> {
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(key.pkcs8_der())
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let message = [7u8; 400];
    let signature = pair.sign(&message);
    let public = UnparsedPublicKey::new(&ED25519, key.public_key().as_bytes().to_vec());
    const ROUNDS: u32 = 5_000;
    let started = thread_cpu_time();
    for _ in 0..ROUNDS {
        public
            .verify(std::hint::black_box(&message), signature.as_ref())
            .map_err(|_| anyhow::anyhow!("the signature does not verify"))?;
    }
    Ok((thread_cpu_time() - started).as_secs_f64() * 1e6 / f64::from(ROUNDS))
}
