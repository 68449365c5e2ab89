//! SIP over TLS: the rustls server and client configurations `[sip.tls]`
//! asks for, read from its PEM files when the bridge starts. The streams
//! themselves are framed like TCP's in `transport.rs`.
//!
//! The crypto provider is ring (no C toolchain beyond what `cc` needs, and
//! the same as reqwest's here). Phones may present a certificate, and must
//! when `require_client_certificate` is set; outbound TLS calls check the
//! server's certificate against `sip.tls.ca`, or the Mozilla roots, for the
//! Request-URI's host, and present the bridge's own certificate if asked.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

/// Why `[sip.tls]` could not be set up; names the key whose file is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("sip.tls.{key}: cannot read {path}: {why}")]
    Unreadable {
        key: &'static str,
        path: String,
        why: String,
    },
    #[error("sip.tls.{key}: {path} holds no {what} in PEM")]
    Empty {
        key: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("sip.tls: {0}")]
    Rejected(String),
}

/// What the transport needs to speak TLS.
#[derive(Clone)]
pub struct TlsSetup {
    pub listen: SocketAddr,
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

fn certificates(
    path: &Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let unreadable = |why: String| TlsSetupError::Unreadable {
        key,
        path: path.display().to_string(),
        why,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsSetupError::Empty {
            key,
            path: path.display().to_string(),
            what: "CERTIFICATE",
        });
    }
    Ok(certificates)
}

/// Reads `[sip.tls]`'s files and builds both configurations.
pub fn load(config: &TlsConfig) -> Result<TlsSetup, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&config.certificate, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| {
        let path = config.key.display().to_string();
        match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsSetupError::Empty {
                key: "key",
                path,
                what: "PRIVATE KEY",
            },
            other => TlsSetupError::Unreadable {
                key: "key",
                path,
                why: other.to_string(),
            },
        }
    })?;
    let ca = match &config.ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, "ca")? {
                roots
                    .add(certificate)
                    .map_err(|e| TlsSetupError::Rejected(format!("sip.tls.ca: {e}")))?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let rejected = |e: rustls::Error| TlsSetupError::Rejected(e.to_string());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rejected)?;
    let server = match &ca {
        Some(roots) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let verifier = if config.require_client_certificate {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsSetupError::Rejected(format!("sip.tls.ca: {e}")))?;
            server.with_client_cert_verifier(verifier)
        }
        None => server.with_no_client_auth(),
    }
    .with_single_cert(chain.clone(), key.clone_key())
    .map_err(|e| TlsSetupError::Rejected(format!("sip.tls.certificate and sip.tls.key: {e}")))?;
    let roots = ca.unwrap_or_else(|| {
        Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
    });
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(rejected)?;
    Ok(TlsSetup {
        listen: config.listen,
        acceptor: TlsAcceptor::from(Arc::new(server)),
        connector: TlsConnector::from(Arc::new(client)),
    })
}

/// The name an outbound TLS connection checks the server's certificate
/// for: the host of the Request-URI of the request that opens it
/// (`INVITE sips:alice@pbx.example.com SIP/2.0`), else the address.
pub fn server_name(request: &[u8], destination: SocketAddr) -> ServerName<'static> {
    let host = std::str::from_utf8(request)
        .ok()
        .and_then(|text| text.split("\r\n").next())
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|uri| uri.split_once(':').map(|(_, rest)| rest))
        .map(|rest| rest.split([';', '?']).next().unwrap_or_default())
        .map(|address| address.rsplit_once('@').map_or(address, |(_, host)| host))
        .map(host_of);
    host.and_then(|host| ServerName::try_from(host.to_owned()).ok())
        .unwrap_or(ServerName::IpAddress(destination.ip().into()))
}

/// `host` of `host[:port]`, IPv6 without its brackets.
fn host_of(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => hostport,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn the_server_name_is_the_request_uris_host() {
        let to = SocketAddr::from(([192, 0, 2, 7], 5061));
        let name = |line: &str| server_name(format!("{line}\r\nVia: x\r\n\r\n").as_bytes(), to);
        assert_eq!(
            name("INVITE sips:alice@pbx.example.com:5061;transport=tls SIP/2.0"),
            ServerName::try_from("pbx.example.com").expect("dns")
        );
        assert_eq!(
            name("BYE sip:bob@[2001:db8::1]:5061;transport=tls SIP/2.0"),
            ServerName::IpAddress(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]).into())
        );
        assert_eq!(
            name("garbage"),
            ServerName::IpAddress(IpAddr::from([192, 0, 2, 7]).into())
        );
    }

    #[test]
    fn missing_files_name_their_key() {
        let config = TlsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            certificate: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            ca: None,
            require_client_certificate: false,
        };
        let error = load(&config).expect_err("no such file").to_string();
        assert!(
            error.starts_with("sip.tls.certificate: cannot read /nonexistent/cert.pem"),
            "{error}"
        );
    }
}
