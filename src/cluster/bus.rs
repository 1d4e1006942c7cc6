//! The cluster bus: Raft's RPCs between nodes over TCP, one request and one response at a time
//! per connection, each a length-prefixed postcard frame.
//!
//! A node keeps one outgoing connection per peer (openraft drives each peer's replication from
//! one task, so requests to a peer never overlap) and serves each incoming connection in a task
//! of its own. A frame longer than [`MAX_FRAME_BYTES`] closes the connection: the bus must not be
//! a way to make a node allocate without bound.
//!
//! Before any frame, a connection is set up as [`BusSecurity`] says: TLS, and a handshake that
//! ties it to this cluster and, with a secret, authenticates both ends.

pub(crate) mod security;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::security::{BusSecurity, BusStream};
use super::raft::{Member, NodeId, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// Snapshots travel whole in one frame; the bound is far above any realistic state, far below
/// what would hurt a node.
const MAX_FRAME_BYTES: usize = 1 << 30;

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    Snapshot { vote: Vote, meta: SnapshotMeta, data: Vec<u8> },
    PreVote(VoteRequest<TypeConfig>),
}

/// What the serving node's Raft answered, or why it refused the request.
#[derive(Debug, Serialize, Deserialize)]
enum Response {
    Append(Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>),
    Vote(Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>),
    Snapshot(Result<SnapshotResponse<TypeConfig>, Fatal<TypeConfig>>),
}

pub(super) async fn write_frame<T: Serialize>(stream: &mut (impl AsyncWrite + Unpin), value: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(value).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
    let length = u32::try_from(body.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too long"))?;
    stream.write_all(&length.to_le_bytes()).await?;
    stream.write_all(&body).await?;
    // A TLS stream may hold the last record back until flushed.
    stream.flush().await
}

async fn read_frame<T: DeserializeOwned>(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<T> {
    let length = stream.read_u32_le().await? as usize;
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bus frame of {length} bytes")));
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Serves the bus on `listener` until `shutdown`, to peers that pass `security`.
pub(crate) async fn serve(listener: TcpListener, raft: Raft, security: Arc<BusSecurity>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "cluster bus: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let raft = raft.clone();
        let security = Arc::clone(&security);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let serving = async {
                let Some(stream) = security.accept(stream, peer).await else { return };
                if let Err(error) = serve_connection(stream, &raft).await {
                    debug!(%peer, %error, "cluster bus: connection closed");
                }
            };
            tokio::select! {
                () = serving => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn serve_connection(mut stream: BusStream, raft: &Raft) -> io::Result<()> {
    loop {
        let request: Request = read_frame(&mut stream).await?;
        let response = match request {
            Request::Append(rpc) => Response::Append(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
            Request::PreVote(rpc) => Response::Vote(raft.pre_vote(rpc).await),
            Request::Snapshot { vote, meta, data } => Response::Snapshot(
                raft.install_full_snapshot(vote, Snapshot { meta, snapshot: std::io::Cursor::new(data) }).await,
            ),
        };
        write_frame(&mut stream, &response).await?;
    }
}

/// Connects to peers as `security` says, at the bus address this node's own `--cluster-peers`
/// gives: each node says how it reaches the others (an address may be a NAT, a tunnel or, in
/// the partition tests, a proxy), so the membership's addresses, which are the forming node's
/// view, are only the fallback for a member this node was not told of.
#[derive(Clone)]
pub(crate) struct Bus {
    security: Arc<BusSecurity>,
    peers: Arc<BTreeMap<NodeId, SocketAddr>>,
}

impl Bus {
    pub(crate) fn new(security: Arc<BusSecurity>, peers: BTreeMap<NodeId, SocketAddr>) -> Bus {
        Bus { security, peers: Arc::new(peers) }
    }
}

impl RaftNetworkFactory<TypeConfig> for Bus {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        let addr = self.peers.get(&target).copied().unwrap_or(node.bus).to_string();
        Peer { target, addr, security: Arc::clone(&self.security), stream: None }
    }
}

/// One peer, as the replication task towards it sees it.
pub(crate) struct Peer {
    target: NodeId,
    addr: String,
    security: Arc<BusSecurity>,
    stream: Option<BusStream>,
}

impl Peer {
    async fn call(&mut self, request: Request, ttl: Duration) -> Result<Response, RPCError<TypeConfig>> {
        let exchange = async {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let addr: SocketAddr = self.addr.parse().map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidInput, format!("bad bus address {}", self.addr))
                    })?;
                    let stream = self.security.connect(self.target, addr).await?;
                    self.stream.insert(stream)
                }
            };
            write_frame(stream, &request).await?;
            read_frame::<Response>(stream).await
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                self.stream = None;
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            Err(elapsed) => {
                self.stream = None;
                Err(RPCError::Network(NetworkError::new(&elapsed)))
            }
        }
    }
}

impl Peer {
    /// A vote or a pre-vote: both are answered with a vote.
    async fn ask_vote(
        &mut self,
        request: Request,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(request, option.hard_ttl()).await? {
            Response::Vote(answer) => answer.map_err(|error| self.remote(error)),
            other => Err(unexpected(&other)),
        }
    }

    /// The peer's Raft refused: it has stopped (the only refusal these RPCs have), which to this
    /// node is as if the peer could not be reached.
    fn remote(&self, error: RaftError<TypeConfig>) -> RPCError<TypeConfig> {
        match error {
            RaftError::APIError(never) => match never {},
            RaftError::Fatal(fatal) => RPCError::Unreachable(Unreachable::new(&fatal)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Append(rpc), option.hard_ttl()).await? {
            Response::Append(answer) => answer.map_err(|error| self.remote(error)),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(Request::Vote(rpc), option).await
    }

    /// Asked before a candidate raises its term, so that a node that was cut off does not depose
    /// a leader the others still follow when it comes back.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(Request::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = Request::Snapshot { vote, meta: snapshot.meta, data: snapshot.snapshot.into_inner() };
        tokio::select! {
            response = self.call(request, option.hard_ttl()) => match response {
                Ok(Response::Snapshot(Ok(response))) => Ok(response),
                // The peer's Raft stopped: to this node, as if it could not be reached.
                Ok(Response::Snapshot(Err(fatal))) => Err(StreamingError::Unreachable(Unreachable::new(&fatal))),
                Ok(other) => Err(StreamingError::from(unexpected(&other))),
                Err(RPCError::Unreachable(error)) => Err(StreamingError::Unreachable(error)),
                Err(error) => Err(StreamingError::Network(NetworkError::new(&error))),
            },
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

fn unexpected(response: &Response) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected bus response {response:?}"),
    )))
}
