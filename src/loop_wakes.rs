//! Connection tasks woken from another thread, handed to their own event loop in batches.
//!
//! A loop is a current-thread runtime: tokio wakes it for a task woken from any other thread with
//! a write to its eventfd, one per wake-up. A SUCCESS wakes every blocked waiter at once, half of
//! them on the other loop on two cores, and under the journal those tasks are woken once more
//! when the records their replies wait for are written: W4 (10,000 waiters) made about 0.7
//! eventfd writes per waiter, each a system call on the waking side and often one more turn of
//! `epoll_wait` on the woken one. The journal's relay already does this for its own wake-ups
//! under `always` (`journal::log`); here it is done for every wake-up of a connection's task.
//!
//! A connection's task is polled with a waker of its own ([`routed`]). Woken on its own loop's
//! thread, that waker wakes the task as tokio would. Woken anywhere else, it joins its loop's
//! list, and only the first of a batch wakes the loop's relay task, which then wakes them all
//! from the loop's own thread, where a wake-up is a push onto the run queue.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::{ArcWake, AtomicWaker, waker_ref};
use parking_lot::Mutex;

/// One event loop's tasks woken from other threads, waiting for its relay.
#[derive(Default)]
pub(crate) struct LoopWakes {
    woken: Mutex<Vec<Arc<TaskWaker>>>,
    relay: AtomicWaker,
}

thread_local! {
    /// The wake-ups of the loop running on this thread, if it is one.
    static THIS_LOOP: RefCell<Option<Arc<LoopWakes>>> = const { RefCell::new(None) };
}

impl LoopWakes {
    /// Marks the calling thread as the one running the loop these wake-ups are for.
    pub(crate) fn serve_on_this_thread(self: &Arc<Self>) {
        THIS_LOOP.with_borrow_mut(|this_loop| *this_loop = Some(Arc::clone(self)));
    }

    fn on_this_thread(self: &Arc<Self>) -> bool {
        THIS_LOOP.with_borrow(|this_loop| this_loop.as_ref().is_some_and(|this_loop| Arc::ptr_eq(this_loop, self)))
    }

    /// The relay: runs on the loop for as long as the loop does, waking each batch from there.
    pub(crate) async fn relay(self: Arc<Self>) {
        let mut batch = Vec::new();
        poll_fn(|cx| {
            // Registered before the list is taken: a task added after that wakes the relay again.
            self.relay.register(cx.waker());
            std::mem::swap(&mut *self.woken.lock(), &mut batch);
            for task in batch.drain(..) {
                task.queued.store(false, Ordering::Release);
                task.task.wake();
            }
            Poll::<()>::Pending
        })
        .await
    }
}

/// A connection task's waker.
struct TaskWaker {
    home: Arc<LoopWakes>,
    /// The waker tokio gave the task's last poll.
    task: AtomicWaker,
    /// In its loop's list already: woken again meanwhile, it is not added twice.
    queued: AtomicBool,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(this: &Arc<Self>) {
        if this.home.on_this_thread() {
            this.task.wake();
            return;
        }
        if this.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let first = {
            let mut woken = this.home.woken.lock();
            woken.push(Arc::clone(this));
            woken.len() == 1
        };
        if first {
            this.home.relay.wake();
        }
    }
}

/// `task`, to run on the loop of `home`, woken through it from other threads.
pub(crate) fn routed<F: Future>(home: Arc<LoopWakes>, task: F) -> impl Future<Output = F::Output> {
    let waker = Arc::new(TaskWaker { home, task: AtomicWaker::new(), queued: AtomicBool::new(false) });
    async move {
        let mut task = std::pin::pin!(task);
        poll_fn(|cx| {
            waker.task.register(cx.waker());
            let routed = waker_ref(&waker);
            task.as_mut().poll(&mut Context::from_waker(&routed))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::core::testing::counting_waker;

    fn task_waker(home: &Arc<LoopWakes>) -> (Arc<std::sync::atomic::AtomicUsize>, Arc<TaskWaker>) {
        let (wakes, waker) = counting_waker();
        let task =
            Arc::new(TaskWaker { home: Arc::clone(home), task: AtomicWaker::new(), queued: AtomicBool::new(false) });
        task.task.register(&waker);
        (wakes, task)
    }

    #[test]
    fn woken_from_elsewhere_a_task_joins_its_loops_list_once_and_only_the_first_wakes_the_relay() {
        let home = Arc::new(LoopWakes::default());
        let (relay_wakes, relay) = counting_waker();
        let (first_wakes, first) = task_waker(&home);
        let (_, second) = task_waker(&home);

        home.relay.register(&relay);
        ArcWake::wake_by_ref(&first);
        ArcWake::wake_by_ref(&first);
        assert_eq!(home.woken.lock().len(), 1, "woken twice before the relay ran, listed once");
        assert_eq!(relay_wakes.load(Ordering::SeqCst), 1);
        home.relay.register(&relay);
        ArcWake::wake_by_ref(&second);
        assert_eq!(home.woken.lock().len(), 2);
        assert_eq!(relay_wakes.load(Ordering::SeqCst), 1, "the relay was woken for this batch already");
        assert_eq!(first_wakes.load(Ordering::SeqCst), 0, "the task waits for its loop's relay");
    }

    #[test]
    fn woken_on_its_own_loops_thread_a_task_is_woken_at_once() {
        let home = Arc::new(LoopWakes::default());
        let (wakes, task) = task_waker(&home);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                home.serve_on_this_thread();
                ArcWake::wake_by_ref(&task);
            });
        });
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert!(home.woken.lock().is_empty());
    }

    #[test]
    fn tasks_woken_from_another_thread_run_on_their_loop() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let handle = runtime.handle().clone();
        let home = Arc::new(LoopWakes::default());
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let serving = Arc::clone(&home);
        let thread = std::thread::spawn(move || {
            serving.serve_on_this_thread();
            runtime.spawn(Arc::clone(&serving).relay());
            runtime.block_on(async move { tokio::task::spawn_blocking(move || stopped.recv()).await.ok() });
        });
        let count = 200;
        let notifies: Vec<Arc<tokio::sync::Notify>> = (0..count).map(|_| Arc::default()).collect();
        let (started, all_started) = std::sync::mpsc::channel();
        let (done, finished) = std::sync::mpsc::channel();
        for notify in &notifies {
            let (notify, started, done) = (Arc::clone(notify), started.clone(), done.clone());
            handle.spawn(routed(Arc::clone(&home), async move {
                started.send(()).unwrap();
                notify.notified().await;
                done.send(()).unwrap();
            }));
        }
        // Asleep, the tasks can only be woken from this thread, through the relay.
        for _ in 0..count {
            all_started.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        for notify in &notifies {
            notify.notify_one();
        }
        for _ in 0..count {
            finished.recv_timeout(Duration::from_secs(10)).expect("every task woken from this thread runs");
        }
        stop.send(()).unwrap();
        thread.join().unwrap();
    }
}
