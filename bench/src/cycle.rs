//! W1: uncontended acquire/release cycles on distinct keys, unpipelined or pipelined.

use baton_testkit::client::Connection;
use baton_testkit::process::cpu_seconds;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::cli::{Common, Target};
use crate::client::{self, CAD_LUA, expect_int, expect_ok, load_script, open_many, token_of};
use crate::report::{Better, emit, emit_latencies};
use crate::stats::{new_hist, now_ns, secs_ns, sleep_until_ns};
use crate::{Res, join_all};

pub async fn cycle(
    common: &Common,
    connections: usize,
    pipeline: usize,
    duration: f64,
    warmup: f64,
    pid: Option<u32>,
) -> Res<()> {
    let target = common.target;
    let sha = release_script(common).await?;
    let conns = open_many(common, connections).await?;
    let start = now_ns();
    let measure_from = start + secs_ns(warmup);
    let end = measure_from + secs_ns(duration);
    let mut set = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let sha = sha.clone();
        set.spawn(cycle_conn(conn, target, index, pipeline, measure_from, end, sha));
    }
    // The server's CPU time over the measured seconds: a fairer figure than cycles/s when the
    // load generator shares the server's cores.
    let server_cpu = async {
        let Some(pid) = pid else { return Ok(None) };
        sleep_until_ns(measure_from).await;
        let before = cpu_seconds(pid)?;
        sleep_until_ns(end).await;
        Ok::<_, std::io::Error>(Some(cpu_seconds(pid)? - before))
    };
    let (results, server_cpu) = tokio::join!(join_all(set), server_cpu);
    let mut hist = new_hist();
    let mut cycles = 0;
    for (count, part) in results? {
        cycles += count;
        hist.add(&part)?;
    }
    let seconds = (end - measure_from) as f64 / 1e9;
    let (id, workload) = if pipeline == 1 {
        ("w1.p1".to_owned(), format!("W1 uncontended cycle, {connections} conns, unpipelined"))
    } else {
        (format!("w1.p{pipeline}"), format!("W1 uncontended cycle, {connections} conns, pipeline {pipeline}"))
    };
    emit(&format!("{id}.rate"), target, cycles as f64 / seconds, Better::Higher, &workload, "cycles/s");
    emit_latencies(&format!("{id}.lat"), target, &hist, &workload, "cycle latency");
    if let Some(cpu) = server_cpu? {
        let per_cycle_us = cpu * 1e6 / cycles.max(1) as f64;
        emit(&format!("{id}.cpu"), target, per_cycle_us, Better::Lower, &workload, "server CPU per cycle (µs)");
    }
    Ok(())
}

/// The Redis side's compare-and-delete, loaded (baton needs none).
pub async fn release_script(common: &Common) -> Res<Option<Vec<u8>>> {
    match common.target {
        Target::Redis => Ok(Some(load_script(&mut client::open(common).await?, CAD_LUA).await?)),
        Target::Baton => Ok(None),
    }
}

/// Cycles on keys `cycle:<index>:*` until `end`; returns the cycles that started at
/// `measure_from` or later and ended by `end`, and their latencies.
pub async fn cycle_conn(
    mut conn: Connection,
    target: Target,
    index: usize,
    pipeline: usize,
    measure_from: u64,
    end: u64,
    sha: Option<Vec<u8>>,
) -> Res<(u64, Histogram<u64>)> {
    let owner = format!("owner-{index}");
    let keys: Vec<String> = (0..pipeline).map(|slot| format!("cycle:{index}:{slot}")).collect();
    let sha = sha.unwrap_or_default();
    let mut tokens = vec![String::new(); pipeline];
    let mut hist = new_hist();
    let mut cycles = 0;
    loop {
        let t0 = now_ns();
        if t0 >= end {
            break;
        }
        for key in &keys {
            match target {
                Target::Baton => conn.queue(&[b"LOCK.TRY", key.as_bytes(), owner.as_bytes()]),
                Target::Redis => conn.queue(&[b"SET", key.as_bytes(), owner.as_bytes(), b"NX", b"PX", b"30000"]),
            }
        }
        conn.flush().await?;
        for token in tokens.iter_mut() {
            let reply = conn.read().await?;
            match target {
                Target::Baton => *token = token_of(&reply)?.to_string(),
                Target::Redis => expect_ok(&reply, "SET NX")?,
            }
        }
        for (key, token) in keys.iter().zip(&tokens) {
            match target {
                Target::Baton => {
                    conn.queue(&[b"LOCK.UNLOCK", key.as_bytes(), owner.as_bytes(), token.as_bytes(), b"SUCCESS"])
                }
                Target::Redis => conn.queue(&[b"EVALSHA", &sha, b"1", key.as_bytes(), owner.as_bytes()]),
            }
        }
        conn.flush().await?;
        for _ in 0..pipeline {
            let reply = conn.read().await?;
            let want = if target == Target::Baton { 0 } else { 1 };
            expect_int(&reply, want, "unlock")?;
        }
        let t1 = now_ns();
        if t0 >= measure_from && t1 <= end {
            cycles += pipeline as u64;
            hist.saturating_record_n(t1 - t0, pipeline as u64);
        }
    }
    Ok((cycles, hist))
}
