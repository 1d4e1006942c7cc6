use super::testing::{acquired, at, blocked, conn, granted, request};
use super::*;

fn core() -> LockCore {
    core_with(true)
}

fn core_with(release_on_disconnect: bool) -> LockCore {
    LockCore::new(CoreSettings { default_lease_ms: 1_000, max_lease_ms: 60_000, release_on_disconnect, shards: 4 }, 100)
}

fn success(result: Option<&str>, keep_ms: Option<u64>) -> Verdict {
    Verdict::Success { result: result.map(|r| Arc::from(r.as_bytes())), keep_ms }
}

fn failure() -> Verdict {
    Verdict::Failure { reason: Some(Arc::from(&b"disk full"[..])) }
}

#[test]
fn free_lock_is_granted_and_retry_by_holder_is_idempotent() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    assert_eq!(core.try_lock(request("k", "a", 1, None), false, at(500)), TryOutcome::Acquired { token });
    // The retry renewed the lease: 1000 ms from t=500, so still held at t=1200.
    assert_eq!(core.info(b"k", at(1_200)).unwrap().holder.unwrap().owner.as_ref(), b"a");
}

#[test]
fn others_queue_in_order_and_a_repeat_keeps_its_place() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), false, at(0)), TryOutcome::Queued { position: 1 });
    assert_eq!(core.try_lock(request("k", "c", 3, None), false, at(0)), TryOutcome::Queued { position: 2 });
    assert_eq!(core.try_lock(request("k", "b", 2, None), false, at(0)), TryOutcome::Queued { position: 1 });
    let info = core.info(b"k", at(0)).unwrap();
    assert_eq!(info.queue, vec![Arc::from(&b"b"[..]), Arc::from(&b"c"[..])]);
    assert_eq!(info.state, LockStateName::Held);
}

#[test]
fn noqueue_reports_the_holder_and_queues_nothing() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    assert_eq!(
        core.try_lock(request("k", "b", 2, None), true, at(0)),
        TryOutcome::Busy { holder: Arc::from(&b"a"[..]) }
    );
    assert!(core.info(b"k", at(0)).unwrap().queue.is_empty());
}

#[test]
fn failure_hands_off_to_the_head_only_with_a_larger_token() {
    let core = core();
    let first = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let mut b = blocked(core.wait(request("k", "b", 2, None), at(0)));
    let mut c = blocked(core.wait(request("k", "c", 3, None), at(0)));
    assert_eq!(core.unlock(b"k", b"a", first, failure(), at(10)), UnlockOutcome::HandedOff);
    let second = match b.receiver.try_recv() {
        Ok(WaitOutcome::Acquired { token }) => token,
        other => panic!("head not granted: {other:?}"),
    };
    assert!(second > first);
    assert!(c.receiver.try_recv().is_err(), "only the head is woken");
    let info = core.info(b"k", at(10)).unwrap();
    assert_eq!(info.holder.unwrap().token, second);
    assert_eq!(info.last_failure.as_deref(), Some(&b"disk full"[..]));
    assert_eq!(core.unlock(b"k", b"b", second, failure(), at(20)), UnlockOutcome::HandedOff);
    assert!(matches!(c.receiver.try_recv(), Ok(WaitOutcome::Acquired { token }) if token > second));
}

#[test]
fn failure_with_nobody_waiting_frees_the_key() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(0)), UnlockOutcome::Released);
    assert_eq!(core.key_count(), 0);
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(0)), UnlockOutcome::NotLocked);
}

#[test]
fn success_tells_every_blocked_waiter_done_with_the_result() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let mut tickets: Vec<_> =
        (0..5).map(|i| blocked(core.wait(request("k", &format!("w{i}"), 10 + i, None), at(0)))).collect();
    assert_eq!(
        core.unlock(b"k", b"a", token, success(Some("layer ok"), None), at(5)),
        UnlockOutcome::Succeeded { waiters_told: 5 }
    );
    for ticket in &mut tickets {
        match ticket.receiver.try_recv() {
            Ok(WaitOutcome::Done(completion)) => {
                assert_eq!(completion.finisher.as_ref(), b"a");
                assert_eq!(completion.result.as_deref(), Some(&b"layer ok"[..]));
            }
            other => panic!("expected DONE, got {other:?}"),
        }
    }
    assert_eq!(core.key_count(), 0, "nothing kept without KEEP");
    // Without KEEP a newcomer starts a fresh round.
    assert!(
        matches!(core.try_lock(request("k", "late", 99, None), false, at(6)), TryOutcome::Acquired { token: t } if t > token)
    );
}

#[test]
fn queued_owner_not_blocked_learns_done_instead_of_a_grant() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), false, at(0)), TryOutcome::Queued { position: 1 });
    assert_eq!(
        core.unlock(b"k", b"a", token, success(None, None), at(10)),
        UnlockOutcome::Succeeded { waiters_told: 1 }
    );
    // Someone else grabs the free lock before b comes back...
    acquired(core.try_lock(request("k", "c", 3, None), false, at(20)));
    // ...b still learns DONE, once.
    assert!(
        matches!(core.try_lock(request("k", "b", 2, None), false, at(30)), TryOutcome::Done(c) if c.finisher.as_ref() == b"a")
    );
    assert_eq!(core.try_lock(request("k", "b", 2, None), false, at(31)), TryOutcome::Queued { position: 1 });
}

#[test]
fn owed_done_lapses_with_the_queue_lease() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    core.try_lock(request("k", "b", 2, None), false, at(0));
    core.unlock(b"k", b"a", token, success(None, None), at(10));
    // b's place was leased until t=1000.
    assert!(matches!(core.try_lock(request("k", "b", 2, None), false, at(1_001)), TryOutcome::Acquired { .. }));
}

#[test]
fn keep_remembers_the_completion_for_late_arrivals() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    core.unlock(b"k", b"a", token, success(Some("r"), Some(500)), at(0));
    assert!(matches!(core.try_lock(request("k", "late", 2, None), false, at(100)), TryOutcome::Done(_)));
    assert!(matches!(core.wait(request("k", "late2", 3, None), at(200)), WaitStart::Ready(WaitOutcome::Done(_))));
    assert_eq!(core.info(b"k", at(200)).unwrap().state, LockStateName::Done);
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(200)), UnlockOutcome::NotLocked);
    assert!(matches!(core.try_lock(request("k", "late", 2, None), false, at(501)), TryOutcome::Acquired { .. }));
}

#[test]
fn timed_out_wait_keeps_its_place_and_can_wait_again() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let b = blocked(core.wait(request("k", "b", 2, None), at(0)));
    blocked(core.wait(request("k", "c", 3, None), at(0)));
    assert_eq!(core.wait_timed_out(b, at(100)), None);
    assert_eq!(core.info(b"k", at(100)).unwrap().queue[0].as_ref(), b"b");
    let mut b = blocked(core.wait(request("k", "b", 2, None), at(150)));
    core.unlock(b"k", b"a", token, failure(), at(200));
    assert!(matches!(b.receiver.try_recv(), Ok(WaitOutcome::Acquired { .. })));
}

#[test]
fn head_that_is_not_blocked_is_granted_and_told_on_its_next_call() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), false, at(0)), TryOutcome::Queued { position: 1 });
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(10)), UnlockOutcome::HandedOff);
    assert!(
        matches!(core.try_lock(request("k", "b", 2, None), false, at(20)), TryOutcome::Acquired { token: t } if t > token)
    );
}

#[test]
fn timeout_racing_a_grant_returns_the_grant() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let b = blocked(core.wait(request("k", "b", 2, None), at(0)));
    core.unlock(b"k", b"a", token, failure(), at(10));
    // The grant was sent before the timeout was processed: the timeout must yield it.
    assert!(matches!(core.wait_timed_out(b, at(10)), Some(WaitOutcome::Acquired { .. })));
    assert_eq!(core.info(b"k", at(10)).unwrap().holder.unwrap().owner.as_ref(), b"b");
}

#[test]
fn abandoned_waiter_is_never_granted() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let b = blocked(core.wait(request("k", "b", 2, None), at(0)));
    let mut c = blocked(core.wait(request("k", "c", 3, None), at(0)));
    core.wait_abandoned(b, at(5));
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(10)), UnlockOutcome::HandedOff);
    assert!(matches!(c.receiver.try_recv(), Ok(WaitOutcome::Acquired { .. })));
}

#[test]
fn grant_sent_to_a_waiter_that_then_disconnects_passes_on() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let b = blocked(core.wait(request("k", "b", 2, None), at(0)));
    let mut c = blocked(core.wait(request("k", "c", 3, None), at(0)));
    core.unlock(b"k", b"a", token, failure(), at(10));
    core.wait_abandoned(b, at(11));
    assert!(matches!(c.receiver.try_recv(), Ok(WaitOutcome::Acquired { .. })));
    assert_eq!(core.info(b"k", at(11)).unwrap().holder.unwrap().owner.as_ref(), b"c");
}

#[test]
fn dropped_receiver_is_skipped_at_hand_off() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    drop(blocked(core.wait(request("k", "b", 2, None), at(0))));
    let mut c = blocked(core.wait(request("k", "c", 3, None), at(0)));
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(10)), UnlockOutcome::HandedOff);
    assert!(matches!(c.receiver.try_recv(), Ok(WaitOutcome::Acquired { .. })));
}

#[test]
fn cancel_leaves_the_queue() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    core.try_lock(request("k", "b", 2, None), false, at(0));
    assert!(core.cancel(b"k", b"b", at(0)));
    assert!(!core.cancel(b"k", b"b", at(0)));
    assert!(!core.cancel(b"k", b"a", at(0)), "the holder is not queued");
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(0)), UnlockOutcome::Released);
}

#[test]
fn lease_expiry_hands_off_and_fences_the_stale_holder() {
    let core = core();
    let stale = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let mut b = blocked(core.wait(request("k", "b", 2, None), at(0)));
    assert_eq!(core.expire(at(999)), Some(1_000));
    assert!(b.receiver.try_recv().is_err());
    core.expire(at(1_000));
    let fresh = match b.receiver.try_recv() {
        Ok(WaitOutcome::Acquired { token }) => token,
        other => panic!("{other:?}"),
    };
    assert!(fresh > stale);
    assert_eq!(core.unlock(b"k", b"a", stale, success(None, None), at(1_001)), UnlockOutcome::NotHolder);
    assert_eq!(core.extend(b"k", b"a", stale, 5_000, conn(1), at(1_001)), ExtendOutcome::NotHolder);
    assert_eq!(core.info(b"k", at(1_001)).unwrap().last_failure.as_deref(), Some(&b"lease expired"[..]));
    assert_eq!(core.stats().lease_expiries, 1);
}

#[test]
fn extend_renews_the_lease() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    assert_eq!(core.extend(b"k", b"a", token, 5_000, conn(1), at(900)), ExtendOutcome::Extended);
    core.expire(at(2_000));
    assert_eq!(core.info(b"k", at(2_000)).unwrap().holder.unwrap().lease_remaining_ms, 3_900);
    assert_eq!(core.extend(b"k", b"a", token + 1, 5_000, conn(1), at(900)), ExtendOutcome::NotHolder);
    assert_eq!(core.extend(b"nokey", b"a", token, 5_000, conn(1), at(900)), ExtendOutcome::NotLocked);
}

#[test]
fn leases_are_capped_by_the_maximum() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, Some(u64::MAX)), false, at(0)));
    assert_eq!(core.info(b"k", at(0)).unwrap().holder.unwrap().lease_remaining_ms, 60_000);
    core.extend(b"k", b"a", token, u64::MAX, conn(1), at(0));
    assert_eq!(core.info(b"k", at(0)).unwrap().holder.unwrap().lease_remaining_ms, 60_000);
}

#[test]
fn tokens_keep_growing_after_a_key_is_forgotten() {
    let core = core();
    let mut last = 0;
    for round in 0..5 {
        let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(round)));
        assert!(token > last);
        last = token;
        core.unlock(b"k", b"a", token, success(None, None), at(round));
        assert_eq!(core.key_count(), 0);
    }
}

#[test]
fn holder_connection_close_releases_to_the_next_waiter() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 7, None), false, at(0)));
    let mut b = blocked(core.wait(request("k", "b", 8, None), at(0)));
    core.release_connection(conn(8), [&b"k"[..]], at(1));
    assert!(b.receiver.try_recv().is_err(), "another connection's close changes nothing");
    core.release_connection(conn(7), [&b"k"[..]], at(1));
    assert!(matches!(b.receiver.try_recv(), Ok(WaitOutcome::Acquired { .. })));
    assert_eq!(core.stats().disconnect_releases, 1);
}

#[test]
fn release_on_disconnect_off_keeps_the_lease() {
    let core = core_with(false);
    acquired(core.try_lock(request("k", "a", 7, None), false, at(0)));
    core.release_connection(conn(7), [&b"k"[..]], at(1));
    assert_eq!(core.info(b"k", at(1)).unwrap().state, LockStateName::Held);
}

#[test]
fn unqueued_owner_place_expires() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, Some(10_000)), false, at(0)));
    core.try_lock(request("k", "b", 2, None), false, at(0));
    core.expire(at(1_000));
    assert!(core.info(b"k", at(1_000)).unwrap().queue.is_empty());
}

#[test]
fn stats_count_gauges() {
    let core = core();
    acquired(core.try_lock(request("k1", "a", 1, None), false, at(0)));
    acquired(core.try_lock(request("k2", "a", 1, None), false, at(0)));
    core.try_lock(request("k1", "b", 2, None), false, at(0));
    let _ticket = blocked(core.wait(request("k1", "c", 3, None), at(0)));
    let stats = core.stats();
    assert_eq!((stats.keys, stats.held_keys, stats.waiters, stats.blocked_waiters), (2, 2, 2, 1));
    assert_eq!(stats.grants, 2);
}

#[test]
fn churn_does_not_grow_the_timer_heap_without_bound() {
    let core = core();
    for i in 0..20_000u64 {
        let key = format!("k{i}");
        let token = acquired(core.try_lock(request(&key, "a", 1, None), false, at(0)));
        core.unlock(key.as_bytes(), b"a", token, success(None, None), at(0));
    }
    let heap_total: usize = core.shards.iter().map(|shard| shard.lock().timer_count()).sum();
    assert!(heap_total <= 4 * (2 + 1024), "heap holds {heap_total} entries");
}

#[test]
fn head_granted_after_its_wait_timed_out_is_bound_to_the_connection_it_waited_on() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), false, at(0)));
    let b = blocked(core.wait(request("k", "b", 5, None), at(0)));
    assert_eq!(core.wait_timed_out(b, at(10)), None);
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(20)), UnlockOutcome::HandedOff);
    assert!(core.bound_to_conn(b"k", conn(5)));
    core.release_connection(conn(5), [&b"k"[..]], at(30));
    assert_eq!(core.info(b"k", at(30)).map(|info| info.state), None, "released and forgotten");
}

#[test]
fn owner_waiting_on_two_connections_is_bound_to_the_newest() {
    let core = core();
    let (grant, _older, mut newer, mut next) = grant_to_an_owner_on_two_connections(&core);
    assert_eq!(granted(&mut newer), Some(grant), "both calls of the owner are told");
    core.release_connection(conn(2), [&b"k"[..]], at(4));
    assert_eq!(granted(&mut next), None, "the older connection is not the binding one");
    core.release_connection(conn(3), [&b"k"[..]], at(5));
    assert!(granted(&mut next).is_some());
}

/// Issue 9: an expiry processed late (a starved expiry driver, a paused process) handed off as of
/// the moment the lease ended, so the lock ran down the line and every waiter whose lease had
/// "already ended" was sent ACQUIRED too. Only the head may be woken, its lease counting from the
/// hand-off.
#[test]
fn late_expiry_wakes_only_the_head_with_a_lease_from_the_hand_off() {
    let core = core();
    acquired(core.try_lock(request("k", "h", 1, Some(100)), false, at(0)));
    let mut a = blocked(core.wait(request("k", "a", 2, Some(100)), at(0)));
    let mut b = blocked(core.wait(request("k", "b", 3, Some(100)), at(0)));
    let mut c = blocked(core.wait(request("k", "c", 4, Some(100)), at(0)));
    core.expire(at(350));
    let token = granted(&mut a).expect("the head is granted");
    assert_eq!(granted(&mut b), None, "only the head is woken");
    assert_eq!(granted(&mut c), None, "only the head is woken");
    let holder = core.info(b"k", at(350)).unwrap().holder.unwrap();
    assert_eq!((holder.owner.as_ref(), holder.token, holder.lease_remaining_ms), (&b"a"[..], token, 100));
    assert_eq!(core.stats().lease_expiries, 1);
}

/// At a late hand-off a place that is not blocked counts only if its own lease has not run out by
/// then; a blocked waiter counts however late it is.
#[test]
fn late_expiry_skips_places_that_ran_out_meanwhile_but_not_blocked_waiters() {
    let core = core();
    acquired(core.try_lock(request("k", "h", 1, Some(100)), false, at(0)));
    assert_eq!(core.try_lock(request("k", "q", 2, Some(150)), false, at(0)), TryOutcome::Queued { position: 1 });
    let mut w = blocked(core.wait(request("k", "w", 3, Some(100)), at(0)));
    core.expire(at(200));
    assert!(granted(&mut w).is_some(), "the blocked waiter is granted");
    let info = core.info(b"k", at(200)).unwrap();
    assert_eq!(info.holder.map(|holder| holder.owner), Some(Arc::from(&b"w"[..])));
    assert!(info.queue.is_empty(), "q's place ran out at t=150");
}

/// Issue 9: LOCK.TRY NOQUEUE answered BUSY and kept the owner's place without restarting its
/// lease, so an owner polling that way dropped out after its PX. Like every TRY it renews the
/// place, and its connection becomes the one a grant binds to.
#[test]
fn noqueue_poll_renews_the_place() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, Some(10_000)), false, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), false, at(0)), TryOutcome::Queued { position: 1 });
    let busy = core.try_lock(request("k", "b", 3, None), true, at(900));
    assert_eq!(busy, TryOutcome::Busy { holder: Arc::from(&b"a"[..]) });
    assert!(core.bound_to_conn(b"k", conn(3)), "a grant would bind to the polling connection");
    core.expire(at(1_500));
    assert_eq!(core.info(b"k", at(1_500)).unwrap().queue, vec![Arc::from(&b"b"[..])], "leased until t=1900");
    core.expire(at(1_900));
    assert!(core.info(b"k", at(1_900)).unwrap().queue.is_empty());
}

/// Issue 9: a LOCK.WAIT that timed out keeps the owner's place, but the place outlived its
/// connection: when the holder then failed, the departed owner became the holder, bound to a
/// closed connection, and everyone behind it waited out its whole lease.
#[test]
fn a_departed_waiter_is_never_granted() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), false, at(0)));
    let departed = blocked(core.wait(request("k", "d", 2, None), at(0)));
    let mut next = blocked(core.wait(request("k", "n", 3, None), at(0)));
    assert_eq!(core.wait_timed_out(departed, at(10)), None);
    core.release_connection(conn(2), [&b"k"[..]], at(20));
    assert_eq!(core.unlock(b"k", b"h", token, failure(), at(30)), UnlockOutcome::HandedOff);
    assert!(granted(&mut next).is_some(), "the waiter behind the departed owner is granted");
}

/// The place of an owner still blocked on another connection stays, and moves to that connection.
#[test]
fn a_closed_connection_keeps_the_place_of_an_owner_blocked_elsewhere() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), false, at(0)));
    let waiting = blocked(core.wait(request("k", "o", 3, None), at(0)));
    assert_eq!(core.try_lock(request("k", "o", 2, None), false, at(5)), TryOutcome::Queued { position: 1 });
    core.release_connection(conn(2), [&b"k"[..]], at(10));
    assert_eq!(core.info(b"k", at(10)).unwrap().queue, vec![Arc::from(&b"o"[..])]);
    assert_eq!(core.wait_timed_out(waiting, at(20)), None);
    assert_eq!(core.unlock(b"k", b"h", token, failure(), at(30)), UnlockOutcome::HandedOff);
    assert!(core.bound_to_conn(b"k", conn(3)), "the grant binds to the connection still open");
    core.release_connection(conn(3), [&b"k"[..]], at(40));
    assert_eq!(core.info(b"k", at(40)), None, "released when that one closes too");
}

/// `o` waits on connection 3, then renews its place with a TRY on connection 2; connection 3
/// closing takes its WAIT, not the place connection 2 now answers for.
#[test]
fn an_abandoned_wait_leaves_a_place_renewed_elsewhere() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), false, at(0)));
    let waiting = blocked(core.wait(request("k", "o", 3, None), at(0)));
    assert_eq!(core.try_lock(request("k", "o", 2, None), false, at(5)), TryOutcome::Queued { position: 1 });
    core.wait_abandoned(waiting, at(10));
    core.release_connection(conn(3), [&b"k"[..]], at(10));
    assert_eq!(core.info(b"k", at(10)).unwrap().queue, vec![Arc::from(&b"o"[..])]);
    assert_eq!(core.unlock(b"k", b"h", token, failure(), at(20)), UnlockOutcome::HandedOff);
    assert!(core.bound_to_conn(b"k", conn(2)), "the grant binds to the connection that renewed the place");
}

#[test]
fn release_on_disconnect_off_keeps_the_places_of_a_closed_connection() {
    let core = core_with(false);
    acquired(core.try_lock(request("k", "h", 1, None), false, at(0)));
    assert_eq!(core.try_lock(request("k", "q", 2, None), false, at(0)), TryOutcome::Queued { position: 1 });
    core.release_connection(conn(2), [&b"k"[..]], at(10));
    assert_eq!(core.info(b"k", at(10)).unwrap().queue, vec![Arc::from(&b"q"[..])]);
}

/// Owner `o` blocked on two connections, 2 (older) and 3 (newer), and `n` behind it; the holder
/// fails. One grant answers both WAITs and binds to connection 3.
fn grant_to_an_owner_on_two_connections(core: &LockCore) -> (u64, WaitTicket, WaitTicket, WaitTicket) {
    let token = acquired(core.try_lock(request("k", "h", 1, None), false, at(0)));
    let mut older = blocked(core.wait(request("k", "o", 2, None), at(0)));
    let newer = blocked(core.wait(request("k", "o", 3, None), at(1)));
    let next = blocked(core.wait(request("k", "n", 4, None), at(2)));
    assert_eq!(core.unlock(b"k", b"h", token, failure(), at(3)), UnlockOutcome::HandedOff);
    let grant = granted(&mut older).expect("the older WAIT is told ACQUIRED");
    (grant, older, newer, next)
}

/// Issue 9: the client closed connection 3 as the grant arrived; connection 2 replied ACQUIRED.
/// The close of connection 3 released the lock as "holder connection closed" and handed it to
/// `n`: two holders. The binding moves to connection 2, which was sent the same grant.
#[test]
fn closing_the_bound_connection_moves_the_grant_to_another_that_was_sent_it() {
    let core = core();
    let (grant, _older, newer, mut next) = grant_to_an_owner_on_two_connections(&core);
    drop(newer);
    core.release_connection(conn(3), [&b"k"[..]], at(4));
    let holder = core.info(b"k", at(4)).unwrap().holder.unwrap();
    assert_eq!((holder.owner.as_ref(), holder.token), (&b"o"[..], grant));
    assert_eq!(granted(&mut next), None, "n is not a second holder");
    assert!(core.bound_to_conn(b"k", conn(2)));
    core.release_connection(conn(2), [&b"k"[..]], at(5));
    assert!(granted(&mut next).is_some(), "the last connection that knew of the grant closed");
}

/// A connection that was sent the grant, read it and closed no longer counts: when the grant then
/// fails to reach the bound connection, the lock passes on instead of binding to a closed one.
#[test]
fn a_closed_connection_that_read_the_grant_is_not_a_fallback() {
    let core = core();
    let (grant, older, newer, mut next) = grant_to_an_owner_on_two_connections(&core);
    drop(older);
    core.release_connection(conn(2), [&b"k"[..]], at(4));
    assert_eq!(granted(&mut next), None, "connection 3 still holds it");
    drop(newer);
    core.grant_undelivered(b"k", grant, conn(3), at(5));
    assert!(granted(&mut next).is_some());
    let info = core.info(b"k", at(5)).unwrap();
    assert_eq!(info.last_failure.as_deref(), Some(&b"waiter connection closed before the grant reached it"[..]));
}

/// The connection task took the grant out of its channel but the client had gone: the reply was
/// never written, and the failure says so.
#[test]
fn a_grant_that_never_reached_its_client_passes_on() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), false, at(0)));
    let mut waiter = blocked(core.wait(request("k", "w", 2, None), at(0)));
    let mut next = blocked(core.wait(request("k", "n", 3, None), at(0)));
    core.unlock(b"k", b"h", token, failure(), at(1));
    let grant = granted(&mut waiter).expect("w is sent the grant");
    core.grant_undelivered(b"k", grant, conn(2), at(2));
    assert!(granted(&mut next).is_some());
    let info = core.info(b"k", at(2)).unwrap();
    assert_eq!(info.last_failure.as_deref(), Some(&b"waiter connection closed before the grant reached it"[..]));
    core.grant_undelivered(b"k", grant, conn(2), at(3));
    let holder = core.info(b"k", at(3)).unwrap().holder.unwrap();
    assert_eq!(holder.owner.as_ref(), b"n", "a stale grant changes nothing");
}

/// Once the owner renews or extends on a connection of its choosing, the lock is bound there
/// alone: closing it releases the lock, whatever older WAITs were sent the grant.
#[test]
fn an_extend_binds_the_lock_to_its_connection_alone() {
    let core = core();
    let (grant, _older, _newer, mut next) = grant_to_an_owner_on_two_connections(&core);
    assert_eq!(core.extend(b"k", b"o", grant, 1_000, conn(5), at(4)), ExtendOutcome::Extended);
    core.release_connection(conn(5), [&b"k"[..]], at(5));
    assert!(granted(&mut next).is_some());
}
