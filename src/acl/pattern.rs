//! Key patterns (`~pull:*`) in Redis's glob syntax, compiled when a rule is set: the shapes
//! operators write almost always (everything, a prefix, one key) then cost one comparison per
//! request instead of a glob walk.

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPattern {
    /// As written after the `~`, for ACL LIST and ACL GETUSER.
    source: String,
    matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Any,
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Glob(Vec<u8>),
}

fn is_special(byte: u8) -> bool {
    matches!(byte, b'*' | b'?' | b'[' | b'\\')
}

impl KeyPattern {
    pub(crate) fn new(source: &str) -> KeyPattern {
        let bytes = source.as_bytes();
        let matcher = match bytes.iter().position(|&byte| is_special(byte)) {
            None => Matcher::Exact(bytes.to_vec()),
            Some(0) if bytes.iter().all(|&byte| byte == b'*') => Matcher::Any,
            Some(first) if first == bytes.len() - 1 && bytes[first] == b'*' => Matcher::Prefix(bytes[..first].to_vec()),
            Some(_) => Matcher::Glob(bytes.to_vec()),
        };
        KeyPattern { source: source.to_owned(), matcher }
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn matches_everything(&self) -> bool {
        self.matcher == Matcher::Any
    }

    pub(crate) fn matches(&self, key: &[u8]) -> bool {
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Exact(exact) => key == exact.as_slice(),
            Matcher::Prefix(prefix) => key.starts_with(prefix),
            Matcher::Glob(glob) => glob_match(glob, key),
        }
    }
}

/// Redis's `stringmatchlen`, case-sensitive: `*`, `?`, `[abc]`, `[^a-z]` and `\` escapes. A star
/// remembers where it began, so a mismatch retries one byte further instead of recursing.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p + 1, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&byte) => (byte == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star_at, matched))) => {
                p = star_at + 1;
                t = matched + 1;
                star = Some((star_at, matched + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// Matches `byte` against the class whose body starts at `start` (after the `[`); the position
/// after the closing `]` if it matches. An unclosed class runs to the end, as in Redis.
fn match_class(pattern: &[u8], start: usize, byte: u8) -> Option<usize> {
    let mut p = start;
    let negated = pattern.get(p) == Some(&b'^');
    if negated {
        p += 1;
    }
    let mut matched = false;
    while p < pattern.len() && pattern[p] != b']' {
        if pattern[p] == b'\\' && p + 1 < pattern.len() {
            matched |= pattern[p + 1] == byte;
            p += 2;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' {
            let (low, high) = (pattern[p].min(pattern[p + 2]), pattern[p].max(pattern[p + 2]));
            matched |= (low..=high).contains(&byte);
            p += 3;
        } else {
            matched |= pattern[p] == byte;
            p += 1;
        }
    }
    (matched != negated).then_some((p + 1).min(pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_shapes_compile_to_cheap_matchers() {
        assert_eq!(KeyPattern::new("*").matcher, Matcher::Any);
        assert_eq!(KeyPattern::new("pull:*").matcher, Matcher::Prefix(b"pull:".to_vec()));
        assert_eq!(KeyPattern::new("one").matcher, Matcher::Exact(b"one".to_vec()));
        assert_eq!(KeyPattern::new("a*b").matcher, Matcher::Glob(b"a*b".to_vec()));
        assert_eq!(KeyPattern::new("a\\*").matcher, Matcher::Glob(b"a\\*".to_vec()));
    }

    #[test]
    fn compiled_and_glob_agree() {
        let keys: [&[u8]; 7] = [b"", b"pull:", b"pull:x", b"pul", b"push:x", b"one", b"xpull:a"];
        for source in ["*", "pull:*", "one", "pull:?", "p*:*", "[op]*", "*x*"] {
            let pattern = KeyPattern::new(source);
            for key in keys {
                assert_eq!(pattern.matches(key), glob_match(source.as_bytes(), key), "{source} vs {key:?}");
            }
        }
    }

    #[test]
    fn glob_follows_redis() {
        assert!(glob_match(b"pull:*", b"pull:{sha256:4f1c}"));
        assert!(!glob_match(b"pull:*", b"Pull:x"), "keys are case-sensitive");
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*:*:*", b"a:b:c"));
        assert!(!glob_match(b"*:*:*", b"a:b"));
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(glob_match(b"[c-a]x", b"bx"), "a reversed range still matches");
        assert!(!glob_match(b"[^a-c]x", b"bx"));
        assert!(glob_match(b"[^a-c]x", b"dx"));
        assert!(glob_match(b"[\\]]", b"]"));
        assert!(glob_match(b"\\*", b"*"));
        assert!(!glob_match(b"\\*", b"x"));
        assert!(glob_match(b"**", b""));
        assert!(!glob_match(b"", b"x"));
        assert!(glob_match(b"a*b*c", b"axxbyybzc"));
    }
}
