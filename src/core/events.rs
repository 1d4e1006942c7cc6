//! What happened to a lock, collected under the shard lock and logged after it is released so that
//! no shard lock is ever held across a write to the log.

use std::sync::Arc;

use tracing::{debug, info};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseCause {
    Failure,
    LeaseExpired,
    HolderDisconnected,
    /// The waiter's connection closed after the grant was sent but before it could be read.
    GrantUndelivered,
}

impl ReleaseCause {
    fn as_str(self) -> &'static str {
        match self {
            ReleaseCause::Failure => "failure",
            ReleaseCause::LeaseExpired => "lease-expired",
            ReleaseCause::HolderDisconnected => "holder-disconnected",
            ReleaseCause::GrantUndelivered => "grant-undelivered",
        }
    }
}

#[derive(Debug)]
pub enum LockEvent {
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
        keep_ms: u64,
    },
    /// A holding ended other than by SUCCESS; `next` is who the lock was handed to, if anyone.
    Released {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        token: u64,
        cause: ReleaseCause,
        reason: Option<Arc<[u8]>>,
        next: Option<(Arc<[u8]>, u64)>,
    },
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

pub fn emit(events: Vec<LockEvent>) {
    for event in events {
        match event {
            LockEvent::Granted { key, owner, token, handoff } => {
                debug!(key = %text(&key), owner = %text(&owner), token, handoff, "lock granted");
            }
            LockEvent::Succeeded { key, owner, token, waiters_told, keep_ms } => {
                debug!(key = %text(&key), owner = %text(&owner), token, waiters_told, keep_ms, "work succeeded");
            }
            LockEvent::Released { key, owner, token, cause, reason, next } => {
                let reason = reason.as_deref().map(text).unwrap_or_default();
                let (next_owner, next_token) = match &next {
                    Some((owner, token)) => (text(owner), Some(*token)),
                    None => (Default::default(), None),
                };
                info!(
                    key = %text(&key),
                    owner = %text(&owner),
                    token,
                    cause = cause.as_str(),
                    reason = %reason,
                    next_owner = %next_owner,
                    next_token = ?next_token,
                    "lock released as failed"
                );
            }
        }
    }
}
