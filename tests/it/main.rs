//! The fast integration tests, one test binary (linking one per file cost more than running them
//! on two cores). Each module is one former test file; the slow suites (model, history, faults,
//! garbage) stay binaries of their own so they can be run, and fail, on their own.

mod common;

mod acl;
mod connection_cmds;
mod contention;
mod lock_basic;
mod lock_handoff;
mod lock_lease;
mod operator;
mod protocol;
mod safety;
mod tls;
