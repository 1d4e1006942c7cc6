//! Commands: a request is looked up in the command table, checked for arity, parsed into a typed
//! command by one exhaustive match on the table's [`CommandId`], then executed against the session
//! and the shared server state.

pub(crate) mod acl;
pub(crate) mod action;
pub(crate) mod cluster;
pub(crate) mod connection;
pub(crate) mod keyspace;
pub(crate) mod lock;
pub(crate) mod parse;
pub(crate) mod pubsub;
pub(crate) mod server;
pub(crate) mod table;

use bytes::Bytes;

use self::acl::AclCommand;
pub(crate) use self::action::{Action, Deferred, Waiting};
use self::cluster::{ClusterCommand, MembershipChange};
use self::connection::{ClientCommand, ConnectionCommand};
use self::keyspace::KeyspaceCommand;
use self::lock::{LockCommand, LockLimits};
use self::parse::{Args, ParseResult};
use self::pubsub::PubSubCommand;
use self::server::ServerCommand;
use self::table::{CommandId, CommandSpec};
use crate::acl::{ChannelUse, Denial, KeyAccess, Reason, User};
use crate::context::Shared;
use crate::errors;
use crate::memory;
use crate::pubsub::Kind;
use crate::reply::Reply;
use crate::session::Session;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Lock(LockCommand),
    Connection(ConnectionCommand),
    Server(ServerCommand),
    Keyspace(KeyspaceCommand),
    Acl(AclCommand),
    PubSub(PubSubCommand),
    Cluster(ClusterCommand),
    Membership(MembershipChange),
    Shutdown,
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

/// Whether this connection may run this request: it must have authenticated (unless the command
/// is `no_auth`), and its user must be allowed the command and its keys. A refusal is counted and
/// recorded in ACL LOG.
pub(crate) fn authorize(spec: &CommandSpec, args: &[Bytes], session: &Session, shared: &Shared) -> Result<(), Reply> {
    if allowed_unauthenticated(spec) {
        return Ok(());
    }
    if !session.authenticated() {
        return Err(Reply::error(errors::NOAUTH));
    }
    let user = session.user();
    let Err(denial) = permission(user, spec, args) else {
        return Ok(());
    };
    let argument = |index: usize| String::from_utf8_lossy(&args[index]).into_owned();
    let (reason, object, error) = match denial {
        Denial::Command => (Reason::Command, spec.full_name(), errors::noperm_command(&user.name, &spec.full_name())),
        Denial::Key(index) => (Reason::Key, argument(index), errors::NOPERM_KEY.to_owned()),
        Denial::Channel(index) => (Reason::Channel, argument(index), errors::NOPERM_CHANNEL.to_owned()),
    };
    let now = std::time::Instant::now();
    shared.acl.denied(reason, object, &user.name, session.entry.info_line(now), now);
    Err(Reply::error(error))
}

/// The user's verdict on a request (ACL DRYRUN asks it too): the command, then each key, read
/// and, for a command that writes, written, then each pub/sub channel.
pub(crate) fn permission(user: &User, spec: &CommandSpec, args: &[Bytes]) -> Result<(), Denial> {
    let access = KeyAccess { read: true, write: spec.is_write() };
    user.check(spec.id.bit(), key_arguments(spec, args), access, channel_arguments(spec, args))
}

/// The channels a request names, which the ACL checks like keys. UNSUBSCRIBE needs no permission.
fn channel_arguments<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> Option<ChannelUse<'a>> {
    let (names, patterns) = match spec.id {
        CommandId::Subscribe => (args.get(1..)?, false),
        CommandId::PSubscribe => (args.get(1..)?, true),
        CommandId::Publish => (args.get(1..2)?, false),
        _ => return None,
    };
    Some(ChannelUse { first: 1, names, patterns })
}

/// Redis's RESP2 subscribed context runs only these (see [`Session::in_subscribed_context`]).
pub(crate) fn allowed_while_subscribed(spec: &CommandSpec) -> bool {
    use CommandId as Id;
    matches!(
        spec.id,
        Id::Subscribe | Id::PSubscribe | Id::Unsubscribe | Id::PUnsubscribe | Id::Ping | Id::Quit | Id::Reset
    )
}

/// A request's keys with their argument indexes, from the table's first key, last key (negative:
/// from the end) and step, as Redis finds them.
fn key_arguments<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> impl Iterator<Item = (usize, &'a [u8])> {
    let first = usize::try_from(spec.first_key).unwrap_or(0);
    let last = match usize::try_from(spec.last_key) {
        Ok(last) => Some(last),
        Err(_) => args.len().checked_sub(spec.last_key.unsigned_abs() as usize),
    };
    let end = last.map_or(0, |last| (last + 1).min(args.len()));
    let keys = if first == 0 { 0..0 } else { first..end };
    let step = usize::try_from(spec.key_step).unwrap_or(1).max(1);
    keys.step_by(step).map(move |index| (index, &args[index][..]))
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
            Id::Scan => Command::Keyspace(keyspace::parse_scan(args, limits)?),
            Id::Type => Command::Keyspace(KeyspaceCommand::Type(args.next_bytes()?)),
            Id::Exists => Command::Keyspace(KeyspaceCommand::Exists(args.rest())),
            Id::MemoryUsage => Command::Keyspace(keyspace::parse_memory_usage(args)?),
            Id::MemoryHelp => Command::Keyspace(KeyspaceCommand::MemoryHelp),
            Id::BgRewriteAof => Command::Server(ServerCommand::BgRewriteAof),
            Id::Time => Command::Server(ServerCommand::Time),
            Id::Role => Command::Server(ServerCommand::Role),
            Id::Shutdown => {
                server::parse_shutdown(args)?;
                Command::Shutdown
            }
            Id::Command => Command::Server(ServerCommand::CommandAll),
            Id::CommandCount => Command::Server(ServerCommand::CommandCount),
            Id::CommandInfo => Command::Server(ServerCommand::CommandInfo(args.rest())),
            Id::CommandDocs => Command::Server(ServerCommand::CommandDocs(args.rest())),
            Id::CommandList => Command::Server(server::parse_command_list(args)?),
            Id::CommandHelp => Command::Server(ServerCommand::CommandHelp),
            Id::ConfigGet => Command::Server(ServerCommand::ConfigGet(args.rest())),
            Id::ConfigSet => Command::Server(server::parse_config_set(args)?),
            Id::ConfigResetStat => Command::Server(ServerCommand::ConfigResetStat),
            Id::ConfigHelp => Command::Server(ServerCommand::ConfigHelp),
            Id::AclCat => Command::Acl(acl::parse_cat(args)?),
            Id::AclDelUser => Command::Acl(AclCommand::DelUser(args.rest())),
            Id::AclDryRun => Command::Acl(acl::parse_dryrun(args)?),
            Id::AclGenPass => Command::Acl(acl::parse_genpass(args)?),
            Id::AclGetUser => Command::Acl(AclCommand::GetUser(args.next_bytes()?)),
            Id::AclList => Command::Acl(AclCommand::List),
            Id::AclLoad => Command::Acl(AclCommand::Load),
            Id::AclLog => Command::Acl(acl::parse_log(args)?),
            Id::AclSave => Command::Acl(AclCommand::Save),
            Id::AclSetUser => Command::Acl(acl::parse_setuser(args)?),
            Id::AclUsers => Command::Acl(AclCommand::Users),
            Id::AclWhoAmI => Command::Acl(AclCommand::WhoAmI),
            Id::AclHelp => Command::Acl(AclCommand::Help),
            Id::Subscribe => Command::PubSub(PubSubCommand::Subscribe(Kind::Channel, args.rest())),
            Id::PSubscribe => Command::PubSub(PubSubCommand::Subscribe(Kind::Pattern, args.rest())),
            Id::Unsubscribe => Command::PubSub(PubSubCommand::Unsubscribe(Kind::Channel, args.rest())),
            Id::PUnsubscribe => Command::PubSub(PubSubCommand::Unsubscribe(Kind::Pattern, args.rest())),
            Id::Publish => Command::PubSub(pubsub::parse_publish(args)?),
            Id::PubSubChannels => Command::PubSub(pubsub::parse_channels(args)?),
            Id::PubSubNumSub => Command::PubSub(PubSubCommand::NumSub(args.rest())),
            Id::PubSubNumPat => Command::PubSub(PubSubCommand::NumPat),
            Id::PubSubHelp => Command::PubSub(PubSubCommand::Help),
            Id::Monitor => Command::PubSub(PubSubCommand::Monitor),
            Id::ClusterSlots => Command::Cluster(ClusterCommand::Slots),
            Id::ClusterShards => Command::Cluster(ClusterCommand::Shards),
            Id::ClusterNodes => Command::Cluster(ClusterCommand::Nodes),
            Id::ClusterInfo => Command::Cluster(ClusterCommand::Info),
            Id::ClusterMyId => Command::Cluster(ClusterCommand::MyId),
            Id::ClusterMyShardId => Command::Cluster(ClusterCommand::MyShardId),
            Id::ClusterKeySlot => Command::Cluster(ClusterCommand::KeySlot(args.next_bytes()?)),
            Id::ClusterHelp => Command::Cluster(ClusterCommand::Help),
            Id::ClusterAddNode => Command::Membership(cluster::parse_add_node(args)?),
            Id::ClusterForget => {
                Command::Membership(MembershipChange::Forget(cluster::parse_node_id(&args.next_bytes()?)?))
            }
            Id::ReadOnly | Id::ReadWrite | Id::Asking => Command::Cluster(ClusterCommand::ConnectionMode),
            // resolve() always descends into a container's subcommands: its arity needs one.
            Id::Client | Id::Config | Id::Memory | Id::Acl | Id::PubSub | Id::Cluster => {
                return Err(Reply::error(errors::SYNTAX));
            }
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
            Command::Keyspace(command) => Action::Reply(command.execute(shared)),
            Command::Acl(command) => Action::Reply(command.execute(session, shared)),
            Command::PubSub(command) => command.execute(session, shared),
            Command::Cluster(command) => Action::Reply(command.execute(shared)),
            Command::Membership(change) => change.execute(shared),
            Command::Shutdown => Action::Shutdown,
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
        "SCAN 0 MATCH pull:* COUNT 5 TYPE lock",
        "TYPE k",
        "EXISTS a b a",
        "MEMORY USAGE k SAMPLES 2",
        "MEMORY HELP",
        "BGREWRITEAOF",
        "SHUTDOWN NOSAVE NOW",
        "TIME",
        "ROLE",
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
        "CONFIG SET notify-lock-events yes",
        "CONFIG RESETSTAT",
        "CONFIG HELP",
        "ACL CAT fast",
        "ACL DELUSER a b",
        "ACL DRYRUN default lock.info k",
        "ACL GENPASS 64",
        "ACL GETUSER default",
        "ACL LIST",
        "ACL LOAD",
        "ACL LOG RESET",
        "ACL SAVE",
        "ACL SETUSER node on >pw ~pull:* +@read",
        "ACL USERS",
        "ACL WHOAMI",
        "ACL HELP",
        "SUBSCRIBE a b",
        "PSUBSCRIBE a*",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE a*",
        "PUBLISH news hello",
        "PUBSUB CHANNELS __lock__:*",
        "PUBSUB NUMSUB a b",
        "PUBSUB NUMPAT",
        "PUBSUB HELP",
        "MONITOR",
        "CLUSTER SLOTS",
        "CLUSTER SHARDS",
        "CLUSTER NODES",
        "CLUSTER INFO",
        "CLUSTER MYID",
        "CLUSTER MYSHARDID",
        "CLUSTER KEYSLOT {user1000}.following",
        "CLUSTER HELP",
        "CLUSTER ADDNODE 4 127.0.0.1 7004 17004",
        "CLUSTER FORGET 4",
        "READONLY",
        "READWRITE",
        "ASKING",
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
    fn acl_rules_name_every_table_entry() {
        let catalogue = table::acl_catalogue();
        for spec in every_spec() {
            assert!(catalogue.command(&spec.full_name()).is_some(), "{}", spec.full_name());
            for category in spec.acl_categories {
                let category = category.trim_start_matches('@');
                assert!(crate::acl::CATEGORIES.contains(&category), "{}: @{category}", spec.full_name());
            }
        }
    }

    #[test]
    fn keys_come_from_the_table() {
        let keys = |line: &str| {
            let args = words(line);
            let spec = resolve(&args).unwrap();
            key_arguments(spec, &args).map(|(index, key)| (index, key.to_vec())).collect::<Vec<_>>()
        };
        assert_eq!(keys("LOCK.TRY pull:a o PX 10"), [(1, b"pull:a".to_vec())]);
        assert_eq!(keys("LOCK.INFO k"), [(1, b"k".to_vec())]);
        assert!(keys("PING").is_empty() && keys("CLIENT KILL ID 1").is_empty());
    }

    #[test]
    fn permission_checks_the_command_then_its_keys() {
        let acl = crate::acl::Acl::new(table::acl_catalogue(), None, None).unwrap();
        acl.set_user("node", &["on", "nopass", "~pull:*", "%R~view:*", "+@write", "+lock.info", "-@dangerous"])
            .unwrap();
        let node = acl.user("node").unwrap();
        let verdict = |line: &str| {
            let args = words(line);
            permission(&node, resolve(&args).unwrap(), &args)
        };
        assert_eq!(verdict("LOCK.TRY pull:a o"), Ok(()));
        assert_eq!(verdict("LOCK.TRY other o"), Err(Denial::Key(1)));
        assert_eq!(verdict("LOCK.TRY view:a o"), Err(Denial::Key(1)), "a write needs write access");
        assert_eq!(verdict("LOCK.INFO view:a"), Ok(()));
        assert_eq!(verdict("CLIENT KILL ID 1"), Err(Denial::Command));
        assert_eq!(verdict("CONFIG RESETSTAT"), Err(Denial::Command));
        assert_eq!(verdict("PING"), Err(Denial::Command), "@connection was not granted");
        assert_eq!(permission(&acl.default_user(), resolve(&words("CLIENT KILL ID 1")).unwrap(), &[]), Ok(()));
    }

    #[test]
    fn only_no_auth_commands_run_before_auth() {
        let allowed: Vec<String> =
            every_spec().filter(|spec| allowed_unauthenticated(spec)).map(|spec| spec.full_name()).collect();
        assert_eq!(allowed, ["hello", "auth", "quit", "reset"]);
    }
}
