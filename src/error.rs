//! The top-level error, tagged with the side that caused it.

use crate::auth::jwt::JwtLoadError;
use crate::config::ConfigError;

/// Which side of the proxy a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

/// An error that stops natsgate (start-up or fatal runtime failure).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Jwt(#[from] JwtLoadError),
    /// A TLS certificate, key or CA that cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn side(&self) -> Side {
        Side::Internal
    }
}
