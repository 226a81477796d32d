//! HTTP routes: the served page, health, ICE servers (with TURN credentials), static assets,
//! and the origin gate for Socket.IO.

mod health;
mod security;
pub mod turn;

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use hyper::upgrade::OnUpgrade;
use minijinja::{Environment, context};
use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::layer::SocketIoLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::channels::Registry;
use crate::client_addr::SessionsPerAddr;
use crate::cluster::{Health as ClusterHealth, NodeId};
use crate::config::Config;
use crate::connection::PublicIds;

const PAGE_TEMPLATE: &str = include_str!("../templates/broadcast.html");

/// How long browsers keep `/assets/` files. The page (never cached) loads each file by a URL
/// carrying the `?v=` fingerprint of every page asset, so after a deploy it names new URLs and
/// an hour's freshness never runs old files against a new page.
///
/// Our ES modules are the exception: they import each other by plain relative URLs
/// (`./ui.js`), which cannot carry the fingerprint without a build step, so an hour-old
/// `ui.js` could meet a new `main.js`. They are `no-cache` instead: kept, but revalidated on
/// every load, which costs a 304 without a body per module (ETag for the built-in files,
/// Last-Modified for `--assets-dir`).
const ASSET_CACHE: &str = "public, max-age=3600";
const MODULE_CACHE: &str = "no-cache";

/// The page's static files, built into the binary from `assets/` so the binary is all a
/// deployment needs. (A debug build reads them from the source tree at run time instead.)
#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
struct EmbeddedAssets;

/// Where `/assets/` is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetSource {
    /// The files built into the binary (the default).
    Embedded,
    /// A directory on disk (`--assets-dir`): for development, edits show on reload.
    Dir(PathBuf),
}

impl AssetSource {
    pub fn from_config(config: &Config) -> Self {
        config
            .assets_dir()
            .map_or(Self::Embedded, |dir| Self::Dir(dir.to_path_buf()))
    }

    /// One file's contents; `None` if it is missing or unreadable.
    fn read(&self, name: &str) -> Option<Cow<'static, [u8]>> {
        match self {
            Self::Embedded => EmbeddedAssets::get(name).map(|file| file.data),
            Self::Dir(dir) => std::fs::read(dir.join(name)).ok().map(Cow::Owned),
        }
    }
}

#[derive(Clone)]
struct AppState {
    page: Bytes,
    embed_player: Bytes,
    embed_chat: Bytes,
    /// The embeds' Content-Security-Policy (`frame-ancestors` from `--embed-origins`).
    embed_policy: HeaderValue,
    registry: Registry,
    sessions: Arc<SessionsPerAddr>,
    /// One entry per connected socket of this node.
    public_ids: PublicIds,
    cluster: Option<ClusterStatus>,
    /// What `/ice-servers` answers with (TURN credentials are minted per request).
    ice_servers: Arc<turn::IceServers>,
}

/// What `/healthz` reports of a node in cluster mode.
#[derive(Clone)]
pub struct ClusterStatus {
    pub node: NodeId,
    pub health: Arc<ClusterHealth>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not render the page template: {0}")]
pub struct TemplateError(#[from] minijinja::Error);

/// The documents this server serves, rendered once: their inputs are fixed for the life of the
/// process.
pub struct Pages {
    /// `/`: broadcaster, viewer and landing modes.
    pub main: String,
    /// `/embed/<channel_id>`: the viewer's player alone.
    pub embed_player: String,
    /// `/embed/<channel_id>/chat`: the viewer's chat alone.
    pub embed_chat: String,
}

/// What an embed shows of the viewer page (`data-embed` on its body, `embed` in its config).
#[derive(Clone, Copy)]
enum Embed {
    Player,
    Chat,
}

impl Embed {
    fn name(self) -> &'static str {
        match self {
            Self::Player => "player",
            Self::Chat => "chat",
        }
    }
}

pub fn render_pages(config: &Config) -> Result<Pages, TemplateError> {
    Ok(Pages {
        main: render_page(config, None)?,
        embed_player: render_page(config, Some(Embed::Player))?,
        embed_chat: render_page(config, Some(Embed::Chat))?,
    })
}

/// One document: the embeds are the same page (same modules, same viewer logic: relay tree,
/// resume, chat), told by `embed` which part to show, so they never drift from it.
fn render_page(config: &Config, embed: Option<Embed>) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.add_template("broadcast.html", PAGE_TEMPLATE)?;
    /// What the page's scripts need from the server's configuration (read by state.js).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct PageConfig<'a> {
        ice_servers: &'a serde_json::Value,
        /// The socket.io-client `transports` option.
        transports: &'static [&'static str],
        /// `player` or `chat` in an embed (the channel id is in its path); absent on `/`.
        #[serde(skip_serializing_if = "Option::is_none")]
        embed: Option<&'static str>,
    }
    let embed = embed.map(Embed::name);
    let page_config = PageConfig {
        ice_servers: &config.ice_servers.0,
        transports: config.transports.client_names(),
        embed,
    };
    let page_config_json = serde_json::to_string(&page_config)
        .unwrap_or_else(|_| "{}".to_owned())
        // Keep the JSON inert inside <script type="application/json">.
        .replace("</", "<\\/");
    Ok(env.get_template("broadcast.html")?.render(context! {
        page_config_json,
        embed,
        version => env!("CARGO_PKG_VERSION"),
        asset_version => asset_version(&AssetSource::from_config(config)),
        preloaded_modules => PAGE_ASSETS
            .into_iter()
            .filter(|name| is_own_module(name) && *name != ENTRY_MODULE)
            .collect::<Vec<_>>(),
    })?)
}

/// The module the page loads; it imports the others.
const ENTRY_MODULE: &str = "main.js";

/// Every file the page loads, directly or by import; their contents make the `?v=` version.
/// A new module belongs here (a test checks that no script in `assets/` is left out).
const PAGE_ASSETS: [&str; 17] = [
    ENTRY_MODULE,
    "state.js",
    "ui.js",
    "signaling.js",
    "ice.js",
    "peers.js",
    "chat.js",
    "broadcaster.js",
    "moderation.js",
    "screen.js",
    "recording.js",
    "viewer.js",
    "relay.js",
    "delay.js",
    "picker.js",
    "style.css",
    "vendor/socket.io.min.js",
];

/// A short fingerprint of the page's assets for their URLs (`?v=`): the page itself is never
/// cached, so after a deploy that changes a file, browsers fetch the new one at once instead
/// of running an hour-old copy against the new page.
fn asset_version(source: &AssetSource) -> String {
    let mut hasher = DefaultHasher::new();
    for name in PAGE_ASSETS {
        // A missing file is reported by the static file service itself; it only weakens the
        // fingerprint here.
        source.read(name).unwrap_or_default().hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

/// Our ES modules (`name` relative to `/assets/`), as opposed to the stylesheet and the
/// vendored classic script.
fn is_own_module(name: &str) -> bool {
    name.ends_with(".js") && !name.starts_with("vendor/")
}

/// `/assets/`: the built-in files or a directory, with the cache policy of [`ASSET_CACHE`].
fn assets_router<S: Clone + Send + Sync + 'static>(source: AssetSource) -> Router<S> {
    let files = match source {
        AssetSource::Embedded => Router::new().route("/{*path}", get(embedded_asset)),
        AssetSource::Dir(dir) => Router::new().fallback_service(ServeDir::new(dir)),
    };
    files.layer(middleware::from_fn(asset_cache_control))
}

async fn asset_cache_control(request: Request, next: Next) -> Response {
    // Nested under `/assets`, the path arrives without that prefix.
    let policy = if is_own_module(request.uri().path().trim_start_matches('/')) {
        MODULE_CACHE
    } else {
        ASSET_CACHE
    };
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static(policy));
    response
}

/// A built-in file, with its content type and an ETag (its SHA-256), answering a revalidation
/// that names that ETag with 304 as `ServeDir` does for files on disk (there by Last-Modified).
async fn embedded_asset(UrlPath(path): UrlPath<String>, headers: HeaderMap) -> Response {
    let Some(file) = EmbeddedAssets::get(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = entity_tag(&file.metadata.sha256_hash());
    let mut response = if matches_etag(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let content_type = HeaderValue::from_str(file.metadata.mimetype())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        (
            [(header::CONTENT_TYPE, content_type)],
            Body::from(file.data),
        )
            .into_response()
    };
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A weak ETag from the file's hash: weak because the compression layer may send the same
/// file in different encodings, which a strong tag would have to tell apart.
fn entity_tag(sha256: &[u8; 32]) -> String {
    let hex: String = sha256[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2).
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == opaque(etag))
}

/// The HTTP side of the app; `socketio` is the Socket.IO layer that serves `/socket.io/`.
/// The shared parts the HTTP side reads.
pub struct Shared {
    pub registry: Registry,
    pub sessions: Arc<SessionsPerAddr>,
    pub public_ids: PublicIds,
    pub cluster: Option<ClusterStatus>,
    pub sockets: crate::metrics::Sockets,
}

pub fn router<A: Adapter>(
    config: &Config,
    pages: Pages,
    shared: Shared,
    socketio: SocketIoLayer<A>,
) -> Router {
    let ice = turn::IceServers::from_config(config);
    if !ice.turn_urls().is_empty() {
        tracing::info!(
            urls = ?ice.turn_urls(),
            ttl_secs = ice.ttl().as_secs(),
            "TURN: /ice-servers mints time-limited credentials"
        );
    }
    let metrics = crate::metrics::router(
        config.metrics_token.as_ref(),
        shared.registry.clone(),
        shared.sockets,
    );
    let state = AppState {
        page: Bytes::from(pages.main),
        embed_player: Bytes::from(pages.embed_player),
        embed_chat: Bytes::from(pages.embed_chat),
        embed_policy: security::embed_policy(&config.embed_origins),
        registry: shared.registry,
        sessions: shared.sessions,
        public_ids: shared.public_ids,
        cluster: shared.cluster,
        ice_servers: Arc::new(ice),
    };
    let assets = assets_router(AssetSource::from_config(config));
    let origins = config.allowed_origins();
    Router::new()
        .route("/", get(page_handler))
        .route("/embed/{channel_id}", get(embed_player))
        .route("/embed/{channel_id}/chat", get(embed_chat))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        // The same answers where a platform keeps paths ending in `z` for itself (Cloud Run's
        // front end answers some of them without asking the container).
        .route("/live", get(health::livez))
        .route("/ready", get(health::readyz))
        .route("/healthz", get(health::healthz))
        .route("/ice-servers", get(ice_servers))
        .merge(metrics)
        .nest("/assets", assets)
        .layer(CompressionLayer::new())
        .layer(socketio)
        .layer(middleware::map_request(detach_head))
        .layer(middleware::from_fn_with_state(
            origins.clone().map(Arc::new),
            origin_gate,
        ))
        .layer(cors(origins))
        .layer(security::every_response())
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

/// The headers of a session's opening request that anything reads once it is open: the
/// WebSocket key (engineioxide answers the upgrade with it) and `X-Forwarded-For` (the client's
/// address for per-address limits, read when the socket connects). The others (a browser sends
/// a kilobyte or more: user agent, cookies, languages) would be kept for the socket's life and
/// never read; the origin gate and CORS have read theirs before this point.
const KEPT_HEADERS: [HeaderName; 2] = [
    header::SEC_WEBSOCKET_KEY,
    HeaderName::from_static("x-forwarded-for"),
];

/// hyper parses a request's URI and header values as slices of the connection's read buffer
/// (8 KiB), and the Socket.IO layer keeps a session's opening request for the socket's whole
/// life: each idle connection would pin that buffer. A copy of the head (the URI and the
/// [`KEPT_HEADERS`], under a hundred bytes) lets it go. Of the request's extensions it keeps
/// only those read later (see [`kept_extensions`]). Other requests (every polling round trip,
/// assets) end with their response and pass untouched.
async fn detach_head(request: Request) -> Request {
    if !opens_session(request.uri()) {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let kept = KEPT_HEADERS
        .iter()
        .map(|name| parts.headers.get_all(name).iter().count())
        .sum();
    let mut headers = HeaderMap::with_capacity(kept);
    for name in &KEPT_HEADERS {
        for value in parts.headers.get_all(name) {
            // Re-validating bytes that already form a valid value cannot fail; keep the
            // original if it somehow does.
            let copy = match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(mut copy) => {
                    copy.set_sensitive(value.is_sensitive());
                    copy
                }
                Err(_) => value.clone(),
            };
            headers.append(name.clone(), copy);
        }
    }
    parts.headers = headers;
    if let Some(uri) = owned_uri(&parts.uri) {
        parts.uri = uri;
    }
    parts.extensions = kept_extensions(parts.extensions);
    Request::from_parts(parts, body)
}

/// The extensions of a socket's opening request that anything reads once it is open: hyper's
/// upgrade handle (engineioxide upgrades a WebSocket with it) and the peer's address (the
/// client's address, read when the socket connects), in a map of their own. The rest are never
/// read here, yet would be kept for the socket's life: axum-server's handle to close the HTTP
/// connection (it holds that connection's watch channel, about 350 bytes, long after an
/// upgrade has ended the HTTP connection), axum's path parameters and copy of the URI, and the
/// map itself, grown by those inserts to twice the table two entries need.
fn kept_extensions(mut all: Extensions) -> Extensions {
    let mut kept = Extensions::new();
    if let Some(upgrade) = all.remove::<OnUpgrade>() {
        kept.insert(upgrade);
    }
    if let Some(peer) = all.remove::<ConnectInfo<SocketAddr>>() {
        kept.insert(peer);
    }
    kept
}

/// The same URI in storage of its own.
fn owned_uri(uri: &Uri) -> Option<Uri> {
    Uri::try_from(uri.to_string()).ok()
}

async fn page_handler(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        security::page_headers(),
        Html(state.page),
    )
        .into_response()
}

/// `GET /embed/<channel_id>`: the player alone, for a frame on a site of `--embed-origins`.
/// The page reads the channel id from its own path; the server has nothing to check before the
/// page's `join_as_viewer` (an unknown channel is the join's answer, shown in the player).
async fn embed_player(State(state): State<AppState>) -> Response {
    embed_response(state.embed_player, state.embed_policy)
}

/// `GET /embed/<channel_id>/chat`: the chat alone, as [`embed_player`].
async fn embed_chat(State(state): State<AppState>) -> Response {
    embed_response(state.embed_chat, state.embed_policy)
}

fn embed_response(page: Bytes, policy: HeaderValue) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        security::embed_headers(policy),
        Html(page),
    )
        .into_response()
}

/// `GET /ice-servers`: the ICE servers for the page's next peer connections, with TURN
/// credentials minted for this request. Never stored by a browser or a proxy: every answer
/// carries credentials of its own.
async fn ice_servers(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(state.ice_servers.answer(SystemTime::now())),
    )
        .into_response()
}

/// Whether an `--assets-dir` looks usable; checked at start-up for a clear message.
pub fn assets_present(dir: &Path) -> bool {
    dir.join(ENTRY_MODULE).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::OriginalUri;

    use tower::ServiceExt;

    /// A directory of its own under the system's temporary folder, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("vendor")).expect("temp dir");
            Self(dir)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).expect("write");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    #[test]
    fn asset_version_follows_the_assets_contents() {
        let dir = TempDir::new("asset-version");
        for name in PAGE_ASSETS {
            dir.write(name, name);
        }
        let source = AssetSource::Dir(dir.0.clone());
        let first = asset_version(&source);
        assert_eq!(first, asset_version(&source), "same files, same version");
        dir.write("viewer.js", "changed");
        assert_ne!(
            first,
            asset_version(&source),
            "a changed module gets a new URL"
        );
    }

    #[test]
    fn every_script_in_assets_is_a_page_asset_and_built_in() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        for entry in std::fs::read_dir(&dir).expect("assets/ is readable") {
            let name = entry.expect("directory entry").file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".js") {
                assert!(
                    PAGE_ASSETS.contains(&&*name),
                    "{name} is missing from PAGE_ASSETS"
                );
            }
        }
        for name in PAGE_ASSETS {
            assert!(
                EmbeddedAssets::get(name).is_some(),
                "{name} is not built in"
            );
        }
    }

    #[test]
    fn the_page_loads_the_entry_module_and_preloads_the_others() {
        let page = render_pages(&Config::default_for_tests())
            .expect("page renders")
            .main;
        let version = asset_version(&AssetSource::Embedded);
        assert!(
            page.contains(&format!(
                r#"<script type="module" src="/assets/main.js?v={version}"></script>"#
            )),
            "{page}"
        );
        for name in PAGE_ASSETS.into_iter().filter(|name| is_own_module(name)) {
            let preload = format!(r#"<link rel="modulepreload" href="/assets/{name}">"#);
            assert_eq!(page.contains(&preload), name != ENTRY_MODULE, "{name}");
        }
    }

    async fn get(router: &Router, path: &str, headers: &[(header::HeaderName, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        let request = request.body(Body::empty()).expect("valid request");
        router.clone().oneshot(request).await.expect("infallible")
    }

    #[tokio::test]
    async fn built_in_assets_have_types_cache_policy_and_revalidation() {
        let router = Router::new().nest("/assets", assets_router(AssetSource::Embedded));
        for (path, content_type, cache) in [
            ("/assets/main.js", "text/javascript", MODULE_CACHE),
            ("/assets/viewer.js", "text/javascript", MODULE_CACHE),
            ("/assets/style.css", "text/css", ASSET_CACHE),
            (
                "/assets/vendor/socket.io.min.js",
                "text/javascript",
                ASSET_CACHE,
            ),
        ] {
            let response = get(&router, path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], cache, "{path}");
            let etag = headers[header::ETAG].to_str().expect("ascii").to_owned();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            let name = path.trim_start_matches("/assets/");
            assert_eq!(
                Some(body.as_ref()),
                AssetSource::Embedded.read(name).as_deref()
            );

            let revalidated = get(&router, path, &[(header::IF_NONE_MATCH, &etag)]).await;
            assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(
                revalidated.headers()[header::CACHE_CONTROL],
                cache,
                "{path}"
            );
            let stale = get(&router, path, &[(header::IF_NONE_MATCH, "W/\"0\"")]).await;
            assert_eq!(stale.status(), StatusCode::OK, "{path}");
        }
        for missing in ["/assets/nope.js", "/assets/", "/assets/../Cargo.toml"] {
            let response = get(&router, missing, &[]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        }
    }

    #[tokio::test]
    async fn an_assets_dir_is_served_with_the_same_cache_policy() {
        let dir = TempDir::new("assets-dir");
        dir.write("main.js", "export {};");
        dir.write("style.css", "body {}");
        let router = Router::new().nest("/assets", assets_router(AssetSource::Dir(dir.0.clone())));
        for (path, cache) in [
            ("/assets/main.js", MODULE_CACHE),
            ("/assets/style.css", ASSET_CACHE),
        ] {
            let response = get(&router, path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CACHE_CONTROL], cache, "{path}");
            let modified = response.headers()[header::LAST_MODIFIED]
                .to_str()
                .expect("ascii")
                .to_owned();
            let revalidated = get(&router, path, &[(header::IF_MODIFIED_SINCE, &modified)]).await;
            assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
        }
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
            "/assets/main.js",
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
        assert!(request.extensions().get::<OriginalUri>().is_none());
    }

    #[tokio::test]
    async fn a_detached_head_keeps_only_the_extensions_read_later() {
        #[derive(Clone)]
        struct Other;
        let peer: SocketAddr = "203.0.113.7:4321".parse().expect("address");
        let mut request = Request::get("/socket.io/?EIO=4&transport=websocket")
            .body(Body::empty())
            .expect("valid request");
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(Other);
        let uri = request.uri().clone();
        request.extensions_mut().insert(OriginalUri(uri));

        let request = detach_head(request).await;

        let extensions = request.extensions();
        assert_eq!(extensions.len(), 1);
        assert_eq!(
            extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
            Some(peer)
        );

        // Other requests keep theirs.
        let mut request = Request::get("/assets/main.js")
            .body(Body::empty())
            .expect("valid request");
        request.extensions_mut().insert(Other);
        let request = detach_head(request).await;
        assert!(request.extensions().get::<Other>().is_some());
    }

    #[tokio::test]
    async fn a_detached_head_keeps_only_the_headers_read_later() {
        let mut request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-for", "198.51.100.2, 10.0.0.1")
            .header(header::USER_AGENT, "Mozilla/5.0 (X11; Linux x86_64)")
            .header(header::COOKIE, "a=b")
            .body(axum::body::Body::empty())
            .expect("valid request");
        request
            .headers_mut()
            .get_mut("x-forwarded-for")
            .expect("set")
            .set_sensitive(true);

        let request = detach_head(request).await;

        let headers = request.headers();
        assert_eq!(headers.len(), 3);
        assert_eq!(
            headers[header::SEC_WEBSOCKET_KEY],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        let forwarded: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded, ["203.0.113.7", "198.51.100.2, 10.0.0.1"]);
        assert!(forwarded[0].is_sensitive());
    }
}
