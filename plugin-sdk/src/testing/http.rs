//! A simulated `wasi:http` host for native unit tests: [`crate::http`] requests go to the
//! handler set with [`respond`] (per thread), and every request is recorded. Without a
//! handler a request is [`HttpError::Denied`](crate::http::HttpError::Denied), as for a
//! plugin without the `http` grant.
//!
//! ```
//! use hyperlet_plugin_sdk::http::{self, Response};
//! use hyperlet_plugin_sdk::testing::http as mock;
//!
//! mock::respond(|request| Ok(Response { status: 200, body: b"[\"maint-1\"]".to_vec(), ..Response::default() }));
//! assert_eq!(http::get("http://127.0.0.1:8080/maintenance").unwrap().body, b"[\"maint-1\"]");
//! assert_eq!(mock::take_requests()[0].url, "http://127.0.0.1:8080/maintenance");
//! mock::clear();
//! ```

use std::cell::RefCell;

use crate::http::{HttpError, Request, Response};

type Handler = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;

thread_local! {
    static HANDLER: RefCell<Option<Handler>> = const { RefCell::new(None) };
    static REQUESTS: RefCell<Vec<Request>> = const { RefCell::new(Vec::new()) };
}

/// Answers this thread's requests with `handler` from now on.
pub fn respond(handler: impl FnMut(&Request) -> Result<Response, HttpError> + 'static) {
    HANDLER.with(|h| *h.borrow_mut() = Some(Box::new(handler)));
}

/// Removes the handler (requests are denied again) and forgets the recorded requests.
pub fn clear() {
    HANDLER.with(|h| h.borrow_mut().take());
    REQUESTS.with(|r| r.borrow_mut().clear());
}

/// The requests made since the last call, oldest first.
pub fn take_requests() -> Vec<Request> {
    REQUESTS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// What the mock host answers `request` with.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn handle(request: &Request) -> Result<Response, HttpError> {
    REQUESTS.with(|r| r.borrow_mut().push(request.clone()));
    // The handler is taken out while it runs, so it may itself make requests (denied).
    let handler = HANDLER.with(|h| h.borrow_mut().take());
    let Some(mut handler) = handler else {
        return Err(HttpError::Denied);
    };
    let answer = handler(request);
    HANDLER.with(|h| {
        let mut slot = h.borrow_mut();
        if slot.is_none() {
            *slot = Some(handler);
        }
    });
    answer
}
