//! The gRPC door's admission: every call of every service checks its credentials first
//! ([`GrpcAuth`]), and TLS is tonic's own, built from the configuration's PEM files
//! ([`tls_config`]).

use std::sync::Arc;

use streamcell_admission::{Security, HANDSHAKE_TIMEOUT};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Checks the `authorization` metadata (or a verified client certificate) of every call.
#[derive(Clone)]
pub struct GrpcAuth(pub Arc<Security>);

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.0.locked() {
            return Ok(req); // every call of an open server: nothing to look at
        }
        let cert = req.peer_certs().is_some_and(|c| !c.is_empty());
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.0.check(header, cert) {
            Ok(()) => Ok(req),
            Err(e) => Err(tonic::Status::unauthenticated(e.to_string())),
        }
    }
}

/// TLS for the gRPC port (tonic builds its own rustls configuration from the PEM); `None`
/// without TLS. With a CA, a client certificate is checked when sent, and required when
/// certificates are the only credential.
pub fn tls_config(security: &Security) -> Option<ServerTlsConfig> {
    let pem = security.tls_pem()?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(pem.cert, pem.key))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = pem.ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(security.has_credentials());
    }
    Some(tls)
}
