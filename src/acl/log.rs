//! What was refused: ACL LOG's entries (Redis's shape and grouping) and the rate-limited log
//! line about failed authentications. Time is handed in, never read here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::logging::LineThrottle;

/// Redis's default `acllog-max-len`.
const MAX_ENTRIES: usize = 128;
/// Redis folds a repeat of the same refusal into the earlier entry within this window.
const GROUPING_WINDOW: Duration = Duration::from_secs(60);
/// At most one log line about failed AUTHs per this interval, however fast they come.
const FAILURE_LINE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Auth,
    Command,
    Key,
    Channel,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Auth => "auth",
            Reason::Command => "command",
            Reason::Key => "key",
            Reason::Channel => "channel",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) count: u64,
    pub(crate) reason: Reason,
    /// The command's full name, the key, the channel, or `AUTH`.
    pub(crate) object: String,
    pub(crate) username: String,
    pub(crate) client_info: String,
    pub(crate) last_seen: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    /// Newest first, as ACL LOG lists them.
    entries: VecDeque<Entry>,
    failure_line: LineThrottle,
}

impl Log {
    pub(crate) fn add(&mut self, mut entry: Entry) {
        let same = |earlier: &Entry| {
            earlier.reason == entry.reason
                && earlier.object == entry.object
                && earlier.username == entry.username
                && entry.last_seen.saturating_duration_since(earlier.last_seen) < GROUPING_WINDOW
        };
        if let Some(index) = self.entries.iter().position(same) {
            let earlier = self.entries.remove(index).unwrap_or_else(|| unreachable!("found at {index}"));
            entry.count += earlier.count;
        }
        self.entries.push_front(entry);
        self.entries.truncate(MAX_ENTRIES);
    }

    pub(crate) fn newest(&self, count: usize) -> impl Iterator<Item = &Entry> {
        self.entries.iter().take(count)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Counts a failed AUTH and writes a line if none was written in the last second; the line
    /// carries how many failed since the previous one, so a brute force shows as one line a
    /// second with its rate, not a flood.
    pub(crate) fn auth_failed(&mut self, addr: SocketAddr, username: &str, now: Instant) {
        if let Some(failures) = self.failure_line.count(now, FAILURE_LINE_INTERVAL) {
            warn!(failures, last_addr = %addr, last_user = username, "authentication failed");
        }
    }

    #[cfg(test)]
    fn unreported_failures(&self) -> u64 {
        self.failure_line.unreported()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reason: Reason, object: &str, at: Instant) -> Entry {
        Entry {
            count: 1,
            reason,
            object: object.to_owned(),
            username: "node".to_owned(),
            client_info: "id=1".to_owned(),
            last_seen: at,
        }
    }

    #[test]
    fn repeats_fold_into_one_entry_within_a_minute() {
        let start = Instant::now();
        let mut log = Log::default();
        log.add(entry(Reason::Command, "client|kill", start));
        log.add(entry(Reason::Key, "other", start));
        log.add(entry(Reason::Command, "client|kill", start + Duration::from_secs(30)));
        let entries: Vec<_> = log.newest(10).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].object.as_str(), entries[0].count), ("client|kill", 2), "moved to the front");
        log.add(entry(Reason::Command, "client|kill", start + Duration::from_secs(120)));
        assert_eq!(log.newest(10).count(), 3, "a repeat after the window is a new entry");
        assert_eq!(log.newest(1).count(), 1);
        log.clear();
        assert_eq!(log.newest(10).count(), 0);
    }

    #[test]
    fn bounded() {
        let start = Instant::now();
        let mut log = Log::default();
        for index in 0..MAX_ENTRIES + 10 {
            log.add(entry(Reason::Key, &index.to_string(), start));
        }
        assert_eq!(log.newest(usize::MAX).count(), MAX_ENTRIES);
        assert_eq!(log.newest(1).next().unwrap().object, (MAX_ENTRIES + 9).to_string());
    }

    #[test]
    fn failure_lines_are_rate_limited() {
        let start = Instant::now();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut log = Log::default();
        log.auth_failed(addr, "default", start);
        assert_eq!(log.unreported_failures(), 0, "the first failure is written at once");
        for step in 1..=500 {
            log.auth_failed(addr, "default", start + Duration::from_micros(step));
        }
        assert_eq!(log.unreported_failures(), 500, "within the second: counted, not written");
        log.auth_failed(addr, "default", start + FAILURE_LINE_INTERVAL);
        assert_eq!(log.unreported_failures(), 0, "the next line reports them");
    }
}
