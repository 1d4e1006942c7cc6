//! The threads that serve connections: one single-threaded event loop per thread, each with its
//! own I/O driver and timers, and every connection served by one loop from accept to close (as
//! Redis's I/O threads and most thread-per-core servers do).
//!
//! Why not tokio's work-stealing runtime: with requests in flight on many connections, a worker
//! that finds more than one task ready wakes an idle sibling to steal one, through an eventfd
//! write, for nearly every request (`strace -c` under `redis-benchmark -c 50`: 0.88 wake-up
//! writes per request beside the read and the write Redis also does). On a machine whose cores
//! the clients share, those wake-ups cost about a tenth of the throughput. Connections do not
//! need stealing: each is a short request/reply exchange on one socket, and what they share (the
//! lock core) is behind its own shard locks, not a runtime.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

use crate::loop_wakes::{LoopWakes, routed};

pub(crate) struct EventLoops {
    loops: Vec<Loop>,
    /// Round-robin: connections are alike, so counting them is as good as weighing them.
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

struct Loop {
    handle: Handle,
    /// Its tasks woken from other threads (see [`crate::loop_wakes`]).
    wakes: Arc<LoopWakes>,
}

impl EventLoops {
    /// Starts `count` loops (at least one), each on a thread of its own.
    pub(crate) fn start(count: usize) -> io::Result<EventLoops> {
        let stop = CancellationToken::new();
        let mut loops = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().on_thread_park(before_sleeping).build()?;
            let loop_wakes = Arc::new(LoopWakes::default());
            runtime.spawn(Arc::clone(&loop_wakes).relay());
            loops.push(Loop { handle: runtime.handle().clone(), wakes: Arc::clone(&loop_wakes) });
            let stopped = stop.clone();
            let thread = std::thread::Builder::new().name(format!("baton-loop-{index}")).spawn(move || {
                loop_wakes.serve_on_this_thread();
                runtime.block_on(stopped.cancelled())
            })?;
            threads.push(thread);
        }
        Ok(EventLoops { loops, next: AtomicUsize::new(0), stop, threads })
    }

    pub(crate) fn count(&self) -> usize {
        self.loops.len()
    }

    /// Runs `task` on the next loop. It starts there, so anything it registers with a reactor
    /// (a socket converted with `TcpStream::from_std`, a timer) belongs to that loop; woken from
    /// other threads, it is woken through that loop's relay.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Loop { handle, wakes } = &self.loops[self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len()];
        handle.spawn(routed(Arc::clone(wakes), task));
    }

    /// Runs on every loop the task `make` gives for it, if it gives one.
    pub(crate) fn spawn_on_each<F>(&self, mut make: impl FnMut() -> Option<F>)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for Loop { handle, .. } in &self.loops {
            if let Some(task) = make() {
                handle.spawn(task);
            }
        }
    }

    /// Stops every loop: tasks still running on them are dropped (the server waits for its
    /// connections to close before this).
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        // Joining blocks: off the async thread.
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Runs each time a loop has nothing left to do, before it sleeps in `epoll_wait`. First, under
/// `appendfsync always`, it asks the journal's writer for the records this turn appended that
/// no reply asked for yet (see `journal::flush_owed_records`). Then it gives its core away
/// once. Where clients share the server's cores, the client whose next request this
/// loop would serve is often runnable on this very core, waiting for it: yielding lets it run
/// and send, and `epoll_wait` then returns at once instead of sleeping until a wake-up (a context
/// switch each way). With nothing else runnable the yield is one short syscall, and an idle loop
/// still sleeps: it yields once per sleep, never spins. W1 unpipelined (two loops, 2-core VM):
/// 1.22× the cycles/s of not yielding; three yields did no better than one (docs/benchmarks-history.md).
fn before_sleeping() {
    crate::journal::flush_owed_records();
    std::thread::yield_now();
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn tasks_are_spread_over_every_loop_and_stop_ends_the_threads() {
        let loops = EventLoops::start(3).unwrap();
        let names = Arc::new(Mutex::new(HashSet::new()));
        let (done, mut finished) = tokio::sync::mpsc::channel(6);
        for _ in 0..6 {
            let names = Arc::clone(&names);
            let done = done.clone();
            loops.spawn(async move {
                // Each loop has its own timer: sleeping here works without the caller's runtime.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                names.lock().unwrap().insert(std::thread::current().name().unwrap().to_owned());
                done.send(()).await.unwrap();
            });
        }
        for _ in 0..6 {
            finished.recv().await.unwrap();
        }
        let expected: HashSet<String> = (0..3).map(|index| format!("baton-loop-{index}")).collect();
        assert_eq!(*names.lock().unwrap(), expected);
        loops.stop().await;
    }

    #[tokio::test]
    async fn a_task_still_running_at_stop_is_dropped() {
        let loops = EventLoops::start(1).unwrap();
        let (dropped, was_dropped) = tokio::sync::oneshot::channel::<()>();
        loops.spawn(async move {
            let _dropped_with_the_task = dropped;
            std::future::pending::<()>().await;
        });
        loops.stop().await;
        assert!(was_dropped.await.is_err(), "the pending task was dropped with its loop");
    }
}
