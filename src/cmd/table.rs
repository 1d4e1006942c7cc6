//! The static command table, and the replies of the COMMAND family built from it.
//!
//! Every command the server answers is listed here once, with Redis 7's metadata for the Redis
//! commands (arity, flags, ACL categories, tips, group, since, summary, complexity, arguments) so
//! that `COMMAND`, `COMMAND INFO` and `COMMAND DOCS` look to redis-cli and client libraries exactly
//! like a real Redis server's answers. Dispatch uses [`lookup`] and [`lookup_sub`], which compare
//! names in place (no allocation) over these small tables.

use bytes::Bytes;

use crate::acl::{Catalogue, CommandEntry};
use crate::clients::CommandName;
use crate::reply::Reply;

/// Which command a table entry is. Dispatch matches on it exhaustively, so a new table row
/// without its parser does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CommandId {
    LockTry,
    LockWait,
    LockUnlock,
    LockExtend,
    LockCancel,
    LockInfo,
    Ping,
    Echo,
    Hello,
    Auth,
    Select,
    Quit,
    Reset,
    Info,
    DbSize,
    Scan,
    Type,
    Exists,
    Memory,
    MemoryUsage,
    MemoryHelp,
    BgRewriteAof,
    Shutdown,
    Time,
    Role,
    Command,
    CommandCount,
    CommandDocs,
    CommandInfo,
    CommandList,
    CommandHelp,
    Client,
    ClientId,
    ClientSetName,
    ClientGetName,
    ClientSetInfo,
    ClientInfo,
    ClientList,
    ClientKill,
    ClientUnblock,
    ClientNoEvict,
    ClientNoTouch,
    ClientHelp,
    Config,
    ConfigGet,
    ConfigSet,
    ConfigResetStat,
    ConfigHelp,
    Acl,
    AclCat,
    AclDelUser,
    AclDryRun,
    AclGenPass,
    AclGetUser,
    AclList,
    AclLoad,
    AclLog,
    AclSave,
    AclSetUser,
    AclUsers,
    AclWhoAmI,
    AclHelp,
    Subscribe,
    PSubscribe,
    Unsubscribe,
    PUnsubscribe,
    Publish,
    PubSub,
    PubSubChannels,
    PubSubNumSub,
    PubSubNumPat,
    PubSubHelp,
    Monitor,
    Cluster,
    ClusterSlots,
    ClusterShards,
    ClusterNodes,
    ClusterInfo,
    ClusterMyId,
    ClusterMyShardId,
    ClusterKeySlot,
    ClusterHelp,
    ClusterAddNode,
    ClusterForget,
    ReadOnly,
    ReadWrite,
    Asking,
}

impl CommandId {
    /// The command's place in a user's permission bitset.
    pub(crate) fn bit(self) -> usize {
        self as usize
    }
}

/// One command, or one subcommand of a container command such as CLIENT.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CommandSpec {
    pub(crate) id: CommandId,
    /// Lowercase name: `"lock.try"`, `"ping"`; for a subcommand its own part only (`"list"`).
    pub name: &'static str,
    /// The lowercase name of the container for a subcommand (`"client"`), `""` for a top-level one.
    pub container: &'static str,
    /// Redis convention: `n` means exactly `n` arguments including the name(s), `-n` at least `n`.
    pub arity: i32,
    /// Redis command flags in Redis's order, e.g. `["write", "fast"]`.
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub key_step: i32,
    /// ACL categories as COMMAND INFO lists them, e.g. `["@fast", "@connection"]`.
    pub acl_categories: &'static [&'static str],
    /// Command tips, e.g. `["nondeterministic_output"]`.
    pub tips: &'static [&'static str],
    /// Redis's group name (`"connection"`, `"server"`, `"generic"`).
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
    pub args: &'static [ArgSpec],
    pub subcommands: &'static [CommandSpec],
}

/// One argument node of a command's documentation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub token: Option<&'static str>,
    pub optional: bool,
    pub multiple: bool,
    /// The alternatives of a `Oneof`, the parts of a `Block`; empty otherwise.
    pub children: &'static [ArgSpec],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    String,
    Integer,
    Key,
    Pattern,
    PureToken,
    Oneof,
    Block,
}

impl ArgKind {
    /// The type name COMMAND DOCS uses.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            ArgKind::String => "string",
            ArgKind::Integer => "integer",
            ArgKind::Key => "key",
            ArgKind::Pattern => "pattern",
            ArgKind::PureToken => "pure-token",
            ArgKind::Oneof => "oneof",
            ArgKind::Block => "block",
        }
    }
}

impl CommandSpec {
    /// Redis's `write` flag: the command changes locks (its keys are written, the journal
    /// records it, a failing journal refuses it).
    pub(crate) fn is_write(&self) -> bool {
        self.flags.contains(&"write")
    }

    /// Whether `argc` arguments (the command name, and the subcommand name for a subcommand,
    /// included) satisfy this command's arity.
    pub(crate) fn arity_ok(&self, argc: usize) -> bool {
        let need = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 { argc == need } else { argc >= need }
    }

    pub(crate) fn command_name(&self) -> CommandName {
        CommandName { container: self.container, name: self.name }
    }

    /// Redis's "fullname": `"client|list"` for a subcommand, the plain name otherwise.
    pub(crate) fn full_name(&self) -> String {
        self.command_name().to_string()
    }

    /// Whether this is a container command (CLIENT, COMMAND, CONFIG) that takes a subcommand.
    pub(crate) fn has_subcommands(&self) -> bool {
        !self.subcommands.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// Builders for the static table.

/// Every row names its own `id`; the test `ids_are_unique` catches a row that inherits this one.
const BASE: CommandSpec = CommandSpec {
    id: CommandId::Command,
    name: "",
    container: "",
    arity: 0,
    flags: &[],
    first_key: 0,
    last_key: 0,
    key_step: 0,
    acl_categories: &[],
    tips: &[],
    group: "",
    since: "",
    summary: "",
    complexity: "O(1)",
    args: &[],
    subcommands: &[],
};

const fn node(name: &'static str, kind: ArgKind) -> ArgSpec {
    ArgSpec { name, kind, token: None, optional: false, multiple: false, children: &[] }
}

const fn string(name: &'static str) -> ArgSpec {
    node(name, ArgKind::String)
}

const fn integer(name: &'static str) -> ArgSpec {
    node(name, ArgKind::Integer)
}

const fn key(name: &'static str) -> ArgSpec {
    node(name, ArgKind::Key)
}

const fn pattern(name: &'static str) -> ArgSpec {
    node(name, ArgKind::Pattern)
}

/// A keyword that stands alone, e.g. `NOQUEUE`.
const fn pure(name: &'static str, token: &'static str) -> ArgSpec {
    node(name, ArgKind::PureToken).tok(token)
}

const fn oneof(name: &'static str, children: &'static [ArgSpec]) -> ArgSpec {
    ArgSpec { children, ..node(name, ArgKind::Oneof) }
}

const fn block(name: &'static str, children: &'static [ArgSpec]) -> ArgSpec {
    ArgSpec { children, ..node(name, ArgKind::Block) }
}

impl ArgSpec {
    const fn tok(self, token: &'static str) -> ArgSpec {
        ArgSpec { token: Some(token), ..self }
    }

    const fn opt(self) -> ArgSpec {
        ArgSpec { optional: true, ..self }
    }

    const fn multi(self) -> ArgSpec {
        ArgSpec { multiple: true, ..self }
    }
}

const ON_OFF: &[ArgSpec] = &[pure("on", "ON"), pure("off", "OFF")];

// ---------------------------------------------------------------------------------------------
// The table.

const LOCK_ACL_FAST_WRITE: &[&str] = &["@write", "@fast"];

/// Every top-level command the server implements.
pub(crate) static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::LockTry,
        name: "lock.try",
        arity: -3,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        key_step: 1,
        acl_categories: LOCK_ACL_FAST_WRITE,
        group: "generic",
        since: "1.0.0",
        summary: "Try to take the lock for key as owner without blocking: ACQUIRED token, QUEUED position, BUSY holder (NOQUEUE) or DONE finisher result.",
        complexity: "O(log N) where N is the length of the lock's queue",
        args: &[key("key"), string("owner"), integer("milliseconds").tok("PX").opt(), pure("noqueue", "NOQUEUE").opt()],
        ..BASE
    },
    CommandSpec {
        id: CommandId::LockWait,
        name: "lock.wait",
        arity: -4,
        flags: &["write", "blocking"],
        first_key: 1,
        last_key: 1,
        key_step: 1,
        acl_categories: &["@write", "@slow", "@blocking"],
        group: "generic",
        since: "1.0.0",
        summary: "Take the lock or join its FIFO queue and block until ACQUIRED token, DONE finisher result, or nil on timeout (0 = forever).",
        complexity: "O(log N) where N is the length of the lock's queue",
        args: &[key("key"), string("owner"), integer("timeout-ms"), integer("milliseconds").tok("PX").opt()],
        ..BASE
    },
    CommandSpec {
        id: CommandId::LockUnlock,
        name: "lock.unlock",
        arity: -5,
        flags: &["write"],
        first_key: 1,
        last_key: 1,
        key_step: 1,
        acl_categories: &["@write", "@slow"],
        group: "generic",
        since: "1.0.0",
        summary: "Release the lock: SUCCESS tells every waiter DONE (returns how many), FAILURE hands it to the head of the queue (1) or frees it (0).",
        complexity: "O(N) where N is the number of waiters told DONE",
        args: &[
            key("key"),
            string("owner"),
            integer("token"),
            oneof("outcome", &[pure("success", "SUCCESS"), pure("failure", "FAILURE")]),
            string("result").tok("RESULT").opt(),
            integer("keep-ms").tok("KEEP").opt(),
            string("reason").tok("REASON").opt(),
        ],
        ..BASE
    },
    CommandSpec {
        id: CommandId::LockExtend,
        name: "lock.extend",
        arity: 5,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        key_step: 1,
        acl_categories: LOCK_ACL_FAST_WRITE,
        group: "generic",
        since: "1.0.0",
        summary: "Renew the holder's lease to ms from now.",
        complexity: "O(1)",
        args: &[key("key"), string("owner"), integer("token"), integer("milliseconds")],
        ..BASE
    },
    CommandSpec {
        id: CommandId::LockCancel,
        name: "lock.cancel",
        arity: 3,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        key_step: 1,
        acl_categories: LOCK_ACL_FAST_WRITE,
        group: "generic",
        since: "1.0.0",
        summary: "Leave the queue of key: 1 if owner was queued, 0 if not.",
        complexity: "O(log N) where N is the length of the lock's queue",
        args: &[key("key"), string("owner")],
        ..BASE
    },
    CommandSpec {
        id: CommandId::LockInfo,
        name: "lock.info",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        key_step: 1,
        acl_categories: &["@read", "@fast"],
        group: "generic",
        since: "1.0.0",
        summary: "Show the state of a lock: state, holder, token, lease_ms, waiters, the first COUNT (default 100) of the queue, last failure.",
        complexity: "O(N) where N is the number of owners listed (COUNT)",
        args: &[key("key"), integer("count").tok("COUNT").opt()],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Ping,
        name: "ping",
        arity: -1,
        flags: &["fast"],
        acl_categories: &["@fast", "@connection"],
        tips: &["request_policy:all_shards", "response_policy:all_succeeded"],
        group: "connection",
        since: "1.0.0",
        summary: "Ping the server",
        args: &[string("message").opt()],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Echo,
        name: "echo",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        acl_categories: &["@fast", "@connection"],
        group: "connection",
        since: "1.0.0",
        summary: "Echo the given string",
        args: &[string("message")],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Hello,
        name: "hello",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        group: "connection",
        since: "6.0.0",
        summary: "Handshake with Redis",
        args: &[block(
            "arguments",
            &[
                integer("protover"),
                block("username_password", &[string("username"), string("password")]).tok("AUTH").opt(),
                string("clientname").tok("SETNAME").opt(),
            ],
        )
        .opt()],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Auth,
        name: "auth",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        group: "connection",
        since: "1.0.0",
        summary: "Authenticate to the server",
        complexity: "O(N) where N is the number of passwords defined for the user",
        args: &[string("username").opt(), string("password")],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Select,
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        acl_categories: &["@fast", "@connection"],
        group: "connection",
        since: "1.0.0",
        summary: "Change the selected database for the current connection",
        args: &[integer("index")],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Quit,
        name: "quit",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        group: "connection",
        since: "1.0.0",
        summary: "Close the connection",
        ..BASE
    },
    CommandSpec {
        id: CommandId::Reset,
        name: "reset",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        acl_categories: &["@fast", "@connection"],
        group: "connection",
        since: "6.2.0",
        summary: "Reset the connection",
        ..BASE
    },
    CommandSpec {
        id: CommandId::Info,
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        acl_categories: &["@slow", "@dangerous"],
        tips: &["nondeterministic_output", "request_policy:all_shards", "response_policy:special"],
        group: "server",
        since: "1.0.0",
        summary: "Get information and statistics about the server",
        args: &[string("section").opt().multi()],
        ..BASE
    },
    CommandSpec {
        id: CommandId::DbSize,
        name: "dbsize",
        arity: 1,
        flags: &["readonly", "fast"],
        acl_categories: &["@keyspace", "@read", "@fast"],
        tips: &["request_policy:all_shards", "response_policy:agg_sum"],
        group: "server",
        since: "1.0.0",
        summary: "Return the number of keys in the selected database",
        ..BASE
    },
    CommandSpec {
        id: CommandId::Scan,
        name: "scan",
        arity: -2,
        flags: &["readonly"],
        acl_categories: &["@keyspace", "@read", "@slow"],
        tips: &["nondeterministic_output", "request_policy:special"],
        group: "generic",
        since: "2.8.0",
        summary: "Incrementally iterate the keys space",
        complexity: "O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection.",
        args: &[
            integer("cursor"),
            pattern("pattern").tok("MATCH").opt(),
            integer("count").tok("COUNT").opt(),
            string("type").tok("TYPE").opt(),
        ],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Type,
        name: "type",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        key_step: 1,
        acl_categories: &["@keyspace", "@read", "@fast"],
        group: "generic",
        since: "1.0.0",
        summary: "Determine the type stored at key",
        args: &[key("key")],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Exists,
        name: "exists",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        key_step: 1,
        acl_categories: &["@keyspace", "@read", "@fast"],
        tips: &["request_policy:multi_shard", "response_policy:agg_sum"],
        group: "generic",
        since: "1.0.0",
        summary: "Determine if a key exists",
        complexity: "O(N) where N is the number of keys to check.",
        args: &[key("key").multi()],
        ..BASE
    },
    CommandSpec {
        id: CommandId::BgRewriteAof,
        name: "bgrewriteaof",
        arity: 1,
        flags: &["admin", "noscript", "no_async_loading"],
        acl_categories: &["@admin", "@slow", "@dangerous"],
        group: "server",
        since: "1.0.0",
        summary: "Asynchronously rewrite the append-only file",
        ..BASE
    },
    CommandSpec {
        id: CommandId::Time,
        name: "time",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        acl_categories: &["@fast"],
        tips: &["nondeterministic_output"],
        group: "server",
        since: "2.6.0",
        summary: "Return the server's wall-clock time: Unix seconds and microseconds",
        ..BASE
    },
    CommandSpec {
        id: CommandId::Role,
        name: "role",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast"],
        acl_categories: &["@admin", "@fast", "@dangerous"],
        group: "server",
        since: "2.8.12",
        summary: "Return this node's role: master on a single node or a cluster's leader, slave on a follower",
        ..BASE
    },
    CommandSpec {
        id: CommandId::Shutdown,
        name: "shutdown",
        arity: -1,
        flags: &["admin", "noscript", "loading", "stale", "no_multi", "allow_busy"],
        acl_categories: &["@admin", "@slow", "@dangerous"],
        group: "server",
        since: "1.0.0",
        summary: "Stop the server as SIGTERM does: blocked waiters answered, connections closed, the journal marked clean",
        complexity: "O(N) where N is the number of connections",
        args: &[
            oneof("save-selector", &[pure("nosave", "NOSAVE"), pure("save", "SAVE")]).opt(),
            pure("now", "NOW").opt(),
            pure("force", "FORCE").opt(),
            pure("abort", "ABORT").opt(),
        ],
        ..BASE
    },
    CommandSpec {
        id: CommandId::Command,
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        acl_categories: &["@slow", "@connection"],
        tips: &["nondeterministic_output_order"],
        group: "server",
        since: "2.8.13",
        summary: "Get array of Redis command details",
        complexity: "O(N) where N is the total number of Redis commands",
        subcommands: COMMAND_SUBCOMMANDS,
        ..BASE
    },
    CommandSpec {
        id: CommandId::Monitor,
        name: "monitor",
        arity: 1,
        flags: &["admin", "noscript", "loading", "stale"],
        acl_categories: &["@admin", "@slow", "@dangerous"],
        group: "server",
        since: "1.0.0",
        summary: "Listen for all requests received by the server in real time",
        ..BASE
    },
    CommandSpec {
        id: CommandId::Subscribe,
        name: "subscribe",
        arity: -2,
        summary: "Listen for messages published to the given channels",
        complexity: "O(N) where N is the number of channels to subscribe to.",
        args: &[string("channel").multi()],
        ..PUBSUB_LISTEN
    },
    CommandSpec {
        id: CommandId::PSubscribe,
        name: "psubscribe",
        arity: -2,
        summary: "Listen for messages published to channels matching the given patterns",
        complexity: "O(N) where N is the number of patterns the client is already subscribed to.",
        args: &[block("pattern", &[pattern("pattern")]).multi()],
        ..PUBSUB_LISTEN
    },
    CommandSpec {
        id: CommandId::Unsubscribe,
        name: "unsubscribe",
        arity: -1,
        summary: "Stop listening for messages posted to the given channels",
        complexity: "O(N) where N is the number of clients already subscribed to a channel.",
        args: &[string("channel").opt().multi()],
        ..PUBSUB_LISTEN
    },
    CommandSpec {
        id: CommandId::PUnsubscribe,
        name: "punsubscribe",
        arity: -1,
        summary: "Stop listening for messages posted to channels matching the given patterns",
        complexity: "O(N+M) where N is the number of patterns the client is already subscribed and M is the number of total patterns subscribed in the system (by any client).",
        args: &[pattern("pattern").opt().multi()],
        ..PUBSUB_LISTEN
    },
    CommandSpec {
        id: CommandId::Publish,
        name: "publish",
        arity: 3,
        flags: &["pubsub", "loading", "stale", "fast"],
        acl_categories: &["@pubsub", "@fast"],
        group: "pubsub",
        since: "2.0.0",
        summary: "Post a message to a channel (not to the __lock__: channels of the lock events)",
        complexity: "O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client).",
        args: &[string("channel"), string("message")],
        ..BASE
    },
    CommandSpec {
        id: CommandId::PubSub,
        name: "pubsub",
        arity: -2,
        acl_categories: &["@slow"],
        group: "pubsub",
        since: "2.8.0",
        summary: "A container for Pub/Sub commands",
        complexity: "Depends on subcommand.",
        subcommands: PUBSUB_SUBCOMMANDS,
        ..BASE
    },
    CommandSpec {
        id: CommandId::Client,
        name: "client",
        arity: -2,
        acl_categories: &["@slow"],
        group: "connection",
        since: "2.4.0",
        summary: "A container for client connection commands",
        complexity: "Depends on subcommand.",
        subcommands: CLIENT_SUBCOMMANDS,
        ..BASE
    },
    CommandSpec {
        id: CommandId::Config,
        name: "config",
        arity: -2,
        acl_categories: &["@slow"],
        group: "server",
        since: "2.0.0",
        summary: "A container for server configuration commands",
        complexity: "Depends on subcommand.",
        subcommands: CONFIG_SUBCOMMANDS,
        ..BASE
    },
    CommandSpec {
        id: CommandId::Memory,
        name: "memory",
        arity: -2,
        acl_categories: &["@slow"],
        group: "server",
        since: "4.0.0",
        summary: "A container for memory diagnostics commands",
        complexity: "Depends on subcommand.",
        subcommands: MEMORY_SUBCOMMANDS,
        ..BASE
    },
    CommandSpec {
        id: CommandId::Acl,
        name: "acl",
        arity: -2,
        acl_categories: &["@slow"],
        group: "server",
        since: "6.0.0",
        summary: "A container for Access List Control commands",
        complexity: "Depends on subcommand.",
        subcommands: ACL_SUBCOMMANDS,
        ..BASE
    },
    CommandSpec {
        id: CommandId::Cluster,
        name: "cluster",
        arity: -2,
        acl_categories: &["@slow"],
        group: "cluster",
        since: "3.0.0",
        summary: "A container for cluster commands",
        complexity: "Depends on subcommand.",
        subcommands: CLUSTER_SUBCOMMANDS,
        ..BASE
    },
    CommandSpec {
        id: CommandId::ReadOnly,
        name: "readonly",
        flags: &["loading", "stale", "fast"],
        summary: "Enables read queries for a connection to a cluster replica node",
        ..CLUSTER_CONNECTION
    },
    CommandSpec {
        id: CommandId::ReadWrite,
        name: "readwrite",
        flags: &["loading", "stale", "fast"],
        summary: "Disables read queries for a connection to a cluster replica node",
        ..CLUSTER_CONNECTION
    },
    CommandSpec {
        id: CommandId::Asking,
        name: "asking",
        flags: &["fast"],
        summary: "Sent by cluster clients after an -ASK redirect",
        ..CLUSTER_CONNECTION
    },
];

/// READONLY, READWRITE and ASKING: what a cluster client sends to set up a connection.
const CLUSTER_CONNECTION: CommandSpec =
    CommandSpec { arity: 1, acl_categories: &["@fast", "@connection"], group: "cluster", since: "3.0.0", ..BASE };

const HELP_SUMMARY: &str = "Show helpful text about the different subcommands";

/// SUBSCRIBE and its kin, as Redis declares them.
const PUBSUB_LISTEN: CommandSpec = CommandSpec {
    flags: &["pubsub", "noscript", "loading", "stale"],
    acl_categories: &["@pubsub", "@slow"],
    group: "pubsub",
    since: "2.0.0",
    ..BASE
};

const PUBSUB_SUB: CommandSpec = CommandSpec {
    container: "pubsub",
    flags: &["pubsub", "loading", "stale"],
    acl_categories: &["@pubsub", "@slow"],
    group: "pubsub",
    since: "2.8.0",
    ..BASE
};

const PUBSUB_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::PubSubChannels,
        name: "channels",
        arity: -2,
        summary: "List active channels",
        complexity: "O(N) where N is the number of active channels, and assuming constant time pattern matching (relatively short channels and patterns)",
        args: &[pattern("pattern").opt()],
        ..PUBSUB_SUB
    },
    CommandSpec {
        id: CommandId::PubSubNumSub,
        name: "numsub",
        arity: -2,
        summary: "Get the count of subscribers for channels",
        complexity: "O(N) for the NUMSUB subcommand, where N is the number of requested channels",
        args: &[string("channel").opt().multi()],
        ..PUBSUB_SUB
    },
    CommandSpec {
        id: CommandId::PubSubNumPat,
        name: "numpat",
        arity: 2,
        summary: "Get the count of unique patterns pattern subscriptions",
        ..PUBSUB_SUB
    },
    CommandSpec {
        id: CommandId::PubSubHelp,
        name: "help",
        arity: 2,
        flags: &["loading", "stale"],
        acl_categories: &["@slow"],
        since: "6.2.0",
        summary: HELP_SUMMARY,
        ..PUBSUB_SUB
    },
];

const CLUSTER_SUB: CommandSpec = CommandSpec {
    container: "cluster",
    arity: 2,
    flags: &["stale"],
    acl_categories: &["@slow"],
    group: "cluster",
    since: "3.0.0",
    ..BASE
};

/// CLUSTER ADDNODE and FORGET: administration, as Redis's CLUSTER MEET and FORGET are.
const CLUSTER_MEMBERSHIP: CommandSpec = CommandSpec {
    flags: &["admin", "noscript", "stale"],
    acl_categories: &["@admin", "@slow", "@dangerous"],
    ..CLUSTER_SUB
};

const NODES_COMPLEXITY: &str = "O(N) where N is the total number of Cluster nodes";

const CLUSTER_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::ClusterSlots,
        name: "slots",
        tips: &["nondeterministic_output"],
        summary: "Get array of Cluster slot to node mappings",
        complexity: NODES_COMPLEXITY,
        ..CLUSTER_SUB
    },
    CommandSpec {
        id: CommandId::ClusterShards,
        name: "shards",
        tips: &["nondeterministic_output"],
        since: "7.0.0",
        summary: "Get array of cluster slots to node mappings",
        complexity: "O(N) where N is the total number of cluster nodes",
        ..CLUSTER_SUB
    },
    CommandSpec {
        id: CommandId::ClusterNodes,
        name: "nodes",
        tips: &["nondeterministic_output"],
        summary: "Get Cluster config for the node",
        complexity: NODES_COMPLEXITY,
        ..CLUSTER_SUB
    },
    CommandSpec {
        id: CommandId::ClusterInfo,
        name: "info",
        tips: &["nondeterministic_output"],
        summary: "Provides info about Redis Cluster node state",
        ..CLUSTER_SUB
    },
    CommandSpec { id: CommandId::ClusterMyId, name: "myid", summary: "Return the node id", ..CLUSTER_SUB },
    CommandSpec {
        id: CommandId::ClusterMyShardId,
        name: "myshardid",
        tips: &["nondeterministic_output"],
        since: "7.2.0",
        summary: "Returns the shard ID of a node.",
        ..CLUSTER_SUB
    },
    CommandSpec {
        id: CommandId::ClusterKeySlot,
        name: "keyslot",
        arity: 3,
        summary: "Returns the hash slot of the specified key",
        complexity: "O(N) where N is the number of bytes in the key",
        args: &[string("key")],
        ..CLUSTER_SUB
    },
    CommandSpec {
        id: CommandId::ClusterAddNode,
        name: "addnode",
        arity: -5,
        since: "1.0.0",
        summary: "Adds a node to the cluster: it catches up, then votes (baton)",
        complexity: "O(N) where N is the size of the state the new node catches up with",
        args: &[integer("node-id"), string("ip"), integer("port"), integer("cluster-bus-port").opt()],
        ..CLUSTER_MEMBERSHIP
    },
    CommandSpec {
        id: CommandId::ClusterForget,
        name: "forget",
        arity: 3,
        summary: "Removes a node from the cluster",
        args: &[string("node-id")],
        ..CLUSTER_MEMBERSHIP
    },
    CommandSpec {
        id: CommandId::ClusterHelp,
        name: "help",
        flags: &["loading", "stale"],
        since: "5.0.0",
        summary: HELP_SUMMARY,
        ..CLUSTER_SUB
    },
];

const COMMAND_SUB: CommandSpec = CommandSpec {
    container: "command",
    flags: &["loading", "stale"],
    acl_categories: &["@slow", "@connection"],
    group: "server",
    ..BASE
};

const COMMAND_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::CommandCount,
        name: "count",
        arity: 2,
        since: "2.8.13",
        summary: "Get total number of Redis commands",
        ..COMMAND_SUB
    },
    CommandSpec {
        id: CommandId::CommandDocs,
        name: "docs",
        arity: -2,
        tips: &["nondeterministic_output_order"],
        since: "7.0.0",
        summary: "Get array of specific Redis command documentation",
        complexity: "O(N) where N is the number of commands to look up",
        args: &[string("command-name").opt().multi()],
        ..COMMAND_SUB
    },
    CommandSpec {
        id: CommandId::CommandInfo,
        name: "info",
        arity: -2,
        tips: &["nondeterministic_output_order"],
        since: "2.8.13",
        summary: "Get array of specific Redis command details, or all when no argument is given.",
        complexity: "O(N) where N is the number of commands to look up",
        args: &[string("command-name").opt().multi()],
        ..COMMAND_SUB
    },
    CommandSpec {
        id: CommandId::CommandList,
        name: "list",
        arity: -2,
        tips: &["nondeterministic_output_order"],
        since: "7.0.0",
        summary: "Get an array of Redis command names",
        complexity: "O(N) where N is the total number of Redis commands",
        args: &[oneof(
            "filterby",
            &[string("module-name").tok("MODULE"), string("category").tok("ACLCAT"), pattern("pattern").tok("PATTERN")],
        )
        .tok("FILTERBY")
        .opt()],
        ..COMMAND_SUB
    },
    CommandSpec {
        id: CommandId::CommandHelp,
        name: "help",
        arity: 2,
        since: "5.0.0",
        summary: HELP_SUMMARY,
        ..COMMAND_SUB
    },
];

const CLIENT_SUB: CommandSpec = CommandSpec {
    container: "client",
    flags: &["noscript", "loading", "stale"],
    acl_categories: &["@slow", "@connection"],
    group: "connection",
    ..BASE
};

const CLIENT_ADMIN_FLAGS: &[&str] = &["admin", "noscript", "loading", "stale"];
const CLIENT_ADMIN_ACL: &[&str] = &["@admin", "@slow", "@dangerous", "@connection"];

const CLIENT_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::ClientId,
        name: "id",
        arity: 2,
        since: "5.0.0",
        summary: "Returns the client ID for the current connection",
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientSetName,
        name: "setname",
        arity: 3,
        since: "2.6.9",
        summary: "Set the current connection name",
        args: &[string("connection-name")],
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientGetName,
        name: "getname",
        arity: 2,
        since: "2.6.9",
        summary: "Get the current connection name",
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientSetInfo,
        name: "setinfo",
        arity: 4,
        since: "7.2.0",
        summary: "Sets information specific to the client or connection.",
        args: &[oneof("attr", &[string("libname").tok("lib-name"), string("libver").tok("lib-ver")])],
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientInfo,
        name: "info",
        arity: 2,
        tips: &["nondeterministic_output"],
        since: "6.2.0",
        summary: "Returns information about the current client connection.",
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientList,
        name: "list",
        arity: -2,
        flags: CLIENT_ADMIN_FLAGS,
        acl_categories: CLIENT_ADMIN_ACL,
        tips: &["nondeterministic_output"],
        since: "2.4.0",
        summary: "Get the list of client connections",
        complexity: "O(N) where N is the number of client connections",
        args: &[
            oneof(
                "normal_master_replica_pubsub",
                &[
                    pure("normal", "NORMAL"),
                    pure("master", "MASTER"),
                    pure("replica", "REPLICA"),
                    pure("pubsub", "PUBSUB"),
                ],
            )
            .tok("TYPE")
            .opt(),
            block("id", &[integer("client-id").multi()]).tok("ID").opt(),
        ],
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientKill,
        name: "kill",
        arity: -3,
        flags: CLIENT_ADMIN_FLAGS,
        acl_categories: CLIENT_ADMIN_ACL,
        since: "2.4.0",
        summary: "Kill the connection of a client",
        complexity: "O(N) where N is the number of client connections",
        args: &[oneof(
            "filter",
            &[
                string("ip:port"),
                oneof(
                    "new-format",
                    &[
                        integer("client-id").tok("ID").opt(),
                        oneof(
                            "normal_master_slave_pubsub",
                            &[
                                pure("normal", "NORMAL"),
                                pure("master", "MASTER"),
                                pure("slave", "SLAVE"),
                                pure("replica", "REPLICA"),
                                pure("pubsub", "PUBSUB"),
                            ],
                        )
                        .tok("TYPE")
                        .opt(),
                        string("username").tok("USER").opt(),
                        string("ip:port").tok("ADDR").opt(),
                        string("ip:port").tok("LADDR").opt(),
                        string("yes/no").tok("SKIPME").opt(),
                    ],
                )
                .multi(),
            ],
        )],
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientUnblock,
        name: "unblock",
        arity: -3,
        flags: CLIENT_ADMIN_FLAGS,
        acl_categories: CLIENT_ADMIN_ACL,
        since: "5.0.0",
        summary: "Unblock a client blocked in a blocking command from a different connection",
        complexity: "O(log N) where N is the number of client connections",
        args: &[
            integer("client-id"),
            oneof("timeout_error", &[pure("timeout", "TIMEOUT"), pure("error", "ERROR")]).opt(),
        ],
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientNoEvict,
        name: "no-evict",
        arity: 3,
        flags: CLIENT_ADMIN_FLAGS,
        acl_categories: CLIENT_ADMIN_ACL,
        since: "7.0.0",
        summary: "Set client eviction mode for the current connection",
        args: &[oneof("enabled", ON_OFF)],
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientNoTouch,
        name: "no-touch",
        arity: 3,
        since: "7.2.0",
        summary: "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
        args: &[oneof("enabled", ON_OFF)],
        ..CLIENT_SUB
    },
    CommandSpec {
        id: CommandId::ClientHelp,
        name: "help",
        arity: 2,
        flags: &["loading", "stale"],
        since: "5.0.0",
        summary: HELP_SUMMARY,
        ..CLIENT_SUB
    },
];

const CONFIG_SUB: CommandSpec = CommandSpec {
    container: "config",
    flags: &["admin", "noscript", "loading", "stale"],
    acl_categories: &["@admin", "@slow", "@dangerous"],
    group: "server",
    since: "2.0.0",
    ..BASE
};

const CONFIG_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::ConfigGet,
        name: "get",
        arity: -3,
        summary: "Get the values of configuration parameters",
        complexity: "O(N) when N is the number of configuration parameters provided",
        args: &[block("parameter", &[string("parameter")]).multi()],
        ..CONFIG_SUB
    },
    CommandSpec {
        id: CommandId::ConfigSet,
        name: "set",
        arity: -4,
        tips: &["request_policy:all_nodes", "response_policy:all_succeeded"],
        summary: "Set configuration parameters to the given values",
        complexity: "O(N) when N is the number of configuration parameters provided",
        args: &[block("parameter_value", &[string("parameter"), string("value")]).multi()],
        ..CONFIG_SUB
    },
    CommandSpec {
        id: CommandId::ConfigResetStat,
        name: "resetstat",
        arity: 2,
        summary: "Reset the stats returned by INFO",
        ..CONFIG_SUB
    },
    CommandSpec {
        id: CommandId::ConfigHelp,
        name: "help",
        arity: 2,
        flags: &["loading", "stale"],
        acl_categories: &["@slow"],
        since: "5.0.0",
        summary: HELP_SUMMARY,
        ..CONFIG_SUB
    },
];

const MEMORY_SUB: CommandSpec =
    CommandSpec { container: "memory", acl_categories: &["@slow"], group: "server", since: "4.0.0", ..BASE };

const MEMORY_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::MemoryUsage,
        name: "usage",
        arity: -3,
        flags: &["readonly"],
        first_key: 2,
        last_key: 2,
        key_step: 1,
        acl_categories: &["@read", "@slow"],
        summary: "Estimate the memory usage of a key",
        complexity: "O(N) where N is the number of samples.",
        args: &[key("key"), integer("count").tok("SAMPLES").opt()],
        ..MEMORY_SUB
    },
    CommandSpec {
        id: CommandId::MemoryHelp,
        name: "help",
        arity: 2,
        flags: &["loading", "stale"],
        summary: HELP_SUMMARY,
        ..MEMORY_SUB
    },
];

const ACL_SUB: CommandSpec = CommandSpec {
    container: "acl",
    flags: &["admin", "noscript", "loading", "stale"],
    acl_categories: &["@admin", "@slow", "@dangerous"],
    group: "server",
    since: "6.0.0",
    ..BASE
};

/// The ACL subcommands anyone may run to learn about themselves, as in Redis.
const ACL_SELF: CommandSpec =
    CommandSpec { flags: &["noscript", "loading", "stale"], acl_categories: &["@slow"], ..ACL_SUB };

const USERS_COMPLEXITY: &str = "O(N). Where N is the number of configured users.";

const ACL_SUBCOMMANDS: &[CommandSpec] = &[
    CommandSpec {
        id: CommandId::AclCat,
        name: "cat",
        arity: -2,
        summary: "List the ACL categories or the commands inside a category",
        complexity: "O(1) since the categories and commands are a fixed set.",
        args: &[string("categoryname").opt()],
        ..ACL_SELF
    },
    CommandSpec {
        id: CommandId::AclDelUser,
        name: "deluser",
        arity: -3,
        summary: "Remove the specified ACL users and the associated rules",
        complexity: "O(1) amortized time considering the typical user.",
        args: &[string("username").multi()],
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclDryRun,
        name: "dryrun",
        arity: -4,
        since: "7.0.0",
        summary: "Returns whether the user can execute the given command without executing the command.",
        complexity: "O(1).",
        args: &[string("username"), string("command"), string("arg").opt().multi()],
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclGenPass,
        name: "genpass",
        arity: -2,
        summary: "Generate a pseudorandom secure password to use for ACL users",
        args: &[integer("bits").opt()],
        ..ACL_SELF
    },
    CommandSpec {
        id: CommandId::AclGetUser,
        name: "getuser",
        arity: 3,
        summary: "Get the rules for a specific ACL user",
        complexity: "O(N). Where N is the number of password, command and pattern rules that the user has.",
        args: &[string("username")],
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclList,
        name: "list",
        arity: 2,
        summary: "List the current ACL rules in ACL config file format",
        complexity: USERS_COMPLEXITY,
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclLoad,
        name: "load",
        arity: 2,
        summary: "Reload the ACLs from the configured ACL file",
        complexity: USERS_COMPLEXITY,
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclLog,
        name: "log",
        arity: -2,
        summary: "List latest events denied because of ACLs in place",
        complexity: "O(N) with N being the number of entries shown.",
        args: &[oneof("operation", &[integer("count"), pure("reset", "RESET")]).opt()],
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclSave,
        name: "save",
        arity: 2,
        summary: "Save the current ACL rules in the configured ACL file",
        complexity: USERS_COMPLEXITY,
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclSetUser,
        name: "setuser",
        arity: -3,
        summary: "Modify or create the rules for a specific ACL user",
        complexity: "O(N). Where N is the number of rules provided.",
        args: &[string("username"), string("rule").opt().multi()],
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclUsers,
        name: "users",
        arity: 2,
        summary: "List the username of all the configured ACL rules",
        complexity: USERS_COMPLEXITY,
        ..ACL_SUB
    },
    CommandSpec {
        id: CommandId::AclWhoAmI,
        name: "whoami",
        arity: 2,
        summary: "Return the name of the user associated to the current connection",
        ..ACL_SELF
    },
    CommandSpec {
        id: CommandId::AclHelp,
        name: "help",
        arity: 2,
        flags: &["loading", "stale"],
        summary: HELP_SUMMARY,
        ..ACL_SELF
    },
];

/// What ACL rules can name: every command and subcommand, with its id's bit.
pub(crate) fn acl_catalogue() -> Catalogue {
    let entries = COMMANDS
        .iter()
        .flat_map(|spec| std::iter::once(spec).chain(spec.subcommands))
        .map(|spec| CommandEntry {
            bit: spec.id.bit(),
            container: spec.container,
            name: spec.name,
            categories: spec.acl_categories,
        })
        .collect();
    Catalogue::new(entries)
}

// ---------------------------------------------------------------------------------------------
// Lookups: run on every request, so they compare bytes in place and never allocate.

fn find(table: &'static [CommandSpec], name: &[u8]) -> Option<&'static CommandSpec> {
    table.iter().find(|spec| spec.name.len() == name.len() && spec.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Case-insensitive lookup of a top-level command by name bytes.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    find(COMMANDS, name)
}

/// Case-insensitive lookup of a subcommand: (CLIENT, `b"list"`) gives the CLIENT LIST spec.
pub(crate) fn lookup_sub(parent: &'static CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    find(parent.subcommands, sub)
}

/// Case-insensitive lookup by Redis full name, as COMMAND INFO and COMMAND DOCS accept it:
/// `"ping"` or `"client|list"`. A container's own name gives the container.
pub(crate) fn lookup_full(name: &[u8]) -> Option<&'static CommandSpec> {
    match name.iter().position(|&b| b == b'|') {
        None => lookup(name),
        Some(bar) => lookup_sub(lookup(&name[..bar])?, &name[bar + 1..]),
    }
}

// ---------------------------------------------------------------------------------------------
// COMMAND replies.

fn statuses(items: &'static [&'static str]) -> Reply {
    Reply::Array(items.iter().map(|&s| Reply::Status(s.into())).collect())
}

fn bulks(items: &'static [&'static str]) -> Reply {
    Reply::Array(items.iter().map(|&s| Reply::bulk_static(s)).collect())
}

fn field(name: &'static str, value: Reply) -> (Reply, Reply) {
    (Reply::bulk_static(name), value)
}

/// The Redis 7 key specification for a command with keys, derived from its legacy key range and
/// whether it reads or writes.
fn key_specs(spec: &CommandSpec) -> Reply {
    if spec.first_key <= 0 {
        return Reply::Array(Vec::new());
    }
    let flags: &'static [&'static str] = if spec.is_write() { &["RW", "access", "update"] } else { &["RO", "access"] };
    // find_keys' lastkey is relative to the first key; a negative last key counts from the end.
    let lastkey = if spec.last_key < 0 { spec.last_key } else { spec.last_key - spec.first_key };
    let key_spec = Reply::Map(vec![
        field("flags", statuses(flags)),
        field(
            "begin_search",
            Reply::Map(vec![
                field("type", Reply::bulk_static("index")),
                field("spec", Reply::Map(vec![field("index", Reply::Int(spec.first_key.into()))])),
            ]),
        ),
        field(
            "find_keys",
            Reply::Map(vec![
                field("type", Reply::bulk_static("range")),
                field(
                    "spec",
                    Reply::Map(vec![
                        field("lastkey", Reply::Int(lastkey.into())),
                        field("keystep", Reply::Int(spec.key_step.into())),
                        field("limit", Reply::Int(0)),
                    ]),
                ),
            ]),
        ),
    ]);
    Reply::Array(vec![key_spec])
}

/// One COMMAND INFO entry: [name, arity, flags, first key, last key, step, acl categories, tips,
/// key specs, subcommands].
fn info_entry(spec: &CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::bulk(spec.full_name()),
        Reply::Int(spec.arity.into()),
        statuses(spec.flags),
        Reply::Int(spec.first_key.into()),
        Reply::Int(spec.last_key.into()),
        Reply::Int(spec.key_step.into()),
        statuses(spec.acl_categories),
        bulks(spec.tips),
        key_specs(spec),
        Reply::Array(spec.subcommands.iter().map(info_entry).collect()),
    ])
}

fn arg_doc(arg: &ArgSpec) -> Reply {
    let mut fields =
        vec![field("name", Reply::bulk_static(arg.name)), field("type", Reply::bulk_static(arg.kind.as_str()))];
    if arg.kind == ArgKind::Key {
        // Every keyed command here has exactly one key spec.
        fields.push(field("key_spec_index", Reply::Int(0)));
    }
    if let Some(token) = arg.token {
        fields.push(field("token", Reply::bulk_static(token)));
    }
    if arg.optional || arg.multiple {
        let mut flags = Vec::with_capacity(2);
        if arg.optional {
            flags.push(Reply::Status("optional".into()));
        }
        if arg.multiple {
            flags.push(Reply::Status("multiple".into()));
        }
        fields.push(field("flags", Reply::Array(flags)));
    }
    if !arg.children.is_empty() {
        fields.push(field("arguments", Reply::Array(arg.children.iter().map(arg_doc).collect())));
    }
    Reply::Map(fields)
}

/// One COMMAND DOCS value: summary, since, group, complexity, then arguments and subcommands
/// when there are any.
fn doc_entry(spec: &CommandSpec) -> Reply {
    let mut fields = vec![
        field("summary", Reply::bulk_static(spec.summary)),
        field("since", Reply::bulk_static(spec.since)),
        field("group", Reply::bulk_static(spec.group)),
        field("complexity", Reply::bulk_static(spec.complexity)),
    ];
    if !spec.args.is_empty() {
        fields.push(field("arguments", Reply::Array(spec.args.iter().map(arg_doc).collect())));
    }
    if spec.has_subcommands() {
        fields.push(field("subcommands", Reply::Map(spec.subcommands.iter().map(doc_pair).collect())));
    }
    Reply::Map(fields)
}

fn doc_pair(spec: &CommandSpec) -> (Reply, Reply) {
    (Reply::bulk(spec.full_name()), doc_entry(spec))
}

/// `COMMAND` with no arguments: every command's info entry.
pub(crate) fn command_info_all() -> Reply {
    Reply::Array(COMMANDS.iter().map(info_entry).collect())
}

/// `COMMAND COUNT`: the number of top-level commands.
pub(crate) fn command_count() -> Reply {
    Reply::Int(COMMANDS.len() as i64)
}

/// `COMMAND INFO [name ...]`: one entry per name (full names like `client|list` accepted), nil for
/// unknown names; every command when no name is given.
pub(crate) fn command_info(names: &[Bytes]) -> Reply {
    if names.is_empty() {
        return command_info_all();
    }
    Reply::Array(names.iter().map(|name| lookup_full(name).map_or(Reply::Nil, info_entry)).collect())
}

/// `COMMAND DOCS [name ...]`: a map of full name to doc map; unknown names are left out; every
/// command when no name is given.
pub(crate) fn command_docs(names: &[Bytes]) -> Reply {
    if names.is_empty() {
        return Reply::Map(COMMANDS.iter().map(doc_pair).collect());
    }
    Reply::Map(names.iter().filter_map(|name| lookup_full(name)).map(doc_pair).collect())
}

/// `COMMAND LIST`: every command's name, subcommands included as `container|sub` like Redis.
pub(crate) fn command_list(keep: impl Fn(&CommandSpec) -> bool) -> Reply {
    let mut names = Vec::with_capacity(COMMANDS.len() + COMMANDS.iter().map(|c| c.subcommands.len()).sum::<usize>());
    for spec in COMMANDS.iter().flat_map(|spec| std::iter::once(spec).chain(spec.subcommands)) {
        if keep(spec) {
            names.push(Reply::bulk(spec.full_name()));
        }
    }
    Reply::Array(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn bytes_of(reply: &Reply) -> &[u8] {
        match reply {
            Reply::Bulk(b) => b,
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    fn map_get<'a>(reply: &'a Reply, key: &str) -> Option<&'a Reply> {
        match reply {
            Reply::Map(pairs) => pairs.iter().find(|(k, _)| bytes_of(k) == key.as_bytes()).map(|(_, v)| v),
            other => panic!("expected a map, got {other:?}"),
        }
    }

    fn all_specs() -> Vec<&'static CommandSpec> {
        COMMANDS.iter().flat_map(|c| std::iter::once(c).chain(c.subcommands.iter())).collect()
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup(b"lock.try").unwrap().name, "lock.try");
        assert_eq!(lookup(b"LOCK.TRY").unwrap().name, "lock.try");
        assert_eq!(lookup(b"Lock.Wait").unwrap().name, "lock.wait");
        assert_eq!(lookup(b"PiNg").unwrap().name, "ping");
        let client = lookup(b"CLIENT").unwrap();
        assert_eq!(lookup_sub(client, b"LIST").unwrap().full_name(), "client|list");
        assert_eq!(lookup_sub(client, b"no-Evict").unwrap().name, "no-evict");
        let command = lookup(b"command").unwrap();
        assert_eq!(lookup_sub(command, b"Count").unwrap().arity, 2);
        assert_eq!(lookup_full(b"CONFIG|get").unwrap().full_name(), "config|get");
        assert_eq!(lookup_full(b"config").unwrap().name, "config");
    }

    #[test]
    fn lookup_rejects_unknown_names() {
        assert!(lookup(b"").is_none());
        assert!(lookup(b"get").is_none());
        assert!(lookup(b"lock.tr").is_none());
        assert!(lookup(b"lock.tryy").is_none());
        assert!(lookup(b"client|list").is_none());
        assert!(lookup(b"list").is_none(), "subcommands are not top-level commands");
        assert!(lookup_sub(lookup(b"client").unwrap(), b"pause").is_none());
        assert!(lookup_sub(lookup(b"ping").unwrap(), b"list").is_none());
        assert!(lookup_full(b"client|").is_none());
        assert!(lookup_full(b"nosuch|list").is_none());
        assert!(lookup_full(b"client|list|x").is_none());
    }

    #[test]
    fn arity_exact_and_at_least() {
        let extend = lookup(b"lock.extend").unwrap();
        assert!(!extend.arity_ok(4));
        assert!(extend.arity_ok(5));
        assert!(!extend.arity_ok(6));
        let try_ = lookup(b"lock.try").unwrap();
        assert!(!try_.arity_ok(0));
        assert!(!try_.arity_ok(2));
        assert!(try_.arity_ok(3));
        assert!(try_.arity_ok(6));
        let ping = lookup(b"ping").unwrap();
        assert!(ping.arity_ok(1) && ping.arity_ok(2));
        assert!(!ping.arity_ok(0));
        let reset = lookup(b"reset").unwrap();
        assert!(reset.arity_ok(1) && !reset.arity_ok(2));
        let count = lookup_full(b"command|count").unwrap();
        assert!(count.arity_ok(2) && !count.arity_ok(3));
    }

    #[test]
    fn full_names() {
        assert_eq!(lookup(b"lock.info").unwrap().full_name(), "lock.info");
        assert_eq!(lookup_full(b"client|setinfo").unwrap().full_name(), "client|setinfo");
        for top in COMMANDS {
            assert!(top.container.is_empty(), "{}", top.name);
            for sub in top.subcommands {
                assert_eq!(sub.container, top.name);
                assert_eq!(sub.full_name(), format!("{}|{}", top.name, sub.name));
            }
        }
    }

    #[test]
    fn no_duplicate_names_and_all_lowercase() {
        let mut seen = HashSet::new();
        for spec in all_specs() {
            assert!(seen.insert(spec.full_name()), "duplicate {}", spec.full_name());
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(!spec.name.is_empty() && !spec.name.contains('|'));
        }
        let mut tops = HashSet::new();
        assert!(COMMANDS.iter().all(|c| tops.insert(c.name)));
    }

    #[test]
    fn table_is_consistent() {
        for spec in all_specs() {
            let name = spec.full_name();
            assert!(spec.arity != 0, "{name}");
            assert!(!spec.summary.is_empty() && !spec.since.is_empty() && !spec.group.is_empty(), "{name}");
            assert!(!spec.complexity.is_empty(), "{name}");
            assert!(!spec.acl_categories.is_empty(), "{name}");
            assert!(spec.acl_categories.iter().all(|c| c.starts_with('@')), "{name}");
            if !spec.container.is_empty() {
                // A subcommand's arity counts the container name and its own.
                assert!(spec.arity.abs() >= 2, "{name}");
                assert!(spec.subcommands.is_empty(), "{name}: no nested containers");
            }
            if spec.first_key > 0 {
                assert!(spec.arity.abs() > spec.first_key, "{name}");
                // A negative last key counts from the end (EXISTS: every argument).
                assert!((spec.last_key >= spec.first_key || spec.last_key < 0) && spec.key_step > 0, "{name}");
                assert_eq!(spec.args.iter().filter(|a| a.kind == ArgKind::Key).count(), 1, "{name}");
                // `args` leaves out the command's name, and a subcommand's.
                let names = if spec.container.is_empty() { 1 } else { 2 };
                assert_eq!(spec.args[spec.first_key as usize - names].kind, ArgKind::Key, "{name}");
            } else {
                assert_eq!((spec.last_key, spec.key_step), (0, 0), "{name}");
            }
        }
        for lock in COMMANDS.iter().filter(|c| c.name.starts_with("lock.")) {
            assert_eq!((lock.group, lock.since), ("generic", "1.0.0"));
            assert_eq!((lock.first_key, lock.last_key, lock.key_step), (1, 1, 1));
        }
    }

    fn check_arg(arg: &Reply, path: &str) {
        let name = map_get(arg, "name").unwrap_or_else(|| panic!("{path}: argument without name"));
        let name = std::str::from_utf8(bytes_of(name)).unwrap();
        let path = format!("{path}/{name}");
        let kind = bytes_of(map_get(arg, "type").unwrap_or_else(|| panic!("{path}: no type")));
        let kind = std::str::from_utf8(kind).unwrap();
        assert!(
            ["string", "integer", "key", "pattern", "pure-token", "oneof", "block"].contains(&kind),
            "{path}: {kind}"
        );
        if let Some(token) = map_get(arg, "token") {
            assert!(!bytes_of(token).is_empty(), "{path}");
        }
        if kind == "pure-token" {
            assert!(map_get(arg, "token").is_some(), "{path}: pure-token without token");
        }
        if kind == "key" {
            assert_eq!(map_get(arg, "key_spec_index"), Some(&Reply::Int(0)), "{path}");
        }
        if let Some(flags) = map_get(arg, "flags") {
            let Reply::Array(flags) = flags else { panic!("{path}: flags not an array") };
            assert!(!flags.is_empty(), "{path}");
            for flag in flags {
                assert!(matches!(flag, Reply::Status(f) if f == "optional" || f == "multiple"), "{path}: {flag:?}");
            }
        }
        match map_get(arg, "arguments") {
            Some(Reply::Array(children)) => {
                assert!(kind == "oneof" || kind == "block", "{path}");
                assert!(!children.is_empty(), "{path}");
                for child in children {
                    check_arg(child, &path);
                }
            }
            Some(other) => panic!("{path}: arguments not an array: {other:?}"),
            None => assert!(kind != "oneof" && kind != "block", "{path}: {kind} without arguments"),
        }
    }

    fn check_doc(name: &str, doc: &Reply) {
        for key in ["summary", "since", "group", "complexity"] {
            let value = map_get(doc, key).unwrap_or_else(|| panic!("{name}: no {key}"));
            assert!(!bytes_of(value).is_empty(), "{name}: empty {key}");
        }
        let Reply::Map(pairs) = doc else { unreachable!() };
        let keys: Vec<&[u8]> = pairs.iter().map(|(k, _)| bytes_of(k)).collect();
        assert_eq!(&keys[..4], [&b"summary"[..], b"since", b"group", b"complexity"], "{name}: Redis's order");
        if let Some(args) = map_get(doc, "arguments") {
            let Reply::Array(args) = args else { panic!("{name}: arguments not an array") };
            assert!(!args.is_empty());
            for arg in args {
                check_arg(arg, name);
            }
        }
        if let Some(subs) = map_get(doc, "subcommands") {
            let Reply::Map(subs) = subs else { panic!("{name}: subcommands not a map") };
            assert_eq!(subs.len(), lookup(name.as_bytes()).unwrap().subcommands.len());
            for (sub_name, sub_doc) in subs {
                let sub_name = std::str::from_utf8(bytes_of(sub_name)).unwrap();
                assert!(sub_name.starts_with(&format!("{name}|")), "{sub_name}");
                check_doc(sub_name, sub_doc);
            }
        }
    }

    #[test]
    fn every_doc_is_well_formed() {
        let Reply::Map(docs) = command_docs(&[]) else { panic!("COMMAND DOCS is not a map") };
        assert_eq!(docs.len(), COMMANDS.len());
        for (name, doc) in &docs {
            let name = std::str::from_utf8(bytes_of(name)).unwrap();
            assert!(lookup(name.as_bytes()).is_some());
            check_doc(name, doc);
        }
        let hello = lookup(b"hello").unwrap();
        let hello_doc = doc_entry(hello);
        assert!(map_get(&hello_doc, "subcommands").is_none());
        let Some(Reply::Array(args)) = map_get(&hello_doc, "arguments") else { panic!() };
        let Some(Reply::Array(inner)) = map_get(&args[0], "arguments") else { panic!() };
        assert_eq!(inner.len(), 3);
        assert_eq!(map_get(&inner[1], "token"), Some(&Reply::bulk_static("AUTH")));
    }

    #[test]
    fn docs_for_named_commands() {
        let names = [Bytes::from_static(b"PING"), Bytes::from_static(b"nosuch"), Bytes::from_static(b"client|LIST")];
        let Reply::Map(docs) = command_docs(&names) else { panic!() };
        assert_eq!(docs.len(), 2, "unknown names are left out");
        assert_eq!(docs[0].0, Reply::bulk_static("ping"));
        assert_eq!(docs[1].0, Reply::bulk_static("client|list"));
        assert_eq!(command_docs(&[Bytes::from_static(b"nosuch")]), Reply::Map(vec![]));
        // PING exactly as Redis 7 documents it.
        let expected = Reply::Map(vec![
            field("summary", Reply::bulk_static("Ping the server")),
            field("since", Reply::bulk_static("1.0.0")),
            field("group", Reply::bulk_static("connection")),
            field("complexity", Reply::bulk_static("O(1)")),
            field(
                "arguments",
                Reply::Array(vec![Reply::Map(vec![
                    field("name", Reply::bulk_static("message")),
                    field("type", Reply::bulk_static("string")),
                    field("flags", Reply::Array(vec![Reply::Status("optional".into())])),
                ])]),
            ),
        ]);
        assert_eq!(docs[0].1, expected);
    }

    #[test]
    fn command_count_is_top_level_count() {
        assert_eq!(command_count(), Reply::Int(COMMANDS.len() as i64));
        let Reply::Array(all) = command_info_all() else { panic!() };
        assert_eq!(all.len(), COMMANDS.len());
        let Reply::Array(list) = command_list(|_| true) else { panic!() };
        let subs: usize = COMMANDS.iter().map(|c| c.subcommands.len()).sum();
        assert_eq!(list.len(), COMMANDS.len() + subs);
        assert!(list.contains(&Reply::bulk_static("lock.try")));
        assert!(list.contains(&Reply::bulk_static("client|list")));
    }

    #[test]
    fn command_info_unknown_is_nil() {
        assert_eq!(command_info(&[Bytes::from_static(b"nosuch")]), Reply::Array(vec![Reply::Nil]));
        let Reply::Array(entries) = command_info(&[
            Bytes::from_static(b"nosuch"),
            Bytes::from_static(b"LOCK.TRY"),
            Bytes::from_static(b"client|nosuch"),
        ]) else {
            panic!()
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0], Reply::Nil);
        assert!(matches!(&entries[1], Reply::Array(e) if e.len() == 10));
        assert_eq!(entries[2], Reply::Nil);
        assert_eq!(command_info(&[]), command_info_all());
    }

    #[test]
    fn command_info_entry_shapes() {
        let Reply::Array(entries) = command_info(&[Bytes::from_static(b"ping")]) else { panic!() };
        // ["ping",-1,["fast"],0,0,0,["@fast","@connection"],[tips],[],[]] as Redis 7.0 answers.
        let expected = Reply::Array(vec![
            Reply::bulk_static("ping"),
            Reply::Int(-1),
            Reply::Array(vec![Reply::Status("fast".into())]),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Int(0),
            Reply::Array(vec![Reply::Status("@fast".into()), Reply::Status("@connection".into())]),
            Reply::Array(vec![
                Reply::bulk_static("request_policy:all_shards"),
                Reply::bulk_static("response_policy:all_succeeded"),
            ]),
            Reply::Array(vec![]),
            Reply::Array(vec![]),
        ]);
        assert_eq!(entries[0], expected);

        for entry in match command_info_all() {
            Reply::Array(e) => e,
            _ => panic!(),
        } {
            let Reply::Array(fields) = entry else { panic!() };
            assert_eq!(fields.len(), 10);
            assert!(matches!(fields[0], Reply::Bulk(_)));
            assert!(matches!(fields[1], Reply::Int(_)));
            assert!(matches!(&fields[2], Reply::Array(f) if f.iter().all(|x| matches!(x, Reply::Status(_)))));
            for sub in match &fields[9] {
                Reply::Array(s) => s,
                _ => panic!(),
            } {
                assert!(matches!(sub, Reply::Array(s) if s.len() == 10));
            }
        }

        let Reply::Array(lock) = command_info(&[Bytes::from_static(b"lock.info")]) else { panic!() };
        let Reply::Array(fields) = &lock[0] else { panic!() };
        assert_eq!(fields[0], Reply::bulk_static("lock.info"));
        assert_eq!(&fields[3..6], [Reply::Int(1), Reply::Int(1), Reply::Int(1)]);
        let Reply::Array(specs) = &fields[8] else { panic!() };
        assert_eq!(specs.len(), 1);
        let flags = map_get(&specs[0], "flags").unwrap();
        assert_eq!(flags, &Reply::Array(vec![Reply::Status("RO".into()), Reply::Status("access".into())]));
        let find_keys = map_get(&specs[0], "find_keys").unwrap();
        assert_eq!(map_get(map_get(find_keys, "spec").unwrap(), "lastkey"), Some(&Reply::Int(0)));

        let Reply::Array(client) = command_info(&[Bytes::from_static(b"client")]) else { panic!() };
        let Reply::Array(fields) = &client[0] else { panic!() };
        let Reply::Array(subs) = &fields[9] else { panic!() };
        assert_eq!(subs.len(), CLIENT_SUBCOMMANDS.len());
        let Reply::Array(first) = &subs[0] else { panic!() };
        assert_eq!(first[0], Reply::bulk_static("client|id"));
    }
}
