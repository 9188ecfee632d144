//! localstripe (a stateful fake Stripe server from PyPI) on 127.0.0.1, started by the test
//! that needs it from the virtualenv `cargo xtask tools` (and `infra`) installs under `target/localstripe/`,
//! on a free port, and stopped with it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Serves localstripe's application on 127.0.0.1 and a free port, which it prints first. Its
/// objects stay in memory (localstripe would otherwise rewrite one file shared by every run,
/// `/tmp/localstripe.pickle`, on each write), and it exits when the test process does.
const LAUNCHER: &str = r#"
import os, socket, threading, time
from aiohttp import web
from localstripe.resources import store
from localstripe.server import app

store.dump_to_disk = lambda: None
parent = os.getppid()

def exit_with_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)

threading.Thread(target=exit_with_parent, daemon=True).start()
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
web.run_app(app, sock=listener, print=None, access_log=None)
"#;

pub struct LocalStripe {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

/// The Stripe API key the tests use (localstripe accepts any `sk_...`).
pub const API_KEY: &str = "sk_test_hatchery";

fn venv_python() -> PathBuf {
    let root = testkit::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join("localstripe/venv/bin/python")
}

impl LocalStripe {
    pub fn start() -> LocalStripe {
        let python = venv_python();
        assert!(
            python.is_file(),
            "localstripe is not installed at {}: run `cargo xtask tools` (or `cargo xtask test`)",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(LAUNCHER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start localstripe");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("localstripe's stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("localstripe's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("localstripe did not start: {line:?}"));
        LocalStripe {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// Sends localstripe's webhooks for every event to `url`, signed with `secret`.
    pub async fn send_webhooks_to(&self, url: &str, secret: &str) {
        let response = self
            .http
            .post(format!("{}/_config/webhooks/hatchery", self.url))
            .json(&serde_json::json!({"url": url, "secret": secret}))
            .send()
            .await
            .expect("configure localstripe's webhooks");
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// Reads an object of localstripe's Stripe API.
    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("call localstripe")
            .json()
            .await
            .expect("localstripe answers JSON")
    }

    /// A form-encoded call to localstripe's Stripe API, as a client other than the service.
    pub async fn call(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(API_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("call localstripe");
        response.json().await.expect("localstripe answers JSON")
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
