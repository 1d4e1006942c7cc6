//! Every error text a client can see. Where Redis has an error for the same situation the text is
//! Redis's own, byte for byte, because client libraries and scripts match on it.

pub(crate) const NOLOCK: &str = "NOLOCK the lock is not held (never acquired, released, or its lease ran out)";
pub(crate) const NOTHOLDER: &str = "NOTHOLDER the lock is held under another owner or token (a stale token after the lease ran out, or another owner's lock)";

/// LOCK.TRY's and LOCK.WAIT's answer to an owner with no place in a full queue.
pub(crate) const QUEUEFULL: &str =
    "QUEUEFULL the queue of this key is full (48 MiB of owners): retry later, or poll with NOQUEUE";
pub(crate) const NOAUTH: &str = "NOAUTH Authentication required.";
pub(crate) const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
pub(crate) const AUTH_NOT_CONFIGURED: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
pub(crate) const NOPROTO: &str = "NOPROTO unsupported protocol version";
pub(crate) const SYNTAX: &str = "ERR syntax error";
pub(crate) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
pub(crate) const TIMEOUT_INVALID: &str = "ERR timeout is not an integer or out of range";
pub(crate) const TIMEOUT_NEGATIVE: &str = "ERR timeout is negative";
pub(crate) const DB_OUT_OF_RANGE: &str = "ERR DB index is out of range";
pub(crate) const MAX_CLIENTS: &str = "ERR max number of clients reached";
pub(crate) const DENIED_PROTECTED_MODE: &str = "DENIED baton is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to baton you may adopt one of the following solutions: 1) Restart the server with the '--requirepass <password>' option to set up an authentication password for the default user. 2) If you started the server manually just for testing, restart it with the '--protected-mode no' option, and MAKE SURE it is not publicly accessible from the internet. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.";
pub(crate) const SHUTTING_DOWN: &str = "ERR server is shutting down";
/// SHUTDOWN ABORT: a shutdown, once begun, runs to its end.
pub(crate) const NO_SHUTDOWN_IN_PROGRESS: &str = "ERR No shutdown in progress.";
pub(crate) const CLIENT_NAME_SPACES: &str = "ERR Client names cannot contain spaces, newlines or special characters.";
pub(crate) const NO_SUCH_CLIENT: &str = "ERR No such client";
pub(crate) const HELLO_PROTOVER_NOT_INTEGER: &str = "ERR Protocol version is not an integer or out of range";
pub(crate) const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
pub(crate) const CLIENT_INFO_SPACES: &str =
    "ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.";
pub(crate) const UNBLOCK_MODE: &str = "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR";
pub(crate) const INVALID_CLIENT_ID: &str = "ERR Invalid client ID";
pub(crate) const INVALID_CURSOR: &str = "ERR invalid cursor";
pub(crate) const UNBLOCKED: &str = "UNBLOCKED client unblocked via CLIENT UNBLOCK";
pub(crate) const PUBLISH_LOCK_CHANNEL: &str =
    "ERR the __lock__: channels carry the server's lock events (--notify-lock-events): PUBLISH to them is refused";

pub(crate) const PROTO_INVALID_MULTIBULK_LEN: &str = "ERR Protocol error: invalid multibulk length";
pub(crate) const PROTO_INVALID_BULK_LEN: &str = "ERR Protocol error: invalid bulk length";
pub(crate) const PROTO_TOO_BIG_MBULK_COUNT: &str = "ERR Protocol error: too big mbulk count string";
pub(crate) const PROTO_TOO_BIG_BULK_COUNT: &str = "ERR Protocol error: too big bulk count string";
pub(crate) const PROTO_TOO_BIG_INLINE: &str = "ERR Protocol error: too big inline request";
pub(crate) const PROTO_UNBALANCED_QUOTES: &str = "ERR Protocol error: unbalanced quotes in request";
pub(crate) const PROTO_QUERY_BUFFER: &str = "ERR Protocol error: query buffer limit exceeded";
pub(crate) const PROTO_UNAUTHENTICATED_MULTIBULK_LEN: &str = "ERR Protocol error: unauthenticated multibulk length";
pub(crate) const PROTO_UNAUTHENTICATED_BULK_LEN: &str = "ERR Protocol error: unauthenticated bulk length";
pub(crate) const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
pub(crate) const JOURNAL_OFF: &str = "ERR the journal is off (--appendonly no): there is nothing to rewrite";
pub(crate) const REWRITE_IN_PROGRESS: &str = "ERR Background append only file rewriting already in progress";
/// BGREWRITEAOF's status reply, Redis's words.
pub(crate) const REWRITE_STARTED: &str = "Background append only file rewriting started";
/// Redis's reply while it loads its data; clients such as ioredis wait and retry on it.
pub(crate) const LOADING: &str = "LOADING baton is loading the journal in memory";

/// Redis's answer, with `cluster-enabled no`, to CLUSTER, READONLY, READWRITE and ASKING.
pub(crate) const CLUSTER_DISABLED: &str = "ERR This instance has cluster support disabled";
/// Redis's answer to a key command while its cluster is down; here, while no leader is known.
/// Cluster clients wait, refresh their slot map and retry on it.
pub(crate) const CLUSTERDOWN: &str = "CLUSTERDOWN The cluster is down";

pub(crate) fn invalid_node_address(ip: &[u8], port: &[u8]) -> String {
    format!("ERR Invalid node address specified: {}:{}", String::from_utf8_lossy(ip), String::from_utf8_lossy(port))
}

pub(crate) const INVALID_NODE_ID: &str = "ERR Invalid node id: node ids are integers from 1 (or CLUSTER NODES' names)";

/// CLUSTER ADDNODE's and FORGET's answers when they change nothing.
pub(crate) fn membership_refusal(refusal: &crate::cluster::membership::MembershipRefusal) -> String {
    use crate::cluster::membership::MembershipRefusal as Refusal;
    match refusal {
        Refusal::NotLeader(to) => redirect(*to),
        Refusal::UnknownNode(id) => format!("ERR Unknown node {id}"),
        Refusal::ForgetLeader(id) => format!(
            "ERR node {id} leads and cannot forget itself: stop it, and once another member leads, FORGET it there"
        ),
        Refusal::MemberElsewhere { id, client } => {
            format!("ERR node {id} is a member already, at {client}: CLUSTER FORGET {id} first to move it")
        }
        Refusal::AddressTaken { id, addr } => format!("ERR {addr} is node {id}'s address"),
        Refusal::NoBusPort(client) => {
            format!("ERR {client}'s port + 10000 is no port: give the node's bus port as the last argument")
        }
        Refusal::NotCaughtUp { id, bus, patience } => format!(
            "ERR node {id} did not catch up within {} s: is it running, with --cluster-join and its bus on {bus}? It is a \
             learner now (no vote); run CLUSTER ADDNODE again once it runs, or CLUSTER FORGET {id}",
            patience.as_secs()
        ),
        Refusal::Refused(why) => format!("ERR the membership was not changed: {why}"),
    }
}

/// Where a command that must run on the leader goes instead.
pub(crate) fn redirect(redirect: crate::cluster::topology::Redirect) -> String {
    match redirect {
        crate::cluster::topology::Redirect::Moved { slot, addr } => moved(slot, addr),
        crate::cluster::topology::Redirect::Down => CLUSTERDOWN.to_owned(),
    }
}

/// Redis's redirection to the node that serves `slot`. An IPv6 address goes without brackets, as
/// Redis writes it: clients split the port off at the last colon.
pub(crate) fn moved(slot: u16, addr: std::net::SocketAddr) -> String {
    format!("MOVED {slot} {}:{}", addr.ip(), addr.port())
}

/// Redis's reply to writes while its AOF cannot be written.
pub(crate) fn misconf(failure: &str) -> String {
    format!(
        "MISCONF Errors writing to the journal, so commands that change locks are refused until it can be written again: {failure}"
    )
}

pub(crate) fn proto_expected_dollar(got: u8) -> String {
    format!("ERR Protocol error: expected '$', got '{}'", char::from(got))
}

/// Redis quotes at most the first few arguments, each cut to 128 bytes.
pub(crate) fn unknown_command(name: &[u8], args: &[bytes::Bytes]) -> String {
    let mut text = format!("ERR unknown command '{}', with args beginning with: ", printable(name, 128));
    for arg in args.iter().take(16) {
        text.push('\'');
        text.push_str(&printable(arg, 128));
        text.push_str("' ");
    }
    text
}

pub(crate) fn unknown_subcommand(command: &str, sub: &[u8]) -> String {
    format!("ERR unknown subcommand '{}'. Try {} HELP.", printable(sub, 128), command.to_ascii_uppercase())
}

pub(crate) fn hello_option(option: &[u8]) -> String {
    format!("ERR Syntax error in HELLO option '{}'", printable(option, 128))
}

pub(crate) fn unrecognized_option(option: &[u8]) -> String {
    format!("ERR Unrecognized option '{}'", printable(option, 128))
}

pub(crate) fn unknown_client_type(kind: &[u8]) -> String {
    format!("ERR Unknown client type '{}'", printable(kind, 128))
}

pub(crate) fn config_set_unknown(name: &[u8]) -> String {
    format!("ERR Unknown option or number of arguments for CONFIG SET - '{}'", printable(name, 128))
}

pub(crate) fn config_set_failed(name: &[u8], why: &str) -> String {
    format!("ERR CONFIG SET failed (possibly related to argument '{}') - {why}", printable(name, 128))
}

/// A parameter CONFIG GET shows but only the command line sets.
pub(crate) fn config_set_fixed(name: &[u8]) -> String {
    config_set_failed(name, "baton takes it from its command line: restart baton with the matching --flag")
}

/// Redis's answer to a command a RESP2 client may not run while subscribed.
pub(crate) fn subscribed_context(command: &str) -> String {
    format!(
        "ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    )
}

/// SCAN's TYPE names no type Redis or baton knows (Redis 7.4's words).
pub(crate) fn unknown_type_name(name: &[u8]) -> String {
    format!("ERR unknown type name '{}'", printable(name, 128))
}

pub(crate) fn wrong_arity(command: &str) -> String {
    format!("ERR wrong number of arguments for '{command}' command")
}

pub(crate) fn invalid_expire(command: &str) -> String {
    format!("ERR invalid expire time in '{command}' command")
}

pub(crate) fn too_long(what: &str, limit: usize) -> String {
    format!("ERR {what} is longer than the limit of {limit} bytes")
}

pub(crate) fn empty_argument(what: &str) -> String {
    format!("ERR {what} must not be empty")
}

pub(crate) fn invalid_token() -> &'static str {
    "ERR token must be a positive integer"
}

pub(crate) fn count_out_of_range(max: usize) -> String {
    format!("ERR COUNT must be between 0 and {max}")
}

pub(crate) const NOPERM_KEY: &str = "NOPERM No permissions to access a key";
pub(crate) const NOPERM_CHANNEL: &str = "NOPERM No permissions to access a channel";
pub(crate) const ACL_NO_FILE: &str = "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.";
pub(crate) const ACL_DEFAULT_UNDELETABLE: &str = "ERR The 'default' user cannot be removed";
pub(crate) const ACL_BAD_USERNAME: &str = "ERR Usernames can't contain spaces or null characters";
pub(crate) const ACL_GENPASS_BITS: &str =
    "ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096";
pub(crate) const ACL_GENPASS_NO_RANDOM: &str = "ERR the system's random number generator failed";
pub(crate) const ACL_RULE_SYNTAX: &str = "Syntax error";
pub(crate) const ACL_RULE_UNKNOWN_COMMAND: &str = "Unknown command or category name in ACL";
pub(crate) const ACL_RULE_BAD_HASH: &str =
    "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters";
pub(crate) const ACL_RULE_NO_SUCH_PASSWORD: &str = "The password you are trying to remove from the user does not exist";
pub(crate) const ACL_RULE_CHANNEL_AFTER_ALL: &str = "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels";

/// Redis 7.2's text: it names the user, so that an operator reading a client's log sees which
/// user lacks the permission.
pub(crate) fn noperm_command(user: &str, command: &str) -> String {
    format!("NOPERM User {user} has no permissions to run the '{command}' command")
}

pub(crate) fn acl_setuser_modifier(rule: &str, reason: &str) -> String {
    format!("ERR Error in ACL SETUSER modifier '{}': {reason}", printable(rule.as_bytes(), 128))
}

pub(crate) fn acl_file_open(path: &std::path::Path, error: &std::io::Error) -> String {
    format!("ERR Error loading ACLs, opening file '{}': {error}", path.display())
}

/// Where an ACL file is wrong: `path:line: what`.
pub(crate) fn acl_file_line(path: &std::path::Path, line: usize, what: &str) -> String {
    format!("ERR {}:{line}: {what}", path.display())
}

pub(crate) fn acl_save_failed(error: &std::io::Error) -> String {
    format!(
        "ERR There was an error trying to save the ACLs. Please check the server logs for more information ({error})"
    )
}

pub(crate) fn acl_unknown_category(category: &[u8]) -> String {
    format!("ERR Unknown category '{}'", printable(category, 128))
}

pub(crate) fn acl_no_such_user(user: &[u8]) -> String {
    format!("ERR User '{}' not found", printable(user, 128))
}

pub(crate) fn acl_no_such_command(command: &[u8]) -> String {
    format!("ERR Command '{}' not found", printable(command, 128))
}

pub(crate) fn client_kill_no_such_user(user: &[u8]) -> String {
    format!("ERR No such user '{}'", printable(user, 128))
}

/// ACL DRYRUN's answers when the user may not: bulk strings, not errors, as in Redis.
pub(crate) fn dryrun_no_command(command: &str) -> String {
    format!("This user has no permissions to run the '{command}' command")
}

pub(crate) fn dryrun_no_key(key: &[u8]) -> String {
    format!("This user has no permissions to access the '{}' key", printable(key, 128))
}

pub(crate) fn dryrun_no_channel(channel: &[u8]) -> String {
    format!("This user has no permissions to access the '{}' channel", printable(channel, 128))
}

/// Error texts must stay on one line and stay readable, whatever bytes a client sent.
fn printable(data: &[u8], max: usize) -> String {
    let cut = &data[..data.len().min(max)];
    String::from_utf8_lossy(cut).chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_command_matches_redis_layout() {
        let args = [bytes::Bytes::from_static(b"a"), bytes::Bytes::from_static(b"b\r\nc")];
        assert_eq!(unknown_command(b"foo", &args), "ERR unknown command 'foo', with args beginning with: 'a' 'b  c' ");
        assert_eq!(unknown_command(b"foo", &[]), "ERR unknown command 'foo', with args beginning with: ");
    }

    #[test]
    fn moved_writes_addresses_as_redis_does() {
        assert_eq!(moved(3999, "127.0.0.1:6381".parse().unwrap()), "MOVED 3999 127.0.0.1:6381");
        assert_eq!(moved(0, "[::1]:7000".parse().unwrap()), "MOVED 0 ::1:7000");
        assert_eq!(moved(16383, "[fe80::1:2]:7000".parse().unwrap()), "MOVED 16383 fe80::1:2:7000");
    }
}
