//! `dn worker --metrics-listen`: the worker's training gauges (`dn_worker::TrainingGauges`) served in
//! Prometheus' text format on `GET /metrics`.

use std::sync::Arc;

use dn_worker::TrainingGauges;

/// Serves `GET /metrics` from `gauges` on `listener` until `stop` turns true.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    gauges: Arc<TrainingGauges>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let gauges = gauges.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    gauges.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The endpoint answers a scrape on loopback with the gauges' text, then stops when told.
    #[tokio::test]
    async fn serves_the_gauges_on_loopback_until_stopped() {
        let gauges = TrainingGauges::new("node-1");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve_metrics(listener, gauges.clone(), stopped));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("text/plain; version=0.0.4"), "{response}");
        assert!(
            response.contains("# TYPE dn_worker_training_active gauge"),
            "{response}"
        );
        assert!(response.contains("dn_worker_training_active{worker=\"node-1\"} 0"));
        stop.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
