//! Where a blocked LOCK.WAIT's answer is left. A connection has one mailbox, made with it, and
//! blocks in one WAIT at a time, so each WAIT reuses it: a blocked waiter costs no channel of its
//! own (a tokio oneshot took about a hundred bytes per waiter, most of what a waiter cost beyond
//! its place in line).
//!
//! Each WAIT opens the mailbox under a new number and its blocker in the queue keeps that number,
//! so a blocker left behind by an earlier WAIT (one whose ticket was dropped without being handed
//! back) can never answer a later one: its delivery finds the mailbox open for another number and
//! fails, exactly as a send on a dropped oneshot did, and the core treats that owner as gone.
//!
//! The race between a grant and the WAIT's timeout or disconnect is settled as before: the core
//! posts under the shard lock, and a WAIT that gives up first asks the core, under the same lock,
//! to take its blocker out; only when that finds none does it take the letter. tokio's channels
//! did not fit: a oneshot is spent by one answer, an mpsc channel allocates a block of 32 slots,
//! and a watch channel cannot tell its sender whether this WAIT is still listening.
//!
//! A grant may also be written to the client by the connection whose UNLOCK handed the lock over,
//! when the WAIT lent its mailbox a writer ([`Mailbox::allow_direct`], `crate::direct`), and so
//! may a DONE by the connection whose SUCCESS told it, where the same thread serves both. That
//! write happens under the slot's mutex, like taking the letter, so the WAIT's task finds it done
//! (whole or in part, recorded in the answer) or not begun; the core itself never calls it.

use std::fmt::Debug;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use super::ConnId;
use super::outcome::{Answer, WaitOutcome, Written};
use super::told_done::OwedDone;

/// What a WAIT finds in its mailbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Letter {
    Answer(Answer),
    /// The core let the WAIT go unanswered: its owner was cancelled out of the line (LOCK.CANCEL),
    /// or the node stopped leading and forgot its locks.
    Withdrawn,
}

/// Writes a grant's reply straight to a blocked WAIT's client, from the task of the connection
/// that handed it the lock (see `Mailbox::write_directly`). Made by the connection layer for a
/// socket that any thread may write to; the core only keeps it while the WAIT allows it.
pub trait AnswerWriter: Send + Sync + Debug {
    /// Writes what the socket takes at once, never waiting, and says how much that was.
    fn write_now(&self, outcome: &WaitOutcome) -> Written;

    /// Whether the thread calling this serves the waiter's connection. A DONE is written
    /// directly only from there: the DONEs of a fan-out to connections of several threads are
    /// best written by each thread for its own, side by side.
    fn serves_calling_thread(&self) -> bool;
}

/// Who wakes a WAIT's task for a letter just left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WakeNow {
    /// The poster, at once.
    Yes,
    /// The connection that posted will, once it has tried to write the grant itself.
    Later,
}

#[derive(Debug)]
pub struct Mailbox {
    conn: ConnId,
    slot: Mutex<Slot>,
    posted: AtomicWaker,
}

#[derive(Debug, Default)]
struct Slot {
    /// The WAIT the mailbox takes a letter for; 0 while none is blocked.
    open_for: u64,
    last_opened: u64,
    letter: Option<Letter>,
    /// Set while the open WAIT has nothing else to write and lets the connection that grants it
    /// the lock write the grant itself.
    direct: Option<Arc<dyn AnswerWriter>>,
}

impl Mailbox {
    pub fn new(conn: ConnId) -> Mailbox {
        Mailbox { conn, slot: Mutex::new(Slot::default()), posted: AtomicWaker::new() }
    }

    pub(crate) fn conn(&self) -> ConnId {
        self.conn
    }

    /// Opens the mailbox for a new WAIT, closing it to any earlier one; returns the WAIT's number.
    pub(crate) fn open(&self) -> u64 {
        let mut slot = self.slot.lock();
        slot.last_opened += 1;
        slot.open_for = slot.last_opened;
        slot.letter = None;
        slot.direct = None;
        slot.open_for
    }

    /// WAIT `number` has written out everything before it and writes nothing while it waits:
    /// until it takes its letter (or stops waiting), `writer` may write a grant's reply for it.
    pub(crate) fn allow_direct(&self, number: u64, writer: Arc<dyn AnswerWriter>) {
        let mut slot = self.slot.lock();
        if slot.open_for == number {
            slot.direct = Some(writer);
        }
    }

    /// Writes the answer posted to WAIT `number` to its client, if the WAIT allowed it and has not
    /// taken its letter yet: a grant, or a DONE already paid ([`Self::pay_for_direct_write`]).
    /// The connection that handed the lock over (or told the DONE) calls this once the UNLOCK's
    /// record is written, so that the client need not wait for the waiter's task: for a grant,
    /// its event loop's wake-up, often behind others on a busy core; for a DONE, the tasks of
    /// every waiter told before it. Under the slot's mutex, which the waiter's task takes its
    /// letter under too: the task finds the reply written (whole, in part, or not at all), never
    /// being written. A DONE written whole is paid for good; otherwise its payment stays in the
    /// letter for the task. Says how much was written.
    pub(crate) fn write_directly(&self, number: u64) -> Written {
        let mut slot = self.slot.lock();
        if slot.open_for != number {
            return Written::Nothing;
        }
        let Some(writer) = slot.direct.take() else {
            return Written::Nothing;
        };
        match &mut slot.letter {
            Some(Letter::Answer(answer))
                if answer.written == Written::Nothing
                    && match answer.outcome {
                        WaitOutcome::Acquired { .. } => true,
                        WaitOutcome::Done(_) => answer.paid.is_some(),
                    } =>
            {
                answer.written = writer.write_now(&answer.outcome);
                if answer.written == Written::Whole {
                    answer.paid = None;
                }
                answer.written
            }
            _ => Written::Nothing,
        }
    }

    /// Before its DONE is written directly to WAIT `number`'s client: `pay` pays the owner's debt
    /// (see `LockCore::pay_done`) and the payment goes into the letter, where whoever ends up
    /// writing the reply finds it. Nothing is paid once the task has taken its letter (it pays
    /// as it writes) or if the WAIT allows no direct write. Whether a payment was made.
    pub(crate) fn pay_for_direct_write(&self, number: u64, pay: impl FnOnce() -> Option<OwedDone>) -> bool {
        let mut slot = self.slot.lock();
        if slot.open_for != number || slot.direct.is_none() {
            return false;
        }
        match &mut slot.letter {
            Some(Letter::Answer(answer)) if matches!(answer.outcome, WaitOutcome::Done(_)) && answer.paid.is_none() => {
                answer.paid = pay();
                answer.paid.is_some()
            }
            _ => false,
        }
    }

    /// Leaves `letter` for WAIT `number`. False when that WAIT is no longer listening (or was
    /// answered already): nobody will read it.
    pub(crate) fn post(&self, number: u64, letter: Letter) -> bool {
        let posted = self.leave(number, letter).is_some();
        if posted {
            self.wake();
        }
        posted
    }

    /// Leaves a grant (or a DONE) for WAIT `number` that the connection handing the lock over will write
    /// itself if the WAIT allows it ([`Self::write_directly`]); the WAIT's task is then woken by
    /// that connection once it has tried ([`Self::wake`]), not now. Woken now, the task would race
    /// it for the letter, and the wake-up of its event loop, often on the other core, would
    /// compete for a core with the client that is about to read the grant. A WAIT that does not
    /// allow it is woken at once, and so is one told DONE on a connection another thread serves
    /// (see [`AnswerWriter::serves_calling_thread`]). None where [`Self::post`] is false.
    pub(crate) fn post_for_direct_write(&self, number: u64, letter: Letter) -> Option<WakeNow> {
        let wake = self.leave(number, letter)?;
        if wake == WakeNow::Yes {
            self.wake();
        }
        Some(wake)
    }

    fn leave(&self, number: u64, letter: Letter) -> Option<WakeNow> {
        let mut slot = self.slot.lock();
        if slot.open_for != number || slot.letter.is_some() {
            return None;
        }
        let done = matches!(&letter, Letter::Answer(answer) if matches!(answer.outcome, WaitOutcome::Done(_)));
        let direct = slot.direct.as_ref().is_some_and(|writer| !done || writer.serves_calling_thread());
        slot.letter = Some(letter);
        Some(if direct { WakeNow::Later } else { WakeNow::Yes })
    }

    /// Wakes the task of the WAIT blocked here, if any, to take its letter.
    pub(crate) fn wake(&self) {
        self.posted.wake();
    }

    /// The letter for WAIT `number`, if one was posted; taking it closes the mailbox.
    pub(crate) fn take(&self, number: u64) -> Option<Letter> {
        let mut slot = self.slot.lock();
        if slot.open_for != number {
            return None;
        }
        let letter = slot.letter.take()?;
        slot.open_for = 0;
        slot.direct = None;
        Some(letter)
    }

    pub(crate) fn has_answer(&self, number: u64) -> bool {
        let slot = self.slot.lock();
        slot.open_for == number && matches!(slot.letter, Some(Letter::Answer(_)))
    }

    /// WAIT `number` stops listening: whatever is posted for it from now on is refused.
    pub(crate) fn close(&self, number: u64) {
        let mut slot = self.slot.lock();
        if slot.open_for == number {
            slot.open_for = 0;
            slot.letter = None;
            slot.direct = None;
        }
    }

    /// Waits for WAIT `number`'s letter. Cancel-safe: a letter stays posted until it is taken.
    pub(crate) async fn letter(&self, number: u64) -> Letter {
        poll_fn(|cx| {
            self.posted.register(cx.waker());
            self.take(number).map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Context;

    use super::*;
    use crate::core::testing::{at, conn, counting_waker};

    fn grant(token: u64) -> Letter {
        Letter::Answer(Answer::new(WaitOutcome::Acquired { token }, at(0), Default::default()))
    }

    #[test]
    fn a_letter_reaches_only_the_wait_it_was_posted_for() {
        let mailbox = Mailbox::new(conn(1));
        let first = mailbox.open();
        let second = mailbox.open();
        assert!(!mailbox.post(first, grant(1)), "an earlier WAIT's blocker cannot answer a later WAIT");
        assert!(mailbox.post(second, grant(2)));
        assert!(!mailbox.post(second, grant(3)), "a WAIT is answered once");
        assert_eq!(mailbox.take(first), None);
        assert_eq!(mailbox.take(second), Some(grant(2)));
        assert_eq!(mailbox.take(second), None);
        assert!(!mailbox.post(second, Letter::Withdrawn), "a WAIT that took its letter is closed");
    }

    #[test]
    fn a_closed_wait_refuses_letters_and_drops_the_one_it_had() {
        let mailbox = Mailbox::new(conn(1));
        let number = mailbox.open();
        assert!(mailbox.post(number, grant(1)));
        mailbox.close(number);
        assert!(!mailbox.has_answer(number));
        assert!(!mailbox.post(number, grant(2)));
        let next = mailbox.open();
        mailbox.close(number);
        assert!(mailbox.post(next, grant(3)), "closing an old number leaves the new WAIT open");
    }

    #[test]
    fn a_posted_letter_wakes_the_waiting_task() {
        let mailbox = Arc::new(Mailbox::new(conn(1)));
        let number = mailbox.open();
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut letter = Box::pin(mailbox.letter(number));
        assert!(letter.as_mut().poll(&mut cx).is_pending());
        assert!(mailbox.post(number, grant(7)));
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(letter.as_mut().poll(&mut cx), Poll::Ready(grant(7)));
    }

    #[test]
    fn a_grant_left_for_the_direct_write_wakes_the_task_only_when_told() {
        let mailbox = Arc::new(Mailbox::new(conn(1)));
        let (wakes, waker) = counting_waker();
        let woken = || wakes.load(std::sync::atomic::Ordering::SeqCst);
        let mut cx = Context::from_waker(&waker);

        let number = mailbox.open();
        mailbox.allow_direct(number, writer(Written::Whole));
        let mut letter = Box::pin(mailbox.letter(number));
        assert!(letter.as_mut().poll(&mut cx).is_pending());
        assert_eq!(mailbox.post_for_direct_write(number, grant(1)), Some(WakeNow::Later));
        assert_eq!(woken(), 0, "the task sleeps while the grant is written for it");
        assert_eq!(mailbox.write_directly(number), Written::Whole);
        mailbox.wake();
        assert_eq!(woken(), 1);
        assert!(matches!(
            letter.as_mut().poll(&mut cx),
            Poll::Ready(Letter::Answer(Answer { written: Written::Whole, .. }))
        ));

        let number = mailbox.open();
        let mut letter = Box::pin(mailbox.letter(number));
        assert!(letter.as_mut().poll(&mut cx).is_pending());
        assert_eq!(mailbox.post_for_direct_write(number, grant(2)), Some(WakeNow::Yes));
        assert_eq!(woken(), 2, "a WAIT that allows no direct write is woken at once");
        assert_eq!(mailbox.post_for_direct_write(number, grant(3)), None, "answered once");
    }

    /// Writes nothing anywhere: says it wrote `writes`, and counts its calls.
    #[derive(Debug)]
    struct FakeWriter {
        writes: Written,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl AnswerWriter for FakeWriter {
        fn write_now(&self, _outcome: &WaitOutcome) -> Written {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.writes
        }

        fn serves_calling_thread(&self) -> bool {
            true
        }
    }

    fn writer(writes: Written) -> Arc<FakeWriter> {
        Arc::new(FakeWriter { writes, calls: Default::default() })
    }

    fn written(letter: Option<Letter>) -> Written {
        match letter {
            Some(Letter::Answer(answer)) => answer.written,
            other => panic!("no answer: {other:?}"),
        }
    }

    #[test]
    fn a_grant_is_written_directly_once_and_only_where_the_wait_allowed_it() {
        let mailbox = Mailbox::new(conn(1));
        let number = mailbox.open();
        assert!(mailbox.post(number, grant(1)));
        assert_eq!(mailbox.write_directly(number), Written::Nothing, "not allowed");
        assert_eq!(written(mailbox.take(number)), Written::Nothing);

        let number = mailbox.open();
        let whole = writer(Written::Whole);
        mailbox.allow_direct(number, whole.clone());
        assert_eq!(mailbox.write_directly(number), Written::Nothing, "nothing posted yet");
        assert!(mailbox.post(number, grant(2)));
        assert_eq!(mailbox.write_directly(number), Written::Nothing, "the first try used the permission up");
        assert_eq!(whole.calls.load(std::sync::atomic::Ordering::SeqCst), 0);

        let number = mailbox.open();
        mailbox.allow_direct(number, whole.clone());
        assert!(mailbox.post(number, grant(3)));
        assert_eq!(mailbox.write_directly(number), Written::Whole);
        assert_eq!(mailbox.write_directly(number), Written::Nothing, "written once");
        assert_eq!(written(mailbox.take(number)), Written::Whole, "the WAIT's task finds it written");
        assert_eq!(whole.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

        let number = mailbox.open();
        let part = writer(Written::Part(5));
        mailbox.allow_direct(number, part);
        assert!(mailbox.post(number, grant(4)));
        assert_eq!(mailbox.write_directly(number), Written::Part(5));
        assert_eq!(written(mailbox.take(number)), Written::Part(5), "the task writes the rest");
    }

    #[test]
    fn a_taken_letter_a_closed_wait_or_a_done_is_not_written_directly() {
        let mailbox = Mailbox::new(conn(1));
        let whole = writer(Written::Whole);
        let number = mailbox.open();
        mailbox.allow_direct(number, whole.clone());
        assert!(mailbox.post(number, grant(1)));
        assert_eq!(written(mailbox.take(number)), Written::Nothing);
        assert_eq!(mailbox.write_directly(number), Written::Nothing, "the task took it first and writes it");

        let number = mailbox.open();
        mailbox.allow_direct(number, whole.clone());
        mailbox.close(number);
        assert!(mailbox.slot.lock().direct.is_none(), "a closed WAIT keeps no writer (nor its socket)");

        let number = mailbox.open();
        mailbox.allow_direct(number, whole.clone());
        let completion = Arc::new(crate::core::Completion { token: 1, finisher: Arc::from(&b"f"[..]), result: None });
        let done = Letter::Answer(Answer::new(WaitOutcome::Done(completion), at(0), Default::default()));
        assert!(mailbox.post(number, done));
        assert_eq!(mailbox.write_directly(number), Written::Nothing, "a DONE goes out with its waiter's task");
        assert_eq!(whole.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
