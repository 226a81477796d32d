//! HTTP side: the page, health, assets, origin restriction, start-up errors.

use crate::helpers::spawn_app;
use serde_json::{Value, json};

#[tokio::test]
async fn page_is_served_with_ice_servers_and_no_third_party_urls() {
    let app = spawn_app(&[
        "--ice-servers",
        r#"[{"urls":"stun:stun.example.test:3478"}]"#,
    ])
    .await;
    let res = reqwest::get(format!("{}/?viewer=true", app.url()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = res.text().await.unwrap();
    assert!(
        body.contains("stun:stun.example.test:3478"),
        "ICE servers rendered"
    );
    assert!(
        body.contains("/assets/vendor/socket.io.min.js"),
        "vendored client"
    );
    for line in body.lines() {
        for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
            assert!(!line.contains(attr), "third-party URL in page: {line}");
        }
    }
}

/// The JSON the page's scripts read their server configuration from (`#config`).
async fn page_config(app: &crate::helpers::TestApp) -> Value {
    let body = reqwest::get(format!("{}/?viewer=true", app.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = r#"<script type="application/json" id="config">"#;
    let json = body
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("page has a #config script: {body}"));
    serde_json::from_str(json).expect("#config is JSON")
}

#[tokio::test]
async fn page_connects_with_polling_then_websocket_by_default() {
    let app = spawn_app(&["--ice-servers", "[]"]).await;
    assert_eq!(
        page_config(&app).await,
        json!({"iceServers": [], "transports": ["polling", "websocket"]})
    );
}

#[tokio::test]
async fn websocket_only_server_serves_a_websocket_only_page_and_refuses_polling() {
    let app = spawn_app(&["--transports", "websocket", "--ice-servers", "[]"]).await;
    assert_eq!(
        page_config(&app).await,
        json!({"iceServers": [], "transports": ["websocket"]})
    );
    let polling = reqwest::get(format!("{}/socket.io/?EIO=4&transport=polling", app.url()))
        .await
        .unwrap();
    assert_eq!(polling.status(), 400, "no polling session can be opened");
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "ws-only"}));
    b.expect("broadcaster_ready").await;
}

#[tokio::test]
async fn health_reports_channels_and_sockets() {
    let app = spawn_app(&[]).await;
    assert_eq!(
        app.health().await,
        json!({"status": "ok", "mode": "memory", "channels": 0, "sockets": 0, "indexed_sockets": 0,
               "indexed_addresses": 0, "client_addresses": 0})
    );
    let mut b = app.client().await;
    b.emit("join_as_broadcaster", json!({"channel_id": "h"}));
    b.expect("broadcaster_ready").await;
    let health = app.health().await;
    assert_eq!(health["channels"], 1);
    assert_eq!(health["sockets"], 1);
}

#[tokio::test]
async fn assets_have_cache_headers_and_compression() {
    let app = spawn_app(&[]).await;
    let client = reqwest::Client::builder().build().unwrap();
    // Our modules import each other by plain URLs, so they are revalidated on every load;
    // what the page loads by a fingerprinted URL is kept for an hour.
    for (path, cache) in [
        ("/assets/main.js", "no-cache"),
        ("/assets/viewer.js", "no-cache"),
        ("/assets/style.css", "public, max-age=3600"),
        ("/assets/vendor/socket.io.min.js", "public, max-age=3600"),
    ] {
        let res = client
            .get(format!("{}{path}", app.url()))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers();
        assert_eq!(headers["cache-control"], cache, "{path}");
        assert!(headers.contains_key("last-modified"), "{path}");
        assert_eq!(headers["content-encoding"], "gzip", "{path}");
    }
    let missing = client
        .get(format!("{}/assets/nope.js", app.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn without_assets_dir_the_built_in_assets_are_served() {
    use clap::Parser;
    let config = broadcast_server::config::Config::try_parse_from([
        "broadcast-server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ])
    .unwrap();
    let server = broadcast_server::start(&config).await.expect("starts");
    let client = reqwest::Client::new();
    let page = client.get(server.url()).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/assets/main.js?v="#));
    let main = client
        .get(format!("{}/assets/main.js", server.url()))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 200);
    assert_eq!(main.headers()["content-type"], "text/javascript");
    assert_eq!(main.headers()["cache-control"], "no-cache");
    assert_eq!(main.headers()["content-encoding"], "gzip");
    let etag = main.headers()["etag"].clone();
    let revalidated = client
        .get(format!("{}/assets/main.js", server.url()))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_assets_dir_without_main_js_stops_start_up_with_a_clear_error() {
    use clap::Parser;
    let config = broadcast_server::config::Config::try_parse_from([
        "broadcast-server",
        "--port",
        "0",
        "--assets-dir",
        "/nonexistent/assets",
    ])
    .unwrap();
    let err = match broadcast_server::start(&config).await {
        Ok(_) => panic!("start-up must fail"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("assets directory /nonexistent/assets has no main.js"),
        "{err}"
    );
    assert!(!err.contains('\n'), "one line: {err}");
}

#[tokio::test]
async fn any_origin_is_allowed_by_default() {
    let app = spawn_app(&[]).await;
    let res = reqwest::Client::new()
        .get(format!("{}/socket.io/?EIO=4&transport=polling", app.url()))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://anywhere.example"
    );
}

#[tokio::test]
async fn origin_list_restricts_polling_and_websocket() {
    let app = spawn_app(&["--cors-origins", "https://good.example"]).await;
    let http = reqwest::Client::new();
    let polling = format!("{}/socket.io/?EIO=4&transport=polling", app.url());
    let bad = http
        .get(&polling)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    let good = http
        .get(&polling)
        .header("origin", "https://good.example")
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "https://good.example"
    );

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());
    let mut request = app.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "https://good.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
}

#[tokio::test]
async fn missing_tls_files_stop_start_up_with_a_clear_error() {
    use clap::Parser;
    let config = broadcast_server::config::Config::try_parse_from([
        "broadcast-server",
        "--port",
        "0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ])
    .unwrap();
    let err = match broadcast_server::start(&config).await {
        Ok(_) => panic!("start-up must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("cannot load TLS certificate/key"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[tokio::test]
async fn graceful_shutdown_closes_sockets_and_stops() {
    let app = spawn_app(&[]).await;
    let mut client = app.client().await;
    let url = app.url();
    tokio::time::timeout(std::time::Duration::from_secs(15), app.server.shutdown())
        .await
        .expect("shutdown finishes")
        .expect("clean shutdown");
    client.expect_closed().await;
    let after: Result<Value, _> =
        async { reqwest::get(format!("{url}/healthz")).await?.json().await }.await;
    assert!(after.is_err(), "no longer serving");
}

#[tokio::test]
async fn healthcheck_probe_sees_a_running_server() {
    use clap::Parser;
    let app = spawn_app(&[]).await;
    let port = app.server.local_addr.port().to_string();
    let config =
        broadcast_server::config::Config::try_parse_from(["broadcast-server", "--port", &port])
            .unwrap();
    let probe = tokio::task::spawn_blocking(move || broadcast_server::healthcheck::probe(&config));
    assert_eq!(probe.await.unwrap(), Ok(()));
    drop(app);
}

#[tokio::test]
async fn a_browser_with_many_cookies_can_still_open_a_session() {
    let app = spawn_app(&[]).await;
    // A site's cookies travel with every polling request; 30 KB of them is unusual but legal.
    let cookies = (0..30)
        .map(|i| format!("c{i}={}", "x".repeat(1000)))
        .collect::<Vec<_>>()
        .join("; ");
    let res = reqwest::Client::new()
        .get(format!("{}/socket.io/?EIO=4&transport=polling", app.url()))
        .header("cookie", cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().starts_with("0{\"sid\":"));
}

/// Liveness answers whatever the node's dependencies say; readiness (and `/healthz`) is 200
/// in memory mode. (Cluster mode's 503 while Redis is away: `cluster.rs`.)
#[tokio::test]
async fn livez_and_readyz_answer_apart() {
    let app = spawn_app(&[]).await;
    for path in ["/livez", "/readyz", "/live", "/ready"] {
        let res = reqwest::get(format!("{}{path}", app.url())).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body, json!({"status": "ok"}), "{path}");
    }
}

/// The page carries a policy that allows only what it uses; every response says nosniff and
/// keeps the full URL out of other origins' `Referer`.
#[tokio::test]
async fn page_and_every_response_carry_security_headers() {
    let app = spawn_app(&[]).await;
    let page = reqwest::get(format!("{}/?broadcaster=true", app.url()))
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "media-src 'self' blob: mediastream:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let body = page.text().await.unwrap();
    // What the policy allows is all the page loads: no inline script to run, no inline style.
    assert!(
        !body.contains(" style="),
        "inline style attribute in the page"
    );
    for script in body.split("<script").skip(1) {
        let tag = &script[..script.find('>').unwrap()];
        assert!(
            tag.contains(" src=\"/") || tag.contains("type=\"application/json\""),
            "inline or foreign script: <script{tag}>"
        );
    }
    for path in ["/", "/healthz", "/livez", "/assets/main.js", "/nope"] {
        let res = reqwest::get(format!("{}{path}", app.url())).await.unwrap();
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(res.headers()["referrer-policy"], "same-origin", "{path}");
    }
}

/// The probe asks `/livez` on the configured host and port. (Reading process 1's command line,
/// for a probe started with `--healthcheck` alone in a container, is not reached here: process 1
/// of a test run is not the server; `healthcheck`'s unit tests cover its parsing.)
#[tokio::test]
async fn healthcheck_probes_livez_on_the_configured_host() {
    use clap::Parser;
    let app = spawn_app(&[]).await;
    let port = app.server.local_addr.port().to_string();
    let config = broadcast_server::config::Config::try_parse_from([
        "broadcast-server",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--healthcheck",
    ])
    .unwrap();
    let config = broadcast_server::healthcheck::target(config, 6);
    assert_eq!(config.port.to_string(), port, "explicit flags are kept");
    let probe = tokio::task::spawn_blocking(move || broadcast_server::healthcheck::probe(&config));
    assert_eq!(probe.await.unwrap(), Ok(()));
}

/// The embeds may be framed by the server's own origin and the `--embed-origins` sites, and by
/// nobody else; the main page by nobody at all.
#[tokio::test]
async fn embeds_are_framable_by_the_configured_origins_and_the_page_by_none() {
    let app = spawn_app(&[
        "--embed-origins",
        "https://blog.example.com,http://127.0.0.1:8080",
    ])
    .await;
    for path in ["/embed/some-channel", "/embed/some-channel/chat"] {
        let res = reqwest::get(format!("{}{path}", app.url())).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.ends_with(
                "; frame-ancestors 'self' https://blog.example.com http://127.0.0.1:8080"
            ),
            "{path}: {csp}"
        );
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing from {csp}"
            );
        }
        assert!(
            res.headers().get("x-frame-options").is_none(),
            "{path}: X-Frame-Options cannot list origins; DENY would forbid the embed"
        );
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(res.headers()["cache-control"], "no-cache", "{path}");
        let body = res.text().await.unwrap();
        let kind = if path.ends_with("/chat") {
            "chat"
        } else {
            "player"
        };
        assert!(
            body.contains(&format!("<body data-embed=\"{kind}\">")),
            "{path}"
        );
        assert!(
            body.contains(&format!("\"embed\":\"{kind}\"")),
            "{path}: page config"
        );
    }
    let page = reqwest::get(format!("{}/?viewer=true", app.url()))
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let body = page.text().await.unwrap();
    assert!(!body.contains("data-embed") && !body.contains("\"embed\""));
    let deeper = reqwest::get(format!("{}/embed/a/chat/more", app.url()))
        .await
        .unwrap();
    assert_eq!(deeper.status(), 404);
}

#[tokio::test]
async fn without_embed_origins_embeds_are_framable_by_the_server_alone() {
    let app = spawn_app(&[]).await;
    let res = reqwest::get(format!("{}/embed/x", app.url()))
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.ends_with("; frame-ancestors 'self'"), "{csp}");
    assert!(res.headers().get("x-frame-options").is_none());
}

/// A wrong `--embed-origins` stops the binary at start-up with one clear line.
#[tokio::test]
async fn bad_embed_origins_stop_start_up() {
    for bad in [
        "https://blog.example.com/path",
        "https://*.example.com",
        "*",
        "blog.example.com",
        "https://a.example; script-src *",
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .env_clear()
            .env("EMBED_ORIGINS", bad)
            .output()
            .await
            .expect("the binary runs");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("must look like https://blog.example.com[:port]"),
            "{bad}: {err}"
        );
    }
}
