//! The baton binary as a child process, for the tests that need a real process to signal, kill or
//! measure (tests/faults.rs, tests/garbage.rs and tests/clients/main.rs include this file). The
//! process control itself is `baton_testkit::process`; only what names this package's binary
//! lives here.

use std::net::SocketAddr;
use std::process::Command;

use baton_testkit::process::ServerProcess;
use baton_testkit::scratch::ScratchDir;

/// Starts `baton --bind 127.0.0.1 --ephemeral-port <args>` with `RUST_LOG=<rust_log>`; the port it
/// got comes from its startup log line. Unless `args` name a `--dir`, its journal goes to a
/// directory of its own, removed with the process.
pub fn start_baton(args: &[&str], rust_log: &str) -> ServerProcess {
    if args.contains(&"--dir") {
        return ServerProcess::start(&mut baton_command(args, rust_log), listening_addr);
    }
    let dir = ScratchDir::new("baton-child");
    let mut command = baton_command(args, rust_log);
    command.args(["--dir", dir.arg()]);
    ServerProcess::start(&mut command, listening_addr).owning(dir)
}

fn baton_command(args: &[&str], rust_log: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
    command.args(["--bind", "127.0.0.1", "--ephemeral-port"]).args(args).env("NO_COLOR", "1").env("RUST_LOG", rust_log);
    command
}

/// The plaintext address in baton's startup log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("ready to accept connections") {
        return None;
    }
    line.split_whitespace().find_map(|word| word.strip_prefix("addr="))?.parse().ok()
}
