//! The commands a client listens with: the Pub/Sub family (SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE,
//! PUNSUBSCRIBE, PUBLISH, PUBSUB) in Redis's shapes (a confirmation per channel, a push in RESP3
//! and an array in RESP2), and MONITOR. What is heard arrives later, through the connection's
//! outbox.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;

use super::action::Action;
use super::parse::{Args, ParseResult, eq_ignore_case};
use super::table::{CommandId, CommandSpec};
use crate::context::Shared;
use crate::errors;
use crate::monitor;
use crate::pubsub::{Kind, LOCK_CHANNEL_PREFIX};
use crate::reply::Reply;
use crate::session::Session;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PubSubCommand {
    Subscribe(Kind, Vec<Bytes>),
    /// No names: every channel (or pattern) subscribed to.
    Unsubscribe(Kind, Vec<Bytes>),
    Publish {
        channel: Bytes,
        message: Bytes,
    },
    Channels(Option<Bytes>),
    NumSub(Vec<Bytes>),
    NumPat,
    Help,
    Monitor,
}

pub(crate) fn parse_publish(mut args: Args) -> ParseResult<PubSubCommand> {
    let channel = args.next_bytes()?;
    if channel.starts_with(LOCK_CHANNEL_PREFIX) {
        return Err(Reply::error(errors::PUBLISH_LOCK_CHANNEL));
    }
    Ok(PubSubCommand::Publish { channel, message: args.next_bytes()? })
}

pub(crate) fn parse_channels(mut args: Args) -> ParseResult<PubSubCommand> {
    let pattern = args.next_optional();
    args.expect_end()?;
    Ok(PubSubCommand::Channels(pattern))
}

fn confirmation(kind: Kind, subscribing: bool, name: Option<Bytes>, count: usize) -> Reply {
    let word = match (kind, subscribing) {
        (Kind::Channel, true) => "subscribe",
        (Kind::Pattern, true) => "psubscribe",
        (Kind::Channel, false) => "unsubscribe",
        (Kind::Pattern, false) => "punsubscribe",
    };
    Reply::Push(vec![Reply::bulk_static(word), Reply::bulk_or_nil(name), count_reply(count)])
}

fn count_reply(count: usize) -> Reply {
    Reply::Int(i64::try_from(count).unwrap_or(i64::MAX))
}

impl PubSubCommand {
    pub(crate) fn execute(self, session: &mut Session, shared: &Shared) -> Action {
        let reply = match self {
            PubSubCommand::Subscribe(kind, names) => {
                let confirmations = names.into_iter().map(|name| {
                    let count = session.subscribe(kind, name.clone(), shared);
                    confirmation(kind, true, Some(name), count)
                });
                return Action::Replies(confirmations.collect());
            }
            PubSubCommand::Unsubscribe(kind, names) => {
                let names = if names.is_empty() { session.subscriptions(kind) } else { names };
                if names.is_empty() {
                    // Nothing to leave: one confirmation naming no channel, as Redis answers.
                    return Action::Reply(confirmation(kind, false, None, session.subscription_count()));
                }
                let confirmations = names.into_iter().map(|name| {
                    let count = session.unsubscribe(kind, &name, shared);
                    confirmation(kind, false, Some(name), count)
                });
                return Action::Replies(confirmations.collect());
            }
            PubSubCommand::Publish { channel, message } => count_reply(shared.pubsub.publish(&channel, &message)),
            PubSubCommand::Channels(pattern) => {
                Reply::Array(shared.pubsub.channels(pattern.as_deref()).into_iter().map(Reply::Bulk).collect())
            }
            PubSubCommand::NumSub(channels) => Reply::Array(
                channels
                    .into_iter()
                    .flat_map(|channel| {
                        let count = shared.pubsub.subscriber_count(&channel);
                        [Reply::Bulk(channel), count_reply(count)]
                    })
                    .collect(),
            ),
            PubSubCommand::NumPat => count_reply(shared.pubsub.counts().1),
            PubSubCommand::Help => Reply::help(&[
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
                "HELP",
                "    Prints this help.",
            ]),
            PubSubCommand::Monitor => {
                session.start_monitoring(shared);
                Reply::ok()
            }
        };
        Action::Reply(reply)
    }
}

/// The MONITOR line of a request from `peer`, or None for what monitors are not shown: the admin
/// commands, as in Redis (ACL SETUSER carries passwords, CONFIG and CLIENT KILL reshape the
/// server). The arguments of AUTH and the credentials of HELLO's AUTH are redacted.
pub(crate) fn monitor_line(spec: &CommandSpec, args: &[Bytes], peer: SocketAddr) -> Option<String> {
    if spec.flags.contains(&"admin") {
        return None;
    }
    let credentials = match spec.id {
        CommandId::Auth => (1..args.len()).collect(),
        CommandId::Hello => hello_credentials(args),
        _ => Vec::new(),
    };
    Some(monitor::line(SystemTime::now(), peer, args, |index| credentials.contains(&index)))
}

/// Where HELLO's `AUTH <username> <password>` arguments are, found as HELLO reads its options
/// (`HELLO <protover> [AUTH u p] [SETNAME n]`), up to the first it would refuse.
fn hello_credentials(args: &[Bytes]) -> Vec<usize> {
    let mut credentials = Vec::new();
    let mut index = 2;
    while let Some(option) = args.get(index) {
        let more = args.len() - 1 - index;
        if eq_ignore_case(option, "AUTH") && more >= 2 {
            credentials.extend([index + 1, index + 2]);
            index += 3;
        } else if eq_ignore_case(option, "SETNAME") && more >= 1 {
            index += 2;
        } else {
            break;
        }
    }
    credentials
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::resolve;

    fn shown(line: &str) -> Option<String> {
        let args: Vec<Bytes> = line.split(' ').map(|word| Bytes::copy_from_slice(word.as_bytes())).collect();
        let spec = resolve(&args).unwrap();
        let line = monitor_line(spec, &args, "127.0.0.1:9".parse().unwrap())?;
        // The time varies: keep what follows it.
        Some(line.split_once(' ').unwrap().1.to_owned())
    }

    #[test]
    fn monitors_see_requests_without_secrets_and_without_admin_commands() {
        assert_eq!(shown("lock.try k owner").unwrap(), r#"[0 127.0.0.1:9] "lock.try" "k" "owner""#);
        assert_eq!(shown("AUTH pw").unwrap(), r#"[0 127.0.0.1:9] "AUTH" "(redacted)""#);
        assert_eq!(shown("auth node pw").unwrap(), r#"[0 127.0.0.1:9] "auth" "(redacted)" "(redacted)""#);
        assert_eq!(
            shown("HELLO 2 SETNAME n AUTH u pw").unwrap(),
            r#"[0 127.0.0.1:9] "HELLO" "2" "SETNAME" "n" "AUTH" "(redacted)" "(redacted)""#
        );
        assert_eq!(
            shown("HELLO 3 AUTH u").unwrap(),
            r#"[0 127.0.0.1:9] "HELLO" "3" "AUTH" "u""#,
            "refused, as in Redis"
        );
        assert_eq!(shown("HELLO 3").unwrap(), r#"[0 127.0.0.1:9] "HELLO" "3""#);
        for admin in ["CONFIG GET port", "ACL SETUSER u >pw", "CLIENT LIST", "MONITOR", "BGREWRITEAOF"] {
            assert_eq!(shown(admin), None, "{admin}");
        }
        assert!(shown("CLIENT ID").is_some() && shown("INFO").is_some(), "not admin commands");
    }
}
