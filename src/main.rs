// See lib.rs: no unwrap outside tests.
#![warn(clippy::unwrap_used)]

use std::io::IsTerminal;
use std::process::ExitCode;

use baton::config::{Config, LogFormat};
use baton::server::Server;
use clap::Parser;
use futures_util::future::select_all;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: baton::memory::Allocator = baton::memory::Allocator;

fn main() -> ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let colours = std::io::stderr().is_terminal();
    let (writer, _flush_logs_on_exit) = baton::logging::to_stderr();
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(colours);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    // This thread accepts and runs the background work (the lease reaper, metrics, the journal's
    // loading and rewrites); connections are served by the server's event loops (`--threads`).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Before the listeners open: once a client can see the server, a signal must not kill it.
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(err) => {
                error!(error = %err, "cannot install the signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let server = match Server::bind(config.clone()).await {
            Ok(server) => server,
            Err(err) => {
                error!(bind = %config.bind, port = config.port, error = %err, "cannot start the server");
                return ExitCode::FAILURE;
            }
        };
        match server.run(signals.until_shutdown()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                error!(error = %err, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OnSignal {
    Shutdown,
    Ignore,
}

/// Every signal whose default action would end the process at once, dropping blocked waiters'
/// connections without an answer, is handled here instead.
const HANDLED: [(&str, SignalKind, OnSignal); 6] = [
    ("SIGINT", SignalKind::interrupt(), OnSignal::Shutdown),
    ("SIGTERM", SignalKind::terminate(), OnSignal::Shutdown),
    // Its default also dumps core; operators who send it want the process gone, so it stops as
    // cleanly as on SIGTERM.
    ("SIGQUIT", SignalKind::quit(), OnSignal::Shutdown),
    // Redis ignores SIGHUP. baton has no configuration or log file to reopen.
    ("SIGHUP", SignalKind::hangup(), OnSignal::Ignore),
    ("SIGUSR1", SignalKind::user_defined1(), OnSignal::Ignore),
    ("SIGUSR2", SignalKind::user_defined2(), OnSignal::Ignore),
];

struct Signals {
    streams: Vec<Signal>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let streams = HANDLED.iter().map(|&(_, kind, _)| signal(kind)).collect::<Result<_, _>>()?;
        Ok(Signals { streams })
    }

    /// Resolves on the first signal that means shutdown, logging those that are ignored.
    async fn until_shutdown(mut self) {
        loop {
            let (_, index, _) = select_all(self.streams.iter_mut().map(|stream| Box::pin(stream.recv()))).await;
            let (name, _, action) = HANDLED[index];
            match action {
                OnSignal::Shutdown => {
                    info!(signal = name, "received a shutdown signal");
                    return;
                }
                OnSignal::Ignore => warn!(signal = name, "received a signal that baton ignores"),
            }
        }
    }
}
