//! One cluster node: its Raft, with the log under its `--dir`, its state machine, and the bus
//! it serves its peers on.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::bus::security::BusSecurity;
use super::bus::{self, Bus};
use super::log_store::LogStore;
use super::raft::{self, Member, NodeId, Raft};
use super::state_machine::StateMachine;
use crate::core::{Clock, CoreSettings};

pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) state: StateMachine,
    bus_shutdown: CancellationToken,
    /// Taken by [`Node::stop`], which waits for it so that the bus port is free when it returns
    /// (a node restarted on the same port must be able to bind it at once).
    bus_listener: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Several heartbeats, and more than an election takes (see `raft::config`).
const FORMING_PATIENCE: Duration = Duration::from_secs(1);

/// A node whose log is empty forms the cluster, with every peer as a voter, unless a leader
/// reaches it first. It waits for that longer than a leader takes to reach a new member (a
/// heartbeat) and longer than an election takes, and the later in id order, the longer, so that
/// normally the first node forms the cluster and a node started late, or replaced with an empty
/// directory, joins the running one instead of disrupting it with an election of its own.
async fn form_unless_joined(raft: Raft, id: NodeId, members: BTreeMap<NodeId, Member>, rank: u32) {
    let patience = FORMING_PATIENCE * (1 + rank);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let joined = {
            let metrics = raft.metrics().borrow_watched().clone();
            metrics.last_log_index.is_some() || metrics.current_leader.is_some()
        };
        if joined {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match raft.initialize(members).await {
        Ok(()) => info!(node = id, "cluster: formed a new cluster"),
        // Joined meanwhile.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
        Err(error) => warn!(node = id, %error, "cluster: cannot form the cluster"),
    }
}

/// Once this node knows the Raft membership, its members, and only they, may connect to its
/// bus: a member added later is let in, a forgotten one is turned away.
async fn admit_members(raft: Raft, security: Arc<BusSecurity>) {
    let mut metrics = raft.server_metrics();
    let mut admitted = Vec::new();
    loop {
        let members: Vec<NodeId> =
            metrics.borrow_watched().membership_config.membership().nodes().map(|(id, _)| *id).collect();
        if !members.is_empty() && members != admitted {
            info!(?members, "cluster: the membership changed");
            security.admit_only(members.clone());
            admitted = members;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl Node {
    /// Starts node `id` of the cluster whose members are `members`, with its Raft log under
    /// `dir`. A fresh set of nodes started with the same peers forms the cluster
    /// by itself (see [`form_unless_joined`]) unless `joining` says this one is being added to a
    /// cluster that runs; a node with a log rejoins with what it has.
    pub(crate) async fn start(
        id: NodeId,
        members: &BTreeMap<NodeId, Member>,
        dir: &Path,
        settings: CoreSettings,
        clock: Clock,
        security: Arc<BusSecurity>,
        joining: bool,
    ) -> io::Result<Node> {
        let own = members
            .get(&id)
            .map(|member| member.bus)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("node {id} is not among the peers")))?;
        let listener = TcpListener::bind(own)
            .await
            .map_err(|error| io::Error::new(error.kind(), format!("cluster bus {own}: {error}")))?;
        let log = LogStore::open(&dir.join("raft"))?;
        let state = StateMachine::open(&dir.join("raft"), settings, clock)?;
        let config = raft::config().validate().map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let raft = Raft::new(
            id,
            config.into(),
            Bus::new(Arc::clone(&security), members.iter().map(|(id, member)| (*id, member.bus)).collect()),
            log,
            state.clone(),
        )
        .await
        .map_err(io::Error::other)?;
        let bus_shutdown = CancellationToken::new();
        tokio::spawn(admit_members(raft.clone(), Arc::clone(&security)));
        let bus_listener = tokio::spawn(bus::serve(listener, raft.clone(), security, bus_shutdown.clone()));
        if joining {
            if raft.metrics().borrow_watched().last_log_index.is_none() {
                info!(node = id, "cluster: waiting to be added (CLUSTER ADDNODE on the leader)");
            }
        } else {
            let rank = members.keys().position(|peer| *peer == id).unwrap_or(0) as u32;
            tokio::spawn(form_unless_joined(raft.clone(), id, members.clone(), rank));
        }
        Ok(Node { id, raft, state, bus_shutdown, bus_listener: parking_lot::Mutex::new(Some(bus_listener)) })
    }

    /// Whether this node believes it leads (it may have been deposed without knowing yet: what
    /// it proposes then never commits).
    #[cfg(test)]
    pub(crate) fn leads(&self) -> bool {
        self.raft.metrics().borrow_watched().state.is_leader()
    }

    /// Stops the node as a crash would, from its peers' point of view: its Raft and its bus stop.
    pub(crate) async fn stop(&self) {
        self.bus_shutdown.cancel();
        let bus_listener = self.bus_listener.lock().take();
        if let Some(bus_listener) = bus_listener {
            let _ = bus_listener.await;
        }
        let _ = self.raft.shutdown().await;
    }
}
