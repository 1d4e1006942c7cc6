//! What every connection task shares: the configuration, the lock core, the clock, the client
//! registry and the server-wide counters. It sits below the command layer so that commands,
//! sessions and connections can all reach it without reaching up into the server that owns it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::acl::Acl;
use crate::clients::ClientRegistry;
use crate::cluster::ClusterHandle;
use crate::config::Config;
use crate::core::{Clock, Gauges, LockCore};
use crate::metrics::{Figures, Metrics};
use crate::monitor::Monitors;
use crate::persistence::Persistence;
use crate::pubsub::PubSub;

/// Server-wide counters for INFO.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub(crate) total_connections_received: AtomicU64,
    pub(crate) total_commands_processed: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) blocked_clients: AtomicU64,
    /// Hand-offs whose grant the unlocking connection wrote to the waiter (see [`crate::direct`]).
    pub(crate) handoffs_written_by_unlocker: AtomicU64,
    /// DONEs the unlocking connection wrote to the waiter (see [`crate::direct`]).
    pub(crate) dones_written_by_unlocker: AtomicU64,
    /// Subscribers and monitors cut off for passing `--pubsub-output-buffer-limit`.
    pub(crate) output_buffer_limit_disconnections: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) core: LockCore,
    pub(crate) clock: Clock,
    pub(crate) clients: ClientRegistry,
    pub(crate) stats: ServerStats,
    pub(crate) shutdown: CancellationToken,
    pub(crate) started: Instant,
    pub(crate) local_addr: SocketAddr,
    pub(crate) metrics: Metrics,
    pub(crate) acl: Acl,
    /// The journal; None with `--appendonly no`.
    pub(crate) persistence: Option<Persistence>,
    /// Also the core's observer, for the lock events.
    pub(crate) pubsub: Arc<PubSub>,
    pub(crate) monitors: Monitors,
    /// This node's cluster; None unless started with `--cluster-node-id`.
    pub(crate) cluster: ClusterHandle,
    /// The event loops leave a CPU core unused (see `Config::leaves_a_core_spare`).
    pub(crate) spare_core: bool,
}

impl Shared {
    /// CONFIG RESETSTAT: counters and latency figures start again from zero.
    pub(crate) fn reset_stats(&self) {
        for counter in [
            &self.stats.total_connections_received,
            &self.stats.total_commands_processed,
            &self.stats.rejected_connections,
            &self.stats.output_buffer_limit_disconnections,
            &self.stats.handoffs_written_by_unlocker,
            &self.stats.dones_written_by_unlocker,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.core.reset_counters();
        self.metrics.reset();
        self.acl.reset_counters();
    }

    /// What this node holds, as DBSIZE and INFO's lock gauges show it: its live core, or on a
    /// cluster member that does not lead, the replicated state it applies (its live core is
    /// empty then), as a Redis replica shows its dataset.
    pub(crate) fn held(&self) -> Gauges {
        match &self.cluster {
            Some(cluster) if cluster.serving_term() == 0 => cluster.replicated_gauges(),
            _ => self.core.gauges(),
        }
    }

    /// The figures INFO and the metrics endpoint report, read now.
    pub(crate) fn figures(&self) -> Figures {
        let stats = &self.stats;
        let mut core = self.core.stats();
        if self.cluster.is_some() {
            let held = self.held();
            (core.keys, core.held_keys, core.waiters, core.blocked_waiters) =
                (held.keys, held.held_keys, held.waiters, held.blocked_waiters);
        }
        Figures {
            core,
            connections_received: stats.total_connections_received.load(Ordering::Relaxed),
            commands_processed: stats.total_commands_processed.load(Ordering::Relaxed),
            rejected_connections: stats.rejected_connections.load(Ordering::Relaxed),
            connected_clients: self.clients.len() as u64,
            blocked_clients: stats.blocked_clients.load(Ordering::Relaxed),
            handoffs_written_by_unlocker: stats.handoffs_written_by_unlocker.load(Ordering::Relaxed),
            dones_written_by_unlocker: stats.dones_written_by_unlocker.load(Ordering::Relaxed),
            ops_per_sec: self.metrics.instantaneous_ops_per_sec(),
            handoff: self.metrics.handoff_latency(),
            journal: self.persistence.as_ref().map(Persistence::figures),
        }
    }
}
