//! Server commands for tools and monitoring: INFO, COMMAND, DBSIZE, CONFIG GET / SET, and
//! BGREWRITEAOF for the journal.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::cluster;
use super::parse::{Args, ParseResult};
use super::table;
use crate::config::REDIS_COMPAT_VERSION;
use crate::context::Shared;
use crate::errors;
use crate::reply::Reply;
use crate::{cpu, memory};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerCommand {
    Info(Vec<Bytes>),
    DbSize,
    BgRewriteAof,
    Time,
    Role,
    CommandAll,
    CommandCount,
    CommandInfo(Vec<Bytes>),
    CommandDocs(Vec<Bytes>),
    CommandList(Option<ListFilter>),
    CommandHelp,
    ConfigGet(Vec<Bytes>),
    ConfigSet(Vec<(Bytes, Bytes)>),
    ConfigResetStat,
    ConfigHelp,
}

/// COMMAND LIST FILTERBY: baton has no modules, so MODULE matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListFilter {
    Module(Bytes),
    AclCategory(Bytes),
    Pattern(Bytes),
}

/// CONFIG SET parameter value [parameter value ...]
pub(crate) fn parse_config_set(args: Args) -> ParseResult<ServerCommand> {
    let words = args.rest();
    if !words.len().is_multiple_of(2) {
        return Err(Reply::error(errors::wrong_arity("config|set")));
    }
    let pairs = words.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
    Ok(ServerCommand::ConfigSet(pairs))
}

/// SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT]. The journal records every change as it is
/// made, so there is nothing to save or not to save, nor replicas to wait for: the modifiers are
/// accepted for the clients and tools that send them. A shutdown, once begun, cannot be aborted.
pub(crate) fn parse_shutdown(args: Args) -> ParseResult<()> {
    let words = args.rest();
    let is = |word: &Bytes, name: &str| word.eq_ignore_ascii_case(name.as_bytes());
    if let [abort] = words.as_slice()
        && is(abort, "ABORT")
    {
        return Err(Reply::error(errors::NO_SHUTDOWN_IN_PROGRESS));
    }
    let (mut save_selector, mut now, mut force) = (false, false, false);
    for word in &words {
        let seen = if is(word, "NOSAVE") || is(word, "SAVE") {
            &mut save_selector
        } else if is(word, "NOW") {
            &mut now
        } else if is(word, "FORCE") {
            &mut force
        } else {
            return Err(Reply::error(errors::SYNTAX));
        };
        if std::mem::replace(seen, true) {
            return Err(Reply::error(errors::SYNTAX));
        }
    }
    Ok(())
}

/// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]
pub(crate) fn parse_command_list(args: Args) -> ParseResult<ServerCommand> {
    let filter = match args.rest().as_slice() {
        [] => None,
        [filterby, kind, value] if filterby.eq_ignore_ascii_case(b"FILTERBY") => {
            let value = value.clone();
            Some(if kind.eq_ignore_ascii_case(b"MODULE") {
                ListFilter::Module(value)
            } else if kind.eq_ignore_ascii_case(b"ACLCAT") {
                ListFilter::AclCategory(value)
            } else if kind.eq_ignore_ascii_case(b"PATTERN") {
                ListFilter::Pattern(value)
            } else {
                return Err(Reply::error(errors::SYNTAX));
            })
        }
        _ => return Err(Reply::error(errors::SYNTAX)),
    };
    Ok(ServerCommand::CommandList(filter))
}

impl ServerCommand {
    pub(crate) fn execute(self, shared: &Shared) -> Reply {
        match self {
            ServerCommand::Info(sections) => Reply::bulk(info_text(shared, &sections)),
            ServerCommand::DbSize => Reply::Int(i64::try_from(shared.held().keys).unwrap_or(i64::MAX)),
            ServerCommand::Time => time_reply(shared.config.wall_clock_offset_ms),
            ServerCommand::Role => cluster::role_reply(cluster::topology(shared).as_ref()),
            ServerCommand::BgRewriteAof => match &shared.persistence {
                None => Reply::error(errors::JOURNAL_OFF),
                Some(persistence) if persistence.request_rewrite() => Reply::Status(errors::REWRITE_STARTED.into()),
                Some(_) => Reply::error(errors::REWRITE_IN_PROGRESS),
            },
            ServerCommand::CommandAll => table::command_info_all(),
            ServerCommand::CommandCount => table::command_count(),
            ServerCommand::CommandInfo(names) => table::command_info(&names),
            ServerCommand::CommandDocs(names) => table::command_docs(&names),
            ServerCommand::CommandList(filter) => table::command_list(|spec| match &filter {
                None => true,
                Some(ListFilter::Module(_)) => false,
                Some(ListFilter::AclCategory(category)) => spec
                    .acl_categories
                    .iter()
                    .any(|own| own.trim_start_matches('@').as_bytes().eq_ignore_ascii_case(category)),
                Some(ListFilter::Pattern(pattern)) => glob_match(pattern, spec.full_name().as_bytes()),
            }),
            ServerCommand::CommandHelp => Reply::help(&[
                "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "(no subcommand) -- Return details about all commands.",
                "COUNT -- Return the total number of commands.",
                "DOCS [<command-name> ...] -- Return documentation details about commands.",
                "INFO [<command-name> ...] -- Return details about the given commands.",
                "LIST -- Return a list of all commands.",
                "HELP -- Print this help.",
            ]),
            ServerCommand::ConfigHelp => Reply::help(&[
                "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET <pattern> -- Return parameters matching the glob-like <pattern> and their values.",
                "RESETSTAT -- Reset the counters reported by INFO and the metrics endpoint.",
                "SET notify-lock-events <yes|no> -- Publish lock events or not; the rest are command-line flags.",
                "HELP -- Print this help.",
            ]),
            ServerCommand::ConfigGet(patterns) => config_get(shared, &patterns),
            ServerCommand::ConfigSet(pairs) => config_set(shared, &pairs),
            ServerCommand::ConfigResetStat => {
                shared.reset_stats();
                Reply::ok()
            }
        }
    }
}

/// TIME: the wall clock as the journal reads it (`--wall-clock-offset-ms` included), as Unix
/// seconds and microseconds, each a bulk string as in Redis.
fn time_reply(offset_ms: i64) -> Reply {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let offset = Duration::from_millis(offset_ms.unsigned_abs());
    let now = if offset_ms < 0 { since_epoch.saturating_sub(offset) } else { since_epoch + offset };
    Reply::Array(vec![Reply::bulk(now.as_secs().to_string()), Reply::bulk(now.subsec_micros().to_string())])
}

/// The parameters tools commonly ask for, answered from the running configuration.
fn config_values(shared: &Shared) -> Vec<(&'static str, String)> {
    let config = &shared.config;
    vec![
        ("bind", config.bind.to_string()),
        ("port", shared.local_addr.port().to_string()),
        ("maxclients", config.maxclients.to_string()),
        ("timeout", "0".to_owned()),
        ("databases", "1".to_owned()),
        ("save", String::new()),
        ("appendonly", yes_no(shared.persistence.is_some()).to_owned()),
        ("appendfsync", config.appendfsync.as_str().to_owned()),
        ("dir", config.dir.display().to_string()),
        ("protected-mode", yes_no(config.protected_mode.enabled()).to_owned()),
        ("proto-max-bulk-len", config.max_bulk_bytes.to_string()),
        ("client-query-buffer-limit", config.max_query_buffer_bytes.to_string()),
        ("lease-ms", config.lease_ms.to_string()),
        ("max-lease-ms", config.max_lease_ms.to_string()),
        ("release-on-disconnect", yes_no(config.release_on_disconnect.enabled()).to_owned()),
        ("shards", shared.core.shard_count().to_string()),
        ("threads", config.event_loop_count().to_string()),
        ("max-key-bytes", config.max_key_bytes.to_string()),
        ("max-result-bytes", config.max_result_bytes.to_string()),
        ("tcp-keepalive", config.tcp_keepalive.to_string()),
        ("maxmemory", config.maxmemory.to_string()),
        ("maxmemory-policy", "noeviction".to_owned()),
        (NOTIFY_LOCK_EVENTS, yes_no(shared.pubsub.notifies()).to_owned()),
        (
            "client-output-buffer-limit",
            format!("normal 0 0 0 slave 0 0 0 pubsub {}", config.pubsub_output_buffer_limit.describe()),
        ),
    ]
}

/// The one parameter CONFIG SET changes; the others come from the command line.
const NOTIFY_LOCK_EVENTS: &str = "notify-lock-events";

fn yes_no(enabled: bool) -> &'static str {
    if enabled { "yes" } else { "no" }
}

/// All the pairs apply or none does, as in Redis.
fn config_set(shared: &Shared, pairs: &[(Bytes, Bytes)]) -> Reply {
    let mut notify = None;
    for (name, value) in pairs {
        if !name.eq_ignore_ascii_case(NOTIFY_LOCK_EVENTS.as_bytes()) {
            let known = config_values(shared).iter().any(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()));
            let error = if known { errors::config_set_fixed(name) } else { errors::config_set_unknown(name) };
            return Reply::error(error);
        }
        if notify.is_some() {
            return Reply::error(errors::config_set_failed(name, "duplicate parameter"));
        }
        notify = Some(if value.eq_ignore_ascii_case(b"yes") {
            true
        } else if value.eq_ignore_ascii_case(b"no") {
            false
        } else {
            return Reply::error(errors::config_set_failed(name, "argument must be 'yes' or 'no'"));
        });
    }
    if let Some(notify) = notify {
        shared.pubsub.set_notify(notify);
    }
    Reply::ok()
}

fn config_get(shared: &Shared, patterns: &[Bytes]) -> Reply {
    let pairs = config_values(shared)
        .into_iter()
        .filter(|(name, _)| patterns.iter().any(|pattern| glob_match(pattern, name.as_bytes())))
        .map(|(name, value)| (Reply::bulk_static(name), Reply::bulk(value)))
        .collect();
    Reply::Map(pairs)
}

/// Case-insensitive glob with `*` and `?`, as CONFIG GET patterns use.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

fn info_text(shared: &Shared, sections: &[Bytes]) -> String {
    let everything = sections.is_empty()
        || sections
            .iter()
            .any(|s| ["all", "default", "everything"].iter().any(|w| s.eq_ignore_ascii_case(w.as_bytes())));
    let wanted = |name: &str| everything || sections.iter().any(|s| s.eq_ignore_ascii_case(name.as_bytes()));
    let mut text = String::with_capacity(2048);
    let mut section = |name: &str, title: &str, fields: Vec<(&str, String)>| {
        if !wanted(name) {
            return;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let _ = write!(text, "# {title}\r\n");
        for (field, value) in fields {
            let _ = write!(text, "{field}:{value}\r\n");
        }
    };
    let uptime = shared.started.elapsed().as_secs();
    section(
        "server",
        "Server",
        vec![
            ("redis_version", REDIS_COMPAT_VERSION.to_owned()),
            ("baton_version", env!("CARGO_PKG_VERSION").to_owned()),
            ("redis_mode", cluster::redis_mode(shared).to_owned()),
            ("os", std::env::consts::OS.to_owned()),
            ("arch_bits", (usize::BITS).to_string()),
            ("process_id", std::process::id().to_string()),
            ("tcp_port", shared.local_addr.port().to_string()),
            ("uptime_in_seconds", uptime.to_string()),
            ("uptime_in_days", (uptime / 86_400).to_string()),
        ],
    );
    let figures = shared.figures();
    let denied = shared.acl.denied_counts();
    let (pubsub_channels, pubsub_patterns) = shared.pubsub.counts();
    section(
        "clients",
        "Clients",
        vec![
            ("connected_clients", figures.connected_clients.to_string()),
            ("blocked_clients", figures.blocked_clients.to_string()),
            ("maxclients", shared.config.maxclients.to_string()),
        ],
    );
    section("memory", "Memory", memory::info_fields(shared.config.maxmemory));
    let persistence = match &shared.persistence {
        Some(persistence) => persistence.info_fields(shared.core.grants_paused_ms(shared.clock.now())),
        None => vec![("loading", "0".to_owned()), ("aof_enabled", "0".to_owned())],
    };
    section("persistence", "Persistence", persistence);
    section(
        "stats",
        "Stats",
        vec![
            ("total_connections_received", figures.connections_received.to_string()),
            ("total_commands_processed", figures.commands_processed.to_string()),
            ("instantaneous_ops_per_sec", figures.ops_per_sec.to_string()),
            ("rejected_connections", figures.rejected_connections.to_string()),
            ("log_lines_dropped", crate::logging::lines_dropped().to_string()),
            ("acl_access_denied_auth", denied.auth.to_string()),
            ("acl_access_denied_cmd", denied.command.to_string()),
            ("acl_access_denied_key", denied.key.to_string()),
            ("acl_access_denied_channel", denied.channel.to_string()),
            ("pubsub_channels", pubsub_channels.to_string()),
            ("pubsub_patterns", pubsub_patterns.to_string()),
            (
                "client_output_buffer_limit_disconnections",
                shared.stats.output_buffer_limit_disconnections.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );
    let replication = cluster::replication_fields(cluster::topology(shared).as_ref());
    section(
        "replication",
        "Replication",
        replication.iter().map(|(field, value)| (field.as_str(), value.clone())).collect(),
    );
    section("cpu", "CPU", cpu::info_fields());
    let core = figures.core;
    let latency = figures.handoff;
    section(
        "locks",
        "Locks",
        vec![
            ("lock_grants", core.grants.to_string()),
            ("lock_handoffs", core.handoffs.to_string()),
            ("lock_handoffs_written_by_unlocker", figures.handoffs_written_by_unlocker.to_string()),
            ("lock_dones_written_by_unlocker", figures.dones_written_by_unlocker.to_string()),
            ("lock_successes", core.successes.to_string()),
            ("lock_failures", core.failures.to_string()),
            ("lock_lease_expiries", core.lease_expiries.to_string()),
            ("lock_disconnect_releases", core.disconnect_releases.to_string()),
            ("lock_done_answers", core.done_answers.to_string()),
            ("locks_held", core.held_keys.to_string()),
            ("lock_waiters", core.waiters.to_string()),
            ("lock_blocked_waiters", core.blocked_waiters.to_string()),
            ("lock_keys", core.keys.to_string()),
            ("lock_shards", shared.core.shard_count().to_string()),
            ("lock_handoff_latency_samples", latency.count.to_string()),
            ("lock_handoff_latency_p50_usec", latency.p50_us.to_string()),
            ("lock_handoff_latency_p99_usec", latency.p99_us.to_string()),
            ("lock_handoff_latency_p999_usec", latency.p999_us.to_string()),
            ("lock_handoff_latency_max_usec", latency.max_us.to_string()),
        ],
    );
    section("cluster", "Cluster", cluster::info_fields(shared));
    let keyspace = if core.keys > 0 {
        vec![("db0", format!("keys={},expires={},avg_ttl=0", core.keys, core.keys))]
    } else {
        Vec::new()
    };
    section("keyspace", "Keyspace", keyspace);
    text
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn glob_matches_like_redis_config_get() {
        assert!(glob_match(b"*", b"maxclients"));
        assert!(glob_match(b"max*", b"maxclients"));
        assert!(glob_match(b"MAXCLIENTS", b"maxclients"));
        assert!(glob_match(b"t?meout", b"timeout"));
        assert!(glob_match(b"*lease*", b"max-lease-ms"));
        assert!(!glob_match(b"max", b"maxclients"));
        assert!(!glob_match(b"*x", b"maxclients"));
        assert!(!glob_match(b"", b"port"));
    }
}
