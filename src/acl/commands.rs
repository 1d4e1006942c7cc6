//! What command rules name: the commands and subcommands of the command table (handed in by the
//! command layer, which sits above this module) and Redis's ACL categories; and the set of
//! commands a user may run, a bitset indexed like the table's command ids.

/// One command or subcommand as rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandEntry {
    /// The command's index in [`CommandBits`]; unique, below [`CommandBits::CAPACITY`].
    pub(crate) bit: usize,
    /// The container's name for a subcommand (`"client"`), `""` for a top-level command.
    pub(crate) container: &'static str,
    pub(crate) name: &'static str,
    /// As the table lists them: `"@fast"`.
    pub(crate) categories: &'static [&'static str],
}

impl CommandEntry {
    fn is_named(&self, name: &str) -> bool {
        match name.split_once('|') {
            Some((container, sub)) => {
                self.container.eq_ignore_ascii_case(container) && self.name.eq_ignore_ascii_case(sub)
            }
            // A container's name covers its subcommands too, as `+client` does in Redis.
            None if self.container.is_empty() => self.name.eq_ignore_ascii_case(name),
            None => self.container.eq_ignore_ascii_case(name),
        }
    }

    pub(crate) fn full_name(&self) -> String {
        if self.container.is_empty() { self.name.to_owned() } else { format!("{}|{}", self.container, self.name) }
    }
}

/// Redis 7's categories, all of them, so that rules written for Redis (`-@hash`) load here too.
pub(crate) const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CommandBits(u128);

impl CommandBits {
    pub(crate) const CAPACITY: usize = u128::BITS as usize;
    pub(crate) const ALL: CommandBits = CommandBits(u128::MAX);
    pub(crate) const NONE: CommandBits = CommandBits(0);

    pub(crate) fn contains(self, bit: usize) -> bool {
        bit < Self::CAPACITY && self.0 & (1 << bit) != 0
    }

    pub(crate) fn allow(&mut self, other: CommandBits) {
        self.0 |= other.0;
    }

    pub(crate) fn deny(&mut self, other: CommandBits) {
        self.0 &= !other.0;
    }

    fn with(mut self, bit: usize) -> CommandBits {
        self.0 |= 1 << bit;
        self
    }
}

#[derive(Debug)]
pub(crate) struct Catalogue {
    entries: Vec<CommandEntry>,
}

impl Catalogue {
    pub(crate) fn new(entries: Vec<CommandEntry>) -> Catalogue {
        assert!(entries.iter().all(|entry| entry.bit < CommandBits::CAPACITY), "more commands than CommandBits holds");
        Catalogue { entries }
    }

    /// `client|kill` is one subcommand; `client` is the container with all its subcommands.
    pub(crate) fn command(&self, name: &str) -> Option<CommandBits> {
        let mut bits = CommandBits::NONE;
        let mut found = false;
        for entry in self.entries.iter().filter(|entry| entry.is_named(name)) {
            bits = bits.with(entry.bit);
            found = true;
        }
        found.then_some(bits)
    }

    /// A known category's commands (none for a Redis category baton has no command in); `all`
    /// is every command, present and future.
    pub(crate) fn category(&self, category: &str) -> Option<CommandBits> {
        if category.eq_ignore_ascii_case("all") {
            return Some(CommandBits::ALL);
        }
        let category = CATEGORIES.iter().find(|known| known.eq_ignore_ascii_case(category))?;
        Some(self.in_category(category).fold(CommandBits::NONE, |bits, entry| bits.with(entry.bit)))
    }

    /// ACL CAT's listing: the full names of a category's commands.
    pub(crate) fn names_in(&self, category: &str) -> Option<Vec<String>> {
        let category = CATEGORIES.iter().find(|known| known.eq_ignore_ascii_case(category))?;
        Some(self.in_category(category).map(CommandEntry::full_name).collect())
    }

    fn in_category<'a>(&'a self, category: &'a str) -> impl Iterator<Item = &'a CommandEntry> {
        self.entries
            .iter()
            .filter(move |entry| entry.categories.iter().any(|own| own.strip_prefix('@') == Some(category)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small stand-in for the command table.
    pub(crate) fn catalogue() -> Catalogue {
        Catalogue::new(vec![
            CommandEntry { bit: 0, container: "", name: "lock.try", categories: &["@write", "@fast"] },
            CommandEntry { bit: 1, container: "", name: "lock.info", categories: &["@read", "@fast"] },
            CommandEntry { bit: 2, container: "", name: "ping", categories: &["@fast", "@connection"] },
            CommandEntry { bit: 3, container: "", name: "client", categories: &["@slow"] },
            CommandEntry { bit: 4, container: "client", name: "list", categories: &["@admin", "@slow", "@dangerous"] },
            CommandEntry { bit: 5, container: "client", name: "kill", categories: &["@admin", "@slow", "@dangerous"] },
            CommandEntry { bit: 6, container: "client", name: "id", categories: &["@slow", "@connection"] },
        ])
    }

    #[test]
    fn names_cover_subcommands() {
        let catalogue = catalogue();
        assert_eq!(catalogue.command("LOCK.TRY"), Some(CommandBits(1)));
        assert_eq!(catalogue.command("client|kill"), Some(CommandBits(1 << 5)));
        assert_eq!(catalogue.command("client"), Some(CommandBits(0b111_1000)));
        assert_eq!(catalogue.command("client|nosuch"), None);
        assert_eq!(catalogue.command("get"), None);
        assert_eq!(catalogue.command("kill"), None, "a subcommand's own name is not a command");
    }

    #[test]
    fn categories_are_redis_ones() {
        let catalogue = catalogue();
        assert_eq!(catalogue.category("admin"), Some(CommandBits(0b11_0000)));
        assert_eq!(catalogue.category("FAST"), Some(CommandBits(0b111)));
        assert_eq!(catalogue.category("hash"), Some(CommandBits::NONE), "known to Redis, empty here");
        assert_eq!(catalogue.category("all"), Some(CommandBits::ALL));
        assert_eq!(catalogue.category("nosuch"), None);
        assert_eq!(catalogue.names_in("dangerous").unwrap(), ["client|list", "client|kill"]);
    }

    #[test]
    fn bits_allow_and_deny() {
        let mut bits = CommandBits::NONE;
        bits.allow(CommandBits(0b101));
        bits.deny(CommandBits(0b100));
        assert!(bits.contains(0) && !bits.contains(2) && !bits.contains(1));
        assert!(!CommandBits::ALL.contains(CommandBits::CAPACITY));
    }
}
