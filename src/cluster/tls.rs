//! TLS to Redis (`rediss://`): which certificates are trusted, and what a failed connection
//! means in words an operator can act on.
//!
//! The roots are the system's (what `ca-certificates` installs) plus, with `--redis-ca-cert`,
//! the CA certificates of a PEM file: a managed Redis often presents a certificate signed by
//! its own private CA, which no system trusts.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::ClusterError;

/// Which certificates `rediss://` accepts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trust<'a> {
    /// `--redis-ca-cert`: CA certificates trusted besides the system's.
    pub ca_file: Option<&'a Path>,
    /// `--redis-skip-hostname-check` (only with `ca_file`): trust that CA alone and accept its
    /// certificates whatever host they name.
    pub any_name: bool,
}

/// The rustls client configuration for `rediss://`: system roots and the `ca_file`'s
/// certificates, or with `any_name` the `ca_file`'s alone. Fails when the file cannot be read
/// or holds no usable certificate, so that a typo in the path is one clear line at start-up
/// rather than an untrusted certificate later.
pub fn client_config(trust: Trust<'_>) -> Result<rustls::ClientConfig, ClusterError> {
    let mut roots = match (trust.any_name, trust.ca_file) {
        (true, Some(_)) => RootCertStore::empty(),
        (true, None) => {
            return Err(ClusterError::Tls(
                "--redis-skip-hostname-check needs --redis-ca-cert, the CA it trusts alone"
                    .to_owned(),
            ));
        }
        (false, _) => system_roots(),
    };
    if let Some(path) = trust.ca_file {
        let certs = read_ca_file(path)?;
        if trust.any_name && certs.iter().any(is_system_root) {
            // A public CA vouches for anybody's certificate: without the name check that
            // would accept any of them for this Redis.
            return Err(ca_error(
                path,
                "it holds a CA the system already trusts; --redis-skip-hostname-check takes only \
                 a private CA of the Redis's own",
            ));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(path, e))?;
        }
    }
    // The process-wide provider when one is installed (`crate::start` installs aws-lc-rs);
    // otherwise aws-lc-rs by name, so this never depends on rustls guessing from its crate
    // features (it refuses to guess when both ring and aws-lc-rs are compiled in).
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?;
    let config = if trust.any_name {
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| ClusterError::Tls(e.to_string()))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyNameUnderCa(verifier)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
}

/// Accepts a certificate that chains to the operator's own CA whatever host name or address
/// it names. For a managed Redis whose certificate names its address only in the subject's
/// common name, which rustls (like browsers) does not read: Google's Memorystore has been
/// reported to do so. The chain, dates and key usage are still checked in full (rustls checks
/// the name last, after the chain), and only the `--redis-ca-cert` CA is a root: a dedicated
/// CA that signs this Redis's certificates and nothing else.
#[derive(Debug)]
struct AnyNameUnderCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameUnderCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The system's CA roots. A certificate the system store holds but rustls cannot use is
/// skipped, as is a store that cannot be read (with a warning): a private CA passed with
/// `--redis-ca-cert` may be all this deployment needs.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!("system CA certificates: {error}");
    }
    let (added, skipped) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(
        added,
        skipped,
        "system CA certificates loaded for rediss://"
    );
    roots
}

/// Whether the system's CA store holds this very certificate.
fn is_system_root(cert: &CertificateDer<'_>) -> bool {
    rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .any(|root| root.as_ref() == cert.as_ref())
}

/// The certificates of a PEM file, each checked to be usable as a trust anchor.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
    let pem = std::fs::read(path).map_err(|e| ca_error(path, format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ca_error(path, pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(ca_error(
            path,
            "it holds no certificate (no -----BEGIN CERTIFICATE----- block)",
        ));
    }
    // The same check the root store makes, here so the message names the certificate.
    for (i, cert) in certs.iter().enumerate() {
        RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| ca_error(path, format!("certificate #{} is unusable: {e}", i + 1)))?;
    }
    Ok(certs)
}

fn ca_error(path: &Path, reason: impl ToString) -> ClusterError {
    ClusterError::CaCert {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A PEM syntax error in words (the parser's own messages quote raw bytes).
fn pem_problem(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".to_owned(),
        other => format!("not a PEM file: {other}"),
    }
}

/// Why connecting failed, when the cause is TLS, in words that say what to change: the wrong
/// scheme for the port, or a certificate this node does not trust. `None` for anything else
/// (the client's own message says it well enough).
///
/// The cases are recognised from the message fred builds: it carries rustls's error (its
/// variant names, e.g. `UnknownIssuer`) or the I/O error of a connection closed mid-handshake,
/// and no error type to match on.
pub fn explain(error: &fred::error::Error, tls: bool) -> Option<String> {
    use fred::error::ErrorKind;
    let detail = error.details();
    let has = |needle: &str| detail.contains(needle);
    let reason = if tls {
        if has("UnknownIssuer") || has("BadSignature") {
            "its TLS certificate is not trusted (unknown issuer): pass the CA that signed it with \
             --redis-ca-cert (REDIS_CA_CERT)"
                .to_owned()
        } else if has("NotValidForName") {
            // A certificate naming its host only in the subject's common name fails here:
            // rustls, like browsers, reads the subject alternative names alone.
            "its TLS certificate does not list this host name or address among its subject \
             alternative names (the common name is not read): connect with a name it lists, or \
             for a Redis whose own CA is passed with --redis-ca-cert, add \
             --redis-skip-hostname-check"
                .to_owned()
        } else if has("Expired") || has("NotValidYet") {
            format!("its TLS certificate is not valid now (expired or not yet valid): {detail}")
        } else if has("InvalidCertificate") {
            format!("its TLS certificate is not accepted: {detail}")
        } else if has("InvalidContentType") || has("CorruptMessage") || has("InvalidMessage") {
            "it did not answer the TLS handshake; if this Redis does not use TLS, use redis://"
                .to_owned()
        } else if *error.kind() == ErrorKind::Timeout {
            // A Redis without TLS takes the ClientHello for the start of a command and waits
            // for the rest: the handshake times out rather than fails.
            "no answer to the TLS handshake in time; if this Redis does not use TLS, use \
             redis://"
                .to_owned()
        } else {
            return None;
        }
    } else {
        // A TLS-only port drops a connection whose first bytes are not a TLS handshake.
        let lower = detail.to_ascii_lowercase();
        let closed = ["connectionreset", "unexpectedeof", "brokenpipe", "closed"]
            .iter()
            .any(|s| lower.contains(s));
        if !closed {
            return None;
        }
        "the connection was closed during the handshake; if this Redis requires TLS, use \
         rediss://"
            .to_owned()
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (EC P-256, valid until 2126), only ever parsed here.
    const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----
MIIBhDCCASugAwIBAgIUUCvR0cKtbwUXwgcrs4hAHcmDeg0wCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMdW5pdCB0ZXN0IENBMCAXDTI2MTIwNDEzNDgxNVoYDzIxMjYx
MTEwMTM0ODE1WjAXMRUwEwYDVQQDDAx1bml0IHRlc3QgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAASrIbJWNKFAT6UvjNCfqyoux6DU32YPip+edm1zA0Zdhs7k
IJCOrXeIRGZE5Bk/+b07M24x6KSNhTJjSPbWXlkzo1MwUTAdBgNVHQ4EFgQUF2d3
1wVw2Nvyw9CxnUICTDAOLHcwHwYDVR0jBBgwFoAUF2d31wVw2Nvyw9CxnUICTDAO
LHcwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBsxySudVZvG7MZ
BpQ9EzFxez5bzm9Iv+NzPSiwMKy9GgIgItezvzqnzhE83TytHNTmsyMOKPfg1EyF
DUo/jH8BZxg=
-----END CERTIFICATE-----
";

    fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "redis-ca-{}-{name}-{:x}.pem",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, contents).expect("write a temp file");
        path
    }

    fn reason(result: Result<Vec<CertificateDer<'static>>, ClusterError>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(certs) => panic!("expected an error, got {} certificates", certs.len()),
        }
    }

    #[test]
    fn a_pem_ca_file_is_read() {
        let path = temp_file("ok", format!("{CA_PEM}{CA_PEM}").as_bytes());
        let certs = read_ca_file(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(certs.map(|c| c.len()).ok(), Some(2));
    }

    #[test]
    fn a_missing_file_is_one_clear_line() {
        let path = std::env::temp_dir().join("no-such-dir-redis-ca/ca.pem");
        let err = reason(read_ca_file(&path));
        assert!(
            err.starts_with("--redis-ca-cert (REDIS_CA_CERT) ") && err.contains("cannot read it"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        for (name, contents) in [
            ("empty", ""),
            ("text", "hello\n"),
            (
                "key-only",
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
            ),
        ] {
            let path = temp_file(name, contents.as_bytes());
            let err = reason(read_ca_file(&path));
            let _ = std::fs::remove_file(&path);
            assert!(err.contains("holds no certificate"), "{name}: {err}");
        }
    }

    #[test]
    fn a_broken_certificate_is_refused() {
        let truncated = CA_PEM.lines().take(3).collect::<Vec<_>>().join("\n");
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for (name, contents, expected) in [
            ("truncated", truncated.as_str(), "has no END line"),
            ("garbage", garbage, "certificate #1 is unusable"),
        ] {
            let path = temp_file(name, contents.as_bytes());
            let err = reason(read_ca_file(&path));
            let _ = std::fs::remove_file(&path);
            assert!(err.contains(expected), "{name}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn the_client_config_takes_the_ca_file() {
        let path = temp_file("config", CA_PEM.as_bytes());
        let with_ca = Trust {
            ca_file: Some(&path),
            any_name: false,
        };
        let config = client_config(with_ca);
        let pinned = client_config(Trust {
            any_name: true,
            ..with_ca
        });
        let _ = std::fs::remove_file(&path);
        assert!(config.is_ok(), "{:?}", config.err());
        assert!(pinned.is_ok(), "{:?}", pinned.err());
        assert!(
            client_config(Trust::default()).is_ok(),
            "system roots alone"
        );
        assert!(
            client_config(Trust {
                ca_file: None,
                any_name: true
            })
            .is_err(),
            "no name check without a CA of the operator's own"
        );
    }

    #[test]
    fn skipping_the_name_check_refuses_a_public_ca() {
        let public = rustls_native_certs::load_native_certs().certs;
        let first = public
            .first()
            .expect("the system's CA store has certificates (Debian's ca-certificates)");
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_lines(first.as_ref())
        );
        let path = temp_file("public", pem.as_bytes());
        let skip = client_config(Trust {
            ca_file: Some(&path),
            any_name: true,
        });
        let checked = client_config(Trust {
            ca_file: Some(&path),
            any_name: false,
        });
        let _ = std::fs::remove_file(&path);
        let err = skip.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("a CA the system already trusts"), "{err}");
        assert!(checked.is_ok(), "with the name check a public CA is fine");
    }

    /// Base64 in 64-character lines, as PEM has it.
    fn base64_lines(der: &[u8]) -> String {
        use base64::Engine as _;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        text.as_bytes()
            .chunks(64)
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn io_error(inner: rustls::Error) -> fred::error::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, inner).into()
    }

    #[test]
    fn tls_failures_say_what_to_change() {
        use rustls::CertificateError;
        let says = |error: &fred::error::Error, tls: bool| explain(error, tls).unwrap_or_default();
        let untrusted = io_error(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(says(&untrusted, true).contains("not trusted"));
        assert!(says(&untrusted, true).contains("--redis-ca-cert"));
        let wrong_name = io_error(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        assert!(says(&wrong_name, true).contains("does not list this host name"));
        let plain_server = io_error(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(says(&plain_server, true).contains("use redis://"));
        let silent = fred::error::Error::new(fred::error::ErrorKind::Timeout, "Request timed out.");
        assert!(says(&silent, true).contains("use redis://"));
        assert_eq!(
            explain(&silent, false),
            None,
            "a plain timeout is no TLS matter"
        );
        for kind in [
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            let closed: fred::error::Error = std::io::Error::from(kind).into();
            assert!(says(&closed, false).contains("use rediss://"), "{kind:?}");
        }
        let refused: fred::error::Error =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(explain(&refused, false), None);
        assert_eq!(explain(&refused, true), None);
    }
}
