//! Browser hardening on every response: a strict Content-Security-Policy the viewer (Leptos on
//! wasm32) runs under, no framing, no MIME sniffing, no referrer, no powerful features, HSTS when
//! the relay serves TLS, and `no-store` on everything that is not a static file.
//!
//! The policy: `script-src 'self' 'wasm-unsafe-eval'`, no inline script or style, `connect-src`
//! the relay itself (its WebSocket origin named too), `frame-ancestors`, `object-src` and
//! `base-uri` `'none'`, and a Permissions-Policy switching off every feature the viewer does not
//! use. The viewer's entry point is `static/main.js`, not an inline script. Every end-to-end test
//! fails on a CSP violation Chromium reports (the harness's `contextGuard` fixture), so a change
//! that needs a looser policy shows at once.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The headers for one relay, computed once from its public URL and whether it serves TLS.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    csp: HeaderValue,
    hsts: bool,
}

/// Features the viewer does not use; `()` turns each off for the page and anything it embeds.
const PERMISSIONS: &str = "camera=(), microphone=(), geolocation=(), usb=(), serial=(), hid=(), bluetooth=(), \
                           payment=(), midi=(), display-capture=(), accelerometer=(), gyroscope=(), magnetometer=()";

impl SecurityHeaders {
    pub fn new(public_url: &url::Url, tls: bool) -> SecurityHeaders {
        SecurityHeaders { csp: HeaderValue::from_str(&csp(public_url)).expect("ASCII policy"), hsts: tls }
    }

    fn apply(&self, headers: &mut HeaderMap, static_file: bool) {
        let mut set = |name: HeaderName, value: HeaderValue| {
            headers.insert(name, value);
        };
        set(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        set(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        set(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        set(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        set(HeaderName::from_static("permissions-policy"), HeaderValue::from_static(PERMISSIONS));
        set(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
        if self.hsts {
            set(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
        }
        if !static_file {
            set(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
}

/// `connect-src` names the relay's own WebSocket origin as well as `'self'`, so the policy does
/// not depend on how a browser reads `'self'` for `ws:` and `wss:`.
fn csp(public_url: &url::Url) -> String {
    let ws_scheme = if public_url.scheme() == "https" { "wss" } else { "ws" };
    let host = public_url.host_str().unwrap_or("localhost");
    let ws = match public_url.port() {
        Some(port) => format!("{ws_scheme}://{host}:{port}"),
        None => format!("{ws_scheme}://{host}"),
    };
    [
        "default-src 'none'".to_owned(),
        "script-src 'self' 'wasm-unsafe-eval'".to_owned(),
        "style-src 'self'".to_owned(),
        "img-src 'self' data:".to_owned(),
        // Recordings play from a blob the player fetched; live video comes as a MediaStream.
        "media-src 'self' blob:".to_owned(),
        format!("connect-src 'self' {ws}"),
        "object-src 'none'".to_owned(),
        "base-uri 'none'".to_owned(),
        "form-action 'self'".to_owned(),
        "frame-ancestors 'none'".to_owned(),
    ]
    .join("; ")
}

/// Middleware: the headers on every answer (static files keep their caching).
pub async fn add(
    axum::extract::State(headers): axum::extract::State<std::sync::Arc<SecurityHeaders>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let static_file =
        !(path.starts_with("/api/") || path == "/healthz" || path == "/readyz" || path.starts_with("/ws/"));
    let mut response = next.run(request).await;
    headers.apply(response.headers_mut(), static_file);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_what_the_viewer_needs() {
        let csp = csp(&"https://relay.example.org/".parse().unwrap());
        let directives: Vec<&str> = csp.split("; ").collect();
        for d in [
            "default-src 'none'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "style-src 'self'",
            "connect-src 'self' wss://relay.example.org",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(directives.contains(&d), "{d} missing from {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("'unsafe-eval'"), "{csp}");
        assert!(
            super::csp(&"http://localhost:8080/".parse().unwrap()).contains("connect-src 'self' ws://localhost:8080")
        );
    }

    #[test]
    fn hsts_only_with_tls_and_no_store_only_off_static_files() {
        let url: url::Url = "http://localhost:1/".parse().unwrap();
        let mut plain = HeaderMap::new();
        SecurityHeaders::new(&url, false).apply(&mut plain, true);
        assert!(plain.get(header::STRICT_TRANSPORT_SECURITY).is_none());
        assert!(plain.get(header::CACHE_CONTROL).is_none());
        let mut api = HeaderMap::new();
        SecurityHeaders::new(&url, true).apply(&mut api, false);
        assert_eq!(api[header::STRICT_TRANSPORT_SECURITY], "max-age=31536000");
        assert_eq!(api[header::CACHE_CONTROL], "no-store");
        assert_eq!(api[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
