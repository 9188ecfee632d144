//! SIGTERM while a slow request is in flight: the request finishes, new connections are
//! refused, background tasks finish, and serving returns cleanly. (It signals its own process:
//! nextest runs it in a process of its own.)

use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let db = testkit::TestDb::create().await;
    let mut settings = kit::service::default_settings::<crate::common::Probe>().unwrap();
    settings.database.url = kit::SecretUrl::new(db.url());
    let app = kit::service::build::<crate::common::Probe>(settings)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(app.serve(listener, kit::shutdown_signal()));

    let slow = tokio::spawn(async move {
        reqwest::get(format!("http://{address}/slow/1500"))
            .await
            .map(|r| r.status())
    });
    testkit::eventually(
        "the slow request to start",
        Duration::from_secs(5),
        || async { (crate::common::SLOW_STARTED.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;

    let pid = std::process::id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    testkit::eventually(
        "new connections to be refused",
        Duration::from_secs(5),
        || async {
            tokio::net::TcpStream::connect(address)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        !slow.is_finished(),
        "the slow request is still being served"
    );
    let status = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    let served = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns");
    served.unwrap().expect("clean shutdown");
    assert_eq!(
        crate::common::TASKS_FINISHED.load(Ordering::SeqCst),
        1,
        "background task finished"
    );
}
