//! One user: whether it is on, its passwords, the commands and keys it may use, the rules that
//! change them (Redis's ACL SETUSER syntax) and how it is written back (ACL LIST, ACL GETUSER).

use std::sync::Arc;

use parking_lot::RwLock;

use super::commands::{Catalogue, CommandBits};
use super::pattern::KeyPattern;
use crate::errors;

pub(crate) const DEFAULT_USER: &str = "default";

/// SHA-256 of a password: what is kept and compared, as in Redis.
pub(crate) type PasswordHash = [u8; 32];

pub(crate) fn hash_password(password: &[u8]) -> PasswordHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, password);
    let mut hash = [0; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

fn hex(hash: &PasswordHash) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `#<hex>` must be exactly Redis's form: 64 lowercase hex digits.
fn parse_hex(text: &str) -> Option<PasswordHash> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut hash = [0; 32];
    for (index, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(hash)
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut difference = expected.len() ^ given.len();
    for (index, &byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(!byte));
    }
    difference == 0
}

/// What a command does with its keys, from its table flags: a `write` command needs write
/// access, and reads too when it answers with the key's state (every LOCK.* write does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyAccess {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyRule {
    read: bool,
    write: bool,
    pattern: KeyPattern,
}

impl KeyRule {
    fn describe(&self) -> String {
        let prefix = match (self.read, self.write) {
            (true, true) => "",
            (true, false) => "%R",
            (false, _) => "%W",
        };
        format!("{prefix}~{}", self.pattern.source())
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denial {
    Command,
    /// The index among the request's arguments of the first key it may not use.
    Key(usize),
    /// Likewise for a pub/sub channel or pattern.
    Channel(usize),
}

/// A request's pub/sub channels (SUBSCRIBE, PUBLISH) or patterns (PSUBSCRIBE), by argument index.
/// A channel must match one of the user's `&` patterns; a pattern must be one of them, as in Redis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelUse<'a> {
    pub(crate) first: usize,
    pub(crate) names: &'a [bytes::Bytes],
    pub(crate) patterns: bool,
}

/// Why a rule was refused; the texts are Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleError {
    Syntax,
    UnknownCommand,
    BadHash,
    NoSuchPassword,
    ChannelAfterAll,
}

impl RuleError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RuleError::Syntax => errors::ACL_RULE_SYNTAX,
            RuleError::UnknownCommand => errors::ACL_RULE_UNKNOWN_COMMAND,
            RuleError::BadHash => errors::ACL_RULE_BAD_HASH,
            RuleError::NoSuchPassword => errors::ACL_RULE_NO_SUCH_PASSWORD,
            RuleError::ChannelAfterAll => errors::ACL_RULE_CHANNEL_AFTER_ALL,
        }
    }
}

/// A user's permissions. A fresh one is Redis's new user: off, no password, no keys, no commands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Rules {
    enabled: bool,
    nopass: bool,
    passwords: Vec<PasswordHash>,
    commands: CommandBits,
    /// The command rules as ACL LIST shows them, after the leading `+@all` or `-@all`: a later
    /// rule for the same command or category replaces an earlier one, as in Redis 7.2.
    command_rules: Vec<String>,
    all_commands_base: bool,
    keys: Vec<KeyRule>,
    /// `allchannels` (`&*`): every channel; otherwise those `channels` match.
    all_channels: bool,
    channels: Vec<KeyPattern>,
}

impl Rules {
    /// The default user when no file or SETUSER says otherwise: everything, with the password
    /// from --requirepass if any.
    pub(crate) fn superuser(password: Option<&str>) -> Rules {
        let mut rules = Rules {
            enabled: true,
            nopass: password.is_none(),
            commands: CommandBits::ALL,
            all_commands_base: true,
            keys: vec![KeyRule { read: true, write: true, pattern: KeyPattern::new("*") }],
            all_channels: true,
            ..Rules::default()
        };
        rules.passwords.extend(password.map(|password| hash_password(password.as_bytes())));
        rules
    }

    /// Applies one ACL SETUSER rule.
    pub(crate) fn apply(&mut self, rule: &str, catalogue: &Catalogue) -> Result<(), RuleError> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => return self.apply("~*", catalogue),
            "resetkeys" => self.keys.clear(),
            "allchannels" | "&*" => {
                self.all_channels = true;
                self.channels.clear();
            }
            "resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            "allcommands" | "+@all" => self.set_all_commands(true),
            "nocommands" | "-@all" => self.set_all_commands(false),
            "reset" => *self = Rules::default(),
            _ => return self.apply_with_argument(rule, &lower, catalogue),
        }
        Ok(())
    }

    fn apply_with_argument(&mut self, rule: &str, lower: &str, catalogue: &Catalogue) -> Result<(), RuleError> {
        let (first, rest) = rule.split_at(rule.chars().next().map_or(0, char::len_utf8));
        match first {
            ">" => self.add_password(hash_password(rest.as_bytes())),
            "<" => self.remove_password(&hash_password(rest.as_bytes()))?,
            "#" => self.add_password(parse_hex(rest).ok_or(RuleError::BadHash)?),
            "!" => self.remove_password(&parse_hex(rest).ok_or(RuleError::BadHash)?)?,
            "~" => self.add_keys(true, true, rest),
            "&" => self.add_channels(rest)?,
            "%" => {
                let (access, pattern) = rest.split_once('~').ok_or(RuleError::Syntax)?;
                let access = access.to_ascii_uppercase();
                let (read, write) = (access.contains('R'), access.contains('W'));
                if access.is_empty() || access.chars().any(|c| c != 'R' && c != 'W') {
                    return Err(RuleError::Syntax);
                }
                self.add_keys(read, write, pattern);
            }
            "+" | "-" => {
                let allow = first == "+";
                let target = &lower[1..];
                let bits = match target.strip_prefix('@') {
                    Some(category) => catalogue.category(category),
                    None => catalogue.command(target),
                }
                .ok_or(RuleError::UnknownCommand)?;
                if allow {
                    self.commands.allow(bits)
                } else {
                    self.commands.deny(bits)
                }
                self.command_rules.retain(|earlier| earlier[1..] != *target);
                self.command_rules.push(lower.to_owned());
            }
            _ => return Err(RuleError::Syntax),
        }
        Ok(())
    }

    fn set_all_commands(&mut self, allow: bool) {
        self.commands = if allow { CommandBits::ALL } else { CommandBits::NONE };
        self.all_commands_base = allow;
        self.command_rules.clear();
    }

    fn add_password(&mut self, hash: PasswordHash) {
        self.nopass = false;
        if !self.passwords.contains(&hash) {
            self.passwords.push(hash);
        }
    }

    fn remove_password(&mut self, hash: &PasswordHash) -> Result<(), RuleError> {
        let before = self.passwords.len();
        self.passwords.retain(|kept| kept != hash);
        if self.passwords.len() == before { Err(RuleError::NoSuchPassword) } else { Ok(()) }
    }

    fn add_keys(&mut self, read: bool, write: bool, pattern: &str) {
        let rule = KeyRule { read, write, pattern: KeyPattern::new(pattern) };
        if !self.keys.contains(&rule) {
            self.keys.push(rule);
        }
    }

    fn add_channels(&mut self, pattern: &str) -> Result<(), RuleError> {
        if self.all_channels {
            return Err(RuleError::ChannelAfterAll);
        }
        let pattern = KeyPattern::new(pattern);
        if !self.channels.contains(&pattern) {
            self.channels.push(pattern);
        }
        Ok(())
    }

    /// Whether this user may use `name`: a channel any of its patterns matches, or (`literal`,
    /// for PSUBSCRIBE) a pattern that is one of them.
    pub(crate) fn may_use_channel(&self, name: &[u8], literal: bool) -> bool {
        self.all_channels
            || self
                .channels
                .iter()
                .any(|pattern| if literal { pattern.source().as_bytes() == name } else { pattern.matches(name) })
    }

    /// Whether a new connection starts authenticated as this user (Redis: on and nopass).
    pub(crate) fn needs_no_password(&self) -> bool {
        self.enabled && self.nopass
    }

    pub(crate) fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let given = hash_password(password);
        // Every stored hash is compared, so the time taken does not tell which one matched.
        self.passwords.iter().fold(false, |found, hash| constant_time_eq(hash, &given) | found)
    }

    pub(crate) fn may_run(&self, bit: usize) -> bool {
        self.commands.contains(bit)
    }

    /// Whether this user may use `key` as `access` needs: some rule must grant each part.
    pub(crate) fn may_use_key(&self, key: &[u8], access: KeyAccess) -> bool {
        let granted = |wanted: bool, grants: fn(&KeyRule) -> bool| {
            !wanted || self.keys.iter().any(|rule| grants(rule) && rule.pattern.matches(key))
        };
        granted(access.read, |rule| rule.read) && granted(access.write, |rule| rule.write)
    }

    /// Whether a read-write `~*` covers every key, so that checks can skip the patterns.
    pub(crate) fn all_keys(&self) -> bool {
        self.keys.iter().any(|rule| rule.read && rule.write && rule.pattern.matches_everything())
    }

    pub(crate) fn flags(&self) -> Vec<&'static str> {
        let mut flags = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            flags.push("nopass");
        }
        flags
    }

    pub(crate) fn password_hashes(&self) -> Vec<String> {
        self.passwords.iter().map(hex).collect()
    }

    pub(crate) fn describe_commands(&self) -> String {
        let base = if self.all_commands_base { "+@all" } else { "-@all" };
        std::iter::once(base).chain(self.command_rules.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    pub(crate) fn describe_keys(&self) -> String {
        self.keys.iter().map(KeyRule::describe).collect::<Vec<_>>().join(" ")
    }

    pub(crate) fn describe_channels(&self) -> String {
        if self.all_channels {
            return "&*".to_owned();
        }
        self.channels.iter().map(|pattern| format!("&{}", pattern.source())).collect::<Vec<_>>().join(" ")
    }

    /// The rules as one ACL LIST / ACL file line's tail, in Redis's order.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self.flags().into_iter().map(str::to_owned).collect();
        parts.extend(self.passwords.iter().map(|hash| format!("#{}", hex(hash))));
        parts.extend(self.keys.iter().map(KeyRule::describe));
        if !self.all_channels {
            parts.push("resetchannels".to_owned());
        }
        parts.extend(self.channels.iter().map(|pattern| format!("&{}", pattern.source())));
        if self.all_channels {
            parts.push("&*".to_owned());
        }
        parts.push(self.describe_commands());
        parts.join(" ")
    }
}

/// A user as connections see it: SETUSER changes the rules in place, so a change applies to the
/// connections already authenticated as the user, as in Redis.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) name: Arc<str>,
    pub(crate) rules: RwLock<Rules>,
}

impl User {
    pub(crate) fn new(name: &str, rules: Rules) -> Arc<User> {
        Arc::new(User { name: Arc::from(name), rules: RwLock::new(rules) })
    }

    pub(crate) fn is_default(&self) -> bool {
        &*self.name == DEFAULT_USER
    }

    /// Whether this user may run the command with this bit on these keys (argument index, key)
    /// and these channels.
    pub(crate) fn check<'a>(
        &self,
        bit: usize,
        keys: impl IntoIterator<Item = (usize, &'a [u8])>,
        access: KeyAccess,
        channels: Option<ChannelUse<'_>>,
    ) -> Result<(), Denial> {
        let rules = self.rules.read();
        if !rules.may_run(bit) {
            return Err(Denial::Command);
        }
        if !rules.all_keys()
            && let Some((index, _)) = keys.into_iter().find(|(_, key)| !rules.may_use_key(key, access))
        {
            return Err(Denial::Key(index));
        }
        let Some(ChannelUse { first, names, patterns }) = channels else {
            return Ok(());
        };
        match names.iter().position(|name| !rules.may_use_channel(name, patterns)) {
            Some(offset) => Err(Denial::Channel(first + offset)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::commands::tests::catalogue;
    use super::*;

    const RW: KeyAccess = KeyAccess { read: true, write: true };
    const READ: KeyAccess = KeyAccess { read: true, write: false };

    fn rules(line: &str) -> Result<Rules, (String, RuleError)> {
        let mut rules = Rules::default();
        for rule in line.split_whitespace() {
            rules.apply(rule, &catalogue()).map_err(|error| (rule.to_owned(), error))?;
        }
        Ok(rules)
    }

    #[test]
    fn a_new_user_can_do_nothing() {
        let user = Rules::default();
        assert!(user.flags() == ["off"] && !user.accepts(b"") && !user.needs_no_password());
        assert!((0..7).all(|bit| !user.may_run(bit)));
        assert!(!user.may_use_key(b"k", READ));
        assert_eq!(user.describe(), "off resetchannels -@all");
    }

    #[test]
    fn passwords() {
        let mut user = rules("on >secret >other").unwrap();
        assert!(user.accepts(b"secret") && user.accepts(b"other"));
        assert!(!user.accepts(b"secre") && !user.accepts(b"") && !user.needs_no_password());
        user.apply("<other", &catalogue()).unwrap();
        assert!(!user.accepts(b"other") && user.accepts(b"secret"));
        assert_eq!(user.apply("<other", &catalogue()), Err(RuleError::NoSuchPassword));
        user.apply("off", &catalogue()).unwrap();
        assert!(!user.accepts(b"secret"), "a disabled user cannot log in");
        user.apply("on", &catalogue()).unwrap();
        user.apply("nopass", &catalogue()).unwrap();
        assert!(user.accepts(b"anything") && user.needs_no_password() && user.password_hashes().is_empty());
        user.apply("resetpass", &catalogue()).unwrap();
        assert!(!user.accepts(b"anything"));
    }

    #[test]
    fn hashed_passwords_follow_redis() {
        // sha256("npw"), as Redis's ACL LIST showed it for `>npw`.
        let hash = "7dec481a272fb2de6a207cfc8e294fbaf7b26cdf4499a7e25444f3a6a52cabec";
        let user = rules(&format!("on #{hash}")).unwrap();
        assert!(user.accepts(b"npw"));
        assert_eq!(user.password_hashes(), [hash]);
        assert_eq!(rules(">npw").unwrap().password_hashes(), [hash]);
        assert_eq!(rules("#abc").unwrap_err().1, RuleError::BadHash);
        assert_eq!(rules(&format!("#{}", hash.to_uppercase())).unwrap_err().1, RuleError::BadHash);
        assert_eq!(rules(&format!("!{hash}")).unwrap_err().1, RuleError::NoSuchPassword);
    }

    #[test]
    fn command_rules_in_order() {
        let user = rules("+@all -@dangerous +client|list").unwrap();
        assert!(user.may_run(0) && user.may_run(1) && user.may_run(2) && user.may_run(6));
        assert!(user.may_run(4), "+client|list comes after -@dangerous");
        assert!(!user.may_run(5), "client|kill stays denied");
        assert_eq!(user.describe_commands(), "+@all -@dangerous +client|list");
        let node = rules("+@read +lock.try -client +client|id").unwrap();
        assert!(node.may_run(0) && node.may_run(1) && node.may_run(6));
        assert!(!node.may_run(2) && !node.may_run(4) && !node.may_run(5));
        assert_eq!(node.describe_commands(), "-@all +@read +lock.try -client +client|id");
        let replaced = rules("+lock.try -ping -lock.try").unwrap();
        assert_eq!(replaced.describe_commands(), "-@all -ping -lock.try", "a later rule replaces an earlier one");
        assert_eq!(rules("+@all -ping allcommands").unwrap().describe_commands(), "+@all");
        assert_eq!(rules("+get").unwrap_err(), ("+get".to_owned(), RuleError::UnknownCommand));
        assert_eq!(rules("+@nosuch").unwrap_err().1, RuleError::UnknownCommand);
        assert_eq!(rules("+ping|x").unwrap_err().1, RuleError::UnknownCommand);
        assert_eq!(rules("bogus").unwrap_err().1, RuleError::Syntax);
    }

    #[test]
    fn key_rules() {
        let user = rules("~pull:* %R~read:* %W~write:* %RW~both").unwrap();
        assert!(user.may_use_key(b"pull:x", RW) && user.may_use_key(b"both", RW));
        assert!(user.may_use_key(b"read:x", READ) && !user.may_use_key(b"read:x", RW));
        assert!(!user.may_use_key(b"write:x", READ));
        assert!(user.may_use_key(b"write:x", KeyAccess { read: false, write: true }));
        assert!(!user.may_use_key(b"other", READ) && !user.all_keys());
        assert_eq!(user.describe_keys(), "~pull:* %R~read:* %W~write:* ~both");
        assert!(rules("allkeys").unwrap().all_keys());
        assert!(!rules("allkeys resetkeys").unwrap().may_use_key(b"k", READ));
        assert_eq!(rules("%X~k").unwrap_err().1, RuleError::Syntax);
        assert_eq!(rules("%~k").unwrap_err().1, RuleError::Syntax);
    }

    #[test]
    fn checks_command_then_keys() {
        let node = User::new("node", rules("on nopass ~pull:* %R~view:* +lock.try +lock.info").unwrap());
        assert_eq!(node.check(0, [(1, &b"pull:a"[..])], RW, None), Ok(()));
        assert_eq!(node.check(0, [(1, &b"other"[..])], RW, None), Err(Denial::Key(1)));
        assert_eq!(node.check(0, [(1, &b"view:a"[..])], RW, None), Err(Denial::Key(1)), "read-only pattern");
        assert_eq!(node.check(1, [(1, &b"view:a"[..])], READ, None), Ok(()));
        assert_eq!(node.check(5, [], RW, None), Err(Denial::Command));
        assert_eq!(node.check(5, [(1, &b"pull:a"[..])], RW, None), Err(Denial::Command), "the command first");
        let admin = User::new("admin", Rules::superuser(None));
        assert_eq!(admin.check(5, [(1, &b"anything"[..])], RW, None), Ok(()));
    }

    #[test]
    fn channel_rules_match_channels_and_name_patterns_literally() {
        let user = rules("resetchannels &__lock__:pull:* &news").unwrap();
        assert!(user.may_use_channel(b"__lock__:pull:a", false) && user.may_use_channel(b"news", false));
        assert!(!user.may_use_channel(b"__lock__:other", false));
        assert!(user.may_use_channel(b"__lock__:pull:*", true), "a pattern the user has");
        assert!(!user.may_use_channel(b"__lock__:pull:a*", true), "a narrower pattern is not one of them");
        assert_eq!(user.describe_channels(), "&__lock__:pull:* &news");
        assert!(user.describe().contains(" resetchannels &__lock__:pull:* &news "), "{}", user.describe());
        let all = rules("allchannels").unwrap();
        assert!(all.may_use_channel(b"anything", false) && all.may_use_channel(b"any*", true));
        assert_eq!(rules("&* &x").unwrap_err().1, RuleError::ChannelAfterAll);
        assert!(!rules("&x resetchannels").unwrap().may_use_channel(b"x", false));
        assert!(!Rules::default().may_use_channel(b"x", false), "new users have no channels, as in Redis 7");

        let node = User::new("node", rules("on nopass +@all ~* &__lock__:pull:*").unwrap());
        let names = [bytes::Bytes::from_static(b"__lock__:pull:a"), bytes::Bytes::from_static(b"news")];
        let subscribe = |patterns| Some(ChannelUse { first: 1, names: &names, patterns });
        assert_eq!(node.check(0, [], RW, subscribe(false)), Err(Denial::Channel(2)));
        assert_eq!(node.check(0, [], RW, subscribe(true)), Err(Denial::Channel(1)));
        assert_eq!(node.check(0, [], RW, Some(ChannelUse { first: 1, names: &names[..1], patterns: false })), Ok(()));
    }

    #[test]
    fn superuser_and_reset() {
        let open = Rules::superuser(None);
        assert!(open.needs_no_password() && open.all_keys() && open.may_run(5));
        assert_eq!(open.describe(), "on nopass ~* &* +@all");
        let guarded = Rules::superuser(Some("pw"));
        assert!(!guarded.needs_no_password() && guarded.accepts(b"pw") && !guarded.accepts(b""));
        let mut reset = guarded.clone();
        reset.apply("reset", &catalogue()).unwrap();
        assert_eq!(reset, Rules::default());
    }
}
