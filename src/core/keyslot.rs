//! Key → shard and key → hash slot, both with Redis Cluster's hash-tag rule, so that
//! `pull:{sha256:ab}` and `delete:{sha256:ab}` always share a shard and a slot.

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

/// Redis Cluster's number of hash slots, which every cluster client assumes.
pub(crate) const SLOTS: u16 = 16384;

/// The hash slot Redis Cluster gives `key` (Redis's `keyHashSlot`): what CLUSTER KEYSLOT answers
/// and -MOVED names, so that cluster clients route the key where the server expects it.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS - 1)
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0, no reflection), as Redis's `crc16.c`.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |crc, &byte| (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)])
}

/// The CRC of each byte value, worked out at compile time (Redis writes out the same table).
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

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

    #[test]
    fn crc16_is_redis_crc16() {
        // The check value redis/src/crc16.c states, and the first entries of its table.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(crc16(b""), 0);
        assert_eq!(CRC16_TABLE[..8], [0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7]);
        assert_eq!(CRC16_TABLE[255], 0x1ef0);
    }

    #[test]
    fn key_slots_are_redis_key_slots() {
        // What CLUSTER KEYSLOT answers on Redis 7.0 (the comparison with a live Redis over many
        // more keys is in cmd::cluster).
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"123456789"), 0x31c3 & 16383);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383, "an empty tag hashes the whole key");
        assert_eq!(key_slot(b"{a}{b}"), key_slot(b"a"));
    }
}
