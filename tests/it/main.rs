//! The fast integration tests, one test binary (linking one per file cost more than running them
//! on two cores). Each module is one former test file; the slow suites (model, history, faults,
//! garbage) stay binaries of their own so they can be run, and fail, on their own.

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

mod common;

/// The server's allocator, so that INFO's memory figures and `--maxmemory` see what they see in
/// production.
#[global_allocator]
static ALLOCATOR: baton::memory::Allocator = baton::memory::Allocator;

mod acl;
mod cluster_cmds;
mod connection_cmds;
mod contention;
mod keyspace;
mod lock_basic;
mod lock_handoff;
mod lock_lease;
mod memory;
mod monitor;
mod operator;
mod ops;
mod protocol;
mod pubsub;
mod safety;
mod tls;
