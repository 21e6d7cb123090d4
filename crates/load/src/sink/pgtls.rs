//! TLS for PostgreSQL connections, with libpq's `sslmode` semantics, over rustls.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and nothing of certificates;
//! managed servers (Cloud SQL, RDS) are reached with `require`, `verify-ca` or
//! `verify-full` and a CA bundle in `sslrootcert`. So both parameters are taken out of
//! the connection string here and applied as libpq does:
//!
//! | sslmode | TLS | chain checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | – | – |
//! | `prefer` (default) | if the server offers it | no | no |
//! | `require` | yes | only when `sslrootcert` is given (as libpq) | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! Roots: the PEM file `sslrootcert` names, or the system's roots when it is absent or
//! `system`.

use crate::error::LoadError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// The TLS set-up of a connection.
pub enum Tls {
    Off,
    On(tokio_postgres_rustls::MakeRustlsConnect),
}

/// `sslmode` values, as libpq spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

fn config_err(message: String) -> LoadError {
    LoadError::Config(format!("PostgreSQL TLS: {message}"))
}

/// Splits `sslmode`/`sslrootcert` out of a `postgres://` URL or a `key=value`
/// connection string; returns the string tokio-postgres gets and the TLS set-up.
pub fn configure(conn: &str) -> Result<(String, Tls), LoadError> {
    let (rest, params) = take_params(conn);
    let mode = match params.mode.as_deref() {
        None | Some("prefer") => Mode::Prefer,
        Some("disable") => Mode::Disable,
        Some("allow") => Mode::Prefer,
        Some("require") => Mode::Require,
        Some("verify-ca") => Mode::VerifyCa,
        Some("verify-full") => Mode::VerifyFull,
        Some(other) => return Err(config_err(format!("sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"))),
    };
    let pg_mode = match mode {
        Mode::Disable => "disable",
        Mode::Prefer => "prefer",
        _ => "require",
    };
    let conn = with_param(&rest, "sslmode", pg_mode);
    if mode == Mode::Disable {
        return Ok((conn, Tls::Off));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = match (mode, params.root_cert.is_some()) {
        (Mode::Prefer, _) | (Mode::Require, false) => Check::Nothing,
        (Mode::Require, true) | (Mode::VerifyCa, _) => Check::Chain,
        _ => Check::Full,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(AcceptAny(provider.clone())),
        Check::Chain | Check::Full => {
            let roots = roots(params.root_cert.as_deref())?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(|e| config_err(e.to_string()))?;
            if check == Check::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((conn, Tls::On(tokio_postgres_rustls::MakeRustlsConnect::new(config))))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    Full,
}

#[derive(Debug, Default, PartialEq)]
struct Params {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// Removes `sslmode` and `sslrootcert` from `conn` (URL query or `key=value` words).
fn take_params(conn: &str) -> (String, Params) {
    let mut p = Params::default();
    let mut keep = |k: &str, v: &str| match k {
        "sslmode" => {
            p.mode = Some(v.to_string());
            false
        }
        "sslrootcert" => {
            p.root_cert = Some(v.to_string());
            false
        }
        _ => true,
    };
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else { return (conn.to_string(), p) };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                keep(k, &percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        (rest, p)
    } else {
        let kept: Vec<&str> = conn
            .split_whitespace()
            .filter(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                keep(k.trim(), v.trim_matches('\''))
            })
            .collect();
        (kept.join(" "), p)
    }
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn with_param(conn: &str, k: &str, v: &str) -> String {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let sep = if conn.contains('?') { '&' } else { '?' };
        format!("{conn}{sep}{k}={v}")
    } else {
        format!("{conn} {k}={v}")
    }
}

/// The trust anchors: a PEM bundle, or the system's.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, LoadError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                store.add(c).ok();
            }
            if store.is_empty() {
                return Err(config_err("no system CA certificates found; name the server's CA bundle with sslrootcert=FILE".into()));
            }
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| config_err(format!("sslrootcert {path}: {e}")))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| config_err(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(config_err(format!("sslrootcert {path}: no usable certificate in it")));
            }
        }
    }
    Ok(store)
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is
/// not compared with the host connected to.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, not authenticated
/// (libpq's behaviour; say `verify-full` to authenticate the server).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_taken_out_of_urls_and_keyword_strings() {
        let (rest, p) = take_params("postgres://u@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(p, Params { mode: Some("verify-full".into()), root_cert: Some("/tmp/ca.pem".into()) });
        let (rest, p) = take_params("host=h user=u sslmode=require sslrootcert='/x/ca.pem'");
        assert_eq!(rest, "host=h user=u");
        assert_eq!(p, Params { mode: Some("require".into()), root_cert: Some("/x/ca.pem".into()) });
        assert_eq!(take_params("postgres://h/db").0, "postgres://h/db");
    }

    #[test]
    fn modes_map_onto_what_tokio_postgres_knows() {
        let (conn, tls) = configure("postgres://h/db?sslmode=disable").expect("disable");
        assert!(matches!(tls, Tls::Off));
        assert_eq!(conn, "postgres://h/db?sslmode=disable");
        let (conn, tls) = configure("postgres://h/db?sslmode=require").expect("require");
        assert!(matches!(tls, Tls::On(_)));
        assert_eq!(conn, "postgres://h/db?sslmode=require");
        assert_eq!(configure("host=h").expect("default").0, "host=h sslmode=prefer");
        let e = configure("postgres://h/db?sslmode=verify-everything").err().expect("refused");
        assert!(e.to_string().contains("verify-everything"), "{e}");
        let e = configure("postgres://h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem").err().expect("refused");
        assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
    }
}
