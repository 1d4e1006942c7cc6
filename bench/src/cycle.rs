//! W1: uncontended acquire/release cycles on distinct keys, unpipelined or pipelined.

use baton_testkit::client::Connection;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::cli::{Common, Target};
use crate::client::{self, CAD_LUA, expect_int, expect_ok, load_script, open_many, token_of};
use crate::report::{Better, emit, emit_latencies};
use crate::stats::{new_hist, now_ns, secs_ns};
use crate::{Res, join_all};

pub async fn cycle(common: &Common, connections: usize, pipeline: usize, duration: f64, warmup: f64) -> Res<()> {
    let target = common.target;
    let sha = match target {
        Target::Redis => Some(load_script(&mut client::open(common).await?, CAD_LUA).await?),
        Target::Baton => None,
    };
    let conns = open_many(common, connections).await?;
    let start = now_ns();
    let measure_from = start + secs_ns(warmup);
    let end = measure_from + secs_ns(duration);
    let mut set = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let sha = sha.clone();
        set.spawn(cycle_conn(conn, target, index, pipeline, measure_from, end, sha));
    }
    let mut hist = new_hist();
    let mut cycles = 0;
    for (count, part) in join_all(set).await? {
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
    Ok(())
}

async fn cycle_conn(
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
