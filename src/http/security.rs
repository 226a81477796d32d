//! Security headers: what the served page may load, and what every response tells browsers.
//!
//! The page is the only document this server serves, so the Content-Security-Policy lives on
//! it alone: it allows exactly what the page uses (its own scripts and stylesheet, its
//! Socket.IO connection and `/ice-servers` on its own origin, camera and remote streams in
//! `<video>`, the inline `data:` favicon) and nothing else, so an injected script or a
//! hostile chat line that slipped past escaping could neither run nor send anything out.
//! `frame-ancestors 'none'` keeps the page out of other sites' frames (click-jacking a "Go
//! live" button would share someone's camera).
//!
//! The embeds (`/embed/<id>`, `/embed/<id>/chat`) are the same page showing only the player or
//! the chat, with no "Go live" to click: they carry the same policy except that
//! `frame-ancestors` names the server's own origin and the `--embed-origins` sites. They send
//! no `X-Frame-Options`: it cannot list origins (`ALLOW-FROM` is dead), and `DENY` would
//! override the list in browsers that honour both.

use axum::http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::config::EmbedOrigin;

/// Every directive of the page's policy but `frame-ancestors`, which the page and the embeds
/// set apart (a macro so that the page's policy stays a constant).
macro_rules! policy_but_ancestors {
    () => {
        "default-src 'none'; \
         script-src 'self'; \
         style-src 'self'; \
         img-src 'self' data:; \
         media-src 'self' blob: mediastream:; \
         connect-src 'self'; \
         manifest-src 'self'; \
         base-uri 'none'; \
         form-action 'self'; "
    };
}

/// The page's policy. `connect-src 'self'` covers `ws:`/`wss:` to the same host in CSP Level 3
/// browsers; WebRTC's own connections (STUN, TURN, peers) are not governed by CSP.
pub const CONTENT_SECURITY_POLICY: &str =
    concat!(policy_but_ancestors!(), "frame-ancestors 'none'");

/// The embeds' policy: the page's, framable by the server's own origin and `origins`.
pub fn embed_policy(origins: &[EmbedOrigin]) -> HeaderValue {
    let mut policy = String::from(concat!(policy_but_ancestors!(), "frame-ancestors 'self'"));
    for origin in origins {
        policy.push(' ');
        policy.push_str(origin.as_str());
    }
    // Validated origins hold only characters a header value may carry.
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(concat!(
        policy_but_ancestors!(),
        "frame-ancestors 'self'"
    )))
}

/// An embed's own headers: its policy (from [`embed_policy`]), and camera, microphone and screen
/// for nobody (an embed only watches and chats).
pub fn embed_headers(policy: HeaderValue) -> [(HeaderName, HeaderValue); 2] {
    [
        (header::CONTENT_SECURITY_POLICY, policy),
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), display-capture=()"),
        ),
    ]
}

/// The page's own headers (besides its cache policy): the policy above, and the older
/// `X-Frame-Options` for browsers that predate `frame-ancestors`.
pub fn page_headers() -> [(HeaderName, HeaderValue); 4] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // The page opens no pop-ups; another site's window keeps no handle on it.
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        // Camera, microphone and screen for the page itself only, never for a frame in it.
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(self), microphone=(self), display-capture=(self)"),
        ),
    ]
}

/// Headers on every response: no content-type sniffing (a chat line or a channel id echoed
/// in JSON is never run as a script), and no full URL (which may carry a channel id) in the
/// `Referer` sent to other origins. A handler's own value wins.
pub fn every_response() -> (
    SetResponseHeaderLayer<HeaderValue>,
    SetResponseHeaderLayer<HeaderValue>,
) {
    (
        SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    )
}
