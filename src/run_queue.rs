//! Yielding to the tasks queued on this event loop.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Lets the tasks queued on this thread run before the caller goes on, as a turn of Redis's
/// event loop serves every ready client before it writes its AOF buffer. Not tokio's
/// `yield_now`: on a current-thread runtime that puts the task aside until the loop has polled
/// its I/O driver again, one more epoll_wait(2) per batch that most often found nothing.
pub(crate) fn yield_to_queued() -> impl Future<Output = ()> {
    YieldToQueued { yielded: false }
}

struct YieldToQueued {
    yielded: bool,
}

impl Future for YieldToQueued {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        // Woken while it runs, a task goes to the back of its runtime's queue.
        context.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What group commit and a hand-off's reply rely on: the tasks queued on the loop run before
    /// the one that yielded goes on.
    #[test]
    fn a_yield_lets_the_tasks_queued_behind_it_run_first() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        runtime.block_on(async {
            let first = tokio::spawn({
                let order = Arc::clone(&order);
                async move {
                    order.lock().unwrap().push("first appends");
                    yield_to_queued().await;
                    order.lock().unwrap().push("first writes");
                }
            });
            let second = tokio::spawn({
                let order = Arc::clone(&order);
                async move { order.lock().unwrap().push("second appends") }
            });
            first.await.unwrap();
            second.await.unwrap();
        });
        assert_eq!(*order.lock().unwrap(), ["first appends", "second appends", "first writes"]);
    }
}
