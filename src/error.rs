//! The error that stops natsgate at start-up: a config, JWT, TLS or I/O
//! problem, each naming what is at fault.

use crate::auth::jwt::JwtLoadError;
use crate::config::ConfigError;

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
