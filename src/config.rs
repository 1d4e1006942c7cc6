//! Command-line configuration. Every limit a client can run into is a flag here, with a default
//! that suits the image-pull use case (short keys, small results, thousands of waiters).

use std::net::IpAddr;

use clap::{Parser, ValueEnum};

/// The Redis version baton answers as (HELLO, INFO), for clients that gate features on it.
pub(crate) const REDIS_COMPAT_VERSION: &str = "7.0.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    Yes,
    No,
}

impl YesNo {
    pub fn enabled(self) -> bool {
        self == YesNo::Yes
    }
}

/// Redis's `appendfsync`: when a state change counts as written, so that its reply may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppendFsync {
    /// After the journal is fsynced (group commit: one fsync covers every change made meanwhile).
    Always,
    /// After write(2); fsync once a second in the background.
    Everysec,
    /// After write(2); the OS decides when to flush.
    No,
}

impl AppendFsync {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Always => "always",
            AppendFsync::Everysec => "everysec",
            AppendFsync::No => "no",
        }
    }
}

/// Redis's `client-output-buffer-limit` of one class: a client is disconnected as soon as what is
/// queued for it passes `hard_bytes`, or once it has stayed over `soft_bytes` for
/// `soft_duration`. 0 bytes is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimit {
    pub hard_bytes: usize,
    pub soft_bytes: usize,
    pub soft_duration: std::time::Duration,
}

impl OutputLimit {
    /// Redis's notation: `<hard> <soft> <soft seconds>`, the sizes in Redis's units (`32mb 8mb 60`).
    pub fn parse(text: &str) -> Result<OutputLimit, String> {
        let size = |word: &str| {
            crate::memory::parse_size(word).and_then(|bytes| usize::try_from(bytes).map_err(|error| error.to_string()))
        };
        match text.split_whitespace().collect::<Vec<_>>()[..] {
            [hard, soft, seconds] => Ok(OutputLimit {
                hard_bytes: size(hard)?,
                soft_bytes: size(soft)?,
                soft_duration: std::time::Duration::from_secs(
                    seconds.parse().map_err(|_| format!("'{seconds}' is not a whole number of seconds"))?,
                ),
            }),
            _ => Err(format!("'{text}' is not '<hard limit> <soft limit> <soft seconds>' (e.g. '32mb 8mb 60')")),
        }
    }

    /// As CONFIG GET shows it: bytes and seconds.
    pub(crate) fn describe(&self) -> String {
        format!("{} {} {}", self.hard_bytes, self.soft_bytes, self.soft_duration.as_secs())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "baton",
    version,
    about = "A lock server speaking the Redis protocol: one node does the work, the others wait and are told the outcome.",
    long_about = "baton serves LOCK.TRY / LOCK.WAIT / LOCK.UNLOCK / LOCK.EXTEND / LOCK.CANCEL / LOCK.INFO over \
RESP2 and RESP3, so redis-cli and any Redis client library can use it. When the holder reports SUCCESS every \
waiter is told DONE at once; on FAILURE (or lease expiry, or the holder's connection closing) the lock passes \
straight to the head of the FIFO queue.\n\nLogs go to stderr; set RUST_LOG (e.g. RUST_LOG=baton=debug) to \
choose what is logged."
)]
pub struct Config {
    /// Address to listen on. Binding to a non-loopback address exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1", env = "BATON_BIND")]
    pub bind: IpAddr,

    /// TCP port to listen on; 0 turns the plaintext listener off (as in Redis), which needs
    /// --tls-port.
    #[arg(long, default_value_t = 6390, env = "BATON_PORT")]
    pub port: u16,

    /// Lease in milliseconds given to a holder (and to a queued owner's place) when a call has no PX.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_ms: u64,

    /// Upper bound on any lease, KEEP or EXTEND in milliseconds; larger requests are capped to it.
    #[arg(long, default_value_t = 86_400_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_lease_ms: u64,

    /// When the last connection on which the holder was told it holds the lock (ACQUIRED, EXTEND)
    /// closes, treat it as FAILURE and hand the lock to the next waiter. `no` keeps pure lease
    /// semantics.
    #[arg(long, value_enum, default_value_t = YesNo::Yes)]
    pub release_on_disconnect: YesNo,

    /// Threads serving connections, each an event loop of its own that serves every connection
    /// it is given from accept to close. Default: one fewer than the CPU cores, at least one. The
    /// spare core helps write the DONEs when a SUCCESS tells a long line, and leaves the
    /// loops room beside the journal's writer and busy clients on the same machine: on two cores
    /// one loop answers unpipelined requests with Redis's p99 where two had twice it, and tells
    /// 10,000 waiters DONE sooner than two did (see docs/benchmarks.md).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub threads: Option<u64>,

    /// Number of lock-table shards (rounded up to a power of two). Default: 4 per CPU core.
    #[arg(long)]
    pub shards: Option<usize>,

    /// Require clients to AUTH with this password (the Redis `requirepass` semantics: it is the
    /// default user's password; empty means none). Also the cluster bus secret when there is no
    /// --cluster-secret.
    #[arg(long, env = "BATON_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,

    /// Maximum number of simultaneous client connections; further ones are refused with an error.
    #[arg(long, default_value_t = 10_000)]
    pub maxclients: usize,

    /// Maximum size of a key or an owner id, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub max_key_bytes: usize,

    /// Maximum size of a RESULT or REASON passed to LOCK.UNLOCK, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_result_bytes: usize,

    /// Maximum size of any single bulk argument of a request, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_bulk_bytes: usize,

    /// Maximum number of arguments in one request.
    #[arg(long, default_value_t = 1024)]
    pub max_args: usize,

    /// Maximum length of an inline (telnet-style) command line, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_inline_bytes: usize,

    /// Maximum bytes of a not-yet-complete request buffered per connection, and of requests
    /// queued behind a blocked LOCK.WAIT; a client over it is disconnected.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub max_query_buffer_bytes: usize,

    /// Disconnect a client whose unread replies stop draining for this many milliseconds (a
    /// client that never reads would otherwise pin its connection's buffers forever).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub output_stall_timeout_ms: u64,

    /// Publish lock events (granted, handoff, released, done, expired, cancelled) to the pub/sub
    /// channel `__lock__:<key>`, as Redis's keyspace notifications do; also `CONFIG SET
    /// notify-lock-events yes|no`. Off by default: it costs every lock operation a little while
    /// anyone subscribes.
    #[arg(long, value_enum, default_value_t = YesNo::No, num_args = 0..=1, default_missing_value = "yes")]
    pub notify_lock_events: YesNo,

    /// Redis's `client-output-buffer-limit pubsub`, for subscribers and MONITOR clients: a client
    /// that reads its messages slower than they come is disconnected once what is queued for it
    /// passes the hard limit, or stays over the soft limit for the soft seconds. Sizes in Redis's
    /// units; 0 turns a limit off.
    #[arg(long, default_value = "32mb 8mb 60", value_parser = OutputLimit::parse)]
    pub pubsub_output_buffer_limit: OutputLimit,

    /// Serve Prometheus metrics over HTTP at this address (e.g. 127.0.0.1:9390); off by default.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Also accept TLS connections on this port (needs --tls-cert-file and --tls-key-file).
    #[arg(long)]
    pub tls_port: Option<u16>,

    /// PEM file with the server certificate (and its chain) for --tls-port and the cluster bus.
    #[arg(long)]
    pub tls_cert_file: Option<std::path::PathBuf>,

    /// PEM file with the private key of --tls-cert-file.
    #[arg(long)]
    pub tls_key_file: Option<std::path::PathBuf>,

    /// PEM file with CA certificates: TLS clients must then present a certificate signed by one,
    /// and cluster nodes verify each other against them on the bus.
    #[arg(long)]
    pub tls_ca_cert_file: Option<std::path::PathBuf>,

    /// Redis's protected mode: with no --requirepass, serve only clients connecting from a loopback
    /// address and refuse others with an explanation. `no` serves everyone.
    #[arg(long, value_enum, default_value_t = YesNo::Yes)]
    pub protected_mode: YesNo,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Send TCP keepalive probes to a client idle for this many seconds, so a peer that vanished
    /// (and its blocked LOCK.WAIT) is noticed; 0 turns them off. Redis's `tcp-keepalive`.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=32_767))]
    pub tcp_keepalive: u64,

    /// For tests: listen for plaintext on a free port the system picks (said in the startup log
    /// line) instead of --port.
    #[arg(long, hide = true, conflicts_with = "port")]
    pub ephemeral_port: bool,
    /// Refuse commands that add state (LOCK.TRY, LOCK.WAIT, LOCK.UNLOCK ... KEEP) with Redis's OOM
    /// error while the memory in use is over this many bytes; releases keep working, so the server
    /// drains. Redis's units: 100mb, 1gb, plain bytes. 0 = no limit.
    #[arg(long, default_value = "0", value_parser = crate::memory::parse_size)]
    pub maxmemory: u64,
    /// Users and their permissions, in Redis's ACL file format (`user node on >pass ~pull:*
    /// +@write +lock.info`); read at startup and by ACL LOAD, written by ACL SAVE. A `default`
    /// user in the file replaces the one --requirepass sets.
    #[arg(long)]
    pub aclfile: Option<std::path::PathBuf>,

    /// Directory of the journal (created if missing, locked so that two servers cannot share it).
    #[arg(long, default_value = "baton-data", env = "BATON_DIR")]
    pub dir: std::path::PathBuf,

    /// Keep every lock, queue place, KEEP result and owed DONE in a journal under --dir, so a
    /// restart or crash loses none of them. `no` keeps everything in memory only.
    #[arg(long, value_enum, default_value_t = YesNo::Yes)]
    pub appendonly: YesNo,

    /// When a change counts as written (Redis's appendfsync): `always` survives power loss,
    /// `everysec` and `no` survive a crash of the process (after an OS crash the server grants
    /// nothing new until every lease that may have been lost has run out).
    #[arg(long, value_enum, default_value_t = AppendFsync::Everysec)]
    pub appendfsync: AppendFsync,

    /// Start even if the middle of the journal is damaged, cutting it there: everything after
    /// the damage is lost (the refusal to start says how much).
    #[arg(long)]
    pub journal_repair: bool,

    /// Rewrite the journal as a snapshot once it is at least this large (Redis's units) ...
    #[arg(long, default_value = "64mb", value_parser = crate::memory::parse_size)]
    pub auto_aof_rewrite_min_size: u64,

    /// ... and has grown by this percentage since the last rewrite. 0 turns rewriting off.
    #[arg(long, default_value_t = 100)]
    pub auto_aof_rewrite_percentage: u64,

    /// For tests: the size at which a journal segment is closed.
    #[arg(long, hide = true, default_value = "64mb", value_parser = crate::memory::parse_size)]
    pub journal_segment_size: u64,

    /// For tests: this boot's id instead of /proc/sys/kernel/random/boot_id (a test changes it to
    /// play an OS crash).
    #[arg(long, hide = true)]
    pub boot_id: Option<String>,

    /// For tests: read the wall clock this many milliseconds off (negative: behind), as after an
    /// operator or NTP stepped it.
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    pub wall_clock_offset_ms: i64,

    /// Run as node N of a replicated cluster (needs --cluster-peers): the nodes agree on every
    /// change through Raft, so the locks survive the loss of any minority of them. Clients reach
    /// the leader through the Redis Cluster protocol (followers answer -MOVED).
    #[arg(long, requires = "cluster_peers", value_parser = clap::value_parser!(u64).range(1..))]
    pub cluster_node_id: Option<u64>,

    /// Every node of the cluster, this one included, as `id@host:port` with its client address,
    /// comma-separated and the same on every node: `1@10.0.0.1:6390,2@10.0.0.2:6390,3@10.0.0.3:6390`.
    /// `id@host:port@busport` names a node's bus port (needed when nodes share a host).
    #[arg(long, requires = "cluster_node_id", value_parser = parse_peers)]
    pub cluster_peers: Option<Peers>,

    /// Port of the cluster bus, on which the nodes talk to each other, for every peer whose entry
    /// in --cluster-peers names none. Default: its client port plus 10000 (Redis Cluster's
    /// convention).
    #[arg(long, requires = "cluster_node_id")]
    pub cluster_bus_port: Option<u16>,

    /// Join the running cluster whose CLUSTER INFO shows this `cluster_id`, instead of forming
    /// one: for a node about to be added with CLUSTER ADDNODE, or one that replaces a member
    /// with an empty --dir after the membership has changed. Such a node never forms a cluster
    /// of its own; it waits until the leader reaches it. A --dir that already belongs to a
    /// cluster must belong to this one.
    #[arg(long, value_name = "CLUSTER-ID", requires = "cluster_node_id", value_parser = parse_cluster_id)]
    pub cluster_join: Option<ClusterId>,

    /// Secret the nodes prove to each other when a cluster bus connection opens, before any Raft
    /// message is taken (a challenge-response: the secret never travels). The same on every
    /// node; default: --requirepass. With neither (nor bus TLS), anyone who reaches a bus port can
    /// rewrite the locks. Prefer the environment variable: a flag's value shows in the process list.
    #[arg(
        long,
        env = "BATON_CLUSTER_SECRET",
        hide_env_values = true,
        requires = "cluster_node_id",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub cluster_secret: Option<String>,

    /// TLS on the cluster bus (Redis's `tls-cluster`): each node serves its bus with
    /// --tls-cert-file and presents it as its client certificate too, and verifies its peers
    /// against --tls-ca-cert-file (required then), both ways; a certificate must name its node's
    /// IP address. Default: yes when --tls-cert-file and --tls-key-file are given.
    #[arg(long, value_enum, requires = "cluster_node_id")]
    pub tls_cluster: Option<YesNo>,

    /// Remove --dir when the server stops (set by tests that made it).
    #[arg(skip)]
    pub remove_dir_on_stop: bool,
}

impl Config {
    /// Defaults as if started with no flags, but on a free port and with two event loops; tests use
    /// it and adjust fields.
    /// The journal goes to a fresh directory of its own, removed when the server stops.
    pub fn default_for_tests() -> Config {
        static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut config = Config::parse_from(["baton", "--ephemeral-port"]);
        // Two event loops on any machine: a test's connections then land on both, so the suite
        // covers what passes between loops (grants written to another loop's socket, wake-ups
        // across loops). The default's single loop on two cores is what the tests that ask for
        // one loop, and the suites that run the binary, exercise.
        config.threads = Some(2);
        let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        config.dir = std::env::temp_dir().join(format!("baton-test-{}-{n}", std::process::id()));
        config.remove_dir_on_stop = true;
        config
    }

    pub fn event_loop_count(&self) -> usize {
        let one_core_spare = || cores().saturating_sub(1).max(1);
        self.threads.and_then(|threads| usize::try_from(threads).ok()).unwrap_or_else(one_core_spare)
    }

    /// Whether the event loops leave a CPU core unused, for the fan-out's second writer.
    pub fn leaves_a_core_spare(&self) -> bool {
        cores() > self.event_loop_count()
    }

    pub fn shard_count(&self) -> usize {
        let wanted = self.shards.unwrap_or_else(|| cores() * 4);
        wanted.clamp(1, 1 << 16).next_power_of_two()
    }
}

/// What names a cluster on its bus: two clusters on one network never take each other's
/// connections. Chosen when the cluster forms (see `cluster::identity`), shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub [u8; 32]);

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl std::fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

fn parse_cluster_id(text: &str) -> Result<ClusterId, String> {
    let wrong = || format!("'{text}' is not a cluster id (the 64 hex digits of cluster_id in CLUSTER INFO)");
    if text.len() != 64 || !text.is_ascii() {
        return Err(wrong());
    }
    let mut id = [0; 32];
    for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| wrong())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| wrong())?;
    }
    Ok(ClusterId(id))
}

/// The cluster's members as `--cluster-peers` names them, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub Vec<PeerEntry>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerEntry {
    pub id: u64,
    pub client_addr: std::net::SocketAddr,
    pub bus_port: Option<u16>,
}

fn parse_peers(text: &str) -> Result<Peers, String> {
    let mut peers = Vec::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (id, rest) = item.split_once('@').ok_or_else(|| format!("'{item}' is not id@host:port"))?;
        let (addr, bus_port) = match rest.split_once('@') {
            Some((addr, bus)) => {
                (addr, Some(bus.parse::<u16>().map_err(|_| format!("'{bus}' in '{item}' is not a port"))?))
            }
            None => (rest, None),
        };
        let id: u64 = id.parse().map_err(|_| format!("'{id}' in '{item}' is not a node id (a number from 1)"))?;
        if id == 0 {
            return Err(format!("node ids start at 1 ('{item}')"));
        }
        let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(|error| format!("'{addr}' in '{item}': {error}"))?
            .next()
            .ok_or_else(|| format!("'{addr}' in '{item}' has no address"))?;
        peers.push(PeerEntry { id, client_addr: addr, bus_port });
    }
    peers.sort_unstable();
    if peers.is_empty() {
        return Err("no peers given".to_owned());
    }
    if let Some(pair) = peers.windows(2).find(|pair| pair[0].id == pair[1].id) {
        return Err(format!("node id {} is given twice", pair[0].id));
    }
    let mut addrs: Vec<_> = peers.iter().map(|peer| peer.client_addr).collect();
    addrs.sort_unstable();
    if let Some(pair) = addrs.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("address {} is given twice", pair[0]));
    }
    Ok(Peers(peers))
}

/// CPU cores this process may use (1 if unknown), which the defaults of `--threads` and
/// `--shards` scale with.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn output_limits_read_like_redis() {
        let limit = OutputLimit::parse("32mb 8mb 60").unwrap();
        assert_eq!(
            limit,
            OutputLimit { hard_bytes: 32 << 20, soft_bytes: 8 << 20, soft_duration: Duration::from_secs(60) }
        );
        assert_eq!(limit.describe(), "33554432 8388608 60", "CONFIG GET's form");
        assert_eq!(OutputLimit::parse(" 0  0 0 ").unwrap().hard_bytes, 0);
        assert!(OutputLimit::parse("32mb 8mb").is_err());
        assert!(OutputLimit::parse("32mb 8mb x").is_err());
        assert!(OutputLimit::parse("lots 8mb 60").is_err());
    }

    #[test]
    fn cluster_peers_are_id_at_address() {
        let peers = parse_peers("3@127.0.0.1:7003, 1@127.0.0.1:7001,2@127.0.0.1:7002").unwrap();
        let ids: Vec<u64> = peers.0.iter().map(|peer| peer.id).collect();
        assert_eq!(ids, [1, 2, 3], "sorted by id");
        assert_eq!(peers.0[0].client_addr, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(peers.0[0].bus_port, None);
        let with_bus = parse_peers("1@127.0.0.1:7001@9001,2@127.0.0.1:7002").unwrap();
        assert_eq!(with_bus.0[0].bus_port, Some(9001));
        assert_eq!(with_bus.0[1].bus_port, None);
        assert!(parse_peers("1@127.0.0.1:7001@x").is_err());
        for bad in [
            "",
            "1",
            "x@127.0.0.1:1",
            "0@127.0.0.1:1",
            "1@nowhere",
            "1@127.0.0.1:1,1@127.0.0.1:2",
            "1@127.0.0.1:1,2@127.0.0.1:1",
        ] {
            assert!(parse_peers(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Config::try_parse_from(["baton", "--cluster-node-id", "1"]).is_err(), "a node id needs peers");
    }

    #[test]
    fn a_cluster_id_reads_back_as_it_is_shown() {
        let shown = "00ff10a0".repeat(8);
        let id = parse_cluster_id(&shown).unwrap();
        assert_eq!(id.0[..4], [0x00, 0xff, 0x10, 0xa0]);
        assert_eq!(id.to_string(), shown);
        assert_eq!(parse_cluster_id(&shown.to_uppercase()).unwrap(), id);
        for wrong in ["", "00ff", &"g0".repeat(32), &"0".repeat(65), &"é".repeat(32)] {
            assert!(parse_cluster_id(wrong).is_err(), "{wrong}");
        }
        let node = ["baton", "--cluster-node-id", "4", "--cluster-peers", "4@127.0.0.1:7004", "--cluster-join"];
        assert_eq!(
            Config::try_parse_from(node.iter().copied().chain([shown.as_str()])).unwrap().cluster_join,
            Some(id)
        );
        assert!(
            Config::try_parse_from(["baton", "--cluster-join", shown.as_str()]).is_err(),
            "only for a cluster node"
        );
    }

    #[test]
    fn bus_security_flags_belong_to_a_cluster_node() {
        let node = ["baton", "--cluster-node-id", "1", "--cluster-peers", "1@127.0.0.1:7001"];
        let parse = |extra: &[&str]| Config::try_parse_from(node.iter().chain(extra));
        assert_eq!(parse(&["--cluster-secret", "s"]).unwrap().cluster_secret.as_deref(), Some("s"));
        assert!(parse(&["--cluster-secret", ""]).is_err(), "an empty secret would be no secret");
        assert_eq!(parse(&["--tls-cluster", "no"]).unwrap().tls_cluster, Some(YesNo::No));
        assert_eq!(parse(&[]).unwrap().tls_cluster, None, "decided by the TLS files");
        assert!(Config::try_parse_from(["baton", "--tls-cluster", "yes"]).is_err());
        assert!(Config::try_parse_from(["baton", "--cluster-secret", "s"]).is_err());
    }

    #[test]
    fn notify_lock_events_is_off_unless_asked_for() {
        let parse = |args: &[&str]| Config::parse_from(["baton"].iter().chain(args)).notify_lock_events;
        assert_eq!(parse(&[]), YesNo::No);
        assert_eq!(parse(&["--notify-lock-events"]), YesNo::Yes);
        assert_eq!(parse(&["--notify-lock-events", "no"]), YesNo::No);
        assert_eq!(parse(&["--notify-lock-events", "--port", "1"]), YesNo::Yes);
    }
}
