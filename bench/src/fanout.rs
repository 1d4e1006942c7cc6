//! W4: N waiters blocked on one key (baton) or subscribed to one channel (Redis); the time until
//! the last one hears the outcome, and (with the server's PID) memory per waiter.

use std::time::Duration;

use baton_testkit::Resp;
use baton_testkit::client::Connection;
use baton_testkit::process::{cpu_nanos, rss_kb};
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cli::{Common, Target};
use crate::client::{self, await_waiters, expect_int, open_many, token_of};
use crate::report::{Better, emit, note, thousands};
use crate::stats::{new_hist, now_ns};
use crate::{BoxError, Res, fail};

pub async fn fanout(common: &Common, count: usize, rounds: usize, pid: Option<u32>) -> Res<()> {
    let target = common.target;
    let key: &[u8] = b"bench:fanout";
    let rss_before = pid.map(rss_kb).transpose()?;
    let mut control = client::open(common).await?;
    let mut observer = client::open(common).await?;
    let mut conns = open_many(common, count).await?;
    let rss_idle = pid.map(rss_kb).transpose()?;
    if target == Target::Redis {
        futures_util::stream::iter(conns.iter_mut())
            .map(|conn| async move {
                let reply = conn.call(&[b"SUBSCRIBE", key]).await?;
                if !matches!(&reply, Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("subscribe")))
                {
                    return fail(format!("SUBSCRIBE answered {reply}"));
                }
                Ok::<(), BoxError>(())
            })
            .buffer_unordered(256)
            .try_collect::<Vec<()>>()
            .await?;
    }
    let (round_tx, round_rx) = watch::channel(0usize);
    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<u64>();
    let mut set = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let owner = format!("fw{index}");
        set.spawn(fanout_waiter(conn, target, owner, round_rx.clone(), report_tx.clone()));
    }
    drop(report_tx);
    let mut lasts = new_hist();
    let mut medians = new_hist();
    let mut rss_blocked = None;
    // Server CPU from the outcome's request to the last waiter's answer: the load generator reads
    // 10,000 sockets too, on the same cores, so the time to the last answer is partly its own.
    let mut server_cpu_ns = 0;
    // The load generator's own CPU over the same windows: reading the answers is work no server
    // can take off it, so it bounds how soon the last one can be read (docs/benchmarks-history.md, *W4's floor*).
    let mut client_cpu_ns = 0;
    for round in 1..=rounds {
        let token = match target {
            Target::Baton => Some(token_of(&control.call(&[b"LOCK.TRY", key, b"fan-holder"]).await?)?),
            Target::Redis => None,
        };
        round_tx.send(round)?;
        await_waiters(&mut observer, target, key, count, Duration::from_secs(60)).await?;
        if round == 1 {
            rss_blocked = pid.map(rss_kb).transpose()?;
        }
        let cpu_before = pid.map(cpu_nanos).transpose()?;
        let client_cpu_before = cpu_nanos(std::process::id())?;
        let t0 = now_ns();
        match token {
            Some(token) => {
                let token = token.to_string();
                control.queue(&[b"LOCK.UNLOCK", key, b"fan-holder", token.as_bytes(), b"SUCCESS"]);
            }
            None => control.queue(&[b"PUBLISH", key, b"done"]),
        }
        control.flush().await?;
        let mut times = Vec::with_capacity(count);
        while times.len() < count {
            match tokio::time::timeout(Duration::from_secs(60), report_rx.recv()).await {
                Ok(Some(at)) => times.push(at.saturating_sub(t0)),
                Ok(None) => {
                    // A waiter task ended early: surface its error.
                    while let Some(joined) = set.join_next().await {
                        joined??;
                    }
                    return fail("fan-out waiters ended early");
                }
                Err(_) => return fail(format!("only {} of {count} waiters answered within 60 s", times.len())),
            }
        }
        client_cpu_ns += cpu_nanos(std::process::id())?.saturating_sub(client_cpu_before);
        if let (Some(pid), Some(before)) = (pid, cpu_before) {
            server_cpu_ns += cpu_nanos(pid)?.saturating_sub(before);
        }
        expect_int(&control.read().await?, count as i64, "waiters told / receivers")?;
        times.sort_unstable();
        let last = times.last().copied().unwrap_or(0);
        lasts.saturating_record(last);
        medians.saturating_record(times[times.len() / 2]);
        note(format!("{target} fan-out {count}: round {round}: last answered after {:.2} ms", last as f64 / 1e6));
    }
    set.abort_all();
    let workload = format!("W4 fan-out, {} waiters on one key", thousands(count as f64));
    let id = format!("w4.n{count}");
    emit(
        &format!("{id}.last"),
        target,
        lasts.value_at_quantile(0.5) as f64 / 1e6,
        Better::Lower,
        &workload,
        &format!("last answered (ms, median of {rounds} rounds)"),
    );
    emit(
        &format!("{id}.median"),
        target,
        medians.value_at_quantile(0.5) as f64 / 1e6,
        Better::Lower,
        &workload,
        "median waiter answered (ms)",
    );
    emit(
        &format!("{id}.client_cpu"),
        target,
        client_cpu_ns as f64 / 1e3 / (count * rounds) as f64,
        Better::Lower,
        &workload,
        "load generator CPU per waiter told (µs)",
    );
    if pid.is_some() {
        emit(
            &format!("{id}.cpu"),
            target,
            server_cpu_ns as f64 / 1e3 / (count * rounds) as f64,
            Better::Lower,
            &workload,
            "server CPU per waiter told (µs)",
        );
    }
    if let (Some(before), Some(idle), Some(blocked)) = (rss_before, rss_idle, rss_blocked) {
        let workload = format!("W6 memory, {} waiters (baton: LOCK.WAIT; Redis: SUBSCRIBE)", thousands(count as f64));
        let per = |from: u64| (blocked.saturating_sub(from) * 1024) as f64 / count as f64;
        note(format!("{target} RSS: before {before} kB, {count} idle conns {idle} kB, waiting {blocked} kB"));
        emit(
            "w6.waiter.total",
            target,
            per(before),
            Better::Lower,
            &workload,
            "RSS growth per waiter incl. connection (B)",
        );
        emit(
            "w6.waiter.wait",
            target,
            per(idle),
            Better::Lower,
            &workload,
            "RSS growth per waiter over an idle connection (B)",
        );
    }
    Ok(())
}

async fn fanout_waiter(
    mut conn: Connection,
    target: Target,
    owner: String,
    mut round: watch::Receiver<usize>,
    report: mpsc::UnboundedSender<u64>,
) -> Res<()> {
    let key: &[u8] = b"bench:fanout";
    loop {
        if round.changed().await.is_err() {
            return Ok(());
        }
        round.borrow_and_update();
        if target == Target::Baton {
            conn.queue(&[b"LOCK.WAIT", key, owner.as_bytes(), b"120000"]);
            conn.flush().await?;
        }
        let reply = conn.read().await?;
        let at = now_ns();
        let Resp::Array(items) = &reply else {
            return fail(format!("waiter got {reply}"));
        };
        let expected = match target {
            Target::Baton => items.first().is_some_and(|item| item.bulk_is("DONE")),
            Target::Redis => items.first().is_some_and(|item| item.bulk_is("message")),
        };
        if !expected {
            return fail(format!("waiter got {reply}"));
        }
        if report.send(at).is_err() {
            return Ok(());
        }
    }
}
