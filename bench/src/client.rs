//! The RESP client as the workloads use it (the connection itself is `baton_testkit`'s), and the
//! Redis recipes' scripts.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton_testkit::Resp;
use baton_testkit::client::Connection;
use futures_util::{StreamExt, TryStreamExt};

use crate::cli::{Common, Target};
use crate::{BoxError, Res, fail};

/// One connection to the server under test, on 127.0.0.1.
pub async fn open(common: &Common) -> Res<Connection> {
    let addr = SocketAddr::from(([127, 0, 0, 1], common.port));
    Ok(Connection::connect(addr, Duration::from_secs(common.io_timeout_s)).await?)
}

/// Opens `count` connections, 128 at a time, each checked with a PING.
pub async fn open_many(common: &Common, count: usize) -> Res<Vec<Connection>> {
    futures_util::stream::iter(0..count)
        .map(|_| async {
            let mut conn = open(common).await?;
            let pong = conn.call(&[b"PING"]).await?;
            if pong != Resp::Simple("PONG".into()) {
                return fail(format!("PING answered {pong}"));
            }
            Ok::<Connection, BoxError>(conn)
        })
        .buffer_unordered(128)
        .try_collect()
        .await
}

pub fn token_of(reply: &Resp) -> Res<u64> {
    if let Resp::Array(items) = reply
        && items.len() == 2
        && items[0].bulk_is("ACQUIRED")
        && let Resp::Int(token) = items[1]
    {
        return Ok(token as u64);
    }
    fail(format!("expected [ACQUIRED, token], got {reply}"))
}

pub fn expect_int(reply: &Resp, want: i64, what: &str) -> Res<()> {
    if *reply == Resp::Int(want) { Ok(()) } else { fail(format!("{what}: expected :{want}, got {reply}")) }
}

pub fn expect_ok(reply: &Resp, what: &str) -> Res<()> {
    if matches!(reply, Resp::Simple(text) if text == "OK") {
        Ok(())
    } else {
        fail(format!("{what}: expected +OK, got {reply}"))
    }
}

/// Redis's side of every recipe: compare-and-delete, then PUBLISH (Redisson's unlock does both in
/// one script). KEYS[1] lock, ARGV[1] owner, ARGV[2] channel, ARGV[3] message; no publish when
/// the channel is empty.
pub const UNLOCK_LUA: &str = "if redis.call('get',KEYS[1])==ARGV[1] then redis.call('del',KEYS[1]) \
if ARGV[2] ~= '' then redis.call('publish',ARGV[2],ARGV[3]) end return 1 else return 0 end";

/// The plain compare-and-delete from the issue, used by the uncontended cycle (W1).
pub const CAD_LUA: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

pub async fn load_script(conn: &mut Connection, script: &str) -> Res<Vec<u8>> {
    match conn.call(&[b"SCRIPT", b"LOAD", script.as_bytes()]).await? {
        Resp::Bulk(sha) => Ok(sha),
        other => fail(format!("SCRIPT LOAD answered {other}")),
    }
}

/// One field of `key`'s LOCK.INFO, its queue listed up to `count` owners.
pub async fn info_field(conn: &mut Connection, key: &[u8], count: usize, field: &str) -> Res<Resp> {
    let count = count.to_string();
    field_of(&conn.call(&[b"LOCK.INFO", key, b"COUNT", count.as_bytes()]).await?, field)
}

/// One field of a LOCK.INFO reply (RESP2: a flat array of names and values).
pub fn field_of(reply: &Resp, field: &str) -> Res<Resp> {
    let Resp::Array(items) = reply else {
        return fail(format!("LOCK.INFO answered {reply}"));
    };
    match items.chunks(2).find(|pair| pair.len() == 2 && pair[0].bulk_is(field)) {
        Some(pair) => Ok(pair[1].clone()),
        None => fail(format!("LOCK.INFO has no '{field}' field: {reply}")),
    }
}

/// Number of blocked waiters on `key` according to LOCK.INFO.
async fn blocked_on(conn: &mut Connection, key: &[u8]) -> Res<i64> {
    match info_field(conn, key, 0, "blocked").await? {
        Resp::Int(count) => Ok(count),
        other => fail(format!("LOCK.INFO's 'blocked' is {other}")),
    }
}

/// Polls until `want` waiters are blocked on `key` (baton) or subscribed to `channel` (Redis).
pub async fn await_waiters(conn: &mut Connection, target: Target, key: &[u8], want: usize, limit: Duration) -> Res<()> {
    let deadline = Instant::now() + limit;
    loop {
        let have = match target {
            Target::Baton => blocked_on(conn, key).await?,
            Target::Redis => match conn.call(&[b"PUBSUB", b"NUMSUB", key]).await? {
                Resp::Array(items) if items.len() == 2 => match items[1] {
                    Resp::Int(count) => count,
                    _ => return fail("PUBSUB NUMSUB: bad count"),
                },
                other => return fail(format!("PUBSUB NUMSUB answered {other}")),
            },
        };
        if have == want as i64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return fail(format!("only {have} of {want} waiters arrived within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_only_from_an_acquired_reply() {
        let acquired = Resp::Array(vec![Resp::Bulk(b"ACQUIRED".to_vec()), Resp::Int(42)]);
        assert_eq!(token_of(&acquired).unwrap(), 42);
        let queued = Resp::Array(vec![Resp::Bulk(b"QUEUED".to_vec()), Resp::Int(1)]);
        assert!(token_of(&queued).is_err());
        assert!(token_of(&Resp::NilArray).is_err());
    }
}
