//! Who may call what: the bearer token, the session cookie, and the header
//! that keeps other origins from forging state-changing requests.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::{error, Shared};
use super::{REQUEST_HEADER, SESSION_COOKIE};

/// Routes anyone may read: the page itself (it holds no data) and the probes.
const OPEN: [&str; 3] = ["/", "/healthz", "/readyz"];

/// Checks every request before its handler; also starts the sampler when the
/// router was built outside a runtime.
pub(super) async fn guard(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    shared.start_sampler();
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    let open = safe && OPEN.contains(&req.uri().path());
    // The token first: without it, every refusal is the same 401.
    if !open && !shared.authorized(req.headers()) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (or session cookie)",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if !safe && !has_request_header(req.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            format!("a {} needs the header `X-Monconn-Request: 1`", req.method()),
        );
    }
    next.run(req).await
}

fn has_request_header(headers: &HeaderMap) -> bool {
    headers
        .get(REQUEST_HEADER)
        .is_some_and(|v| !v.as_bytes().is_empty())
}

/// `POST /session`: the bearer token (checked by [`guard`]) buys a cookie.
pub(super) async fn open_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    if shared.token.is_none() {
        return StatusCode::NO_CONTENT.into_response();
    }
    if !shared.bearer_ok(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "a session needs `Authorization: Bearer TOKEN`",
        );
    }
    let cookie = format!(
        "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        shared.session
    );
    match HeaderValue::from_str(&cookie) {
        Ok(value) => (StatusCode::NO_CONTENT, [(SET_COOKIE, value)]).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "bad session cookie"),
    }
}

/// `DELETE /session`: forgets the cookie in this browser.
pub(super) async fn close_session() -> Response {
    let cookie = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    match HeaderValue::from_str(&cookie) {
        Ok(value) => (StatusCode::NO_CONTENT, [(SET_COOKIE, value)]).into_response(),
        Err(_) => StatusCode::NO_CONTENT.into_response(),
    }
}

// === impl Shared ===

impl Shared {
    /// No token, the right bearer token, or the session cookie.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        self.token.is_none() || self.bearer_ok(headers) || self.cookie_ok(headers)
    }

    /// `Authorization: Bearer <token>`: the scheme in any case (RFC 9110
    /// §11.1), one or more spaces after it, the token compared exactly.
    fn bearer_ok(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split_once(' '))
            .any(|(scheme, given)| {
                scheme.eq_ignore_ascii_case("Bearer")
                    && same_secret(given.trim_start_matches(' ').as_bytes(), token.as_bytes())
            })
    }

    fn cookie_ok(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| {
                name == SESSION_COOKIE && same_secret(value.as_bytes(), self.session.as_bytes())
            })
    }
}

/// `given == secret`, in a time that depends on `given`'s length alone:
/// neither on where the two differ nor on the secret's length. An empty
/// secret matches nothing.
pub(super) fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    let mut diff = u8::from(given.len() != secret.len());
    for (i, &g) in given.iter().enumerate() {
        diff |= g ^ secret[i % secret.len()];
    }
    // Keeps the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

/// A fresh session secret: 32 random bytes, hex. Should the system's
/// generator fail, a hash of the clock and a random SipHash key stands in.
pub(super) fn new_session() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"abcabc", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
        assert!(!same_secret(b"", b""));
    }

    #[test]
    fn sessions_are_random_hex() {
        let (a, b) = (new_session(), new_session());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
