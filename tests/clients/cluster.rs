//! redis-rs's `cluster-async` against a three-node baton cluster, through leader kills: the real
//! binary, one process per node with a `--dir` of its own, on free loopback ports. The leader is
//! found as a client finds it (CLUSTER NODES: its `master` line), SIGKILLed and restarted later
//! on its dir.
//!
//! The settings that matter (docs/cluster.md, *Clients*): every node as an initial node; a
//! `response_timeout` above each LOCK.WAIT slice (the default, 500 ms, cuts them short); retry
//! waits of a tenth of a second to a second instead of the default 1.28 s and up, so the client's
//! own retries follow an election (1-2 s) closely; and the application retrying the call itself,
//! by owner, when they run out, which is safe for every lock command.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, RedisError, Value};

use crate::cluster_process::{Cluster, PATIENCE};
use crate::{bulk, cmd, info_pairs, token_of};

const WAIT_SLICE_MS: u64 = 1000;
const LEASE: Duration = Duration::from_millis(3000);

async fn ask<T: redis::FromRedisValue>(cluster: &Cluster, id: u64, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(cluster.url(id)).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    cmd(args).query_async(&mut conn).await.ok()
}

async fn serving_leader(cluster: &Cluster) -> Option<u64> {
    for id in cluster.ids().into_iter().filter(|&id| cluster.running(id)) {
        let Some(nodes) = ask::<String>(cluster, id, &["CLUSTER", "NODES"]).await else { continue };
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if !fields[2].split(',').any(|flag| flag == "master") {
                continue;
            }
            let address = fields[1].split('@').next().unwrap_or_default();
            let Some(leader) = cluster
                .ids()
                .into_iter()
                .find(|&id| cluster.node(id).client.to_string() == address && cluster.running(id))
            else {
                continue;
            };
            // Elected is not yet serving: the new leader loads the committed state first.
            if ask::<Value>(cluster, leader, &["LOCK.INFO", "leader-probe"]).await.is_some() {
                return Some(leader);
            }
        }
    }
    None
}

/// The running node that CLUSTER NODES names master and that serves key commands.
async fn find_leader(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(leader) = serving_leader(cluster).await {
            return leader;
        }
        assert!(Instant::now() < deadline, "no serving leader; logs: {}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster client with the settings docs/cluster.md recommends for failover.
async fn cluster_client(urls: Vec<String>, protocol: ProtocolVersion) -> ClusterConnection {
    ClusterClient::builder(urls)
        .use_protocol(protocol)
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_millis(WAIT_SLICE_MS + 4000))
        .min_retry_wait(100)
        .max_retry_wait(1000)
        .build()
        .unwrap()
        .get_async_connection()
        .await
        .expect("cluster connection")
}

/// Whether `error` is what a failover shows a caller once the client's own retries are spent
/// (as opposed to the command's answer, such as NOTHOLDER).
fn is_failover(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || matches!(error.code(), Some("CLUSTERDOWN" | "MOVED" | "TRYAGAIN"))
}

/// Sends a lock command until it gets through a failover; returns (when the last attempt was
/// sent, its reply). A retry by the same owner is safe for every lock command.
async fn by_owner(
    conn: &mut ClusterConnection,
    args: &[&str],
    deadline: Instant,
) -> (Instant, redis::RedisResult<Value>) {
    loop {
        let sent = Instant::now();
        match cmd(args).query_async::<Value>(conn).await {
            Err(error) if is_failover(&error) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            result => return (sent, result),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_seeded_with_a_follower_follows_moved() {
    let cluster = Cluster::start(3);
    let leader = find_leader(&cluster).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    for protocol in crate::PROTOCOLS {
        let key = format!("rs:basic:{protocol:?}");
        let mut conn = cluster_client(vec![cluster.url(follower)], protocol).await;
        let token = token_of(&cmd(&["LOCK.TRY", &key, "owner-a", "PX", "60000"]).query_async(&mut conn).await.unwrap());
        let info = info_pairs(cmd(&["LOCK.INFO", &key]).query_async(&mut conn).await.unwrap());
        assert_eq!(crate::field(&info, "holder"), bulk("owner-a"));
        assert_eq!(crate::field(&info, "token"), Value::Int(token));
        let unlocked: i64 =
            cmd(&["LOCK.UNLOCK", &key, "owner-a", &token.to_string(), "SUCCESS", "RESULT", "built", "KEEP", "60000"])
                .query_async(&mut conn)
                .await
                .unwrap();
        assert_eq!(unlocked, 0, "nobody was waiting to be told");
        let late: Value = cmd(&["LOCK.TRY", &key, "owner-b"]).query_async(&mut conn).await.unwrap();
        assert_eq!(late, Value::Array(vec![bulk("DONE"), bulk("owner-a"), bulk("built")]));
    }
}

/// One holding of a key by one worker: from ACQUIRED to the end of its last step of work.
#[derive(Debug, Clone)]
struct Attempt {
    owner: String,
    token: i64,
    start: Instant,
    end: Option<Instant>,
    completed: bool,
}

#[derive(Debug, Default)]
struct KeyLog {
    attempts: Vec<Attempt>,
    /// When a SUCCESS unlock was first acknowledged: no work may start on the key after it.
    success_at: Option<Instant>,
    /// Each worker's outcome: the finisher it was told (itself when it did the work).
    finishers: HashMap<String, String>,
}

type Logs = Arc<Mutex<HashMap<String, KeyLog>>>;

/// examples/once.rs's protocol with a cluster connection: WAIT in slices, work with EXTEND every
/// lease/3, UNLOCK SUCCESS with KEEP. A holder stops working when its lease may have run out (its
/// last successful grant or EXTEND was sent more than a lease ago) and asks again by owner.
async fn do_once(conn: &mut ClusterConnection, key: &str, owner: &str, logs: &Logs, deadline: Instant) -> String {
    let step = Duration::from_millis(100);
    let (wait_ms, lease_ms) = (WAIT_SLICE_MS.to_string(), LEASE.as_millis().to_string());
    'ask: loop {
        let (sent, reply) = by_owner(conn, &["LOCK.WAIT", key, owner, &wait_ms, "PX", &lease_ms], deadline).await;
        let reply = reply.unwrap_or_else(|error| panic!("{owner} LOCK.WAIT {key}: {error}"));
        if reply == Value::Nil {
            continue;
        }
        if let Value::Array(items) = &reply
            && items.first() == Some(&bulk("DONE"))
        {
            return match &items[1] {
                Value::BulkString(finisher) => String::from_utf8(finisher.clone()).unwrap(),
                other => panic!("finisher {other:?}"),
            };
        }
        let token = token_of(&reply);
        let token_arg = token.to_string();
        // The server's lease started no earlier than this WAIT was sent (a re-attach restarts it).
        let mut valid_until = sent + LEASE;
        let mut next_extend = sent + LEASE / 3;
        let index = {
            let mut logs = logs.lock().unwrap();
            let attempts = &mut logs.get_mut(key).unwrap().attempts;
            attempts.push(Attempt {
                owner: owner.to_owned(),
                token,
                start: Instant::now(),
                end: None,
                completed: false,
            });
            attempts.len() - 1
        };
        for _ in 0..10 {
            if Instant::now() >= next_extend {
                let (sent, reply) = by_owner(conn, &["LOCK.EXTEND", key, owner, &token_arg, &lease_ms], deadline).await;
                match reply {
                    Ok(_) => (valid_until, next_extend) = (sent + LEASE, sent + LEASE / 3),
                    // NOTHOLDER / NOLOCK: the lease ran out.
                    Err(error) if !is_failover(&error) => continue 'ask,
                    Err(error) => panic!("{owner} LOCK.EXTEND {key}: {error}"),
                }
            }
            if Instant::now() + step >= valid_until {
                continue 'ask; // a failover outlasted the lease: this holder may no longer hold
            }
            tokio::time::sleep(step).await;
            logs.lock().unwrap().get_mut(key).unwrap().attempts[index].end = Some(Instant::now());
        }
        let result = format!("built-by-{owner}");
        let unlock = ["LOCK.UNLOCK", key, owner, &token_arg, "SUCCESS", "RESULT", &result, "KEEP", "600000"];
        if by_owner(conn, &unlock, deadline).await.1.is_err() {
            continue; // the lock was lost meanwhile; someone else redoes the work
        }
        let mut logs = logs.lock().unwrap();
        let log = logs.get_mut(key).unwrap();
        log.attempts[index].completed = true;
        log.success_at.get_or_insert_with(Instant::now);
        return owner.to_owned();
    }
}

/// Workers do every key once, in rotated orders, each with its own cluster connection; the leader
/// is SIGKILLed once work is under way. Returns the logs per key and the killed node.
async fn run_round(cluster: &mut Cluster, keys: &[&str], workers: usize) -> (HashMap<String, KeyLog>, u64) {
    let logs: Logs = Arc::new(Mutex::new(keys.iter().map(|key| (key.to_string(), KeyLog::default())).collect()));
    let deadline = Instant::now() + 4 * PATIENCE;
    let mut running = Vec::new();
    for index in 0..workers {
        let (logs, urls) = (Arc::clone(&logs), cluster.urls());
        let mut order: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
        order.rotate_left(index % keys.len());
        running.push(tokio::spawn(async move {
            let owner = format!("w{index}");
            let mut conn = cluster_client(urls, ProtocolVersion::RESP2).await;
            for key in order {
                let finisher = do_once(&mut conn, &key, &owner, &logs, deadline).await;
                logs.lock().unwrap().get_mut(&key).unwrap().finishers.insert(owner.clone(), finisher);
            }
        }));
    }
    let under_way = Instant::now() + PATIENCE;
    while logs.lock().unwrap().values().filter(|log| !log.attempts.is_empty()).count() < keys.len().min(2) {
        assert!(Instant::now() < under_way, "no work under way");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = find_leader(cluster).await;
    cluster.kill(killed);
    for worker in running {
        if let Err(panic) = tokio::time::timeout(5 * PATIENCE, worker).await.expect("a worker did not finish") {
            panic!("{panic}; logs: {}", cluster.logs());
        }
    }
    let logs = std::mem::take(&mut *logs.lock().unwrap());
    (logs, killed)
}

async fn assert_done_once(cluster: &Cluster, logs: &HashMap<String, KeyLog>, workers: usize) {
    for (key, log) in logs {
        let mut attempts = log.attempts.clone();
        attempts.sort_by_key(|attempt| attempt.start);
        for pair in attempts.windows(2) {
            // Never two holders at once; tokens never go back.
            assert!(pair[0].end.is_none_or(|end| end <= pair[1].start), "{key}: overlapping work {attempts:?}");
            assert!(pair[0].token <= pair[1].token, "{key}: tokens went back {attempts:?}");
        }
        let success_at = log.success_at.unwrap_or_else(|| panic!("{key}: no success {attempts:?}"));
        assert!(
            attempts.iter().all(|attempt| attempt.start <= success_at),
            "{key}: work after the success {attempts:?}"
        );
        let completed: HashSet<&str> = attempts.iter().filter(|a| a.completed).map(|a| a.owner.as_str()).collect();
        let finishers: HashSet<&String> = log.finishers.values().collect();
        assert_eq!((log.finishers.len(), finishers.len()), (workers, 1), "{key}: {:?}", log.finishers);
        let finisher = finishers.into_iter().next().unwrap();
        assert!(completed.contains(finisher.as_str()), "{key}: {finisher} did not complete the work {attempts:?}");
        let leader = find_leader(cluster).await;
        let info = info_pairs(ask(cluster, leader, &["LOCK.INFO", key]).await.expect("LOCK.INFO"));
        assert_eq!((crate::field(&info, "state"), crate::field(&info, "finisher")), (bulk("done"), bulk(finisher)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_recipe_through_leader_kills() {
    let mut cluster = Cluster::start(3);
    find_leader(&cluster).await;
    let workers = 4;
    // Round 1: the leader dies while keys are being worked on.
    let (logs, killed) = run_round(&mut cluster, &["rs:once:a", "rs:once:b", "rs:once:c"], workers).await;
    assert_done_once(&cluster, &logs, workers).await;
    // The killed node rejoins on its dir; then the next leader dies mid-work too.
    cluster.launch(killed);
    let (logs, _) = run_round(&mut cluster, &["rs:once:d", "rs:once:e"], workers).await;
    assert_done_once(&cluster, &logs, workers).await;
}
