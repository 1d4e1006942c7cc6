//! Users and permissions in Redis's ACL model: who may log in with which password, which
//! commands each user may run and which keys it may use. The command table sits above this
//! module and hands in what rules name ([`Catalogue`]); the ACL commands' parsing and replies
//! live in `cmd::acl`.
//!
//! A request is checked against its user's precompiled rules: one bit test for the command, and
//! for commands with keys a comparison per key pattern (see `pattern`). The default user keeps
//! baton's behaviour without ACLs: everything, with `--requirepass` as its password.

mod commands;
mod log;
mod pattern;
mod user;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::errors;

pub(crate) use self::commands::{CATEGORIES, Catalogue, CommandEntry};
pub(crate) use self::log::{Entry as LogEntry, Reason};
/// Redis's glob, which SCAN's MATCH takes as well.
pub(crate) use self::pattern::glob_match;
pub(crate) use self::user::{ChannelUse, DEFAULT_USER, Denial, KeyAccess, Rules, User};

/// Refusals counted for INFO, under Redis's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeniedCounts {
    pub(crate) auth: u64,
    pub(crate) command: u64,
    pub(crate) key: u64,
    pub(crate) channel: u64,
}

#[derive(Debug)]
pub(crate) struct Acl {
    catalogue: Catalogue,
    /// By name: ACL LIST and ACL USERS list them in this order, as Redis does.
    users: RwLock<BTreeMap<String, Arc<User>>>,
    /// The default user's rules when no file defines it: from --requirepass.
    default_rules: Rules,
    file: Option<PathBuf>,
    log: Mutex<log::Log>,
    denied_auth: AtomicU64,
    denied_command: AtomicU64,
    denied_key: AtomicU64,
    denied_channel: AtomicU64,
}

impl Acl {
    /// An empty `requirepass` means no password, as in Redis. With a file, its users are loaded
    /// now and a file that cannot be read or parsed stops the server from starting.
    pub(crate) fn new(catalogue: Catalogue, requirepass: Option<&str>, file: Option<PathBuf>) -> Result<Acl, String> {
        let default_rules = Rules::superuser(requirepass.filter(|password| !password.is_empty()));
        let default_user = User::new(DEFAULT_USER, default_rules.clone());
        let acl = Acl {
            catalogue,
            users: RwLock::new(BTreeMap::from([(DEFAULT_USER.to_owned(), default_user)])),
            default_rules,
            file,
            log: Mutex::default(),
            denied_auth: AtomicU64::new(0),
            denied_command: AtomicU64::new(0),
            denied_key: AtomicU64::new(0),
            denied_channel: AtomicU64::new(0),
        };
        if acl.file.is_some() {
            acl.load()?;
        }
        Ok(acl)
    }

    pub(crate) fn default_user(&self) -> Arc<User> {
        self.user(DEFAULT_USER).unwrap_or_else(|| unreachable!("the default user cannot be deleted"))
    }

    pub(crate) fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    /// Protected mode's question: may anyone connect without a password?
    pub(crate) fn default_user_needs_no_password(&self) -> bool {
        self.default_user().rules.read().needs_no_password()
    }

    /// The user `name` if it is on and `password` is one of its own (any, for a nopass user).
    pub(crate) fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Arc<User>> {
        let user = self.user(std::str::from_utf8(name).ok()?)?;
        let accepted = user.rules.read().accepts(password);
        accepted.then_some(user)
    }

    /// A failed AUTH: counted, logged in ACL LOG, and written to the log at most once a second.
    pub(crate) fn auth_failed(&self, username: &[u8], addr: SocketAddr, client_info: String, now: Instant) {
        self.denied_auth.fetch_add(1, Ordering::Relaxed);
        let username = String::from_utf8_lossy(username).into_owned();
        let mut log = self.log.lock();
        log.auth_failed(addr, &username, now);
        log.add(LogEntry {
            count: 1,
            reason: Reason::Auth,
            object: "AUTH".to_owned(),
            username,
            client_info,
            last_seen: now,
        });
    }

    /// A command refused for its name or a key: counted and logged in ACL LOG.
    pub(crate) fn denied(&self, reason: Reason, object: String, username: &str, client_info: String, now: Instant) {
        let counter = match reason {
            Reason::Key => &self.denied_key,
            Reason::Channel => &self.denied_channel,
            Reason::Auth | Reason::Command => &self.denied_command,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let entry = LogEntry { count: 1, reason, object, username: username.to_owned(), client_info, last_seen: now };
        self.log.lock().add(entry);
    }

    pub(crate) fn denied_counts(&self) -> DeniedCounts {
        DeniedCounts {
            auth: self.denied_auth.load(Ordering::Relaxed),
            command: self.denied_command.load(Ordering::Relaxed),
            key: self.denied_key.load(Ordering::Relaxed),
            channel: self.denied_channel.load(Ordering::Relaxed),
        }
    }

    /// CONFIG RESETSTAT.
    pub(crate) fn reset_counters(&self) {
        for counter in [&self.denied_auth, &self.denied_command, &self.denied_key, &self.denied_channel] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn log_entries(&self, count: usize) -> Vec<LogEntry> {
        self.log.lock().newest(count).cloned().collect()
    }

    pub(crate) fn log_reset(&self) {
        self.log.lock().clear();
    }

    pub(crate) fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// ACL SETUSER: all rules apply or none do. Err is the whole error line.
    pub(crate) fn set_user(&self, name: &str, rules: &[&str]) -> Result<(), String> {
        check_username(name)?;
        let mut users = self.users.write();
        let existing = users.get(name);
        let mut changed = existing.map_or_else(Rules::default, |user| user.rules.read().clone());
        for rule in rules {
            changed.apply(rule, &self.catalogue).map_err(|error| errors::acl_setuser_modifier(rule, error.as_str()))?;
        }
        match existing {
            Some(user) => *user.rules.write() = changed,
            None => {
                users.insert(name.to_owned(), User::new(name, changed));
            }
        }
        Ok(())
    }

    /// ACL DELUSER: how many of `names` existed and are gone now. Their connections are the
    /// caller's to close.
    pub(crate) fn delete_users(&self, names: &[&str]) -> Result<usize, &'static str> {
        if names.contains(&DEFAULT_USER) {
            return Err(errors::ACL_DEFAULT_UNDELETABLE);
        }
        let mut users = self.users.write();
        Ok(names.iter().filter(|name| users.remove(**name).is_some()).count())
    }

    pub(crate) fn usernames(&self) -> Vec<String> {
        self.users.read().keys().cloned().collect()
    }

    /// ACL LIST: one ACL file line per user.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.users.read().values().map(|user| format!("user {} {}", user.name, user.rules.read().describe())).collect()
    }

    /// ACL LOAD (and startup): the file replaces every user at once, or nothing changes. A user
    /// the file keeps is changed in place for its connections; the names of users it no longer
    /// has are returned, for their connections to be closed.
    pub(crate) fn load(&self) -> Result<Vec<String>, String> {
        let path = self.file.as_ref().ok_or(errors::ACL_NO_FILE)?;
        let text = std::fs::read_to_string(path).map_err(|error| errors::acl_file_open(path, &error))?;
        let loaded = parse_file(&text, &self.catalogue)
            .map_err(|(line, message)| errors::acl_file_line(path, line, &message))?;
        let mut users = self.users.write();
        let removed: Vec<String> = users.keys().filter(|name| !loaded.contains_key(*name)).cloned().collect();
        users.retain(|name, _| loaded.contains_key(name) || name == DEFAULT_USER);
        if !loaded.contains_key(DEFAULT_USER) {
            *users[DEFAULT_USER].rules.write() = self.default_rules.clone();
        }
        for (name, rules) in loaded {
            match users.get(&name) {
                Some(user) => *user.rules.write() = rules,
                None => {
                    users.insert(name.clone(), User::new(&name, rules));
                }
            }
        }
        Ok(removed.into_iter().filter(|name| name != DEFAULT_USER).collect())
    }

    /// ACL SAVE: written beside the file and renamed over it, so a crash leaves the old or the new.
    pub(crate) fn save(&self) -> Result<(), String> {
        let path = self.file.as_ref().ok_or(errors::ACL_NO_FILE)?;
        let mut text = self.lines().join("\n");
        text.push('\n');
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|error| errors::acl_save_failed(&error))
    }
}

/// Names go into ACL file lines and CLIENT LIST, both split at spaces.
fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(errors::ACL_BAD_USERNAME.to_owned());
    }
    Ok(())
}

/// An ACL file: `user <name> <rule> ...` lines; blank lines and `#` comments are skipped. Err is
/// the 1-based line number and what is wrong with it.
fn parse_file(text: &str, catalogue: &Catalogue) -> Result<BTreeMap<String, Rules>, (usize, String)> {
    let mut users = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let mut words = line.split_whitespace();
        match words.next() {
            None => continue,
            Some(comment) if comment.starts_with('#') => continue,
            Some("user") => {}
            Some(_) => return Err((number, "line should start with user keyword".to_owned())),
        }
        let name = words.next().ok_or((number, "user name missing".to_owned()))?;
        let mut rules = Rules::default();
        for rule in words {
            rules.apply(rule, catalogue).map_err(|error| (number, format!("{} in '{rule}'", error.as_str())))?;
        }
        if users.insert(name.to_owned(), rules).is_some() {
            return Err((number, format!("Duplicate user '{name}' found")));
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::commands::tests::catalogue;
    use super::*;

    fn acl(requirepass: Option<&str>) -> Acl {
        Acl::new(catalogue(), requirepass, None).unwrap()
    }

    #[test]
    fn an_empty_requirepass_is_no_password() {
        assert!(acl(Some("")).default_user_needs_no_password());
        assert!(acl(None).default_user_needs_no_password());
        let guarded = acl(Some("pw"));
        assert!(!guarded.default_user_needs_no_password());
        assert!(guarded.authenticate(b"default", b"pw").is_some());
        assert!(guarded.authenticate(b"default", b"").is_none());
    }

    #[test]
    fn set_user_is_all_or_nothing() {
        let acl = acl(None);
        acl.set_user("node", &["on", ">pw", "~pull:*", "+lock.try"]).unwrap();
        let error = acl.set_user("node", &["off", "+nosuch"]).unwrap_err();
        assert_eq!(error, "ERR Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL");
        assert!(acl.authenticate(b"node", b"pw").is_some(), "the failed SETUSER changed nothing");
        assert!(acl.authenticate(b"node", b"bad").is_none() && acl.authenticate(b"nosuch", b"pw").is_none());
        assert_eq!(
            acl.lines(),
            [
                "user default on nopass ~* &* +@all",
                &format!(
                    "user node on #{} ~pull:* resetchannels -@all +lock.try",
                    acl.user("node").unwrap().rules.read().password_hashes()[0]
                )
            ]
        );
        assert!(acl.set_user("a b", &[]).is_err());
    }

    #[test]
    fn changes_reach_users_already_logged_in() {
        let acl = acl(None);
        acl.set_user("node", &["on", "nopass", "+ping"]).unwrap();
        let logged_in = acl.authenticate(b"node", b"").unwrap();
        assert!(logged_in.rules.read().may_run(2));
        acl.set_user("node", &["-ping"]).unwrap();
        assert!(!logged_in.rules.read().may_run(2));
    }

    #[test]
    fn the_default_user_stays() {
        let acl = acl(None);
        acl.set_user("x", &[]).unwrap();
        assert_eq!(acl.delete_users(&["default", "x"]), Err(errors::ACL_DEFAULT_UNDELETABLE));
        assert_eq!(acl.delete_users(&["x", "nosuch"]), Ok(1));
        assert_eq!(acl.usernames(), ["default"]);
    }

    #[test]
    fn denials_are_counted_and_logged() {
        let acl = acl(Some("pw"));
        let now = Instant::now();
        let addr = "127.0.0.1:9".parse().unwrap();
        acl.auth_failed(b"default", addr, "id=1".to_owned(), now);
        acl.auth_failed(b"default", addr, "id=1".to_owned(), now);
        acl.denied(Reason::Key, "other".to_owned(), "node", "id=2".to_owned(), now);
        assert_eq!(acl.denied_counts(), DeniedCounts { auth: 2, command: 0, key: 1, channel: 0 });
        let entries = acl.log_entries(10);
        assert_eq!((entries[0].reason, entries[0].count), (Reason::Key, 1));
        assert_eq!((entries[1].reason, entries[1].count, entries[1].object.as_str()), (Reason::Auth, 2, "AUTH"));
        acl.reset_counters();
        assert_eq!(acl.denied_counts(), DeniedCounts::default());
    }

    #[test]
    fn files_parse_or_say_where_they_fail() {
        let users =
            parse_file("# nodes\n\nuser node on >pw ~pull:* +@read\nuser admin on nopass +@all ~*\n", &catalogue())
                .unwrap();
        assert_eq!(users.keys().collect::<Vec<_>>(), ["admin", "node"]);
        assert!(users["node"].accepts(b"pw") && users["node"].may_run(1) && !users["node"].may_run(0));
        assert_eq!(
            parse_file("user a on\nuser a off\n", &catalogue()),
            Err((2, "Duplicate user 'a' found".to_owned()))
        );
        assert_eq!(parse_file("\nusr a\n", &catalogue()), Err((2, "line should start with user keyword".to_owned())));
        assert_eq!(
            parse_file("user a +get\n", &catalogue()),
            Err((1, "Unknown command or category name in ACL in '+get'".to_owned()))
        );
    }

    #[test]
    fn load_and_save_round_trip() {
        let dir = std::env::temp_dir().join(format!("baton-acl-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.acl");
        std::fs::write(&path, "user node on >pw ~pull:* +lock.try\nuser gone on nopass\n").unwrap();
        let acl = Acl::new(catalogue(), Some("secret"), Some(path.clone())).unwrap();
        assert_eq!(acl.usernames(), ["default", "gone", "node"]);
        assert!(acl.authenticate(b"default", b"secret").is_some(), "the file has no default user: --requirepass stays");
        let node = acl.user("node").unwrap();
        std::fs::write(&path, "user node on >pw ~pull:* +lock.try +lock.info\n").unwrap();
        assert_eq!(acl.load().unwrap(), ["gone"]);
        assert!(node.rules.read().may_run(1), "a kept user changes in place");
        acl.set_user("admin", &["on", ">root", "+@all", "~*"]).unwrap();
        acl.save().unwrap();
        let reloaded = Acl::new(catalogue(), None, Some(path.clone())).unwrap();
        assert_eq!(reloaded.lines()[1..], acl.lines()[1..]);
        assert!(reloaded.authenticate(b"admin", b"root").is_some());
        std::fs::write(&path, "user x +nosuch\n").unwrap();
        assert!(acl.load().unwrap_err().ends_with(":1: Unknown command or category name in ACL in '+nosuch'"));
        assert!(acl.user("admin").is_some(), "a failed load changes nothing");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Acl::new(catalogue(), None, Some(path)).unwrap_err().contains("opening file"));
        assert_eq!(Acl::new(catalogue(), None, None).unwrap().save().unwrap_err(), errors::ACL_NO_FILE);
    }
}
