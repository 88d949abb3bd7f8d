//! Every HTTP request runs in a `request` span with an id of its own, which the answer carries
//! as `x-request-id`: a log line (in JSON, `spans`) and the response a person reports can be
//! put together (R46). A WebSocket's task runs in a span of its own (`sockets`).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header that names the request in the answer.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

pub async fn add(request: Request, next: Next) -> Response {
    let id = hex::encode(sightline_identity::random_bytes::<8>());
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
