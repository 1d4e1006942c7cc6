//! Command lookup and argument parsing on arbitrary argument vectors, exactly as a connection
//! runs them before executing: `cmd::resolve`, then the LOCK.* parser or the connection and
//! server command parsers.
//!
//! Input: arguments separated by 0xFF bytes. A one-byte first argument picks a command name from
//! the table below, so the fuzzer reaches every parser quickly.
#![no_main]

use baton::cmd::connection::ConnectionCommand;
use baton::cmd::lock::{LockCommand, LockLimits};
use baton::cmd::parse::Args;
use baton::cmd::server::ServerCommand;
use baton::cmd::{self};
use baton::reply::Reply;
use baton_testkit::reply::has_error_code;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const NAMES: &[&str] = &[
    "LOCK.TRY",
    "LOCK.WAIT",
    "LOCK.UNLOCK",
    "LOCK.EXTEND",
    "LOCK.CANCEL",
    "LOCK.INFO",
    "PING",
    "ECHO",
    "HELLO",
    "AUTH",
    "SELECT",
    "QUIT",
    "RESET",
    "CLIENT",
    "INFO",
    "DBSIZE",
    "COMMAND",
    "CONFIG",
];

const LIMITS: LockLimits = LockLimits { max_key_bytes: 8, max_result_bytes: 8 };

fn check_error(reply: &Reply) {
    match reply {
        Reply::Error(text) => assert!(has_error_code(text), "bad error code: {text}"),
        other => panic!("a parse error must be an error reply, got {other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let mut args: Vec<Bytes> = input.split(|&b| b == 0xFF).map(Bytes::copy_from_slice).collect();
    if let Some(first) = args.first_mut()
        && first.len() == 1
    {
        *first = Bytes::from_static(NAMES[usize::from(first[0]) % NAMES.len()].as_bytes());
    }
    let spec = match cmd::resolve(&args) {
        Ok(spec) => spec,
        Err(reply) => return check_error(&reply),
    };
    assert!(spec.arity_ok(args.len()));
    if spec.container.is_empty() && spec.name.starts_with("lock.") {
        match LockCommand::parse(spec.name, Args::new(args, 1), LIMITS) {
            Ok(command) => check_lock(&command),
            Err(reply) => check_error(&reply),
        }
        return;
    }
    match ConnectionCommand::parse(spec, &args) {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(reply) => return check_error(&reply),
    }
    if let Err(reply) = ServerCommand::parse(spec, args) {
        check_error(&reply);
    }
});

/// What a parsed LOCK.* command promises the core.
fn check_lock(command: &LockCommand) {
    let name_ok = |name: &Bytes| !name.is_empty() && name.len() <= LIMITS.max_key_bytes;
    match command {
        LockCommand::Try(c) => {
            assert!(name_ok(&c.key) && name_ok(&c.owner));
            assert!(c.lease_ms.is_none_or(|ms| ms > 0));
        }
        LockCommand::Wait(c) => {
            assert!(name_ok(&c.key) && name_ok(&c.owner));
            assert!(c.lease_ms.is_none_or(|ms| ms > 0));
            assert!(c.timeout.is_none_or(|t| !t.is_zero()));
        }
        LockCommand::Unlock(c) => {
            assert!(name_ok(&c.key) && name_ok(&c.owner) && c.token > 0);
            match &c.verdict {
                baton::core::Verdict::Success { result, .. } => {
                    assert!(result.as_ref().is_none_or(|r| r.len() <= LIMITS.max_result_bytes))
                }
                baton::core::Verdict::Failure { reason } => {
                    assert!(reason.as_ref().is_none_or(|r| r.len() <= LIMITS.max_result_bytes))
                }
            }
        }
        LockCommand::Extend(c) => assert!(name_ok(&c.key) && name_ok(&c.owner) && c.token > 0 && c.lease_ms > 0),
        LockCommand::Cancel { key, owner } => assert!(name_ok(key) && name_ok(owner)),
        LockCommand::Info { key } => assert!(name_ok(key)),
    }
}
