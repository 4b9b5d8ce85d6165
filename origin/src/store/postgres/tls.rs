//! TLS to the PostgreSQL server, configured from the URL alone as libpq users expect
//! (`?sslmode=…&sslrootcert=PATH`), with `rustls` (the TLS stack the origin already
//! has for HTTPS) through `tokio-postgres-rustls`.
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked, unless `sslrootcert` is given |
//! | `require` | always | not checked, unless `sslrootcert` is given (then checked against it) |
//! | `verify-ca`, `verify-full` | always | checked against `sslrootcert`, else the Mozilla roots (`webpki-roots`), and the host name must match (for both modes: stricter than libpq's `verify-ca`) |
//!
//! As with libpq, `prefer` and `require` without a root certificate encrypt but do not
//! authenticate the server: use `verify-full` (and `sslrootcert` for a private CA, as
//! managed databases such as RDS or Cloud SQL have) where the network is not trusted.
//! A TLS connection refused for its certificate is an error, never a fallback to plain
//! TCP.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use thiserror::Error;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("not a PostgreSQL URL: {0}")]
    Url(String),
    #[error("sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full")]
    Mode(String),
    #[error("sslrootcert {path}: {why}")]
    RootCert { path: PathBuf, why: String },
}

/// What a URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode tokio-postgres applies (`verify-*` are `require` there).
    pub mode: SslMode,
    /// Whether the server's certificate (and host name) is checked.
    pub verify: bool,
    /// PEM file of the root certificates to check against.
    pub root_cert: Option<PathBuf>,
}

/// Splits a `postgres://` URL into what tokio-postgres parses (the URL without the
/// parameters it does not know: `sslrootcert`, and `sslmode=verify-*` written as
/// `require`) and the TLS settings. A key=value connection string is parsed as is.
pub fn split(url: &str) -> Result<(tokio_postgres::Config, TlsSettings), TlsError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) if url.contains("://") => (base, query),
        _ => (url, ""),
    };
    let mut kept = Vec::new();
    let mut mode_name = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => mode_name = Some(value.to_owned()),
            "sslrootcert" => {
                // `%XX` escapes decoded (a path may hold spaces or `&`).
                let path = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                root_cert = Some(PathBuf::from(path.as_ref()));
            }
            _ => kept.push(pair),
        }
    }
    let (mode, verify) = match mode_name.as_deref() {
        None | Some("prefer") => (SslMode::Prefer, false),
        Some("disable") => (SslMode::Disable, false),
        Some("require") => (SslMode::Require, false),
        Some("verify-ca") | Some("verify-full") => (SslMode::Require, true),
        Some(other) => return Err(TlsError::Mode(other.to_owned())),
    };
    let clean = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    let mut config: tokio_postgres::Config = clean
        .parse()
        .map_err(|e: tokio_postgres::Error| TlsError::Url(e.to_string()))?;
    config.ssl_mode(mode);
    let verify = verify || (root_cert.is_some() && mode != SslMode::Disable);
    Ok((
        config,
        TlsSettings {
            mode,
            verify,
            root_cert,
        },
    ))
}

/// The TLS connector for `settings` (reads `sslrootcert`).
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Url(e.to_string()))?;
    let config = if settings.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &settings.root_cert {
            Some(path) => {
                let bad = |why: String| TlsError::RootCert {
                    path: path.clone(),
                    why,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if certs.is_empty() {
                    return Err(bad("no PEM certificate in it".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Parses `url` and builds its connector in one step.
pub fn config_and_connector(
    url: &str,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), TlsError> {
    let (config, settings) = split(url)?;
    Ok((config, connector(&settings)?))
}

/// libpq's `sslmode=prefer`/`require` without a root certificate: any certificate is
/// taken (the handshake's signatures are still checked), so the connection is
/// encrypted but the server not authenticated.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_keeps_what_tokio_postgres_knows_and_gives_the_tls_settings() {
        let (config, s) =
            split("postgres://app:pw@db:5432/recs?application_name=x&sslmode=verify-full&sslrootcert=/etc/ssl/my%20ca.pem")
                .unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(config.get_dbname(), Some("recs"));
        assert!(s.verify);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ssl/my ca.pem")));

        let (config, s) = split("postgres://db/recs").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer);
        assert!(!s.verify, "prefer without a root certificate: encrypt only");

        let (_, s) = split("postgres://db/recs?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert!(
            s.verify,
            "require with a root certificate checks it, as libpq"
        );
        let (config, s) = split("postgres://db/recs?sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        assert!(!s.verify);
    }

    #[test]
    fn a_bad_mode_or_root_certificate_is_a_clear_error() {
        let e = split("postgres://db/recs?sslmode=allow").unwrap_err();
        assert!(e.to_string().contains("\"allow\""), "{e}");
        let (_, s) = split("postgres://db/recs?sslmode=verify-full&sslrootcert=/nope.pem").unwrap();
        let e = connector(&s).err().expect("a missing file is an error");
        assert!(e.to_string().contains("/nope.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let s = TlsSettings {
            mode: SslMode::Require,
            verify: true,
            root_cert: Some(empty),
        };
        let e = connector(&s).err().expect("no certificate is an error");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        assert!(connector(&split("postgres://db/recs?sslmode=verify-full").unwrap().1).is_ok());
    }

    /// Whether the store's connections are encrypted (`pg_stat_ssl`).
    async fn encrypted(url: &str) -> Result<bool, String> {
        let store = crate::store::PostgresStore::connect(url, "default", 1)
            .await
            .map_err(|e| e.to_string())?;
        let client = store.pool().get().await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.get(0))
    }

    /// Against a real PostgreSQL 15 with TLS on (a self-signed certificate): each
    /// mode connects as the table in the module docs says, and the leader election's
    /// connection too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_sslmode_connects_to_a_real_server_as_documented() {
        if super::super::test_server::require().is_none() {
            return;
        }
        let server = super::super::test_server::PgServer::start().unwrap();
        let root = server.enable_tls().await.unwrap();
        let url = server.url("postgres");
        let root_param = root.display().to_string().replace(' ', "%20");

        assert!(!encrypted(&format!("{url}?sslmode=disable")).await.unwrap());
        assert!(
            encrypted(&url).await.unwrap(),
            "prefer takes the offered TLS"
        );
        assert!(encrypted(&format!("{url}?sslmode=require")).await.unwrap());
        let verified = format!("{url}?sslmode=verify-full&sslrootcert={root_param}");
        assert!(encrypted(&verified).await.unwrap());
        let e = encrypted(&format!("{url}?sslmode=verify-full"))
            .await
            .expect_err("a self-signed certificate is not in the Mozilla roots");
        assert!(e.to_lowercase().contains("certificate"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let stranger = other.path().join("other.crt");
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(other.path().join("other.key"))
            .arg("-out")
            .arg(&stranger)
            .output()
            .unwrap();
        assert!(made.status.success());
        let e = encrypted(&format!(
            "{url}?sslmode=require&sslrootcert={}",
            stranger.display()
        ))
        .await
        .expect_err("require with another root checks against it");
        assert!(e.to_lowercase().contains("certificate"), "{e}");

        let leader = crate::leader::Leadership::elect(
            &verified,
            "default",
            std::time::Duration::from_millis(200),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !leader.is_leader() {
            assert!(std::time::Instant::now() < deadline, "no leader over TLS");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
