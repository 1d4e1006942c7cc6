//! The Redis Cluster commands on a server that is not a cluster node: refused as Redis refuses
//! them with `cluster-enabled no`, the connection kept open; INFO says the cluster is off. (The
//! cluster's own answers are tested where a cluster is started.)

use crate::common::*;

const DISABLED: &[u8] = b"-ERR This instance has cluster support disabled\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_are_refused_like_redis_without_cluster_support() {
    let server = start().await;
    for protocol in [2, 3] {
        let mut con = Raw::connect(server.addr).await;
        con.cmd(args!["HELLO", protocol]).await;
        for request in [
            args!["CLUSTER", "SLOTS"],
            args!["CLUSTER", "SHARDS"],
            args!["CLUSTER", "NODES"],
            args!["CLUSTER", "INFO"],
            args!["CLUSTER", "MYID"],
            args!["CLUSTER", "MYSHARDID"],
            args!["CLUSTER", "KEYSLOT", "{user1000}.following"],
            args!["cluster", "help"],
            args!["READONLY"],
            args!["READWRITE"],
            args!["asking"],
        ] {
            let shown = format!("{request:?}");
            assert_eq!(con.cmd_frame(request).await.1, DISABLED, "RESP{protocol} {shown}");
        }
        // Arity and names are checked first, with Redis's words.
        let refusals = [
            (args!["CLUSTER"], "ERR wrong number of arguments for 'cluster' command"),
            (args!["CLUSTER", "KEYSLOT"], "ERR wrong number of arguments for 'cluster|keyslot' command"),
            (args!["CLUSTER", "SLOTS", "x"], "ERR wrong number of arguments for 'cluster|slots' command"),
            (args!["CLUSTER", "FOO"], "ERR unknown subcommand 'FOO'. Try CLUSTER HELP."),
            (args!["READONLY", "x"], "ERR wrong number of arguments for 'readonly' command"),
            (args!["ASKING", "x"], "ERR wrong number of arguments for 'asking' command"),
        ];
        for (request, error) in refusals {
            assert_eq!(con.cmd(request).await.err(), error);
        }
        assert_eq!(con.cmd_frame(args!["PING"]).await.1, b"+PONG\r\n", "the connection stays open");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_says_cluster_support_is_off() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    assert_eq!(con.cmd(args!["INFO", "cluster"]).await.text(), "# Cluster\r\ncluster_enabled:0\r\n");
    assert!(con.cmd(args!["INFO", "server"]).await.text().contains("\r\nredis_mode:standalone\r\n"));
    let everything = con.cmd(args!["INFO"]).await.text();
    let cluster = everything.find("# Cluster\r\n").expect("INFO shows the Cluster section");
    assert!(everything.find("# Locks\r\n").unwrap() < cluster && cluster < everything.find("# Keyspace\r\n").unwrap());
    server.stop().await.unwrap();
}

/// COMMAND INFO as Redis 7.0 answers for the same commands, byte for byte, so that cluster
/// clients that read command flags see what they expect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_info_matches_redis() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let keyslot = con.cmd_frame(args!["COMMAND", "INFO", "cluster|keyslot"]).await.1;
    let redis: &[u8] =
        b"*1\r\n*10\r\n$15\r\ncluster|keyslot\r\n:3\r\n*1\r\n+stale\r\n:0\r\n:0\r\n:0\r\n*1\r\n+@slow\r\n*0\r\n*0\r\n*0\r\n";
    assert_eq!(keyslot, redis);
    let connection_modes = con.cmd_frame(args!["COMMAND", "INFO", "readonly", "readwrite", "asking"]).await.1;
    let redis: &[u8] = b"*3\r\n\
        *10\r\n$8\r\nreadonly\r\n:1\r\n*3\r\n+loading\r\n+stale\r\n+fast\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n\
        *10\r\n$9\r\nreadwrite\r\n:1\r\n*3\r\n+loading\r\n+stale\r\n+fast\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n\
        *10\r\n$6\r\nasking\r\n:1\r\n*1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n";
    assert_eq!(connection_modes, redis);
    server.stop().await.unwrap();
}
