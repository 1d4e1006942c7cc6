//! What happened to a lock, collected under the shard lock and logged after it is released so that
//! no shard lock is ever held across a write to the log.

use std::sync::Arc;

use tracing::{debug, info};

use crate::text::Escaped;

/// Why a holding ended other than by SUCCESS. Each cause is spelled here once: its name in the
/// log and the `last_failure` text LOCK.INFO reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReleaseCause {
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
}

/// Keys, owners and reasons are binary: escaped, a newline in one cannot forge a log line.
fn text(bytes: &[u8]) -> Escaped<'_> {
    Escaped::text(bytes)
}

pub(crate) fn emit(events: Vec<LockEvent>) {
    for event in events {
        match event {
            LockEvent::Granted { key, owner, token, handoff } => {
                debug!(key = %text(&key), owner = %text(&owner), token, handoff, "lock granted");
            }
            LockEvent::Succeeded { key, owner, token, waiters_told, keep_ms } => {
                let keep_ms = keep_ms.unwrap_or(0);
                debug!(key = %text(&key), owner = %text(&owner), token, waiters_told, keep_ms, "work succeeded");
            }
            LockEvent::Released { key, owner, token, cause, next } => {
                let (next_owner, next_token) = match &next {
                    Some((owner, token)) => (text(owner), Some(*token)),
                    None => (text(b""), None),
                };
                info!(
                    key = %text(&key),
                    owner = %text(&owner),
                    token,
                    cause = cause.name(),
                    reason = %text(&cause.reason()),
                    next_owner = %next_owner,
                    next_token = ?next_token,
                    "lock released as failed"
                );
            }
        }
    }
}
