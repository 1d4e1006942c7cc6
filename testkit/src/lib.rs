//! Tooling for testing a RESP server from the outside, shared by baton's integration tests, its
//! load generator (`bench/`) and its fuzz targets, so that each piece exists once.
//!
//! It knows RESP and processes, not baton: nothing here depends on the server crate (its
//! integration tests depend on this crate, and a cycle would give them two copies of its types).
//!
//! - [`request`]: requests as RESP multibulk bytes, and the `args!` macro;
//! - [`reply`]: replies as read off the wire (RESP2 and RESP3), and their parser;
//! - [`client`]: a raw RESP connection over tokio, fallible ([`client::Connection`]) or
//!   panicking for tests ([`client::Raw`]);
//! - [`redis_crate`]: connecting with the `redis` crate, and its values as [`Resp`];
//! - [`process`]: child processes killed on drop, a server child that reports its address in its
//!   log, resident memory from /proc;
//! - [`proxy`]: a TCP link a test can cut and heal, as a network partition would;
//! - [`pieces`] and [`decode`]: feeding a byte stream in pieces, to a `tokio_util` decoder too;
//! - [`rng`]: a small seeded PRNG, so a failure can be replayed;
//! - [`scratch`]: a temporary directory removed when dropped (each server's journal needs one).

#[cfg(feature = "client")]
pub mod client;
pub mod decode;
pub mod pieces;
pub mod process;
pub mod proxy;
#[cfg(feature = "redis")]
pub mod redis_crate;
pub mod reply;
pub mod request;
pub mod rng;
pub mod scratch;

pub use reply::Resp;
pub use request::{IntoArg, encode, encode_into};
pub use rng::Rng;
