//! A real third-party OAuth 2.0 client against the service on a local port: authlib (password,
//! refresh and client-credentials grants, configured from the RFC 8414 metadata) and PyJWT
//! (verifying the tokens through the JWKS). Both are pinned and installed by the project's own
//! `cargo xtask tools` into `target/oauth-client/venv` (`cargo xtask test` does it first; this
//! test runs it when the virtualenv is missing).

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;

/// The target directory this test binary was built in (`<target>/debug/deps/<binary>`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return testkit::workspace_root().join(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("target"))
}

/// The virtualenv's Python, installed by `cargo xtask tools` if it is not there yet.
fn oauth_client_python() -> PathBuf {
    let python = target_dir().join("oauth-client/venv/bin/python");
    if !python.is_file() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        eprintln!("installing the third-party OAuth client: cargo xtask tools");
        let status = Command::new(cargo)
            .args(["xtask", "tools"])
            .current_dir(testkit::workspace_root())
            .status()
            .expect("run cargo xtask tools");
        assert!(status.success(), "cargo xtask tools failed ({status})");
    }
    assert!(python.is_file(), "{} is missing", python.display());
    python
}

#[tokio::test]
async fn a_standard_oauth_client_configures_itself_and_pyjwt_verifies_its_tokens() {
    let python = tokio::task::spawn_blocking(oauth_client_python)
        .await
        .unwrap();
    let auth = spawn_demo().await;
    let script = testkit::workspace_root().join("services/auth/tests/oauth_client.py");
    let mut command = Command::new(python);
    command.arg(script).args([
        auth.base_url.as_str(),
        "ada@hatchery.test",
        "hatchery-ada",
        EVENTS_CLIENT,
        EVENTS_SECRET,
        auth.settings.auth.audience.as_str(),
    ]);
    // The client blocks while the service answers on this test's runtime.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the OAuth client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client failed:\n{stderr}{stdout}"
    );
    let seen: Value = serde_json::from_str(&stdout).expect("the client's JSON");

    assert_eq!(seen["issuer"], auth.settings.auth.issuer.as_str());
    let person = &seen["signed_in"];
    assert_eq!(person["sub"], ADA);
    assert_eq!(person["roles"], json!(["admin"]));
    assert_eq!(seen["refreshed"]["sub"], ADA);
    assert_eq!(seen["refreshed"]["sid"], person["sid"], "the same session");
    assert_eq!(seen["refresh_token_rotated"], true);
    assert_eq!(seen["me"]["email"], "ada@hatchery.test");
    assert_eq!(seen["service_auth_method"], "client_secret_basic");
    assert_eq!(seen["service"]["sub"], EVENTS_CLIENT);
    assert_eq!(seen["service"]["roles"], json!(["service"]));
    assert_eq!(
        seen["service"]["scope"],
        "mail:send payments:create payments:read payments:refund"
    );
    assert_eq!(seen["service_has_refresh_token"], false);
}
