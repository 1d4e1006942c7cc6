//! The reply model: every command answers with a [`Reply`], and this is the one place where
//! core outcomes become replies. Encoding to RESP2 or RESP3 bytes happens in the codec.

use std::borrow::Cow;

use bytes::Bytes;

use crate::cluster::topology::Redirect;
use crate::core::{Completion, ExtendOutcome, HolderInfo, KeyInfo, ScanPage, TryOutcome, UnlockOutcome, WaitOutcome};
use crate::errors;
use crate::owner;

/// A protocol-neutral reply; the codec renders it for the connection's protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK` style status line.
    Status(Cow<'static, str>),
    /// A full error line including its code, e.g. `ERR syntax error`.
    Error(Cow<'static, str>),
    Int(i64),
    Bulk(Bytes),
    /// Null bulk string: `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// Null array: `*-1` in RESP2 (what BLPOP answers on timeout), `_` in RESP3.
    NilArray,
    Array(Vec<Reply>),
    /// A map in RESP3, a flat key/value array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Out-of-band data (pub/sub messages and confirmations): a push (`>`) in RESP3, an array in
    /// RESP2.
    Push(Vec<Reply>),
    /// Bytes already rendered for the protocol of the connection that sends them: one rendering
    /// shared by many connections (the DONE of a fan-out, see `crate::fanout`).
    Rendered(Bytes),
}

impl Reply {
    pub const fn ok() -> Reply {
        Reply::Status(Cow::Borrowed("OK"))
    }

    pub fn error(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error(text.into())
    }

    pub fn bulk(data: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(data.as_ref()))
    }

    pub const fn bulk_static(data: &'static str) -> Reply {
        Reply::Bulk(Bytes::from_static(data.as_bytes()))
    }

    pub fn bulk_or_nil(data: Option<impl AsRef<[u8]>>) -> Reply {
        data.map_or(Reply::Nil, Reply::bulk)
    }

    /// The answer to a HELP subcommand: one status line per entry, as Redis sends it.
    pub fn help(lines: &[&'static str]) -> Reply {
        Reply::Array(lines.iter().map(|line| Reply::Status((*line).into())).collect())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

fn to_int(value: u64) -> Reply {
    Reply::Int(i64::try_from(value).unwrap_or(i64::MAX))
}

fn acquired(token: u64) -> Reply {
    Reply::Array(vec![Reply::bulk_static("ACQUIRED"), to_int(token)])
}

pub(crate) fn done(completion: &Completion) -> Reply {
    Reply::Array(vec![
        Reply::bulk_static("DONE"),
        Reply::bulk(owner::shown(&completion.finisher)),
        Reply::bulk_or_nil(completion.result.as_deref()),
    ])
}

impl From<TryOutcome> for Reply {
    fn from(outcome: TryOutcome) -> Reply {
        match outcome {
            TryOutcome::Acquired { token } => acquired(token),
            TryOutcome::Queued { position } => {
                Reply::Array(vec![Reply::bulk_static("QUEUED"), to_int(position as u64)])
            }
            TryOutcome::Busy { holder } => {
                Reply::Array(vec![Reply::bulk_static("BUSY"), Reply::bulk(owner::shown(&holder))])
            }
            TryOutcome::Done(completion) => done(&completion),
            TryOutcome::QueueFull => Reply::error(errors::QUEUEFULL),
        }
    }
}

impl From<WaitOutcome> for Reply {
    fn from(outcome: WaitOutcome) -> Reply {
        match outcome {
            WaitOutcome::Acquired { token } => acquired(token),
            WaitOutcome::Done(completion) => done(&completion),
        }
    }
}

impl From<UnlockOutcome> for Reply {
    fn from(outcome: UnlockOutcome) -> Reply {
        match outcome {
            UnlockOutcome::Succeeded { waiters_told } => to_int(waiters_told as u64),
            UnlockOutcome::HandedOff => Reply::Int(1),
            UnlockOutcome::Released => Reply::Int(0),
            UnlockOutcome::NotLocked => Reply::error(errors::NOLOCK),
            UnlockOutcome::NotHolder => Reply::error(errors::NOTHOLDER),
        }
    }
}

impl From<ExtendOutcome> for Reply {
    fn from(outcome: ExtendOutcome) -> Reply {
        match outcome {
            ExtendOutcome::Extended => Reply::Int(1),
            ExtendOutcome::NotLocked => Reply::error(errors::NOLOCK),
            ExtendOutcome::NotHolder => Reply::error(errors::NOTHOLDER),
        }
    }
}

impl From<KeyInfo> for Reply {
    fn from(info: KeyInfo) -> Reply {
        let field = Reply::bulk_static;
        let (holder, token, lease_ms) = match &info.holder {
            Some(HolderInfo { owner, token, lease_remaining_ms }) => {
                (Reply::bulk(owner::shown(owner)), to_int(*token), to_int(*lease_remaining_ms))
            }
            None => (Reply::Nil, Reply::Nil, Reply::Nil),
        };
        let (finisher, result, keep_ms) = match &info.completion {
            Some((completion, keep_remaining_ms)) => (
                Reply::bulk(owner::shown(&completion.finisher)),
                Reply::bulk_or_nil(completion.result.as_deref()),
                to_int(*keep_remaining_ms),
            ),
            None => (Reply::Nil, Reply::Nil, Reply::Nil),
        };
        Reply::Map(vec![
            (field("state"), Reply::bulk(info.state.as_str())),
            (field("holder"), holder),
            (field("token"), token),
            (field("lease_ms"), lease_ms),
            (field("waiters"), to_int(info.waiters as u64)),
            (field("queue"), Reply::Array(info.queue.iter().map(|queued| Reply::bulk(owner::shown(queued))).collect())),
            (field("blocked"), to_int(info.blocked as u64)),
            (field("finisher"), finisher),
            (field("result"), result),
            (field("keep_ms"), keep_ms),
            (field("last_failure"), Reply::bulk_or_nil(info.last_failure.as_deref())),
            (field("grants_paused_ms"), to_int(info.grants_paused_ms)),
        ])
    }
}

impl From<Redirect> for Reply {
    fn from(redirect: Redirect) -> Reply {
        Reply::error(errors::redirect(redirect))
    }
}

/// SCAN's reply: the next cursor as a bulk string, then the keys.
impl From<ScanPage> for Reply {
    fn from(page: ScanPage) -> Reply {
        Reply::Array(vec![
            Reply::bulk(page.cursor.to_string()),
            Reply::Array(page.keys.iter().map(Reply::bulk).collect()),
        ])
    }
}

/// LOCK.INFO for a user who may not see tokens (docs: Users and permissions): the same reply with
/// the token answered as nil, so that the fields are still laid out in one place only.
pub(crate) fn key_info_without_token(info: KeyInfo) -> Reply {
    let mut reply = Reply::from(info);
    if let Reply::Map(fields) = &mut reply
        && let Some((_, token)) = fields.iter_mut().find(|(name, _)| *name == Reply::bulk_static("token"))
    {
        *token = Reply::Nil;
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_redis_errors() {
        let moved = Redirect::Moved { slot: 3443, addr: "10.0.0.2:6379".parse().unwrap() };
        assert_eq!(Reply::from(moved), Reply::error("MOVED 3443 10.0.0.2:6379"));
        assert_eq!(Reply::from(Redirect::Down), Reply::error("CLUSTERDOWN The cluster is down"));
    }
}
