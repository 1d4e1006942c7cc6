//! What the server sends a connection unasked: pub/sub messages and MONITOR lines. Whoever has
//! something to say (another connection's task, the lease reaper) queues it here without waiting
//! and without touching the socket; the connection's own task writes it out. A client that reads
//! slower than it is sent to is cut off by Redis's output-buffer limits (`client-output-buffer-limit
//! pubsub`), so its queue never grows past them.

use std::collections::VecDeque;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::codec::encoded_len_estimate;
use crate::config::OutputLimit;
use crate::reply::Reply;

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    ready: Notify,
    /// Wakes a connection stuck writing to a client that reads nothing, to close it.
    overflow: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    /// Pushes are taken only while the connection listens (subscribed or monitoring): a message
    /// published just after it stopped must not sit here for ever.
    open: bool,
    items: VecDeque<Reply>,
    bytes: usize,
    /// Since when `bytes` has been over the soft limit.
    over_soft_since: Option<Instant>,
    /// A limit was passed: what was queued is dropped and the connection is to close.
    overflowed: bool,
}

/// The connection went over its output-buffer limit and is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflowed;

impl Outbox {
    /// The connection listens from now on.
    pub(crate) fn open(&self) {
        self.queue.lock().open = true;
    }

    /// The connection no longer listens: what is queued is dropped, and so is what comes later.
    pub(crate) fn close(&self) {
        let mut queue = self.queue.lock();
        queue.open = false;
        queue.items = VecDeque::new();
        queue.bytes = 0;
        queue.over_soft_since = None;
    }

    /// Queues `reply` unless the connection does not listen. Passing `limit` drops the whole
    /// queue and marks the connection for closing, as Redis closes a client over its limit.
    pub(crate) fn push(&self, reply: Reply, limit: &OutputLimit) {
        let size = encoded_len_estimate(&reply);
        let mut queue = self.queue.lock();
        if !queue.open || queue.overflowed {
            return;
        }
        queue.bytes += size;
        queue.items.push_back(reply);
        let overflowed = queue.over_limit(limit);
        if overflowed {
            queue.overflowed = true;
            queue.items = VecDeque::new();
            queue.bytes = 0;
        }
        drop(queue);
        self.ready.notify_one();
        if overflowed {
            self.overflow.notify_waiters();
        }
    }

    /// Takes what is queued, oldest first, up to about `max_bytes` (one reply at least, if any).
    pub(crate) fn take(&self, max_bytes: usize) -> Result<Vec<Reply>, Overflowed> {
        let mut queue = self.queue.lock();
        if queue.overflowed {
            return Err(Overflowed);
        }
        let mut taken = Vec::new();
        let mut size = 0;
        while (taken.is_empty() || size < max_bytes)
            && let Some(reply) = queue.items.pop_front()
        {
            size += encoded_len_estimate(&reply);
            taken.push(reply);
        }
        queue.bytes = queue.bytes.saturating_sub(size);
        if queue.items.is_empty() {
            // A burst must not keep its queue's table.
            queue.items.shrink_to(16);
        }
        Ok(taken)
    }

    /// Resolves when something was queued (or the limit passed) since the last call.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Resolves once the limit has been passed.
    pub(crate) async fn overflowed(&self) {
        loop {
            let notified = self.overflow.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so that an overflow in between still wakes us.
            notified.as_mut().enable();
            if self.queue.lock().overflowed {
                return;
            }
            notified.await;
        }
    }
}

impl Queue {
    /// Redis's rule: over the hard limit at once, or over the soft limit for the soft time (found
    /// out when the next message comes). A limit of 0 is none.
    fn over_limit(&mut self, limit: &OutputLimit) -> bool {
        if limit.hard_bytes > 0 && self.bytes > limit.hard_bytes {
            return true;
        }
        if limit.soft_bytes == 0 || self.bytes <= limit.soft_bytes {
            self.over_soft_since = None;
            return false;
        }
        let now = Instant::now();
        let since = *self.over_soft_since.get_or_insert(now);
        now.saturating_duration_since(since) >= limit.soft_duration
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(size: usize) -> Reply {
        Reply::bulk(vec![b'm'; size])
    }

    /// What one `message(100)` counts for.
    fn unit() -> usize {
        encoded_len_estimate(&message(100))
    }

    fn limit(hard_bytes: usize, soft_bytes: usize, soft_duration: Duration) -> OutputLimit {
        OutputLimit { hard_bytes, soft_bytes, soft_duration }
    }

    #[test]
    fn only_an_open_outbox_takes_pushes() {
        let outbox = Outbox::default();
        let none = limit(0, 0, Duration::ZERO);
        outbox.push(message(1), &none);
        assert_eq!(outbox.take(usize::MAX), Ok(vec![]));
        outbox.open();
        outbox.push(message(1), &none);
        outbox.push(message(2), &none);
        assert_eq!(outbox.take(1), Ok(vec![message(1)]), "at least one reply, and no more than asked");
        outbox.close();
        assert_eq!(outbox.take(usize::MAX), Ok(vec![]), "closing drops what was queued");
    }

    #[test]
    fn passing_the_hard_limit_drops_the_queue_and_overflows() {
        let outbox = Outbox::default();
        outbox.open();
        let hard = limit(10 * unit(), 0, Duration::ZERO);
        for _ in 0..10 {
            outbox.push(message(100), &hard);
        }
        assert_eq!(outbox.take(unit() + 1).map(|taken| taken.len()), Ok(2), "at the limit, not over it");
        for _ in 0..20 {
            outbox.push(message(100), &hard);
        }
        assert_eq!(outbox.take(usize::MAX), Err(Overflowed));
        assert!(outbox.queue.lock().items.is_empty(), "nothing is kept for a client that will be closed");
    }

    #[test]
    fn staying_over_the_soft_limit_for_its_time_overflows() {
        let outbox = Outbox::default();
        outbox.open();
        let soft_at_once = limit(0, 5 * unit(), Duration::ZERO);
        for _ in 0..5 {
            outbox.push(message(100), &soft_at_once);
        }
        assert!(outbox.queue.lock().over_soft_since.is_none(), "at the soft limit, not over it");
        outbox.push(message(100), &soft_at_once);
        assert_eq!(outbox.take(usize::MAX), Err(Overflowed));

        let outbox = Outbox::default();
        outbox.open();
        let soft_for_an_hour = limit(0, 5 * unit(), Duration::from_secs(3_600));
        for _ in 0..50 {
            outbox.push(message(100), &soft_for_an_hour);
        }
        assert!(outbox.queue.lock().over_soft_since.is_some());
        assert!(outbox.take(usize::MAX).is_ok(), "over the soft limit for less than its time");
        outbox.push(message(100), &soft_for_an_hour);
        assert_eq!(outbox.queue.lock().over_soft_since, None, "back below it: the clock restarts");
    }
}
