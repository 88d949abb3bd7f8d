//! JSON over fetch to the relay's API. The session cookie is HttpOnly: the browser attaches it,
//! this code never sees it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestCredentials, RequestInit, Response};

/// An API failure as the relay reports it (`{"error": code, "message": ...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ApiError {
    fn network(e: JsValue) -> ApiError {
        ApiError {
            status: 0,
            code: "network".into(),
            message: format!("the relay is unreachable ({})", e.as_string().unwrap_or_default()),
        }
    }
}

/// A value for a URL query.
pub fn encode_component(v: &str) -> String {
    String::from(js_sys::encode_uri_component(v))
}

async fn send(method: &str, path: &str, body: Option<String>) -> Result<serde_json::Value, ApiError> {
    let init = RequestInit::new();
    init.set_method(method);
    init.set_credentials(RequestCredentials::SameOrigin);
    if let Some(body) = &body {
        init.set_body(&JsValue::from_str(body));
    }
    let request = Request::new_with_str_and_init(path, &init).map_err(ApiError::network)?;
    if body.is_some() {
        request.headers().set("content-type", "application/json").map_err(ApiError::network)?;
    }
    let window = web_sys::window().ok_or_else(|| ApiError::network(JsValue::from_str("no window")))?;
    let response: Response =
        JsFuture::from(window.fetch_with_request(&request)).await.map_err(ApiError::network)?.unchecked_into();
    let status = response.status();
    let text = JsFuture::from(response.text().map_err(ApiError::network)?)
        .await
        .map_err(ApiError::network)?
        .as_string()
        .unwrap_or_default();
    let value: serde_json::Value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    };
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(ApiError {
            status,
            code: value["error"].as_str().unwrap_or("error").to_owned(),
            message: value["message"].as_str().map_or_else(|| format!("request failed ({status})"), str::to_owned),
        })
    }
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    let value = send("GET", path, None).await?;
    serde_json::from_value(value).map_err(|e| ApiError { status: 0, code: "decode".into(), message: e.to_string() })
}

/// The bytes at `path` (an encrypted recording chunk); a refusal as the relay reports it.
pub async fn get_bytes(path: &str) -> Result<Vec<u8>, ApiError> {
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_credentials(RequestCredentials::SameOrigin);
    let request = Request::new_with_str_and_init(path, &init).map_err(ApiError::network)?;
    let window = web_sys::window().ok_or_else(|| ApiError::network(JsValue::from_str("no window")))?;
    let response: Response =
        JsFuture::from(window.fetch_with_request(&request)).await.map_err(ApiError::network)?.unchecked_into();
    let status = response.status();
    let body = JsFuture::from(response.array_buffer().map_err(ApiError::network)?).await.map_err(ApiError::network)?;
    if !(200..300).contains(&status) {
        return Err(ApiError { status, code: "error".into(), message: format!("request failed ({status})") });
    }
    Ok(js_sys::Uint8Array::new(&body).to_vec())
}

pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    let body = serde_json::to_string(body).map_err(|e| ApiError {
        status: 0,
        code: "encode".into(),
        message: e.to_string(),
    })?;
    let value = send("POST", path, Some(body)).await?;
    serde_json::from_value(value).map_err(|e| ApiError { status: 0, code: "decode".into(), message: e.to_string() })
}
