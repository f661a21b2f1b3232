//! The HTTP/1.1 accept loop, with the limits an unauthenticated client must not get around: a cap on open
//! connections (past it a new connection is closed at once, so idle sockets cannot exhaust the process's
//! file descriptors), a timeout for a request's headers that also closes idle keep-alive connections
//! (hyper arms it whenever it waits for a request head), and a cap on one API key's requests in flight
//! (429 past it). An accept error (EMFILE) is waited out, never fatal.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::error::ApiError;
use crate::extract::api_key;

/// How long open connections get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The server's connection and request limits.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Open connections at most; the process's file-descriptor limit is raised to allow them.
    pub max_connections: usize,
    /// A request's headers must arrive within this; an idle keep-alive connection is closed after it.
    pub header_read_timeout: Duration,
    /// Requests of one API key being handled at once at most (a streamed log counts until its
    /// response starts).
    pub max_requests_per_key: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            max_requests_per_key: 64,
        }
    }
}

/// Raises the soft file-descriptor limit to the hard one; returns the soft limit now in effect.
fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish (at most
/// [`SHUTDOWN_GRACE`]).
pub(crate) async fn serve_app(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Half of the descriptors at most go to connections: the rest are the job store's, the storage's and
    // an in-process worker's.
    let fds = raise_fd_limit().unwrap_or(u64::MAX);
    let max_connections = limits
        .max_connections
        .min(usize::try_from(fds / 2).unwrap_or(usize::MAX))
        .max(1);
    if max_connections < limits.max_connections {
        tracing::warn!(
            max_connections,
            "the file-descriptor limit ({fds}) allows {max_connections} connections"
        );
    }
    let in_flight = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let per_key = limits.max_requests_per_key;
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let in_flight = in_flight.clone();
            async move { limit_per_key(req, next, &in_flight, per_key).await }
        },
    ));
    let connections = Arc::new(Semaphore::new(max_connections));
    let (closing, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors (or a connection reset before accept): wait, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // At the cap: close it at once rather than hold a descriptor for it.
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut closing = closing_rx.clone();
        let header_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
        });
    }
    let _ = closing.send(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), async {
        let _ = connections.acquire_many(all).await;
    })
    .await;
    Ok(())
}

async fn limit_per_key(
    req: Request,
    next: Next,
    in_flight: &Mutex<HashMap<String, usize>>,
    max: usize,
) -> Response {
    // Counted under the key as the Caller extractor reads it (either header); none or unreadable: the
    // request is refused by authentication anyway.
    let Ok(Some(key)) = api_key(req.headers()).map(|k| k.map(str::to_owned)) else {
        return next.run(req).await;
    };
    {
        let mut counts = in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_default();
        if *count >= max {
            return ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("this API key has {max} requests in flight already (the server's limit)"),
            )
            .retry_after(1)
            .into_response();
        }
        *count += 1;
    }
    // Decremented however the request ends (completed, or dropped with its connection).
    struct Release<'a>(&'a Mutex<HashMap<String, usize>>, String);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&self.1) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&self.1);
                }
            }
        }
    }
    let _release = Release(in_flight, key);
    next.run(req).await
}
