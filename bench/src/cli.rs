//! The command line: one subcommand per workload, plus `table` and `free-port`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "baton-bench", about = "Load generator comparing baton's LOCK.* commands with Redis recipes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    Baton,
    Redis,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Baton => "baton",
            Target::Redis => "redis",
        })
    }
}

/// What the cluster workloads (C1–C3) run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClusterTarget {
    /// baton's cluster, through the `redis` crate's Redis Cluster client.
    Baton,
    /// One baton server, not clustered (the first of --nodes), through a plain `redis` connection:
    /// the baseline of C1.
    BatonSingle,
    /// etcd's cluster, through its v3 lock API over gRPC.
    Etcd,
}

/// One member of a cluster: its id and its client address (on loopback), `ID@HOST:PORT` as in
/// baton's `--cluster-peers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: SocketAddr,
}

impl FromStr for Member {
    type Err = String;

    fn from_str(text: &str) -> Result<Member, String> {
        let (id, addr) = text.split_once('@').ok_or_else(|| format!("{text:?} is not ID@HOST:PORT"))?;
        let id = id.parse().map_err(|_| format!("bad member id in {text:?}"))?;
        let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address in {text:?}"))?;
        // The benchmark sends its load to this machine only.
        if !addr.ip().is_loopback() {
            return Err(format!("{addr} is not a loopback address"));
        }
        Ok(Member { id, addr })
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClusterCommon {
    #[arg(long, value_enum)]
    pub target: ClusterTarget,
    /// The members' client addresses, comma-separated ID@HOST:PORT (etcd: each member's client URL
    /// without `http://`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<Member>,
    /// Client runtime worker threads (1 = a single-threaded client).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Give up on any single request or connect after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub io_timeout_s: u64,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Which server listens on --port: baton (LOCK.* commands) or redis (the Redis recipe).
    #[arg(long, value_enum)]
    pub target: Target,
    /// Port on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// Client runtime worker threads (1 = a single-threaded client).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Give up on any single read, write or connect after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub io_timeout_s: u64,
}

/// The connections that build a workload's state (held locks, places in line).
#[derive(Args, Debug, Clone, Copy)]
pub struct Takers {
    /// Connections taking the locks (or places), each keeping them while open.
    #[arg(long = "connections", default_value_t = 4)]
    pub connections: usize,
    /// Requests per pipelined batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// W1: uncontended acquire/release cycles on distinct keys.
    Cycle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Cycles in flight per connection (1 = unpipelined).
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Server PID: reports the server's CPU time per cycle over the measured seconds.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// W3: PING floor, then lock hand-off latency between waiters of one key.
    Handoff {
        #[command(flatten)]
        common: Common,
        /// Waiters besides the holder.
        #[arg(long, default_value_t = 8)]
        waiters: usize,
        #[arg(long, default_value_t = 20_000)]
        handoffs: u64,
        #[arg(long, default_value_t = 20_000)]
        pings: u64,
    },
    /// W4: N waiters blocked on one key (baton) or subscribed to one channel (Redis); time until
    /// the last one hears the outcome.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Comma-separated waiter counts.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        waiters: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Server PID: measures RSS growth per waiter at the largest count.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// W4's floor: serves Redis's pub/sub (PING, SUBSCRIBE, PUBSUB NUMSUB, PUBLISH) with one send(2)
    /// per subscriber and nothing else, for `fanout --target redis` to measure; runs until killed.
    FanoutFloor {
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
    },
    /// W5: contended mix, clients over few keys, 20% FAILURE; ops/s, max wait, FIFO check.
    Contended {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 16)]
        keys: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 0.5)]
        warmup: f64,
        #[arg(long, default_value_t = 5000)]
        wait_timeout_ms: u64,
        #[arg(long, default_value_t = 20)]
        failure_pct: u64,
    },
    /// W6: RSS growth per held lock.
    Memory {
        #[command(flatten)]
        common: Common,
        /// Server PID (RSS is read from /proc/PID/status).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[command(flatten)]
        takers: Takers,
    },
    /// S1: TRY+UNLOCK latency (W1's cycle, 1 connection, unpipelined) with more and more other
    /// locks held.
    ScaleHeld {
        #[command(flatten)]
        common: Common,
        /// Comma-separated counts of other locks held, taken in ascending order.
        #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
        levels: Vec<usize>,
        #[command(flatten)]
        takers: Takers,
        /// Measured seconds per level (after the warm-up).
        #[arg(long, default_value_t = 2.0)]
        duration: f64,
        #[arg(long, default_value_t = 0.5)]
        warmup: f64,
    },
    /// S2 (baton only): hand-off latency with more and more owners queued on the key.
    ScaleQueue {
        #[command(flatten)]
        common: Common,
        /// Comma-separated counts of owners in line, head included, in ascending order.
        #[arg(long, value_delimiter = ',', default_value = "10,10000,1000000")]
        levels: Vec<usize>,
        #[command(flatten)]
        takers: Takers,
        /// Measured hand-offs per level.
        #[arg(long, default_value_t = 1000)]
        handoffs: u64,
        /// Stop a level's hand-offs after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        max_seconds: f64,
    },
    /// S3: RSS growth per held lock at more and more held locks.
    ScaleMemory {
        #[command(flatten)]
        common: Common,
        /// Server PID (RSS is read from /proc/PID/status).
        #[arg(long)]
        pid: u32,
        /// Comma-separated counts of held locks, taken in ascending order.
        #[arg(long, value_delimiter = ',', default_value = "10000,1000000,5000000")]
        levels: Vec<usize>,
        #[command(flatten)]
        takers: Takers,
    },
    /// C1: lock+unlock cycles on distinct keys through a cluster's own client (baton: LOCK.TRY +
    /// LOCK.UNLOCK SUCCESS; etcd: Lock + Unlock on the client's lease).
    ClusterCycle {
        #[command(flatten)]
        cluster: ClusterCommon,
        /// Clients, each with its own connections (and, on etcd, its own lease).
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// C2: hand-off latency between the clients waiting on one lock (baton: LOCK.WAIT and
    /// LOCK.UNLOCK FAILURE; etcd: a blocked Lock and the holder's Unlock).
    ClusterHandoff {
        #[command(flatten)]
        cluster: ClusterCommon,
        /// Waiters besides the holder.
        #[arg(long, default_value_t = 4)]
        waiters: usize,
        #[arg(long, default_value_t = 2000)]
        handoffs: u64,
        /// Stop after this many seconds, however many hand-offs were measured.
        #[arg(long, default_value_t = 60.0)]
        max_seconds: f64,
    },
    /// C3: SIGKILL the leader, time until a client is granted a lock; restart it; repeat.
    ClusterFailover {
        #[command(flatten)]
        cluster: ClusterCommon,
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Directory of the members' pid files, `n<ID>.pid`.
        #[arg(long)]
        pid_dir: PathBuf,
        /// Shell command that starts the members that are down and returns once all are up (e.g.
        /// `scripts/etcd-cluster.sh start DIR`); run before every kill and after the last.
        #[arg(long)]
        restart: String,
        /// Abandon a lock request after this many milliseconds and send another (the figures'
        /// resolution).
        #[arg(long, default_value_t = 100)]
        attempt_ms: u64,
        /// Give up on one kill's failover after this many seconds.
        #[arg(long, default_value_t = 30.0)]
        max_seconds: f64,
    },
    /// Renders RESULT lines (from files or stdin) as Markdown tables.
    Table {
        /// Files with RESULT lines; other lines are ignored.
        files: Vec<PathBuf>,
    },
    /// Draws SVG charts from RESULT and QUANTILES lines (from files or stdin) into a directory.
    Charts {
        /// Directory for the SVG files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Files with RESULT lines; other lines are ignored.
        files: Vec<PathBuf>,
    },
    /// Prints a free TCP port on 127.0.0.1.
    FreePort,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let parsed =
            Cli::try_parse_from(["baton-bench", "scale-memory", "--target", "redis", "--port", "1", "--pid", "2"]);
        let Ok(Cli { command: Command::ScaleMemory { levels, takers, .. } }) = parsed else {
            panic!("scale-memory did not parse: {parsed:?}");
        };
        assert_eq!(levels, [10_000, 1_000_000, 5_000_000]);
        assert_eq!((takers.connections, takers.batch), (4, 1000));
    }

    #[test]
    fn members_are_ids_at_loopback_addresses() {
        let member: Member = "2@127.0.0.1:7002".parse().unwrap();
        assert_eq!((member.id, member.addr.port()), (2, 7002));
        assert!("127.0.0.1:7002".parse::<Member>().is_err());
        assert!("x@127.0.0.1:7002".parse::<Member>().is_err());
        assert!("1@10.0.0.1:7001".parse::<Member>().unwrap_err().contains("loopback"));
        let parsed = Cli::try_parse_from([
            "baton-bench",
            "cluster-cycle",
            "--target",
            "etcd",
            "--nodes",
            "1@127.0.0.1:12379,2@127.0.0.1:22379,3@[::1]:32379",
        ]);
        let Ok(Cli { command: Command::ClusterCycle { cluster, clients, .. } }) = parsed else {
            panic!("cluster-cycle did not parse: {parsed:?}");
        };
        assert_eq!((cluster.target, cluster.nodes.len(), clients), (ClusterTarget::Etcd, 3, 50));
    }
}
