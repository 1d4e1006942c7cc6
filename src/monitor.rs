//! MONITOR: the connections that watch every request the server runs, and the line each request
//! becomes, in Redis's format (`1339518083.107412 [0 127.0.0.1:60866] "lock.try" "k" "owner"`).
//! With nobody monitoring, a request pays one atomic load for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::clients::ClientEntry;
use crate::config::OutputLimit;
use crate::core::ConnId;
use crate::reply::Reply;
use crate::text::Quoted;

/// What stands for an argument that must not be shown (a password), as Redis writes it.
const REDACTED: &[u8] = b"(redacted)";

pub(crate) struct Monitors {
    count: AtomicUsize,
    clients: Mutex<Vec<Arc<ClientEntry>>>,
    limit: OutputLimit,
}

impl Monitors {
    pub(crate) fn new(limit: OutputLimit) -> Monitors {
        Monitors { count: AtomicUsize::new(0), clients: Mutex::default(), limit }
    }

    /// Whether anyone monitors: asked for every request.
    pub(crate) fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn add(&self, monitor: &Arc<ClientEntry>) {
        let mut clients = self.clients.lock();
        clients.push(Arc::clone(monitor));
        self.count.store(clients.len(), Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, monitor: ConnId) {
        let mut clients = self.clients.lock();
        clients.retain(|entry| entry.id != monitor);
        self.count.store(clients.len(), Ordering::Relaxed);
    }

    /// Queues `line` for every monitor (each one's output limit applies to it alone).
    pub(crate) fn feed(&self, line: String) {
        let clients = self.clients.lock();
        for monitor in clients.iter() {
            monitor.outbox.push(Reply::Status(line.clone().into()), &self.limit);
        }
    }
}

/// A request as monitors see it: the wall-clock time, database 0 and the client's address, then
/// every argument quoted, those that `redacted` names replaced by `"(redacted)"`.
pub(crate) fn line(at: SystemTime, peer: SocketAddr, args: &[Bytes], redacted: impl Fn(usize) -> bool) -> String {
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut line = format!("{}.{:06} [0 {peer}]", since_epoch.as_secs(), since_epoch.subsec_micros());
    for (index, arg) in args.iter().enumerate() {
        let shown = if redacted(index) { REDACTED } else { arg };
        line.push(' ');
        line.push_str(&Quoted(shown).to_string());
    }
    line
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn args(list: &[&[u8]]) -> Vec<Bytes> {
        list.iter().map(|arg| Bytes::copy_from_slice(arg)).collect()
    }

    #[test]
    fn lines_look_like_redis_ones() {
        let at = UNIX_EPOCH + Duration::from_micros(1_339_518_083_107_412);
        let peer = "127.0.0.1:60866".parse().unwrap();
        assert_eq!(
            line(at, peer, &args(&[b"lock.try", b"k", b"owner"]), |_| false),
            r#"1339518083.107412 [0 127.0.0.1:60866] "lock.try" "k" "owner""#
        );
        let at = UNIX_EPOCH + Duration::from_micros(7_000_001);
        let peer = "[::1]:7".parse().unwrap();
        assert_eq!(
            line(at, peer, &args(&[b"AUTH", b"node", b"secret"]), |index| index > 0),
            r#"7.000001 [0 [::1]:7] "AUTH" "(redacted)" "(redacted)""#
        );
    }
}
