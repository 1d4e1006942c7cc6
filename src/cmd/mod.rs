//! Commands: a request is looked up in the command table, checked for arity, parsed into a typed
//! command, then executed against the session and the shared server state.

pub mod connection;
pub mod lock;
pub mod parse;
pub mod server;
pub mod table;

use std::time::Duration;

use bytes::Bytes;

use self::connection::ConnectionCommand;
use self::lock::{LockCommand, LockLimits};
use self::parse::Args;
use self::server::ServerCommand;
use self::table::CommandSpec;
use crate::core::WaitTicket;
use crate::errors;
use crate::reply::Reply;
use crate::server::Shared;
use crate::session::Session;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Lock(LockCommand),
    Connection(ConnectionCommand),
    Server(ServerCommand),
}

/// What the connection does after a command.
#[derive(Debug)]
pub enum Action {
    Reply(Reply),
    /// A LOCK.WAIT that has to wait; None blocks until answered.
    Block {
        ticket: WaitTicket,
        timeout: Option<Duration>,
    },
    /// Send the reply, then close (QUIT).
    Close(Reply),
    /// The lock was just handed to a waiter whose task sits first in this worker's queue: let it
    /// write its ACQUIRED before this reply, since the hand-off is what everyone waits on.
    ReplyAfterHandoff(Reply),
}

/// The table entry for a request, with its subcommand resolved and arity checked.
pub fn resolve(args: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
    let Some(name) = args.first() else {
        return Err(Reply::error(errors::SYNTAX));
    };
    let Some(spec) = table::lookup(name) else {
        return Err(Reply::error(errors::unknown_command(name, &args[1..])));
    };
    if !spec.arity_ok(args.len()) {
        return Err(Reply::error(errors::wrong_arity(&spec.full_name())));
    }
    // COMMAND alone is a command of its own; the others' arity requires a subcommand.
    if spec.subcommands.is_empty() || args.len() == 1 {
        return Ok(spec);
    }
    let sub_name = &args[1];
    let Some(sub) = table::lookup_sub(spec, sub_name) else {
        return Err(Reply::error(errors::unknown_subcommand(spec.name, sub_name)));
    };
    if !sub.arity_ok(args.len()) {
        return Err(Reply::error(errors::wrong_arity(&sub.full_name())));
    }
    Ok(sub)
}

/// Commands a client may send before it has authenticated.
pub fn allowed_unauthenticated(spec: &CommandSpec) -> bool {
    spec.container.is_empty() && matches!(spec.name, "auth" | "hello" | "quit" | "reset")
}

impl Command {
    /// `spec` is what [`resolve`] returned for `args`.
    pub fn parse(spec: &'static CommandSpec, args: Vec<Bytes>, shared: &Shared) -> Result<Command, Reply> {
        if spec.container.is_empty() && spec.name.starts_with("lock.") {
            let limits = LockLimits {
                max_key_bytes: shared.config.max_key_bytes,
                max_result_bytes: shared.config.max_result_bytes,
            };
            return LockCommand::parse(spec.name, Args::new(args, 1), limits).map(Command::Lock);
        }
        if let Some(command) = ConnectionCommand::parse(spec, &args)? {
            return Ok(Command::Connection(command));
        }
        ServerCommand::parse(spec, args).map(Command::Server)
    }

    pub fn execute(self, session: &mut Session, shared: &Shared) -> Action {
        match self {
            Command::Lock(command) => lock_action(command, session, shared),
            Command::Connection(command) => command.execute(session, shared),
            Command::Server(command) => Action::Reply(command.execute(session, shared)),
        }
    }
}

fn lock_action(command: LockCommand, session: &mut Session, shared: &Shared) -> Action {
    use crate::core::{ExtendOutcome, TryOutcome, UnlockOutcome, WaitOutcome, WaitStart};

    let core = &shared.core;
    let now = shared.clock.now();
    let conn = session.id();
    let reply = match command {
        LockCommand::Try(request) => {
            let (outcome, key) = request.apply(core, conn, now);
            // BUSY too: a NOQUEUE TRY renews a place the owner may have, binding it to this connection.
            if matches!(outcome, TryOutcome::Acquired { .. } | TryOutcome::Queued { .. } | TryOutcome::Busy { .. }) {
                session.note_bound(&key, shared);
            }
            Reply::from(outcome)
        }
        LockCommand::Wait(request) => match request.apply(core, conn, now) {
            (WaitStart::Ready(outcome), key) => {
                if matches!(outcome, WaitOutcome::Acquired { .. }) {
                    session.note_bound(&key, shared);
                }
                Reply::from(outcome)
            }
            (WaitStart::Blocked(ticket), key) => {
                session.note_bound(&key, shared);
                return Action::Block { ticket, timeout: request.timeout };
            }
        },
        LockCommand::Unlock(request) => {
            let outcome = request.apply(core, now);
            if outcome == UnlockOutcome::HandedOff {
                return Action::ReplyAfterHandoff(Reply::from(outcome));
            }
            Reply::from(outcome)
        }
        LockCommand::Extend(request) => {
            let outcome = core.extend(&request.key, &request.owner, request.token, request.lease_ms, conn, now);
            if outcome == ExtendOutcome::Extended
                && let Some(key) = core.shared_key(&request.key)
            {
                session.note_bound(&key, shared);
            }
            Reply::from(outcome)
        }
        LockCommand::Cancel { key, owner } => Reply::Int(i64::from(core.cancel(&key, &owner, now))),
        LockCommand::Info { key } => Reply::from(core.info(&key, now).unwrap_or_default()),
    };
    Action::Reply(reply)
}
