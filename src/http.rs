//! HTTP routes: the served page, health, static assets, and the origin gate for Socket.IO.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use minijinja::{Environment, context};
use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::layer::SocketIoLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::signaling::Registry;

const PAGE_TEMPLATE: &str = include_str!("../templates/broadcast.html");
/// Assets are revalidated hourly; `ServeDir` answers revalidation with 304 via Last-Modified.
const ASSET_CACHE: &str = "public, max-age=3600";

#[derive(Clone)]
struct AppState {
    page: Bytes,
    registry: Registry,
    io: SocketIo,
}

#[derive(Debug, thiserror::Error)]
#[error("could not render the page template: {0}")]
pub struct TemplateError(#[from] minijinja::Error);

/// Renders the page once: its inputs are fixed for the life of the process.
pub fn render_page(config: &Config) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.add_template("broadcast.html", PAGE_TEMPLATE)?;
    let ice_servers_json = serde_json::to_string(&config.ice_servers.0)
        .unwrap_or_else(|_| "[]".to_owned())
        // Keep the JSON inert inside <script type="application/json">.
        .replace("</", "<\\/");
    Ok(env.get_template("broadcast.html")?.render(context! {
        ice_servers_json,
        version => env!("CARGO_PKG_VERSION"),
        asset_version => asset_version(&config.assets_dir()),
    })?)
}

/// The files the page loads, whose contents name their cache-busting version.
const PAGE_ASSETS: [&str; 3] = ["app.js", "style.css", "vendor/socket.io.min.js"];

/// A short fingerprint of the page's assets for their URLs (`?v=`): the page itself is never
/// cached, so after a deploy that changes a script, browsers fetch the new one at once instead
/// of running an hour-old copy against the new page.
fn asset_version(dir: &Path) -> String {
    let mut hasher = DefaultHasher::new();
    for name in PAGE_ASSETS {
        // An unreadable file is reported by the static file service itself; it only weakens
        // the fingerprint here.
        std::fs::read(dir.join(name))
            .unwrap_or_default()
            .hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

/// The HTTP side of the app; `socketio` is the Socket.IO layer that serves `/socket.io/`.
pub fn router(
    config: &Config,
    page: String,
    registry: Registry,
    io: SocketIo,
    socketio: SocketIoLayer,
) -> Router {
    let state = AppState {
        page: Bytes::from(page),
        registry,
        io,
    };
    let assets = Router::new()
        .fallback_service(ServeDir::new(config.assets_dir()))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static(ASSET_CACHE),
        ));
    let origins = config.allowed_origins();
    Router::new()
        .route("/", get(page_handler))
        .route("/healthz", get(health))
        .nest("/assets", assets)
        .layer(CompressionLayer::new())
        .layer(socketio)
        .layer(middleware::map_request(detach_head))
        .layer(middleware::from_fn_with_state(
            origins.clone().map(Arc::new),
            origin_gate,
        ))
        .layer(cors(origins))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn cors(origins: Option<Vec<HeaderValue>>) -> CorsLayer {
    let allow = match origins {
        None => AllowOrigin::mirror_request(),
        Some(list) => AllowOrigin::list(list),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_credentials(true)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::OPTIONS,
        ])
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
}

/// CORS only stops a browser from *reading* a response; a cross-origin polling POST or a
/// WebSocket upgrade would still act. With an origin list configured, refuse them outright.
async fn origin_gate(
    State(allowed): State<Option<Arc<Vec<HeaderValue>>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(allowed) = allowed
        && is_socketio(request.uri())
        && let Some(origin) = request.headers().get(header::ORIGIN)
        && !allowed.contains(origin)
    {
        tracing::debug!(
            ?origin,
            "refused Socket.IO request from a disallowed origin"
        );
        return (StatusCode::FORBIDDEN, "Origin not allowed").into_response();
    }
    next.run(request).await
}

/// Where the Socket.IO layer answers (socketioxide's default path).
const SOCKETIO_PATH: &str = "/socket.io";

fn is_socketio(uri: &Uri) -> bool {
    uri.path().starts_with(SOCKETIO_PATH)
}

/// A Socket.IO request without a session id opens a session (polling handshake or direct
/// WebSocket); the layer keeps that one request for the socket's whole life, and no other.
fn opens_session(uri: &Uri) -> bool {
    is_socketio(uri)
        && !uri
            .query()
            .unwrap_or_default()
            .split('&')
            .any(|pair| pair.starts_with("sid="))
}

/// hyper parses a request's URI and header values as slices of the connection's read buffer
/// (8 KiB), and the Socket.IO layer keeps a session's opening request for the socket's whole
/// life: each idle connection would pin that buffer. A copy of the head (a few hundred bytes)
/// lets it go. Other requests (every polling round trip, assets) end with their response and
/// pass untouched.
async fn detach_head(request: Request) -> Request {
    if !opens_session(request.uri()) {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    for value in parts.headers.values_mut() {
        // Re-validating bytes that already form a valid value cannot fail; keep the original if
        // it somehow does.
        if let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    if let Some(uri) = owned_uri(&parts.uri) {
        parts.uri = uri;
    }
    // axum's router stored a clone of the URI too.
    if let Some(OriginalUri(original)) = parts.extensions.get::<OriginalUri>()
        && let Some(uri) = owned_uri(original)
    {
        parts.extensions.insert(OriginalUri(uri));
    }
    Request::from_parts(parts, body)
}

/// The same URI in storage of its own.
fn owned_uri(uri: &Uri) -> Option<Uri> {
    Uri::try_from(uri.to_string()).ok()
}

async fn page_handler(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Html(state.page),
    )
        .into_response()
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    channels: usize,
    sockets: usize,
    indexed_sockets: usize,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    let stats = state.registry.stats();
    Json(Health {
        status: "ok",
        channels: stats.channels,
        sockets: state.io.sockets().len(),
        indexed_sockets: stats.indexed_sockets,
    })
}

/// Whether the assets directory looks usable; checked at start-up for a clear message.
pub fn assets_present(dir: &Path) -> bool {
    dir.join("app.js").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_version_follows_the_assets_contents() {
        let dir = std::env::temp_dir().join(format!("asset-version-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("vendor")).expect("temp dir");
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write");
        write("app.js", "one");
        write("style.css", "body {}");
        write("vendor/socket.io.min.js", "io");
        let first = asset_version(&dir);
        assert_eq!(first, asset_version(&dir), "same files, same version");
        write("app.js", "two");
        let second = asset_version(&dir);
        std::fs::remove_dir_all(&dir).ok();
        assert_ne!(first, second, "a changed script gets a new URL");
    }

    /// A request as hyper hands it over: URI and header value point into `read_buffer`, which
    /// holds `uri`, a space, then the header value.
    fn request_in_buffer(read_buffer: &Bytes, uri_len: usize) -> Request {
        let uri = Uri::from_maybe_shared(read_buffer.slice(0..uri_len)).expect("valid uri");
        let key =
            HeaderValue::from_maybe_shared(read_buffer.slice(uri_len + 1..)).expect("valid value");
        let mut request = Request::builder()
            .uri(uri.clone())
            .header(header::SEC_WEBSOCKET_KEY, key)
            .body(axum::body::Body::empty())
            .expect("valid request");
        request.extensions_mut().insert(OriginalUri(uri));
        request
    }

    #[tokio::test]
    async fn only_requests_that_open_a_session_are_copied() {
        for uri in [
            "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA",
            "/assets/app.js",
        ] {
            let read_buffer = Bytes::from(format!("{uri} x"));
            let request = detach_head(request_in_buffer(&read_buffer, uri.len())).await;
            assert!(!read_buffer.is_unique(), "{uri} was copied needlessly");
            assert_eq!(request.uri(), uri);
        }
    }

    #[tokio::test]
    async fn detached_head_no_longer_shares_the_read_buffer() {
        let read_buffer =
            Bytes::from(b"/socket.io/?EIO=4&transport=websocket dGhlIHNhbXBsZSBub25jZQ==".to_vec());
        let request = request_in_buffer(&read_buffer, 37);
        assert!(!read_buffer.is_unique());

        let request = detach_head(request).await;

        assert!(
            read_buffer.is_unique(),
            "the request still points into the read buffer"
        );
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(
            request.headers()[header::SEC_WEBSOCKET_KEY],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let original = request.extensions().get::<OriginalUri>().expect("kept");
        assert_eq!(original.0, "/socket.io/?EIO=4&transport=websocket");
    }
}
