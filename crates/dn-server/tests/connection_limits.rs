//! Connections an unauthenticated client opens and leaves idle, or feeds headers slowly, are closed within
//! the header timeout while `/health` and authenticated requests keep working; one key's requests in
//! flight are capped.

mod common;

use std::time::{Duration, Instant};

use dn_server::ServerLimits;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes `stream` (EOF or reset); false if it is still open at `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The two tests run one after the other: thousands of connections held by the first starve the second's
/// server of CPU on a 2-core machine, and a request answered seconds late reads as a limit not enforced.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Time a loaded machine gets to answer before a test gives up waiting for an outcome.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_while_the_api_keeps_answering() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    let server = common::start_with_limits(10 << 20, limits).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..3000 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let opened = Instant::now();
    // The API answers meanwhile: health, and an authenticated listing.
    let (status, body) = server.call(Method::GET, "/health", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _) = server
        .call(
            Method::GET,
            "/org/acme/ws/main/training/jobs",
            Some(&server.key_a),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // Every one of them is closed by the header timeout (none closes without it; a loaded machine may take
    // longer than the timeout itself to get to them all).
    let deadline = opened + PATIENCE;
    for stream in idle.iter_mut().chain(slow.iter_mut()) {
        assert!(
            closed_by(stream, deadline).await,
            "a connection stayed open"
        );
    }
    // A keep-alive connection left idle after a request is closed too.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_by(&mut kept, Instant::now() + PATIENCE).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_gets_a_bounded_number_of_requests_in_flight() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let limits = ServerLimits {
        max_requests_per_key: 2,
        ..ServerLimits::default()
    };
    let server = common::start_with_limits(10 << 20, limits).await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    // Two job creations whose bodies never finish arriving hold the key's two slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /org/acme/ws/main/training/jobs HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\n\
             content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
            server.key_a
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    // Once the server has read both heads, every further request of that key is refused; only a request
    // that started after the deadline counts as a failure (one answered late may predate the heads).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let started = Instant::now();
        let (status, _) = server
            .call(Method::GET, "/org/acme/datasets", Some(&server.key_a), None)
            .await;
        if status == 429 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            started < deadline,
            "the key's third request was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the limit the answer says when to come back.
    let refused = reqwest::Client::new()
        .get(format!("{}/org/acme/datasets", server.url))
        .header("X-API-Key", &server.key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    // Another organization's key is not affected; the slots free when those requests end.
    let (status, _) = server
        .call(
            Method::GET,
            "/org/rival/datasets",
            Some(&server.key_b),
            None,
        )
        .await;
    assert_eq!(status, 200);
    drop(held);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let started = Instant::now();
        let (status, _) = server
            .call(Method::GET, "/org/acme/datasets", Some(&server.key_a), None)
            .await;
        if status == 200 {
            break;
        }
        assert!(started < deadline, "the key's slots were not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
