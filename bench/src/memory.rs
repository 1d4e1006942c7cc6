//! W6: RSS growth per held lock.

use std::time::Duration;

use baton_testkit::client::Connection;
use baton_testkit::process::rss_kb;
use tokio::task::JoinSet;

use crate::cli::{Common, Target};
use crate::client::{expect_ok, open_many, token_of};
use crate::report::{Better, emit, note, thousands};
use crate::stats::now_ns;
use crate::{Res, join_all};

pub async fn memory(common: &Common, pid: u32, keys: usize, connections: usize, batch: usize) -> Res<()> {
    let target = common.target;
    let conns = open_many(common, connections).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(pid)?;
    let per_conn = keys.div_ceil(connections);
    let mut set = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let from = index * per_conn;
        let to = ((index + 1) * per_conn).min(keys);
        set.spawn(memory_conn(conn, target, from, to, batch));
    }
    let started = now_ns();
    let conns = join_all(set).await?;
    let elapsed = (now_ns() - started) as f64 / 1e9;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb(pid)?;
    drop(conns);
    note(format!(
        "{target}: {keys} held locks in {elapsed:.1} s; RSS {before} kB → {after} kB ({:.0} B per lock)",
        (after.saturating_sub(before) * 1024) as f64 / keys as f64
    ));
    let workload = format!(
        "W6 memory, {} held locks (baton: LOCK.TRY k o PX 3600000; Redis: SET k o NX PX 3600000)",
        thousands(keys as f64)
    );
    emit(
        "w6.lock",
        target,
        (after.saturating_sub(before) * 1024) as f64 / keys as f64,
        Better::Lower,
        &workload,
        "RSS growth per held lock (B)",
    );
    Ok(())
}

/// Takes keys `from..to`; returns the connection so it stays open (its locks stay held) until
/// RSS is measured.
async fn memory_conn(mut conn: Connection, target: Target, from: usize, to: usize, batch: usize) -> Res<Connection> {
    let mut index = from;
    while index < to {
        let upto = (index + batch).min(to);
        for key in index..upto {
            let key = format!("mem:{key}");
            match target {
                Target::Baton => conn.queue(&[b"LOCK.TRY", key.as_bytes(), b"o", b"PX", b"3600000"]),
                Target::Redis => conn.queue(&[b"SET", key.as_bytes(), b"o", b"NX", b"PX", b"3600000"]),
            }
        }
        conn.flush().await?;
        for _ in index..upto {
            let reply = conn.read().await?;
            match target {
                Target::Baton => {
                    token_of(&reply)?;
                }
                Target::Redis => expect_ok(&reply, "SET NX")?,
            }
        }
        index = upto;
    }
    Ok(conn)
}
