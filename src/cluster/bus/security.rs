//! Who may talk on the cluster bus. A connection carries Raft messages only after it is set up:
//! TLS first when it is on (`--tls-cluster`: both ends verified against `--tls-ca-cert-file`),
//! then a handshake in which each end names its cluster and itself, and, when a secret is
//! configured (`--cluster-secret`, else `--requirepass`), proves that it knows the secret.
//!
//! The handshake, in fixed-size messages:
//!
//! 1. the dialer sends its hello: the cluster id (see `cluster::identity`), whether it has a
//!    secret, its node id, the node id it means to reach, and a fresh random nonce;
//! 2. the acceptor checks it (same cluster, same use of a secret, addressed to this node, from
//!    a member) and answers with its own hello, naming the dialer, which checks that it reached
//!    the node it meant to;
//! 3. with a secret, the dialer sends an HMAC-SHA256, keyed by the secret, of its role and both
//!    hellos; the acceptor verifies it in constant time and only then sends its own, made with
//!    the other role, which the dialer verifies.
//!
//! Both nonces make a proof good for one connection only (no replay); the role makes an
//! acceptor's proof useless as a dialer's (no reflection); the node ids make a dialer's hello
//! relayed back to its sender useless (a node refuses a hello that claims to come from itself).
//! The members are the Raft membership's, once this node knows it: a member added later is
//! admitted, and one removed (`CLUSTER FORGET`) is turned away, even with the secret.
//! Whoever fails a check is disconnected at once, before it can send a Raft message, and the
//! refusal is logged (rate-limited) with the peer's address.
//!
//! Without TLS, the secret authenticates the ends of a connection but not the bytes that follow:
//! an attacker able to alter traffic in flight can still inject messages; TLS is the answer there.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::warn;

use super::super::raft::NodeId;
use crate::config::{ClusterId, Config};
use crate::logging::LineThrottle;
use crate::tls;

/// A bus connection once set up, over TLS or plain TCP: the framing code reads and writes it
/// without knowing which.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

pub(crate) type BusStream = Box<dyn Stream>;

const MAGIC: &[u8; 8] = b"batonbus";
const VERSION: u8 = 1;
const CLUSTER_ID_BYTES: usize = 32;
const NONCE_BYTES: usize = 32;
const HELLO_BYTES: usize = MAGIC.len() + 1 + 1 + CLUSTER_ID_BYTES + 8 + 8 + NONCE_BYTES;
const PROOF_BYTES: usize = 32;
/// Keeps these proofs apart from any other use of the same secret.
const PROOF_CONTEXT: &[u8] = b"baton cluster bus proof v1";

/// How long an incoming connection has to complete TLS and the handshake: a peer that connects
/// and says nothing must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one log line about refused connections per this interval, however fast they come.
const REFUSAL_LINE_INTERVAL: Duration = Duration::from_secs(10);

/// How this node sets up its bus connections, both ways; built once from the configuration.
pub(crate) struct BusSecurity {
    node: NodeId,
    /// Who may open a connection to this node.
    members: RwLock<Vec<NodeId>>,
    cluster: [u8; CLUSTER_ID_BYTES],
    secret: Option<hmac::Key>,
    tls: Option<Tls>,
    random: SystemRandom,
    refused: AtomicU64,
    refusal_line: Mutex<LineThrottle>,
}

struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl BusSecurity {
    /// The bus security of the cluster node `config` describes (it needs `--cluster-node-id`
    /// and `--cluster-peers`), a member of cluster `cluster`. Errs on a TLS set-up that cannot
    /// work; warns when the bus is open to anyone while some peer is beyond loopback.
    pub(crate) fn from_config(config: &Config, cluster: ClusterId) -> Result<BusSecurity, String> {
        let (Some(node), Some(peers)) = (config.cluster_node_id, &config.cluster_peers) else {
            return Err("the cluster bus needs --cluster-node-id and --cluster-peers".to_owned());
        };
        let secret = config.cluster_secret.as_deref().or(config.requirepass.as_deref().filter(|pass| !pass.is_empty()));
        let tls = Tls::from_config(config)?;
        if secret.is_none() && tls.is_none() && peers.0.iter().any(|peer| !peer.client_addr.ip().is_loopback()) {
            warn!(
                "cluster bus: unauthenticated (no --cluster-secret, --requirepass or --tls-cluster): anyone who can \
                 reach a bus port can rewrite the locks"
            );
        }
        Ok(BusSecurity {
            node,
            members: RwLock::new(peers.0.iter().map(|peer| peer.id).collect()),
            cluster: cluster.0,
            secret: secret.map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())),
            tls,
            random: SystemRandom::new(),
            refused: AtomicU64::new(0),
            refusal_line: Mutex::new(LineThrottle::default()),
        })
    }

    /// Sets up a connection `peer` opened to this node's bus; None if it was refused or broke
    /// off (logged).
    pub(crate) async fn accept(&self, tcp: TcpStream, peer: SocketAddr) -> Option<BusStream> {
        let setup = async {
            tcp.set_nodelay(true)?;
            let mut stream: BusStream = match &self.tls {
                None => Box::new(tcp),
                Some(tls) => Box::new(tls.acceptor.accept(tcp).await.map_err(Failure::tls)?),
            };
            self.accept_handshake(&mut stream).await?;
            Ok::<_, Failure>(stream)
        };
        let failure = match tokio::time::timeout(HANDSHAKE_TIMEOUT, setup).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(failure)) => failure,
            Err(_) => Failure::Refused(Refusal::Silent),
        };
        // Only a cluster member has business on this port, and it never breaks off a handshake
        // it started: whatever failed here is worth a line.
        self.refuse(peer, &failure);
        None
    }

    /// Opens a connection to node `target`'s bus at `addr`. A peer that fails this node's checks
    /// is logged as refused; either way the error says why.
    pub(crate) async fn connect(&self, target: NodeId, addr: SocketAddr) -> io::Result<BusStream> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let setup = async {
            let mut stream: BusStream = match &self.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let name = ServerName::IpAddress(addr.ip().into());
                    Box::new(tls.connector.connect(name, tcp).await.map_err(Failure::tls)?)
                }
            };
            self.dial_handshake(&mut stream, target).await?;
            Ok::<_, Failure>(stream)
        };
        setup.await.map_err(|failure| {
            if matches!(failure, Failure::Refused(_)) {
                self.refuse(addr, &failure);
            }
            failure.into_io()
        })
    }

    /// From now on only `members` may connect to this node: the Raft membership, once known,
    /// replaces the `--cluster-peers` it started with.
    pub(crate) fn admit_only(&self, members: Vec<NodeId>) {
        *self.members.write() = members;
    }

    /// Connections refused so far, both ways.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self, peer: SocketAddr, failure: &Failure) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(refused) = self.refusal_line.lock().count(Instant::now(), REFUSAL_LINE_INTERVAL) {
            warn!(refused, last_peer = %peer, last_reason = %failure, "cluster bus: refused connections");
        }
    }

    fn hello(&self, to: NodeId) -> Result<Hello, Failure> {
        let mut nonce = [0; NONCE_BYTES];
        self.random.fill(&mut nonce).map_err(|_| Failure::Io(io::Error::other("no random nonce to be had")))?;
        Ok(Hello { cluster: self.cluster, authenticated: self.secret.is_some(), from: self.node, to, nonce })
    }

    /// Whether `hello` may come from a member of this cluster talking to this node; when this
    /// node dialed, `dialed` is the node it meant to reach (one that Raft wants to talk to,
    /// perhaps a member just added, which this node's list may not show yet).
    fn check(&self, hello: &Hello, dialed: Option<NodeId>) -> Result<(), Refusal> {
        if hello.cluster != self.cluster {
            return Err(Refusal::OtherCluster);
        }
        if hello.authenticated != self.secret.is_some() {
            return Err(Refusal::SecretMismatch { peer_has_one: hello.authenticated });
        }
        let expected = dialed.is_none_or(|dialed| dialed == hello.from);
        if !expected || hello.to != self.node || hello.from == self.node {
            return Err(Refusal::WrongNodes { from: hello.from, to: hello.to });
        }
        if dialed.is_none() && !self.members.read().contains(&hello.from) {
            return Err(Refusal::NotMember(hello.from));
        }
        Ok(())
    }

    async fn dial_handshake(&self, stream: &mut impl Stream, target: NodeId) -> Result<(), Failure> {
        let ours = self.hello(target)?.encode();
        send(stream, &ours).await?;
        let theirs = receive::<HELLO_BYTES>(stream).await?;
        self.check(&Hello::decode(&theirs)?, Some(target))?;
        if let Some(key) = &self.secret {
            send(stream, proof(key, Role::Dialer, &ours, &theirs).as_ref()).await?;
            let their_proof = receive::<PROOF_BYTES>(stream).await?;
            verify(key, Role::Acceptor, &ours, &theirs, &their_proof)?;
        }
        Ok(())
    }

    async fn accept_handshake(&self, stream: &mut impl Stream) -> Result<(), Failure> {
        let theirs = receive::<HELLO_BYTES>(stream).await?;
        let hello = Hello::decode(&theirs)?;
        self.check(&hello, None)?;
        let ours = self.hello(hello.from)?.encode();
        send(stream, &ours).await?;
        if let Some(key) = &self.secret {
            // The dialer proves itself first: whoever cannot gets no proof of ours to study.
            let their_proof = receive::<PROOF_BYTES>(stream).await?;
            verify(key, Role::Dialer, &theirs, &ours, &their_proof)?;
            send(stream, proof(key, Role::Acceptor, &theirs, &ours).as_ref()).await?;
        }
        Ok(())
    }
}

impl Tls {
    /// TLS for the bus when `--tls-cluster` (by default: whenever the server has a certificate
    /// and key) asks for it; it needs the CA to verify peers against, which a client listener
    /// can do without.
    fn from_config(config: &Config) -> Result<Option<Tls>, String> {
        let files = (&config.tls_cert_file, &config.tls_key_file);
        let has_files = matches!(files, (Some(_), Some(_)));
        if !config.tls_cluster.map_or(has_files, |tls_cluster| tls_cluster.enabled()) {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = files else {
            return Err("--tls-cluster yes needs --tls-cert-file and --tls-key-file".to_owned());
        };
        let Some(ca_file) = &config.tls_ca_cert_file else {
            return Err("TLS on the cluster bus needs --tls-ca-cert-file, the CA that the nodes' certificates are \
                        verified against (or --tls-cluster no)"
                .to_owned());
        };
        Ok(Some(Tls {
            acceptor: TlsAcceptor::from(Arc::new(tls::server_config(cert_file, key_file, Some(ca_file))?)),
            connector: TlsConnector::from(Arc::new(tls::client_config(cert_file, key_file, ca_file)?)),
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hello {
    cluster: [u8; CLUSTER_ID_BYTES],
    authenticated: bool,
    from: NodeId,
    to: NodeId,
    nonce: [u8; NONCE_BYTES],
}

impl Hello {
    fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0; HELLO_BYTES];
        let fields: [&[u8]; 7] = [
            MAGIC,
            &[VERSION],
            &[u8::from(self.authenticated)],
            &self.cluster,
            &self.from.to_le_bytes(),
            &self.to.to_le_bytes(),
            &self.nonce,
        ];
        let mut at = 0;
        for field in fields {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        bytes
    }

    fn decode(bytes: &[u8; HELLO_BYTES]) -> Result<Hello, Refusal> {
        let (magic, rest) = bytes.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(Refusal::NotBus);
        }
        let (&[version, authenticated], rest) = rest.split_first_chunk::<2>().ok_or(Refusal::NotBus)?;
        if version != VERSION {
            return Err(Refusal::Version(version));
        }
        let (cluster, rest) = rest.split_first_chunk::<CLUSTER_ID_BYTES>().ok_or(Refusal::NotBus)?;
        let (from, rest) = rest.split_first_chunk::<8>().ok_or(Refusal::NotBus)?;
        let (to, nonce) = rest.split_first_chunk::<8>().ok_or(Refusal::NotBus)?;
        Ok(Hello {
            cluster: *cluster,
            authenticated: match authenticated {
                0 => false,
                1 => true,
                _ => return Err(Refusal::NotBus),
            },
            from: NodeId::from_le_bytes(*from),
            to: NodeId::from_le_bytes(*to),
            nonce: nonce.try_into().map_err(|_| Refusal::NotBus)?,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Dialer,
    Acceptor,
}

/// What `role` signs: the role and both hellos as sent, so that the proof binds this connection's
/// nonces, the cluster and both node ids.
fn signed(role: Role, dialer_hello: &[u8], acceptor_hello: &[u8]) -> Vec<u8> {
    let role = match role {
        Role::Dialer => b'D',
        Role::Acceptor => b'A',
    };
    [PROOF_CONTEXT, &[role], dialer_hello, acceptor_hello].concat()
}

fn proof(key: &hmac::Key, role: Role, dialer_hello: &[u8], acceptor_hello: &[u8]) -> hmac::Tag {
    hmac::sign(key, &signed(role, dialer_hello, acceptor_hello))
}

/// Checks in constant time that `proof` is `role`'s.
fn verify(
    key: &hmac::Key,
    role: Role,
    dialer_hello: &[u8],
    acceptor_hello: &[u8],
    proof: &[u8],
) -> Result<(), Refusal> {
    hmac::verify(key, &signed(role, dialer_hello, acceptor_hello), proof).map_err(|_| Refusal::BadProof)
}

async fn send(stream: &mut impl Stream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn receive<const N: usize>(stream: &mut impl Stream) -> io::Result<[u8; N]> {
    let mut bytes = [0; N];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

/// Why this node turned a peer away.
#[derive(Debug)]
enum Refusal {
    NotBus,
    Version(u8),
    OtherCluster,
    SecretMismatch { peer_has_one: bool },
    WrongNodes { from: NodeId, to: NodeId },
    NotMember(NodeId),
    BadProof,
    Certificate(rustls::Error),
    Silent,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotBus => f.write_str("it did not open with a cluster bus handshake"),
            Refusal::Version(version) => write!(f, "it speaks cluster bus version {version}, this node {VERSION}"),
            Refusal::OtherCluster => {
                f.write_str("it belongs to another cluster (its cluster id differs: --cluster-peers, --cluster-join)")
            }
            Refusal::SecretMismatch { peer_has_one: true } => {
                f.write_str("it has a cluster secret and this node none (--cluster-secret, --requirepass)")
            }
            Refusal::SecretMismatch { peer_has_one: false } => {
                f.write_str("it has no cluster secret and this node one (--cluster-secret, --requirepass)")
            }
            Refusal::WrongNodes { from, to } => write!(f, "it says it is node {from} calling node {to}"),
            Refusal::NotMember(from) => write!(f, "node {from} is not a member (never added, or forgotten)"),
            Refusal::BadProof => f.write_str("it does not know the cluster secret (--cluster-secret, --requirepass)"),
            Refusal::Certificate(error) => write!(f, "its TLS certificate: {error}"),
            Refusal::Silent => write!(f, "no handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
        }
    }
}

/// Why a connection could not be set up: this node refused the peer, or the connection failed
/// (which includes the peer refusing this node: it just hangs up).
#[derive(Debug)]
enum Failure {
    Refused(Refusal),
    Io(io::Error),
}

impl Failure {
    /// A TLS set-up that failed over the peer's certificate is a refusal; anything else, the
    /// connection failing.
    fn tls(error: io::Error) -> Failure {
        match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(error @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)) => {
                Failure::Refused(Refusal::Certificate(error.clone()))
            }
            _ => Failure::Io(error),
        }
    }

    fn into_io(self) -> io::Error {
        match self {
            Failure::Io(error) => error,
            Failure::Refused(refusal) => io::Error::new(io::ErrorKind::PermissionDenied, refusal.to_string()),
        }
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Failure {
        Failure::Refused(refusal)
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        Failure::Io(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(refusal) => refusal.fmt(f),
            Failure::Io(error) => write!(f, "the connection failed during set-up: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::identity::formed_by;
    use crate::config::Peers;

    const PEERS: [(NodeId, u16); 3] = [(1, 7001), (2, 7002), (3, 7003)];

    /// Members on loopback, by node id and bus port, in the order given.
    fn peers(members: &[(NodeId, u16)]) -> Peers {
        Peers(
            members
                .iter()
                .map(|&(id, port)| crate::config::PeerEntry {
                    id,
                    client_addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    bus_port: None,
                })
                .collect(),
        )
    }

    fn config(node: NodeId, members: &[(NodeId, u16)]) -> Config {
        let mut config = Config::default_for_tests();
        config.cluster_node_id = Some(node);
        config.cluster_peers = Some(peers(members));
        config
    }

    /// Node `node` of the cluster `PEERS` formed, started with `members` as its peers.
    fn security_of(node: NodeId, members: &[(NodeId, u16)]) -> BusSecurity {
        BusSecurity::from_config(&config(node, members), formed_by(&peers(&PEERS))).unwrap()
    }

    fn security(node: NodeId, secret: Option<&str>) -> BusSecurity {
        let mut config = config(node, &PEERS);
        config.cluster_secret = secret.map(str::to_owned);
        BusSecurity::from_config(&config, formed_by(&peers(&PEERS))).unwrap()
    }

    /// Runs `dialer`'s handshake towards node `target` against `acceptor`'s; each end hangs up
    /// as soon as its side is over, as a real one does.
    async fn handshake(
        dialer: &BusSecurity,
        target: NodeId,
        acceptor: &BusSecurity,
    ) -> (Result<(), Failure>, Result<(), Failure>) {
        let (dialer_end, acceptor_end) = tokio::io::duplex(1024);
        tokio::join!(
            async move {
                let mut stream = dialer_end;
                dialer.dial_handshake(&mut stream, target).await
            },
            async move {
                let mut stream = acceptor_end;
                acceptor.accept_handshake(&mut stream).await
            },
        )
    }

    fn eof(result: &Result<(), Failure>) -> bool {
        matches!(result, Err(Failure::Io(error)) if error.kind() == io::ErrorKind::UnexpectedEof)
    }

    #[tokio::test]
    async fn members_with_the_same_secret_pass() {
        let (dialer, acceptor) = handshake(&security(1, Some("s3cret")), 2, &security(2, Some("s3cret"))).await;
        assert!(dialer.is_ok() && acceptor.is_ok(), "{dialer:?} {acceptor:?}");
    }

    #[tokio::test]
    async fn members_without_a_secret_pass() {
        let (dialer, acceptor) = handshake(&security(1, None), 2, &security(2, None)).await;
        assert!(dialer.is_ok() && acceptor.is_ok(), "{dialer:?} {acceptor:?}");
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_before_the_acceptor_proves_anything() {
        let (dialer, acceptor) = handshake(&security(1, Some("guess")), 2, &security(2, Some("s3cret"))).await;
        assert!(matches!(acceptor, Err(Failure::Refused(Refusal::BadProof))), "{acceptor:?}");
        assert!(eof(&dialer), "the dialer got no proof to study: {dialer:?}");

        let (dialer, acceptor) = handshake(&security(1, Some("s3cret")), 2, &security(2, Some("guess"))).await;
        assert!(matches!(acceptor, Err(Failure::Refused(Refusal::BadProof))), "{acceptor:?}");
        assert!(eof(&dialer), "{dialer:?}");
    }

    #[tokio::test]
    async fn a_secret_on_one_side_only_is_refused() {
        let (_, acceptor) = handshake(&security(1, None), 2, &security(2, Some("s3cret"))).await;
        assert!(matches!(acceptor, Err(Failure::Refused(Refusal::SecretMismatch { peer_has_one: false }))));
        let (_, acceptor) = handshake(&security(1, Some("s3cret")), 2, &security(2, None)).await;
        assert!(matches!(acceptor, Err(Failure::Refused(Refusal::SecretMismatch { peer_has_one: true }))));
    }

    #[tokio::test]
    async fn another_cluster_is_refused_even_with_the_same_secret() {
        let mut other = config(2, &[(1, 7001), (2, 7002), (3, 7004)]);
        other.cluster_secret = Some("s3cret".into());
        let other = BusSecurity::from_config(&other, formed_by(other.cluster_peers.as_ref().unwrap())).unwrap();
        let (_, acceptor) = handshake(&security(1, Some("s3cret")), 2, &other).await;
        assert!(matches!(acceptor, Err(Failure::Refused(Refusal::OtherCluster))), "{acceptor:?}");
    }

    #[tokio::test]
    async fn a_connection_reaching_another_node_than_meant_is_refused() {
        // Node 1 dials node 2, but the connection reaches node 3 (or node 1 itself, through an
        // attacker relaying its hello back to it).
        for acceptor in [security(3, Some("s3cret")), security(1, Some("s3cret"))] {
            let (_, refusal) = handshake(&security(1, Some("s3cret")), 2, &acceptor).await;
            assert!(matches!(refusal, Err(Failure::Refused(Refusal::WrongNodes { from: 1, to: 2 }))), "{refusal:?}");
        }
        // Node 3 answers a call meant for node 2 as if it were node 2: the dialer refuses it.
        let impostor = security(3, Some("s3cret"));
        let hello = Hello { to: 1, ..impostor.hello(1).unwrap() };
        assert!(matches!(
            security(1, Some("s3cret")).check(&hello, Some(2)),
            Err(Refusal::WrongNodes { from: 3, to: 1 })
        ));
    }

    #[tokio::test]
    async fn only_members_may_call_and_the_membership_decides_who_they_are() {
        let node_4 = || security_of(4, &[(1, 7001), (2, 7002), (3, 7003), (4, 7004)]);
        let (_, acceptor) = handshake(&node_4(), 2, &security(2, None)).await;
        assert!(matches!(acceptor, Err(Failure::Refused(Refusal::NotMember(4)))), "{acceptor:?}");
        // Node 2 dials a member just added that its own list lacks: it is the node meant.
        let (dialer, acceptor) = handshake(&security(2, None), 4, &node_4()).await;
        assert!(dialer.is_ok() && acceptor.is_ok(), "{dialer:?} {acceptor:?}");

        let node_2 = security(2, None);
        node_2.admit_only(vec![1, 2, 3, 4]);
        let (dialer, acceptor) = handshake(&node_4(), 2, &node_2).await;
        assert!(dialer.is_ok() && acceptor.is_ok(), "added: {dialer:?} {acceptor:?}");
        node_2.admit_only(vec![1, 2, 4]);
        let (_, acceptor) = handshake(&security(3, None), 2, &node_2).await;
        assert!(matches!(acceptor, Err(Failure::Refused(Refusal::NotMember(3)))), "forgotten: {acceptor:?}");
    }

    #[test]
    fn a_proof_is_good_for_one_role_and_one_connection() {
        let node = security(1, Some("s3cret"));
        let key = node.secret.as_ref().unwrap();
        let dialer_hello = node.hello(2).unwrap().encode();
        let acceptor_hello = security(2, Some("s3cret")).hello(1).unwrap().encode();
        let acceptors_proof = proof(key, Role::Acceptor, &dialer_hello, &acceptor_hello);
        assert!(verify(key, Role::Acceptor, &dialer_hello, &acceptor_hello, acceptors_proof.as_ref()).is_ok());
        assert!(
            verify(key, Role::Dialer, &dialer_hello, &acceptor_hello, acceptors_proof.as_ref()).is_err(),
            "reflected, an acceptor's proof is no dialer's"
        );
        let dialers_proof = proof(key, Role::Dialer, &dialer_hello, &acceptor_hello);
        let next_acceptor_hello = security(2, Some("s3cret")).hello(1).unwrap().encode();
        assert!(
            verify(key, Role::Dialer, &dialer_hello, &next_acceptor_hello, dialers_proof.as_ref()).is_err(),
            "replayed against a fresh nonce, a proof fails"
        );
    }

    #[test]
    fn hellos_read_back_and_anything_else_is_refused() {
        let hello = security(1, Some("s3cret")).hello(2).unwrap();
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        let mut bytes = hello.encode();
        bytes[MAGIC.len()] = VERSION + 1;
        assert!(matches!(Hello::decode(&bytes), Err(Refusal::Version(2))));
        bytes = hello.encode();
        bytes[MAGIC.len() + 1] = 2;
        assert!(matches!(Hello::decode(&bytes), Err(Refusal::NotBus)));
        let mut frame = [0u8; HELLO_BYTES];
        frame[..4].copy_from_slice(&86u32.to_le_bytes());
        assert!(matches!(Hello::decode(&frame), Err(Refusal::NotBus)), "a bare bus frame");
    }

    #[test]
    fn bus_tls_needs_the_ca_to_verify_peers_against() {
        let with = |adjust: &dyn Fn(&mut Config)| {
            let mut config = config(1, &PEERS);
            adjust(&mut config);
            BusSecurity::from_config(&config, ClusterId([0; 32])).map(|security| security.tls.is_some())
        };
        let files = |config: &mut Config| {
            config.tls_cert_file = Some("node.crt".into());
            config.tls_key_file = Some("node.key".into());
        };
        let error = with(&files).unwrap_err();
        assert!(error.contains("--tls-ca-cert-file"), "{error}");
        assert_eq!(
            with(&|config| {
                files(config);
                config.tls_cluster = Some(crate::config::YesNo::No);
            }),
            Ok(false)
        );
        let error = with(&|config| config.tls_cluster = Some(crate::config::YesNo::Yes)).unwrap_err();
        assert!(error.contains("--tls-cert-file"), "{error}");
        assert_eq!(with(&|_| ()), Ok(false), "no TLS configured: none on the bus");
        assert!(
            BusSecurity::from_config(&Config::default_for_tests(), ClusterId([0; 32])).is_err(),
            "not a cluster node"
        );
    }
}
