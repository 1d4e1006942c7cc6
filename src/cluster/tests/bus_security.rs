//! The bus admits the cluster's own nodes only. With a shared secret, or over TLS with
//! certificates from the cluster's CA, three nodes form a cluster and replicate; a node with
//! another secret or an untrusted certificate is shut out both ways (it neither gets entries nor
//! gets its vote requests through); a frame sent without the handshake changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::raft::AppendEntriesRequest;
use openraft::type_config::async_runtime::WatchReceiver;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{PATIENCE, bus_security, free_addr, grant, holder_after, members, propose, settings};
use crate::cluster::bus::security::BusSecurity;
use crate::cluster::bus::{Request, write_frame};
use crate::cluster::node::Node;
use crate::cluster::raft::{Entry, LogId, NodeId};
use crate::config::Config;
use crate::core::Clock;

struct Cluster {
    nodes: Vec<Node>,
    buses: Vec<Arc<BusSecurity>>,
    peers: BTreeMap<NodeId, SocketAddr>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Starts nodes 1, 2 and 3, node `id`'s bus configured by `configure(id, config)`.
async fn start(configure: impl Fn(NodeId, &mut Config)) -> Cluster {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: BTreeMap<NodeId, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let clock = Clock::new();
    let (mut nodes, mut buses) = (Vec::new(), Vec::new());
    for (id, dir) in (1..=3).zip(&dirs) {
        let bus = bus_security(id, &peers, |config| configure(id, config));
        buses.push(Arc::clone(&bus));
        nodes.push(Node::start(id, &members(&peers), dir.path(), settings(), clock, bus, false).await.unwrap());
    }
    Cluster { nodes, buses, peers, _dirs: dirs }
}

impl Cluster {
    fn node(&self, id: NodeId) -> (&Node, &BusSecurity) {
        let index = usize::try_from(id - 1).unwrap();
        (&self.nodes[index], &self.buses[index])
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE.unwrap();
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_all_replicate(cluster: &Cluster) {
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let (_, index) = propose(&nodes, grant("k", "o", 7)).await;
    for node in nodes {
        assert_eq!(holder_after(node, index, "k").await, Some(("o".into(), 7)), "node {}", node.id);
    }
}

/// Nodes 1 and 2 replicate without node 3, and refuse its connections as it refuses theirs: the
/// leader's appends and node 3's vote requests (it campaigns for ever) alike. Node 3 learns
/// nothing and never leads.
async fn assert_node_3_is_shut_out(cluster: Cluster) {
    let members: Vec<&Node> = cluster.nodes[..2].iter().collect();
    let (_, index) = propose(&members, grant("k", "o", 7)).await;
    for node in &members {
        assert_eq!(holder_after(node, index, "k").await, Some(("o".into(), 7)), "node {}", node.id);
    }
    let refused: Vec<u64> = cluster.buses.iter().map(|bus| bus.refused()).collect();
    wait_until("every node has refused connections since the entry committed", || {
        cluster.buses.iter().zip(&refused).all(|(bus, before)| bus.refused() > *before)
    })
    .await;
    let (outsider, _) = cluster.node(3);
    let last_log_index = outsider.raft.metrics().borrow_watched().last_log_index;
    assert!(last_log_index < Some(index), "node 3 has entries up to {last_log_index:?}");
    assert!(outsider.state.core().0.info(b"k", Clock::new().now(), 10).is_none());
    assert!(!outsider.leads());
    cluster.stop().await;
}

/// An Append that `node`'s leader could send it next: one entry, granting `forged`, committed at
/// once.
fn forged_append(node: &Node) -> Request {
    let metrics = node.raft.metrics().borrow_watched().clone();
    let last = metrics.last_applied.expect("the node has applied entries");
    let forged = LogId::new(*last.committed_leader_id(), last.index() + 1);
    Request::Append(AppendEntriesRequest {
        vote: metrics.vote,
        prev_log_id: Some(last),
        entries: vec![Entry::new_normal(forged, grant("forged", "mallory", 666))],
        leader_commit: Some(forged),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_secret_replicate_and_a_frame_without_the_handshake_changes_nothing() {
    // Node 1 has the secret as its --requirepass; the others as --cluster-secret, which wins over
    // a --requirepass of their own.
    let cluster = start(|id, config| {
        if id == 1 {
            config.requirepass = Some("s3cret".into());
        } else {
            config.requirepass = Some("the clients' password".into());
            config.cluster_secret = Some("s3cret".into());
        }
    })
    .await;
    let nodes: Vec<&Node> = cluster.nodes.iter().collect();
    let (leader, index) = propose(&nodes, grant("k1", "o1", 7)).await;
    for node in &nodes {
        assert_eq!(holder_after(node, index, "k1").await, Some(("o1".into(), 7)), "node {}", node.id);
    }

    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let (node, bus) = cluster.node(follower);
    let refused = bus.refused();
    let mut forger = TcpStream::connect(cluster.peers[&follower]).await.unwrap();
    write_frame(&mut forger, &forged_append(node)).await.unwrap();
    let mut answer = Vec::new();
    // Disconnected either way; a reset (the forged frame left unread) is an error here.
    let _ = tokio::time::timeout(PATIENCE.unwrap(), forger.read_to_end(&mut answer))
        .await
        .expect("the forger was not disconnected");
    assert!(answer.is_empty(), "the forger was answered: {answer:?}");
    wait_until("the follower has counted the refusal", || bus.refused() > refused).await;

    let (_, index) = propose(&nodes, grant("k2", "o2", 9)).await;
    assert_eq!(holder_after(node, index, "k2").await, Some(("o2".into(), 9)), "the follower goes on");
    assert_eq!(holder_after(node, index, "forged").await, None);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_shut_out() {
    let cluster =
        start(|id, config| config.cluster_secret = Some(if id == 3 { "guess" } else { "s3cret" }.into())).await;
    assert_node_3_is_shut_out(cluster).await;
}

/// A CA (`ca.crt` in `dir`) and a certificate it signs for 127.0.0.1 (`node.crt`, `node.key`),
/// which every node of a test presents, as server and as client.
fn make_pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "baton test cluster CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "baton test node");
    std::fs::write(dir.join("node.crt"), params.signed_by(&key, &ca).unwrap().pem()).unwrap();
    std::fs::write(dir.join("node.key"), key.serialize_pem()).unwrap();
}

/// TLS as a server configures it; the bus takes it up by default.
fn use_pki(config: &mut Config, dir: &Path) {
    config.tls_cert_file = Some(dir.join("node.crt"));
    config.tls_key_file = Some(dir.join("node.key"));
    config.tls_ca_cert_file = Some(dir.join("ca.crt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_verifying_each_other_over_tls_replicate() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let cluster = start(|_, config| use_pki(config, pki.path())).await;
    assert_all_replicate(&cluster).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_certificate_is_not_trusted_is_shut_out() {
    let (trusted, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_pki(trusted.path());
    make_pki(other.path());
    let cluster = start(|id, config| use_pki(config, if id == 3 { other.path() } else { trusted.path() })).await;
    assert_node_3_is_shut_out(cluster).await;
}
