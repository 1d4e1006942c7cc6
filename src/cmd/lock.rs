//! The LOCK.* family: parsing into typed requests and applying them to the core.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::parse::{Args, ParseResult, eq_ignore_case, parse_i64};
use crate::core::{ConnId, LockCore, LockRequest, Timestamp, TryOutcome, UnlockOutcome, Verdict, WaitStart};
use crate::errors;
use crate::reply::Reply;

#[derive(Debug, Clone, Copy)]
pub struct LockLimits {
    pub max_key_bytes: usize,
    pub max_result_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryLock {
    pub key: Bytes,
    pub owner: Bytes,
    pub lease_ms: Option<u64>,
    pub noqueue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitLock {
    pub key: Bytes,
    pub owner: Bytes,
    /// None blocks until answered.
    pub timeout: Option<Duration>,
    pub lease_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlock {
    pub key: Bytes,
    pub owner: Bytes,
    pub token: u64,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    pub key: Bytes,
    pub owner: Bytes,
    pub token: u64,
    pub lease_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockCommand {
    Try(TryLock),
    Wait(WaitLock),
    Unlock(Unlock),
    Extend(Extend),
    Cancel { key: Bytes, owner: Bytes },
    Info { key: Bytes },
}

impl LockCommand {
    /// `name` is the command's table name (`lock.try`, …); `args` starts after it.
    pub fn parse(name: &str, mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
        let key = args.next_name("key", limits.max_key_bytes)?;
        if name == "lock.info" {
            args.expect_end()?;
            return Ok(LockCommand::Info { key });
        }
        let owner = args.next_name("owner", limits.max_key_bytes)?;
        let command = match name {
            "lock.try" => parse_try(name, key, owner, args)?,
            "lock.wait" => parse_wait(name, key, owner, args)?,
            "lock.unlock" => parse_unlock(name, key, owner, args, limits)?,
            "lock.extend" => {
                let token = parse_token(&args.next_bytes()?)?;
                let lease_ms = parse_positive_ms(name, &args.next_bytes()?)?;
                args.expect_end()?;
                LockCommand::Extend(Extend { key, owner, token, lease_ms })
            }
            "lock.cancel" => {
                args.expect_end()?;
                LockCommand::Cancel { key, owner }
            }
            _ => return Err(Reply::error(errors::SYNTAX)),
        };
        Ok(command)
    }
}

fn parse_positive_ms(command: &str, arg: &[u8]) -> ParseResult<u64> {
    match parse_i64(arg) {
        None => Err(Reply::error(errors::NOT_AN_INTEGER)),
        Some(ms) if ms <= 0 => Err(Reply::error(errors::invalid_expire(command))),
        Some(ms) => Ok(ms.unsigned_abs()),
    }
}

fn parse_token(arg: &[u8]) -> ParseResult<u64> {
    match parse_i64(arg) {
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

fn parse_try(name: &str, key: Bytes, owner: Bytes, mut args: Args) -> ParseResult<LockCommand> {
    let mut lease_ms = None;
    let mut noqueue = false;
    while let Some(option) = args.next_optional() {
        if eq_ignore_case(&option, "PX") {
            parse_px(name, &mut args, &mut lease_ms)?;
        } else if eq_ignore_case(&option, "NOQUEUE") && !noqueue {
            noqueue = true;
        } else {
            return Err(Reply::error(errors::SYNTAX));
        }
    }
    Ok(LockCommand::Try(TryLock { key, owner, lease_ms, noqueue }))
}

fn parse_wait(name: &str, key: Bytes, owner: Bytes, mut args: Args) -> ParseResult<LockCommand> {
    let timeout = match parse_i64(&args.next_bytes()?) {
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

fn parse_unlock(name: &str, key: Bytes, owner: Bytes, mut args: Args, limits: LockLimits) -> ParseResult<LockCommand> {
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

impl TryLock {
    /// The outcome, and the core's copy of the key (for the connection's record of its locks).
    pub fn apply(&self, core: &LockCore, conn: ConnId, now: Timestamp) -> (TryOutcome, Arc<[u8]>) {
        let request = LockRequest { key: &self.key, owner: &self.owner, lease_ms: self.lease_ms, conn };
        core.try_lock_sharing_key(request, self.noqueue, now)
    }
}

impl WaitLock {
    pub fn apply(&self, core: &LockCore, conn: ConnId, now: Timestamp) -> (WaitStart, Arc<[u8]>) {
        let request = LockRequest { key: &self.key, owner: &self.owner, lease_ms: self.lease_ms, conn };
        core.wait_sharing_key(request, now)
    }
}

impl Unlock {
    pub fn apply(self, core: &LockCore, now: Timestamp) -> UnlockOutcome {
        core.unlock(&self.key, &self.owner, self.token, self.verdict, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LockLimits = LockLimits { max_key_bytes: 16, max_result_bytes: 8 };

    fn parse(line: &str) -> ParseResult<LockCommand> {
        let mut words: Vec<Bytes> = line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        let name = String::from_utf8_lossy(&words.remove(0)).to_ascii_lowercase();
        LockCommand::parse(&name, Args::new(words, 0), LIMITS)
    }

    fn err(text: &str) -> ParseResult<LockCommand> {
        Err(Reply::error(text.to_owned()))
    }

    #[test]
    fn try_options_in_any_order() {
        let expected = LockCommand::Try(TryLock {
            key: Bytes::from_static(b"k"),
            owner: Bytes::from_static(b"o"),
            lease_ms: Some(500),
            noqueue: true,
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
        assert!(matches!(parse("LOCK.INFO k"), Ok(LockCommand::Info { .. })));
    }
}
