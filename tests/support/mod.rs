//! Shared support for natsgate's integration tests: a real nats-server
//! ([`NatsServer`]), natsgate in-process ([`Gate`]), a raw-protocol client
//! ([`RawClient`]) and NKey helpers ([`keys`]).
//!
//! Use from a test file with `mod support;`.
#![allow(dead_code, unused_imports)]

pub mod gate;
pub mod jwt;
pub mod keys;
pub mod raw;
pub mod server;

pub use gate::Gate;
pub use raw::{DEFAULT_TIMEOUT, FlushError, Frame, RawClient, ReadError};
pub use server::{NatsServer, nats_server_bin, quote_conf};

/// Quotes a string as a TOML basic string.
pub fn quote_toml(s: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::Value::String(s.to_owned()).to_string()
}
