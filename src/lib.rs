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
//! Imports only point down this list (`python3 scripts/layers.py` checks it).
//!
//! - [`service`]: starts everything and waits for the end. Owns no state.
//! - [`error`]: the error that stops natsgate at start-up.
//! - [`listener`]: accepts, applies `max_connections`, refuses, spawns a
//!   session. Not: what a session does.
//! - [`reload`]: SIGHUP and the `accounts_dir` poll, applied to the gate.
//!   Not: how a session reacts (it re-checks itself).
//! - [`session`]: one client connection from INFO to close: handshake,
//!   relay, order of replies, drain on close. Not: shared state.
//! - [`resolver`]: the NATS account resolver protocol natsgate answers for
//!   system-account users, and the watch of the `[jwt.kv]` bucket. Not:
//!   where JWTs are kept.
//! - [`gate`]: what sessions share: settings, the authenticator swap,
//!   upstream pool, metrics, account counts, INFO. Not: any connection.
//! - [`upstream`]: dialing and logging in to the nats-server. Not: relaying.
//! - [`store`]: where accepted account JWTs are kept (`accounts_dir`, the
//!   `[jwt.kv]` bucket). Not: checking them.
//! - [`metrics`]: every series and the HTTP endpoints. Not: when to count.
//! - [`auth`]: nonce, NKey signatures, the JWT chain. Not: the wire.
//! - [`tls`]: rustls configurations from the settings. Not: the handshake.
//! - [`config`]: the TOML file model, validated into [`config::Settings`].
//! - [`permissions`]: nats-server's permission semantics as pure functions.
//! - [`protocol`]: the NATS wire protocol, parsed and encoded, with no I/O.
//! - [`transport`]: a socket (plain or TLS) driven without blocking, and its
//!   output queue. Not: what the bytes mean.
//! - [`shutdown`]: stop signals and the grace period.

#![forbid(unsafe_code)]

pub mod advisories;
pub mod auth;
pub mod config;
pub mod error;
pub mod gate;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod permissions;
pub mod protocol;
pub mod reload;
pub mod resolver;
pub mod service;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod tls;
pub mod transport;
pub mod upstream;

pub use error::Error;
pub use service::{run, run_with_listeners, run_with_websocket};
