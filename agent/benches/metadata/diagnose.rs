//! Diagnostic servers (`HYPERLET_BENCH_DIAGNOSE=1`), each in the same namespace and runtime as
//! the agent, to split its cost:
//!
//! * the agent's own application through the axum router ([`hyperlet::metadata::router`],
//!   served by `axum::serve`) with the caller's MAC given instead of read from the neighbour
//!   table: the application behind a heavier HTTP stack than the real server's;
//! * axum + hyper answering the mirrored bodies from memory — the HTTP stack alone.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use hyperlet::metadata::{router, MetadataOptions, MetadataSource};
use hyperlet::net::netns;
use tokio::runtime::Runtime;

use super::{CLIENT_MAC, METADATA_IP, NETWORK, PATHS};

/// Binds `METADATA_IP:port` inside `ns` and serves `app` there on `runtime` (with the peer
/// address as connect info, as the agent's application needs) until the runtime ends.
fn serve_in(runtime: &Runtime, ns: &str, port: u16, app: Router) {
    let addr = SocketAddr::from((METADATA_IP, port));
    let listener = netns::run_in(ns, move || {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(listener)
    })
    .unwrap_or_else(|e| panic!("enter namespace {ns}: {e}"))
    .unwrap_or_else(|e| panic!("bind {addr} in namespace {ns}: {e}"));
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .expect("register the listener")
            .tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            eprintln!("diagnostic server on {addr} failed: {e}");
        }
    });
}

/// The agent's application, the caller's MAC given (no neighbour dump).
pub fn start_app_without_neighbours(
    runtime: &Runtime,
    ns: &str,
    port: u16,
    source: Arc<dyn MetadataSource>,
    options: MetadataOptions,
) {
    let app = router(NETWORK, source, options, Arc::new(|_| Some(CLIENT_MAC)));
    serve_in(runtime, ns, port, app);
}

/// axum + hyper answering the mirrored bodies (under `docs`) from memory.
pub fn start_static(runtime: &Runtime, ns: &str, port: u16, docs: &Path) {
    let bodies: HashMap<&'static str, (Bytes, &'static str)> = PATHS
        .iter()
        .map(|path| {
            let body = fs::read(docs.join(path.trim_start_matches('/'))).expect("mirrored body");
            let content_type = if path.ends_with(".json") {
                "application/json"
            } else if path.ends_with("user_data") {
                "text/plain"
            } else {
                "text/plain; charset=utf-8"
            };
            (*path, (Bytes::from(body), content_type))
        })
        .collect();
    let bodies = Arc::new(bodies);
    let app = Router::new().fallback(move |uri: Uri| {
        let bodies = bodies.clone();
        async move {
            match bodies.get(uri.path()) {
                Some((body, content_type)) => {
                    let mut response = body.clone().into_response();
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                    response
                }
                None => (StatusCode::NOT_FOUND, "Not found").into_response(),
            }
        }
    });
    serve_in(runtime, ns, port, app);
}
