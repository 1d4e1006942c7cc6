//! The Redis Cluster commands a cluster client needs to find the leader: CLUSTER SLOTS, SHARDS,
//! NODES, INFO, MYID, MYSHARDID, KEYSLOT and HELP, and READONLY, READWRITE and ASKING; and the
//! two an operator changes the membership with, CLUSTER ADDNODE and FORGET. The
//! cluster shows as one shard that owns every slot, with the Raft leader as its master and the
//! other members as its replicas (see [`Topology`]); the replies are laid out as Redis 7's.
//!
//! A server that is not a cluster node refuses them all as Redis does with `cluster-enabled no`.
//! CLUSTER COUNTKEYSINSLOT and GETKEYSINSLOT are left out: the lock table keeps no index by slot,
//! and walking every key under the shard locks to answer them is what the core never does.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::action::{Action, Deferred};
use super::parse::{Args, ParseResult, parse_int};
use crate::cluster::raft::NodeId;
use crate::cluster::topology::{Peer, SHARD_ID, Topology, node_name};
use crate::context::Shared;
use crate::core::{SLOTS, key_slot};
use crate::errors;
use crate::reply::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClusterCommand {
    Slots,
    Shards,
    Nodes,
    Info,
    MyId,
    MyShardId,
    KeySlot(Bytes),
    Help,
    /// READONLY, READWRITE and ASKING: accepted; a follower redirects every key command anyway.
    ConnectionMode,
}

/// CLUSTER ADDNODE and FORGET, which the leader answers once the change is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MembershipChange {
    Add { id: NodeId, client: SocketAddr, bus_port: Option<u16> },
    Forget(NodeId),
}

impl MembershipChange {
    pub(crate) fn execute(self, shared: &Shared) -> Action {
        let Some(cluster) = shared.cluster.clone() else {
            return Action::Reply(Reply::error(errors::CLUSTER_DISABLED));
        };
        let changing = async move {
            let result = match self {
                MembershipChange::Add { id, client, bus_port } => cluster.add_member(id, client, bus_port).await,
                MembershipChange::Forget(id) => cluster.forget(id).await,
            };
            match result {
                Ok(()) => Reply::ok(),
                Err(refusal) => Reply::error(errors::membership_refusal(&refusal)),
            }
        };
        Action::Later(Deferred(Box::pin(changing)))
    }
}

/// `CLUSTER ADDNODE <node-id> <ip> <port> [<cluster-bus-port>]`, after Redis's CLUSTER MEET.
pub(crate) fn parse_add_node(mut args: Args) -> ParseResult<MembershipChange> {
    let id = parse_node_id(&args.next_bytes()?)?;
    let (ip, port) = (args.next_bytes()?, args.next_bytes()?);
    let port_of = |text: &[u8]| parse_int(text).and_then(|port| u16::try_from(port).ok()).filter(|port| *port > 0);
    let address = std::str::from_utf8(&ip).ok().and_then(|ip| ip.parse::<IpAddr>().ok()).zip(port_of(&port));
    let Some((ip, port)) = address else {
        return Err(Reply::error(errors::invalid_node_address(&ip, &port)));
    };
    let bus_port = match args.next_optional() {
        Some(bus) => Some(port_of(&bus).ok_or_else(|| Reply::error(errors::invalid_node_address(&bus, b"")))?),
        None => None,
    };
    args.expect_end()?;
    Ok(MembershipChange::Add { id, client: SocketAddr::new(ip, port), bus_port })
}

/// A node as `--cluster-node-id` gives it or as CLUSTER NODES names it: the same number, zero-padded.
pub(crate) fn parse_node_id(text: &[u8]) -> ParseResult<NodeId> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse::<NodeId>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| Reply::error(errors::INVALID_NODE_ID))
}

impl ClusterCommand {
    pub(crate) fn execute(self, shared: &Shared) -> Reply {
        let Some(topology) = topology(shared) else {
            return Reply::error(errors::CLUSTER_DISABLED);
        };
        let topology = &topology;
        match self {
            ClusterCommand::Slots => slots(topology),
            ClusterCommand::Shards => shards(topology),
            ClusterCommand::Nodes => Reply::bulk(nodes(topology)),
            ClusterCommand::Info => Reply::bulk(info(topology)),
            ClusterCommand::MyId => Reply::bulk(node_name(topology.myself)),
            ClusterCommand::MyShardId => Reply::bulk_static(SHARD_ID),
            ClusterCommand::KeySlot(key) => Reply::Int(key_slot(&key).into()),
            ClusterCommand::Help => Reply::help(&[
                "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ADDNODE <node-id> <ip> <port> [<cluster-bus-port>]",
                "    Add a node, started with --cluster-join, as a voting member (on the leader).",
                "FORGET <node-id>",
                "    Remove a node from the cluster (on the leader).",
                "INFO",
                "    Return information about the cluster.",
                "KEYSLOT <key>",
                "    Return the hash slot for <key>.",
                "MYID",
                "    Return the node id.",
                "MYSHARDID",
                "    Return the node's shard id.",
                "NODES",
                "    Return cluster configuration seen by node. Output format:",
                "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
                "SLOTS",
                "    Return information about slots range mappings. Each range is made of:",
                "    start, end, master and replicas IP addresses, ports and ids",
                "SHARDS",
                "    Return information about slot range mappings and the nodes associated with them.",
                "HELP",
                "    Prints this help.",
            ]),
            ClusterCommand::ConnectionMode => Reply::ok(),
        }
    }
}

/// INFO's `redis_mode` and HELLO's `mode`.
/// What this node knows of its cluster now; None on a single node.
pub(crate) fn topology(shared: &Shared) -> Option<Topology> {
    shared.cluster.as_ref().map(|cluster| cluster.topology())
}

pub(crate) fn redis_mode(shared: &Shared) -> &'static str {
    if shared.cluster.is_some() { "cluster" } else { "standalone" }
}

/// INFO's Cluster section.
pub(crate) fn info_fields(shared: &Shared) -> Vec<(&'static str, String)> {
    vec![("cluster_enabled", u8::from(shared.cluster.is_some()).to_string())]
}

/// The role HELLO reports: a cluster member that does not lead is a replica, as in Redis Cluster.
pub(crate) fn role(topology: Option<&Topology>) -> &'static str {
    match topology {
        Some(topology) if topology.master() != topology.myself => "replica",
        _ => "master",
    }
}

/// A node's replication role as INFO and ROLE report it: a single node is a master without
/// replicas; in a cluster the leader is the master, with the followers it hears from as replicas.
enum ReplicationRole {
    Master {
        replicas: Vec<SocketAddr>,
    },
    /// A follower, with the leader's client address when it knows one.
    Slave {
        leader: Option<SocketAddr>,
    },
}

fn replication_role(topology: Option<&Topology>) -> ReplicationRole {
    let Some(topology) = topology else {
        return ReplicationRole::Master { replicas: Vec::new() };
    };
    let master = topology.master();
    if master != topology.myself {
        return ReplicationRole::Slave { leader: topology.peer(master).map(|peer| peer.client_addr) };
    }
    let replicas = topology
        .peers
        .iter()
        .filter(|peer| peer.id != master && topology.is_reachable(peer.id))
        .map(|peer| peer.client_addr)
        .collect();
    ReplicationRole::Master { replicas }
}

/// INFO's Replication section, as a Redis Cluster member shows it: the leader as a master with
/// the followers it hears from as its replicas, a follower as a replica of the leader. There is
/// no replication offset to show: `offset` and `lag` are 0.
pub(crate) fn replication_fields(topology: Option<&Topology>) -> Vec<(String, String)> {
    let field = |name: &str, value: String| (name.to_owned(), value);
    match replication_role(topology) {
        ReplicationRole::Slave { leader } => vec![
            field("role", "slave".to_owned()),
            field("master_host", leader.map(|addr| addr.ip().to_string()).unwrap_or_default()),
            field("master_port", leader.map(|addr| addr.port().to_string()).unwrap_or_default()),
            field("master_link_status", "up".to_owned()),
            field("connected_slaves", "0".to_owned()),
        ],
        ReplicationRole::Master { replicas } => {
            let mut fields =
                vec![field("role", "master".to_owned()), field("connected_slaves", replicas.len().to_string())];
            for (index, addr) in replicas.into_iter().enumerate() {
                fields.push((
                    format!("slave{index}"),
                    format!("ip={},port={},state=online,offset=0,lag=0", addr.ip(), addr.port()),
                ));
            }
            fields
        }
    }
}

/// ROLE, in Redis's shapes, offsets 0 (the log index is not a replication offset); a follower
/// that knows of no leader is still in state "connect".
pub(crate) fn role_reply(topology: Option<&Topology>) -> Reply {
    match replication_role(topology) {
        ReplicationRole::Slave { leader } => Reply::Array(vec![
            Reply::bulk_static("slave"),
            Reply::bulk(leader.map(|addr| addr.ip().to_string()).unwrap_or_default()),
            Reply::Int(leader.map_or(0, |addr| addr.port().into())),
            Reply::bulk_static(if leader.is_some() { "connected" } else { "connect" }),
            Reply::Int(0),
        ]),
        ReplicationRole::Master { replicas } => {
            let replicas = replicas
                .into_iter()
                .map(|addr| {
                    Reply::Array(vec![
                        Reply::bulk(addr.ip().to_string()),
                        Reply::bulk(addr.port().to_string()),
                        Reply::bulk_static("0"),
                    ])
                })
                .collect();
            Reply::Array(vec![Reply::bulk_static("master"), Reply::Int(0), Reply::Array(replicas)])
        }
    }
}

/// The master first, then the replicas in id order: the order of CLUSTER SLOTS and SHARDS.
fn master_first(topology: &Topology) -> impl Iterator<Item = &Peer> {
    let master = topology.master();
    let (masters, replicas): (Vec<&Peer>, Vec<&Peer>) = topology.peers.iter().partition(|peer| peer.id == master);
    masters.into_iter().chain(replicas)
}

fn slot_range() -> [Reply; 2] {
    [Reply::Int(0), Reply::Int(i64::from(SLOTS - 1))]
}

fn port(peer: &Peer) -> Reply {
    Reply::Int(peer.client_addr.port().into())
}

/// CLUSTER SLOTS: one range, the master then the replicas this node has heard from lately (Redis
/// leaves failed replicas out, so that clients do not send reads to them), each as ip, port,
/// name and a map of further addresses, empty here as in Redis when the ip is the endpoint.
fn slots(topology: &Topology) -> Reply {
    let mut range = Vec::from(slot_range());
    for peer in master_first(topology).filter(|peer| topology.is_reachable(peer.id)) {
        range.push(Reply::Array(vec![
            Reply::bulk(peer.client_addr.ip().to_string()),
            port(peer),
            Reply::bulk(node_name(peer.id)),
            Reply::Map(Vec::new()),
        ]));
    }
    Reply::Array(vec![Reply::Array(range)])
}

/// CLUSTER SHARDS: the one shard, its slots as start/end pairs and every member as a map.
fn shards(topology: &Topology) -> Reply {
    let field = Reply::bulk_static;
    let master = topology.master();
    let node = |peer: &Peer| {
        let ip = Reply::bulk(peer.client_addr.ip().to_string());
        Reply::Map(vec![
            (field("id"), Reply::bulk(node_name(peer.id))),
            (field("port"), port(peer)),
            (field("ip"), ip.clone()),
            (field("endpoint"), ip),
            (field("role"), field(if peer.id == master { "master" } else { "replica" })),
            (field("replication-offset"), Reply::Int(0)),
            (field("health"), field(if topology.is_reachable(peer.id) { "online" } else { "fail" })),
        ])
    };
    let shard = Reply::Map(vec![
        (field("slots"), Reply::Array(Vec::from(slot_range()))),
        (field("nodes"), Reply::Array(master_first(topology).map(node).collect())),
    ]);
    Reply::Array(vec![shard])
}

/// CLUSTER NODES: a line per member, `<name> <ip>:<port>@<bus port> <flags> <master name or -> <ping
/// sent> <pong received> <config epoch> <link> [<slots>]`. A member this node has not heard from
/// lately is `fail?` and `disconnected`: this node's own view, which Redis shows the same way.
fn nodes(topology: &Topology) -> String {
    let master = topology.master();
    let mut text = String::with_capacity(160 * topology.peers.len());
    for peer in &topology.peers {
        let myself = if peer.id == topology.myself { "myself," } else { "" };
        let (role, master_name, slots) = if peer.id == master {
            ("master", "-".to_owned(), format!(" 0-{}", SLOTS - 1))
        } else {
            ("slave", node_name(master), String::new())
        };
        let reachable = topology.is_reachable(peer.id);
        let failing = if reachable { "" } else { ",fail?" };
        let link = if reachable { "connected" } else { "disconnected" };
        let _ = writeln!(
            text,
            "{} {}:{}@{} {myself}{role}{failing} {master_name} 0 0 {} {link}{slots}",
            node_name(peer.id),
            peer.client_addr.ip(),
            peer.client_addr.port(),
            peer.bus_addr.port(),
            topology.term,
        );
    }
    text
}

/// CLUSTER INFO. The Raft term plays Redis's epochs. With no leader the state is `fail` and no
/// slot is served, as in Redis while a failed master awaits its successor.
fn info(topology: &Topology) -> String {
    let slots = usize::from(SLOTS);
    let served = if topology.leader.is_some() { slots } else { 0 };
    let fields = [
        ("cluster_state", if served == slots { "ok" } else { "fail" }.to_owned()),
        ("cluster_slots_assigned", slots.to_string()),
        ("cluster_slots_ok", served.to_string()),
        ("cluster_slots_pfail", "0".to_owned()),
        ("cluster_slots_fail", (slots - served).to_string()),
        ("cluster_known_nodes", topology.peers.len().to_string()),
        ("cluster_size", "1".to_owned()),
        ("cluster_current_epoch", topology.term.to_string()),
        ("cluster_my_epoch", topology.term.to_string()),
        ("cluster_stats_messages_sent", "0".to_owned()),
        ("cluster_stats_messages_received", "0".to_owned()),
        ("total_cluster_links_buffer_limit_exceeded", "0".to_owned()),
        // baton's own: what a node added to this cluster is started with (--cluster-join).
        ("cluster_id", topology.cluster.to_string()),
    ];
    let mut text = String::with_capacity(400);
    for (name, value) in fields {
        let _ = write!(text, "{name}:{value}\r\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use baton_testkit::Rng;
    use baton_testkit::process::Proc;
    use baton_testkit::scratch::ScratchDir;

    use super::*;
    use crate::cluster::topology::three_nodes;
    use crate::codec::Protocol;
    use crate::codec::tests::encode;

    /// A member's entry in CLUSTER SLOTS as Redis 7.0 writes it; `empty_map` is `*0` in RESP2 and
    /// `%0` in RESP3.
    fn slots_node(port: u16, id: u64, empty_map: &str) -> String {
        format!("*4\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{}\r\n{empty_map}\r\n", node_name(id))
    }

    #[test]
    fn info_replication_shows_the_leader_as_master_and_a_follower_as_its_replica() {
        let fields = |topology: Option<&Topology>| {
            replication_fields(topology)
                .into_iter()
                .map(|(field, value)| format!("{field}:{value}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(fields(None), ["role:master", "connected_slaves:0"]);
        assert_eq!(role(None), "master");

        let mut leader = three_nodes(2, Some(2));
        leader.reachable = vec![2, 3];
        assert_eq!(
            fields(Some(&leader)),
            ["role:master", "connected_slaves:1", "slave0:ip=127.0.0.1,port=7003,state=online,offset=0,lag=0"]
        );
        assert_eq!(role(Some(&leader)), "master");

        let follower = three_nodes(1, Some(2));
        assert_eq!(
            fields(Some(&follower)),
            ["role:slave", "master_host:127.0.0.1", "master_port:7002", "master_link_status:up", "connected_slaves:0"]
        );
        assert_eq!(role(Some(&follower)), "replica");
    }

    #[test]
    fn role_is_redis_shaped_for_a_single_node_the_leader_and_a_follower() {
        let resp2 =
            |topology: Option<&Topology>| String::from_utf8(encode(Protocol::Resp2, role_reply(topology))).unwrap();
        assert_eq!(resp2(None), "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");

        let mut leader = three_nodes(2, Some(2));
        leader.reachable = vec![2, 3];
        assert_eq!(
            resp2(Some(&leader)),
            "*3\r\n$6\r\nmaster\r\n:0\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n7003\r\n$1\r\n0\r\n"
        );
        assert_eq!(
            resp2(Some(&three_nodes(1, Some(2)))),
            "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:7002\r\n$9\r\nconnected\r\n:0\r\n"
        );
        // A leader this node has no address for.
        assert_eq!(
            resp2(Some(&three_nodes(1, Some(9)))),
            "*5\r\n$5\r\nslave\r\n$0\r\n\r\n:0\r\n$7\r\nconnect\r\n:0\r\n"
        );
    }

    #[test]
    fn slots_name_the_leader_then_the_replicas_heard_from() {
        let mut topology = three_nodes(2, Some(2));
        topology.reachable = vec![1, 2, 3];
        let resp2 = format!(
            "*1\r\n*5\r\n:0\r\n:16383\r\n{}{}{}",
            slots_node(7002, 2, "*0"),
            slots_node(7001, 1, "*0"),
            slots_node(7003, 3, "*0")
        );
        assert_eq!(String::from_utf8(encode(Protocol::Resp2, slots(&topology))).unwrap(), resp2);
        let resp3 = resp2.replace("*0\r\n", "%0\r\n");
        assert_eq!(String::from_utf8(encode(Protocol::Resp3, slots(&topology))).unwrap(), resp3);

        topology.reachable = vec![2, 3];
        let without_1 =
            format!("*1\r\n*4\r\n:0\r\n:16383\r\n{}{}", slots_node(7002, 2, "*0"), slots_node(7003, 3, "*0"));
        assert_eq!(String::from_utf8(encode(Protocol::Resp2, slots(&topology))).unwrap(), without_1);
    }

    #[test]
    fn slots_during_an_election_name_this_node() {
        let expected = format!("*1\r\n*3\r\n:0\r\n:16383\r\n{}", slots_node(7003, 3, "*0"));
        assert_eq!(String::from_utf8(encode(Protocol::Resp2, slots(&three_nodes(3, None)))).unwrap(), expected);
    }

    /// A member's map in CLUSTER SHARDS, fields in Redis 7.0's order; `header` is `*14` in RESP2
    /// and `%7` in RESP3.
    fn shards_node(header: &str, port: u16, id: u64, role: &str, health: &str) -> String {
        let bulk = |text: &str| format!("${}\r\n{text}\r\n", text.len());
        [
            format!("{header}\r\n"),
            bulk("id"),
            bulk(&node_name(id)),
            bulk("port"),
            format!(":{port}\r\n"),
            bulk("ip"),
            bulk("127.0.0.1"),
            bulk("endpoint"),
            bulk("127.0.0.1"),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            ":0\r\n".to_owned(),
            bulk("health"),
            bulk(health),
        ]
        .concat()
    }

    #[test]
    fn shards_are_one_shard_of_every_member() {
        let topology = three_nodes(1, Some(2));
        for (protocol, shard, node) in [(Protocol::Resp2, "*4", "*14"), (Protocol::Resp3, "%2", "%7")] {
            let expected = [
                format!("*1\r\n{shard}\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*3\r\n"),
                shards_node(node, 7002, 2, "master", "online"),
                shards_node(node, 7001, 1, "replica", "online"),
                shards_node(node, 7003, 3, "replica", "fail"),
            ]
            .concat();
            assert_eq!(String::from_utf8(encode(protocol, shards(&topology))).unwrap(), expected, "{protocol:?}");
        }
    }

    #[test]
    fn nodes_lines_follow_redis() {
        let expected = [
            format!("{} 127.0.0.1:7001@17001 myself,slave {} 0 0 7 connected\n", node_name(1), node_name(2)),
            format!("{} 127.0.0.1:7002@17002 master - 0 0 7 connected 0-16383\n", node_name(2)),
            format!("{} 127.0.0.1:7003@17003 slave,fail? {} 0 0 7 disconnected\n", node_name(3), node_name(2)),
        ]
        .concat();
        assert_eq!(nodes(&three_nodes(1, Some(2))), expected);

        let mut election = three_nodes(3, None);
        election.peers[0].client_addr = "[::1]:7001".parse().unwrap();
        let expected = [
            format!("{} ::1:7001@17001 slave,fail? {} 0 0 7 disconnected\n", node_name(1), node_name(3)),
            format!("{} 127.0.0.1:7002@17002 slave,fail? {} 0 0 7 disconnected\n", node_name(2), node_name(3)),
            format!("{} 127.0.0.1:7003@17003 myself,master - 0 0 7 connected 0-16383\n", node_name(3)),
        ]
        .concat();
        assert_eq!(nodes(&election), expected);
    }

    #[test]
    fn info_says_whether_a_leader_serves_the_slots() {
        let fields = |state: &str, ok: usize, fail: usize| {
            format!(
                "cluster_state:{state}\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:{ok}\r\n\
                 cluster_slots_pfail:0\r\ncluster_slots_fail:{fail}\r\ncluster_known_nodes:3\r\n\
                 cluster_size:1\r\ncluster_current_epoch:7\r\ncluster_my_epoch:7\r\n\
                 cluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\n\
                 total_cluster_links_buffer_limit_exceeded:0\r\ncluster_id:{}\r\n",
                "ab".repeat(32)
            )
        };
        assert_eq!(info(&three_nodes(1, Some(2))), fields("ok", 16384, 0));
        assert_eq!(info(&three_nodes(1, None)), fields("fail", 0, 16384));
    }

    #[test]
    fn membership_changes_parse_like_cluster_meet() {
        let args = |line: &str| Args::new(line.split(' ').map(|word| Bytes::from(word.to_owned())).collect(), 2);
        let add = |id, client: &str, bus_port| MembershipChange::Add { id, client: client.parse().unwrap(), bus_port };
        assert_eq!(parse_add_node(args("CLUSTER ADDNODE 4 10.0.0.4 7004")), Ok(add(4, "10.0.0.4:7004", None)));
        assert_eq!(parse_add_node(args("CLUSTER ADDNODE 5 ::1 7005 9005")), Ok(add(5, "[::1]:7005", Some(9005))));
        assert_eq!(
            parse_add_node(args("CLUSTER ADDNODE 0000000000000000000000000000000000000006 10.0.0.6 7006")),
            Ok(add(6, "10.0.0.6:7006", None)),
            "a node's name in CLUSTER NODES"
        );
        let error = |line: &str| match parse_add_node(args(line)) {
            Err(Reply::Error(text)) => text,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(error("CLUSTER ADDNODE 0 10.0.0.4 7004"), errors::INVALID_NODE_ID);
        assert_eq!(error("CLUSTER ADDNODE x 10.0.0.4 7004"), errors::INVALID_NODE_ID);
        assert!(error("CLUSTER ADDNODE 4 node4.example 7004").starts_with("ERR Invalid node address specified"));
        assert!(error("CLUSTER ADDNODE 4 10.0.0.4 70000").starts_with("ERR Invalid node address specified"));
        assert!(error("CLUSTER ADDNODE 4 10.0.0.4 0").starts_with("ERR Invalid node address specified"));
        assert!(error("CLUSTER ADDNODE 4 10.0.0.4 7004 x").starts_with("ERR Invalid node address specified"));
        assert_eq!(error("CLUSTER ADDNODE 4 10.0.0.4 7004 17004 more"), errors::SYNTAX);
        assert_eq!(parse_node_id(b"3"), Ok(3));
        assert!(parse_node_id(b"-3").is_err() && parse_node_id(b"").is_err());
    }

    /// A port for redis-server whose cluster bus port (10000 above it) is free as well.
    fn free_port_with_bus() -> u16 {
        loop {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            if port <= u16::MAX - 10_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                return port;
            }
        }
    }

    /// A one-node Redis cluster (CLUSTER KEYSLOT answers only with `cluster-enabled yes`), killed
    /// on drop.
    fn start_redis_cluster(dir: &ScratchDir) -> (Proc, redis::Connection) {
        let port = free_port_with_bus().to_string();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port, "--dir", dir.arg(), "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-test-deps.sh)");
        let redis = Proc { child };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = redis::Client::open(format!("redis://{addr}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.get_connection_with_timeout(Duration::from_secs(1)) {
                Ok(connection) => return (redis, connection),
                Err(error) => assert!(Instant::now() < deadline, "redis-server on {addr}: {error}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn key_slots_match_a_live_redis() {
        let dir = ScratchDir::new("redis-keyslot");
        let (_redis, mut connection) = start_redis_cluster(&dir);
        let mut keys: Vec<Vec<u8>> =
            ["", "{", "}", "{}", "{}x", "x{}", "{}{a}", "{a}{}", "{{a}}", "a{b", "a}b{c}", "{ab}"]
                .iter()
                .map(|key| key.as_bytes().to_vec())
                .collect();
        // Braces are frequent so that tags of every shape turn up; the other bytes are any byte.
        let mut rng = Rng::new(0x5107);
        for _ in 0..3000 {
            let len = rng.below(24) as usize;
            let byte = |rng: &mut Rng| match rng.below(4) {
                0 => b'{',
                1 => b'}',
                _ => rng.next_u64() as u8,
            };
            keys.push((0..len).map(|_| byte(&mut rng)).collect());
        }
        let mut pipeline = redis::pipe();
        for key in &keys {
            pipeline.cmd("CLUSTER").arg("KEYSLOT").arg(key);
        }
        let redis_slots: Vec<u16> = pipeline.query(&mut connection).unwrap();
        for (key, redis_slot) in keys.iter().zip(redis_slots) {
            assert_eq!(key_slot(key), redis_slot, "{key:?}");
        }
    }
}
