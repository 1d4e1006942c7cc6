//! What the history checkers (tests/history.rs on one server, tests/cluster_history.rs across
//! cluster failovers) share: the answers their clients record, the seed of a run, and how a run's
//! violations are reported.

use std::time::Instant;

use baton_testkit::Resp;

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Acquired(u64),
    Queued(i64),
    Busy,
    Done {
        finisher: String,
        result: Option<String>,
    },
    Nil,
    Int(i64),
    Error(String),
    /// ACQUIRED over a connection that the client then closed at `closed` (tests/history.rs).
    Held {
        token: u64,
        closed: Instant,
    },
    /// No reply (tests/cluster_history.rs): the connection closed under the call, or the client
    /// gave up on it after a timeout and closed it (`dropped`), which the leader may have taken
    /// for a disconnect. The call may or may not have taken effect.
    Lost {
        dropped: bool,
    },
}

impl Answer {
    /// The token of a grant, whether its connection stayed open or not.
    pub fn granted(&self) -> Option<u64> {
        match self {
            Answer::Acquired(token) | Answer::Held { token, .. } => Some(*token),
            _ => None,
        }
    }

    /// A grant or a DONE: the round is over.
    pub fn is_final(&self) -> bool {
        self.granted().is_some() || matches!(self, Answer::Done { .. })
    }

    /// The call may or may not have taken effect, and is due to be sent again: no reply, or a
    /// cluster's redirection.
    pub fn indeterminate(&self) -> bool {
        match self {
            Answer::Lost { .. } => true,
            Answer::Error(text) => text.starts_with("MOVED ") || text.starts_with("CLUSTERDOWN"),
            _ => false,
        }
    }
}

/// A reply as the history records it (either client's reply, as `Resp`).
pub fn answer(reply: &Resp) -> Answer {
    let text = |item: &Resp| match item {
        Resp::Bulk(_) | Resp::Simple(_) => Some(item.text()),
        _ => None,
    };
    match reply {
        Resp::Error(error) => Answer::Error(error.clone()),
        reply if reply.is_nil() => Answer::Nil,
        Resp::Int(n) => Answer::Int(*n),
        Resp::Array(items) => match (items.first().and_then(text).as_deref(), items.get(1)) {
            (Some("ACQUIRED"), Some(Resp::Int(t))) => Answer::Acquired(*t as u64),
            (Some("QUEUED"), Some(Resp::Int(p))) => Answer::Queued(*p),
            (Some("BUSY"), _) => Answer::Busy,
            (Some("DONE"), Some(finisher)) => {
                Answer::Done { finisher: text(finisher).unwrap_or_default(), result: items.get(2).and_then(text) }
            }
            _ => Answer::Error(format!("unexpected reply {items:?}")),
        },
        other => Answer::Error(format!("unexpected reply {other:?}")),
    }
}

/// `BATON_HISTORY_SEED`, or a fresh seed (printed with the verdict, so a run can be replayed).
pub fn seed() -> u64 {
    std::env::var("BATON_HISTORY_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(rand::random)
}

/// Fails the test with every violation; first, with `BATON_HISTORY_DUMP=dir`, writes the history
/// (`dump` makes its text) to `dir/name`.
pub fn assert_no_violations(violations: &[String], context: &str, name: &str, dump: impl FnOnce() -> String) {
    if !violations.is_empty()
        && let Ok(dir) = std::env::var("BATON_HISTORY_DUMP")
    {
        // A dump that cannot be written must not hide the violations the assert below prints.
        let path = std::path::Path::new(&dir).join(name);
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, dump())) {
            Ok(()) => println!("history written to {}", path.display()),
            Err(error) => println!("writing the history to {}: {error}", path.display()),
        }
    }
    assert!(violations.is_empty(), "{context}: {} violations:\n{}", violations.len(), violations.join("\n"));
}
