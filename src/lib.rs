//! baton: a lock server that speaks the Redis protocol.
//!
//! Layers, outermost first: [`server`] accepts connections; [`connection`] runs one task per
//! client over the RESP [`codec`]; [`cmd`] parses requests into typed commands and executes them;
//! [`core`] is the sharded lock table, free of I/O; [`reply`] is where outcomes become replies and
//! [`errors`] holds every error text a client can see.

pub mod clients;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod connection;
pub mod core;
pub mod errors;
pub mod metrics;
pub mod reply;
pub mod server;
pub mod session;
pub mod tls;
