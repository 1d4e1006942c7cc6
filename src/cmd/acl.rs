//! The ACL family: ACL SETUSER / GETUSER / DELUSER / LIST / USERS / WHOAMI / CAT / LOG / DRYRUN /
//! GENPASS / LOAD / SAVE / HELP, parsed into typed requests and answered in Redis's shapes. The
//! users and rules themselves are `crate::acl`'s.

use std::time::Instant;

use bytes::Bytes;
use ring::rand::SecureRandom;

use super::parse::{Args, ParseResult, eq_ignore_case};
use super::{permission, resolve};
use crate::acl::{CATEGORIES, Denial, LogEntry};
use crate::clients::Control;
use crate::context::Shared;
use crate::errors;
use crate::reply::Reply;
use crate::session::Session;

/// ACL LOG's default number of entries, as in Redis.
const LOG_DEFAULT_COUNT: usize = 10;
const GENPASS_DEFAULT_BITS: u64 = 256;
const GENPASS_MAX_BITS: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AclCommand {
    Cat(Option<Bytes>),
    DelUser(Vec<Bytes>),
    DryRun { user: Bytes, request: Vec<Bytes> },
    GenPass { bits: u64 },
    GetUser(Bytes),
    List,
    Load,
    Log(LogRequest),
    Save,
    SetUser { user: Bytes, rules: Vec<Bytes> },
    Users,
    WhoAmI,
    Help,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogRequest {
    Show(usize),
    Reset,
}

pub(crate) fn parse_cat(mut args: Args) -> ParseResult<AclCommand> {
    let category = args.next_optional();
    args.expect_end()?;
    Ok(AclCommand::Cat(category))
}

pub(crate) fn parse_dryrun(mut args: Args) -> ParseResult<AclCommand> {
    let user = args.next_bytes()?;
    Ok(AclCommand::DryRun { user, request: args.rest() })
}

pub(crate) fn parse_genpass(mut args: Args) -> ParseResult<AclCommand> {
    let bits = match args.next_optional() {
        None => GENPASS_DEFAULT_BITS,
        Some(bits) => match super::parse::parse_int(&bits) {
            Some(bits @ 1..) if bits.unsigned_abs() <= GENPASS_MAX_BITS => bits.unsigned_abs(),
            _ => return Err(Reply::error(errors::ACL_GENPASS_BITS)),
        },
    };
    args.expect_end()?;
    Ok(AclCommand::GenPass { bits })
}

pub(crate) fn parse_log(mut args: Args) -> ParseResult<AclCommand> {
    let request = match args.next_optional() {
        None => LogRequest::Show(LOG_DEFAULT_COUNT),
        Some(word) if eq_ignore_case(&word, "RESET") => LogRequest::Reset,
        Some(count) => match super::parse::parse_int(&count) {
            Some(count) => LogRequest::Show(usize::try_from(count).unwrap_or(0)),
            None => return Err(Reply::error(errors::NOT_AN_INTEGER)),
        },
    };
    args.expect_end()?;
    Ok(AclCommand::Log(request))
}

pub(crate) fn parse_setuser(mut args: Args) -> ParseResult<AclCommand> {
    let user = args.next_bytes()?;
    Ok(AclCommand::SetUser { user, rules: args.rest() })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bulks(items: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Reply {
    Reply::Array(items.into_iter().map(Reply::bulk).collect())
}

impl AclCommand {
    pub(crate) fn execute(self, session: &Session, shared: &Shared) -> Reply {
        let acl = &shared.acl;
        match self {
            AclCommand::Cat(None) => bulks(CATEGORIES),
            AclCommand::Cat(Some(category)) => match acl.catalogue().names_in(&text(&category)) {
                Some(names) => bulks(names),
                None => Reply::error(errors::acl_unknown_category(&category)),
            },
            AclCommand::DelUser(names) => {
                let names: Vec<String> = names.iter().map(|name| text(name)).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                match acl.delete_users(&names) {
                    Ok(deleted) => {
                        disconnect_users(shared, &names);
                        Reply::Int(i64::try_from(deleted).unwrap_or(i64::MAX))
                    }
                    Err(error) => Reply::error(error),
                }
            }
            AclCommand::DryRun { user, request } => dry_run(shared, &user, &request),
            AclCommand::GenPass { bits } => gen_pass(bits),
            AclCommand::GetUser(name) => acl.user(&text(&name)).map_or(Reply::Nil, |user| {
                let rules = user.rules.read();
                let field = Reply::bulk_static;
                Reply::Map(vec![
                    (field("flags"), bulks(rules.flags())),
                    (field("passwords"), bulks(rules.password_hashes())),
                    (field("commands"), Reply::bulk(rules.describe_commands())),
                    (field("keys"), Reply::bulk(rules.describe_keys())),
                    (field("channels"), Reply::bulk(rules.describe_channels())),
                    (field("selectors"), Reply::Array(Vec::new())),
                ])
            }),
            AclCommand::List => bulks(acl.lines()),
            AclCommand::Load => match acl.load() {
                Ok(removed) => {
                    disconnect_users(shared, &removed.iter().map(String::as_str).collect::<Vec<_>>());
                    Reply::ok()
                }
                Err(error) => Reply::error(error),
            },
            AclCommand::Log(LogRequest::Reset) => {
                acl.log_reset();
                Reply::ok()
            }
            AclCommand::Log(LogRequest::Show(count)) => {
                let now = Instant::now();
                Reply::Array(acl.log_entries(count).into_iter().map(|entry| log_entry(entry, now)).collect())
            }
            AclCommand::Save => match acl.save() {
                Ok(()) => Reply::ok(),
                Err(error) => Reply::error(error),
            },
            AclCommand::SetUser { user, rules } => {
                let Ok(name) = std::str::from_utf8(&user) else {
                    return Reply::error(errors::ACL_BAD_USERNAME);
                };
                let rules: Vec<String> = rules.iter().map(|rule| text(rule)).collect();
                match acl.set_user(name, &rules.iter().map(String::as_str).collect::<Vec<_>>()) {
                    Ok(()) => Reply::ok(),
                    Err(error) => Reply::error(error),
                }
            }
            AclCommand::Users => bulks(acl.usernames()),
            AclCommand::WhoAmI => Reply::bulk(&*session.user().name),
            AclCommand::Help => Reply::help(&[
                "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CAT [<category>]",
                "    List all commands that belong to <category>, or all command categories",
                "    when no category is specified.",
                "DELUSER <username> [<username> ...]",
                "    Delete a list of users.",
                "DRYRUN <username> <command> [<arg> ...]",
                "    Returns whether the user can execute the given command without executing the command.",
                "GETUSER <username>",
                "    Get the user's details.",
                "GENPASS [<bits>]",
                "    Generate a secure 256-bit user password. The optional `bits` argument can",
                "    be used to specify a different size.",
                "LIST",
                "    Show users details in config file format.",
                "LOAD",
                "    Reload users from the ACL file.",
                "LOG [<count> | RESET]",
                "    Show the ACL log entries.",
                "SAVE",
                "    Save the current config to the ACL file.",
                "SETUSER <username> <attribute> [<attribute> ...]",
                "    Create or modify a user with the specified attributes.",
                "USERS",
                "    List all the registered usernames.",
                "WHOAMI",
                "    Return the current connection username.",
                "HELP",
                "    Prints this help.",
            ]),
        }
    }
}

/// Connections of users that are gone are closed, as Redis does, so that nobody keeps
/// permissions that no longer exist.
fn disconnect_users(shared: &Shared, names: &[&str]) {
    for client in shared.clients.all() {
        if client.snapshot().user.is_some_and(|user| names.contains(&&*user)) {
            client.send_control(Control::Kill);
        }
    }
}

fn dry_run(shared: &Shared, user: &[u8], request: &[Bytes]) -> Reply {
    let Some(user) = shared.acl.user(&text(user)) else {
        return Reply::error(errors::acl_no_such_user(user));
    };
    let spec = match resolve(request) {
        Ok(spec) => spec,
        Err(_) if request.first().is_some_and(|name| super::table::lookup(name).is_none()) => {
            return Reply::error(errors::acl_no_such_command(&request[0]));
        }
        Err(reply) => return reply,
    };
    match permission(&user, spec, request) {
        Ok(()) => Reply::ok(),
        Err(Denial::Command) => Reply::bulk(errors::dryrun_no_command(&spec.full_name())),
        Err(Denial::Key(index)) => Reply::bulk(errors::dryrun_no_key(&request[index])),
        Err(Denial::Channel(index)) => Reply::bulk(errors::dryrun_no_channel(&request[index])),
    }
}

fn gen_pass(bits: u64) -> Reply {
    let hex_digits = usize::try_from(bits.div_ceil(4)).unwrap_or(usize::MAX);
    let mut random = vec![0u8; hex_digits.div_ceil(2)];
    if ring::rand::SystemRandom::new().fill(&mut random).is_err() {
        return Reply::error(errors::ACL_GENPASS_NO_RANDOM);
    }
    let mut password: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    password.truncate(hex_digits);
    Reply::bulk(password)
}

fn log_entry(entry: LogEntry, now: Instant) -> Reply {
    let field = Reply::bulk_static;
    let age = now.saturating_duration_since(entry.last_seen).as_secs_f64();
    Reply::Map(vec![
        (field("count"), Reply::Int(i64::try_from(entry.count).unwrap_or(i64::MAX))),
        (field("reason"), field(entry.reason.as_str())),
        (field("context"), field("toplevel")),
        (field("object"), Reply::bulk(entry.object)),
        (field("username"), Reply::bulk(entry.username)),
        (field("age-seconds"), Reply::bulk(format!("{age:.3}"))),
        (field("client-info"), Reply::bulk(entry.client_info)),
    ])
}
