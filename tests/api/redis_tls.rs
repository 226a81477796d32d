//! Cluster mode over TLS (`rediss://`): a node trusts the Redis's certificate through
//! `--redis-ca-cert` and works as over `redis://`; the wrong scheme for the port, or a
//! certificate nobody vouched for, stops start-up within seconds with one line that says what
//! to change (and never the URL's password).
//!
//! Each test starts its own `redis-server` listening on a TLS port only, with a CA and a server
//! certificate the test makes with the `openssl` command line (`scripts/install-test-deps.sh`
//! installs it): the same tool an operator would use, and no certificate crate to compile.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};

use crate::helpers::{Node, free_port, sample_sdp, unique_prefix};

/// How long a node that cannot use its Redis may take to give up.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(8);
/// A password in the URLs of the failing starts: no message may show it.
const PASSWORD: &str = "hunter2-not-shown";

/// A private `redis-server` that speaks TLS only (`--port 0`), its certificates and files in a
/// temporary directory; the process is killed and the directory removed when dropped.
struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

/// What the server certificate names.
#[derive(Clone, Copy)]
enum Names {
    /// 127.0.0.1 and localhost as subject alternative names, as TLS clients read them.
    Listed,
    /// 127.0.0.1 in the common name only (no subject alternative names), as some managed
    /// Redis certificates do.
    CommonNameOnly,
}

impl TlsRedis {
    async fn start() -> TlsRedis {
        TlsRedis::start_with(Names::Listed).await
    }

    async fn start_with(names: Names) -> TlsRedis {
        let dir = std::env::temp_dir().join(format!("broadcast-redis-tls-{}", unique_prefix()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        make_certificates(&dir, names).await;
        let port = free_port();
        let log = dir.join("redis.log");
        let out = std::fs::File::create(&log).expect("redis log file");
        let err = out.try_clone().expect("redis log file");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("server.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.pem"))
            .args(["--tls-auth-clients", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is on PATH");
        let mut redis = TlsRedis { port, dir, child };
        redis.wait_ready(&log).await;
        redis
    }

    /// Waits for Redis to say it accepts connections. A build without TLS refuses `--tls-port`
    /// and exits: that fails the test, saying so, rather than letting it pass untested.
    async fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "redis-server exited at start ({status}): this build may lack TLS support \
                     (it must accept --tls-port; Debian's redis-server does). Its output:\n{text}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis-server with TLS on {} not ready within 10 s:\n{text}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Another CA, which signed nothing this Redis presents.
    fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        // `kill_on_drop` ends redis-server; its certificates and log go with the directory.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA (`ca.pem`) and a server certificate it signed for 127.0.0.1 and localhost
/// (`server.pem`, `server.key`), valid for a day, in `dir`; and another CA (`other-ca.pem`).
async fn make_certificates(dir: &Path, names: Names) {
    let listed = match names {
        Names::Listed => "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        Names::CommonNameOnly => "",
    };
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "{listed}basicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .expect("write the extensions file");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let steps: [Vec<&str>; 4] = [
        [&["req", "-x509", "-nodes", "-days", "1"][..], &ec[..]]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=broadcast test CA"])
            .chain(["-keyout", "ca.key", "-out", "ca.pem"])
            .collect(),
        [&["req", "-x509", "-nodes", "-days", "1"][..], &ec[..]]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=some other CA"])
            .chain(["-keyout", "other-ca.key", "-out", "other-ca.pem"])
            .collect(),
        [&["req", "-new", "-nodes"][..], &ec[..]]
            .concat()
            .into_iter()
            .chain(["-subj", "/CN=127.0.0.1"])
            .chain(["-keyout", "server.key", "-out", "server.csr"])
            .collect(),
        vec![
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the openssl command line is installed (scripts/install-test-deps.sh)");
        assert!(
            out.status.success(),
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs the binary in cluster mode until it exits (at most [`GIVE_UP_WITHIN`]); its status,
/// the non-empty lines of its stderr, and how long it ran.
async fn run_to_exit(redis_url: &str, extra: &[&str]) -> (ExitStatus, Vec<String>, Duration) {
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_broadcast-server"))
        .args(["--host", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--redis-url", redis_url, "--redis-prefix", &unique_prefix()])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(GIVE_UP_WITHIN, run)
        .await
        .unwrap_or_else(|_| panic!("{redis_url}: the server gives up within {GIVE_UP_WITHIN:?}"))
        .expect("run the server binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (output.status, lines, started.elapsed())
}

/// A failed start: exit 1 and exactly `expected` on stderr, without the password.
fn assert_one_line(what: &str, run: (ExitStatus, Vec<String>, Duration), expected: &str) {
    let (status, lines, took) = run;
    println!("{what}: {status} after {took:?}: {lines:?}");
    assert_eq!(status.code(), Some(1), "{what}: {lines:?}");
    assert_eq!(lines, [expected], "{what}: one clear line on stderr");
}

#[tokio::test]
async fn rediss_with_the_ca_cert_serves_a_channel_across_two_nodes() {
    let redis = TlsRedis::start().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let prefix = unique_prefix();
    let extra = [
        "--redis-ca-cert".to_owned(),
        redis.ca().display().to_string(),
    ];
    let mut a = Node::start_with_url(&url, &prefix, &extra).await;
    let mut b = Node::start_with_url(&url, &prefix, &extra).await;
    for node in [&a, &b] {
        let (status, health) = node.health().await;
        println!("{url}: node {} /healthz {status} {health}", node.addr);
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["mode"], "cluster", "{health}");
        assert!(health["node_id"].as_str().is_some_and(|id| !id.is_empty()));
    }

    // A broadcaster on A, a viewer on B: the registry and the cross-node events both go
    // through the TLS Redis.
    let mut broadcaster = a.client().await;
    broadcaster.emit("join_as_broadcaster", json!({ "channel_id": "over-tls" }));
    assert_eq!(
        broadcaster.expect("broadcaster_ready").await,
        json!({"id": broadcaster.sid, "channel_id": "over-tls"})
    );
    let mut viewer = b.client().await;
    viewer.emit("join_as_viewer", json!({ "channel_id": "over-tls" }));
    assert_eq!(
        viewer.expect("broadcaster_available").await,
        json!({"broadcaster_id": broadcaster.sid, "channel_id": "over-tls"})
    );
    assert_eq!(
        broadcaster.expect("viewer_count").await,
        json!({"channel_id": "over-tls", "count": 1})
    );
    broadcaster.emit(
        "offer",
        json!({"target": viewer.sid, "sdp": sample_sdp("offer")}),
    );
    let offer = viewer.expect("offer").await;
    assert_eq!(offer["sender"], broadcaster.sid.as_str(), "{offer}");
    for node in [&a, &b] {
        let (_, health) = node.health().await;
        assert_eq!(health["channels"], 1, "{health}");
    }

    broadcaster.close();
    viewer.close();
    for node in [&mut a, &mut b] {
        node.wait_health("no socket left", Duration::from_secs(10), |status, h| {
            status == 200 && h["sockets"] == 0 && h["channels"] == 0
        })
        .await;
        let status = node.terminate().await;
        assert!(status.success(), "exit 0 on SIGTERM: {}", node.log_text());
    }
}

#[tokio::test]
async fn redis_scheme_on_a_tls_port_stops_start_up_with_one_line() {
    let redis = TlsRedis::start().await;
    let port = redis.port;
    let run = run_to_exit(&format!("redis://app:{PASSWORD}@127.0.0.1:{port}"), &[]).await;
    assert_one_line(
        "redis:// to a TLS port",
        run,
        &format!(
            "error: cannot reach Redis at redis://…@127.0.0.1:{port}: the connection was closed \
             during the handshake; if this Redis requires TLS, use rediss://"
        ),
    );
}

#[tokio::test]
async fn rediss_without_the_ca_cert_says_the_certificate_is_not_trusted() {
    let redis = TlsRedis::start().await;
    let port = redis.port;
    let run = run_to_exit(&format!("rediss://app:{PASSWORD}@127.0.0.1:{port}"), &[]).await;
    assert_one_line(
        "rediss:// without --redis-ca-cert",
        run,
        &format!(
            "error: cannot reach Redis at rediss://…@127.0.0.1:{port}: its TLS certificate is \
             not trusted (unknown issuer): pass the CA that signed it with --redis-ca-cert \
             (REDIS_CA_CERT)"
        ),
    );
}

#[tokio::test]
async fn an_unreadable_ca_cert_stops_start_up_before_connecting() {
    // No Redis at all: the file is checked first.
    let missing = std::env::temp_dir().join(format!("{}-missing-ca.pem", unique_prefix()));
    let url = format!("rediss://app:{PASSWORD}@127.0.0.1:{}", free_port());
    let run = run_to_exit(&url, &["--redis-ca-cert", &missing.display().to_string()]).await;
    assert_one_line(
        "missing --redis-ca-cert file",
        run,
        &format!(
            "error: --redis-ca-cert (REDIS_CA_CERT) {}: cannot read it: No such file or \
             directory (os error 2)",
            missing.display()
        ),
    );
}

/// A certificate that names its address only in the common name (as Memorystore's reportedly
/// do) is refused with a line naming the way out; `--redis-skip-hostname-check` accepts it when
/// it chains to the `--redis-ca-cert` CA, and only then.
#[tokio::test]
async fn a_common_name_only_certificate_needs_the_skip_hostname_check() {
    let redis = TlsRedis::start_with(Names::CommonNameOnly).await;
    let port = redis.port;
    let url = format!("rediss://app:{PASSWORD}@127.0.0.1:{port}");
    let ca = redis.ca().display().to_string();
    let run = run_to_exit(&url, &["--redis-ca-cert", &ca]).await;
    assert_one_line(
        "a common-name-only certificate",
        run,
        &format!(
            "error: cannot reach Redis at rediss://…@127.0.0.1:{port}: its TLS certificate \
             does not list this host name or address among its subject alternative names (the \
             common name is not read): connect with a name it lists, or for a Redis whose own \
             CA is passed with --redis-ca-cert, add --redis-skip-hostname-check"
        ),
    );
    // The chain is still checked: another CA does not vouch for this certificate.
    let other = redis.other_ca().display().to_string();
    let run = run_to_exit(
        &url,
        &["--redis-ca-cert", &other, "--redis-skip-hostname-check"],
    )
    .await;
    assert_one_line(
        "skip hostname check, wrong CA",
        run,
        &format!(
            "error: cannot reach Redis at rediss://…@127.0.0.1:{port}: its TLS certificate is \
             not trusted (unknown issuer): pass the CA that signed it with --redis-ca-cert \
             (REDIS_CA_CERT)"
        ),
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let extra = [
        "--redis-ca-cert".to_owned(),
        ca,
        "--redis-skip-hostname-check".to_owned(),
    ];
    let mut node = Node::start_with_url(&url, &unique_prefix(), &extra).await;
    let (status, health) = node.health().await;
    println!("{url} with --redis-skip-hostname-check: /healthz {status} {health}");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["mode"], "cluster", "{health}");
    let status = node.terminate().await;
    assert!(status.success(), "exit 0 on SIGTERM: {}", node.log_text());
}
