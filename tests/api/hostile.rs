//! Hostile clients: what an attacker on a public broadcast link could try, each with a clear
//! answer and no harm to anybody else.

use std::time::Duration;

use crate::helpers::{Polling, spawn_app};
use serde_json::json;

/// Defect 1: every id the protocol publishes used to be the Engine.IO session id, so anyone
/// who saw it could post into, poll or upgrade the victim's session.
#[tokio::test]
async fn published_ids_are_not_transport_credentials() {
    let app = spawn_app(&[]).await;
    let mut victim = Polling::open(&app).await;
    victim.post(&["40".into()]).await;
    let victim_id = victim.expect("client_id").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(victim_id, victim.session);
    // The official client takes `socket.id` from the CONNECT packet: the public id too.
    assert_eq!(victim.connect_sid.as_deref(), Some(victim_id.as_str()));
    victim
        .emit("join_as_broadcaster", json!({"channel_id": "victim"}))
        .await;
    assert_eq!(
        victim.expect("broadcaster_ready").await,
        json!({"id": victim_id, "channel_id": "victim"})
    );

    // What a stranger learns: the list and the join carry the public id only.
    let mut stranger = app.client().await;
    stranger.emit("join_as_viewer", json!({}));
    let list = stranger.expect("channel_list").await;
    assert_eq!(list["channels"][0]["broadcaster_sid"], victim_id);
    stranger.emit("join_as_viewer", json!({"channel_id": "victim"}));
    assert_eq!(
        stranger.expect("broadcaster_available").await["broadcaster_id"],
        victim_id
    );
    assert_eq!(victim.expect("viewer_count").await["count"], 1);

    // With that id, the transport refuses every session operation.
    let http = reqwest::Client::new();
    let stop = format!("42{}", json!(["stop_broadcast", {"channel_id": "victim"}]));
    let post = http
        .post(victim.url_for(&victim_id))
        .body(stop)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 400, "posting into the victim's session");
    let poll = http.get(victim.url_for(&victim_id)).send().await.unwrap();
    assert_eq!(poll.status(), 400, "polling the victim's session");
    let upgrade =
        tokio_tungstenite::connect_async(format!("{}&sid={victim_id}", app.ws_url())).await;
    if let Ok((mut ws, _)) = upgrade {
        // The WebSocket may open, but the upgrade probe gets no answer: the session is unknown.
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let _ = ws.send(Message::text("2probe")).await;
        let read = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(msg)) = ws.next().await {
                assert!(
                    !matches!(msg, Message::Text(_)),
                    "the victim's session answered the upgrade: {msg:?}"
                );
            }
        })
        .await;
        assert!(read.is_ok(), "the upgrade attempt is closed");
    }

    // The victim is still live and reachable: a new viewer is announced to it, and its own
    // session still works.
    let mut viewer = app.client().await;
    viewer.emit("join_as_viewer", json!({"channel_id": "victim"}));
    viewer.expect("broadcaster_available").await;
    assert_eq!(victim.expect("viewer_count").await["count"], 2);
    stranger.assert_silent().await;
}

/// Relay `sender` is the public id, and a reply addressed to it reaches the right socket.
#[tokio::test]
async fn relays_name_and_reach_public_ids() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = crate::helpers::channel_with_viewer(&app, "ids").await;
    v.emit(
        "offer",
        json!({"target": b.sid, "sdp": crate::helpers::sample_sdp("offer")}),
    );
    let offer = b.expect("offer").await;
    assert_eq!(offer["sender"], v.sid);
    assert_ne!(offer["sender"], v.session);
    b.emit(
        "answer",
        json!({"target": offer["sender"], "sdp": crate::helpers::sample_sdp("answer")}),
    );
    assert_eq!(v.expect("answer").await["sender"], b.sid);
    // The session id is no address at all.
    b.emit(
        "answer",
        json!({"target": v.session, "sdp": crate::helpers::sample_sdp("answer")}),
    );
    b.expect_relay_error("answer").await;
}

/// Defect 3: request heads that never finish and connections that never speak are closed.
#[tokio::test]
async fn slow_heads_and_silent_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(&["--header-timeout-secs", "1"]).await;
    let addr = app.server.local_addr;
    let started = tokio::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let trickling = tokio::spawn(async move {
        // One byte of a request head at a time, forever, as a slow-loris client does.
        for byte in b"GET / HTTP/1.1\r\nX-Slow: ".iter().cycle() {
            if trickle.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent connection is closed"
    );
    tokio::time::timeout(Duration::from_secs(5), trickling)
        .await
        .expect("a slow head is cut off")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    // A keep-alive connection that goes quiet after a request is closed too.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read_all = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut response));
    assert!(
        read_all.await.is_ok(),
        "an idle keep-alive connection is closed"
    );
    assert!(response.starts_with(b"HTTP/1.1 200"));
    // Real clients are unaffected.
    assert_eq!(app.health().await["status"], "ok");
}

/// Defect 3: past the connection cap a client reads a clear 503, and those within it work.
#[tokio::test]
async fn connections_over_the_cap_get_a_clear_503() {
    use tokio::io::AsyncReadExt;
    let app = spawn_app(&["--max-connections", "3"]).await;
    let addr = app.server.local_addr;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), over.read_to_string(&mut answer))
        .await
        .expect("answered at once")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection limit"), "{answer}");
    // Freed slots are usable again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.health().await["status"], "ok");
}

/// Defect 4: one socket, or one address, cannot take every channel.
#[tokio::test]
async fn one_client_cannot_take_every_channel() {
    let app = spawn_app(&[
        "--max-channels-per-socket",
        "2",
        "--max-channels-per-ip",
        "3",
        "--rate-join",
        "0",
    ])
    .await;
    let mut hog = app.client().await;
    for i in 0..2 {
        hog.emit(
            "join_as_broadcaster",
            json!({"channel_id": format!("hog{i}")}),
        );
        hog.expect("broadcaster_ready").await;
    }
    for i in 2..50 {
        hog.emit(
            "join_as_broadcaster",
            json!({"channel_id": format!("hog{i}")}),
        );
        hog.expect_error("You already broadcast 2 channels; stop one before starting another")
            .await;
    }
    let mut twin = app.client().await;
    twin.emit("join_as_broadcaster", json!({"channel_id": "twin0"}));
    twin.expect("broadcaster_ready").await;
    twin.emit("join_as_broadcaster", json!({"channel_id": "twin1"}));
    twin.expect_error("Too many channels from your network address (limit 3); try again later")
        .await;
    assert_eq!(app.health().await["channels"], 3);
    hog.close();
    hog.expect_closed().await;
    twin.emit("join_as_broadcaster", json!({"channel_id": "twin1"}));
    twin.expect("broadcaster_ready").await;
}

/// Defect 5: a script tag split across lines is still a script tag.
#[tokio::test]
async fn script_tags_across_newlines_are_refused() {
    let app = spawn_app(&[]).await;
    let (mut b, mut v) = crate::helpers::channel_with_viewer(&app, "markup").await;
    for hostile in [
        "<script\n>alert(1)</script>",
        "<script\nsrc=//evil.example/x.js>",
        "<SCRIPT\r\n\tsrc=x>",
    ] {
        v.emit(
            "send_message",
            json!({"channel_id": "markup", "message": hostile}),
        );
        v.expect_error(
            "Invalid message: message must not contain scripts or inline event handlers",
        )
        .await;
    }
    b.assert_silent().await;
}

/// Defect 2: list requests cannot be turned into an amplifier: past a short burst they get a
/// small refusal, and a client that keeps going is disconnected.
#[tokio::test]
async fn channel_list_requests_are_rate_limited() {
    let app = spawn_app(&[]).await;
    let mut owner = app.client().await;
    owner.emit("join_as_broadcaster", json!({"channel_id": "listed"}));
    owner.expect("broadcaster_ready").await;
    let mut bot = app.client().await;
    let mut lists = 0;
    let mut refusals = 0;
    for _ in 0..200 {
        bot.emit("join_as_viewer", json!({}));
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(2), bot.next_event()).await {
            Ok(Some((name, args))) if name == "channel_list" => {
                assert_eq!(args[0]["channels"][0]["id"], "listed");
                lists += 1;
            }
            Ok(Some((name, args))) => {
                assert_eq!(name, "error");
                assert_eq!(
                    args[0]["message"],
                    "Invalid data: too many requests; wait a moment and try again"
                );
                refusals += 1;
            }
            Ok(None) => break,
            Err(_) => panic!("the flooding client is disconnected"),
        }
    }
    assert!(
        (20..=25).contains(&lists),
        "about the burst answered: {lists}"
    );
    assert!(
        refusals > 0 && lists + refusals < 200,
        "{lists} + {refusals}"
    );
    // The owner noticed nothing and the server forgot the bot.
    owner.assert_silent().await;
    assert_eq!(app.health().await["indexed_sockets"], 1);
}

/// One address cannot hold every session: past its cap it gets a clear `connect_error`, and
/// a freed slot is usable again.
#[tokio::test]
async fn sessions_per_address_are_capped() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = spawn_app(&["--max-connections-per-ip", "2"]).await;
    let mut first = app.client().await;
    let _second = app.client().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap(); // Engine.IO open
    ws.send(Message::text("40")).await.unwrap();
    let refused = loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap()
            && t.as_str() != "2"
        {
            break t.to_string();
        }
    };
    assert_eq!(
        refused,
        r#"44{"message":"Too many connections from your network address; try again later"}"#
    );
    first.close();
    first.expect_closed().await;
    let _third = app.client().await;
    assert_eq!(app.health().await["client_addresses"], 1);
}

/// Opens a WebSocket session with an `X-Forwarded-For` header and returns the server's answer
/// to the Socket.IO CONNECT packet (`40…` accepted, `44…` refused), keeping the socket open.
async fn connect_forwarded_for(
    app: &crate::helpers::TestApp,
    forwarded_for: &str,
) -> (
    String,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.ws_url().into_client_request().expect("request");
    request.headers_mut().insert(
        "x-forwarded-for",
        forwarded_for.parse().expect("header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    ws.next().await.expect("open").expect("open packet");
    ws.send(Message::text("40")).await.expect("send connect");
    let answer = loop {
        match ws.next().await.expect("an answer").expect("a frame") {
            Message::Text(t) if t.as_str() != "2" => break t.to_string(),
            _ => continue,
        }
    };
    (answer, ws)
}

/// On Cloud Run every connection comes from its front end, which appends the client's address
/// to `X-Forwarded-For`: with `--trusted-proxies cloud-run` each client has its own per-address
/// cap, and a client writing its own header cannot pick its address.
#[tokio::test]
async fn cloud_run_preset_counts_each_client_address_apart() {
    let app = spawn_app(&[
        "--trusted-proxies",
        "cloud-run",
        "--max-connections-per-ip",
        "1",
    ])
    .await;
    let (first, _first) = connect_forwarded_for(&app, "198.51.100.1").await;
    assert!(first.starts_with("40"), "{first}");
    let (second, _second) = connect_forwarded_for(&app, "198.51.100.2").await;
    assert!(second.starts_with("40"), "another address: {second}");
    // A forged entry on the left: the front end appended the real address after it.
    let (forged, _forged) = connect_forwarded_for(&app, "203.0.113.50, 198.51.100.1").await;
    assert_eq!(
        forged,
        r#"44{"message":"Too many connections from your network address; try again later"}"#
    );
    assert_eq!(app.health().await["client_addresses"], 2);
}

/// Without a trusted proxy the header is anybody's to write, so it is ignored.
#[tokio::test]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    let app = spawn_app(&["--max-connections-per-ip", "1"]).await;
    let (first, _first) = connect_forwarded_for(&app, "198.51.100.1").await;
    assert!(first.starts_with("40"), "{first}");
    let (second, _second) = connect_forwarded_for(&app, "198.51.100.2").await;
    assert!(second.starts_with("44"), "same peer address: {second}");
}
