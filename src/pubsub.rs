//! Pub/Sub: which connections are subscribed to which channels and patterns, and the delivery of
//! messages to them, Redis's way: `message` to a channel's subscribers, `pmessage` to those of
//! every matching pattern. Messages are the lock events of `--notify-lock-events` (this hub is the
//! core's observer) and what PUBLISH sends. Delivering only queues a message in each
//! subscriber's outbox; the subscriber's own task writes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use hashbrown::HashMap;
use parking_lot::RwLock;

use crate::acl::glob_match;
use crate::clients::ClientEntry;
use crate::config::OutputLimit;
use crate::core::{ConnId, LockEvent, LockObserver};
use crate::reply::Reply;

/// Lock events of key `k` are published to `__lock__:k`, as Redis's keyspace notifications go to
/// `__keyspace@0__:k`. Clients cannot PUBLISH there, so that an event is always the server's.
pub(crate) const LOCK_CHANNEL_PREFIX: &[u8] = b"__lock__:";

/// A plain channel or a pattern of channels (SUBSCRIBE or PSUBSCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Channel,
    Pattern,
}

pub(crate) struct PubSub {
    /// `notify-lock-events`.
    notify: AtomicBool,
    /// Whether a lock event could reach anyone: notifications are on, and some subscription may
    /// match a lock channel. The core asks before every operation.
    listening: AtomicBool,
    registry: RwLock<Registry>,
    limit: OutputLimit,
}

#[derive(Default)]
struct Registry {
    channels: HashMap<Bytes, Vec<Arc<ClientEntry>>>,
    patterns: HashMap<Bytes, Vec<Arc<ClientEntry>>>,
    /// How many of `channels` are lock channels.
    lock_channels: usize,
}

impl Registry {
    fn of(&mut self, kind: Kind) -> &mut HashMap<Bytes, Vec<Arc<ClientEntry>>> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }

    /// Patterns are not worth analysing: any one may match a lock channel.
    fn may_hear_lock_events(&self) -> bool {
        self.lock_channels > 0 || !self.patterns.is_empty()
    }
}

impl PubSub {
    pub(crate) fn new(notify: bool, limit: OutputLimit) -> PubSub {
        PubSub {
            notify: AtomicBool::new(notify),
            listening: AtomicBool::new(false),
            registry: RwLock::default(),
            limit,
        }
    }

    pub(crate) fn notifies(&self) -> bool {
        self.notify.load(Ordering::Relaxed)
    }

    /// CONFIG SET notify-lock-events.
    pub(crate) fn set_notify(&self, notify: bool) {
        let registry = self.registry.write();
        self.notify.store(notify, Ordering::Relaxed);
        self.update_listening(&registry);
    }

    /// Called with the registry locked for writing, so that changes land in order.
    fn update_listening(&self, registry: &Registry) {
        self.listening.store(self.notifies() && registry.may_hear_lock_events(), Ordering::Relaxed);
    }

    /// `subscriber` starts listening to `name`; the caller makes sure it did not already.
    pub(crate) fn subscribe(&self, kind: Kind, name: Bytes, subscriber: &Arc<ClientEntry>) {
        let mut registry = self.registry.write();
        let is_lock_channel = kind == Kind::Channel && name.starts_with(LOCK_CHANNEL_PREFIX);
        let subscribers = registry.of(kind).entry(name).or_default();
        let new_channel = subscribers.is_empty();
        subscribers.push(Arc::clone(subscriber));
        if new_channel && is_lock_channel {
            registry.lock_channels += 1;
        }
        self.update_listening(&registry);
    }

    /// `subscriber` stops listening to `name`, which it was listening to.
    pub(crate) fn unsubscribe(&self, kind: Kind, name: &[u8], subscriber: ConnId) {
        let mut registry = self.registry.write();
        let map = registry.of(kind);
        let Some(subscribers) = map.get_mut(name) else {
            return;
        };
        subscribers.retain(|entry| entry.id != subscriber);
        if !subscribers.is_empty() {
            return;
        }
        map.remove(name);
        if kind == Kind::Channel && name.starts_with(LOCK_CHANNEL_PREFIX) {
            registry.lock_channels -= 1;
        }
        self.update_listening(&registry);
    }

    /// Sends `payload` to every subscriber of `channel` and of each pattern matching it; returns
    /// how many messages were queued (a client subscribed both ways gets both, as in Redis).
    pub(crate) fn publish(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let registry = self.registry.read();
        let mut receivers = 0;
        if let Some(subscribers) = registry.channels.get(channel) {
            for subscriber in subscribers {
                let message =
                    vec![Reply::bulk_static("message"), Reply::Bulk(channel.clone()), Reply::Bulk(payload.clone())];
                subscriber.outbox.push(Reply::Push(message), &self.limit);
            }
            receivers += subscribers.len();
        }
        for (pattern, subscribers) in &registry.patterns {
            if !glob_match(pattern, channel) {
                continue;
            }
            for subscriber in subscribers {
                let message = vec![
                    Reply::bulk_static("pmessage"),
                    Reply::Bulk(pattern.clone()),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(payload.clone()),
                ];
                subscriber.outbox.push(Reply::Push(message), &self.limit);
            }
            receivers += subscribers.len();
        }
        receivers
    }

    /// PUBSUB CHANNELS: the channels with subscribers, all or those matching `pattern`.
    pub(crate) fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let registry = self.registry.read();
        registry.channels.keys().filter(|channel| pattern.is_none_or(|p| glob_match(p, channel))).cloned().collect()
    }

    /// PUBSUB NUMSUB: the subscribers of `channel` (not counting patterns).
    pub(crate) fn subscriber_count(&self, channel: &[u8]) -> usize {
        self.registry.read().channels.get(channel).map_or(0, Vec::len)
    }

    /// INFO's `pubsub_channels` and `pubsub_patterns`: channels and distinct patterns subscribed to.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let registry = self.registry.read();
        (registry.channels.len(), registry.patterns.len())
    }
}

/// The channel of `key`'s lock events.
pub(crate) fn lock_channel(key: &[u8]) -> Bytes {
    let mut channel = BytesMut::with_capacity(LOCK_CHANNEL_PREFIX.len() + key.len());
    channel.put_slice(LOCK_CHANNEL_PREFIX);
    channel.put_slice(key);
    channel.freeze()
}

impl LockObserver for PubSub {
    fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    fn observe(&self, events: &[LockEvent]) {
        for event in events {
            let (key, notification) = event.notification();
            self.publish(&lock_channel(key), &Bytes::from_static(notification.as_str().as_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clients::ClientRegistry;

    const NO_LIMIT: OutputLimit = OutputLimit { hard_bytes: 0, soft_bytes: 0, soft_duration: Duration::ZERO };

    fn subscriber(clients: &ClientRegistry) -> Arc<ClientEntry> {
        let entry = clients.register("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        entry.outbox.open();
        entry
    }

    fn received(entry: &ClientEntry) -> Vec<Vec<Bytes>> {
        let replies = entry.outbox.take(usize::MAX).unwrap();
        replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Push(items) => items
                    .into_iter()
                    .map(|item| match item {
                        Reply::Bulk(bytes) => bytes,
                        other => panic!("not a bulk string: {other:?}"),
                    })
                    .collect(),
                other => panic!("not a push: {other:?}"),
            })
            .collect()
    }

    fn words(list: &[&str]) -> Vec<Bytes> {
        list.iter().map(|word| Bytes::copy_from_slice(word.as_bytes())).collect()
    }

    #[test]
    fn messages_reach_channel_and_pattern_subscribers() {
        let clients = ClientRegistry::default();
        let hub = PubSub::new(true, NO_LIMIT);
        let (a, b) = (subscriber(&clients), subscriber(&clients));
        hub.subscribe(Kind::Channel, Bytes::from_static(b"news"), &a);
        hub.subscribe(Kind::Pattern, Bytes::from_static(b"n*"), &a);
        hub.subscribe(Kind::Pattern, Bytes::from_static(b"x*"), &b);
        assert_eq!(hub.publish(&Bytes::from_static(b"news"), &Bytes::from_static(b"hi")), 2);
        assert_eq!(received(&a), [words(&["message", "news", "hi"]), words(&["pmessage", "n*", "news", "hi"])]);
        assert!(received(&b).is_empty());
        assert_eq!(hub.counts(), (1, 2));
        assert_eq!(hub.channels(Some(b"z*")), Vec::<Bytes>::new());
        assert_eq!(hub.subscriber_count(b"news"), 1);
        hub.unsubscribe(Kind::Channel, b"news", a.id);
        assert_eq!(hub.publish(&Bytes::from_static(b"news"), &Bytes::from_static(b"hi")), 1);
        assert_eq!(hub.counts(), (0, 2));
    }

    #[test]
    fn listening_needs_notifications_and_a_subscription_that_may_hear_them() {
        let clients = ClientRegistry::default();
        let hub = PubSub::new(false, NO_LIMIT);
        let a = subscriber(&clients);
        hub.subscribe(Kind::Channel, lock_channel(b"k"), &a);
        assert!(!hub.listening(), "notifications are off");
        hub.set_notify(true);
        assert!(hub.listening());
        hub.subscribe(Kind::Channel, Bytes::from_static(b"other"), &a);
        hub.unsubscribe(Kind::Channel, b"__lock__:k", a.id);
        assert!(!hub.listening(), "no subscription can hear a lock event");
        hub.subscribe(Kind::Pattern, Bytes::from_static(b"*"), &a);
        assert!(hub.listening());
    }
}
