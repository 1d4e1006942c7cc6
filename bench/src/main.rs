//! `baton-bench`: a load generator that runs the same workloads against baton and against Redis
//! (with the closest Redis recipe) and prints one machine-readable `RESULT` line per figure.
//! `scripts/bench.sh` starts both servers, runs every workload against each, and renders the
//! lines into a Markdown table with the `table` subcommand.
//!
//! Every connection goes to 127.0.0.1 only, every read and write has a timeout, and every loop is
//! bounded by a duration or a count, so a run always ends by itself.
//!
//! Output line format (tab separated):
//! `RESULT <id> <target> <value> <better> <workload label> <metric label>`
//! where `better` is `higher`, `lower` or `none`.
//!
//! Latency histograms also get a `QUANTILES <id> <target> <q>:<µs> …` line (their distribution,
//! for the charts).
//!
//! Layout: `cli` (flags), `client` (the RESP client as the workloads use it), `fill` (connections
//! that build up held locks or places in line), one module per workload (`cycle` W1, `handoff`
//! W3, `fanout` W4 and `floor` the least a server can do for it, `contended` W5 with its FIFO
//! check in `fifo`, `memory` W6 and the S3 scale curve, `scale` the S1 and S2 scale curves),
//! `stats` (time, histograms), `report` (RESULT lines and the table), `results` (reading the lines
//! back), `charts` (SVG charts of them). W2 is redis-benchmark, run by scripts/bench.sh.
//!
//! The cluster workloads (issue 12) run against baton's cluster and against etcd's: `locker` is
//! one client of either (`baton_cluster` through a Redis Cluster client, `etcd` through etcd's
//! gRPC API), `cluster_cycle` C1, `cluster_handoff` C2, `failover` C3.

mod baton_cluster;
mod charts;
mod cli;
mod client;
mod cluster_cycle;
mod cluster_handoff;
mod contended;
mod cycle;
mod etcd;
mod failover;
mod fanout;
mod fifo;
mod fill;
mod floor;
mod handoff;
mod locker;
mod memory;
mod report;
mod results;
mod scale;
mod stats;

use std::error::Error;

use clap::Parser;
use tokio::task::JoinSet;

use cli::{Cli, Command, Target};

pub type BoxError = Box<dyn Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

pub fn fail<T>(message: impl Into<String>) -> Res<T> {
    Err(message.into().into())
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Cycle { common, .. }
        | Command::Handoff { common, .. }
        | Command::Fanout { common, .. }
        | Command::Contended { common, .. }
        | Command::Memory { common, .. }
        | Command::ScaleHeld { common, .. }
        | Command::ScaleQueue { common, .. }
        | Command::ScaleMemory { common, .. } => common.threads,
        Command::ClusterCycle { cluster, .. }
        | Command::ClusterHandoff { cluster, .. }
        | Command::ClusterFailover { cluster, .. } => cluster.threads,
        Command::Table { .. } | Command::Charts { .. } | Command::FreePort | Command::FanoutFloor { .. } => 1,
    };
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("baton-bench: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Fixes the time base before any workload reads it.
    let _ = stats::now_ns();
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("baton-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub async fn run(command: Command) -> Res<()> {
    match command {
        Command::Cycle { common, connections, pipeline, duration, warmup, pid } => {
            cycle::cycle(&common, connections, pipeline.max(1), duration, warmup, pid).await
        }
        Command::Handoff { common, waiters, handoffs, pings } => {
            handoff::ping_floor(&common, pings).await?;
            match common.target {
                Target::Baton => handoff::handoff_baton(&common, waiters.max(1), handoffs).await,
                Target::Redis => handoff::handoff_redis(&common, waiters.max(1), handoffs).await,
            }
        }
        Command::Fanout { common, waiters, rounds, pid } => {
            let largest = waiters.iter().copied().max().unwrap_or(0);
            for count in waiters {
                let pid = if count == largest { pid } else { None };
                fanout::fanout(&common, count, rounds.max(1), pid).await?;
            }
            Ok(())
        }
        Command::FanoutFloor { port } => floor::serve(port).await,
        Command::Contended { common, clients, keys, duration, warmup, wait_timeout_ms, failure_pct } => {
            let settings = contended::ContendedSettings {
                clients,
                keys: keys.max(1),
                duration,
                warmup,
                wait_timeout_ms,
                failure_pct,
            };
            contended::contended(&common, settings).await
        }
        Command::Memory { common, pid, keys, takers } => memory::memory(&common, pid, keys, takers).await,
        Command::ScaleHeld { common, levels, takers, duration, warmup } => {
            scale::held_latency(&common, &ascending(levels), takers, duration, warmup).await
        }
        Command::ScaleQueue { common, levels, takers, handoffs, max_seconds } => {
            scale::queue_handoff(&common, &ascending(levels), takers, handoffs, max_seconds).await
        }
        Command::ScaleMemory { common, pid, levels, takers } => {
            memory::memory_scale(&common, pid, &ascending(levels), takers).await
        }
        Command::ClusterCycle { cluster, clients, duration, warmup } => {
            cluster_cycle::cluster_cycle(&cluster, clients.max(1), duration, warmup).await
        }
        Command::ClusterHandoff { cluster, waiters, handoffs, max_seconds } => {
            cluster_handoff::cluster_handoff(&cluster, waiters.max(1), handoffs, max_seconds).await
        }
        Command::ClusterFailover { cluster, kills, pid_dir, restart, attempt_ms, max_seconds } => {
            failover::failover(&cluster, kills, &pid_dir, &restart, attempt_ms.max(1), max_seconds).await
        }
        Command::Table { files } => report::table(&files),
        Command::Charts { out, files } => {
            for path in charts::write_all(&results::parse(&results::read(&files)?)?, &out)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::FreePort => {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            println!("{}", listener.local_addr()?.port());
            Ok(())
        }
    }
}

/// A scale workload's levels: each builds on the one before.
fn ascending(mut levels: Vec<usize>) -> Vec<usize> {
    levels.sort_unstable();
    levels.dedup();
    levels
}

/// Waits for every task; the first error (or panic) among them is the run's.
pub async fn join_all<T: 'static>(mut set: JoinSet<Res<T>>) -> Res<Vec<T>> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        out.push(joined??);
    }
    Ok(out)
}
