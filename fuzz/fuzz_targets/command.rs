//! Command lookup and argument parsing on arbitrary argument vectors, exactly as a connection
//! runs them before executing (`baton::fuzzing::parse_request` is the real dispatch). The
//! promises a parsed LOCK.* command makes to the core are a property test in `src/cmd/lock.rs`;
//! here the parsers must not panic, and every refusal must be a Redis-style error line.
//!
//! Input: arguments separated by 0xFF bytes. A one-byte first argument picks a command name from
//! the table below, so the fuzzer reaches every parser quickly.
#![no_main]

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
    "SCAN",
    "TYPE",
    "EXISTS",
    "MEMORY",
    "COMMAND",
    "CONFIG",
];

fuzz_target!(|input: &[u8]| {
    let mut args: Vec<Bytes> = input.split(|&b| b == 0xFF).map(Bytes::copy_from_slice).collect();
    if let Some(first) = args.first_mut()
        && first.len() == 1
    {
        *first = Bytes::from_static(NAMES[usize::from(first[0]) % NAMES.len()].as_bytes());
    }
    if let Err(line) = baton::fuzzing::parse_request(args, 8, 8) {
        assert!(has_error_code(&line), "bad error code: {line}");
    }
});
