//! The baton binary as a child process, for the tests that need a real process to signal, kill or
//! measure (tests/faults.rs, tests/garbage.rs and tests/clients/main.rs include this file). The
//! process control itself is `baton_testkit::process`; only what names this package's binary
//! lives here.

use std::net::SocketAddr;
use std::process::Command;

use baton_testkit::process::ServerProcess;

/// Starts `baton --bind 127.0.0.1 --ephemeral-port <args>` with `RUST_LOG=<rust_log>`; the port it
/// got comes from its startup log line.
pub fn start_baton(args: &[&str], rust_log: &str) -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
    command.args(["--bind", "127.0.0.1", "--ephemeral-port"]).args(args).env("NO_COLOR", "1").env("RUST_LOG", rust_log);
    ServerProcess::start(&mut command, listening_addr)
}

/// The plaintext address in baton's startup log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("ready to accept connections") {
        return None;
    }
    line.split_whitespace().find_map(|word| word.strip_prefix("addr="))?.parse().ok()
}
