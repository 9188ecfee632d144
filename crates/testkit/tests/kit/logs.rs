//! Every log line written while handling a request carries its request id (JSON logs).

use std::io::Write;
use std::sync::{Arc, Mutex};

use testkit::TestApp;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn request_lines_carry_the_request_id() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(kit::telemetry::SpanFields)
        .with(kit::telemetry::json_layer(move || writer.clone()))
        .init();

    let app = TestApp::spawn::<crate::common::Probe>().await;
    let response = app
        .client
        .get(app.url("/fail"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|l: &serde_json::Value| l["request_id"] == "trace-me-123")
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap_or(""))
        .collect();
    assert!(messages.contains(&"about to fail"), "{text}");
    assert!(messages.contains(&"request failed"), "{text}");
    assert!(messages.contains(&"request finished"), "{text}");
    let failed = lines
        .iter()
        .find(|l| l["message"] == "request failed")
        .unwrap();
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["route"], "/fail");
    assert!(
        failed["error"].as_str().unwrap().contains("disk on fire"),
        "the cause goes to the log: {failed}"
    );
}
