//! The etcd side of the cluster workloads, through etcd's own gRPC API (the `etcd-client`
//! crate): everything the workloads ask of etcd is in this module.
//!
//! A client locks the way `etcdctl lock` and Go's `concurrency` package do: one lease per client
//! (its session, kept alive in the background), then `Lock(name, lease)`, which blocks until the
//! client owns `name` and returns the key that proves it, and `Unlock(key)`. The lease is the
//! owner's identity and lifetime, as the owner string and its connection are on baton; granting
//! one per lock would add a consensus round to every cycle that neither baton nor etcd's own tools
//! pay. Each Lock on a free name is one consensus round (a transaction that puts the client's key
//! under `name/`), each Unlock another (the key's deletion), as baton's LOCK.TRY and LOCK.UNLOCK
//! are one each. Waiters queue in the order of their keys' creation and the deletion of the key
//! before them wakes the next one, as LOCK.WAIT's queue hands the lock to its head.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, LockOptions};
use tokio::task::JoinHandle;

use crate::cli::Member;
use crate::{Res, fail};

/// The lease's time to live; the keep-alive renews it every third of that.
const LEASE_TTL_S: i64 = 10;

pub struct EtcdLocker {
    client: Client,
    lease: i64,
    keep_alive: JoinHandle<()>,
}

impl Drop for EtcdLocker {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

async fn connect(nodes: &[Member], timeout: Duration) -> Res<Client> {
    let endpoints: Vec<String> = nodes.iter().map(|node| format!("http://{}", node.addr)).collect();
    let options = ConnectOptions::new().with_connect_timeout(timeout);
    Ok(Client::connect(endpoints, Some(options)).await?)
}

impl EtcdLocker {
    /// A client of all the members (its requests spread over them; followers forward writes to
    /// the leader, as with etcd's own clients) with a lease of its own.
    pub async fn connect(nodes: &[Member], timeout: Duration) -> Res<EtcdLocker> {
        let mut client = connect(nodes, timeout).await?;
        let lease = tokio::time::timeout(timeout, client.lease_grant(LEASE_TTL_S, None)).await??.id();
        let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
        // Like a session's keep-alive: it stops at the first error (a killed member's stream),
        // which the lease outlives by far in every workload here.
        let keep_alive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(LEASE_TTL_S as u64 / 3)).await;
                if keeper.keep_alive().await.is_err() || !matches!(responses.message().await, Ok(Some(_))) {
                    return;
                }
            }
        });
        Ok(EtcdLocker { client, lease, keep_alive })
    }

    /// Blocks until this client owns `name`; returns the key to unlock it with.
    pub async fn lock(&mut self, name: &str) -> Res<Vec<u8>> {
        let response = self.client.lock(name, Some(LockOptions::new().with_lease(self.lease))).await?;
        Ok(response.key().to_vec())
    }

    pub async fn unlock(&mut self, key: Vec<u8>) -> Res<()> {
        self.client.unlock(key).await?;
        Ok(())
    }

    /// Clients queued behind the holder of `name`: every key under `name/` but the first.
    pub async fn waiting(&mut self, name: &str) -> Res<usize> {
        let prefix = format!("{name}/");
        let response = self.client.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await?;
        Ok(usize::try_from(response.count()).unwrap_or(0).saturating_sub(1))
    }
}

/// The member every member names as the leader, if they all answer and agree.
pub async fn leader(nodes: &[Member], timeout: Duration) -> Res<Option<u64>> {
    let mut named = None;
    let mut leader = None;
    for node in nodes {
        let status = async { Ok::<_, crate::BoxError>(connect(&[*node], timeout).await?.status().await?) };
        let Ok(Ok(status)) = tokio::time::timeout(timeout, status).await else {
            return Ok(None);
        };
        let Some(header) = status.header() else {
            return fail(format!("member {} answered Status without a header", node.id));
        };
        if status.leader() == 0 || named.is_some_and(|id| id != status.leader()) {
            return Ok(None);
        }
        named = Some(status.leader());
        if header.member_id() == status.leader() {
            leader = Some(node.id);
        }
    }
    Ok(leader)
}
