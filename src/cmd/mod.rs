//! Commands: a request is looked up in the command table, checked for arity, parsed into a typed
//! command by one exhaustive match on the table's [`CommandId`], then executed against the session
//! and the shared server state.

pub(crate) mod action;
pub(crate) mod connection;
pub(crate) mod lock;
pub(crate) mod parse;
pub(crate) mod server;
pub(crate) mod table;

use bytes::Bytes;

pub(crate) use self::action::Action;
use self::connection::{ClientCommand, ConnectionCommand};
use self::lock::{LockCommand, LockLimits};
use self::parse::{Args, ParseResult};
use self::server::ServerCommand;
use self::table::{CommandId, CommandSpec};
use crate::context::Shared;
use crate::errors;
use crate::memory;
use crate::reply::Reply;
use crate::session::Session;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Lock(LockCommand),
    Connection(ConnectionCommand),
    Server(ServerCommand),
}

/// The table entry for a request, with its subcommand resolved and arity checked.
pub(crate) fn resolve(args: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
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

/// Commands a client may send before it has authenticated: Redis's `no_auth` flag.
pub(crate) fn allowed_unauthenticated(spec: &CommandSpec) -> bool {
    spec.flags.contains(&"no_auth")
}

impl Command {
    /// `spec` is what [`resolve`] returned for `args`.
    pub(crate) fn parse(spec: &'static CommandSpec, args: Vec<Bytes>, limits: LockLimits) -> ParseResult<Command> {
        use ClientCommand as Client;
        use CommandId as Id;
        use ConnectionCommand as Conn;
        let mut args = Args::new(args, if spec.container.is_empty() { 1 } else { 2 });
        let command = match spec.id {
            Id::LockTry => Command::Lock(lock::parse_try(args, limits)?),
            Id::LockWait => Command::Lock(lock::parse_wait(args, limits)?),
            Id::LockUnlock => Command::Lock(lock::parse_unlock(args, limits)?),
            Id::LockExtend => Command::Lock(lock::parse_extend(args, limits)?),
            Id::LockCancel => Command::Lock(lock::parse_cancel(args, limits)?),
            Id::LockInfo => Command::Lock(lock::parse_info(args, limits)?),
            Id::Ping => Command::Connection(connection::parse_ping(args)?),
            Id::Echo => Command::Connection(Conn::Echo(args.next_bytes()?)),
            Id::Hello => Command::Connection(connection::parse_hello(args)?),
            Id::Auth => Command::Connection(connection::parse_auth(args)?),
            Id::Select => Command::Connection(Conn::Select(args.next_int()?)),
            Id::Quit => Command::Connection(Conn::Quit),
            Id::Reset => Command::Connection(Conn::Reset),
            Id::ClientId => Command::Connection(Conn::Client(Client::Id)),
            Id::ClientSetName => Command::Connection(Conn::Client(Client::SetName(args.next_bytes()?))),
            Id::ClientGetName => Command::Connection(Conn::Client(Client::GetName)),
            Id::ClientSetInfo => Command::Connection(Conn::Client(connection::parse_client_setinfo(args)?)),
            Id::ClientInfo => Command::Connection(Conn::Client(Client::Info)),
            Id::ClientList => Command::Connection(Conn::Client(connection::parse_client_list(args)?)),
            Id::ClientKill => Command::Connection(Conn::Client(connection::parse_client_kill(args)?)),
            Id::ClientUnblock => Command::Connection(Conn::Client(connection::parse_client_unblock(args)?)),
            Id::ClientNoEvict | Id::ClientNoTouch => {
                Command::Connection(Conn::Client(connection::parse_client_flag(args)?))
            }
            Id::ClientHelp => Command::Connection(Conn::Client(Client::Help)),
            Id::Info => Command::Server(ServerCommand::Info(args.rest())),
            Id::DbSize => Command::Server(ServerCommand::DbSize),
            Id::Command => Command::Server(ServerCommand::CommandAll),
            Id::CommandCount => Command::Server(ServerCommand::CommandCount),
            Id::CommandInfo => Command::Server(ServerCommand::CommandInfo(args.rest())),
            Id::CommandDocs => Command::Server(ServerCommand::CommandDocs(args.rest())),
            Id::CommandList => Command::Server(server::parse_command_list(args)?),
            Id::CommandHelp => Command::Server(ServerCommand::CommandHelp),
            Id::ConfigGet => Command::Server(ServerCommand::ConfigGet(args.rest())),
            Id::ConfigSet => Command::Server(ServerCommand::ConfigUnsupported),
            Id::ConfigResetStat => Command::Server(ServerCommand::ConfigResetStat),
            Id::ConfigHelp => Command::Server(ServerCommand::ConfigHelp),
            // resolve() always descends into a container's subcommands: its arity needs one.
            Id::Client | Id::Config => return Err(Reply::error(errors::SYNTAX)),
        };
        Ok(command)
    }

    /// Over `--maxmemory` what would add state is refused, while releases, reads and connection
    /// commands go on, so that the server drains instead of growing until it dies.
    fn refused_for_memory(&self, shared: &Shared) -> bool {
        matches!(self, Command::Lock(command) if command.adds_state())
            && memory::over_maxmemory(shared.config.maxmemory)
    }

    pub(crate) fn execute(self, session: &mut Session, shared: &Shared) -> Action {
        if self.refused_for_memory(shared) {
            return Action::Reply(Reply::error(errors::OOM));
        }
        match self {
            Command::Lock(command) => command.execute(session, shared),
            Command::Connection(command) => command.execute(session, shared),
            Command::Server(command) => Action::Reply(command.execute(shared)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const LIMITS: LockLimits = LockLimits { max_key_bytes: 64, max_result_bytes: 64 };

    fn words(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|word| Bytes::copy_from_slice(word.as_bytes())).collect()
    }

    fn every_spec() -> impl Iterator<Item = &'static CommandSpec> {
        table::COMMANDS.iter().flat_map(|spec| std::iter::once(spec).chain(spec.subcommands))
    }

    /// One valid request per table entry that a client can send (containers are reached only
    /// through their subcommands).
    const SAMPLES: &[&str] = &[
        "LOCK.TRY k o PX 10 NOQUEUE",
        "LOCK.WAIT k o 100 PX 10",
        "LOCK.UNLOCK k o 7 SUCCESS RESULT r KEEP 5",
        "LOCK.EXTEND k o 7 100",
        "LOCK.CANCEL k o",
        "LOCK.INFO k",
        "PING",
        "ECHO hi",
        "HELLO 3 AUTH default pw SETNAME n",
        "AUTH default pw",
        "SELECT 0",
        "QUIT",
        "RESET",
        "INFO locks",
        "DBSIZE",
        "COMMAND",
        "COMMAND COUNT",
        "COMMAND DOCS ping",
        "COMMAND INFO ping",
        "COMMAND LIST FILTERBY ACLCAT fast",
        "COMMAND HELP",
        "CLIENT ID",
        "CLIENT SETNAME n",
        "CLIENT GETNAME",
        "CLIENT SETINFO LIB-NAME x",
        "CLIENT INFO",
        "CLIENT LIST TYPE normal",
        "CLIENT KILL ID 1 SKIPME no",
        "CLIENT UNBLOCK 1 ERROR",
        "CLIENT NO-EVICT on",
        "CLIENT NO-TOUCH off",
        "CLIENT HELP",
        "CONFIG GET *",
        "CONFIG SET maxclients 1",
        "CONFIG RESETSTAT",
        "CONFIG HELP",
    ];

    #[test]
    fn ids_are_unique() {
        let mut seen = HashSet::new();
        for spec in every_spec() {
            assert!(seen.insert(spec.id), "{} repeats the id {:?}", spec.full_name(), spec.id);
        }
    }

    #[test]
    fn every_table_entry_parses() {
        let mut covered = HashSet::new();
        for line in SAMPLES {
            let args = words(line);
            let spec = resolve(&args).unwrap_or_else(|reply| panic!("{line}: {reply:?}"));
            covered.insert(spec.id);
            if let Err(reply) = Command::parse(spec, args, LIMITS) {
                panic!("{line}: {reply:?}");
            }
        }
        for spec in every_spec().filter(|spec| !spec.has_subcommands() || spec.id == CommandId::Command) {
            assert!(covered.contains(&spec.id), "no sample request for {}", spec.full_name());
        }
    }

    #[test]
    fn only_no_auth_commands_run_before_auth() {
        let allowed: Vec<String> =
            every_spec().filter(|spec| allowed_unauthenticated(spec)).map(|spec| spec.full_name()).collect();
        assert_eq!(allowed, ["hello", "auth", "quit", "reset"]);
    }
}
