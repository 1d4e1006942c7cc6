//! The LOCK.* family: parsing into typed requests and applying them to the core.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::action::{Action, Waiting};
use super::parse::{Args, ParseResult, eq_ignore_case, parse_int};
use super::table::CommandId;
use crate::context::Shared;
use crate::core::{
    ExtendOutcome, IfHeld, KeyInfo, LockRequest, TryOutcome, UnlockOutcome, Verdict, WaitOutcome, WaitStart,
};
use crate::errors;
use crate::owner;
use crate::reply::{self, Reply};
use crate::session::Session;

/// LOCK.INFO lists this many owners of a line without COUNT.
const INFO_LISTED_DEFAULT: usize = 100;
/// The most COUNT may ask for: one reply stays within about a megabyte (owners of up to
/// `--max-key-bytes`, 1 KiB by default) however long the line is.
const INFO_LISTED_MAX: usize = 1000;

#[derive(Debug, Clone, Copy)]
pub(crate) struct LockLimits {
    pub(crate) max_key_bytes: usize,
    pub(crate) max_result_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TryLock {
    pub(crate) key: Bytes,
    pub(crate) owner: Bytes,
    pub(crate) lease_ms: Option<u64>,
    pub(crate) if_held: IfHeld,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WaitLock {
    pub(crate) key: Bytes,
    pub(crate) owner: Bytes,
    /// None blocks until answered.
    pub(crate) timeout: Option<Duration>,
    pub(crate) lease_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unlock {
    pub(crate) key: Bytes,
    pub(crate) owner: Bytes,
    pub(crate) token: u64,
    pub(crate) verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extend {
    pub(crate) key: Bytes,
    pub(crate) owner: Bytes,
    pub(crate) token: u64,
    pub(crate) lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockCommand {
    Try(TryLock),
    Wait(WaitLock),
    Unlock(Unlock),
    Extend(Extend),
    Cancel {
        key: Bytes,
        owner: Bytes,
    },
    /// `listed`: how many owners of the line to list (COUNT).
    Info {
        key: Bytes,
        listed: usize,
    },
}

/// Every LOCK.* command starts with the key and the owner.
fn key_and_owner(args: &mut Args, limits: LockLimits) -> ParseResult<(Bytes, Bytes)> {
    let key = args.next_name("key", limits.max_key_bytes)?;
    let owner = args.next_name("owner", limits.max_key_bytes)?;
    Ok((key, owner))
}

pub(crate) fn parse_extend(mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
    let (key, owner) = key_and_owner(&mut args, limits)?;
    let token = parse_token(&args.next_bytes()?)?;
    let lease_ms = parse_positive_ms("lock.extend", &args.next_bytes()?)?;
    args.expect_end()?;
    Ok(LockCommand::Extend(Extend { key, owner, token, lease_ms }))
}

pub(crate) fn parse_cancel(mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
    let (key, owner) = key_and_owner(&mut args, limits)?;
    args.expect_end()?;
    Ok(LockCommand::Cancel { key, owner })
}

pub(crate) fn parse_info(mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
    let key = args.next_name("key", limits.max_key_bytes)?;
    let mut listed = INFO_LISTED_DEFAULT;
    if args.next_is("COUNT") {
        let count = args.next_int()?;
        listed = usize::try_from(count)
            .ok()
            .filter(|count| *count <= INFO_LISTED_MAX)
            .ok_or_else(|| Reply::error(errors::count_out_of_range(INFO_LISTED_MAX)))?;
    }
    args.expect_end()?;
    Ok(LockCommand::Info { key, listed })
}

fn parse_positive_ms(command: &str, arg: &[u8]) -> ParseResult<u64> {
    match parse_int(arg) {
        None => Err(Reply::error(errors::NOT_AN_INTEGER)),
        Some(ms) if ms <= 0 => Err(Reply::error(errors::invalid_expire(command))),
        Some(ms) => Ok(ms.unsigned_abs()),
    }
}

fn parse_token(arg: &[u8]) -> ParseResult<u64> {
    match parse_int(arg) {
        Some(token) if token > 0 => Ok(token.unsigned_abs()),
        _ => Err(Reply::error(errors::invalid_token())),
    }
}

/// `PX ms` may appear once, anywhere among the options.
fn parse_px(command: &str, args: &mut Args, lease_ms: &mut Option<u64>) -> ParseResult<()> {
    if lease_ms.is_some() {
        return Err(Reply::error(errors::SYNTAX));
    }
    *lease_ms = Some(parse_positive_ms(command, &args.next_bytes()?)?);
    Ok(())
}

pub(crate) fn parse_try(mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
    let name = "lock.try";
    let (key, owner) = key_and_owner(&mut args, limits)?;
    let mut lease_ms = None;
    let mut if_held = IfHeld::Queue;
    while let Some(option) = args.next_optional() {
        if eq_ignore_case(&option, "PX") {
            parse_px(name, &mut args, &mut lease_ms)?;
        } else if eq_ignore_case(&option, "NOQUEUE") && if_held == IfHeld::Queue {
            if_held = IfHeld::NoQueue;
        } else {
            return Err(Reply::error(errors::SYNTAX));
        }
    }
    Ok(LockCommand::Try(TryLock { key, owner, lease_ms, if_held }))
}

pub(crate) fn parse_wait(mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
    let name = "lock.wait";
    let (key, owner) = key_and_owner(&mut args, limits)?;
    let timeout = match parse_int(&args.next_bytes()?) {
        None => return Err(Reply::error(errors::TIMEOUT_INVALID)),
        Some(ms) if ms < 0 => return Err(Reply::error(errors::TIMEOUT_NEGATIVE)),
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms.unsigned_abs())),
    };
    let mut lease_ms = None;
    while let Some(option) = args.next_optional() {
        if eq_ignore_case(&option, "PX") {
            parse_px(name, &mut args, &mut lease_ms)?;
        } else {
            return Err(Reply::error(errors::SYNTAX));
        }
    }
    Ok(LockCommand::Wait(WaitLock { key, owner, timeout, lease_ms }))
}

pub(crate) fn parse_unlock(mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
    let name = "lock.unlock";
    let (key, owner) = key_and_owner(&mut args, limits)?;
    let token = parse_token(&args.next_bytes()?)?;
    let outcome = args.next_bytes()?;
    let success = if eq_ignore_case(&outcome, "SUCCESS") {
        true
    } else if eq_ignore_case(&outcome, "FAILURE") {
        false
    } else {
        return Err(Reply::error(errors::SYNTAX));
    };
    let mut result = None;
    let mut keep_ms = None;
    let mut reason = None;
    while let Some(option) = args.next_optional() {
        if success && eq_ignore_case(&option, "RESULT") && result.is_none() {
            result = Some(bounded_text("result", args.next_bytes()?, limits.max_result_bytes)?);
        } else if success && eq_ignore_case(&option, "KEEP") && keep_ms.is_none() {
            keep_ms = Some(parse_positive_ms(name, &args.next_bytes()?)?);
        } else if !success && eq_ignore_case(&option, "REASON") && reason.is_none() {
            reason = Some(bounded_text("reason", args.next_bytes()?, limits.max_result_bytes)?);
        } else {
            return Err(Reply::error(errors::SYNTAX));
        }
    }
    let verdict = if success { Verdict::Success { result, keep_ms } } else { Verdict::Failure { reason } };
    Ok(LockCommand::Unlock(Unlock { key, owner, token, verdict }))
}

fn bounded_text(what: &str, value: Bytes, max: usize) -> ParseResult<Arc<[u8]>> {
    if value.len() > max {
        return Err(Reply::error(errors::too_long(what, max)));
    }
    Ok(Arc::from(value.as_ref()))
}

impl LockCommand {
    /// Whether it may add state: take a lock, join a queue, or keep a result. Redis marks such
    /// commands `denyoom`; a SUCCESS without KEEP frees the key, so only KEEP counts here.
    pub(crate) fn adds_state(&self) -> bool {
        matches!(
            self,
            LockCommand::Try(_)
                | LockCommand::Wait(_)
                | LockCommand::Unlock(Unlock { verdict: Verdict::Success { keep_ms: Some(_), .. }, .. })
        )
    }

    /// The owner the request acts as; LOCK.INFO names none.
    fn owner_mut(&mut self) -> Option<&mut Bytes> {
        match self {
            LockCommand::Try(TryLock { owner, .. })
            | LockCommand::Wait(WaitLock { owner, .. })
            | LockCommand::Unlock(Unlock { owner, .. })
            | LockCommand::Extend(Extend { owner, .. })
            | LockCommand::Cancel { owner, .. } => Some(owner),
            LockCommand::Info { .. } => None,
        }
    }

    pub(crate) fn execute(mut self, session: &mut Session, shared: &Shared) -> Action {
        if let Some(owner) = self.owner_mut() {
            *owner = owner::scoped(session.user(), std::mem::take(owner));
        }
        let core = &shared.core;
        let now = shared.clock.now();
        let conn = session.id();
        // A key this connection may now hold or be queued for: its close may have to release it.
        let mut bound = None;
        let reply = match self {
            LockCommand::Try(TryLock { key, owner, lease_ms, if_held }) => {
                let request = LockRequest { key: &key, owner: &owner, lease_ms, conn };
                let (answered, hash) = core.try_lock_hashing_key(request, if_held, now);
                // BUSY too: a NOQUEUE TRY renews a place the owner may have, binding it here.
                if matches!(
                    answered.outcome,
                    TryOutcome::Acquired { .. } | TryOutcome::Queued { .. } | TryOutcome::Busy { .. }
                ) {
                    bound = Some(hash);
                }
                Action::answered(answered, key)
            }
            LockCommand::Wait(WaitLock { key, owner, timeout, lease_ms }) => {
                let request = LockRequest { key: &key, owner: &owner, lease_ms, conn };
                // Marked blocked before the core can count the waiter: whoever sees it in LOCK.INFO
                // (on another event loop) finds it in CLIENT LIST and reaches it with CLIENT
                // UNBLOCK. An unblock left from an earlier wait is forgotten first.
                let entry = &session.entry;
                entry.clear_unblock();
                entry.update(|state| state.blocked_on = Some(key.clone()));
                let started = core.wait_hashing_key(request, session.mailbox(), now);
                if !matches!(started.0, WaitStart::Blocked(_)) {
                    entry.update(|state| state.blocked_on = None);
                }
                match started {
                    (WaitStart::Ready(answered), hash) => {
                        if matches!(answered.outcome, WaitOutcome::Acquired { .. }) {
                            bound = Some(hash);
                        }
                        Action::answered(answered, key)
                    }
                    (WaitStart::Blocked(ticket), hash) => {
                        bound = Some(hash);
                        Action::Block { waiting: Waiting { key, owner }, ticket, timeout }
                    }
                    (WaitStart::QueueFull, _) => Action::Reply(Reply::error(errors::QUEUEFULL)),
                }
            }
            LockCommand::Unlock(Unlock { key, owner, token, verdict }) => {
                let (outcome, handed_to) = core.unlock_handing_off(&key, &owner, token, verdict, now);
                if outcome == UnlockOutcome::HandedOff || handed_to.has_dones() {
                    Action::ReplyAfterHandoff { reply: Reply::from(outcome), handed_to, handed_at: now }
                } else {
                    Action::Reply(Reply::from(outcome))
                }
            }
            LockCommand::Extend(Extend { key, owner, token, lease_ms }) => {
                let request = LockRequest { key: &key, owner: &owner, lease_ms: Some(lease_ms), conn };
                let (outcome, key) = core.extend_hashing_key(request, token, now);
                if outcome == ExtendOutcome::Extended {
                    bound = Some(key);
                }
                Action::Reply(Reply::from(outcome))
            }
            LockCommand::Cancel { key, owner } => Action::Reply(Reply::Int(i64::from(core.cancel(&key, &owner, now)))),
            LockCommand::Info { key, listed } => {
                // A token is the right to unlock: shown only to users who could break the lock
                // anyway, by killing its holder's connection.
                let info = KeyInfo {
                    grants_paused_ms: core.grants_paused_ms(now),
                    ..core.info(&key, now, listed).unwrap_or_default()
                };
                if session.user().rules.read().may_run(CommandId::ClientKill.bit()) {
                    Action::Reply(Reply::from(info))
                } else {
                    Action::Reply(reply::key_info_without_token(info))
                }
            }
        };
        if let Some(key) = bound {
            session.note_bound(key, shared);
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LockLimits = LockLimits { max_key_bytes: 16, max_result_bytes: 8 };

    fn parse(line: &str) -> ParseResult<LockCommand> {
        let words: Vec<Bytes> = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        let parse = match words[0].to_ascii_uppercase().as_slice() {
            b"LOCK.TRY" => parse_try,
            b"LOCK.WAIT" => parse_wait,
            b"LOCK.UNLOCK" => parse_unlock,
            b"LOCK.EXTEND" => parse_extend,
            b"LOCK.CANCEL" => parse_cancel,
            b"LOCK.INFO" => parse_info,
            other => panic!("not a lock command: {other:?}"),
        };
        parse(Args::new(words, 1), LIMITS)
    }

    fn err(text: &str) -> ParseResult<LockCommand> {
        Err(Reply::error(text.to_owned()))
    }

    #[test]
    fn only_taking_queueing_and_keeping_add_state() {
        let adds = |line: &str| parse(line).unwrap_or_else(|reply| panic!("{line}: {reply:?}")).adds_state();
        for line in ["LOCK.TRY k o", "LOCK.TRY k o NOQUEUE", "LOCK.WAIT k o 0", "LOCK.UNLOCK k o 1 SUCCESS KEEP 5"] {
            assert!(adds(line), "{line}");
        }
        for line in [
            "LOCK.UNLOCK k o 1 SUCCESS",
            "LOCK.UNLOCK k o 1 SUCCESS RESULT r",
            "LOCK.UNLOCK k o 1 FAILURE REASON r",
            "LOCK.EXTEND k o 1 100",
            "LOCK.CANCEL k o",
            "LOCK.INFO k",
        ] {
            assert!(!adds(line), "{line}");
        }
    }

    #[test]
    fn try_options_in_any_order() {
        let expected = LockCommand::Try(TryLock {
            key: Bytes::from_static(b"k"),
            owner: Bytes::from_static(b"o"),
            lease_ms: Some(500),
            if_held: IfHeld::NoQueue,
        });
        assert_eq!(parse("LOCK.TRY k o PX 500 NOQUEUE"), Ok(expected.clone()));
        assert_eq!(parse("lock.try k o noqueue px 500"), Ok(expected));
        assert_eq!(parse("LOCK.TRY k o PX 500 PX 600"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.TRY k o PX 0"), err("ERR invalid expire time in 'lock.try' command"));
        assert_eq!(parse("LOCK.TRY k o PX x"), err(errors::NOT_AN_INTEGER));
        assert_eq!(parse("LOCK.TRY k o PX"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.TRY k o BOGUS"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.TRY 01234567890123456 o"), err("ERR key is longer than the limit of 16 bytes"));
    }

    #[test]
    fn wait_timeouts() {
        assert!(matches!(parse("LOCK.WAIT k o 0"), Ok(LockCommand::Wait(WaitLock { timeout: None, .. }))));
        assert!(matches!(
            parse("LOCK.WAIT k o 250 PX 9"),
            Ok(LockCommand::Wait(WaitLock { timeout: Some(t), lease_ms: Some(9), .. })) if t == Duration::from_millis(250)
        ));
        assert_eq!(parse("LOCK.WAIT k o -1"), err(errors::TIMEOUT_NEGATIVE));
        assert_eq!(parse("LOCK.WAIT k o 1.5"), err(errors::TIMEOUT_INVALID));
    }

    #[test]
    fn unlock_verdicts_and_their_options() {
        assert!(matches!(
            parse("LOCK.UNLOCK k o 7 success RESULT r KEEP 100"),
            Ok(LockCommand::Unlock(Unlock {
                token: 7,
                verdict: Verdict::Success { keep_ms: Some(100), result: Some(_) },
                ..
            }))
        ));
        assert!(matches!(
            parse("LOCK.UNLOCK k o 7 FAILURE REASON disk"),
            Ok(LockCommand::Unlock(Unlock { verdict: Verdict::Failure { reason: Some(_) }, .. }))
        ));
        assert_eq!(parse("LOCK.UNLOCK k o 7 FAILURE RESULT r"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.UNLOCK k o 7 SUCCESS REASON r"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.UNLOCK k o 7 MAYBE"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.UNLOCK k o 0 SUCCESS"), err(errors::invalid_token()));
        assert_eq!(
            parse("LOCK.UNLOCK k o 7 SUCCESS RESULT 123456789"),
            err("ERR result is longer than the limit of 8 bytes")
        );
    }

    #[test]
    fn extend_cancel_info() {
        assert!(matches!(
            parse("LOCK.EXTEND k o 3 1000"),
            Ok(LockCommand::Extend(Extend { token: 3, lease_ms: 1000, .. }))
        ));
        assert_eq!(parse("LOCK.EXTEND k o 3 0"), err("ERR invalid expire time in 'lock.extend' command"));
        assert!(matches!(parse("LOCK.CANCEL k o"), Ok(LockCommand::Cancel { .. })));
        assert_eq!(parse("LOCK.CANCEL k o extra"), err(errors::SYNTAX));
        assert!(matches!(parse("LOCK.INFO k"), Ok(LockCommand::Info { listed: INFO_LISTED_DEFAULT, .. })));
        assert!(matches!(parse("LOCK.INFO k count 0"), Ok(LockCommand::Info { listed: 0, .. })));
        assert!(matches!(parse("LOCK.INFO k COUNT 1000"), Ok(LockCommand::Info { listed: 1000, .. })));
        let out_of_range = err("ERR COUNT must be between 0 and 1000");
        assert_eq!(parse("LOCK.INFO k COUNT 1001"), out_of_range);
        assert_eq!(parse("LOCK.INFO k COUNT -1"), out_of_range);
        assert_eq!(parse("LOCK.INFO k COUNT x"), err(errors::NOT_AN_INTEGER));
        assert_eq!(parse("LOCK.INFO k COUNT"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.INFO k COUNT 5 6"), err(errors::SYNTAX));
        assert_eq!(parse("LOCK.INFO k LIMIT 5"), err(errors::SYNTAX));
    }

    /// Whatever the arguments, a parsed command keeps the promises the core relies on.
    mod invariants {
        use proptest::prelude::*;

        use super::*;

        fn arg() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::sample::select(vec![
                    "PX",
                    "px",
                    "NOQUEUE",
                    "SUCCESS",
                    "failure",
                    "RESULT",
                    "KEEP",
                    "REASON",
                    "0",
                    "-1",
                    "1",
                    "007",
                    "9223372036854775807",
                    "9223372036854775808",
                    "",
                ])
                .prop_map(|word| word.as_bytes().to_vec()),
                prop::collection::vec(any::<u8>(), 0..24),
            ]
        }

        fn check(command: &LockCommand) {
            let name_ok = |name: &Bytes| !name.is_empty() && name.len() <= LIMITS.max_key_bytes;
            let text_ok = |text: &Option<Arc<[u8]>>| text.as_ref().is_none_or(|t| t.len() <= LIMITS.max_result_bytes);
            match command {
                LockCommand::Try(c) => assert!(name_ok(&c.key) && name_ok(&c.owner) && c.lease_ms != Some(0)),
                LockCommand::Wait(c) => {
                    assert!(name_ok(&c.key) && name_ok(&c.owner) && c.lease_ms != Some(0));
                    assert!(c.timeout.is_none_or(|t| !t.is_zero()));
                }
                LockCommand::Unlock(c) => {
                    assert!(name_ok(&c.key) && name_ok(&c.owner) && c.token > 0);
                    match &c.verdict {
                        Verdict::Success { result, .. } => assert!(text_ok(result)),
                        Verdict::Failure { reason } => assert!(text_ok(reason)),
                    }
                }
                LockCommand::Extend(c) => {
                    assert!(name_ok(&c.key) && name_ok(&c.owner) && c.token > 0 && c.lease_ms > 0)
                }
                LockCommand::Cancel { key, owner } => assert!(name_ok(key) && name_ok(owner)),
                LockCommand::Info { key, listed } => assert!(name_ok(key) && *listed <= INFO_LISTED_MAX),
            }
        }

        proptest! {
            #[test]
            fn parsed_commands_are_within_limits(which in 0..6usize, args in prop::collection::vec(arg(), 0..9)) {
                let parse = [parse_try, parse_wait, parse_unlock, parse_extend, parse_cancel, parse_info][which];
                let args = args.into_iter().map(Bytes::from).collect();
                match parse(Args::new(args, 0), LIMITS) {
                    Ok(command) => check(&command),
                    Err(reply) => prop_assert!(reply.is_error()),
                }
            }
        }
    }
}
