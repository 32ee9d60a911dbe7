//! natsgate: an authenticating TCP proxy in front of a stock nats-server.
//!
//! ```text
//!  NATS client ──TCP──▶ listener ──spawn──▶ session ──TCP──▶ nats-server
//!                                            │  ▲
//!                       auth (nonce, NKey, JWT chain)   permissions (pure)
//! ```
//!
//! # Layout
//!
//! - [`config`]: the TOML file model, validated into [`config::Settings`].
//! - [`protocol`]: the NATS wire protocol, both directions, with no I/O.
//! - [`auth`]: the nonce challenge, NKey signatures and the JWT chain.
//! - [`permissions`]: nats-server's permission semantics as pure functions.
//! - [`session`]: one client connection and its upstream connection.
//! - [`upstream`]: dialing and logging in to the nats-server.
//! - [`listener`]: the accept loop and the state sessions share.
//! - [`accounts`]: account JWT updates at runtime.

pub mod accounts;
pub mod auth;
pub mod config;
pub mod error;
pub mod listener;
pub mod metrics;
pub mod permissions;
pub mod protocol;
pub mod session;
pub mod tls;
pub mod transport;
pub mod upstream;

pub use error::Error;
pub use listener::{run, run_with_listeners};
