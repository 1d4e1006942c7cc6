//! Adding and removing members while the cluster runs (CLUSTER ADDNODE, CLUSTER FORGET), through
//! openraft's membership changes: a new member first catches up as a learner, which does not
//! count towards any majority, and only then becomes a voter, through a joint configuration in
//! which both the old and the new set of voters must agree. Either way the cluster never has
//! two majorities that do not overlap, and never waits on a member that has nothing yet.
//!
//! "Caught up" is judged here, not by openraft's blocking `add_learner`: that counts a learner
//! within 5,000 entries of the leader as caught up, which on a young cluster is one that has
//! nothing, or is not even running, and would make it a voter the majority then waits on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use tracing::info;

use super::Cluster;
use super::raft::{Member, NodeId, Raft, TypeConfig};
use super::topology::Redirect;

/// How long CLUSTER ADDNODE waits for the new member to catch up before giving up: long enough
/// to send a large state over a slow link, short enough that an operator who forgot to start
/// the node hears so.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(60);

/// Why a membership change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MembershipRefusal {
    /// Only the leader changes the membership.
    NotLeader(Redirect),
    UnknownNode(NodeId),
    /// The leader cannot remove itself: stopped, it is replaced and can then be forgotten.
    ForgetLeader(NodeId),
    /// The node is a member already, at other addresses.
    MemberElsewhere {
        id: NodeId,
        client: SocketAddr,
    },
    /// Another member has one of the addresses.
    AddressTaken {
        id: NodeId,
        addr: SocketAddr,
    },
    /// A bus port the client port cannot be shifted to.
    NoBusPort(SocketAddr),
    /// The new member did not catch up in time (it is a learner now).
    NotCaughtUp {
        id: NodeId,
        bus: SocketAddr,
        patience: Duration,
    },
    /// The consensus engine refused the change, for instance because another one is under way.
    Refused(String),
}

impl Cluster {
    /// Makes node `id`, whose clients connect to `client` and whose peers to its bus (at
    /// `bus_port`, by default as `--cluster-peers` has it), a voting member. Returns once the
    /// change is committed. Adding a member that is one already, at the same addresses, is done.
    pub(crate) async fn add_member(
        &self,
        id: NodeId,
        client: SocketAddr,
        bus_port: Option<u16>,
    ) -> Result<(), MembershipRefusal> {
        self.check_leads()?;
        let bus = bus_addr(client, bus_port.or(self.default_bus_port)).ok_or(MembershipRefusal::NoBusPort(client))?;
        let member = Member { client, bus };
        let membership = self.node.raft.metrics().borrow_watched().membership_config.membership().clone();
        if let Some(known) = membership.get_node(&id) {
            if *known != member {
                return Err(MembershipRefusal::MemberElsewhere { id, client: known.client });
            }
            if membership.voter_ids().any(|voter| voter == id) {
                return Ok(());
            }
        }
        for (other, known) in membership.nodes().filter(|(other, _)| **other != id) {
            if let Some(addr) = [client, bus].into_iter().find(|addr| *addr == known.client || *addr == known.bus) {
                return Err(MembershipRefusal::AddressTaken { id: *other, addr });
            }
        }
        info!(node = id, %client, %bus, "cluster: adding a member; it catches up as a learner first");
        let added = self.node.raft.add_learner(id, member, false).await.map_err(|error| self.refusal(error))?;
        if !caught_up(&self.node.raft, id, added.log_id.index, CATCH_UP_PATIENCE).await {
            self.check_leads()?;
            return Err(MembershipRefusal::NotCaughtUp { id, bus, patience: CATCH_UP_PATIENCE });
        }
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
        info!(node = id, "cluster: member added as a voter");
        Ok(())
    }

    /// Removes member `id` (a voter or a learner) from the cluster. Returns once the change is
    /// committed; from then on the other members refuse its connections.
    pub(crate) async fn forget(&self, id: NodeId) -> Result<(), MembershipRefusal> {
        self.check_leads()?;
        if id == self.node.id {
            return Err(MembershipRefusal::ForgetLeader(id));
        }
        let membership = self.node.raft.metrics().borrow_watched().membership_config.membership().clone();
        if membership.get_node(&id).is_none() {
            return Err(MembershipRefusal::UnknownNode(id));
        }
        let ids = BTreeSet::from([id]);
        let voter = membership.voter_ids().any(|voter| voter == id);
        self.change(if voter { ChangeMembers::RemoveVoters(ids) } else { ChangeMembers::RemoveNodes(ids) }).await?;
        info!(node = id, "cluster: member forgotten");
        Ok(())
    }

    fn check_leads(&self) -> Result<(), MembershipRefusal> {
        match self.serving_term() {
            0 => Err(MembershipRefusal::NotLeader(self.redirect(b""))),
            _ => Ok(()),
        }
    }

    async fn change(&self, change: ChangeMembers<NodeId, Member>) -> Result<(), MembershipRefusal> {
        // Not retained: a voter removed is gone, not demoted to a learner that is still sent
        // every entry.
        self.node.raft.change_membership(change, false).await.map(drop).map_err(|error| self.refusal(error))
    }

    fn refusal(&self, error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> MembershipRefusal {
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                MembershipRefusal::NotLeader(self.redirect(b""))
            }
            error => MembershipRefusal::Refused(error.to_string()),
        }
    }
}

/// Whether the leader's replication to `id` reaches entry `through` (the one that made it a
/// learner: it has everything before) within `patience`; false at once if `raft` stops leading.
pub(crate) async fn caught_up(raft: &Raft, id: NodeId, through: u64, patience: Duration) -> bool {
    let mut metrics = raft.metrics();
    let waiting = async {
        loop {
            let reached = match &metrics.borrow_watched().replication {
                None => return false,
                Some(replication) => replication.get(&id).and_then(Option::as_ref).map(|matched| matched.index),
            };
            if reached.is_some_and(|index| index >= through) {
                return true;
            }
            if metrics.changed().await.is_err() {
                return false;
            }
        }
    };
    tokio::time::timeout(patience, waiting).await.unwrap_or(false)
}

/// A member's bus address: its client address with `bus_port`, by default the client port plus
/// 10000 (Redis Cluster's convention); None when that is no port.
pub(crate) fn bus_addr(client: SocketAddr, bus_port: Option<u16>) -> Option<SocketAddr> {
    let port = match bus_port {
        Some(port) => port,
        None => client.port().checked_add(10_000)?,
    };
    Some(SocketAddr::new(client.ip(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_is_ten_thousand_ports_up_unless_named() {
        let client: SocketAddr = "10.0.0.4:7004".parse().unwrap();
        assert_eq!(bus_addr(client, None), Some("10.0.0.4:17004".parse().unwrap()));
        assert_eq!(bus_addr(client, Some(9000)), Some("10.0.0.4:9000".parse().unwrap()));
        assert_eq!(bus_addr("10.0.0.4:60000".parse().unwrap(), None), None);
    }
}
