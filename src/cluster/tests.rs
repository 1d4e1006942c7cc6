//! Three nodes on loopback, each with its own directory: a cluster forms by itself, replicates
//! what its leader proposes, elects a new leader when the old one dies, and a node restarted
//! from its directory catches up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::bus::security::BusSecurity;
use super::membership::caught_up;
use super::node::Node;
use super::raft::{Member, NodeId, Record};
use crate::config::{Config, Peers};
use crate::core::{Change, Clock, CoreSettings, WallClock};
use crate::journal;

mod bus_security;

const PATIENCE: Option<Duration> = Some(Duration::from_secs(30));

fn settings() -> CoreSettings {
    CoreSettings {
        default_lease_ms: 30_000,
        max_lease_ms: 3_600_000,
        release_on_disconnect: true,
        shards: 4,
        max_queue_bytes: 48 << 20,
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The members whose buses are at `peers` (their client addresses play no part here).
fn members(peers: &BTreeMap<NodeId, SocketAddr>) -> BTreeMap<NodeId, Member> {
    peers.iter().map(|(id, addr)| (*id, Member { client: *addr, bus: *addr })).collect()
}

/// The bus security of node `id` among `peers`, configured as `adjust` says.
fn bus_security(
    id: NodeId,
    peers: &BTreeMap<NodeId, SocketAddr>,
    adjust: impl FnOnce(&mut Config),
) -> Arc<BusSecurity> {
    joining_bus_security(id, peers, peers, adjust)
}

/// The bus security of node `id`, started with `peers`, in the cluster `formed` formed.
fn joining_bus_security(
    id: NodeId,
    peers: &BTreeMap<NodeId, SocketAddr>,
    formed: &BTreeMap<NodeId, SocketAddr>,
    adjust: impl FnOnce(&mut Config),
) -> Arc<BusSecurity> {
    let entries = |peers: &BTreeMap<NodeId, SocketAddr>| {
        Peers(
            peers
                .iter()
                .map(|(id, addr)| crate::config::PeerEntry { id: *id, client_addr: *addr, bus_port: None })
                .collect(),
        )
    };
    let mut config = Config::default_for_tests();
    config.cluster_node_id = Some(id);
    config.cluster_peers = Some(entries(peers));
    adjust(&mut config);
    let cluster = super::identity::formed_by(&entries(formed));
    Arc::new(BusSecurity::from_config(&config, cluster).unwrap())
}

/// What a leader proposes when `owner` is granted `key` with `token`.
fn grant(key: &str, owner: &str, token: u64) -> Record {
    let change =
        Change::Hold { key: Arc::from(key.as_bytes()), owner: Arc::from(owner.as_bytes()), token, lease_ms: 60_000 };
    let mut bytes = Vec::new();
    let clock = WallClock { wall_ms_at_zero: journal::unix_ms(), now_ms: 0, max_ahead_ms: 3_600_000 };
    journal::Record::Batch(vec![change]).encode(clock, &mut bytes);
    let mut framed = Vec::new();
    journal::encode_record(&mut framed, 0, &bytes);
    Record(framed)
}

/// Proposes `record` through whichever node leads, retrying while leadership settles (a node
/// may believe it leads until its lease runs out). Returns the leader's id and the entry's index.
async fn propose(nodes: &[&Node], record: Record) -> (NodeId, u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE.unwrap();
    loop {
        for node in nodes {
            if node.leads()
                && let Ok(written) = node.raft.client_write(record.clone()).await
            {
                return (node.id, written.log_id.index);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader accepted a proposal");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` has applied `index`, then returns who holds `key` there, and with what token.
async fn holder_after(node: &Node, index: u64, key: &str) -> Option<(String, u64)> {
    node.raft.wait(PATIENCE).applied_index_at_least(Some(index), "applied").await.unwrap();
    let info = node.state.core().0.info(key.as_bytes(), Clock::new().now(), 10)?;
    info.holder.map(|holder| (String::from_utf8(holder.owner.to_vec()).unwrap(), holder.token))
}

/// Nodes 1, 2 and 3 of `peers`, each on its directory of `dirs`, forming a cluster.
async fn start_three(dirs: &[tempfile::TempDir], peers: &BTreeMap<NodeId, SocketAddr>, clock: Clock) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let bus = bus_security(id, peers, |_| ());
        let dir = dirs[id as usize - 1].path();
        nodes.push(Node::start(id, &members(peers), dir, settings(), clock, bus, false).await.unwrap());
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_elect_and_catch_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: BTreeMap<NodeId, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let clock = Clock::new();
    let mut nodes = start_three(&dirs, &peers, clock).await;

    let (first, index) = propose(&nodes.iter().collect::<Vec<_>>(), grant("k1", "o1", 7)).await;
    for node in &nodes {
        assert_eq!(holder_after(node, index, "k1").await, Some(("o1".into(), 7)), "node {}", node.id);
    }

    // The leader dies; the other two elect one of themselves and go on.
    let dead = nodes.remove(first as usize - 1);
    dead.stop().await;
    let survivors: Vec<&Node> = nodes.iter().collect();
    let (second, index) = propose(&survivors, grant("k2", "o2", 9)).await;
    assert_ne!(second, first);
    for node in &survivors {
        assert_eq!(holder_after(node, index, "k2").await, Some(("o2".into(), 9)));
        assert_eq!(holder_after(node, index, "k1").await, Some(("o1".into(), 7)));
    }

    // The dead node restarts from its directory and learns what it missed.
    let bus = bus_security(first, &peers, |_| ());
    let back = Node::start(first, &members(&peers), dirs[first as usize - 1].path(), settings(), clock, bus, false)
        .await
        .unwrap();
    assert_eq!(holder_after(&back, index, "k2").await, Some(("o2".into(), 9)));
    assert_eq!(holder_after(&back, index, "k1").await, Some(("o1".into(), 7)));
    back.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

/// openraft purges the log up to a snapshot: a node started again must begin from the snapshot
/// on disk, or the entries the purge took are lost to it (it panicked on the next commit before
/// snapshots were saved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_restart_from_their_snapshots_once_the_log_is_purged() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: BTreeMap<NodeId, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let clock = Clock::new();
    let members = members(&peers);
    let start = |id: NodeId| {
        let bus = bus_security(id, &peers, |_| ());
        Node::start(id, &members, dirs[id as usize - 1].path(), settings(), clock, bus, false)
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id).await.unwrap());
    }
    let mut index = 0;
    for n in 0..5 {
        index = propose(&nodes.iter().collect::<Vec<_>>(), grant(&format!("k{n}"), "o", 10 + n)).await.1;
    }
    for node in &nodes {
        holder_after(node, index, "k4").await;
        node.raft.trigger().snapshot().await.unwrap();
        node.raft.wait(PATIENCE).metrics(|m| m.snapshot.is_some_and(|s| s.index >= index), "snapshot").await.unwrap();
        node.raft.trigger().purge_log(index).await.unwrap();
        node.raft.wait(PATIENCE).metrics(|m| m.purged.is_some_and(|p| p.index >= index), "purged").await.unwrap();
    }
    for node in nodes.drain(..) {
        node.stop().await;
    }

    for id in 1..=3 {
        nodes.push(start(id).await.unwrap());
    }
    let (_, after) = propose(&nodes.iter().collect::<Vec<_>>(), grant("later", "o", 99)).await;
    for node in &nodes {
        for n in 0..5 {
            assert_eq!(
                holder_after(node, after, &format!("k{n}")).await,
                Some(("o".into(), 10 + n)),
                "node {}",
                node.id
            );
        }
        assert_eq!(holder_after(node, after, "later").await, Some(("o".into(), 99)));
    }
    for node in nodes {
        node.stop().await;
    }
}

/// A learner counts as caught up once it has every entry up to the one that added it: a node
/// that is not running never does, and one that runs does, with the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_caught_up_only_once_it_has_the_log() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: BTreeMap<NodeId, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let clock = Clock::new();
    let nodes = start_three(&dirs, &peers, clock).await;
    let (leader, index) = propose(&nodes.iter().collect::<Vec<_>>(), grant("k", "o", 7)).await;
    let raft = &nodes[leader as usize - 1].raft;

    let nowhere = free_addr();
    let added = raft.add_learner(9, Member { client: nowhere, bus: nowhere }, false).await.unwrap();
    assert!(!caught_up(raft, 9, added.log_id.index, Duration::from_secs(2)).await, "a node that does not run");

    let mut grown = peers.clone();
    grown.insert(4, free_addr());
    let bus = joining_bus_security(4, &grown, &peers, |_| ());
    let four = Node::start(4, &members(&grown), dirs[3].path(), settings(), clock, bus, true).await.unwrap();
    let added = raft.add_learner(4, Member { client: grown[&4], bus: grown[&4] }, false).await.unwrap();
    assert!(caught_up(raft, 4, added.log_id.index, PATIENCE.unwrap()).await);
    assert_eq!(holder_after(&four, index, "k").await, Some(("o".into(), 7)));
    four.stop().await;
    for node in nodes {
        node.stop().await;
    }
}
