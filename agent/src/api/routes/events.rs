//! `GET /v1/events` — server-sent events of state changes, resumable.
//!
//! Each SSE message has `id: <seq>`, `event: <kind>` and the [`Event`] as JSON data. A client
//! that reconnects with `Last-Event-ID: N` (or `?after=N`) first gets every stored event after
//! `N`, then live ones, with no duplicates and no gaps. When events after `N` were already
//! pruned from the backlog, a `gap` message with `{"from", "to"}` says which are lost so the
//! client can resynchronise.

use crate::api::error::{ApiError, ErrorBody};
use crate::ops::{OpError, Services};
use crate::state::Event;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use tokio::sync::broadcast;
use utoipa::IntoParams;

/// Query parameters of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay stored events after this sequence number (same as `Last-Event-ID`).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<u64>,
}

/// The largest sequence number: SQLite row ids are signed 64-bit.
const MAX_SEQ: u64 = i64::MAX as u64;

/// A resume point as the client sent it, checked to be a sequence number.
fn resume_point(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_SEQ)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{what} must be a sequence number from 0 to {MAX_SEQ}, not {text:?}"
            ))
        })
}

/// How many backlog events are read from the store at a time.
const PAGE: usize = 500;

/// Streams state changes.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    security(("bearer" = [])),
    params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this sequence number",
            minimum = 0, maximum = 9_223_372_036_854_775_807_i64)),
    responses(
        (status = 200, description = "SSE stream; each data line is an Event", body = Event,
            content_type = "text/event-stream"),
        (status = 400, description = "Bad Last-Event-ID or query", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    ))]
pub async fn events(
    State(services): State<Services>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if let Some(after) = query.after {
        resume_point(&after.to_string(), "after")?;
    }
    let header_after = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(resume_point(
            v.to_str().unwrap_or("(not text)").trim(),
            "Last-Event-ID",
        )?),
    };
    // Subscribe before reading the backlog so nothing published in between is missed.
    let live = services.events().subscribe();
    let mut first = VecDeque::new();
    let after = match header_after.or(query.after) {
        Some(after) => {
            if let Some((low, _)) = services.events().bounds().await.map_err(OpError::from)? {
                // after ≤ MAX_SEQ, so after + 1 cannot overflow.
                if low > after + 1 {
                    first.push_back(gap_message(after + 1, low - 1));
                }
            }
            after
        }
        // Without a resume point, only new events are sent.
        None => services
            .events()
            .bounds()
            .await
            .map_err(OpError::from)?
            .map_or(0, |(_, high)| high),
    };
    let state = StreamState {
        services: services.clone(),
        pending: VecDeque::new(),
        live,
        last: after,
        replay: true,
    };
    let body = stream::iter(first)
        .chain(stream::unfold(state, next_message))
        .take_until(services.shutdown().clone().cancelled_owned());
    Ok(Sse::new(body).keep_alive(KeepAlive::default()))
}

struct StreamState {
    services: Services,
    pending: VecDeque<Event>,
    live: broadcast::Receiver<Event>,
    last: u64,
    /// Whether stored events may still be waiting (at start, or after the receiver lagged).
    replay: bool,
}

async fn next_message(mut s: StreamState) -> Option<(Result<SseEvent, Infallible>, StreamState)> {
    loop {
        if let Some(event) = s.pending.pop_front() {
            s.last = event.seq;
            return Some((Ok(sse_message(&event)), s));
        }
        if s.replay {
            match s.services.events().since(s.last, PAGE).await {
                Ok(batch) if !batch.is_empty() => {
                    s.pending.extend(batch);
                    continue;
                }
                Ok(_) => s.replay = false,
                Err(e) => {
                    tracing::warn!(error = %e, "event backlog unreadable; ending stream");
                    return None;
                }
            }
        }
        match s.live.recv().await {
            Ok(event) if event.seq > s.last => s.pending.push_back(event),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => s.replay = true,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

fn sse_message(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.seq.to_string())
        .event(event.kind.clone())
        .data(serde_json::to_string(event).unwrap_or_default())
}

fn gap_message(from: u64, to: u64) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default()
        .event("gap")
        .data(serde_json::json!({ "from": from, "to": to }).to_string()))
}
