//! The service binary as operators run it: settings errors, `check`, `openapi`, the key and
//! client subcommands, a bad scenario file, and serving the demo data until SIGTERM.

use std::process::Command;

use serde_json::{Value, json};
use testkit::TestDb;
use testkit::cli::{Running, run};

use crate::common::*;

fn binary() -> Command {
    testkit::cli::command(env!("CARGO_BIN_EXE_auth"), "auth")
}

/// kit tests its own keys; here: the service's own section, nested keys included.
#[test]
fn bad_settings_exit_2_naming_the_key() {
    testkit::cli::assert_config_errors(
        binary,
        &["check"],
        &[
            (
                "AUTH__APP__ACCESS_TOKEN_TTL",
                "forever",
                "app.access_token_ttl",
            ),
            (
                "AUTH__APP__REQUIRE_VERIFIED_EMAIL",
                "maybe",
                "app.require_verified_email",
            ),
            (
                "AUTH__APP__ARGON2__MEMORY_KIB",
                "-1",
                "app.argon2.memory_kib",
            ),
        ],
    );
}

/// One key of a nested section set alone keeps the section's other keys at their defaults.
#[tokio::test]
async fn one_nested_key_can_be_set_alone() {
    let db = TestDb::create().await;
    let (output, stdout, stderr) = run(binary()
        .arg("check")
        .env("AUTH__DATABASE__URL", db.url())
        .env("AUTH__APP__RATE_LIMITS__SIGNUP__PER_IP", "100"));
    assert!(output.status.success(), "{stdout}{stderr}");
}

#[tokio::test]
async fn check_reports_each_dependency_and_openapi_needs_none() {
    let db = TestDb::create().await;
    let (output, stdout, stderr) = run(binary()
        .arg("check")
        .env("AUTH__DATABASE__URL", db.url())
        .env("AUTH__REDIS__URL", redis_url()));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("redis") && l.contains("up")),
        "{stdout}"
    );

    let (output, stdout, stderr) = run(binary()
        .arg("openapi")
        .env("AUTH__DATABASE__URL", "postgres://nobody@127.0.0.1:1/none"));
    assert!(output.status.success(), "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("the OpenAPI document");
    assert_eq!(doc["info"]["title"], "Hatchery auth service");
    for path in [
        "/api/auth/v1/signup",
        "/api/auth/v1/token",
        "/api/auth/v1/logout",
        "/api/auth/v1/me",
        "/api/auth/v1/me/password",
        "/api/auth/v1/email/verify",
        "/api/auth/v1/email/resend",
        "/api/auth/v1/password/forgot",
        "/api/auth/v1/password/reset",
        "/api/auth/v1/users",
        "/api/auth/v1/users/{id}",
        "/api/auth/v1/users/{id}/restore",
        "/api/auth/v1/jwks",
        "/.well-known/jwks.json",
        "/api/auth/v1/tickets",
        "/api/auth/v1/tickets/validate",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn keys_rotate_and_clients_create_from_the_command_line() {
    let db = TestDb::create().await;
    let (output, _, stderr) = run(binary().arg("migrate").env("AUTH__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    let pool = db.pool().await;
    auth::keys::ensure_active(&pool, &development_keks())
        .await
        .unwrap();

    let (output, stdout, stderr) = run(binary()
        .args(["keys", "rotate"])
        .env("AUTH__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("new key:") && stdout.contains("retired:"),
        "{stdout}"
    );
    let (active, retired): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE retired_at IS NULL), count(*) FILTER (WHERE retired_at IS NOT NULL) FROM signing_keys",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((active, retired), (1, 1));
    let (output, listed, _) = run(binary()
        .args(["keys", "list"])
        .env("AUTH__DATABASE__URL", db.url()));
    assert!(output.status.success());
    assert!(
        listed.contains("signs from") && listed.contains("active until"),
        "{listed}"
    );

    let (output, stdout, stderr) = run(binary()
        .args([
            "clients",
            "create",
            "reports",
            "--scope",
            "payments:read",
            "--scope",
            "events:read",
        ])
        .env("AUTH__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
    };
    let (client_id, secret) = (field("client_id:"), field("client_secret:"));
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret_hash FROM clients WHERE uuid = $1::uuid")
            .bind(&client_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(stored, secret.as_bytes(), "stored hashed");
    let (output, _, stderr) = run(binary()
        .args(["clients", "create", "reports"])
        .env("AUTH__DATABASE__URL", db.url()));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("exists already"), "{stderr}");
    let (_, listed, _) = run(binary()
        .args(["clients", "list"])
        .env("AUTH__DATABASE__URL", db.url()));
    assert!(
        listed.contains(&client_id) && listed.contains("events:read payments:read"),
        "{listed}"
    );

    // The printed credentials work against a service on this database.
    drop(pool);
    let url = db.url();
    let auth = spawn_with(move |s| s.database.url = kit::SecretUrl::new(url)).await;
    let service = service_token(&auth, &client_id, &secret).await;
    assert_eq!(decode(&service).1["scope"], "events:read payments:read");
    // The bus's operations are there too.
    let (output, stdout, stderr) = run(binary()
        .args(["events", "outbox"])
        .env("AUTH__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stdout}{stderr}");
}

#[tokio::test]
async fn a_bad_scenario_file_stops_the_start_with_file_and_line() {
    let db = TestDb::create().await;
    let scenario = testkit::cli::Scenario::new("broken", "auth");
    scenario.write(
        "users.yaml",
        "users:\n  - id: 0193a000-0000-7000-8000-000000000001\n    email: a@b.test\n    name: A\n    password: short\n",
    );
    let (output, _, stderr) = run(binary()
        .args(["populate", "--scenario", "broken"])
        .env("AUTH__DATABASE__URL", db.url())
        .env("AUTH__POPULATE__DIR", &scenario.dir));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("users.yaml:5") && stderr.contains("at least 8"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serves_the_demo_logins_and_exits_0_on_sigterm() {
    let db = TestDb::create().await;
    let prefix = format!("test-{}:", uuid::Uuid::now_v7().simple());
    // In production, the Redis auth keeps revocations in must be named: it does not default
    // to a local one there.
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("AUTH__ENVIRONMENT", "production")
        .env(
            "AUTH__AUTH__JWKS_URL",
            "http://127.0.0.1:8001/.well-known/jwks.json",
        )
        .env("AUTH__AMQP__URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .env("AUTH__DATABASE__URL", db.url())
        .env("AUTH__HTTP__PORT", "0"));
    assert_eq!(output.status.code(), Some(2), "Redis is required: {stderr}");
    assert!(stderr.contains("redis.url"), "{stderr}");

    let mut child = Running::spawn(
        binary()
            .env("AUTH__DATABASE__URL", db.url())
            .env("AUTH__HTTP__PORT", "0")
            .env("AUTH__REDIS__URL", redis_url())
            .env("AUTH__APP__REDIS_PREFIX", &prefix)
            .env("AUTH__AUTH__REVOCATION_PREFIX", &prefix)
            .env("AUTH__POPULATE__SCENARIO", "demo"),
    );
    let address = child.address.clone();
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let tokens: Value = client
        .post(format!("{address}{API}/token"))
        .json(&json!({"grant_type": "password", "email": "ada@hatchery.test", "password": "hatchery-ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: Value = client
        .get(format!("{address}{API}/me"))
        .bearer_auth(access(&tokens))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["admin"]));

    child.terminate();
    let status = child.exit_status().await;
    assert_eq!(status.code(), Some(0));
}

/// `serve` with `kek` (and `previous`) on `db`, expected to stop at start: its stderr.
fn serve_refused(db: &TestDb, kek: &str, extra: &[(&str, &str)]) -> String {
    let mut command = binary();
    command
        .arg("serve")
        .env("AUTH__DATABASE__URL", db.url())
        .env("AUTH__HTTP__PORT", "0")
        .env("AUTH__REDIS__URL", redis_url())
        .env("AUTH__APP__KEY_ENCRYPTION_KEY", kek);
    for (name, value) in extra {
        command.env(name, value);
    }
    let (output, _, stderr) = run(&mut command);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

#[tokio::test]
async fn keys_are_sealed_rotated_to_a_new_kek_and_a_wrong_kek_stops_the_start() {
    use auth::kek::Kek;
    let db = TestDb::create().await;
    let (output, _, stderr) = run(binary().arg("migrate").env("AUTH__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    let pool = db.pool().await;
    // A key an older release stored in clear.
    let legacy = identity::SigningKey::generate("20261101-legacy").unwrap();
    sqlx::query("INSERT INTO signing_keys (kid, private_key, public_key) VALUES ($1, $2, $3)")
        .bind(legacy.kid())
        .bind(legacy.pkcs8_der())
        .bind(legacy.public_key().as_bytes().as_slice())
        .execute(&pool)
        .await
        .unwrap();
    let (first, second) = (Kek::generate().unwrap(), Kek::generate().unwrap());
    let (first_id, second_id) = (
        Kek::parse(&first).unwrap().id().to_owned(),
        Kek::parse(&second).unwrap().id().to_owned(),
    );
    let keys = |args: &[&str], kek: &str, previous: Option<&str>| {
        let mut command = binary();
        command
            .arg("keys")
            .args(args)
            .env("AUTH__DATABASE__URL", db.url())
            .env("AUTH__APP__KEY_ENCRYPTION_KEY", kek);
        if let Some(previous) = previous {
            command.env("AUTH__APP__PREVIOUS_KEY_ENCRYPTION_KEY", previous);
        }
        let (output, stdout, stderr) = run(&mut command);
        assert!(output.status.success(), "keys {args:?}: {stdout}{stderr}");
        stdout
    };
    let stored = || async {
        sqlx::query_as::<_, (Option<Vec<u8>>, Option<String>)>(
            "SELECT private_key, kek_id FROM signing_keys",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert!(keys(&["list"], &first, None).contains("STORED IN CLEAR"));
    let sealed = keys(&["reencrypt"], &first, None);
    assert!(
        sealed.contains("sealed 1 key(s) stored in clear"),
        "{sealed}"
    );
    assert_eq!(stored().await, (None, Some(first_id.clone())));

    // Another key-encryption key cannot open it: the start stops and says which is needed.
    let refused = serve_refused(&db, &second, &[]);
    assert!(
        refused.contains(&first_id)
            && refused.contains(&second_id)
            && refused.contains("app.key_encryption_key"),
        "{refused}"
    );
    // Neither can a value that is no key-encryption key.
    let malformed = serve_refused(&db, "c2hvcnQ=", &[]);
    assert!(
        malformed.contains("app.key_encryption_key") && malformed.contains("32"),
        "{malformed}"
    );

    // Rotation: the new key with the old one as previous re-encrypts every key...
    let moved = keys(&["reencrypt"], &second, Some(&first));
    assert!(moved.contains("re-encrypted 1 key(s)"), "{moved}");
    assert_eq!(stored().await, (None, Some(second_id.clone())));
    assert!(keys(&["list"], &second, None).contains(&second_id));
    // ...after which the old one alone no longer starts the service.
    let refused = serve_refused(&db, &first, &[]);
    assert!(refused.contains(&second_id), "{refused}");
    // The key itself never changed: it is the same private key, now sealed differently.
    let (sealed, kid): (Vec<u8>, String) =
        sqlx::query_as("SELECT sealed_private_key, kid FROM signing_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
    let opened = Kek::parse(&second).unwrap().open(&kid, &sealed).unwrap();
    assert_eq!(opened, legacy.pkcs8_der());

    // Production has no built-in key-encryption key.
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("AUTH__ENVIRONMENT", "production")
        .env(
            "AUTH__AUTH__JWKS_URL",
            "http://127.0.0.1:8001/.well-known/jwks.json",
        )
        .env("AUTH__AMQP__URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .env("AUTH__REDIS__URL", redis_url())
        .env("AUTH__DATABASE__URL", db.url())
        .env("AUTH__HTTP__PORT", "0"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("app.key_encryption_key") && stderr.contains("required in production"),
        "{stderr}"
    );
    let generated = keys(&["generate-kek"], &second, None);
    assert!(Kek::parse(generated.trim()).is_ok(), "{generated}");
}
