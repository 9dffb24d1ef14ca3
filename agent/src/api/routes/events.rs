//! `GET /v1/events` — server-sent events of state changes, resumable.
//!
//! Each SSE message has `id: <seq>`, `event: <kind>` and the [`Event`] as JSON data. A client
//! that reconnects with `Last-Event-ID: N` (or `?after=N`) first gets every stored event after
//! `N`, then live ones, with no duplicates and no gaps. When events after `N` were already
//! pruned from the backlog, a `gap` message with `{"from", "to"}` says which are lost so the
//! client can resynchronise.
//!
//! A replay sends the backlog a page at a time, each page one chunk built from the stored JSON
//! text; pages are read by one replay at a time ([`crate::state::EventLog::replay_page`]), so
//! many clients replaying at once do not starve other requests.

use crate::api::error::{ApiError, ErrorBody};
use crate::ops::{OpError, Services};
use crate::state::Event;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
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

/// How many backlog events are read from the store at a time (and sent as one chunk).
const PAGE: usize = 256;

/// Silence after which a comment line keeps proxies from closing the stream.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

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
) -> Result<Response, ApiError> {
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
    let mut first = None;
    let after = match header_after.or(query.after) {
        Some(after) => {
            if let Some((low, _)) = services.events().bounds().await.map_err(OpError::from)? {
                // after ≤ MAX_SEQ, so after + 1 cannot overflow.
                if low > after + 1 {
                    first = Some(Ok(gap_message(after + 1, low - 1)));
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
        live,
        last: after,
        replay: true,
    };
    let body = stream::iter(first)
        .chain(stream::unfold(state, next_chunk))
        .take_until(services.shutdown().clone().cancelled_owned());
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

struct StreamState {
    services: Services,
    live: broadcast::Receiver<Event>,
    last: u64,
    /// Whether stored events may still be waiting (at start, or after the receiver lagged).
    replay: bool,
}

/// The next piece of the stream: a page of replayed events as one chunk, one live event, or a
/// keep-alive comment after [`KEEP_ALIVE`] of silence.
async fn next_chunk(mut s: StreamState) -> Option<(Result<Bytes, Infallible>, StreamState)> {
    loop {
        if s.replay {
            match s.services.events().replay_page(s.last, PAGE).await {
                Ok(page) if !page.is_empty() => {
                    let mut text = String::new();
                    for event in &page {
                        push_message(&mut text, Some(event.seq), &event.kind, &event.json);
                    }
                    s.last = page.last().map_or(s.last, |e| e.seq);
                    return Some((Ok(Bytes::from(text)), s));
                }
                Ok(_) => s.replay = false,
                Err(e) => {
                    tracing::warn!(error = %e, "event backlog unreadable; ending stream");
                    return None;
                }
            }
        }
        match tokio::time::timeout(KEEP_ALIVE, s.live.recv()).await {
            Err(_) => return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), s)),
            Ok(Ok(event)) if event.seq > s.last => {
                s.last = event.seq;
                let json = serde_json::to_string(&event).unwrap_or_default();
                let mut text = String::new();
                push_message(&mut text, Some(event.seq), &event.kind, &json);
                return Some((Ok(Bytes::from(text)), s));
            }
            Ok(Ok(_)) => {}
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => s.replay = true,
            Ok(Err(broadcast::error::RecvError::Closed)) => return None,
        }
    }
}

/// Appends one SSE message. `kind` and `data` are single lines (event kinds are the agent's
/// own words; the data is compact JSON).
fn push_message(out: &mut String, id: Option<u64>, kind: &str, data: &str) {
    use std::fmt::Write;
    if let Some(id) = id {
        let _ = writeln!(out, "id: {id}");
    }
    let _ = write!(out, "event: {kind}\ndata: {data}\n\n");
}

fn gap_message(from: u64, to: u64) -> Bytes {
    let mut text = String::new();
    push_message(
        &mut text,
        None,
        "gap",
        &serde_json::json!({ "from": from, "to": to }).to_string(),
    );
    Bytes::from(text)
}
