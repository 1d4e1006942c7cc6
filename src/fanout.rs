//! A SUCCESS tells every waiter the same DONE: the first waiter an event loop answers renders it,
//! and the others that loop answers send a copy of those bytes instead of each building the reply
//! (an array, two byte strings copied out of the completion) and encoding it again.
//!
//! The rendering is kept per thread, for the last completion told, so that sharing it needs no
//! lock and the lock core stays ignorant of the protocol.

use std::cell::RefCell;
use std::sync::Arc;

use crate::codec::{self, Protocol};
use crate::core::Completion;
use crate::reply::{self, Reply};

/// The last completion rendered on a thread for one protocol, and its bytes.
type LastRendered = Option<(Arc<Completion>, bytes::Bytes)>;

thread_local! {
    static RENDERED: RefCell<[LastRendered; 2]> = const { RefCell::new([None, None]) };
}

/// The DONE of `completion`, rendered for `protocol`.
pub(crate) fn done(completion: Arc<Completion>, protocol: Protocol) -> Reply {
    let slot = match protocol {
        Protocol::Resp2 => 0,
        Protocol::Resp3 => 1,
    };
    RENDERED.with_borrow_mut(|rendered| {
        if let Some((last, bytes)) = &rendered[slot]
            && Arc::ptr_eq(last, &completion)
        {
            return Reply::Rendered(bytes.clone());
        }
        let reply = reply::done(&completion);
        match codec::render(&reply, protocol) {
            Ok(bytes) => {
                rendered[slot] = Some((completion, bytes.clone()));
                Reply::Rendered(bytes)
            }
            // Rendering a DONE cannot fail (only redis-protocol's leaves can, and a DONE has
            // none); if it ever did, the reply is encoded where it is sent, failing there.
            Err(_) => reply,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(result: Option<&[u8]>) -> Arc<Completion> {
        Arc::new(Completion { token: 7, finisher: Arc::from(&b"node-a"[..]), result: result.map(Arc::from) })
    }

    fn bytes_of(reply: Reply) -> bytes::Bytes {
        match reply {
            Reply::Rendered(bytes) => bytes,
            other => panic!("not rendered: {other:?}"),
        }
    }

    #[test]
    fn renders_each_completion_once_per_protocol_and_shares_the_bytes() {
        let pulled = completion(Some(b"sha256:ab"));
        let first = bytes_of(done(Arc::clone(&pulled), Protocol::Resp2));
        assert_eq!(&first[..], b"*3\r\n$4\r\nDONE\r\n$6\r\nnode-a\r\n$9\r\nsha256:ab\r\n");
        let second = bytes_of(done(Arc::clone(&pulled), Protocol::Resp2));
        assert_eq!(first.as_ptr(), second.as_ptr(), "the second waiter copies the first rendering");

        // A nil result is spelled differently in the two protocols.
        let without_result = completion(None);
        let resp2 = bytes_of(done(Arc::clone(&without_result), Protocol::Resp2));
        let resp3 = bytes_of(done(Arc::clone(&without_result), Protocol::Resp3));
        assert_eq!(&resp2[..], b"*3\r\n$4\r\nDONE\r\n$6\r\nnode-a\r\n$-1\r\n");
        assert_eq!(&resp3[..], b"*3\r\n$4\r\nDONE\r\n$6\r\nnode-a\r\n_\r\n");

        // Another completion with the same contents is rendered anew, not mistaken for the last.
        let again = bytes_of(done(completion(None), Protocol::Resp2));
        assert_eq!(again, resp2);
        assert_ne!(again.as_ptr(), resp2.as_ptr());
    }
}
