//! One client of a cluster workload, whichever system it talks to: take a lock, wait for one,
//! let go of it, count the waiters, find the leader. Every call is bounded by the I/O timeout.

use std::future::Future;
use std::time::Duration;

pub use crate::baton_cluster::Outcome;
use crate::baton_cluster::{self, BatonLocker};
use crate::cli::{ClusterCommon, ClusterTarget, Member};
use crate::etcd::{self, EtcdLocker};
use crate::{Res, fail};

pub enum Locker {
    Baton(BatonLocker),
    // etcd's client is a few kilobytes of gRPC stubs.
    Etcd(Box<EtcdLocker>),
}

/// A lock this client holds: its name and what proves the holding (baton's token, etcd's key).
pub struct Held {
    name: String,
    proof: Vec<u8>,
}

async fn bounded<T>(timeout: Duration, what: &str, call: impl Future<Output = Res<T>>) -> Res<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => fail(format!("{what}: no answer within {timeout:?}")),
    }
}

impl Locker {
    /// A new client; `owner` names it on baton (on etcd its lease does).
    pub async fn connect(cluster: &ClusterCommon, owner: String) -> Res<Locker> {
        let timeout = timeout(cluster);
        let nodes = &cluster.nodes;
        bounded(timeout, "connect", async {
            Ok(match cluster.target {
                ClusterTarget::Baton => Locker::Baton(BatonLocker::connect(nodes, false, owner, timeout).await?),
                ClusterTarget::BatonSingle => Locker::Baton(BatonLocker::connect(nodes, true, owner, timeout).await?),
                ClusterTarget::Etcd => Locker::Etcd(Box::new(EtcdLocker::connect(nodes, timeout).await?)),
            })
        })
        .await
    }

    /// Takes `name`, which nobody else uses (baton: LOCK.TRY; etcd: Lock, which cannot block here).
    pub async fn take(&mut self, name: &str, timeout: Duration) -> Res<Held> {
        let proof = bounded(timeout, "take", async {
            match self {
                Locker::Baton(baton) => baton.try_lock(name).await,
                Locker::Etcd(etcd) => etcd.lock(name).await,
            }
        })
        .await?;
        Ok(Held { name: name.to_owned(), proof })
    }

    /// Waits in line for `name` (baton: LOCK.WAIT; etcd: a blocking Lock).
    pub async fn wait(&mut self, name: &str, timeout: Duration) -> Res<Held> {
        let proof = bounded(timeout, "wait", async {
            match self {
                Locker::Baton(baton) => baton.wait(name).await,
                Locker::Etcd(etcd) => etcd.lock(name).await,
            }
        })
        .await?;
        Ok(Held { name: name.to_owned(), proof })
    }

    pub async fn release(&mut self, held: Held, outcome: Outcome, timeout: Duration) -> Res<()> {
        bounded(timeout, "release", async {
            match self {
                Locker::Baton(baton) => baton.unlock(&held.name, &held.proof, outcome).await,
                Locker::Etcd(etcd) => etcd.unlock(held.proof).await,
            }
        })
        .await
    }

    /// Clients blocked waiting for `name`.
    pub async fn waiting(&mut self, name: &str, timeout: Duration) -> Res<usize> {
        bounded(timeout, "count the waiters", async {
            match self {
                Locker::Baton(baton) => baton.waiting(name).await,
                Locker::Etcd(etcd) => etcd.waiting(name).await,
            }
        })
        .await
    }
}

pub fn timeout(cluster: &ClusterCommon) -> Duration {
    Duration::from_secs(cluster.io_timeout_s)
}

/// The member all members agree leads, if they do (None for a single node).
async fn leader(cluster: &ClusterCommon, timeout: Duration) -> Res<Option<u64>> {
    let nodes: &[Member] = &cluster.nodes;
    match cluster.target {
        ClusterTarget::Baton => baton_cluster::leader(nodes, timeout).await,
        ClusterTarget::BatonSingle => Ok(None),
        ClusterTarget::Etcd => etcd::leader(nodes, timeout).await,
    }
}

/// Waits until the members agree on a leader (at once for a single node); returns it.
pub async fn await_leader(cluster: &ClusterCommon, limit: Duration) -> Res<Option<u64>> {
    if cluster.target == ClusterTarget::BatonSingle {
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(leader) = leader(cluster, Duration::from_secs(1)).await? {
            return Ok(Some(leader));
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!("the members agreed on no leader within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
