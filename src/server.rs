//! The listener: accepts connections, enforces `--maxclients`, runs the lease reaper, and stops
//! cleanly on shutdown (blocked waiters are answered with an error, then every connection closes).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::clients::ClientRegistry;
use crate::config::Config;
use crate::connection;
use crate::core::{Clock, CoreSettings, LockCore, token_seed};
use crate::errors;
use crate::metrics::{self, Metrics};

/// Server-wide counters for INFO.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub total_connections_received: AtomicU64,
    pub total_commands_processed: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub blocked_clients: AtomicU64,
}

/// What every connection task shares.
pub struct Shared {
    pub config: Config,
    pub core: LockCore,
    pub clock: Clock,
    pub clients: ClientRegistry,
    pub stats: ServerStats,
    pub shutdown: CancellationToken,
    pub started: Instant,
    pub local_addr: SocketAddr,
    pub metrics: Metrics,
}

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    pub async fn bind(config: Config) -> io::Result<Server> {
        let listener = TcpListener::bind((config.bind, config.port)).await?;
        let local_addr = listener.local_addr()?;
        let core = LockCore::new(
            CoreSettings {
                default_lease_ms: config.lease_ms,
                max_lease_ms: config.max_lease_ms,
                release_on_disconnect: config.release_on_disconnect.enabled(),
                shards: config.shard_count(),
            },
            token_seed(),
        );
        let shared = Arc::new(Shared {
            config,
            core,
            clock: Clock::new(),
            clients: ClientRegistry::default(),
            stats: ServerStats::default(),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            local_addr,
            metrics: Metrics::new(),
        });
        Ok(Server { listener, shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Cancelling this token stops the server as a signal would.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Serves until `signal` resolves or the shutdown token is cancelled.
    pub async fn run(self, signal: impl Future<Output = ()>) -> io::Result<()> {
        let Server { listener, shared } = self;
        info!(
            addr = %shared.local_addr,
            shards = shared.core.shard_count(),
            lease_ms = shared.config.lease_ms,
            release_on_disconnect = shared.core.settings().release_on_disconnect,
            "baton ready to accept connections"
        );
        let tasks = TaskTracker::new();
        tasks.spawn(reap_leases(Arc::clone(&shared)));
        tasks.spawn(metrics::sample_ops(Arc::clone(&shared)));
        if let Some(addr) = shared.config.metrics_addr {
            tasks.spawn(metrics::serve_prometheus(Arc::clone(&shared), addr));
        }
        tokio::pin!(signal);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, addr)) => accept(&shared, &tasks, socket, addr).await,
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(error) => {
                        warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut signal => break,
                () = shared.shutdown.cancelled() => break,
            }
        }
        info!("shutting down: answering blocked waiters and closing connections");
        drop(listener);
        shared.shutdown.cancel();
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.is_err() {
            warn!("some connections did not close within 5 s");
        }
        info!("bye");
        Ok(())
    }
}

async fn accept(shared: &Arc<Shared>, tasks: &TaskTracker, mut socket: TcpStream, addr: SocketAddr) {
    shared.stats.total_connections_received.fetch_add(1, Ordering::Relaxed);
    if shared.clients.len() >= shared.config.maxclients {
        shared.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
        warn!(%addr, maxclients = shared.config.maxclients, "connection refused: max number of clients reached");
        // Best effort, like Redis: the client may already be gone.
        let reply = format!("-{}\r\n", errors::MAX_CLIENTS);
        let _ = tokio::time::timeout(Duration::from_millis(100), socket.write_all(reply.as_bytes())).await;
        return;
    }
    let _ = socket.set_nodelay(true);
    let entry = shared.clients.register(addr, shared.local_addr);
    tasks.spawn(connection::serve(socket, Arc::clone(shared), entry));
}

/// One task for every lease in the server: sleeps until the earliest deadline (or until told a
/// sooner one exists) and lets the core expire what is due.
async fn reap_leases(shared: Arc<Shared>) {
    loop {
        let now = shared.clock.now_ms();
        let next = shared.core.expire(now);
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

/// A server on its own runtime task, for tests and embedding.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<io::Result<()>>,
}

impl RunningServer {
    pub async fn start(config: Config) -> io::Result<RunningServer> {
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        let shutdown = server.shutdown_token();
        let handle = tokio::spawn(server.run(std::future::pending()));
        Ok(RunningServer { addr, shutdown, handle })
    }

    /// Stops the server and waits until it has closed every connection.
    pub async fn stop(self) -> io::Result<()> {
        self.shutdown.cancel();
        self.handle.await.map_err(io::Error::other)?
    }
}
