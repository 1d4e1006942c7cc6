//! baton: a lock server that speaks the Redis protocol.
//!
//! Layers, each using only the ones below it:
//!
//! 1. [`config`], `errors`, [`logging`], [`memory`] (the allocator and its figures) and [`core`]
//!    (the sharded lock table, free of I/O);
//! 2. [`codec`] (RESP framing), `reply` (where outcomes become replies), `clients` (the registry
//!    behind CLIENT LIST), `acl` (users and permissions), `metrics`, `write_progress`, and what
//!    the server sends unasked: `outbox` (each connection's queue of it), `pubsub` (channels,
//!    subscribers, the lock events) and `monitor` (MONITOR);
//! 3. `context`: what every connection shares;
//! 4. `session`: one connection's state;
//! 5. `cmd`: requests parsed into typed commands and executed;
//! 6. `connection`: one task per client;
//! 7. [`server`]: listeners (with `fd_limit` and `http` for the metrics endpoint), the event
//!    loops that serve connections (`event_loops`, with `loop_wakes`), background tasks and
//!    shutdown; the binary's `main` on top.
//!
//! The public surface is what the binary, the integration tests and the fuzz targets need.

// A panic on a value that is not there is a bug waiting for the input that triggers it; tests may
// unwrap (clippy.toml).
#![warn(clippy::unwrap_used)]

mod acl;
mod clients;
mod cluster;
mod cmd;
pub mod codec;
pub mod config;
mod connection;
mod context;
pub mod core;
mod cpu;
mod direct;
mod errors;
mod event_loops;
mod fanout;
mod fd_limit;
mod http;
mod journal;
pub mod logging;
mod loop_wakes;
pub mod memory;
mod metrics;
mod monitor;
mod outbox;
mod owner;
mod persistence;
mod pubsub;
mod reply;
mod run_queue;
pub mod server;
mod session;
mod text;
mod tls;
mod write_progress;

/// Entry points for the fuzz targets, so they exercise the real request path rather than a copy.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::Bytes;

    use crate::cmd::lock::LockLimits;
    use crate::cmd::{Command, resolve};
    use crate::reply::Reply;

    /// Resolves and parses a request exactly as a connection does before executing it. Err is the
    /// error line the client would get.
    pub fn parse_request(args: Vec<Bytes>, max_key_bytes: usize, max_result_bytes: usize) -> Result<(), String> {
        let limits = LockLimits { max_key_bytes, max_result_bytes };
        match resolve(&args).and_then(|spec| Command::parse(spec, args, limits)) {
            Ok(_) => Ok(()),
            Err(Reply::Error(line)) => Err(line.into_owned()),
            Err(other) => panic!("a parse error must be an error reply, got {other:?}"),
        }
    }
}
