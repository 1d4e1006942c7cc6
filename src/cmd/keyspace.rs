//! The keyspace commands tools browse the locks with: SCAN, TYPE, EXISTS and MEMORY USAGE.
//!
//! A key exists while it has any state: a holder, a line, a remembered (KEEP) or owed DONE. Each
//! such key is of type `lock`.

use bytes::Bytes;

use super::lock::LockLimits;
use super::parse::{Args, ParseResult, eq_ignore_case};
use crate::acl::glob_match;
use crate::context::Shared;
use crate::core::ScanPage;
use crate::errors;
use crate::reply::Reply;

/// The type TYPE answers for a key with state.
const LOCK_TYPE: &str = "lock";
/// The types Redis knows: SCAN TYPE accepts them, and no lock is of one.
const REDIS_TYPES: &[&str] = &["string", "list", "set", "zset", "hash", "stream"];
/// Keys SCAN examines when not told a COUNT, as in Redis.
const SCAN_COUNT_DEFAULT: usize = 10;
/// A larger COUNT is taken as this one (COUNT is a hint, which Redis may exceed or fall short
/// of): one call then holds a shard lock for a bounded time and answers at most about a
/// thousand keys.
const SCAN_COUNT_MAX: usize = 1000;
/// Entries of a line, or of the owed DONEs, that MEMORY USAGE samples by default (Redis's 5).
const SAMPLES_DEFAULT: usize = 5;
/// And at most: `SAMPLES 0`, "all" in Redis, samples this many, so that no request walks a
/// line of millions.
const SAMPLES_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    cursor: u64,
    /// MATCH; None when absent or `*`.
    pattern: Option<Bytes>,
    count: usize,
    /// False when TYPE names another type than `lock`: no key is of it.
    locks_wanted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyspaceCommand {
    Scan(Scan),
    Type(Bytes),
    Exists(Vec<Bytes>),
    MemoryUsage { key: Bytes, samples: usize },
    MemoryHelp,
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`; options may repeat, the last wins.
pub(crate) fn parse_scan(mut args: Args, limits: LockLimits) -> ParseResult<KeyspaceCommand> {
    let cursor = parse_cursor(&args.next_bytes()?)?;
    let mut scan = Scan { cursor, pattern: None, count: SCAN_COUNT_DEFAULT, locks_wanted: true };
    while let Some(option) = args.next_optional() {
        if eq_ignore_case(&option, "COUNT") {
            let count = args.next_int()?;
            let count =
                usize::try_from(count).ok().filter(|count| *count >= 1).ok_or_else(|| Reply::error(errors::SYNTAX))?;
            scan.count = count.min(SCAN_COUNT_MAX);
        } else if eq_ignore_case(&option, "MATCH") {
            let pattern = args.next_bytes()?;
            // A glob costs up to its length times the key's for each key: bounded like keys.
            if pattern.len() > limits.max_key_bytes {
                return Err(Reply::error(errors::too_long("pattern", limits.max_key_bytes)));
            }
            scan.pattern = (pattern[..] != *b"*").then_some(pattern);
        } else if eq_ignore_case(&option, "TYPE") {
            let name = args.next_bytes()?;
            scan.locks_wanted = eq_ignore_case(&name, LOCK_TYPE);
            if !scan.locks_wanted && !REDIS_TYPES.iter().any(|known| eq_ignore_case(&name, known)) {
                return Err(Reply::error(errors::unknown_type_name(&name)));
            }
        } else {
            return Err(Reply::error(errors::SYNTAX));
        }
    }
    Ok(KeyspaceCommand::Scan(scan))
}

/// A cursor is an unsigned 64-bit decimal, as Redis's `string2ull` reads it.
fn parse_cursor(arg: &[u8]) -> ParseResult<u64> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Reply::error(errors::INVALID_CURSOR))
}

/// `MEMORY USAGE key [SAMPLES count]`
pub(crate) fn parse_memory_usage(mut args: Args) -> ParseResult<KeyspaceCommand> {
    let key = args.next_bytes()?;
    let mut samples = SAMPLES_DEFAULT;
    while let Some(option) = args.next_optional() {
        if !eq_ignore_case(&option, "SAMPLES") {
            return Err(Reply::error(errors::SYNTAX));
        }
        let count = args.next_int()?;
        samples = match usize::try_from(count) {
            Ok(0) => SAMPLES_MAX,
            Ok(count) => count.min(SAMPLES_MAX),
            Err(_) => return Err(Reply::error(errors::SYNTAX)),
        };
    }
    Ok(KeyspaceCommand::MemoryUsage { key, samples })
}

impl KeyspaceCommand {
    pub(crate) fn execute(self, shared: &Shared) -> Reply {
        let core = &shared.core;
        match self {
            KeyspaceCommand::Scan(scan) => scan.execute(shared),
            KeyspaceCommand::Type(key) => {
                let name = if core.exists(&key, shared.clock.now()) { LOCK_TYPE } else { "none" };
                Reply::Status(name.into())
            }
            KeyspaceCommand::Exists(keys) => {
                let now = shared.clock.now();
                Reply::Int(keys.iter().filter(|key| core.exists(key, now)).count() as i64)
            }
            KeyspaceCommand::MemoryUsage { key, samples } => match core.footprint(&key, samples, shared.clock.now()) {
                Some(bytes) => Reply::Int(i64::try_from(bytes).unwrap_or(i64::MAX)),
                None => Reply::Nil,
            },
            KeyspaceCommand::MemoryHelp => Reply::help(&[
                "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "USAGE <key> [SAMPLES <count>]",
                "    Return an estimate of the bytes <key> and its state take. The entries of its",
                "    line and of the DONEs it owes are sampled up to <count> times (default: 5,",
                "    0 means 1000, the most).",
                "HELP",
                "    Print this help.",
            ]),
        }
    }
}

impl Scan {
    fn execute(self, shared: &Shared) -> Reply {
        if !self.locks_wanted {
            return Reply::from(ScanPage { cursor: 0, keys: Vec::new() });
        }
        let Some(mut page) = shared.core.scan(self.cursor, self.count) else {
            return Reply::error(errors::INVALID_CURSOR);
        };
        // Matched here, with no shard lock held.
        if let Some(pattern) = &self.pattern {
            page.keys.retain(|key| glob_match(pattern, key));
        }
        Reply::from(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LockLimits = LockLimits { max_key_bytes: 16, max_result_bytes: 16 };

    fn args(words: &[&str]) -> Args {
        Args::new(words.iter().map(|word| Bytes::copy_from_slice(word.as_bytes())).collect(), 0)
    }

    fn scan(words: &[&str]) -> ParseResult<Scan> {
        parse_scan(args(words), LIMITS).map(|command| match command {
            KeyspaceCommand::Scan(scan) => scan,
            other => panic!("{other:?}"),
        })
    }

    fn error(text: &str) -> Reply {
        Reply::error(text.to_owned())
    }

    #[test]
    fn scan_reads_its_options_like_redis() {
        let plain = scan(&["0"]).unwrap();
        assert_eq!((plain.cursor, plain.pattern, plain.count, plain.locks_wanted), (0, None, 10, true));
        let full = scan(&["42", "match", "pull:*", "COUNT", "100", "type", "LOCK"]).unwrap();
        assert_eq!(
            (full.cursor, full.pattern.as_deref(), full.count, full.locks_wanted),
            (42, Some(&b"pull:*"[..]), 100, true)
        );
        assert_eq!(scan(&["0", "MATCH", "*"]).unwrap().pattern, None, "`*` matches every key");
        assert_eq!(scan(&["0", "COUNT", "5", "COUNT", "7"]).unwrap().count, 7, "the last one wins");
        assert_eq!(scan(&["0", "COUNT", "1000000"]).unwrap().count, SCAN_COUNT_MAX);
        assert!(!scan(&["0", "TYPE", "string"]).unwrap().locks_wanted);
        assert_eq!(scan(&["18446744073709551615"]).unwrap().cursor, u64::MAX);
        assert_eq!(scan(&["007"]).unwrap().cursor, 7);
    }

    #[test]
    fn scan_refuses_what_redis_refuses() {
        for cursor in ["", "-1", "+1", " 1", "1 ", "x", "1.0", "18446744073709551616"] {
            assert_eq!(scan(&[cursor]).unwrap_err(), error("ERR invalid cursor"), "{cursor:?}");
        }
        assert_eq!(scan(&["0", "COUNT", "0"]).unwrap_err(), error("ERR syntax error"));
        assert_eq!(scan(&["0", "COUNT", "-3"]).unwrap_err(), error("ERR syntax error"));
        assert_eq!(scan(&["0", "COUNT", "x"]).unwrap_err(), error("ERR value is not an integer or out of range"));
        assert_eq!(scan(&["0", "COUNT"]).unwrap_err(), error("ERR syntax error"));
        assert_eq!(scan(&["0", "MATCH"]).unwrap_err(), error("ERR syntax error"));
        assert_eq!(scan(&["0", "NOVALUES"]).unwrap_err(), error("ERR syntax error"));
        assert_eq!(scan(&["0", "TYPE", "nosuch"]).unwrap_err(), error("ERR unknown type name 'nosuch'"));
        assert_eq!(
            scan(&["0", "MATCH", &"a".repeat(17)]).unwrap_err(),
            error("ERR pattern is longer than the limit of 16 bytes")
        );
    }

    #[test]
    fn memory_usage_samples_like_redis() {
        let samples = |words: &[&str]| match parse_memory_usage(args(words)) {
            Ok(KeyspaceCommand::MemoryUsage { samples, .. }) => Ok(samples),
            Ok(other) => panic!("{other:?}"),
            Err(reply) => Err(reply),
        };
        assert_eq!(samples(&["k"]), Ok(SAMPLES_DEFAULT));
        assert_eq!(samples(&["k", "SAMPLES", "20"]), Ok(20));
        assert_eq!(samples(&["k", "samples", "1", "SAMPLES", "2"]), Ok(2));
        assert_eq!(samples(&["k", "SAMPLES", "0"]), Ok(SAMPLES_MAX));
        assert_eq!(samples(&["k", "SAMPLES", "5000"]), Ok(SAMPLES_MAX));
        assert_eq!(samples(&["k", "SAMPLES", "-1"]), Err(error("ERR syntax error")));
        assert_eq!(samples(&["k", "SAMPLES", "x"]), Err(error("ERR value is not an integer or out of range")));
        assert_eq!(samples(&["k", "SAMPLES"]), Err(error("ERR syntax error")));
        assert_eq!(samples(&["k", "FOO"]), Err(error("ERR syntax error")));
    }
}
