//! Do an operation once across all nodes, with baton and redis-rs (async, tokio).
//!
//! Every node runs this with the same key and its own node id. One of them runs the command while
//! the others wait in baton's queue; when it succeeds they are all told DONE (with its result) and
//! skip the work; when it fails the next node in line gets the lock and tries.
//!
//! ```text
//! cargo run --release --example once -- --port 6390 --key build:42 --node "$(hostname)" -- make image
//! ```
//!
//! It prints what it did, one line per step, the last line being the outcome:
//! `<node>: SUCCESS result=…` (exit 0), `<node>: DONE finisher=… result=…` (exit 0, work skipped),
//! `<node>: FAILURE reason=…` (exit 1), `<node>: LOST …` (exit 3: the lock was lost while working).
//! Connection and usage errors go to stderr with exit 2.
//!
//! The points that matter with redis-rs, whose defaults are used throughout:
//! - One dedicated connection from LOCK.WAIT to LOCK.UNLOCK: baton releases the lock as FAILURE
//!   when the connection that took it closes, so do not use a pool or a connection that other
//!   tasks share.
//! - The async connections' default response timeout is 500 ms: a LOCK.WAIT that blocks longer
//!   fails on the client side while the server still has it queued. So each LOCK.WAIT blocks for
//!   `--wait-ms` (300 ms, at most 400) and is sent again when it times out: the owner keeps its
//!   place in line. A WAIT that the client gave up on anyway (a slow network or server) is sent
//!   again too; if its late reply was a grant, the new WAIT answers ACQUIRED with the same token.
//! - While the command runs, LOCK.EXTEND renews the lease every lease/3.

use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use clap::Parser;
use redis::aio::MultiplexedConnection;
use redis::{Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Run a command once across all nodes that run this with the same key.
#[derive(Debug, Parser)]
#[command(name = "once")]
struct Args {
    /// baton server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// baton server port.
    #[arg(long, default_value_t = 6390)]
    port: u16,
    /// Password, if the server runs with --requirepass.
    #[arg(long, env = "BATON_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// The lock key: one key per operation (e.g. `pull:registry/image:tag`).
    #[arg(long)]
    key: String,
    /// This node's id, the lock owner; unique per node.
    #[arg(long)]
    node: String,
    /// Lease of the lock (and of our place in line) in ms; renewed every lease/3 while working.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// How long one LOCK.WAIT blocks before we ask again (our place in line is kept); below the
    /// client's 500 ms response timeout, with room for the round trip.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=400))]
    wait_ms: u64,
    /// How long the server remembers the success, answering DONE to late nodes.
    #[arg(long, default_value_t = 600_000)]
    keep_ms: u64,
    /// The work: a program and its arguments. Its stdout becomes the RESULT; a non-zero exit is a FAILURE.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The answers of LOCK.WAIT.
enum Wait {
    Acquired(i64),
    Done { finisher: String, result: String },
    TimedOut,
}

fn text(value: &Value) -> String {
    match value {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

/// `[ACQUIRED, token]`, `[DONE, finisher, result-or-nil]`, or nil when the WAIT timed out.
fn parse_wait(reply: &Value) -> Result<Wait, String> {
    match reply {
        Value::Nil => Ok(Wait::TimedOut),
        Value::Array(items) => match (items.first().map(text).as_deref(), items.get(1)) {
            (Some("ACQUIRED"), Some(Value::Int(token))) => Ok(Wait::Acquired(*token)),
            (Some("DONE"), Some(finisher)) => {
                Ok(Wait::Done { finisher: text(finisher), result: items.get(2).map(text).unwrap_or_default() })
            }
            _ => Err(format!("unexpected LOCK.WAIT reply {reply:?}")),
        },
        _ => Err(format!("unexpected LOCK.WAIT reply {reply:?}")),
    }
}

async fn connect(args: &Args) -> redis::RedisResult<MultiplexedConnection> {
    let mut redis_info = RedisConnectionInfo::default();
    if let Some(password) = &args.password {
        redis_info = redis_info.set_password(password);
    }
    let info = ConnectionAddr::Tcp(args.host.clone(), args.port).into_connection_info()?.set_redis_settings(redis_info);
    Client::open(info)?.get_multiplexed_async_connection().await
}

/// Runs the work while renewing the lease. Err is a lost lock (the work was stopped).
async fn run_work(
    args: &Args,
    conn: &mut MultiplexedConnection,
    token: i64,
) -> Result<Result<(ExitStatus, String), String>, String> {
    let mut child = match Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("BATON_KEY", &args.key)
        .env("BATON_NODE", &args.node)
        .env("BATON_TOKEN", token.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return Ok(Err(format!("cannot start {}: {err}", args.command[0]))),
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = tokio::spawn(async move {
        let mut output = Vec::new();
        let _ = stdout.read_to_end(&mut output).await;
        String::from_utf8_lossy(&output).trim_end().to_owned()
    });
    let every = Duration::from_millis((args.lease_ms / 3).max(1));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|err| format!("waiting for the work: {err}"))?,
            _ = renew.tick() => {
                let extended: redis::RedisResult<i64> = redis::cmd("LOCK.EXTEND")
                    .arg(&args.key)
                    .arg(&args.node)
                    .arg(token)
                    .arg(args.lease_ms)
                    .query_async(conn)
                    .await;
                match extended {
                    Ok(_) => println!("{}: EXTENDED token={token} lease_ms={}", args.node, args.lease_ms),
                    Err(err) => {
                        let _ = child.kill().await;
                        return Err(format!("LOCK.EXTEND refused, work stopped: {err}"));
                    }
                }
            }
        }
    };
    let output = reader.await.unwrap_or_default();
    Ok(Ok((status, output)))
}

async fn once(args: &Args) -> Result<u8, String> {
    let node = &args.node;
    let mut conn =
        connect(args).await.map_err(|err| format!("cannot connect to {}:{}: {err}", args.host, args.port))?;
    println!("{node}: WAITING key={}", args.key);
    let token = loop {
        let reply = redis::cmd("LOCK.WAIT")
            .arg(&args.key)
            .arg(node)
            .arg(args.wait_ms)
            .arg("PX")
            .arg(args.lease_ms)
            .query_async::<Value>(&mut conn)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            // The client gave up before the server answered: the connection stays open and drops
            // the late reply, so this is a WAIT that timed out.
            Err(err) if err.is_timeout() => Value::Nil,
            Err(err) => return Err(format!("LOCK.WAIT: {err}")),
        };
        match parse_wait(&reply)? {
            Wait::Acquired(token) => break token,
            Wait::Done { finisher, result } => {
                println!("{node}: DONE finisher={finisher} result={result}");
                return Ok(0);
            }
            // Our place in line is kept: ask again.
            Wait::TimedOut => println!("{node}: STILL WAITING"),
        }
    };
    println!("{node}: ACQUIRED token={token}");

    let (verdict, exit) = match run_work(args, &mut conn, token).await {
        Err(lost) => {
            println!("{node}: LOST {lost}");
            return Ok(3);
        }
        Ok(Ok((status, output))) if status.success() => {
            let unlock = redis::cmd("LOCK.UNLOCK")
                .arg(&args.key)
                .arg(node)
                .arg(token)
                .arg("SUCCESS")
                .arg("RESULT")
                .arg(&output)
                .arg("KEEP")
                .arg(args.keep_ms)
                .query_async::<i64>(&mut conn)
                .await;
            (unlock.map(|_| format!("SUCCESS result={output}")), 0)
        }
        Ok(outcome) => {
            let reason = match outcome {
                Ok((status, _)) => match status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => format!("terminated ({status})"),
                },
                Err(reason) => reason,
            };
            let unlock = redis::cmd("LOCK.UNLOCK")
                .arg(&args.key)
                .arg(node)
                .arg(token)
                .arg("FAILURE")
                .arg("REASON")
                .arg(&reason)
                .query_async::<i64>(&mut conn)
                .await;
            (unlock.map(|_| format!("FAILURE reason={reason}")), 1)
        }
    };
    match verdict {
        Ok(line) => {
            println!("{node}: {line}");
            Ok(exit)
        }
        // NOTHOLDER / NOLOCK: the lease ran out or the connection was lost; someone else may redo it.
        Err(err) => {
            println!("{node}: LOST LOCK.UNLOCK refused: {err}");
            Ok(3)
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match once(&args).await {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("{}: ERROR {err}", args.node);
            ExitCode::from(2)
        }
    }
}
