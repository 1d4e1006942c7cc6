//! TLS with rustls (ring provider): for the optional `--tls-port` listener, where with
//! `--tls-ca-cert-file` clients must present a certificate signed by that CA (like Redis's
//! `tls-auth-clients yes`), and for the cluster bus (see `cluster::bus_security`), where nodes
//! verify each other both ways against that CA.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("cannot read certificates from {}: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|error| format!("cannot read the private key from {}: {error}", path.display()))
}

fn roots(ca_file: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_file)? {
        roots.add(cert).map_err(|error| format!("bad CA certificate in {}: {error}", ca_file.display()))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server presenting `cert_file`; with `client_ca_file`, its clients must present a
/// certificate signed by a CA in it.
pub(crate) fn server_config(
    cert_file: &Path,
    key_file: &Path,
    client_ca_file: Option<&Path>,
) -> Result<rustls::ServerConfig, String> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up: {error}"))?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_file)?, provider)
                .build()
                .map_err(|error| format!("client certificate verifier: {error}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certificates(cert_file)?, private_key(key_file)?)
        .map_err(|error| format!("TLS certificate and key: {error}"))
}

/// A client that trusts the CAs in `ca_file` only and presents `cert_file` when asked.
pub(crate) fn client_config(cert_file: &Path, key_file: &Path, ca_file: &Path) -> Result<rustls::ClientConfig, String> {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up: {error}"))?
        .with_root_certificates(roots(ca_file)?)
        .with_client_auth_cert(certificates(cert_file)?, private_key(key_file)?)
        .map_err(|error| format!("TLS client certificate and key: {error}"))
}

/// The acceptor for `--tls-port`, or None when TLS is off.
pub(crate) fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    if config.tls_port.is_none() {
        return Ok(None);
    }
    let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Err("--tls-port needs --tls-cert-file and --tls-key-file".to_owned());
    };
    let server_config = server_config(cert_file, key_file, config.tls_ca_cert_file.as_deref())?;
    Ok(Some(TlsAcceptor::from(Arc::new(server_config))))
}
