//! TLS for the optional `--tls-port` listener, with rustls (ring provider). With
//! `--tls-ca-cert-file` clients must present a certificate signed by that CA, like Redis's
//! `tls-auth-clients yes`.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
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

/// The acceptor for `--tls-port`, or None when TLS is off.
pub(crate) fn acceptor(config: &Config) -> Result<Option<TlsAcceptor>, String> {
    if config.tls_port.is_none() {
        return Ok(None);
    }
    let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Err("--tls-port needs --tls-cert-file and --tls-key-file".to_owned());
    };
    let certs = certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|error| format!("cannot read the private key from {}: {error}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS set-up: {error}"))?;
    let builder = match &config.tls_ca_cert_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_file)? {
                roots.add(cert).map_err(|error| format!("bad CA certificate in {}: {error}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("client certificate verifier: {error}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server_config =
        builder.with_single_cert(certs, key).map_err(|error| format!("TLS certificate and key: {error}"))?;
    Ok(Some(TlsAcceptor::from(Arc::new(server_config))))
}
