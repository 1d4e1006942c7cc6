//! Users and permissions: AUTH and HELLO AUTH as named users, the example policy (nodes lock
//! `pull:*` only; only an admin kills clients, resets stats or sees tokens), ACL SETUSER /
//! GETUSER / LIST / WHOAMI / DELUSER / LOG / DRYRUN, failed AUTHs counted in INFO, an empty
//! --requirepass, and --aclfile with ACL LOAD / SAVE.

use std::path::PathBuf;

use crate::common::*;

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

/// An ACL file of this test's own, removed when dropped.
struct AclFile(PathBuf);

impl AclFile {
    fn new(name: &str, text: &str) -> AclFile {
        let path = std::env::temp_dir().join(format!("baton-it-{name}-{}.acl", std::process::id()));
        std::fs::write(&path, text).unwrap();
        AclFile(path)
    }
}

impl Drop for AclFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const POLICY: &str = "\
# the example policy of docs/commands.md
user default off
user admin on >admin-pw ~* &* +@all
user node on >node-pw ~pull:* resetchannels -@all +@write +lock.info +@connection +acl|whoami -@dangerous
";

async fn logged_in(addr: std::net::SocketAddr, user: &str, password: &str) -> Raw {
    let mut con = Raw::connect(addr).await;
    assert_eq!(con.cmd(args!["AUTH", user, password]).await, ok(), "AUTH {user}");
    con
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_policy_end_to_end() {
    let file = AclFile::new("policy", POLICY);
    let server = start_with(|config| config.aclfile = Some(file.0.clone())).await;
    let mut anonymous = Raw::connect(server.addr).await;
    assert!(anonymous.cmd(args!["PING"]).await.err().starts_with("NOAUTH"), "the default user is off");
    assert!(anonymous.cmd(args!["AUTH", "default", ""]).await.err().starts_with("WRONGPASS"));

    let mut node_a = logged_in(server.addr, "node", "node-pw").await;
    let mut node_b = logged_in(server.addr, "node", "node-pw").await;
    let mut admin = logged_in(server.addr, "admin", "admin-pw").await;
    assert_eq!(node_a.cmd(args!["ACL", "WHOAMI"]).await.text(), "node");
    assert_eq!(node_a.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));

    // Nodes lock pull:* only.
    let token = cmd_out(&mut node_a, args!["LOCK.TRY", "pull:layer", "node-a"]).await.token();
    assert_eq!(cmd_out(&mut node_b, args!["LOCK.TRY", "pull:layer", "node-b"]).await, Out::Queued(1));
    let (_, refused) = node_a.cmd_frame(args!["LOCK.TRY", "secrets", "node-a"]).await;
    assert_eq!(refused, b"-NOPERM No permissions to access a key\r\n");
    assert!(node_a.cmd(args!["LOCK.INFO", "other"]).await.err().starts_with("NOPERM"));

    // Only the admin sees the token; a node sees the rest of LOCK.INFO.
    let seen_by_node = node_b.info("pull:layer").await;
    assert_eq!((seen_by_node.holder.as_deref(), seen_by_node.token), (Some("node-a"), None));
    assert_eq!(seen_by_node.queue, ["node-b"]);
    assert_eq!(admin.info("pull:layer").await.token, Some(token));

    // Only the admin kills clients or resets the statistics.
    let holder_id = node_a.client_id().await;
    let (_, refused) = node_b.cmd_frame(args!["CLIENT", "KILL", "ID", holder_id]).await;
    assert_eq!(refused, b"-NOPERM User node has no permissions to run the 'client|kill' command\r\n");
    let (_, refused) = node_b.cmd_frame(args!["CONFIG", "RESETSTAT"]).await;
    assert_eq!(refused, b"-NOPERM User node has no permissions to run the 'config|resetstat' command\r\n");
    assert!(node_b.cmd(args!["ACL", "SETUSER", "node", "+@all"]).await.err().starts_with("NOPERM"));
    assert_eq!(node_a.info("pull:layer").await.holder.as_deref(), Some("node-a"), "nothing was killed");
    let list = admin.cmd(args!["CLIENT", "LIST"]).await.text();
    assert_eq!(list.lines().filter(|line| line.contains(" user=node ")).count(), 2, "{list}");
    assert_eq!(list.lines().filter(|line| line.contains(" user=admin ")).count(), 1, "{list}");

    // The refusals are in ACL LOG, newest first, and counted in INFO.
    let log = admin.cmd(args!["ACL", "LOG"]).await;
    let reasons: Vec<String> = log.array().iter().map(|entry| entry.field("reason").text()).collect();
    assert_eq!(reasons, ["command", "command", "command", "key", "key", "auth"]);
    assert_eq!(log.array()[1].field("object").text(), "config|resetstat");
    assert_eq!(log.array()[3].field("object").text(), "other");
    assert_eq!(log.array()[4].field("username").text(), "node");
    assert_eq!(info_field(&mut admin, "acl_access_denied_cmd").await, 3);
    assert_eq!(info_field(&mut admin, "acl_access_denied_key").await, 2);

    // The admin may break the lock: CLIENT KILL of the holder hands it to the node in line.
    assert_eq!(admin.cmd(args!["CLIENT", "KILL", "USER", "nosuch"]).await.err(), "ERR No such user 'nosuch'");
    assert_eq!(admin.cmd(args!["CLIENT", "KILL", "ID", holder_id]).await, Resp::Int(1));
    admin.wait_info("pull:layer", "the hand-off to node-b", |info| info.holder.as_deref() == Some("node-b")).await;
    assert_eq!(admin.cmd(args!["CONFIG", "RESETSTAT"]).await, ok());
    assert_eq!(info_field(&mut admin, "acl_access_denied_cmd").await, 0);
    server.stop().await.unwrap();
}

/// Two users may spell the same owner; neither can act as the other's: no renewal that would
/// answer the other's token, no UNLOCK or EXTEND of its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_belong_to_their_users() {
    let file = AclFile::new(
        "owners",
        "user default off\n\
         user alice on >alice-pw ~pull:* +@all -@dangerous\n\
         user bob on >bob-pw ~pull:* +@all -@dangerous\n",
    );
    let server = start_with(|config| config.aclfile = Some(file.0.clone())).await;
    let mut alice = logged_in(server.addr, "alice", "alice-pw").await;
    let mut bob = logged_in(server.addr, "bob", "bob-pw").await;

    let token = cmd_out(&mut alice, args!["LOCK.TRY", "pull:x", "node"]).await.token();
    assert_eq!(cmd_out(&mut bob, args!["LOCK.TRY", "pull:x", "node"]).await, Out::Queued(1));
    assert_eq!(cmd_out(&mut bob, args!["LOCK.TRY", "pull:x", "node", "NOQUEUE"]).await, Out::busy("node"));
    for (command, reply) in [
        (args!["LOCK.UNLOCK", "pull:x", "node", token, "FAILURE"], "NOTHOLDER"),
        (args!["LOCK.EXTEND", "pull:x", "node", token, 60_000], "NOTHOLDER"),
    ] {
        assert!(bob.cmd(command).await.err().starts_with(reply));
    }
    let info = bob.info("pull:x").await;
    assert_eq!((info.holder.as_deref(), info.queue), (Some("node"), vec!["node".to_owned()]));

    let told = alice.cmd(args!["LOCK.UNLOCK", "pull:x", "node", token, "SUCCESS", "RESULT", "r"]).await;
    assert_eq!(told, Resp::Int(1), "bob's node was in line");
    assert_eq!(cmd_out(&mut bob, args!["LOCK.TRY", "pull:x", "node"]).await, Out::done("node", Some("r")));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setuser_getuser_list_deluser() {
    let server = start().await;
    let mut admin = Raw::connect(server.addr).await;
    let setuser =
        args!["ACL", "SETUSER", "node", "on", ">pw", "~pull:*", "%R~view:*", "+@read", "+lock.try", "-@dangerous"];
    assert_eq!(admin.cmd(setuser).await, ok());
    let user = admin.cmd(args!["ACL", "GETUSER", "node"]).await;
    assert_eq!(user.field("flags").array().iter().map(Resp::text).collect::<Vec<_>>(), ["on"]);
    // sha256("pw"), as Redis shows it.
    let hash = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";
    assert_eq!(user.field("passwords").array()[0].text(), hash);
    assert_eq!(user.field("commands").text(), "-@all +@read +lock.try -@dangerous");
    assert_eq!(user.field("keys").text(), "~pull:* %R~view:*");
    assert!(admin.cmd(args!["ACL", "GETUSER", "nosuch"]).await.is_nil());
    let lines: Vec<String> = admin.cmd(args!["ACL", "LIST"]).await.array().iter().map(Resp::text).collect();
    assert_eq!(
        lines,
        [
            "user default on nopass ~* &* +@all".to_owned(),
            format!("user node on #{hash} ~pull:* %R~view:* resetchannels -@all +@read +lock.try -@dangerous"),
        ]
    );
    assert_eq!(admin.cmd(args!["ACL", "USERS"]).await.array().len(), 2);

    // Redis's errors, and a failed SETUSER changes nothing.
    let (_, bytes) = admin.cmd_frame(args!["ACL", "SETUSER", "node", "off", "+get"]).await;
    assert_eq!(bytes, b"-ERR Error in ACL SETUSER modifier '+get': Unknown command or category name in ACL\r\n");
    assert_eq!(admin.cmd(args!["ACL", "GETUSER", "node"]).await.field("flags").array()[0].text(), "on");
    assert!(admin.cmd(args!["ACL", "SETUSER", "node", "#abc"]).await.err().contains("64 characters"));
    assert!(admin.cmd(args!["ACL", "CAT", "nosuch"]).await.err().starts_with("ERR Unknown category"));
    assert!(admin.cmd(args!["ACL", "CAT"]).await.array().iter().any(|cat| cat.text() == "dangerous"));
    let admin_commands: Vec<String> =
        admin.cmd(args!["ACL", "CAT", "admin"]).await.array().iter().map(Resp::text).collect();
    assert!(admin_commands.contains(&"client|kill".to_owned()) && !admin_commands.contains(&"lock.try".to_owned()));

    // DRYRUN answers without running.
    assert_eq!(admin.cmd(args!["ACL", "DRYRUN", "node", "LOCK.TRY", "pull:a", "o"]).await, ok());
    let refused = admin.cmd(args!["ACL", "DRYRUN", "node", "LOCK.TRY", "view:a", "o"]).await;
    assert_eq!(refused.text(), "This user has no permissions to access the 'view:a' key");
    assert_eq!(admin.cmd(args!["ACL", "DRYRUN", "node", "LOCK.INFO", "view:a"]).await, ok());
    let refused = admin.cmd(args!["ACL", "DRYRUN", "node", "CLIENT", "KILL", "ID", "1"]).await;
    assert_eq!(refused.text(), "This user has no permissions to run the 'client|kill' command");
    assert_eq!(admin.cmd(args!["ACL", "DRYRUN", "nosuch", "PING"]).await.err(), "ERR User 'nosuch' not found");
    assert_eq!(admin.cmd(args!["ACL", "DRYRUN", "node", "GET", "k"]).await.err(), "ERR Command 'GET' not found");
    assert_eq!(admin.info("pull:a").await.state, "free", "DRYRUN took no lock");
    assert_eq!(admin.cmd(args!["ACL", "GENPASS"]).await.text().len(), 64);
    assert_eq!(admin.cmd(args!["ACL", "GENPASS", 10]).await.text().len(), 3);

    // A change applies to connections already logged in; DELUSER closes them.
    let mut node = logged_in(server.addr, "node", "pw").await;
    assert_eq!(node.cmd(args!["LOCK.INFO", "pull:a"]).await.array().len(), 24);
    assert_eq!(admin.cmd(args!["ACL", "SETUSER", "node", "-lock.info"]).await, ok());
    assert!(node.cmd(args!["LOCK.INFO", "pull:a"]).await.err().starts_with("NOPERM"));
    assert_eq!(admin.cmd(args!["ACL", "DELUSER", "default"]).await.err(), "ERR The 'default' user cannot be removed");
    assert_eq!(admin.cmd(args!["ACL", "DELUSER", "node", "nosuch"]).await, Resp::Int(1));
    assert!(node.read_until_closed().await.is_empty(), "the deleted user's connection is closed");
    assert!(Raw::connect(server.addr).await.cmd(args!["AUTH", "node", "pw"]).await.err().starts_with("WRONGPASS"));
    assert!(admin.cmd(args!["ACL", "SAVE"]).await.err().contains("not configured to use an ACL file"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_auth_and_the_redis_crate_as_a_named_user() {
    let server = start_with(|config| config.requirepass = Some("root".into())).await;
    let mut admin = logged_in(server.addr, "default", "root").await;
    assert_eq!(admin.cmd(args!["ACL", "SETUSER", "node", "on", ">pw", "~pull:*", "+@all", "-@dangerous"]).await, ok());
    let mut con = Raw::connect(server.addr).await;
    let hello = con.cmd(args!["HELLO", 3, "AUTH", "node", "pw"]).await;
    assert_eq!(hello.field("proto"), Resp::Int(3));
    assert_eq!(con.cmd(args!["ACL", "WHOAMI"]).await.text(), "node");
    assert_eq!(con.cmd(args!["RESET"]).await, Resp::Simple("RESET".into()));
    assert!(con.cmd(args!["ACL", "WHOAMI"]).await.err().starts_with("NOAUTH"), "RESET logs out");

    let url = format!("redis://node:pw@{}/", server.addr);
    let mut rc = redis_conn_url(&url).await.expect("connect as node");
    let whoami: String = redis::cmd("ACL").arg("WHOAMI").query_async(&mut rc).await.unwrap();
    assert_eq!(whoami, "node");
    assert!(query_out(&mut rc, args!["LOCK.TRY", "pull:x", "n"]).await.token() > 0);
    let refused = query(&mut rc, args!["LOCK.TRY", "other", "n"]).await.unwrap_err();
    assert_eq!(err_text(&refused), "NOPERM No permissions to access a key");
    let url = format!("redis://node:wrong@{}/?protocol=resp3", server.addr);
    assert!(redis_conn_url(&url).await.is_err(), "HELLO 3 AUTH with a wrong password");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_auths_are_counted_and_logged() {
    let server = start_with(|config| config.requirepass = Some("s3cret".into())).await;
    let mut guesser = Raw::connect(server.addr).await;
    let guesses = 200;
    for guess in 0..guesses {
        assert!(guesser.cmd(args!["AUTH", format!("guess-{guess}")]).await.err().starts_with("WRONGPASS"));
    }
    assert!(guesser.cmd(args!["HELLO", 3, "AUTH", "nosuch", "x"]).await.err().starts_with("WRONGPASS"));
    let mut admin = logged_in(server.addr, "default", "s3cret").await;
    assert_eq!(info_field(&mut admin, "acl_access_denied_auth").await, guesses + 1);
    let log = admin.cmd(args!["ACL", "LOG", 1]).await;
    assert_eq!(log.array().len(), 1);
    let newest = &log.array()[0];
    assert_eq!((newest.field("reason").text(), newest.field("object").text()), ("auth".into(), "AUTH".into()));
    assert_eq!(newest.field("username").text(), "nosuch");
    let log = admin.cmd(args!["ACL", "LOG"]).await;
    let earlier = &log.array()[1];
    assert_eq!((earlier.field("username").text(), earlier.field("count").int()), ("default".into(), guesses));
    assert_eq!(admin.cmd(args!["ACL", "LOG", "RESET"]).await, ok());
    assert!(admin.cmd(args!["ACL", "LOG"]).await.array().is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_requirepass_means_no_password() {
    let server = start_with(|config| config.requirepass = Some(String::new())).await;
    let mut con = Raw::connect(server.addr).await;
    assert_eq!(con.cmd(args!["PING"]).await, Resp::Simple("PONG".into()), "no AUTH needed");
    assert!(con.cmd(args!["AUTH", ""]).await.err().starts_with("ERR AUTH <password> called without any password"));
    let user = con.cmd(args!["ACL", "GETUSER", "default"]).await;
    assert_eq!(user.field("flags").array().iter().map(Resp::text).collect::<Vec<_>>(), ["on", "nopass"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aclfile_load_and_save() {
    let file = AclFile::new("load", "user node on >pw ~pull:* +@all\n");
    let server = start_with(|config| {
        config.requirepass = Some("root".into());
        config.aclfile = Some(file.0.clone());
    })
    .await;
    let mut admin = logged_in(server.addr, "default", "root").await;
    let mut node = logged_in(server.addr, "node", "pw").await;
    std::fs::write(&file.0, "user node on >pw ~pull:* +@all -lock.info\nuser ops on >ops +@all ~*\n").unwrap();
    assert_eq!(admin.cmd(args!["ACL", "LOAD"]).await, ok());
    assert!(node.cmd(args!["LOCK.INFO", "pull:a"]).await.err().starts_with("NOPERM"), "changed in place");
    logged_in(server.addr, "ops", "ops").await;

    std::fs::write(&file.0, "user node on >pw\nuser node off\n").unwrap();
    let error = admin.cmd(args!["ACL", "LOAD"]).await;
    assert!(error.err().ends_with(":2: Duplicate user 'node' found"), "{error:?}");
    logged_in(server.addr, "ops", "ops").await;

    assert_eq!(admin.cmd(args!["ACL", "SETUSER", "late", "on", "nopass", "+ping"]).await, ok());
    assert_eq!(admin.cmd(args!["ACL", "SAVE"]).await, ok());
    let saved = std::fs::read_to_string(&file.0).unwrap();
    assert!(saved.contains("user late on nopass resetchannels -@all +ping\n"), "{saved}");
    assert!(saved.lines().any(|line| line.starts_with("user default on #")), "{saved}");
    server.stop().await.unwrap();

    // The saved file is what the next start reads, the default user's password included.
    let restarted = start_with(|config| config.aclfile = Some(file.0.clone())).await;
    let mut late = logged_in(restarted.addr, "late", "").await;
    assert_eq!(late.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    assert!(Raw::connect(restarted.addr).await.cmd(args!["PING"]).await.err().starts_with("NOAUTH"));
    restarted.stop().await.unwrap();

    std::fs::write(&file.0, "user x +nosuch\n").unwrap();
    let refused = baton::server::RunningServer::start({
        let mut config = baton::config::Config::default_for_tests();
        config.aclfile = Some(file.0.clone());
        config
    })
    .await;
    assert!(refused.is_err(), "a broken ACL file stops the start");
}
