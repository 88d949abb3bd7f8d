//! Errors as clients see them.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sightline_identity::IdentityError;

/// Errors as clients see them: a status, a stable code and a message for people. Internal
/// details (store failures) go to the log only.
pub struct ApiError(pub IdentityError);
impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        ApiError(e)
    }
}
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            IdentityError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            IdentityError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            IdentityError::StepUpRequired => (StatusCode::FORBIDDEN, "step_up_required"),
            IdentityError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            IdentityError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            IdentityError::Locked => (StatusCode::LOCKED, "locked"),
            IdentityError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            IdentityError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            IdentityError::Store(e) => {
                tracing::error!(error = %e, "request failed on the state store");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            IdentityError::AuditUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
        };
        let message = match &self.0 {
            IdentityError::Store(_) => "the relay cannot reach its state store; try again shortly".to_owned(),
            IdentityError::AuditUnavailable(_) => sightline_audit::AuditUnavailable::PUBLIC.to_owned(),
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": code, "message": message }))).into_response();
        if let IdentityError::Throttled { retry_after_s } = self.0
            && let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
pub type ApiResult<T> = Result<T, ApiError>;
