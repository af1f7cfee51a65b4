//! The supervisor dashboard: one page and a small JSON + Server-Sent Events API on its own HTTP
//! port (`server.web_listen`), over the same domain as the gRPC services.
//!
//! ```text
//!  GET  /                        the page (HTML, JS and CSS embedded in the binary, no CDN)
//!  GET  /agent/{id}              the agent view: one agent's guidance (hand-off briefs ...)
//!  POST /api/session             {token} -> HttpOnly cookie; DELETE signs out
//!  GET  /api/status              who am I, model version, health
//!  GET  /api/alerts              history (newest first) and the log's last sequence
//!  GET  /api/alerts/stream       SSE: one `alert` event per log event, `id:` = its sequence
//!  POST /api/alerts/{id}/ack     acknowledge (records the token's name)
//!  GET  /api/conversations       live conversations ranked by risk, with trajectories
//!  GET  /api/conversations/{id}  turns and scores (text as `alerts.redaction` allows)
//!  GET  /api/heatmap             queue x 5-minute buckets of mean customer valence
//!  GET  /api/assist/history      ?agent_id= one agent's guidance, newest first
//!  GET  /api/assist/stream       ?agent_id= SSE of the same, resumable like the alert feed
//!  GET  /api/conversations/{id}/brief  the hand-off brief as the conversation stands
//!  GET  /customers               the silent customers page (call-back list)
//!  GET  /api/customers/silent    ?tenant=&in_days=&limit=&offset=&format=csv the silent list
//!  GET  /api/customers/{key}     one customer's counts and newest contacts
//!  POST /api/customers/{key}/called  record a call-back (the token's name with auth on)
//!  GET  /report                  the QA report page
//!  GET  /api/report              ?tenant=&queue=&agent_id=&days=7&format=csv the QA report
//! ```
//!
//! Why SSE: the feed is one-way, SSE is plain HTTP/1.1 (through any proxy that passes a long
//! response), and the browser's EventSource reconnects by itself sending `Last-Event-ID`, which
//! is the alert log's sequence: the server replays from the log exactly what was missed, the same
//! path as gRPC `SubscribeAlerts(after_sequence)`. EventSource cannot send headers, so the page
//! signs in once and the token travels in an HttpOnly, SameSite=Strict cookie; API clients may
//! send `Authorization: Bearer` instead. Same tokens and roles as gRPC (supervisor or admin).

mod api;
mod customers;
mod feed;
mod report;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::auth::{Identity, Role};
use crate::grpc::App;

/// The cookie holding the signed-in token.
const COOKIE: &str = "emotion_token";

/// What every handler gets.
#[derive(Clone)]
struct Web {
    app: Arc<App>,
    /// Becomes true at shutdown: open SSE streams end so the server can drain.
    stopping: watch::Receiver<bool>,
}

/// Serves the dashboard on `listener` until `stopping` turns true.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let web = Web {
        app,
        stopping: stopping.clone(),
    };
    let router = Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", PAGE)))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route("/app.css", get(|| asset("text/css; charset=utf-8", STYLE)))
        .route(
            "/agent/{id}",
            get(|| asset("text/html; charset=utf-8", AGENT_PAGE)),
        )
        .route(
            "/common.js",
            get(|| asset("text/javascript; charset=utf-8", COMMON_SCRIPT)),
        )
        .route(
            "/agent.js",
            get(|| asset("text/javascript; charset=utf-8", AGENT_SCRIPT)),
        )
        .route(
            "/customers",
            get(|| asset("text/html; charset=utf-8", CUSTOMERS_PAGE)),
        )
        .route(
            "/customers.js",
            get(|| asset("text/javascript; charset=utf-8", CUSTOMERS_SCRIPT)),
        )
        .route(
            "/report",
            get(|| asset("text/html; charset=utf-8", REPORT_PAGE)),
        )
        .route(
            "/report.js",
            get(|| asset("text/javascript; charset=utf-8", REPORT_SCRIPT)),
        )
        .route("/api/report", get(report::report))
        .route("/api/customers/silent", get(customers::silent))
        .route("/api/customers/{key}", get(customers::customer))
        .route("/api/customers/{key}/called", post(customers::called))
        .route("/api/assist/history", get(api::assist_history))
        .route("/api/assist/stream", get(feed::assist_stream))
        .route("/api/conversations/{id}/brief", get(api::brief))
        .route("/api/session", post(api::sign_in).delete(api::sign_out))
        .route("/api/status", get(api::status))
        .route("/api/alerts", get(api::alerts))
        .route("/api/alerts/stream", get(feed::stream))
        .route("/api/alerts/{id}/ack", post(api::acknowledge))
        .route("/api/conversations", get(api::conversations))
        .route("/api/conversations/{id}", get(api::conversation))
        .route("/api/heatmap", get(api::heatmap))
        .layer(axum::middleware::from_fn(check_request))
        .with_state(web);
    let mut stopping = stopping;
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|s| *s).await;
        })
        .await
}

const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses a request whose path or query, percent-decoded, is not UTF-8 (400 naming which): the
/// extractors would otherwise decode it lossily, and a filter with U+FFFD silently matches nothing.
/// Also refuses headers over [`MAX_HEADER_BYTES`] in all (431): nothing the dashboard needs is
/// that large, and every handler would otherwise carry them.
async fn check_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return WebError(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    let uri = request.uri();
    let parts = [("path", Some(uri.path())), ("query", uri.query())];
    for (part, value) in parts {
        let Some(value) = value else { continue };
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(value).collect();
        if let Err(e) = std::str::from_utf8(&decoded) {
            return WebError::bad_request(format!(
                "the request {part} is not UTF-8 once percent-decoded (invalid byte at offset {})",
                e.valid_up_to()
            ))
            .into_response();
        }
    }
    next.run(request).await
}

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
const COMMON_SCRIPT: &str = include_str!("assets/common.js");
const AGENT_PAGE: &str = include_str!("assets/agent.html");
const AGENT_SCRIPT: &str = include_str!("assets/agent.js");
const CUSTOMERS_PAGE: &str = include_str!("assets/customers.html");
const CUSTOMERS_SCRIPT: &str = include_str!("assets/customers.js");
const REPORT_PAGE: &str = include_str!("assets/report.html");
const REPORT_SCRIPT: &str = include_str!("assets/report.js");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// An API error: an HTTP status and a message naming what was wrong, as `{"error": ...}`.
#[derive(Debug)]
struct WebError(StatusCode, String);

impl WebError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.1 }));
        (self.0, body).into_response()
    }
}

impl From<tonic::Status> for WebError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let status = match s.code() {
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, s.message().to_string())
    }
}

impl From<crate::error::RequestError> for WebError {
    fn from(e: crate::error::RequestError) -> Self {
        tonic::Status::from(e).into()
    }
}

/// The token of a request: `Authorization: Bearer`, else the sign-in cookie.
fn bearer(headers: &HeaderMap) -> Option<String> {
    if let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(h.to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| format!("Bearer {v}"))
}

impl Web {
    /// The caller, if authenticated (or auth is off) and in one of `roles` (admin always is).
    fn identity(&self, headers: &HeaderMap, roles: &[Role]) -> Result<Arc<Identity>, WebError> {
        let id = self.app.auth.authenticate(bearer(headers).as_deref())?;
        if id.role == Role::Admin || roles.contains(&id.role) {
            return Ok(id);
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(WebError(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has role {}; this page needs {} or admin",
                id.name,
                id.role.as_str(),
                wanted.join(" or ")
            ),
        ))
    }

    /// Runs blocking work (SQLite) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&App) -> T + Send + 'static,
    ) -> Result<T, WebError> {
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || work(&app))
            .await
            .map_err(|e| WebError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}
