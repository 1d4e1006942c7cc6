//! What happened to a lock, collected under the shard lock and, once it is released, logged and
//! handed to the observer (the lock-event notifications), so that no shard lock is ever held
//! across a write to the log or a message to a subscriber.

use std::sync::Arc;

use tracing::{debug, info};

use crate::text::Escaped;

/// Why a holding ended other than by SUCCESS. Each cause is spelled here once: its name in the
/// log and the `last_failure` text LOCK.INFO reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseCause {
    /// LOCK.UNLOCK FAILURE, with the holder's REASON when it gave one.
    Failure(Option<Arc<[u8]>>),
    LeaseExpired,
    HolderDisconnected,
    /// The grant was sent to a blocked WAIT whose connection closed before the client read it.
    GrantUndelivered,
}

impl ReleaseCause {
    fn name(&self) -> &'static str {
        match self {
            ReleaseCause::Failure(_) => "failure",
            ReleaseCause::LeaseExpired => "lease-expired",
            ReleaseCause::HolderDisconnected => "holder-disconnected",
            ReleaseCause::GrantUndelivered => "grant-undelivered",
        }
    }

    pub(crate) fn reason(&self) -> Arc<[u8]> {
        let text: &[u8] = match self {
            ReleaseCause::Failure(Some(reason)) => return Arc::clone(reason),
            ReleaseCause::Failure(None) => b"FAILURE reported by the holder",
            ReleaseCause::LeaseExpired => b"lease expired",
            ReleaseCause::HolderDisconnected => b"holder connection closed",
            ReleaseCause::GrantUndelivered => b"waiter connection closed before the grant reached it",
        };
        Arc::from(text)
    }
}

#[derive(Debug)]
pub(crate) enum LockEvent {
    Granted {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        token: u64,
        handoff: bool,
    },
    Succeeded {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        token: u64,
        waiters_told: usize,
        keep_ms: Option<u64>,
    },
    /// A holding ended other than by SUCCESS; `next` is who the lock was handed to, if anyone.
    Released {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        token: u64,
        cause: ReleaseCause,
        next: Option<(Arc<[u8]>, u64)>,
    },
    /// LOCK.CANCEL took the owner out of the line.
    Cancelled {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
    },
}

/// The events an observer is told of, one for each [`LockEvent`]; their names are the payloads
/// of the `__lock__:<key>` notifications (docs/commands.md says when each fires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notification {
    /// A free lock was granted to a LOCK.TRY or LOCK.WAIT.
    Granted,
    /// The lock passed to the head of its line (after a release, an expiry, or a pause of grants).
    Handoff,
    /// The holding ended other than by SUCCESS or expiry: FAILURE, or the holder's connection
    /// closed (with release-on-disconnect), or its grant never reached it.
    Released,
    /// LOCK.UNLOCK SUCCESS: the waiters were told DONE.
    Done,
    /// The holder's lease ran out.
    Expired,
    /// LOCK.CANCEL took an owner out of the line.
    Cancelled,
}

impl Notification {
    pub fn as_str(self) -> &'static str {
        match self {
            Notification::Granted => "granted",
            Notification::Handoff => "handoff",
            Notification::Released => "released",
            Notification::Done => "done",
            Notification::Expired => "expired",
            Notification::Cancelled => "cancelled",
        }
    }
}

impl LockEvent {
    /// The key the event happened to and what observers are told of it.
    pub(crate) fn notification(&self) -> (&Arc<[u8]>, Notification) {
        match self {
            LockEvent::Granted { key, handoff: false, .. } => (key, Notification::Granted),
            LockEvent::Granted { key, handoff: true, .. } => (key, Notification::Handoff),
            LockEvent::Succeeded { key, .. } => (key, Notification::Done),
            LockEvent::Released { key, cause: ReleaseCause::LeaseExpired, .. } => (key, Notification::Expired),
            LockEvent::Released { key, .. } => (key, Notification::Released),
            LockEvent::Cancelled { key, .. } => (key, Notification::Cancelled),
        }
    }
}

/// Who is told of every lock event besides the log (the server's pub/sub hub). It sits above the
/// core, which knows it only through this trait.
pub(crate) trait LockObserver: Send + Sync {
    /// Whether anyone listens now. Asked before every operation on the core, so it must cost no
    /// more than an atomic load: while it says no, grants and successes collect no events.
    fn listening(&self) -> bool;

    /// One operation's events, in the order they happened, after its shard lock was released.
    /// The events of one shard are observed in the order the operations ran.
    fn observe(&self, events: &[LockEvent]);
}

/// Keys, owners and reasons are binary and client-chosen: escaped, a newline in one cannot forge
/// a log line, and cut short, a 64 KiB REASON does not become 64 KiB of log.
fn text(bytes: &[u8]) -> Escaped<'_> {
    Escaped::log(bytes)
}

/// Up to this many failed releases in one batch (one command, one pass of the lease reaper, one
/// slice of a closing connection's locks) are logged a line each at INFO. A larger batch (a mass
/// expiry, a connection closing with its locks) is told in one INFO line per cause, with an
/// example, and its single lines go to DEBUG: writing a line per lease cost a mass expiry more
/// than the expiry itself (300,000 leases: 1.78 s with the lines, 0.66 s without).
const RELEASES_LOGGED_ONE_BY_ONE: usize = 4;

/// One line per event with the event's fields at `$level` (a `tracing` level macro).
macro_rules! release_line {
    ($level:ident, $key:expr, $owner:expr, $token:expr, $cause:expr, $next:expr) => {{
        let (next_owner, next_token) = match $next {
            Some((owner, token)) => (text(owner), Some(*token)),
            None => (text(b""), None),
        };
        $level!(
            key = %text($key),
            owner = %text($owner),
            token = $token,
            cause = $cause.name(),
            reason = %text(&$cause.reason()),
            next_owner = %next_owner,
            next_token = ?next_token,
            "lock released as failed"
        );
    }};
}

/// How many releases of a batch had one cause, and the first of them as an example.
struct CauseSummary {
    cause: &'static str,
    count: usize,
    key: Arc<[u8]>,
    owner: Arc<[u8]>,
}

pub(crate) fn emit(events: Vec<LockEvent>) {
    let releases = events.iter().filter(|event| matches!(event, LockEvent::Released { .. })).count();
    let summed_up = releases > RELEASES_LOGGED_ONE_BY_ONE;
    // Four causes: a list beats a map.
    let mut summary: Vec<CauseSummary> = Vec::new();
    for event in events {
        match event {
            LockEvent::Granted { key, owner, token, handoff } => {
                debug!(key = %text(&key), owner = %text(&owner), token, handoff, "lock granted");
            }
            LockEvent::Succeeded { key, owner, token, waiters_told, keep_ms } => {
                let keep_ms = keep_ms.unwrap_or(0);
                debug!(key = %text(&key), owner = %text(&owner), token, waiters_told, keep_ms, "work succeeded");
            }
            LockEvent::Released { key, owner, token, cause, next } if summed_up => {
                release_line!(debug, &key, &owner, token, cause, &next);
                match summary.iter_mut().find(|summary| summary.cause == cause.name()) {
                    Some(summary) => summary.count += 1,
                    None => summary.push(CauseSummary { cause: cause.name(), count: 1, key, owner }),
                }
            }
            LockEvent::Released { key, owner, token, cause, next } => {
                release_line!(info, &key, &owner, token, cause, &next);
            }
            LockEvent::Cancelled { key, owner } => {
                debug!(key = %text(&key), owner = %text(&owner), "owner left the line (LOCK.CANCEL)");
            }
        }
    }
    for CauseSummary { cause, count, key, owner } in summary {
        info!(count, cause, example_key = %text(&key), example_owner = %text(&owner), "locks released as failed");
    }
}

/// What `run` logs at `level` or above on this thread, as text (or JSON) lines.
#[cfg(test)]
pub(crate) fn captured_logs(json: bool, level: tracing::Level, run: impl FnOnce()) -> String {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let captured = Captured::default();
    let writer = captured.clone();
    let logs = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).with_max_level(level);
    if json {
        tracing::subscriber::with_default(logs.json().finish(), run);
    } else {
        tracing::subscriber::with_default(logs.finish(), run);
    }
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn logged(json: bool, level: tracing::Level, events: Vec<LockEvent>) -> String {
        captured_logs(json, level, || emit(events))
    }

    /// A failure whose key forges a line break, whose owner is long and whose REASON is the
    /// largest a client may send.
    fn hostile_failure() -> LockEvent {
        let reason = [&b"line one\nINFO forged "[..], &[b'r'; 64 * 1024]].concat();
        LockEvent::Released {
            key: Arc::from(&b"k\r\n2026-11-28 INFO forged"[..]),
            owner: Arc::from(vec![b'o'; 1_000]),
            token: 7,
            cause: ReleaseCause::Failure(Some(Arc::from(reason))),
            next: Some((Arc::from(&b"next"[..]), 8)),
        }
    }

    #[test]
    fn a_hostile_failure_logs_one_short_line_with_escaped_and_cut_values() {
        let line = logged(false, tracing::Level::DEBUG, vec![hostile_failure()]);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("key=k\\x0d\\x0a2026-11-28 INFO forged owner="), "{line}");
        assert!(line.contains(&format!(" owner={}…(1000 bytes) ", "o".repeat(256))), "{line}");
        let reason_shown = format!("line one\\x0aINFO forged {}", "r".repeat(256 - "line one\nINFO forged ".len()));
        assert!(line.contains(&format!(" reason={reason_shown}…(65557 bytes) ")), "{line}");
        assert!(line.contains(" next_owner=next next_token=Some(8)"), "{line}");
        assert!(line.len() < 1_024, "{} bytes logged", line.len());
    }

    fn expiry(n: usize) -> LockEvent {
        LockEvent::Released {
            key: Arc::from(format!("k{n}").as_bytes()),
            owner: Arc::from(&b"o"[..]),
            token: n as u64,
            cause: ReleaseCause::LeaseExpired,
            next: None,
        }
    }

    #[test]
    fn a_few_releases_are_logged_one_by_one() {
        let lines = logged(false, tracing::Level::INFO, (0..RELEASES_LOGGED_ONE_BY_ONE).map(expiry).collect());
        assert_eq!(lines.lines().count(), RELEASES_LOGGED_ONE_BY_ONE, "{lines}");
        assert!(lines.lines().all(|line| line.contains("lock released as failed key=k")), "{lines}");
    }

    #[test]
    fn a_mass_release_is_summed_up_per_cause_at_info_and_told_in_full_at_debug() {
        let mut events: Vec<LockEvent> = (0..10).map(expiry).collect();
        events.push(hostile_failure());
        let info = logged(false, tracing::Level::INFO, events);
        let lines: Vec<&str> = info.lines().collect();
        assert_eq!(lines.len(), 2, "{info}");
        assert!(
            lines[0]
                .contains("locks released as failed count=10 cause=\"lease-expired\" example_key=k0 example_owner=o"),
            "{info}"
        );
        assert!(lines[1].contains("count=1 cause=\"failure\" example_key=k\\x0d\\x0a2026-11-28"), "{info}");

        let mut events: Vec<LockEvent> = (0..10).map(expiry).collect();
        events.push(hostile_failure());
        let debug = logged(false, tracing::Level::DEBUG, events);
        assert_eq!(debug.lines().filter(|line| line.contains("lock released as failed key=")).count(), 11, "{debug}");
        assert_eq!(debug.lines().filter(|line| line.contains("locks released as failed count=")).count(), 2, "{debug}");
    }

    #[test]
    fn json_logs_are_cut_the_same_way() {
        let line = logged(true, tracing::Level::DEBUG, vec![hostile_failure()]);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("\"reason\":\"line one\\\\x0aINFO forged r"), "{line}");
        assert!(line.contains("…(65557 bytes)\""), "{line}");
        assert!(line.len() < 1_024, "{} bytes logged", line.len());
    }
}
