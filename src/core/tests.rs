use super::testing::{acquired, at, blocked, conn, counting_waker, granted, release_connection, request, wait};
use super::*;

fn core() -> LockCore {
    core_with(true)
}

fn core_with(release_on_disconnect: bool) -> LockCore {
    core_of(release_on_disconnect, 4)
}

/// Every key in one shard, for tests that count what one shard-lock acquisition does.
fn one_shard_core() -> LockCore {
    core_of(true, 1)
}

fn core_of(release_on_disconnect: bool, shards: usize) -> LockCore {
    core_queueing(release_on_disconnect, shards, 48 << 20)
}

fn core_queueing(release_on_disconnect: bool, shards: usize, max_queue_bytes: usize) -> LockCore {
    let settings =
        CoreSettings { default_lease_ms: 1_000, max_lease_ms: 60_000, release_on_disconnect, shards, max_queue_bytes };
    LockCore::new(settings, 100)
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
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(500)), TryOutcome::Acquired { token });
    // The retry renewed the lease: 1000 ms from t=500, so still held at t=1200.
    assert_eq!(core.info(b"k", at(1_200), usize::MAX).unwrap().holder.unwrap().owner.as_ref(), b"a");
}

#[test]
fn others_queue_in_order_and_a_repeat_keeps_its_place() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    assert_eq!(core.try_lock(request("k", "c", 3, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 2 });
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    let info = core.info(b"k", at(0), usize::MAX).unwrap();
    assert_eq!(info.queue, vec![Arc::from(&b"b"[..]), Arc::from(&b"c"[..])]);
    assert_eq!(info.state, LockStateName::Held);
}

#[test]
fn a_full_queue_turns_newcomers_away_and_keeps_its_members() {
    // Room for two places of one-byte owners.
    let core = core_queueing(true, 4, 2 * (1 + queue::PLACE_BYTES));
    acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    assert!(matches!(wait(&core, request("k", "c", 3, None), at(0)), WaitStart::Blocked(_)));
    assert_eq!(core.try_lock(request("k", "d", 4, None), IfHeld::Queue, at(0)), TryOutcome::QueueFull);
    assert!(matches!(wait(&core, request("k", "d", 4, None), at(0)), WaitStart::QueueFull));
    // Who has a place keeps it, renewing it by TRY or WAIT; other keys have queues of their own.
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(10)), TryOutcome::Queued { position: 1 });
    assert!(matches!(wait(&core, request("k", "b", 2, None), at(10)), WaitStart::Blocked(_)));
    acquired(core.try_lock(request("other", "x", 5, None), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("other", "d", 4, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    // A place given up makes room.
    assert!(core.cancel(b"k", b"b", at(20)));
    assert_eq!(core.try_lock(request("k", "d", 4, None), IfHeld::Queue, at(20)), TryOutcome::Queued { position: 2 });
    let info = core.info(b"k", at(20), usize::MAX).unwrap();
    assert_eq!(info.queue, vec![Arc::from(&b"c"[..]), Arc::from(&b"d"[..])]);
}

#[test]
fn noqueue_reports_the_holder_and_queues_nothing() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(
        core.try_lock(request("k", "b", 2, None), IfHeld::NoQueue, at(0)),
        TryOutcome::Busy { holder: Arc::from(&b"a"[..]) }
    );
    assert!(core.info(b"k", at(0), usize::MAX).unwrap().queue.is_empty());
}

#[test]
fn failure_hands_off_to_the_head_only_with_a_larger_token() {
    let core = core();
    let first = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let mut b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let mut c = blocked(wait(&core, request("k", "c", 3, None), at(0)));
    assert_eq!(core.unlock(b"k", b"a", first, failure(), at(10)), UnlockOutcome::HandedOff);
    let second = match b.try_answer() {
        Some(WaitOutcome::Acquired { token }) => token,
        other => panic!("head not granted: {other:?}"),
    };
    assert!(second > first);
    assert!(c.try_answer().is_none(), "only the head is woken");
    let info = core.info(b"k", at(10), usize::MAX).unwrap();
    assert_eq!(info.holder.unwrap().token, second);
    assert_eq!(info.last_failure.as_deref(), Some(&b"disk full"[..]));
    assert_eq!(core.unlock(b"k", b"b", second, failure(), at(20)), UnlockOutcome::HandedOff);
    assert!(matches!(c.try_answer(), Some(WaitOutcome::Acquired { token }) if token > second));
}

#[test]
fn failure_with_nobody_waiting_frees_the_key() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(0)), UnlockOutcome::Released);
    assert_eq!(core.key_count(), 0);
    // A retry (its reply was lost) gets the same answer; another owner's guess does not.
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(0)), UnlockOutcome::Released);
    assert_eq!(core.unlock(b"k", b"b", token, failure(), at(0)), UnlockOutcome::NotLocked);
}

#[test]
fn a_retried_unlock_is_answered_as_the_first_was_while_it_is_among_the_latest() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0));
    assert_eq!(
        core.unlock(b"k", b"a", token, success(None, None), at(1)),
        UnlockOutcome::Succeeded { waiters_told: 1 }
    );
    let next = acquired(core.try_lock(request("k", "c", 3, None), IfHeld::Queue, at(2)));
    assert_eq!(
        core.unlock(b"k", b"a", token, success(None, None), at(3)),
        UnlockOutcome::Succeeded { waiters_told: 1 }
    );
    assert_eq!(core.unlock(b"k", b"a", next, success(None, None), at(3)), UnlockOutcome::NotHolder);
    for i in 0..unlock_memo::REMEMBERED_UNLOCKS * 4 {
        let key = format!("other{i}");
        let token = acquired(core.try_lock(request(&key, "x", 4, None), IfHeld::Queue, at(4)));
        core.unlock(key.as_bytes(), b"x", token, failure(), at(4));
    }
    assert_eq!(core.unlock(b"k", b"a", token, success(None, None), at(5)), UnlockOutcome::NotHolder);
}

#[test]
fn success_tells_every_blocked_waiter_done_with_the_result() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let mut tickets: Vec<_> =
        (0..5).map(|i| blocked(wait(&core, request("k", &format!("w{i}"), 10 + i, None), at(0)))).collect();
    assert_eq!(
        core.unlock(b"k", b"a", token, success(Some("layer ok"), None), at(5)),
        UnlockOutcome::Succeeded { waiters_told: 5 }
    );
    for ticket in &mut tickets {
        match ticket.try_answer() {
            Some(WaitOutcome::Done(completion)) => {
                assert_eq!(completion.finisher.as_ref(), b"a");
                assert_eq!(completion.result.as_deref(), Some(&b"layer ok"[..]));
            }
            other => panic!("expected DONE, got {other:?}"),
        }
    }
    // Without KEEP a newcomer starts a fresh round.
    assert!(
        matches!(core.try_lock(request("k", "late", 99, None), IfHeld::Queue, at(6)), TryOutcome::Acquired { token: t } if t > token)
    );
}

/// Numbers the batches of changes it is handed, as the journal numbers its records.
#[derive(Default)]
struct NumberingSink(std::sync::atomic::AtomicU64);

impl ChangeSink for NumberingSink {
    fn wall_ms_at_zero(&self) -> u64 {
        0
    }

    fn record(&self, changes: &mut change_codec::ChangeEncoder) -> Option<u64> {
        changes.parts().map(|_| self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1).last()
    }
}

#[test]
fn answers_carry_where_the_step_that_sent_them_was_recorded_and_no_later_position() {
    let core = core();
    let sink = Arc::new(NumberingSink::default());
    core.attach_sink(Arc::clone(&sink) as Arc<dyn ChangeSink>);
    let recorded = || sink.0.load(std::sync::atomic::Ordering::SeqCst);
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let mut tickets: Vec<_> =
        (0..3).map(|i| blocked(wait(&core, request("k", &format!("w{i}"), 10 + i, None), at(0)))).collect();
    let before_unlock = recorded();
    core.unlock(b"k", b"a", token, success(None, None), at(5));
    let unlock_recorded_at = recorded();
    assert!(unlock_recorded_at > before_unlock, "the SUCCESS was recorded");
    for (i, ticket) in tickets.iter_mut().enumerate() {
        let Some(Letter::Answer(answer)) = ticket.take_letter() else { panic!("w{i} was not answered") };
        assert!(matches!(answer.outcome, WaitOutcome::Done(_)));
        assert_eq!(answer.recorded_at.position(), Some(unlock_recorded_at), "w{i}");
        // Each payment is recorded after the SUCCESS: later waiters' answers do not wait for it.
        assert!(core.pay_done(b"k", format!("w{i}").as_bytes(), token, at(6)).is_some());
        assert!(recorded() > unlock_recorded_at);
    }

    // A hand-off's grant likewise.
    let holder = acquired(core.try_lock(request("h", "a", 1, None), IfHeld::Queue, at(10)));
    let mut next = blocked(wait(&core, request("h", "b", 2, None), at(10)));
    core.unlock(b"h", b"a", holder, failure(), at(11));
    let Some(Letter::Answer(grant)) = next.take_letter() else { panic!("b was not granted") };
    assert!(matches!(grant.outcome, WaitOutcome::Acquired { .. }));
    assert_eq!(grant.recorded_at.position(), Some(recorded()));

    // Without a journal nothing is recorded, and an answer says so.
    let unjournaled = core_with(true);
    let holder = acquired(unjournaled.try_lock(request("h", "a", 1, None), IfHeld::Queue, at(0)));
    let mut next = blocked(wait(&unjournaled, request("h", "b", 2, None), at(0)));
    unjournaled.unlock(b"h", b"a", holder, failure(), at(1));
    let Some(Letter::Answer(grant)) = next.take_letter() else { panic!("b was not granted") };
    assert_eq!(grant.recorded_at.position(), None);
}

#[test]
fn a_blocked_waiter_answered_done_is_still_owed_it_in_case_the_answer_was_lost() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let lease_ms = 1000;
    let mut ticket = blocked(wait(&core, request("k", "w", 2, Some(lease_ms)), at(0)));
    core.unlock(b"k", b"a", token, success(Some("layer ok"), None), at(5));
    assert!(matches!(ticket.try_answer(), Some(WaitOutcome::Done(_))));
    assert_eq!(core.owed_dones(b"k"), vec![Arc::<[u8]>::from(&b"w"[..])]);
    // The owner never read its answer (its connection or the server went) and asks again.
    match core.try_lock(request("k", "w", 2, Some(lease_ms)), IfHeld::Queue, at(6)) {
        TryOutcome::Done(completion) => assert_eq!(completion.result.as_deref(), Some(&b"layer ok"[..])),
        other => panic!("expected DONE, got {other:?}"),
    }
    assert!(
        matches!(
            core.try_lock(request("k", "w", 2, Some(lease_ms)), IfHeld::Queue, at(7)),
            TryOutcome::Acquired { .. }
        ),
        "the owed DONE is paid once"
    );
    // Owed for the place's lease from the SUCCESS, as if the owner had stopped waiting then.
    let token = acquired(core.try_lock(request("k2", "a", 1, None), IfHeld::Queue, at(7)));
    let _ticket = blocked(wait(&core, request("k2", "w", 2, Some(lease_ms)), at(7)));
    core.unlock(b"k2", b"a", token, success(None, None), at(10));
    core.expire(at(9 + lease_ms));
    assert_eq!(core.owed_dones(b"k2").len(), 1);
    core.expire(at(10 + lease_ms));
    assert!(core.owed_dones(b"k2").is_empty());
    assert_eq!(core.key_count(), 0, "every lease and owed DONE ran out");
}

#[test]
fn a_done_paid_is_owed_no_more_but_a_later_rounds_still_is() {
    let core = core();
    let round = |core: &LockCore, now: u64| {
        let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(now)));
        let mut ticket = blocked(wait(core, request("k", "w", 2, None), at(now)));
        core.unlock(b"k", b"a", token, success(None, None), at(now));
        match ticket.try_answer() {
            Some(WaitOutcome::Done(completion)) => completion.token,
            other => panic!("expected DONE, got {other:?}"),
        }
    };
    let first = round(&core, 0);
    assert!(core.pay_done(b"k", b"w", first, at(1)).is_some());
    assert!(core.owed_dones(b"k").is_empty());
    assert_eq!(core.key_count(), 0);
    let second = round(&core, 2);
    // A late payment of the first DONE does not pay the second.
    assert!(core.pay_done(b"k", b"w", first, at(3)).is_none());
    assert_eq!(core.owed_dones(b"k").len(), 1);
    assert!(core.pay_done(b"k", b"w", second, at(3)).is_some());
    assert!(core.owed_dones(b"k").is_empty());
    assert!(matches!(core.try_lock(request("k", "w", 2, None), IfHeld::Queue, at(4)), TryOutcome::Acquired { .. }));
}

#[test]
fn a_done_whose_write_failed_is_owed_again_unless_the_owner_called_since() {
    let core = core();
    let lease_ms = 2;
    let round = |core: &LockCore, waiter: &str, now: u64| {
        let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(now)));
        let mut ticket = blocked(wait(core, request("k", waiter, 2, Some(lease_ms)), at(now)));
        core.unlock(b"k", b"a", token, success(None, None), at(now));
        match ticket.try_answer() {
            Some(WaitOutcome::Done(completion)) => completion.token,
            other => panic!("expected DONE, got {other:?}"),
        }
    };
    // The key is forgotten once paid, and made again to owe it.
    let first = round(&core, "w", 0);
    let unwritten = core.pay_done(b"k", b"w", first, at(0)).expect("owed");
    assert_eq!(core.key_count(), 0);
    core.done_unwritten(b"k", unwritten, at(1));
    match core.try_lock(request("k", "w", 2, None), IfHeld::Queue, at(1)) {
        TryOutcome::Done(completion) => assert_eq!(completion.token, first),
        other => panic!("expected the DONE owed again, got {other:?}"),
    }
    // Not once the owner has called again and was granted the lock.
    let second = round(&core, "x", 2);
    let unwritten = core.pay_done(b"k", b"x", second, at(2)).expect("owed");
    let token = acquired(core.try_lock(request("k", "x", 2, None), IfHeld::Queue, at(2)));
    core.done_unwritten(b"k", unwritten, at(3));
    assert!(core.owed_dones(b"k").is_empty());
    core.unlock(b"k", b"x", token, failure(), at(3));
    // Nor once its place would have run out.
    let third = round(&core, "y", 4);
    let unwritten = core.pay_done(b"k", b"y", third, at(4)).expect("owed");
    core.done_unwritten(b"k", unwritten, at(4 + lease_ms));
    assert_eq!(core.key_count(), 0);
}

#[test]
fn queued_owner_not_blocked_learns_done_instead_of_a_grant() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    assert_eq!(
        core.unlock(b"k", b"a", token, success(None, None), at(10)),
        UnlockOutcome::Succeeded { waiters_told: 1 }
    );
    // Someone else grabs the free lock before b comes back...
    acquired(core.try_lock(request("k", "c", 3, None), IfHeld::Queue, at(20)));
    // ...b still learns DONE, once.
    assert!(
        matches!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(30)), TryOutcome::Done(c) if c.finisher.as_ref() == b"a")
    );
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(31)), TryOutcome::Queued { position: 1 });
}

#[test]
fn a_done_paid_by_an_answer_at_once_is_owed_again_if_that_answer_is_not_written() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0));
    core.try_lock(request("k", "c", 3, None), IfHeld::Queue, at(0));
    core.unlock(b"k", b"a", token, success(None, None), at(10));
    // The answers that pay a debt say so; one remembered for everyone (KEEP) pays nothing.
    let Answered { outcome: TryOutcome::Done(completion), paid: Some(paid) } =
        core.try_lock_answered(request("k", "b", 2, None), IfHeld::Queue, at(20))
    else {
        panic!("expected b's DONE to pay what it was owed");
    };
    assert_eq!(completion.token, token);
    assert!(!core.owed_dones(b"k").iter().any(|owner| owner.as_ref() == b"b"));
    core.done_unwritten(b"k", paid, at(21));
    assert!(matches!(core.try_lock(request("k", "b", 4, None), IfHeld::Queue, at(22)), TryOutcome::Done(_)));
    // WAIT's answer at once is the same.
    let WaitStart::Ready(Answered { outcome: WaitOutcome::Done(_), paid: Some(paid) }) =
        wait(&core, request("k", "c", 3, None), at(30))
    else {
        panic!("expected c's DONE to pay what it was owed");
    };
    core.done_unwritten(b"k", paid, at(31));
    assert!(matches!(
        wait(&core, request("k", "c", 5, None), at(32)),
        WaitStart::Ready(Answered { outcome: WaitOutcome::Done(_), .. })
    ));
    // Paid for good, the next call starts a new round.
    assert!(matches!(core.try_lock(request("k", "c", 5, None), IfHeld::Queue, at(33)), TryOutcome::Acquired { .. }));
}

#[test]
fn owed_done_lapses_with_the_queue_lease() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0));
    core.unlock(b"k", b"a", token, success(None, None), at(10));
    // b's place was leased until t=1000.
    assert!(matches!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(1_001)), TryOutcome::Acquired { .. }));
}

#[test]
fn keep_remembers_the_completion_for_late_arrivals() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    core.unlock(b"k", b"a", token, success(Some("r"), Some(500)), at(0));
    assert!(matches!(core.try_lock(request("k", "late", 2, None), IfHeld::Queue, at(100)), TryOutcome::Done(_)));
    assert!(matches!(
        wait(&core, request("k", "late2", 3, None), at(200)),
        WaitStart::Ready(Answered { outcome: WaitOutcome::Done(_), paid: None })
    ));
    assert_eq!(core.info(b"k", at(200), usize::MAX).unwrap().state, LockStateName::Done);
    assert_eq!(core.unlock(b"k", b"a", token + 1, failure(), at(200)), UnlockOutcome::NotLocked);
    assert!(matches!(
        core.try_lock(request("k", "late", 2, None), IfHeld::Queue, at(501)),
        TryOutcome::Acquired { .. }
    ));
}

#[test]
fn timed_out_wait_keeps_its_place_and_can_wait_again() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    blocked(wait(&core, request("k", "c", 3, None), at(0)));
    assert_eq!(core.wait_timed_out(b, b"k", at(100)), None);
    assert_eq!(core.info(b"k", at(100), usize::MAX).unwrap().queue[0].as_ref(), b"b");
    let mut b = blocked(wait(&core, request("k", "b", 2, None), at(150)));
    core.unlock(b"k", b"a", token, failure(), at(200));
    assert!(matches!(b.try_answer(), Some(WaitOutcome::Acquired { .. })));
}

#[test]
fn head_that_is_not_blocked_is_granted_and_told_on_its_next_call() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(10)), UnlockOutcome::HandedOff);
    assert!(
        matches!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(20)), TryOutcome::Acquired { token: t } if t > token)
    );
}

#[test]
fn timeout_racing_a_grant_returns_the_grant() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    core.unlock(b"k", b"a", token, failure(), at(10));
    // The grant was sent before the timeout was processed: the timeout must yield it.
    assert!(matches!(core.wait_timed_out(b, b"k", at(10)), Some(Answer { outcome: WaitOutcome::Acquired { .. }, .. })));
    assert_eq!(core.info(b"k", at(10), usize::MAX).unwrap().holder.unwrap().owner.as_ref(), b"b");
}

#[test]
fn abandoned_waiter_is_never_granted() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let mut c = blocked(wait(&core, request("k", "c", 3, None), at(0)));
    core.wait_abandoned(b, b"k", at(5));
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(10)), UnlockOutcome::HandedOff);
    assert!(matches!(c.try_answer(), Some(WaitOutcome::Acquired { .. })));
}

#[test]
fn grant_sent_to_a_waiter_that_then_disconnects_passes_on() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let mut c = blocked(wait(&core, request("k", "c", 3, None), at(0)));
    core.unlock(b"k", b"a", token, failure(), at(10));
    core.wait_abandoned(b, b"k", at(11));
    assert!(matches!(c.try_answer(), Some(WaitOutcome::Acquired { .. })));
    assert_eq!(core.info(b"k", at(11), usize::MAX).unwrap().holder.unwrap().owner.as_ref(), b"c");
}

/// Which thread serves a fake writer's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServedBy {
    CallingThread,
    AnotherThread,
}

/// Says it wrote `writes` of each answer, as a socket with room (or a full one) would, for a
/// connection `served_by` serves.
#[derive(Debug)]
struct FakeWriter {
    writes: Written,
    served_by: ServedBy,
}

impl AnswerWriter for FakeWriter {
    fn write_now(&self, _outcome: &WaitOutcome) -> Written {
        self.writes
    }

    fn serves_calling_thread(&self) -> bool {
        self.served_by == ServedBy::CallingThread
    }
}

fn writer(writes: Written, served_by: ServedBy) -> Arc<FakeWriter> {
    Arc::new(FakeWriter { writes, served_by })
}

/// A socket with room, on this thread's connection.
fn takes_all() -> Arc<FakeWriter> {
    writer(Written::Whole, ServedBy::CallingThread)
}

#[test]
fn a_failure_reports_the_wait_it_handed_the_lock_to_and_nothing_else_does() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let mut b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let mut c = blocked(wait(&core, request("k", "c", 3, None), at(0)));
    b.allow_direct(takes_all());
    let (outcome, handed_to) = core.unlock_handing_off(b"k", b"a", token, failure(), at(10));
    assert_eq!(outcome, UnlockOutcome::HandedOff);
    assert_eq!(handed_to.write_directly(), 1, "b's grant written whole");
    let Some(Letter::Answer(answer)) = b.take_letter() else { panic!("b was answered") };
    assert_eq!(answer.written, Written::Whole, "b's task finds its reply written");
    let b_token = granted_token(&answer.outcome);

    c.allow_direct(takes_all());
    let (outcome, handed_to) = core.unlock_handing_off(b"k", b"b", b_token, success(None, None), at(20));
    assert_eq!(outcome, UnlockOutcome::Succeeded { waiters_told: 1 });
    assert_eq!(handed_to.count(), 0, "a DONE is no hand-off");
    assert!(matches!(c.take_letter(), Some(Letter::Answer(Answer { written: Written::Nothing, .. }))));
}

/// The WAIT's task is left asleep while the unlocking connection writes its grant, and woken
/// once that connection is done with the hand-off, whether it wrote the grant or not.
#[test]
fn a_waiter_handed_the_lock_is_woken_when_the_hand_off_is_dropped() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    b.allow_direct(takes_all());
    let (wakes, waker) = counting_waker();
    let woken = || wakes.load(std::sync::atomic::Ordering::SeqCst);
    let mut cx = std::task::Context::from_waker(&waker);
    let mut letter = Box::pin(b.letter());
    assert!(letter.as_mut().poll(&mut cx).is_pending());
    let (_, handed_to) = core.unlock_handing_off(b"k", b"a", token, failure(), at(10));
    assert_eq!(woken(), 0, "asleep while its grant is written for it");
    assert_eq!(handed_to.write_directly(), 1);
    assert_eq!(woken(), 0);
    drop(handed_to);
    assert_eq!(woken(), 1);
    let std::task::Poll::Ready(Letter::Answer(answer)) = letter.as_mut().poll(&mut cx) else {
        panic!("b was answered")
    };
    drop(letter);

    // Never written (its record failed, say): woken all the same.
    let c = blocked(wait(&core, request("k", "c", 3, None), at(11)));
    c.allow_direct(takes_all());
    let mut letter = Box::pin(c.letter());
    assert!(letter.as_mut().poll(&mut cx).is_pending());
    let (_, handed_to) = core.unlock_handing_off(b"k", b"b", granted_token(&answer.outcome), failure(), at(12));
    assert_eq!(woken(), 1);
    drop(handed_to);
    assert_eq!(woken(), 2);
    assert!(matches!(
        letter.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Letter::Answer(Answer { written: Written::Nothing, .. }))
    ));
}

/// A failed release is logged once the unlocking connection is done with the hand-off (it writes
/// the grant first), and is logged all the same by a plain UNLOCK.
#[test]
fn a_failure_is_logged_when_its_hand_off_is_dropped() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let _b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let logs = events::captured_logs(false, tracing::Level::INFO, || {
        let (outcome, handed_to) = core.unlock_handing_off(b"k", b"a", token, failure(), at(10));
        assert_eq!(outcome, UnlockOutcome::HandedOff);
        let before_drop = events::captured_logs(false, tracing::Level::INFO, || drop(handed_to));
        assert!(before_drop.contains("lock released as failed key=k owner=a"), "{before_drop}");
    });
    assert!(logs.is_empty(), "nothing logged before the hand-off was dropped: {logs}");

    let token = acquired(core.try_lock(request("j", "a", 1, None), IfHeld::Queue, at(20)));
    let logs = events::captured_logs(false, tracing::Level::INFO, || {
        assert_eq!(core.unlock(b"j", b"a", token, failure(), at(21)), UnlockOutcome::Released);
    });
    assert!(logs.contains("lock released as failed key=j owner=a"), "{logs}");
}

/// A SUCCESS's DONEs for waiters this thread serves are left to its connection to write: each is
/// paid as it is written, the waiters' tasks stay asleep until then and find their replies
/// written. A waiter another thread serves is woken at once to write its own.
#[test]
fn a_success_leaves_the_dones_of_its_own_threads_waiters_to_be_written_directly() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let mut c = blocked(wait(&core, request("k", "c", 3, None), at(0)));
    let mut d = blocked(wait(&core, request("k", "d", 4, None), at(0)));
    b.allow_direct(takes_all());
    c.allow_direct(takes_all());
    d.allow_direct(writer(Written::Whole, ServedBy::AnotherThread));
    let (wakes, waker) = counting_waker();
    let woken = || wakes.load(std::sync::atomic::Ordering::SeqCst);
    let mut cx = std::task::Context::from_waker(&waker);
    let mut b_letter = Box::pin(b.letter());
    assert!(b_letter.as_mut().poll(&mut cx).is_pending());

    let (outcome, handed_to) = core.unlock_handing_off(b"k", b"a", token, success(Some("ok"), None), at(10));
    assert_eq!(outcome, UnlockOutcome::Succeeded { waiters_told: 3 });
    assert!(handed_to.has_dones());
    assert_eq!(woken(), 0, "b sleeps while its DONE is written for it");
    assert_eq!(core.owed_dones(b"k").len(), 3, "owed until written");
    assert!(
        matches!(d.take_letter(), Some(Letter::Answer(Answer { written: Written::Nothing, paid: None, .. }))),
        "d's own loop writes d's DONE"
    );

    assert_eq!(core.write_dones_directly(&handed_to, at(11)), 2);
    assert_eq!(core.owed_dones(b"k"), vec![Arc::<[u8]>::from(&b"d"[..])], "b and c paid as written");
    drop(handed_to);
    assert_eq!(woken(), 1);
    assert!(matches!(
        b_letter.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Letter::Answer(Answer { written: Written::Whole, paid: None, .. }))
    ));
    assert!(matches!(c.take_letter(), Some(Letter::Answer(Answer { written: Written::Whole, paid: None, .. }))));
    assert!(
        matches!(core.try_lock(request("k", "c", 3, None), IfHeld::Queue, at(12)), TryOutcome::Acquired { .. }),
        "c was told DONE once, not again"
    );
}

/// Two threads writing one long line's DONEs (as the unlocking loop and the spare core's thread
/// do) share them: together they pay and write each once, and the WAITs sleep until the
/// `HandedTo` is dropped.
#[test]
fn dones_shared_by_two_threads_are_each_paid_written_and_woken_once() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    // More than two takes' worth, so that both threads can find some left.
    let owners: Vec<String> = (0..3 * outcome::DONES_TAKEN_AT_ONCE + 5).map(|index| format!("w{index}")).collect();
    let tickets: Vec<WaitTicket> = owners
        .iter()
        .zip(2..)
        .map(|(owner, conn)| blocked(wait(&core, request("k", owner, conn, None), at(0))))
        .collect();
    tickets.iter().for_each(|ticket| ticket.allow_direct(takes_all()));
    let (wakes, waker) = counting_waker();
    let woken = || wakes.load(std::sync::atomic::Ordering::SeqCst);
    let mut cx = std::task::Context::from_waker(&waker);
    let mut letters: Vec<_> = tickets.iter().map(|ticket| Box::pin(ticket.letter())).collect();
    letters.iter_mut().for_each(|letter| assert!(letter.as_mut().poll(&mut cx).is_pending()));

    let (outcome, handed_to) = core.unlock_handing_off(b"k", b"a", token, success(None, None), at(10));
    assert_eq!(outcome, UnlockOutcome::Succeeded { waiters_told: owners.len() });
    assert_eq!(handed_to.dones_to_write(), owners.len());
    let written = std::thread::scope(|scope| {
        let other = scope.spawn(|| core.write_dones_directly(&handed_to, at(11)));
        core.write_dones_directly(&handed_to, at(11)) + other.join().unwrap()
    });
    assert_eq!(written, owners.len());
    assert_eq!(core.write_dones_directly(&handed_to, at(11)), 0, "none is left to take");
    assert!(core.owed_dones(b"k").is_empty(), "every one paid as written");
    assert_eq!(woken(), 0, "the WAITs sleep while their DONEs are written");
    drop(handed_to);
    assert_eq!(woken(), owners.len());
    for letter in &mut letters {
        assert!(matches!(
            letter.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Letter::Answer(Answer { written: Written::Whole, paid: None, .. }))
        ));
    }
    drop(letters);
    for (owner, conn) in owners.iter().zip(2..) {
        let again = core.try_lock(request("k", owner, conn, None), IfHeld::Queue, at(12));
        assert!(!matches!(again, TryOutcome::Done(_)), "{owner} was told DONE once, not again: {again:?}");
    }
}

/// A DONE paid to be written directly but not written travels with the letter: the waiter's task
/// keeps it while it writes the DONE itself, and a WAIT that ends without taking it (its
/// connection went, the server stops) makes the owner owed it again.
#[test]
fn a_done_paid_but_not_written_directly_is_owed_again_if_the_wait_ends_without_it() {
    let core = core();
    let wait_for = |now| blocked(wait(&core, request("k", "w", 2, None), at(now)));
    let owed_again = |now: u64, end: &dyn Fn(WaitTicket, Timestamp)| {
        let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(now)));
        let ticket = wait_for(now);
        ticket.allow_direct(writer(Written::Nothing, ServedBy::CallingThread));
        let (_, handed_to) = core.unlock_handing_off(b"k", b"a", token, success(None, None), at(now + 1));
        assert_eq!(core.write_dones_directly(&handed_to, at(now + 1)), 0, "the socket took nothing");
        assert!(core.owed_dones(b"k").is_empty(), "paid, the payment in the letter");
        end(ticket, at(now + 2));
        assert_eq!(core.owed_dones(b"k"), vec![Arc::<[u8]>::from(&b"w"[..])]);
        match core.try_lock(request("k", "w", 2, None), IfHeld::Queue, at(now + 3)) {
            TryOutcome::Done(_) => {}
            other => panic!("expected the DONE owed again, got {other:?}"),
        }
    };
    owed_again(0, &|ticket, now| core.wait_abandoned(ticket, b"k", now));
    owed_again(10, &|ticket, now| core.wait_stopped_by_shutdown(ticket, b"k", now));

    // The task that takes the letter takes the payment, to keep until its write is out.
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(20)));
    let mut ticket = wait_for(20);
    ticket.allow_direct(writer(Written::Nothing, ServedBy::CallingThread));
    let (_, handed_to) = core.unlock_handing_off(b"k", b"a", token, success(None, None), at(21));
    core.write_dones_directly(&handed_to, at(21));
    let Some(Letter::Answer(Answer { paid: Some(paid), written: Written::Nothing, .. })) = ticket.take_letter() else {
        panic!("the letter carries the payment")
    };
    assert!(core.owed_dones(b"k").is_empty());
    core.done_unwritten(b"k", paid, at(22));
    assert_eq!(core.owed_dones(b"k").len(), 1, "given back when the task's write fails");
}

fn granted_token(outcome: &WaitOutcome) -> u64 {
    match outcome {
        WaitOutcome::Acquired { token } => *token,
        other => panic!("not a grant: {other:?}"),
    }
}

/// The client has the grant's reply in full: its connection closing is a holder leaving, not an
/// undelivered grant, and the lock stays with it (release-on-disconnect off here).
#[test]
fn a_grant_written_whole_for_a_waiter_that_then_goes_stays_its_lock() {
    let core = core_with(false);
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let _c = blocked(wait(&core, request("k", "c", 3, None), at(0)));
    b.allow_direct(takes_all());
    let (_, handed_to) = core.unlock_handing_off(b"k", b"a", token, failure(), at(10));
    assert_eq!(handed_to.write_directly(), 1);
    core.wait_abandoned(b, b"k", at(11));
    assert_eq!(core.info(b"k", at(11), usize::MAX).unwrap().holder.unwrap().owner.as_ref(), b"b");
}

#[test]
fn a_dropped_ticket_is_skipped_at_hand_off() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    drop(blocked(wait(&core, request("k", "b", 2, None), at(0))));
    let mut c = blocked(wait(&core, request("k", "c", 3, None), at(0)));
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(10)), UnlockOutcome::HandedOff);
    assert!(matches!(c.try_answer(), Some(WaitOutcome::Acquired { .. })));
}

/// A server connection has one mailbox for all its WAITs. A WAIT whose ticket was dropped without
/// being handed back (the server stopping) leaves its blocker in line; the connection's next WAIT
/// reopens the mailbox. A grant meant for the old blocker must not answer the new WAIT (on another
/// key): the old owner is skipped as gone, and the new WAIT gets only its own key's grant.
#[test]
fn a_blocker_left_by_an_earlier_wait_never_answers_the_connections_next_wait() {
    let core = core();
    let mailbox = Arc::new(Mailbox::new(conn(2)));
    let first = acquired(core.try_lock(request("first", "h", 1, None), IfHeld::Queue, at(0)));
    let second = acquired(core.try_lock(request("second", "h", 1, None), IfHeld::Queue, at(0)));
    drop(blocked(core.wait(request("first", "w", 2, None), &mailbox, at(0))));
    let mut now_waiting = blocked(core.wait(request("second", "w", 2, None), &mailbox, at(1)));
    let mut behind = blocked(wait(&core, request("first", "x", 3, None), at(2)));

    assert_eq!(core.unlock(b"first", b"h", first, failure(), at(10)), UnlockOutcome::HandedOff);
    assert!(!now_waiting.has_answer(), "the grant of `first` went nowhere near the WAIT on `second`");
    assert!(granted(&mut behind).is_some(), "the owner whose WAIT was dropped is skipped");
    assert_eq!(core.info(b"first", at(10), usize::MAX).unwrap().holder.unwrap().owner.as_ref(), b"x");

    assert_eq!(core.unlock(b"second", b"h", second, failure(), at(20)), UnlockOutcome::HandedOff);
    let token = granted(&mut now_waiting).expect("the WAIT on `second` gets its own grant");
    let holder = core.info(b"second", at(20), usize::MAX).unwrap().holder.unwrap();
    assert_eq!((holder.owner.as_ref(), holder.token), (&b"w"[..], token));
}

#[test]
fn cancel_leaves_the_queue() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0));
    assert!(core.cancel(b"k", b"b", at(0)));
    assert!(!core.cancel(b"k", b"b", at(0)));
    assert!(!core.cancel(b"k", b"a", at(0)), "the holder is not queued");
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(0)), UnlockOutcome::Released);
}

#[test]
fn lease_expiry_hands_off_and_fences_the_stale_holder() {
    let core = core();
    let stale = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let mut b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    assert_eq!(core.expire(at(999)), Some(1_000));
    assert!(b.try_answer().is_none());
    core.expire(at(1_000));
    let fresh = match b.try_answer() {
        Some(WaitOutcome::Acquired { token }) => token,
        other => panic!("{other:?}"),
    };
    assert!(fresh > stale);
    assert_eq!(core.unlock(b"k", b"a", stale, success(None, None), at(1_001)), UnlockOutcome::NotHolder);
    assert_eq!(core.extend(b"k", b"a", stale, 5_000, conn(1), at(1_001)), ExtendOutcome::NotHolder);
    assert_eq!(core.info(b"k", at(1_001), usize::MAX).unwrap().last_failure.as_deref(), Some(&b"lease expired"[..]));
    assert_eq!(core.stats().lease_expiries, 1);
}

#[test]
fn extend_renews_the_lease() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.extend(b"k", b"a", token, 5_000, conn(1), at(900)), ExtendOutcome::Extended);
    core.expire(at(2_000));
    assert_eq!(core.info(b"k", at(2_000), usize::MAX).unwrap().holder.unwrap().lease_remaining_ms, 3_900);
    assert_eq!(core.extend(b"k", b"a", token + 1, 5_000, conn(1), at(900)), ExtendOutcome::NotHolder);
    assert_eq!(core.extend(b"nokey", b"a", token, 5_000, conn(1), at(900)), ExtendOutcome::NotLocked);
}

#[test]
fn leases_are_capped_by_the_maximum() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, Some(u64::MAX)), IfHeld::Queue, at(0)));
    assert_eq!(core.info(b"k", at(0), usize::MAX).unwrap().holder.unwrap().lease_remaining_ms, 60_000);
    core.extend(b"k", b"a", token, u64::MAX, conn(1), at(0));
    assert_eq!(core.info(b"k", at(0), usize::MAX).unwrap().holder.unwrap().lease_remaining_ms, 60_000);
}

#[test]
fn tokens_keep_growing_after_a_key_is_forgotten() {
    let core = core();
    let mut last = 0;
    for round in 0..5 {
        let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(round)));
        assert!(token > last);
        last = token;
        core.unlock(b"k", b"a", token, success(None, None), at(round));
        assert_eq!(core.key_count(), 0);
    }
}

#[test]
fn holder_connection_close_releases_to_the_next_waiter() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 7, None), IfHeld::Queue, at(0)));
    let mut b = blocked(wait(&core, request("k", "b", 8, None), at(0)));
    release_connection(&core, conn(8), [&b"k"[..]], at(1));
    assert!(b.try_answer().is_none(), "another connection's close changes nothing");
    release_connection(&core, conn(7), [&b"k"[..]], at(1));
    assert!(matches!(b.try_answer(), Some(WaitOutcome::Acquired { .. })));
    assert_eq!(core.stats().disconnect_releases, 1);
}

#[test]
fn release_on_disconnect_off_keeps_the_lease() {
    let core = core_with(false);
    acquired(core.try_lock(request("k", "a", 7, None), IfHeld::Queue, at(0)));
    release_connection(&core, conn(7), [&b"k"[..]], at(1));
    assert_eq!(core.info(b"k", at(1), usize::MAX).unwrap().state, LockStateName::Held);
}

#[test]
fn unqueued_owner_place_expires() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, Some(10_000)), IfHeld::Queue, at(0)));
    core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0));
    core.expire(at(1_000));
    assert!(core.info(b"k", at(1_000), usize::MAX).unwrap().queue.is_empty());
}

#[test]
fn stats_count_gauges() {
    let core = core();
    acquired(core.try_lock(request("k1", "a", 1, None), IfHeld::Queue, at(0)));
    acquired(core.try_lock(request("k2", "a", 1, None), IfHeld::Queue, at(0)));
    core.try_lock(request("k1", "b", 2, None), IfHeld::Queue, at(0));
    let _ticket = blocked(wait(&core, request("k1", "c", 3, None), at(0)));
    let stats = core.stats();
    assert_eq!((stats.keys, stats.held_keys, stats.waiters, stats.blocked_waiters), (2, 2, 2, 1));
    assert_eq!(stats.grants, 2);
}

#[test]
fn churn_does_not_grow_the_timers_without_bound() {
    let core = core();
    for i in 0..20_000u64 {
        let key = format!("k{i}");
        let token = acquired(core.try_lock(request(&key, "a", 1, None), IfHeld::Queue, at(0)));
        core.unlock(key.as_bytes(), b"a", token, success(None, None), at(0));
    }
    let timers: usize = core.shards.iter().map(|shard| shard.lock().timer_count()).sum();
    assert!(timers <= 4 * (2 + 1024), "{timers} timer entries");
}

#[test]
fn head_granted_after_its_wait_timed_out_is_bound_to_the_connection_it_waited_on() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    let b = blocked(wait(&core, request("k", "b", 5, None), at(0)));
    assert_eq!(core.wait_timed_out(b, b"k", at(10)), None);
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(20)), UnlockOutcome::HandedOff);
    assert!(core.bound_to_conn(core.key_hash(b"k"), conn(5)));
    release_connection(&core, conn(5), [&b"k"[..]], at(30));
    assert_eq!(core.info(b"k", at(30), usize::MAX).map(|info| info.state), None, "released and forgotten");
}

#[test]
fn owner_waiting_on_two_connections_is_bound_to_the_newest() {
    let core = core();
    let (grant, _older, mut newer, mut next) = grant_to_an_owner_on_two_connections(&core);
    assert_eq!(granted(&mut newer), Some(grant), "both calls of the owner are told");
    release_connection(&core, conn(2), [&b"k"[..]], at(4));
    assert_eq!(granted(&mut next), None, "the older connection is not the binding one");
    release_connection(&core, conn(3), [&b"k"[..]], at(5));
    assert!(granted(&mut next).is_some());
}

/// Issue 9: an expiry processed late (a starved expiry driver, a paused process) handed off as of
/// the moment the lease ended, so the lock ran down the line and every waiter whose lease had
/// "already ended" was sent ACQUIRED too. Only the head may be woken, its lease counting from the
/// hand-off.
#[test]
fn late_expiry_wakes_only_the_head_with_a_lease_from_the_hand_off() {
    let core = core();
    acquired(core.try_lock(request("k", "h", 1, Some(100)), IfHeld::Queue, at(0)));
    let mut a = blocked(wait(&core, request("k", "a", 2, Some(100)), at(0)));
    let mut b = blocked(wait(&core, request("k", "b", 3, Some(100)), at(0)));
    let mut c = blocked(wait(&core, request("k", "c", 4, Some(100)), at(0)));
    core.expire(at(350));
    let token = granted(&mut a).expect("the head is granted");
    assert_eq!(granted(&mut b), None, "only the head is woken");
    assert_eq!(granted(&mut c), None, "only the head is woken");
    let holder = core.info(b"k", at(350), usize::MAX).unwrap().holder.unwrap();
    assert_eq!((holder.owner.as_ref(), holder.token, holder.lease_remaining_ms), (&b"a"[..], token, 100));
    assert_eq!(core.stats().lease_expiries, 1);
}

/// A caller reads the clock before it takes the shard lock. An UNLOCK whose reading is older than
/// a WAIT that blocked meanwhile (its thread was descheduled in between) used to hand the lock to
/// that WAIT with a lease counted from the UNLOCK's reading, ending before the waiter's own
/// reading plus its PX: the history test caught the next holder granted while the waiter could
/// still count on its lease. A shard's time never goes back, so the lease starts no earlier than
/// the WAIT it answers.
#[test]
fn a_late_unlock_with_an_older_clock_reading_grants_a_full_lease() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, Some(1_000)), IfHeld::Queue, at(0)));
    let mut w = blocked(wait(&core, request("k", "w", 2, Some(600)), at(20)));
    core.unlock(b"k", b"h", token, failure(), at(10));
    let granted_token = granted(&mut w).expect("the waiter is granted");
    core.expire(at(619));
    let holder = core.info(b"k", at(619), usize::MAX).unwrap().holder.expect("still held at 619");
    assert_eq!((holder.owner.as_ref(), holder.token, holder.lease_remaining_ms), (&b"w"[..], granted_token, 1));
    core.expire(at(620));
    let holder = core.info(b"k", at(620), usize::MAX).and_then(|info| info.holder);
    assert_eq!(holder.map(|holder| holder.owner), None, "the lease ran out at 20 + 600");
}

/// At a late hand-off a place that is not blocked counts only if its own lease has not run out by
/// then; a blocked waiter counts however late it is.
#[test]
fn late_expiry_skips_places_that_ran_out_meanwhile_but_not_blocked_waiters() {
    let core = core();
    acquired(core.try_lock(request("k", "h", 1, Some(100)), IfHeld::Queue, at(0)));
    assert_eq!(
        core.try_lock(request("k", "q", 2, Some(150)), IfHeld::Queue, at(0)),
        TryOutcome::Queued { position: 1 }
    );
    let mut w = blocked(wait(&core, request("k", "w", 3, Some(100)), at(0)));
    core.expire(at(200));
    assert!(granted(&mut w).is_some(), "the blocked waiter is granted");
    let info = core.info(b"k", at(200), usize::MAX).unwrap();
    assert_eq!(info.holder.map(|holder| holder.owner), Some(Arc::from(&b"w"[..])));
    assert!(info.queue.is_empty(), "q's place ran out at t=150");
}

/// Issue 9: LOCK.TRY NOQUEUE answered BUSY and kept the owner's place without restarting its
/// lease, so an owner polling that way dropped out after its PX. Like every TRY it renews the
/// place, and its connection becomes the one a grant binds to.
#[test]
fn noqueue_poll_renews_the_place() {
    let core = core();
    acquired(core.try_lock(request("k", "a", 1, Some(10_000)), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("k", "b", 2, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    let busy = core.try_lock(request("k", "b", 3, None), IfHeld::NoQueue, at(900));
    assert_eq!(busy, TryOutcome::Busy { holder: Arc::from(&b"a"[..]) });
    assert!(core.bound_to_conn(core.key_hash(b"k"), conn(3)), "a grant would bind to the polling connection");
    core.expire(at(1_500));
    assert_eq!(
        core.info(b"k", at(1_500), usize::MAX).unwrap().queue,
        vec![Arc::from(&b"b"[..])],
        "leased until t=1900"
    );
    core.expire(at(1_900));
    assert!(core.info(b"k", at(1_900), usize::MAX).unwrap().queue.is_empty());
}

/// Issue 9: a LOCK.WAIT that timed out keeps the owner's place, but the place outlived its
/// connection: when the holder then failed, the departed owner became the holder, bound to a
/// closed connection, and everyone behind it waited out its whole lease.
#[test]
fn a_departed_waiter_is_never_granted() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), IfHeld::Queue, at(0)));
    let departed = blocked(wait(&core, request("k", "d", 2, None), at(0)));
    let mut next = blocked(wait(&core, request("k", "n", 3, None), at(0)));
    assert_eq!(core.wait_timed_out(departed, b"k", at(10)), None);
    release_connection(&core, conn(2), [&b"k"[..]], at(20));
    assert_eq!(core.unlock(b"k", b"h", token, failure(), at(30)), UnlockOutcome::HandedOff);
    assert!(granted(&mut next).is_some(), "the waiter behind the departed owner is granted");
}

/// The place of an owner still blocked on another connection stays, and moves to that connection.
#[test]
fn a_closed_connection_keeps_the_place_of_an_owner_blocked_elsewhere() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), IfHeld::Queue, at(0)));
    let waiting = blocked(wait(&core, request("k", "o", 3, None), at(0)));
    assert_eq!(core.try_lock(request("k", "o", 2, None), IfHeld::Queue, at(5)), TryOutcome::Queued { position: 1 });
    release_connection(&core, conn(2), [&b"k"[..]], at(10));
    assert_eq!(core.info(b"k", at(10), usize::MAX).unwrap().queue, vec![Arc::from(&b"o"[..])]);
    assert_eq!(core.wait_timed_out(waiting, b"k", at(20)), None);
    assert_eq!(core.unlock(b"k", b"h", token, failure(), at(30)), UnlockOutcome::HandedOff);
    assert!(core.bound_to_conn(core.key_hash(b"k"), conn(3)), "the grant binds to the connection still open");
    release_connection(&core, conn(3), [&b"k"[..]], at(40));
    assert_eq!(core.info(b"k", at(40), usize::MAX), None, "released when that one closes too");
}

/// `o` waits on connection 3, then renews its place with a TRY on connection 2; connection 3
/// closing takes its WAIT, not the place connection 2 now answers for.
#[test]
fn an_abandoned_wait_leaves_a_place_renewed_elsewhere() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), IfHeld::Queue, at(0)));
    let waiting = blocked(wait(&core, request("k", "o", 3, None), at(0)));
    assert_eq!(core.try_lock(request("k", "o", 2, None), IfHeld::Queue, at(5)), TryOutcome::Queued { position: 1 });
    core.wait_abandoned(waiting, b"k", at(10));
    release_connection(&core, conn(3), [&b"k"[..]], at(10));
    assert_eq!(core.info(b"k", at(10), usize::MAX).unwrap().queue, vec![Arc::from(&b"o"[..])]);
    assert_eq!(core.unlock(b"k", b"h", token, failure(), at(20)), UnlockOutcome::HandedOff);
    assert!(
        core.bound_to_conn(core.key_hash(b"k"), conn(2)),
        "the grant binds to the connection that renewed the place"
    );
}

#[test]
fn release_on_disconnect_off_keeps_the_places_of_a_closed_connection() {
    let core = core_with(false);
    acquired(core.try_lock(request("k", "h", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(core.try_lock(request("k", "q", 2, None), IfHeld::Queue, at(0)), TryOutcome::Queued { position: 1 });
    release_connection(&core, conn(2), [&b"k"[..]], at(10));
    assert_eq!(core.info(b"k", at(10), usize::MAX).unwrap().queue, vec![Arc::from(&b"q"[..])]);
}

/// Owner `o` blocked on two connections, 2 (older) and 3 (newer), and `n` behind it; the holder
/// fails. One grant answers both WAITs and binds to connection 3.
fn grant_to_an_owner_on_two_connections(core: &LockCore) -> (u64, WaitTicket, WaitTicket, WaitTicket) {
    let token = acquired(core.try_lock(request("k", "h", 1, None), IfHeld::Queue, at(0)));
    let mut older = blocked(wait(core, request("k", "o", 2, None), at(0)));
    let newer = blocked(wait(core, request("k", "o", 3, None), at(1)));
    let next = blocked(wait(core, request("k", "n", 4, None), at(2)));
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
    release_connection(&core, conn(3), [&b"k"[..]], at(4));
    let holder = core.info(b"k", at(4), usize::MAX).unwrap().holder.unwrap();
    assert_eq!((holder.owner.as_ref(), holder.token), (&b"o"[..], grant));
    assert_eq!(granted(&mut next), None, "n is not a second holder");
    assert!(core.bound_to_conn(core.key_hash(b"k"), conn(2)));
    release_connection(&core, conn(2), [&b"k"[..]], at(5));
    assert!(granted(&mut next).is_some(), "the last connection that knew of the grant closed");
}

/// The chaos test's race, made deterministic: the owner walked away from connection 3 with a WAIT
/// in flight and waited again on connection 2, which was granted; the old WAIT, applied late,
/// renewed the holding on connection 3. That connection's close passed the lock on although
/// connection 2 had been told it holds: two holders.
#[test]
fn a_late_renewal_on_a_connection_that_then_closes_leaves_the_lock_with_the_other() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "o", 2, None), IfHeld::Queue, at(0)));
    let mut next = blocked(wait(&core, request("k", "n", 4, None), at(1)));
    assert_eq!(acquired(core.try_lock(request("k", "o", 3, None), IfHeld::Queue, at(2))), token);
    release_connection(&core, conn(3), [&b"k"[..]], at(3));
    assert_eq!(granted(&mut next), None, "n is not a second holder");
    assert!(core.bound_to_conn(core.key_hash(b"k"), conn(2)));
    assert_eq!(core.extend(b"k", b"o", token, 5_000, conn(2), at(4)), ExtendOutcome::Extended);
    release_connection(&core, conn(2), [&b"k"[..]], at(5));
    assert!(granted(&mut next).is_some(), "every connection that was told of the holding closed");
}

/// A connection that was sent the grant, read it and closed no longer counts: when the grant then
/// fails to reach the bound connection, the lock passes on instead of binding to a closed one.
#[test]
fn a_closed_connection_that_read_the_grant_is_not_a_fallback() {
    let core = core();
    let (grant, older, newer, mut next) = grant_to_an_owner_on_two_connections(&core);
    drop(older);
    release_connection(&core, conn(2), [&b"k"[..]], at(4));
    assert_eq!(granted(&mut next), None, "connection 3 still holds it");
    drop(newer);
    core.grant_undelivered(b"k", grant, conn(3), at(5));
    assert!(granted(&mut next).is_some());
    let info = core.info(b"k", at(5), usize::MAX).unwrap();
    assert_eq!(info.last_failure.as_deref(), Some(&b"waiter connection closed before the grant reached it"[..]));
}

/// The connection task took the grant out of its mailbox but the client had gone: the reply was
/// never written, and the failure says so.
#[test]
fn a_grant_that_never_reached_its_client_passes_on() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "h", 1, None), IfHeld::Queue, at(0)));
    let mut waiter = blocked(wait(&core, request("k", "w", 2, None), at(0)));
    let mut next = blocked(wait(&core, request("k", "n", 3, None), at(0)));
    core.unlock(b"k", b"h", token, failure(), at(1));
    let grant = granted(&mut waiter).expect("w is sent the grant");
    core.grant_undelivered(b"k", grant, conn(2), at(2));
    assert!(granted(&mut next).is_some());
    let info = core.info(b"k", at(2), usize::MAX).unwrap();
    assert_eq!(info.last_failure.as_deref(), Some(&b"waiter connection closed before the grant reached it"[..]));
    core.grant_undelivered(b"k", grant, conn(2), at(3));
    let holder = core.info(b"k", at(3), usize::MAX).unwrap().holder.unwrap();
    assert_eq!(holder.owner.as_ref(), b"n", "a stale grant changes nothing");
}

/// An EXTEND on a third connection binds the lock there too: it passes on only once every
/// connection the owner was told on has closed, newest binding first.
#[test]
fn an_extend_elsewhere_keeps_the_connections_told_of_the_grant() {
    let core = core();
    let (grant, _older, _newer, mut next) = grant_to_an_owner_on_two_connections(&core);
    assert_eq!(core.extend(b"k", b"o", grant, 1_000, conn(5), at(4)), ExtendOutcome::Extended);
    release_connection(&core, conn(5), [&b"k"[..]], at(5));
    assert!(core.bound_to_conn(core.key_hash(b"k"), conn(3)), "back to the newest WAIT that was told");
    release_connection(&core, conn(3), [&b"k"[..]], at(6));
    assert!(core.bound_to_conn(core.key_hash(b"k"), conn(2)));
    assert_eq!(granted(&mut next), None);
    release_connection(&core, conn(2), [&b"k"[..]], at(7));
    assert!(granted(&mut next).is_some());
}

#[test]
fn gauges_follow_every_change_and_match_a_recount() {
    let core = core();
    let a = acquired(core.try_lock(request("k1", "a", 1, Some(100)), IfHeld::Queue, at(0)));
    acquired(core.try_lock(request("k2", "a", 1, None), IfHeld::Queue, at(0)));
    core.try_lock(request("k1", "b", 2, Some(50)), IfHeld::Queue, at(0));
    let c = blocked(wait(&core, request("k1", "c", 3, None), at(0)));
    let gauges = |keys, held_keys, waiters, blocked_waiters| Gauges { keys, held_keys, waiters, blocked_waiters };
    assert_eq!(core.gauges(), gauges(2, 2, 2, 1));
    // b's place runs out at t=50: it leaves through the expiry driver, not a request.
    core.expire(at(50));
    assert_eq!(core.gauges(), gauges(2, 2, 1, 1));
    assert_eq!(core.wait_timed_out(c, b"k1", at(60)), None);
    assert_eq!(core.gauges(), gauges(2, 2, 1, 0));
    assert_eq!(
        core.unlock(b"k1", b"a", a, success(Some("r"), Some(500)), at(70)),
        UnlockOutcome::Succeeded { waiters_told: 1 }
    );
    assert_eq!(core.gauges(), gauges(2, 1, 0, 0), "k1 is remembered (KEEP) but not held");
    release_connection(&core, conn(1), [&b"k1"[..], &b"k2"[..]], at(80));
    assert_eq!(core.gauges(), gauges(1, 0, 0, 0));
    core.expire(at(2_000));
    assert_eq!(core.gauges(), Gauges::default());
    assert_eq!(core.gauges(), core.recount_gauges());
}

/// Positions, leaving from the middle and LOCK.INFO's listing, on a line long enough that a
/// slip in the rank bookkeeping shows.
#[test]
fn a_long_line_keeps_positions_when_owners_leave_from_the_middle() {
    let core = core();
    acquired(core.try_lock(request("k", "holder", 1, Some(60_000)), IfHeld::Queue, at(0)));
    let owners: Vec<String> = (0..10_000).map(|i| format!("w{i}")).collect();
    for (i, owner) in owners.iter().enumerate() {
        let outcome = core.try_lock(request("k", owner, 2, Some(60_000)), IfHeld::Queue, at(0));
        assert_eq!(outcome, TryOutcome::Queued { position: i + 1 });
    }
    for owner in owners.iter().skip(1).step_by(2) {
        assert!(core.cancel(b"k", owner.as_bytes(), at(1)));
    }
    assert!(!core.cancel(b"k", b"w1", at(1)), "already gone");
    // w0 w2 w4 ... remain: w(2i) stands at i + 1.
    for i in [0, 1, 777, 4_999] {
        let outcome = core.try_lock(request("k", &owners[2 * i], 2, Some(60_000)), IfHeld::Queue, at(2));
        assert_eq!(outcome, TryOutcome::Queued { position: i + 1 }, "w{}", 2 * i);
    }
    let rejoined = core.try_lock(request("k", "w1", 2, Some(60_000)), IfHeld::Queue, at(3));
    assert_eq!(rejoined, TryOutcome::Queued { position: 5_001 }, "a returning owner joins at the end");
    let info = core.info(b"k", at(3), 3).unwrap();
    assert_eq!(info.queue, vec![Arc::from(&b"w0"[..]), Arc::from(&b"w2"[..]), Arc::from(&b"w4"[..])]);
    assert_eq!((info.waiters, info.blocked), (5_001, 0));
    assert_eq!(core.gauges(), core.recount_gauges());
}

/// A blocked WAIT in the middle of a long line times out and later leaves; the places around it
/// keep their order.
#[test]
fn unblocking_in_the_middle_of_a_long_line() {
    let core = core();
    acquired(core.try_lock(request("k", "holder", 1, Some(60_000)), IfHeld::Queue, at(0)));
    for i in 0..1_000 {
        core.try_lock(request("k", &format!("w{i}"), 2, Some(60_000)), IfHeld::Queue, at(0));
    }
    let waiting = blocked(wait(&core, request("k", "w500", 3, Some(60_000)), at(0)));
    assert_eq!(core.info(b"k", at(0), 0).unwrap().blocked, 1);
    assert_eq!(core.wait_timed_out(waiting, b"k", at(10)), None);
    let info = core.info(b"k", at(10), 0).unwrap();
    assert_eq!((info.waiters, info.blocked), (1_000, 0));
    assert_eq!(
        core.try_lock(request("k", "w500", 3, None), IfHeld::Queue, at(10)),
        TryOutcome::Queued { position: 501 }
    );
    let mut again = blocked(wait(&core, request("k", "w500", 3, None), at(11)));
    core.wait_abandoned(blocked(wait(&core, request("k", "w999", 4, None), at(11))), b"k", at(12));
    assert_eq!(core.info(b"k", at(12), 0).unwrap().waiters, 999, "an abandoned WAIT takes its owner out");
    assert_eq!(
        core.try_lock(request("k", "w998", 2, None), IfHeld::Queue, at(12)),
        TryOutcome::Queued { position: 999 }
    );
    assert!(again.try_answer().is_none());
    assert_eq!(core.gauges(), core.recount_gauges());
}

/// A closing connection releases its keys a slice per shard-lock acquisition: N keys of one
/// shard take ceil(N / SLICE) slices, each releasing a full slice but the last.
#[test]
fn a_closing_connection_releases_in_slices_of_one_shard_lock_each() {
    let core = one_shard_core();
    let count = 2 * SLICE + 7;
    let keys: Vec<Arc<[u8]>> = (0..count).map(|i| Arc::from(format!("k{i}").as_bytes())).collect();
    for key in &keys {
        acquired(core.try_lock(LockRequest { key, owner: b"a", lease_ms: None, conn: conn(1) }, IfHeld::Queue, at(0)));
    }
    let mut release = core.release_connection(conn(1), keys.iter().map(|key| core.key_hash(key)));
    let mut held_after_each_slice = Vec::new();
    loop {
        let more = core.release_slice(&mut release, at(1));
        held_after_each_slice.push(core.gauges().held_keys as usize);
        if !more {
            break;
        }
    }
    assert_eq!(held_after_each_slice, vec![count - SLICE, 7, 0]);
    assert!(!core.release_slice(&mut release, at(1)), "nothing left");
    assert_eq!(core.stats().disconnect_releases, count as u64);
}

/// Leases that end together expire a slice per shard-lock acquisition, and `expire` says that
/// more are due (a deadline at or before now) until none is.
#[test]
fn leases_that_end_together_expire_a_slice_at_a_time() {
    let core = one_shard_core();
    let count = 2 * SLICE + 7;
    for i in 0..count {
        acquired(core.try_lock(request(&format!("k{i}"), "a", 1, Some(100)), IfHeld::Queue, at(0)));
    }
    acquired(core.try_lock(request("later", "a", 1, Some(500)), IfHeld::Queue, at(0)));
    let mut held_after_each_call = Vec::new();
    loop {
        let next = core.expire(at(100));
        held_after_each_call.push(core.gauges().held_keys as usize);
        if next != Some(100) {
            assert_eq!(next, Some(500), "then the next lease to end");
            break;
        }
    }
    assert_eq!(held_after_each_call, vec![count + 1 - SLICE, 8, 1]);
    assert_eq!(core.stats().lease_expiries, count as u64);
}

/// A connection's prune keeps, once each, the keys it is still bound to, across shards and
/// beyond one slice of a shard, and drops nearly all the others (it may keep a key that the
/// table tags as a bound one, a few in a hundred).
#[test]
fn retain_bound_keeps_each_key_still_bound_to_the_connection_once() {
    let core = core();
    let keys: Vec<String> = (0..3 * SLICE).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let token = acquired(core.try_lock(request(key, "a", 1, None), IfHeld::Queue, at(0)));
        if i % 3 == 0 {
            assert_eq!(core.unlock(key.as_bytes(), b"a", token, failure(), at(1)), UnlockOutcome::Released);
        }
    }
    let conn_of_other_keys = conn(2);
    acquired(core.try_lock(request("elsewhere", "b", 2, None), IfHeld::Queue, at(0)));
    let mut hashes: Vec<KeyHash> =
        keys.iter().chain(&keys).chain([&"elsewhere".to_owned()]).map(|key| core.key_hash(key.as_bytes())).collect();
    let expected: Vec<KeyHash> = keys
        .iter()
        .map(|key| core.key_hash(key.as_bytes()))
        .filter(|hash| core.bound_to_conn(*hash, conn(1)))
        .collect();
    assert_eq!(expected.len(), 2 * SLICE);
    assert!(core.bound_to_conn(core.key_hash(b"elsewhere"), conn_of_other_keys));
    core.retain_bound(conn(1), &mut hashes);
    let mut kept = hashes.clone();
    kept.sort_unstable();
    kept.dedup();
    assert_eq!(kept.len(), hashes.len(), "kept once each");
    assert!(expected.iter().all(|hash| kept.binary_search(hash).is_ok()), "every bound key is kept");
    let unbound = SLICE + 1;
    assert!(
        hashes.len() - expected.len() < unbound / 4,
        "{} of {unbound} unbound keys kept",
        hashes.len() - expected.len()
    );
}

/// With several shards, each slice takes keys of one shard only.
#[test]
fn release_slices_never_span_two_shards() {
    let core = core();
    let keys: Vec<Arc<[u8]>> = (0..1_000).map(|i| Arc::from(format!("k{i}").as_bytes())).collect();
    let mut per_shard = vec![0usize; core.shard_count()];
    for key in &keys {
        acquired(core.try_lock(LockRequest { key, owner: b"a", lease_ms: None, conn: conn(1) }, IfHeld::Queue, at(0)));
        per_shard[core.shard_of(key)] += 1;
        assert_eq!(core.key_hash(key).shard(), core.shard_of(key), "a key's hash names its shard");
    }
    let expected_slices: usize = per_shard.iter().map(|n| n.div_ceil(SLICE)).sum();
    let mut release = core.release_connection(conn(1), keys.iter().map(|key| core.key_hash(key)));
    let mut slices = 1;
    while core.release_slice(&mut release, at(1)) {
        slices += 1;
    }
    assert_eq!(slices, expected_slices);
    assert_eq!(core.key_count(), 0);
}

#[test]
fn owed_dones_of_a_long_line_are_paid_once_and_expire() {
    let core = core();
    let token = acquired(core.try_lock(request("k", "holder", 1, None), IfHeld::Queue, at(0)));
    for i in 0..1_000 {
        core.try_lock(request("k", &format!("w{i}"), 2, Some(100 + i)), IfHeld::Queue, at(0));
    }
    let told = core.unlock(b"k", b"holder", token, success(Some("r"), None), at(10));
    assert_eq!(told, UnlockOutcome::Succeeded { waiters_told: 1_000 });
    assert!(matches!(core.try_lock(request("k", "w7", 2, None), IfHeld::Queue, at(20)), TryOutcome::Done(_)));
    assert!(matches!(core.try_lock(request("k", "w7", 2, None), IfHeld::Queue, at(20)), TryOutcome::Acquired { .. }));
    // w500's place would have run out at t=600 (w499's at t=599): what it was owed goes with it.
    core.unlock(b"k", b"w7", core.info(b"k", at(20), 0).unwrap().holder.unwrap().token, success(None, None), at(30));
    assert!(matches!(core.try_lock(request("k", "w499", 2, None), IfHeld::Queue, at(598)), TryOutcome::Done(_)));
    assert!(matches!(
        core.try_lock(request("k", "w500", 2, None), IfHeld::Queue, at(600)),
        TryOutcome::Acquired { .. }
    ));
}

#[test]
fn while_grants_are_paused_nobody_new_gets_a_lock_and_the_line_is_served_when_they_resume() {
    let core = core();
    let held = acquired(core.try_lock(request("held", "h", 1, Some(10_000)), IfHeld::Queue, at(0)));
    core.pause_grants_until(1_000);
    assert_eq!(core.grants_paused_ms(at(400)), 600);
    // A free lock is not granted: TRY queues, WAIT blocks.
    assert_eq!(
        core.try_lock(request("free", "a", 2, Some(5_000)), IfHeld::Queue, at(100)),
        TryOutcome::Queued { position: 1 }
    );
    let mut b = blocked(wait(&core, request("free", "b", 3, Some(5_000)), at(100)));
    // The holder keeps its lock; its FAILURE leaves the lock free with its line.
    assert_eq!(acquired(core.try_lock(request("held", "h", 1, Some(10_000)), IfHeld::Queue, at(200))), held);
    let mut c = blocked(wait(&core, request("held", "c", 4, None), at(200)));
    assert_eq!(core.unlock(b"held", b"h", held, failure(), at(300)), UnlockOutcome::Released);
    let info = core.info(b"held", at(300), 10).unwrap();
    assert_eq!((info.state, info.waiters), (LockStateName::Free, 1));
    assert_eq!(granted(&mut c), None);
    // At the resume, each line's head is granted, in line order.
    assert_eq!(core.expire(at(999)), Some(1_000));
    core.expire(at(1_000));
    assert!(granted(&mut c).is_some_and(|token| token > held));
    assert!(matches!(
        core.try_lock(request("free", "a", 2, None), IfHeld::Queue, at(1_001)),
        TryOutcome::Acquired { .. }
    ));
    assert_eq!(granted(&mut b), None);
    assert_eq!(core.info(b"free", at(1_001), 10).unwrap().queue, vec![Arc::<[u8]>::from(&b"b"[..])]);
}

#[test]
fn the_tables_shrink_back_after_a_mass_release() {
    let core = core_with(true);
    let keys: Vec<String> = (0..50_000).map(|i| format!("k{i}")).collect();
    for key in &keys {
        acquired(core.try_lock(request(key, "a", 1, Some(1_000)), IfHeld::Queue, at(0)));
    }
    let full = core.table_capacity();
    release_connection(&core, conn(1), keys.iter().map(|key| key.as_bytes()), at(1));
    assert_eq!(core.key_count(), 0);
    // The leases' timer entries go with the keys, not when their leases would have ended.
    let (keys_left, timers_left) = core.table_capacity();
    assert!(keys_left * 10 < full.0 && timers_left * 10 < full.1, "{full:?} -> {:?}", (keys_left, timers_left));
}

/// Records what it is told, and checks that no shard lock is held while it is told.
#[derive(Default)]
struct Recorder {
    listening: std::sync::atomic::AtomicBool,
    core: std::sync::OnceLock<std::sync::Weak<LockCore>>,
    seen: Mutex<Vec<(Vec<u8>, Notification)>>,
}

impl LockObserver for Recorder {
    fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    fn observe(&self, events: &[LockEvent]) {
        if let Some(core) = self.core.get().and_then(std::sync::Weak::upgrade) {
            assert!(core.shards.iter().all(|shard| shard.try_lock().is_some()), "observed under a shard lock");
        }
        let mut seen = self.seen.lock();
        for event in events {
            let (key, notification) = event.notification();
            seen.push((key.to_vec(), notification));
        }
    }
}

impl Recorder {
    fn take(&self) -> Vec<(String, &'static str)> {
        let seen = std::mem::take(&mut *self.seen.lock());
        seen.into_iter().map(|(key, what)| (String::from_utf8(key).unwrap(), what.as_str())).collect()
    }
}

fn observed_core(shards: usize) -> (Arc<LockCore>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    recorder.listening.store(true, Ordering::Relaxed);
    let mut core = core_of(true, shards);
    core.set_observer(Arc::clone(&recorder) as Arc<dyn LockObserver>);
    let core = Arc::new(core);
    recorder.core.set(Arc::downgrade(&core)).ok();
    (core, recorder)
}

fn told(events: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    events.iter().map(|(key, what)| ((*key).to_owned(), *what)).collect()
}

#[test]
fn observers_hear_grants_releases_and_hand_offs_in_order() {
    let (core, seen) = observed_core(4);
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    assert_eq!(seen.take(), told(&[("k", "granted")]));
    let mut b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(1)));
    assert_eq!(seen.take(), [], "queueing and renewing are not events");
    assert_eq!(core.unlock(b"k", b"a", token, failure(), at(2)), UnlockOutcome::HandedOff);
    assert_eq!(seen.take(), told(&[("k", "released"), ("k", "handoff")]), "the release comes before its hand-off");
    let token = granted(&mut b).unwrap();
    assert!(matches!(core.unlock(b"k", b"b", token, success(None, None), at(3)), UnlockOutcome::Succeeded { .. }));
    assert_eq!(seen.take(), told(&[("k", "done")]));
}

#[test]
fn observers_hear_expiries_disconnects_and_cancels() {
    let (core, seen) = observed_core(1);
    acquired(core.try_lock(request("k", "a", 1, Some(100)), IfHeld::Queue, at(0)));
    let _b = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    core.try_lock(request("k", "c", 3, None), IfHeld::Queue, at(0));
    acquired(core.try_lock(request("other", "d", 4, None), IfHeld::Queue, at(0)));
    seen.take();
    core.expire(at(100));
    assert_eq!(seen.take(), told(&[("k", "expired"), ("k", "handoff")]));
    assert!(core.cancel(b"k", b"c", at(101)));
    assert!(!core.cancel(b"k", b"c", at(102)), "nobody left to cancel");
    assert_eq!(seen.take(), told(&[("k", "cancelled")]));
    release_connection(&core, conn(4), [&b"other"[..]], at(103));
    assert_eq!(seen.take(), told(&[("other", "released")]));
}

#[test]
fn nothing_is_collected_for_an_observer_that_does_not_listen() {
    let (core, seen) = observed_core(1);
    seen.listening.store(false, Ordering::Relaxed);
    let token = acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(0)));
    core.unlock(b"k", b"a", token, failure(), at(1));
    assert_eq!(seen.take(), []);
    seen.listening.store(true, Ordering::Relaxed);
    acquired(core.try_lock(request("k", "a", 1, None), IfHeld::Queue, at(2)));
    assert_eq!(seen.take(), told(&[("k", "granted")]));
}
