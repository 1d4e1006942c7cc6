//! Owners belong to ACL users. An owner is an identity (a holder's renewal answers with its token),
//! so if two users could spell the same owner, either could act for the other: renew the other's
//! lock and learn its token, then unlock it. The core knows nothing of users; the owner it stores
//! carries the user instead, and replies show the owner as its user spelled it.
//!
//! Stored forms, chosen so that the default user's owners (every owner on a server without ACL
//! users) are stored as given, and no two (user, owner) pairs share a stored form:
//! - the default user's owner, unless it starts with a NUL byte: as given;
//! - any other user's owner: `NUL user NUL owner` (user names contain no control characters);
//! - the default user's owner that starts with NUL: `NUL NUL owner` (the empty user name).

use bytes::{BufMut, Bytes, BytesMut};

use crate::acl::User;

const MARK: u8 = 0;

/// The owner as the core stores it for requests of this user.
pub(crate) fn scoped(user: &User, owner: Bytes) -> Bytes {
    let user_name: &[u8] = if user.is_default() {
        if owner.first() != Some(&MARK) {
            return owner;
        }
        b""
    } else {
        user.name.as_bytes()
    };
    let mut stored = BytesMut::with_capacity(2 + user_name.len() + owner.len());
    stored.put_u8(MARK);
    stored.put_slice(user_name);
    stored.put_u8(MARK);
    stored.put_slice(&owner);
    stored.freeze()
}

/// The owner as its user spelled it.
pub(crate) fn shown(stored: &[u8]) -> &[u8] {
    match stored.split_first() {
        Some((&MARK, scoped)) => match scoped.iter().position(|&byte| byte == MARK) {
            Some(end_of_user) => &scoped[end_of_user + 1..],
            None => stored,
        },
        _ => stored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{DEFAULT_USER, Rules};

    fn user(name: &str) -> std::sync::Arc<User> {
        User::new(name, Rules::default())
    }

    #[test]
    fn the_default_users_owners_are_stored_as_given() {
        let stored = scoped(&user(DEFAULT_USER), Bytes::from_static(b"node-1"));
        assert_eq!(&stored[..], b"node-1");
        assert_eq!(shown(&stored), b"node-1");
    }

    #[test]
    fn no_two_users_owners_share_a_stored_form() {
        let pairs: [(&str, &[u8]); 7] = [
            (DEFAULT_USER, b"node"),
            (DEFAULT_USER, b"\0alice\0node"),
            (DEFAULT_USER, b"\0\0node"),
            (DEFAULT_USER, b"\0"),
            ("alice", b"node"),
            ("alice", b"\0node"),
            ("bob", b"node"),
        ];
        let stored: Vec<Bytes> =
            pairs.iter().map(|(name, owner)| scoped(&user(name), Bytes::copy_from_slice(owner))).collect();
        for (i, (_, owner)) in pairs.iter().enumerate() {
            assert_eq!(shown(&stored[i]), *owner, "{:?}", pairs[i]);
            for j in 0..i {
                assert_ne!(stored[i], stored[j], "{:?} and {:?}", pairs[i], pairs[j]);
            }
        }
    }
}
