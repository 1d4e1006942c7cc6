//! Scale curves: does a request cost the same whatever state the server keeps? S1 measures the
//! uncontended cycle of W1 with more and more other locks held; S2 the hand-off of W3 with more
//! and more owners queued on the key. (S3, memory per lock, is in `memory`.) Each level is built
//! on the previous one in the same server, with pipelined requests from a few connections kept
//! open.

use std::time::Duration;

use baton_testkit::Resp;
use baton_testkit::client::Connection;

use crate::cli::{Common, Takers, Target};
use crate::client::{self, await_waiters, expect_int, info_field, token_of};
use crate::cycle::{cycle_conn, release_script};
use crate::fill::{Filler, HOUR_MS};
use crate::report::{emit_latencies, note, thousands};
use crate::stats::{new_hist, now_ns, secs_ns};
use crate::{Res, fail};

/// S1: latency of one unpipelined connection's TRY+UNLOCK cycles (W1's), for `duration` seconds
/// after `warmup`, at each of `levels` other locks held.
pub async fn held_latency(common: &Common, levels: &[usize], takers: Takers, duration: f64, warmup: f64) -> Res<()> {
    let target = common.target;
    let sha = release_script(common).await?;
    let mut filler = Filler::open(common, takers.connections, takers.batch).await?;
    for &level in levels {
        filler.hold_locks(target, level).await?;
        let measure_from = now_ns() + secs_ns(warmup);
        let end = measure_from + secs_ns(duration);
        let (cycles, hist) =
            cycle_conn(client::open(common).await?, target, 0, 1, measure_from, end, sha.clone()).await?;
        note(format!("{target}: {cycles} cycles with {level} other locks held"));
        let workload = format!("S1 TRY+UNLOCK, 1 conn unpipelined, {} other locks held", thousands(level as f64));
        emit_latencies(&format!("s1.n{level}.lat"), target, &hist, &workload, "cycle latency");
    }
    Ok(())
}

/// Hand-offs left out of each level's figures while the new level settles.
const WARMUP_HANDOFFS: u64 = 50;

/// The key S2 queues on.
const QUEUE_KEY: &[u8] = b"bench:queue";

/// The holder of S2's lock, on its own connection.
struct Holder {
    conn: Connection,
    owner: Vec<u8>,
    token: u64,
}

/// S2 (baton only: the Redis recipes have no line to keep): hand-off latency, from the holder's
/// LOCK.UNLOCK FAILURE to the ACQUIRED of the head's blocked LOCK.WAIT, with `levels` owners in
/// line. The line is held places (LOCK.TRY from the filler's connections); before each hand-off
/// a connection of its own blocks in LOCK.WAIT as the head's owner, and after it one more place
/// joins at the tail, so the line stays at its level. Up to `handoffs` per level, and at most
/// `max_seconds` of them.
pub async fn queue_handoff(
    common: &Common,
    levels: &[usize],
    takers: Takers,
    handoffs: u64,
    max_seconds: f64,
) -> Res<()> {
    if common.target != Target::Baton {
        return fail("S2 runs against baton only: the Redis recipes keep no line of waiters");
    }
    let mut conn = client::open(common).await?;
    let token = token_of(&conn.call(&[b"LOCK.TRY", QUEUE_KEY, b"s2-first", b"PX", HOUR_MS]).await?)?;
    let mut holder = Holder { conn, owner: b"s2-first".to_vec(), token };
    let mut next_head = client::open(common).await?;
    let mut observer = client::open(common).await?;
    let mut places = Filler::open(common, takers.connections, takers.batch).await?;
    let mut granted = 0;
    for &level in levels {
        queue_places(&mut places, granted + level.max(1)).await?;
        let mut hist = new_hist();
        let give_up_at = now_ns() + secs_ns(max_seconds);
        let mut done = 0;
        while done < WARMUP_HANDOFFS + handoffs && now_ns() < give_up_at {
            let head = match info_field(&mut observer, QUEUE_KEY, 1, "queue").await? {
                Resp::Array(owners) if owners.len() == 1 => owners[0].bytes(),
                other => return fail(format!("LOCK.INFO's queue is {other} with {level} owners in line")),
            };
            next_head.queue(&[b"LOCK.WAIT", QUEUE_KEY, &head, b"0", b"PX", HOUR_MS]);
            next_head.flush().await?;
            await_waiters(&mut observer, Target::Baton, QUEUE_KEY, 1, Duration::from_secs(10)).await?;
            let token = holder.token.to_string();
            let started = now_ns();
            holder.conn.queue(&[b"LOCK.UNLOCK", QUEUE_KEY, &holder.owner, token.as_bytes(), b"FAILURE"]);
            holder.conn.flush().await?;
            let reply = next_head.read().await?;
            let granted_at = now_ns();
            let token = token_of(&reply)?;
            expect_int(&holder.conn.read().await?, 1, "LOCK.UNLOCK FAILURE")?;
            if done >= WARMUP_HANDOFFS {
                hist.saturating_record(granted_at - started);
            }
            done += 1;
            granted += 1;
            let old = std::mem::replace(&mut holder, Holder { conn: next_head, owner: head, token });
            next_head = old.conn;
            queue_places(&mut places, granted + level.max(1)).await?;
        }
        note(format!("baton: {} hand-offs with {level} owners in line", done.saturating_sub(WARMUP_HANDOFFS)));
        let workload = format!("S2 hand-off, {} owners in line (baton only)", thousands(level as f64));
        emit_latencies(&format!("s2.n{level}.lat"), Target::Baton, &hist, &workload, "hand-off");
    }
    Ok(())
}

/// Queues places `q<n>` on S2's key (LOCK.TRY PX 3600000) until `upto` have joined in all.
async fn queue_places(places: &mut Filler, upto: usize) -> Res<()> {
    let request = |number: usize, conn: &mut Connection| {
        let owner = format!("q{number}");
        conn.queue(&[b"LOCK.TRY", QUEUE_KEY, owner.as_bytes(), b"PX", HOUR_MS]);
    };
    let check = |reply: &Resp| match reply {
        Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("QUEUED")) => Ok(()),
        other => fail(format!("LOCK.TRY on a held key answered {other}")),
    };
    places.grow_to(upto, request, check).await
}
