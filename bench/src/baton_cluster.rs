//! The baton side of the cluster workloads: LOCK.* through the `redis` crate's async Redis Cluster
//! client, which learns the slots from CLUSTER SLOTS and follows -MOVED to the leader as an
//! application's client would; or, for the single-node baseline, one plain connection.
//!
//! The cluster client retries a failed request itself (a connection to a killed leader, -MOVED,
//! -CLUSTERDOWN while the members elect a new one). Its default waits start at 1.28 s, which
//! would measure the client rather than the failover: here they are 10–100 ms, as a client tuned
//! for a lock service would set them.

use std::time::Duration;

use baton_testkit::Resp;
use baton_testkit::client::Connection;
use baton_testkit::redis_crate::{query, result_to_resp};
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;

use crate::cli::Member;
use crate::client::{field_of, token_of};
use crate::{Res, fail};

/// How long one LOCK.WAIT blocks on the server before it is sent again (well inside the client's
/// response timeout).
const WAIT_MS: &[u8] = b"2000";

enum Conn {
    Cluster(ClusterConnection),
    Single(MultiplexedConnection),
}

impl Conn {
    async fn call(&mut self, args: &[&[u8]]) -> Resp {
        result_to_resp(match self {
            Conn::Cluster(conn) => query(conn, args).await,
            Conn::Single(conn) => query(conn, args).await,
        })
    }
}

pub struct BatonLocker {
    conn: Conn,
    owner: String,
}

/// How a holder lets go: SUCCESS ends the round (the cycles), FAILURE hands the lock to the head
/// of the queue (the hand-offs). etcd's Unlock is both.
#[derive(Clone, Copy)]
pub enum Outcome {
    Success,
    Failure,
}

impl BatonLocker {
    /// A Redis Cluster client seeded with every member, or with `single` a plain connection to the
    /// first; `owner` names this client in LOCK.*.
    pub async fn connect(nodes: &[Member], single: bool, owner: String, timeout: Duration) -> Res<BatonLocker> {
        let urls: Vec<String> = nodes.iter().map(|node| format!("redis://{}", node.addr)).collect();
        let conn = if single {
            Conn::Single(baton_testkit::redis_crate::connect(&urls[0], timeout).await?)
        } else {
            let client = ClusterClientBuilder::new(urls)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(20)
                .min_retry_wait(10)
                .max_retry_wait(100)
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        };
        Ok(BatonLocker { conn, owner })
    }

    /// LOCK.TRY on a key nobody else uses; returns the token.
    pub async fn try_lock(&mut self, key: &str) -> Res<Vec<u8>> {
        let reply = self.conn.call(&[b"LOCK.TRY", key.as_bytes(), self.owner.as_bytes()]).await;
        Ok(token_of(&reply)?.to_string().into_bytes())
    }

    /// LOCK.WAIT until the lock is this owner's (sent again whenever the server's timeout passes,
    /// keeping the place in line); returns the token.
    pub async fn wait(&mut self, key: &str) -> Res<Vec<u8>> {
        loop {
            let reply = self.conn.call(&[b"LOCK.WAIT", key.as_bytes(), self.owner.as_bytes(), WAIT_MS]).await;
            if !reply.is_nil() {
                return Ok(token_of(&reply)?.to_string().into_bytes());
            }
        }
    }

    pub async fn unlock(&mut self, key: &str, token: &[u8], outcome: Outcome) -> Res<()> {
        let outcome: &[u8] = match outcome {
            Outcome::Success => b"SUCCESS",
            Outcome::Failure => b"FAILURE",
        };
        match self.conn.call(&[b"LOCK.UNLOCK", key.as_bytes(), self.owner.as_bytes(), token, outcome]).await {
            // The owners told of the outcome.
            Resp::Int(_) => Ok(()),
            other => fail(format!("LOCK.UNLOCK answered {other}")),
        }
    }

    /// Owners blocked in LOCK.WAIT on `key`.
    pub async fn waiting(&mut self, key: &str) -> Res<usize> {
        let reply = self.conn.call(&[b"LOCK.INFO", key.as_bytes(), b"COUNT", b"0"]).await;
        match field_of(&reply, "blocked")? {
            Resp::Int(count) => Ok(usize::try_from(count).unwrap_or(0)),
            other => fail(format!("LOCK.INFO's 'blocked' is {other}")),
        }
    }
}

/// The member every member points at, if they all answer and agree: a key command (LOCK.INFO on
/// a probe key) is served by the leader and answered `-MOVED <slot> <leader address>` by the
/// followers, as every cluster client sees it.
pub async fn leader(nodes: &[Member], timeout: Duration) -> Res<Option<u64>> {
    let mut leader = None;
    for node in nodes {
        let probe = async {
            let mut conn = Connection::connect(node.addr, timeout).await?;
            Ok::<_, crate::BoxError>(conn.call(&[b"LOCK.INFO", b"c3:probe", b"COUNT", b"0"]).await?)
        };
        let Ok(Ok(reply)) = tokio::time::timeout(timeout, probe).await else {
            return Ok(None);
        };
        let Some(points_at) = points_at(&reply, node, nodes) else {
            return Ok(None);
        };
        if leader.is_some_and(|id| id != points_at) {
            return Ok(None);
        }
        leader = Some(points_at);
    }
    Ok(leader)
}

/// Whom `node`'s answer to a key command names as the leader: itself if it served the command,
/// the member at the address of its -MOVED otherwise (None for -CLUSTERDOWN and the like).
fn points_at(reply: &Resp, node: &Member, nodes: &[Member]) -> Option<u64> {
    match reply {
        Resp::Error(text) => {
            let addr = text.strip_prefix("MOVED ")?.split(' ').nth(1)?;
            nodes.iter().find(|member| member.addr.to_string() == addr).map(|member| member.id)
        }
        _ => Some(node.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_point_at_the_leader_with_moved() {
        let nodes: Vec<Member> = ["1@127.0.0.1:7001", "2@127.0.0.1:7002", "3@127.0.0.1:7003"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let moved = Resp::Error("MOVED 1234 127.0.0.1:7002".into());
        assert_eq!(points_at(&moved, &nodes[0], &nodes), Some(2));
        let served = Resp::Array(vec![Resp::Bulk(b"state".to_vec()), Resp::Bulk(b"free".to_vec())]);
        assert_eq!(points_at(&served, &nodes[1], &nodes), Some(2));
        assert_eq!(points_at(&Resp::Error("CLUSTERDOWN The cluster is down".into()), &nodes[0], &nodes), None);
        let elsewhere = Resp::Error("MOVED 1234 127.0.0.1:9999".into());
        assert_eq!(points_at(&elsewhere, &nodes[0], &nodes), None);
    }
}
