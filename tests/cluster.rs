//! The replicated cluster against the real binary: three nodes as child processes on loopback,
//! each with a `--dir` of its own, killed, stopped and restarted by the tests.
//!
//! - the nodes form a cluster by themselves; followers send key commands to the leader (-MOVED);
//! - SIGKILL of the leader: a new one is elected, and every acknowledged holding (same token),
//!   queue place (in order) and KEEP result is there; its tokens are above every earlier one;
//! - SIGSTOP of the leader past the election timeout: while it is stopped a new leader serves; once
//!   continued, the old leader grants nothing, and its blocked LOCK.WAIT is answered -MOVED;
//! - a node restarted with an empty `--dir` catches up from the others; the whole cluster restarted
//!   keeps its locks.

// A test binary has no outside users.
#![allow(unreachable_pub)]

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

// Only its reading of the startup line: cluster nodes need ports named in advance.
#[allow(dead_code)]
#[path = "support/baton.rs"]
mod baton_process;

use baton_process::listening_addr;
use baton_testkit::Resp;
use baton_testkit::client::Connection;
use baton_testkit::process::ServerProcess;
use baton_testkit::scratch::ScratchDir;

/// Failover takes 0.5-2 s; a loaded CI machine gets many times that.
const PATIENCE: Duration = Duration::from_secs(30);
const IO: Duration = Duration::from_secs(10);

struct Node {
    id: u64,
    client: SocketAddr,
    dir: ScratchDir,
    process: Option<ServerProcess>,
}

struct Cluster {
    nodes: Vec<Node>,
    peers: String,
}

/// Cluster nodes need their ports named in advance. They come from below Linux's ephemeral range
/// (32768 and up), so that no connection or server another test opens meanwhile takes one
/// between this choice and the node's bind (a node whose port is taken exits at once).
fn free_port() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    fn start(size: u64) -> Cluster {
        let mut nodes = Vec::new();
        let mut peers = Vec::new();
        let mut taken = Vec::new();
        for id in 1..=size {
            let (client, bus) = loop {
                let pair = (free_port(), free_port());
                if pair.0 != pair.1 && !taken.contains(&pair.0) && !taken.contains(&pair.1) {
                    taken.extend([pair.0, pair.1]);
                    break pair;
                }
            };
            peers.push(format!("{id}@127.0.0.1:{client}@{bus}"));
            nodes.push(Node {
                id,
                client: SocketAddr::from(([127, 0, 0, 1], client)),
                dir: ScratchDir::new("baton-cluster"),
                process: None,
            });
        }
        let mut cluster = Cluster { nodes, peers: peers.join(",") };
        for id in 1..=size {
            cluster.launch(id);
        }
        cluster
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn launch(&mut self, id: u64) {
        let peers = self.peers.clone();
        let node = &mut self.nodes[id as usize - 1];
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        command
            .args(["--bind", "127.0.0.1", "--port", &node.client.port().to_string(), "--dir", node.dir.arg()])
            .args(["--cluster-node-id", &id.to_string(), "--cluster-peers", &peers])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,openraft=warn");
        node.process = Some(ServerProcess::start(&mut command, listening_addr));
    }

    fn signal(&self, id: u64, signal: &str) {
        self.node(id).process.as_ref().expect("running").proc.signal(signal);
    }

    /// SIGKILL, and waits until the process is gone.
    fn kill(&mut self, id: u64) -> String {
        let mut process = self.nodes[id as usize - 1].process.take().expect("running");
        process.proc.signal("KILL");
        let _ = process.proc.child.wait();
        process.log_text()
    }

    fn log(&self, id: u64) -> String {
        self.node(id).process.as_ref().map(ServerProcess::log_text).unwrap_or_default()
    }

    /// The node that answers key commands, found as a cluster client finds it: by asking any
    /// node and following -MOVED.
    async fn leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for &id in among {
                if let Ok(mut conn) = Connection::connect(self.node(id).client, IO).await
                    && let Ok(reply) = conn.call(&[b"LOCK.INFO", b"leader-probe"]).await
                    && !reply.is_error()
                {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader among {among:?}; logs: {}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        self.nodes.iter().map(|node| format!("\n--- node {}:\n{}", node.id, self.log(node.id))).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Calls `args` on `node`, returning the reply or the error text.
async fn call(cluster: &Cluster, node: u64, args: &[&[u8]]) -> Resp {
    let mut conn = Connection::connect(cluster.node(node).client, IO).await.unwrap();
    conn.call(args).await.unwrap()
}

fn acquired_token(reply: &Resp) -> u64 {
    let items = reply.array();
    assert!(items[0].bulk_is("ACQUIRED"), "{reply:?}");
    u64::try_from(items[1].int()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_send_clients_to_the_leader() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader(&[1, 2, 3]).await;
    let mut holder = Connection::connect(cluster.node(leader).client, IO).await.unwrap();
    let token = acquired_token(&holder.call(&[b"LOCK.TRY", b"k", b"o1", b"PX", b"60000"]).await.unwrap());
    for follower in (1..=3).filter(|&id| id != leader) {
        let reply = call(&cluster, follower, &[b"LOCK.TRY", b"k", b"o1"]).await;
        let text = reply.err().to_owned();
        let words: Vec<&str> = text.split(' ').collect();
        assert_eq!(words[0], "MOVED", "{text}");
        assert_eq!(words[2], cluster.node(leader).client.to_string(), "{text}");
        // Commands without keys are served by every node.
        assert_eq!(call(&cluster, follower, &[b"PING"]).await, Resp::Simple("PONG".into()));
    }
    // The same owner again at the leader: a renewal, with the same token.
    assert_eq!(acquired_token(&holder.call(&[b"LOCK.TRY", b"k", b"o1", b"PX", b"60000"]).await.unwrap()), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_no_acknowledged_lock() {
    let mut cluster = Cluster::start(3);
    let first = cluster.leader(&[1, 2, 3]).await;
    // release-on-disconnect would free these as each call's connection closes: the holder and
    // the queued owner keep theirs on connections that stay open.
    let mut holder = Connection::connect(cluster.node(first).client, IO).await.unwrap();
    let held = acquired_token(&holder.call(&[b"LOCK.TRY", b"pull:a", b"node-1", b"PX", b"60000"]).await.unwrap());
    let mut queued = Connection::connect(cluster.node(first).client, IO).await.unwrap();
    let place = queued.call(&[b"LOCK.TRY", b"pull:a", b"node-2", b"PX", b"60000"]).await.unwrap();
    assert!(place.array()[0].bulk_is("QUEUED"), "{place:?}");
    let mut finisher = Connection::connect(cluster.node(first).client, IO).await.unwrap();
    let done_token = acquired_token(&finisher.call(&[b"LOCK.TRY", b"pull:b", b"node-3"]).await.unwrap());
    let unlocked = finisher
        .call(&[
            b"LOCK.UNLOCK",
            b"pull:b",
            b"node-3",
            done_token.to_string().as_bytes(),
            b"SUCCESS",
            b"KEEP",
            b"60000",
            b"RESULT",
            b"layer-ok",
        ])
        .await
        .unwrap();
    assert!(!unlocked.is_error(), "{unlocked:?}");

    cluster.kill(first);
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != first).collect();
    let second = cluster.leader(&survivors).await;

    // The holder re-attaches with its owner and gets its token back; the queued owner is still
    // next; the kept result is still told.
    let mut holder = Connection::connect(cluster.node(second).client, IO).await.unwrap();
    assert_eq!(
        acquired_token(&holder.call(&[b"LOCK.TRY", b"pull:a", b"node-1", b"PX", b"60000"]).await.unwrap()),
        held
    );
    let mut queued = Connection::connect(cluster.node(second).client, IO).await.unwrap();
    let place = queued.call(&[b"LOCK.TRY", b"pull:a", b"node-2", b"PX", b"60000"]).await.unwrap();
    assert!(place.array()[0].bulk_is("QUEUED"), "{place:?}");
    let done = call(&cluster, second, &[b"LOCK.TRY", b"pull:b", b"node-4"]).await;
    assert!(done.array()[0].bulk_is("DONE"), "{done:?}");
    // The holder fails: the lock goes to the queued owner, with a larger token than any before.
    let failed =
        holder.call(&[b"LOCK.UNLOCK", b"pull:a", b"node-1", held.to_string().as_bytes(), b"FAILURE"]).await.unwrap();
    assert!(!failed.is_error(), "{failed:?}");
    let next = acquired_token(&queued.call(&[b"LOCK.WAIT", b"pull:a", b"node-2", b"5000"]).await.unwrap());
    assert!(next > held && next > done_token, "token {next} after {held} and {done_token}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_grants_nothing_once_continued() {
    let cluster = Cluster::start(3);
    let old = cluster.leader(&[1, 2, 3]).await;
    let mut holder = Connection::connect(cluster.node(old).client, IO).await.unwrap();
    let held = acquired_token(&holder.call(&[b"LOCK.TRY", b"k", b"holder", b"PX", b"60000"]).await.unwrap());
    let mut waiter = Connection::connect(cluster.node(old).client, IO).await.unwrap();
    waiter.queue(&[b"LOCK.WAIT", b"k", b"waiter", b"60000"]);
    waiter.flush().await.unwrap();
    // The place must be committed before the stop, or there is nothing to keep.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = holder.call(&[b"LOCK.INFO", b"k"]).await.unwrap();
        if info.field("waiters").int() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the WAIT never queued: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.signal(old, "STOP");
    let others: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    let new = cluster.leader(&others).await;
    // The holder fails through the new leader: the lock goes to the waiter's replicated place.
    let mut holder_again = Connection::connect(cluster.node(new).client, IO).await.unwrap();
    assert_eq!(
        acquired_token(&holder_again.call(&[b"LOCK.TRY", b"k", b"holder", b"PX", b"60000"]).await.unwrap()),
        held
    );
    let failed =
        holder_again.call(&[b"LOCK.UNLOCK", b"k", b"holder", held.to_string().as_bytes(), b"FAILURE"]).await.unwrap();
    assert!(!failed.is_error(), "{failed:?}");

    cluster.signal(old, "CONT");
    // The old leader's blocked WAIT ends with a redirection, never a grant; the old holder's
    // connection there gets nothing it could take for a lock either.
    let answer = waiter.read_within(PATIENCE).await;
    match answer {
        Ok(Some(Resp::Error(text))) => assert!(text.starts_with("MOVED "), "{text}"),
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}"),
        other => panic!("the deposed leader answered the WAIT with {other:?}"),
    }
    // At the new leader the waiter finds the lock granted to it, with a larger token.
    let mut waiter_again = Connection::connect(cluster.node(new).client, IO).await.unwrap();
    let token = acquired_token(&waiter_again.call(&[b"LOCK.WAIT", b"k", b"waiter", b"5000"]).await.unwrap());
    assert!(token > held, "{token} after {held}");
    // The old node now sends clients on.
    let moved = call(&cluster, old, &[b"LOCK.TRY", b"k", b"other"]).await;
    assert!(moved.err().starts_with("MOVED "), "{moved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_keep_the_locks() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader(&[1, 2, 3]).await;
    let mut holder = Connection::connect(cluster.node(leader).client, IO).await.unwrap();
    let held = acquired_token(&holder.call(&[b"LOCK.TRY", b"k", b"holder", b"PX", b"600000"]).await.unwrap());

    // A follower loses its disk and comes back empty: it learns everything from the others.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.kill(follower);
    std::fs::remove_dir_all(cluster.node(follower).dir.path()).unwrap();
    cluster.launch(follower);
    // Then the leader goes, so that the follower's copy is the one that may serve.
    cluster.kill(leader);
    let next = cluster.leader(&(1..=3).filter(|&id| id != leader).collect::<Vec<_>>()).await;
    // Re-attached on a connection that stays open (a closed one would release the lock).
    let mut holder = Connection::connect(cluster.node(next).client, IO).await.unwrap();
    assert_eq!(acquired_token(&holder.call(&[b"LOCK.TRY", b"k", b"holder", b"PX", b"600000"]).await.unwrap()), held);

    // The whole cluster stops and starts again on its directories.
    for id in 1..=3 {
        if cluster.node(id).process.is_some() {
            cluster.kill(id);
        }
    }
    for id in 1..=3 {
        cluster.launch(id);
    }
    let leader = cluster.leader(&[1, 2, 3]).await;
    let mut holder = Connection::connect(cluster.node(leader).client, IO).await.unwrap();
    assert_eq!(acquired_token(&holder.call(&[b"LOCK.TRY", b"k", b"holder", b"PX", b"600000"]).await.unwrap()), held);
}
