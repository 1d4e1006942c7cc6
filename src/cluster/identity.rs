//! Which cluster a node belongs to, as its bus handshake names it (see `bus::security`).
//!
//! The nodes that form a cluster agree on its id without talking: it is a hash of the
//! `--cluster-peers` they are all started with. Each keeps it under its `--dir` from then on,
//! so that the id outlives that list: a member added later (`CLUSTER ADDNODE`) is given it with
//! `--cluster-join`, and an operator who updates a node's `--cluster-peers` to name the new
//! member does not make that node a stranger to its own cluster.

use std::io;
use std::path::Path;

use ring::digest;

use super::log_store::{read_single, write_single};
use crate::config::{ClusterId, Peers};

const FILE: &str = "cluster-id";

/// The id of the cluster the node with this Raft directory belongs to: the one it keeps, else
/// the one it is told to join, else the one its peers form. Kept from the first start on. Errs
/// when told to join another cluster than the one its directory belongs to.
pub(crate) fn resolve(raft_dir: &Path, join: Option<ClusterId>, peers: &Peers) -> io::Result<ClusterId> {
    let path = raft_dir.join(FILE);
    if let Some(kept) = read_single::<[u8; 32]>(&path)?.map(ClusterId) {
        return match join {
            Some(join) if join != kept => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--cluster-join {join}: {} belongs to cluster {kept}; give that id, or an empty --dir",
                    raft_dir.display()
                ),
            )),
            _ => Ok(kept),
        };
    }
    std::fs::create_dir_all(raft_dir)?;
    let id = join.unwrap_or_else(|| formed_by(peers));
    write_single(&path, &id.0)?;
    Ok(id)
}

/// The id of the cluster these peers form: the same on every node started with them.
pub(crate) fn formed_by(peers: &Peers) -> ClusterId {
    let mut members = peers.0.clone();
    members.sort_unstable();
    let mut hash = digest::Context::new(&digest::SHA256);
    hash.update(b"baton cluster v1\n");
    for peer in members {
        hash.update(format!("{}@{}\n", peer.id, peer.client_addr).as_bytes());
    }
    let mut id = [0; 32];
    id.copy_from_slice(hash.finish().as_ref());
    ClusterId(id)
}

#[cfg(test)]
mod tests {
    use baton_testkit::scratch::ScratchDir;

    use super::*;
    use crate::config::PeerEntry;

    fn peers(ids: &[u64]) -> Peers {
        Peers(
            ids.iter()
                .map(|&id| PeerEntry { id, client_addr: ([127, 0, 0, 1], 7000 + id as u16).into(), bus_port: None })
                .collect(),
        )
    }

    #[test]
    fn the_forming_peers_name_the_cluster() {
        assert_eq!(formed_by(&peers(&[1, 2, 3])), formed_by(&peers(&[3, 1, 2])), "in any order");
        assert_ne!(formed_by(&peers(&[1, 2, 3])), formed_by(&peers(&[1, 2])));
        let mut moved = peers(&[1, 2, 3]);
        moved.0[0].client_addr.set_port(9000);
        assert_ne!(formed_by(&peers(&[1, 2, 3])), formed_by(&moved));
    }

    #[test]
    fn a_node_keeps_its_cluster_whatever_its_peers_say_later() {
        let dir = ScratchDir::new("baton-identity");
        let raft = dir.path().join("raft");
        let formed = resolve(&raft, None, &peers(&[1, 2, 3])).unwrap();
        assert_eq!(formed, formed_by(&peers(&[1, 2, 3])));
        assert_eq!(resolve(&raft, None, &peers(&[1, 2, 3, 4])).unwrap(), formed, "a peer list naming a new member");
        assert_eq!(resolve(&raft, Some(formed), &peers(&[4])).unwrap(), formed, "told to join its own cluster");
        let other = ClusterId([7; 32]);
        let refused = resolve(&raft, Some(other), &peers(&[1, 2, 3])).unwrap_err();
        assert!(refused.to_string().contains(&formed.to_string()), "{refused}");
    }

    #[test]
    fn a_joining_node_takes_the_id_it_is_given() {
        let dir = ScratchDir::new("baton-identity");
        let raft = dir.path().join("raft");
        let given = ClusterId([9; 32]);
        assert_eq!(resolve(&raft, Some(given), &peers(&[1, 4])).unwrap(), given);
        assert_eq!(resolve(&raft, None, &peers(&[1, 4])).unwrap(), given, "kept on the next start");
    }
}
