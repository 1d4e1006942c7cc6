//! A baton cluster of child processes on loopback, for the tests that kill, stop, restart and
//! partition its nodes (tests/cluster.rs, tests/clients/main.rs). Each node has a `--dir` of its
//! own. Started `linked`, every node reaches every other node's bus through a
//! [`Link`] of its own (each node's `--cluster-peers` names the link as that peer's bus), so a
//! test can cut any one direction of any one connection between two nodes.
//!
//! The including test crate also includes support/baton.rs as `baton_process`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use baton_testkit::client::Connection;
use baton_testkit::process::ServerProcess;
use baton_testkit::proxy::Link;
use baton_testkit::scratch::ScratchDir;

use crate::baton_process::listening_addr;

/// Failover takes 1-2 s; a loaded CI machine gets many times that.
pub const PATIENCE: Duration = Duration::from_secs(30);
const IO: Duration = Duration::from_secs(10);
/// A node cut off from the others while it still thinks it leads holds a read until it learns
/// better: the search moves on.
const PROBE: Duration = Duration::from_secs(2);

pub struct Node {
    pub id: u64,
    pub client: SocketAddr,
    pub bus: SocketAddr,
    /// The `--cluster-peers` this node starts with: how it reaches each peer.
    peers: String,
    /// The `--cluster-join` it starts with, if it was added to a running cluster.
    join: Option<String>,
    pub dir: ScratchDir,
    pub process: Option<ServerProcess>,
}

pub struct Cluster {
    nodes: Vec<Node>,
    /// (from, to): the link through which node `from` reaches node `to`'s bus.
    links: BTreeMap<(u64, u64), Link>,
}

/// Cluster nodes need their ports named in advance. They come from below Linux's ephemeral range
/// (32768 and up), so that no connection or server another test opens meanwhile takes one
/// between this choice and the node's bind (a node whose port is taken exits at once).
fn unused_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < count {
        let port = rand::random_range(20_000..32_000);
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// `size` nodes started, with direct bus connections.
    pub fn start(size: u64) -> Cluster {
        Cluster::start_with(size, false)
    }

    /// `size` nodes started, each reaching the others through links a test can cut.
    pub fn start_linked(size: u64) -> Cluster {
        Cluster::start_with(size, true)
    }

    fn start_with(size: u64, linked: bool) -> Cluster {
        let ports = unused_ports(2 * size as usize);
        let client_port = |id: u64| ports[2 * (id as usize - 1)];
        let bus_port = |id: u64| ports[2 * (id as usize - 1) + 1];
        let mut links = BTreeMap::new();
        if linked {
            for from in 1..=size {
                for to in (1..=size).filter(|&to| to != from) {
                    // Bound at once, so an ephemeral port is safe here.
                    let listener = TcpListener::bind("127.0.0.1:0").expect("link port");
                    links.insert((from, to), Link::forward(listener, loopback(bus_port(to))).expect("link"));
                }
            }
        }
        let nodes = (1..=size)
            .map(|id| {
                let peers: Vec<String> = (1..=size)
                    .map(|peer| {
                        let bus = links.get(&(id, peer)).map_or(bus_port(peer), |link: &Link| link.addr().port());
                        format!("{peer}@127.0.0.1:{}@{bus}", client_port(peer))
                    })
                    .collect();
                Node {
                    id,
                    client: loopback(client_port(id)),
                    bus: loopback(bus_port(id)),
                    peers: peers.join(","),
                    join: None,
                    dir: ScratchDir::new("baton-cluster"),
                    process: None,
                }
            })
            .collect();
        let mut cluster = Cluster { nodes, links };
        for id in 1..=size {
            cluster.launch(id);
        }
        cluster
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    pub fn url(&self, id: u64) -> String {
        format!("redis://{}/", self.node(id).client)
    }

    pub fn urls(&self) -> Vec<String> {
        self.ids().into_iter().map(|id| self.url(id)).collect()
    }

    /// Starts node `id` (again) on its directory.
    pub fn launch(&mut self, id: u64) {
        let node = &mut self.nodes[id as usize - 1];
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .args(["--bind", "127.0.0.1", "--port", &node.client.port().to_string(), "--dir", node.dir.arg()])
            .args(["--cluster-node-id", &id.to_string(), "--cluster-peers", &node.peers])
            .args(node.join.iter().flat_map(|join| ["--cluster-join", join]))
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,openraft=warn");
        node.process = Some(ServerProcess::start(&mut command, listening_addr));
    }

    /// Starts a new node, the next id, to be added to this cluster: started with `--cluster-join`
    /// and the cluster id that node `from` shows, it waits for a leader to add it (CLUSTER
    /// ADDNODE). It reaches the others' buses directly, never through a link.
    pub async fn launch_joining(&mut self, from: u64) -> u64 {
        let mut conn = Connection::connect(self.node(from).client, IO).await.expect("connect");
        let info = conn.call(&[b"CLUSTER", b"INFO"]).await.expect("CLUSTER INFO");
        let info = info.text();
        let cluster_id = info.lines().find_map(|line| line.strip_prefix("cluster_id:")).expect("cluster_id").to_owned();
        let id = self.nodes.len() as u64 + 1;
        let ports = unused_ports(2);
        let (client, bus) = (loopback(ports[0]), loopback(ports[1]));
        let mut peers: Vec<String> =
            self.nodes.iter().map(|node| format!("{}@{}@{}", node.id, node.client, node.bus.port())).collect();
        peers.push(format!("{id}@{client}@{}", bus.port()));
        self.nodes.push(Node {
            id,
            client,
            bus,
            peers: peers.join(","),
            join: Some(cluster_id),
            dir: ScratchDir::new("baton-cluster"),
            process: None,
        });
        self.launch(id);
        id
    }

    /// Every node stopped as a crash would stop it (those still running), then all started again
    /// on their directories.
    pub fn restart_all(&mut self) {
        for id in self.ids() {
            if self.running(id) {
                self.kill(id);
            }
        }
        for id in self.ids() {
            self.launch(id);
        }
    }

    pub fn running(&self, id: u64) -> bool {
        self.node(id).process.is_some()
    }

    pub fn signal(&self, id: u64, signal: &str) {
        self.node(id).process.as_ref().expect("running").proc.signal(signal);
    }

    /// SIGKILL, and waits until the process is gone; returns its log.
    pub fn kill(&mut self, id: u64) -> String {
        let mut process = self.nodes[id as usize - 1].process.take().expect("running");
        process.proc.signal("KILL");
        let _ = process.proc.child.wait();
        process.log_text()
    }

    /// Node `from` no longer reaches node `to`'s bus (a cluster started [`Cluster::start_linked`]).
    pub fn cut(&self, from: u64, to: u64) {
        self.links[&(from, to)].cut();
    }

    /// Every link to and from node `id` cut: a partition of one.
    pub fn isolate(&self, id: u64) {
        for (&(from, to), link) in &self.links {
            if from == id || to == id {
                link.cut();
            }
        }
    }

    pub fn heal_all(&self) {
        self.links.values().for_each(Link::heal);
    }

    /// The node that answers key commands, found as a cluster client finds it: by asking each of
    /// `among` and keeping the one that does not redirect.
    pub async fn leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for &id in among {
                if let Ok(mut conn) = Connection::connect(self.node(id).client, IO).await
                    && let Ok(Ok(reply)) =
                        tokio::time::timeout(PROBE, conn.call(&[b"LOCK.INFO", b"leader-probe"])).await
                    && !reply.is_error()
                {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}; logs: {}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let log = node.process.as_ref().map(ServerProcess::log_text).unwrap_or_default();
                format!("\n--- node {}:\n{log}", node.id)
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
