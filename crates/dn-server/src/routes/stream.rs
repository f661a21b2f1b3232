//! `GET .../jobs/{id}/logs/stream`: a job's log entries as server-sent events, live. Each event carries its
//! position as the SSE id, so a client that reconnects with `Last-Event-ID` (or `?after=`) continues
//! without gaps or duplicates. The stream ends with an `end` event (data: the terminal status) once the
//! job is terminal and every entry was sent, and after `MAX_CONNECTION` in any case (the client
//! reconnects), so no connection holds a server's shutdown for long.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Caller};
use crate::routes::jobs::{LogParams, scope};

const POLL: Duration = Duration::from_millis(250);
const MAX_CONNECTION: Duration = Duration::from_secs(60);

struct Cursor {
    app: AppState,
    org: String,
    ws: String,
    id: String,
    after: i64,
    pending: VecDeque<Event>,
    done: bool,
    opened: Instant,
}

impl Cursor {
    /// Queues the entries after the cursor, and the end once the job is terminal.
    async fn fill(&mut self) {
        // Status first: entries written with the terminal status are then already visible.
        let status = match self.app.store.get_job(&self.org, &self.ws, &self.id).await {
            Ok(job) => job.status,
            Err(_) => {
                self.done = true;
                return;
            }
        };
        let Ok(entries) = self
            .app
            .store
            .list_logs(&self.org, &self.ws, &self.id, self.after)
            .await
        else {
            self.done = true;
            return;
        };
        for stored in entries {
            self.after = stored.seq;
            let mut entry = stored.entry;
            entry.data.insert("seq".into(), stored.seq.into());
            entry.data.insert("attempt".into(), stored.attempt.into());
            if let Ok(event) = Event::default()
                .id(stored.seq.to_string())
                .event("log")
                .json_data(&entry)
            {
                self.pending.push_back(event);
            }
        }
        if status.is_terminal() {
            self.pending
                .push_back(Event::default().event("end").data(status.to_string()));
            self.done = true;
        } else if self.opened.elapsed() >= MAX_CONNECTION {
            self.done = true;
        }
    }
}

fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[utoipa::path(
    get, path = "/org/{org}/ws/{ws}/training/jobs/{id}/logs/stream", tag = "training",
    params(("org" = String, Path), ("ws" = String, Path), ("id" = String, Path), LogParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "resume after this log position")),
    responses(
        (status = 200, description = "the job's log entries as server-sent events, then its end",
            content_type = "text/event-stream"),
        (status = 404, body = dn_types::ErrorBody)
    )
)]
pub async fn stream_logs(
    State(app): State<AppState>,
    caller: Caller,
    Path((org, ws, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<LogParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    scope(&caller, &org, &ws)?;
    // Unknown jobs (and other organizations' jobs) answer 404 before any stream starts.
    app.store.get_job(&org, &ws, &id).await?;
    let cursor = Cursor {
        after: last_event_id(&headers).or(params.after).unwrap_or(0),
        app,
        org,
        ws,
        id,
        pending: VecDeque::new(),
        done: false,
        opened: Instant::now(),
    };
    let events = futures::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.pop_front() {
                return Some((Ok(event), cursor));
            }
            if cursor.done {
                return None;
            }
            cursor.fill().await;
            if cursor.pending.is_empty() && !cursor.done {
                tokio::time::sleep(POLL).await;
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
