//! The listeners: accept connections (plaintext unless `--port 0`, TLS with `--tls-port`), enforce
//! `--maxclients` within the open-files limit, set TCP keepalive, serve the metrics endpoint, run
//! the lease reaper, and stop cleanly on shutdown (blocked waiters are answered with an error,
//! then every connection closes).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::acl::Acl;
use crate::clients::{ClientRegistry, Control};
use crate::cluster::{Cluster, leadership};
use crate::cmd::table;
use crate::config::Config;
use crate::connection;
use crate::context::{ServerStats, Shared};
use crate::core::{ChangeSink, Clock, CoreSettings, LockCore, LockObserver, token_seed};
use crate::direct::SharedTcp;
use crate::errors;
use crate::event_loops::EventLoops;
use crate::fd_limit::{self, RESERVED_FDS};
use crate::http::{self, HttpLimits};
use crate::journal::{self, Recovery};
use crate::memory;
use crate::metrics::{Metrics, OPS_SAMPLE_INTERVAL, Prometheus};
use crate::monitor::Monitors;
use crate::persistence::{self, Persistence};
use crate::pubsub::PubSub;
use crate::tls;

pub struct Server {
    /// None with `--port 0`: TLS only.
    listener: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    metrics: Option<TcpListener>,
    shared: Arc<Shared>,
    /// What the journal holds, replayed once the server runs.
    recovery: Option<Recovery>,
    loops: EventLoops,
}

impl Server {
    pub async fn bind(mut config: Config) -> io::Result<Server> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let plain_port = if config.ephemeral_port { Some(0) } else { Some(config.port).filter(|&port| port != 0) };
        if plain_port.is_none() && config.tls_port.is_none() {
            return Err(invalid("--port 0 turns the plaintext listener off: set --tls-port to serve TLS".to_owned()));
        }
        let metrics_connections = if config.metrics_addr.is_some() { HttpLimits::METRICS.max_connections } else { 0 };
        config.maxclients = fd_limit::fit_maxclients(config.maxclients, RESERVED_FDS + metrics_connections as u64)?;
        let acceptor = tls::acceptor(&config).map_err(invalid)?;
        let acl = Acl::new(table::acl_catalogue(), config.requirepass.as_deref(), config.aclfile.clone())
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
        // Before listening, so that a journal another server holds, or one that cannot be read,
        // stops this server before any client can reach it; after the flags are checked, so that
        // a mistyped flag creates no directory.
        let clock = Clock::new();
        // A cluster node keeps its state in the Raft log instead of the journal.
        let journal = if config.cluster_node_id.is_some() { None } else { Persistence::open(&config, &clock)? };
        let (persistence, recovery) = match journal {
            Some((persistence, recovery)) => (Some(persistence), Some(recovery)),
            None => (None, None),
        };
        let listener = match plain_port {
            Some(port) => Some(TcpListener::bind((config.bind, port)).await?),
            None => None,
        };
        let tls = match (acceptor, config.tls_port) {
            (Some(acceptor), Some(port)) => Some((TcpListener::bind((config.bind, port)).await?, acceptor)),
            _ => None,
        };
        // The server serves without the endpoint rather than not at all.
        let metrics = match config.metrics_addr {
            Some(addr) => TcpListener::bind(addr)
                .await
                .inspect_err(|error| warn!(%addr, %error, "cannot start the Prometheus endpoint"))
                .ok(),
            None => None,
        };
        // Without a plaintext listener, port 0 is what INFO and CONFIG GET report, as Redis does.
        let local_addr = match &listener {
            Some(listener) => listener.local_addr()?,
            None => SocketAddr::new(config.bind, 0),
        };
        let settings = CoreSettings {
            default_lease_ms: config.lease_ms,
            max_lease_ms: config.max_lease_ms,
            release_on_disconnect: config.release_on_disconnect.enabled(),
            shards: config.shard_count(),
            max_queue_bytes: journal::MAX_QUEUE_BYTES,
        };
        let mut core = LockCore::new(settings, token_seed(config.wall_clock_offset_ms));
        let cluster = Cluster::start(&config, settings, clock).await?.map(Arc::new);
        if let Some(cluster) = &cluster {
            core.attach_sink(cluster.proposals() as Arc<dyn ChangeSink>);
        }
        let pubsub = Arc::new(PubSub::new(config.notify_lock_events.enabled(), config.pubsub_output_buffer_limit));
        core.set_observer(Arc::clone(&pubsub) as Arc<dyn LockObserver>);
        let monitors = Monitors::new(config.pubsub_output_buffer_limit);
        let spare_core = config.leaves_a_core_spare();
        let shared = Arc::new(Shared {
            config,
            core,
            clock,
            clients: ClientRegistry::default(),
            stats: ServerStats::default(),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            local_addr,
            metrics: Metrics::new(),
            acl,
            persistence,
            pubsub,
            monitors,
            cluster,
            spare_core,
        });
        let loops = EventLoops::start(shared.config.event_loop_count())?;
        if let Some(persistence) = &shared.persistence {
            loops.spawn_on_each(|| persistence.release_relay());
        }
        Ok(Server { listener, tls, metrics, shared, recovery, loops })
    }

    /// The plaintext listener's address; port 0 when there is none (`--port 0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address of the Prometheus endpoint, when `--metrics-addr` is set and could be bound.
    pub fn metrics_local_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The address of the TLS listener, when `--tls-port` is set.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Cancelling this token stops the server as a signal would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Serves until `signal` resolves or the shutdown token is cancelled.
    pub async fn run(self, signal: impl Future<Output = ()>) -> io::Result<()> {
        let tls_addr = self.tls_local_addr();
        let Server { listener, tls, metrics, shared, recovery, loops } = self;
        let ready = || {
            info!(
                addr = listener.as_ref().map(|_| tracing::field::display(shared.local_addr)),
                tls_addr = ?tls_addr,
                shards = shared.core.shard_count(),
                event_loops = loops.count(),
                lease_ms = shared.config.lease_ms,
                release_on_disconnect = shared.core.settings().release_on_disconnect,
                protected_mode = shared.config.protected_mode.enabled(),
                appendonly = shared.persistence.is_some(),
                "baton ready to accept connections"
            )
        };
        if !shared.config.bind.is_loopback() && shared.acl.default_user_needs_no_password() {
            warn!(
                bind = %shared.config.bind,
                "listening beyond loopback without --requirepass; protected mode refuses remote clients unless --protected-mode no"
            );
        }
        let tasks = TaskTracker::new();
        memory::start();
        tasks.spawn(cron(Arc::clone(&shared)));
        tasks.spawn(persistence::rewrite_when_grown(Arc::clone(&shared)));
        tasks.spawn(leadership::serve_while_leading(Arc::clone(&shared)));
        if let Some(metrics) = metrics {
            tasks.spawn(serve_prometheus(Arc::clone(&shared), metrics));
        }
        tokio::pin!(signal);
        // Leases are reaped once the journal is replayed: until then the core is incomplete.
        let load = async {
            match recovery {
                Some(recovery) => persistence::load(Arc::clone(&shared), recovery).await,
                None => Ok(()),
            }
        };
        tokio::pin!(load);
        let mut loaded = None;
        loop {
            let (accepted, acceptor) = tokio::select! {
                result = &mut load, if loaded.is_none() => {
                    match &result {
                        // As Redis does, "ready" once the data is loaded: clients that connect
                        // before are told -LOADING.
                        Ok(()) => {
                            ready();
                            tasks.spawn(reap_leases(Arc::clone(&shared)));
                        }
                        Err(error) => error!(%error, "cannot load the journal"),
                    }
                    let failed = result.is_err();
                    loaded = Some(result);
                    if failed {
                        break;
                    }
                    continue;
                }
                accepted = accept(listener.as_ref()) => (accepted, None),
                accepted = accept(tls.as_ref().map(|(listener, _)| listener)) => {
                    (accepted, tls.as_ref().map(|(_, acceptor)| acceptor.clone()))
                }
                () = &mut signal => break,
                () = shared.shutdown.cancelled() => break,
            };
            match accepted {
                Ok((socket, addr)) => admit(&shared, &tasks, &loops, socket, addr, acceptor),
                // Out of file descriptors and the like: back off instead of spinning.
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        info!("shutting down: answering blocked waiters and closing connections");
        drop(listener);
        drop(tls);
        shared.shutdown.cancel();
        // Each connection watches its own control channel rather than the shared token, so the
        // per-request path touches nothing shared.
        for client in shared.clients.all() {
            client.send_control(Control::Shutdown);
        }
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.is_err() {
            warn!("some connections did not close within 5 s");
        }
        loops.stop().await;
        // What happens from here is the server going away, not clients: not journaled.
        shared.core.detach_sink();
        if let (Some(persistence), Some(Ok(()))) = (&shared.persistence, &loaded) {
            persistence.close();
        }
        if let Some(cluster) = &shared.cluster {
            cluster.stop().await;
        }
        if shared.config.remove_dir_on_stop {
            let _ = std::fs::remove_dir_all(&shared.config.dir);
        }
        info!("bye");
        loaded.unwrap_or(Ok(()))
    }
}

/// Accepts on `listener`; never resolves for a listener that is not there.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Redis's anetKeepAlive: probes start after `idle_secs` of silence, repeat every third of that,
/// and after 3 unanswered ones the connection is reset, which ends a dead peer's WAIT.
fn set_keepalive(socket: &TcpStream, idle_secs: u64) -> io::Result<()> {
    if idle_secs == 0 {
        return Ok(());
    }
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(idle_secs))
        .with_interval(Duration::from_secs((idle_secs / 3).max(1)))
        .with_retries(3);
    SockRef::from(socket).set_tcp_keepalive(&keepalive)
}

/// Redis's protected mode: while the default user needs no password only loopback clients are
/// served.
fn protected_mode_refuses(config: &Config, acl: &Acl, peer: IpAddr) -> bool {
    let loopback = match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    config.protected_mode.enabled() && acl.default_user_needs_no_password() && !loopback
}

fn admit(
    shared: &Arc<Shared>,
    tasks: &TaskTracker,
    loops: &EventLoops,
    socket: TcpStream,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
) {
    shared.stats.total_connections_received.fetch_add(1, Ordering::Relaxed);
    let refusal = if shared.clients.len() >= shared.config.maxclients {
        warn!(%addr, maxclients = shared.config.maxclients, "connection refused: max number of clients reached");
        Some(errors::MAX_CLIENTS)
    } else if protected_mode_refuses(&shared.config, &shared.acl, addr.ip()) {
        warn!(%addr, "connection refused: protected mode (no --requirepass) serves loopback clients only");
        Some(errors::DENIED_PROTECTED_MODE)
    } else {
        None
    };
    let _ = socket.set_nodelay(true);
    if let Err(error) = set_keepalive(&socket, shared.config.tcp_keepalive) {
        debug!(%addr, %error, "cannot set TCP keepalive");
    }
    let shared = Arc::clone(shared);
    if let Some(reason) = refusal {
        shared.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let reply = format!("-{reason}\r\n");
            // Best effort, like Redis: the client may already be gone.
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
                match tls {
                    Some(acceptor) => {
                        let mut stream = acceptor.accept(socket).await?;
                        stream.write_all(reply.as_bytes()).await?;
                        stream.shutdown().await
                    }
                    None => {
                        let mut socket = socket;
                        socket.write_all(reply.as_bytes()).await
                    }
                }
            })
            .await;
        });
        return;
    }
    // The address this client reached, so a TLS client's is the TLS listener's.
    let entry = shared.clients.register(addr, socket.local_addr().unwrap_or(shared.local_addr));
    // The socket moves to the loop that will serve it: registered with this listener's reactor,
    // it would be woken through this thread.
    let socket = match socket.into_std() {
        Ok(socket) => socket,
        Err(error) => {
            debug!(%addr, %error, "cannot hand the connection to an event loop");
            shared.clients.unregister(entry.id);
            return;
        }
    };
    loops.spawn(tasks.track_future(async move {
        let socket = match TcpStream::from_std(socket) {
            Ok(socket) => socket,
            Err(error) => {
                debug!(%addr, %error, "cannot register the connection with its event loop");
                shared.clients.unregister(entry.id);
                return;
            }
        };
        match tls {
            None => {
                let socket = SharedTcp::new(socket);
                let direct_writer = socket.direct_writer(&entry);
                connection::serve(socket, shared, entry, Some(direct_writer)).await
            }
            // Boxed: inline, the handshake and the TLS connection's larger state would size every
            // plaintext connection's task too (6 KiB instead of 2.2).
            Some(acceptor) => {
                Box::pin(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => connection::serve(stream, shared, entry, None).await,
                        Ok(Err(error)) => {
                            debug!(%addr, %error, "TLS handshake failed");
                            shared.clients.unregister(entry.id);
                        }
                        Err(_) => {
                            debug!(%addr, "TLS handshake timed out");
                            shared.clients.unregister(entry.id);
                        }
                    }
                })
                .await
            }
        }
    }));
}

const REFUSAL_TIMEOUT: Duration = Duration::from_millis(500);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One task for every lease in the server: sleeps until the earliest deadline (or until told a
/// sooner one exists) and lets the core expire what is due.
async fn reap_leases(shared: Arc<Shared>) {
    loop {
        let now = shared.clock.now();
        let next = shared.core.expire(now);
        if next.is_some_and(|deadline| deadline <= now.ms()) {
            // More expiries are due than one pass handles: let clients in between passes.
            tokio::task::yield_now().await;
            continue;
        }
        let wake_at = next.map_or_else(
            || tokio::time::Instant::now() + Duration::from_secs(1),
            |deadline| shared.clock.instant_at(deadline).into(),
        );
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = shared.core.timers_changed().notified() => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Like Redis's serverCron at its default hz of 10, until shutdown: refreshes the memory
/// figures the `--maxmemory` check reads, the clock clients' last activity is read from, and
/// samples the command rate for INFO's instantaneous_ops_per_sec. One timer for all, so an idle
/// server wakes once a tick.
async fn cron(shared: Arc<Shared>) {
    const _: () = assert!(OPS_SAMPLE_INTERVAL.as_nanos() == memory::REFRESH_INTERVAL.as_nanos());
    let mut ticker = tokio::time::interval(OPS_SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                memory::refresh();
                shared.clients.tick_clock();
                let total = shared.stats.total_commands_processed.load(Ordering::Relaxed);
                shared.metrics.sample_ops(total, Instant::now());
            }
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Serves Prometheus metrics, read when scraped, until shutdown.
async fn serve_prometheus(shared: Arc<Shared>, listener: TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    }
    let prometheus = Prometheus::default();
    let figures = Arc::clone(&shared);
    let page = move || prometheus.render(&figures.figures());
    tokio::select! {
        () = http::serve(listener, "/metrics", HttpLimits::METRICS, page) => {}
        () = shared.shutdown.cancelled() => {}
    }
}

/// A server on its own runtime task, for tests and embedding.
pub struct RunningServer {
    /// Port 0 when there is no plaintext listener (`--port 0`).
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<io::Result<()>>,
}

impl RunningServer {
    /// Returns once the server serves, its journal loaded.
    pub async fn start(config: Config) -> io::Result<RunningServer> {
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        let tls_addr = server.tls_local_addr();
        let metrics_addr = server.metrics_local_addr();
        let shutdown = server.shutdown_token();
        let shared = Arc::clone(&server.shared);
        let handle = tokio::spawn(server.run(std::future::pending()));
        while shared.persistence.as_ref().is_some_and(Persistence::loading) {
            if handle.is_finished() {
                return match handle.await.map_err(io::Error::other)? {
                    Err(error) => Err(error),
                    Ok(()) => Err(io::Error::other("the server stopped before its journal was loaded")),
                };
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(RunningServer { addr, tls_addr, metrics_addr, shutdown, handle })
    }

    /// Stops the server and waits until it has closed every connection.
    pub async fn stop(self) -> io::Result<()> {
        self.shutdown.cancel();
        self.handle.await.map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_mode_serves_loopback_only_without_a_password() {
        let acl = |password: Option<&str>| Acl::new(table::acl_catalogue(), password, None).unwrap();
        let mut config = Config::default_for_tests();
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(protected_mode_refuses(&config, &acl(None), remote));
        for local in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(!protected_mode_refuses(&config, &acl(None), local.parse().unwrap()), "{local}");
        }
        assert!(!protected_mode_refuses(&config, &acl(Some("secret")), remote));
        assert!(protected_mode_refuses(&config, &acl(Some("")), remote), "an empty password is none");
        config.protected_mode = crate::config::YesNo::No;
        assert!(!protected_mode_refuses(&config, &acl(None), remote));
    }

    #[tokio::test]
    async fn accepted_sockets_get_redis_keepalive_settings() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let socket = SockRef::from(&accepted);
        set_keepalive(&accepted, 0).unwrap();
        assert!(!socket.keepalive().unwrap(), "0 leaves keepalive off");
        set_keepalive(&accepted, 300).unwrap();
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(300));
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(100));
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        set_keepalive(&accepted, 2).unwrap();
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(1), "at least a second apart");
    }

    /// A connection's task is allocated whole, in the allocator's size class above it: its
    /// future, tokio's header and trailer beside it. Under 2 KiB, an idle connection (or one
    /// blocked in LOCK.WAIT) costs 2 KiB here; at 2.5 KiB (as before 2026-12-01) it cost 3 KiB.
    #[tokio::test]
    #[cfg_attr(debug_assertions, ignore = "future sizes mean something only as optimized")]
    async fn a_plaintext_connections_task_fits_under_2_kib() {
        let mut config = Config::default_for_tests();
        config.appendonly = crate::config::YesNo::No;
        let server = Server::bind(config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, addr) = listener.accept().await.unwrap();
        let shared = Arc::clone(&server.shared);
        let entry = shared.clients.register(addr, shared.local_addr);
        let socket = SharedTcp::new(accepted);
        let direct_writer = socket.direct_writer(&entry);
        let task = connection::serve(socket, shared, entry, Some(direct_writer));
        let bytes = std::mem::size_of_val(&task);
        // Room for tokio's header and trailer, and some for the code to grow.
        assert!(bytes <= 1664, "a connection's future takes {bytes} bytes");
        drop(task);
        server.run(std::future::ready(())).await.unwrap();
    }

    #[tokio::test]
    async fn port_0_without_tls_is_refused_at_start() {
        let mut config = Config::default_for_tests();
        config.ephemeral_port = false;
        config.port = 0;
        let error = Server::bind(config).await.err().expect("no listener at all must not start");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("--tls-port"), "{error}");
    }
}
