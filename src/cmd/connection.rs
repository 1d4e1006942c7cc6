//! Connection commands that standard clients send when they connect or manage themselves:
//! PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET and the CLIENT family.

use std::time::Instant;

use bytes::Bytes;

use super::action::Action;
use super::cluster::redis_mode;
use super::parse::{Args, ParseResult, eq_ignore_case, parse_int};
use crate::acl::DEFAULT_USER;
use crate::clients::Control;
use crate::codec::Protocol;
use crate::config::REDIS_COMPAT_VERSION;
use crate::context::Shared;
use crate::errors;
use crate::reply::Reply;
use crate::session::Session;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectionCommand {
    Ping(Option<Bytes>),
    Echo(Bytes),
    Hello { protocol: Option<Protocol>, auth: Option<(Bytes, Bytes)>, name: Option<Bytes> },
    Auth { user: Option<Bytes>, password: Bytes },
    Select(i64),
    Quit,
    Reset,
    Client(ClientCommand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientCommand {
    Id,
    SetName(Bytes),
    GetName,
    SetInfo {
        lib_name: bool,
        value: Bytes,
    },
    Info,
    List {
        ids: Option<Vec<u64>>,
        kind: Option<ClientKind>,
    },
    Kill {
        filter: KillFilter,
        skip_me: bool,
        legacy: bool,
    },
    Unblock {
        id: u64,
        error: bool,
    },
    /// CLIENT NO-EVICT / NO-TOUCH: accepted for compatibility; nothing is evicted or touched here.
    Flag,
    Help,
}

/// CLIENT LIST's TYPE: a subscriber is `pubsub`, anyone else `normal` (monitors too, as in
/// Redis); baton has no masters or replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    Normal,
    PubSub,
    Replica,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct KillFilter {
    pub(crate) id: Option<u64>,
    pub(crate) addr: Option<Bytes>,
    pub(crate) user: Option<Bytes>,
}

fn syntax() -> Reply {
    Reply::error(errors::SYNTAX)
}

pub(crate) fn parse_ping(mut args: Args) -> ParseResult<ConnectionCommand> {
    if args.remaining() > 1 {
        return Err(Reply::error(errors::wrong_arity("ping")));
    }
    Ok(ConnectionCommand::Ping(args.next_optional()))
}

pub(crate) fn parse_auth(mut args: Args) -> ParseResult<ConnectionCommand> {
    let user = match args.remaining() {
        1 => None,
        2 => Some(args.next_bytes()?),
        _ => return Err(syntax()),
    };
    Ok(ConnectionCommand::Auth { user, password: args.next_bytes()? })
}

impl ConnectionCommand {
    pub(crate) fn execute(self, session: &mut Session, shared: &Shared) -> Action {
        let reply = match self {
            // Subscribed RESP2 clients read replies and messages from one stream: Redis answers
            // their PING as a message-shaped array.
            ConnectionCommand::Ping(message) if session.in_subscribed_context() => {
                Reply::Array(vec![Reply::bulk_static("pong"), Reply::Bulk(message.unwrap_or_default())])
            }
            ConnectionCommand::Ping(None) => Reply::Status("PONG".into()),
            ConnectionCommand::Ping(Some(message)) | ConnectionCommand::Echo(message) => Reply::Bulk(message),
            ConnectionCommand::Hello { protocol, auth, name } => hello(session, shared, protocol, auth, name),
            ConnectionCommand::Auth { user, password } => match log_in(session, shared, user.as_deref(), &password) {
                Ok(()) => Reply::ok(),
                Err(reply) => reply,
            },
            ConnectionCommand::Select(0) => Reply::ok(),
            ConnectionCommand::Select(_) => Reply::error(errors::DB_OUT_OF_RANGE),
            ConnectionCommand::Quit => return Action::Close(Reply::ok()),
            ConnectionCommand::Reset => {
                session.reset(shared);
                Reply::Status("RESET".into())
            }
            ConnectionCommand::Client(command) => client(command, session, shared),
        };
        Action::Reply(reply)
    }
}

pub(crate) fn parse_hello(mut args: Args) -> ParseResult<ConnectionCommand> {
    let mut protocol = None;
    let mut auth = None;
    let mut name = None;
    if let Some(version) = args.next_optional() {
        protocol = Some(match parse_int(&version) {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Err(Reply::error(errors::NOPROTO)),
            None => return Err(Reply::error(errors::HELLO_PROTOVER_NOT_INTEGER)),
        });
    }
    while let Some(option) = args.next_optional() {
        let missing = || Reply::error(errors::hello_option(&option));
        if eq_ignore_case(&option, "AUTH") {
            match (args.next_optional(), args.next_optional()) {
                (Some(user), Some(password)) => auth = Some((user, password)),
                _ => return Err(missing()),
            }
        } else if eq_ignore_case(&option, "SETNAME") {
            name = Some(args.next_optional().ok_or_else(missing)?);
        } else {
            return Err(missing());
        }
    }
    Ok(ConnectionCommand::Hello { protocol, auth, name })
}

/// AUTH and HELLO AUTH: a user given by name, or the default user. As in Redis, AUTH with only
/// a password is an error while the default user needs none. A failure is counted, recorded in
/// ACL LOG and logged (at most a line a second).
fn log_in(session: &mut Session, shared: &Shared, user: Option<&[u8]>, password: &[u8]) -> Result<(), Reply> {
    if user.is_none() && shared.acl.default_user_needs_no_password() {
        return Err(Reply::error(errors::AUTH_NOT_CONFIGURED));
    }
    let name = user.unwrap_or(DEFAULT_USER.as_bytes());
    match shared.acl.authenticate(name, password) {
        Some(user) => {
            session.log_in(user);
            Ok(())
        }
        None => {
            let now = Instant::now();
            shared.acl.auth_failed(name, session.entry.addr, session.entry.info_line(now), now);
            Err(Reply::error(errors::WRONGPASS))
        }
    }
}

fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&byte| (b'!'..=b'~').contains(&byte))
}

fn hello(
    session: &mut Session,
    shared: &Shared,
    protocol: Option<Protocol>,
    auth: Option<(Bytes, Bytes)>,
    name: Option<Bytes>,
) -> Reply {
    if let Some((user, password)) = &auth
        && let Err(reply) = log_in(session, shared, Some(user), password)
    {
        return reply;
    }
    if !session.authenticated() {
        return Reply::error(errors::HELLO_NOAUTH);
    }
    if name.as_ref().is_some_and(|name| !valid_client_name(name)) {
        return Reply::error(errors::CLIENT_NAME_SPACES);
    }
    if let Some(protocol) = protocol {
        session.entry.set_protocol(protocol);
    }
    if let Some(name) = name {
        session.entry.update(|state| state.name = (!name.is_empty()).then_some(name));
    }
    let field = Reply::bulk_static;
    Reply::Map(vec![
        (field("server"), field("redis")),
        (field("version"), field(REDIS_COMPAT_VERSION)),
        (field("proto"), Reply::Int(i64::from(session.entry.protocol().version()))),
        (field("id"), Reply::Int(id_int(session.id().get()))),
        (field("mode"), field(redis_mode(shared))),
        (field("role"), field(super::cluster::role(super::cluster::topology(shared).as_ref()))),
        (field("modules"), Reply::Array(Vec::new())),
        (field("baton_version"), field(env!("CARGO_PKG_VERSION"))),
    ])
}

fn id_int(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

pub(crate) fn parse_client_setinfo(mut args: Args) -> ParseResult<ClientCommand> {
    let attribute = args.next_bytes()?;
    let lib_name = if eq_ignore_case(&attribute, "LIB-NAME") {
        true
    } else if eq_ignore_case(&attribute, "LIB-VER") {
        false
    } else {
        return Err(Reply::error(errors::unrecognized_option(&attribute)));
    };
    Ok(ClientCommand::SetInfo { lib_name, value: args.next_bytes()? })
}

pub(crate) fn parse_client_unblock(mut args: Args) -> ParseResult<ClientCommand> {
    let id = args.next_unsigned(errors::NOT_AN_INTEGER)?;
    let error = match args.next_optional() {
        None => false,
        Some(mode) if eq_ignore_case(&mode, "TIMEOUT") => false,
        Some(mode) if eq_ignore_case(&mode, "ERROR") => true,
        Some(_) => return Err(Reply::error(errors::UNBLOCK_MODE)),
    };
    args.expect_end()?;
    Ok(ClientCommand::Unblock { id, error })
}

/// CLIENT NO-EVICT / NO-TOUCH take ON or OFF.
pub(crate) fn parse_client_flag(mut args: Args) -> ParseResult<ClientCommand> {
    if args.next_is("ON") || args.next_is("OFF") { Ok(ClientCommand::Flag) } else { Err(syntax()) }
}

pub(crate) fn parse_client_list(mut args: Args) -> ParseResult<ClientCommand> {
    let mut ids = None;
    let mut kind = None;
    while let Some(option) = args.next_optional() {
        if eq_ignore_case(&option, "TYPE") {
            let name = args.next_bytes()?;
            kind = Some(if eq_ignore_case(&name, "NORMAL") {
                ClientKind::Normal
            } else if eq_ignore_case(&name, "PUBSUB") {
                ClientKind::PubSub
            } else if ["MASTER", "REPLICA", "SLAVE"].iter().any(|k| eq_ignore_case(&name, k)) {
                ClientKind::Replica
            } else {
                return Err(Reply::error(errors::unknown_client_type(&name)));
            });
        } else if eq_ignore_case(&option, "ID") {
            let mut list = Vec::new();
            while args.remaining() > 0 {
                list.push(args.next_unsigned(errors::INVALID_CLIENT_ID)?);
            }
            if list.is_empty() {
                return Err(syntax());
            }
            ids = Some(list);
        } else {
            return Err(syntax());
        }
    }
    Ok(ClientCommand::List { ids, kind })
}

pub(crate) fn parse_client_kill(mut args: Args) -> ParseResult<ClientCommand> {
    if args.remaining() == 1 {
        let filter = KillFilter { addr: Some(args.next_bytes()?), ..KillFilter::default() };
        return Ok(ClientCommand::Kill { filter, skip_me: false, legacy: true });
    }
    let mut filter = KillFilter::default();
    let mut skip_me = true;
    while let Some(option) = args.next_optional() {
        if eq_ignore_case(&option, "ID") {
            filter.id = Some(args.next_unsigned(errors::INVALID_CLIENT_ID)?);
        } else if eq_ignore_case(&option, "ADDR") {
            filter.addr = Some(args.next_bytes()?);
        } else if eq_ignore_case(&option, "USER") {
            filter.user = Some(args.next_bytes()?);
        } else if eq_ignore_case(&option, "SKIPME") {
            skip_me = if args.next_is("YES") {
                true
            } else if args.next_is("NO") {
                false
            } else {
                return Err(syntax());
            };
        } else {
            return Err(syntax());
        }
    }
    if filter == KillFilter::default() {
        return Err(syntax());
    }
    Ok(ClientCommand::Kill { filter, skip_me, legacy: false })
}

fn client(command: ClientCommand, session: &mut Session, shared: &Shared) -> Reply {
    match command {
        ClientCommand::Id => Reply::Int(id_int(session.id().get())),
        ClientCommand::SetName(name) => {
            if !valid_client_name(&name) {
                return Reply::error(errors::CLIENT_NAME_SPACES);
            }
            session.entry.update(|state| state.name = (!name.is_empty()).then_some(name));
            Reply::ok()
        }
        ClientCommand::GetName => Reply::bulk_or_nil(session.entry.snapshot().name),
        ClientCommand::SetInfo { lib_name, value } => {
            if !valid_client_name(&value) {
                return Reply::error(errors::CLIENT_INFO_SPACES);
            }
            session.entry.update(
                |state| {
                    if lib_name { state.lib_name = Some(value) } else { state.lib_ver = Some(value) }
                },
            );
            Reply::ok()
        }
        ClientCommand::Info => Reply::bulk(format!("{}\n", session.entry.info_line(Instant::now()))),
        ClientCommand::List { ids, kind } => {
            let now = Instant::now();
            let mut text = String::new();
            for entry in shared.clients.all() {
                let kind_matches = match kind {
                    None => true,
                    Some(ClientKind::Normal) => !entry.snapshot().is_pubsub(),
                    Some(ClientKind::PubSub) => entry.snapshot().is_pubsub(),
                    Some(ClientKind::Replica) => false,
                };
                if kind_matches && ids.as_ref().is_none_or(|ids| ids.contains(&entry.id.get())) {
                    text.push_str(&entry.info_line(now));
                    text.push('\n');
                }
            }
            Reply::bulk(text)
        }
        ClientCommand::Kill { filter, skip_me, legacy } => {
            if let Some(user) = &filter.user
                && shared.acl.user(&String::from_utf8_lossy(user)).is_none()
            {
                return Reply::error(errors::client_kill_no_such_user(user));
            }
            let mut killed = 0;
            for entry in shared.clients.all() {
                let id_matches = filter.id.is_none_or(|id| id == entry.id.get());
                let addr_matches = filter.addr.as_ref().is_none_or(|addr| **addr == *entry.addr.to_string().as_bytes());
                let user_matches = filter
                    .user
                    .as_ref()
                    .is_none_or(|user| **user == *entry.snapshot().user.as_deref().unwrap_or(DEFAULT_USER).as_bytes());
                if id_matches && addr_matches && user_matches && !(skip_me && entry.id == session.id()) {
                    entry.send_control(Control::Kill);
                    killed += 1;
                }
            }
            match (legacy, killed) {
                (true, 0) => Reply::error(errors::NO_SUCH_CLIENT),
                (true, _) => Reply::ok(),
                (false, n) => Reply::Int(n),
            }
        }
        ClientCommand::Unblock { id, error } => match shared.clients.get(id) {
            Some(entry) if entry.is_blocked() => {
                entry.send_control(Control::Unblock { error });
                Reply::Int(1)
            }
            _ => Reply::Int(0),
        },
        ClientCommand::Flag => Reply::ok(),
        ClientCommand::Help => Reply::help(&[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ID -- Return the ID of the current connection.",
            "INFO -- Return information about the current client connection.",
            "LIST [TYPE normal|pubsub] [ID id ...] -- Return information about client connections.",
            "GETNAME -- Return the name of the current connection.",
            "SETNAME <name> -- Assign the name <name> to the current connection.",
            "SETINFO <LIB-NAME|LIB-VER> <value> -- Set client library name or version.",
            "KILL <ip:port> | KILL [ID <id>] [ADDR <ip:port>] [USER <username>] [SKIPME yes|no] -- Kill connections.",
            "UNBLOCK <clientid> [TIMEOUT|ERROR] -- End a blocked LOCK.WAIT of the client.",
            "NO-EVICT|NO-TOUCH <ON|OFF> -- Accepted for compatibility.",
            "HELP -- Print this help.",
        ]),
    }
}
