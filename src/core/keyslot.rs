//! Key → shard mapping with Redis Cluster's hash-tag rule, so that `pull:{sha256:ab}` and
//! `delete:{sha256:ab}` always share a shard (and one day a node).

/// The part of the key that is hashed: the bytes between the first `{` and the next `}` when that
/// span is non-empty, else the whole key.
pub(crate) fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.iter().position(|&b| b == b'}')
            && close > 0
        {
            return &rest[..close];
        }
    }
    key
}

/// FNV-1a over the hash tag: cheap, stable across runs and platforms, and spreads short keys well.
pub(crate) fn shard_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in hash_tag(key) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tag_follows_redis_cluster_rule() {
        assert_eq!(hash_tag(b"pull:{sha256:ab}"), b"sha256:ab");
        assert_eq!(hash_tag(b"delete:{sha256:ab}:x"), b"sha256:ab");
        assert_eq!(hash_tag(b"plain"), b"plain");
        assert_eq!(hash_tag(b"empty{}tag"), b"empty{}tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
        assert_eq!(hash_tag(b"{a}{b}"), b"a");
        assert_eq!(hash_tag(b"x{{a}}"), b"{a");
    }

    #[test]
    fn same_tag_same_hash() {
        assert_eq!(shard_hash(b"pull:{sha256:ab}"), shard_hash(b"delete:{sha256:ab}"));
        assert_ne!(shard_hash(b"pull:sha256:ab"), shard_hash(b"delete:sha256:ab"));
    }
}
