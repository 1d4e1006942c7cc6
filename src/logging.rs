//! Where log lines go: a queue bounded in bytes, written out by a thread of its own. A slow stderr
//! never delays a hand-off, and a flood of log lines (one client failing in a loop) cannot grow
//! memory without end: lines that do not fit are dropped and counted, and INFO shows the count
//! (`log_lines_dropped`).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// Room for about 20,000 lines of the longest lock event, enough to ride out a burst while stderr
/// is briefly slow.
pub const LOG_QUEUE_BYTES: usize = 4 << 20;

/// How long the process waits at exit for queued lines to be written.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(1);

/// After writing, the writer thread gathers lines this long before it writes again, and nobody
/// wakes it meanwhile. Woken for every line, it took the core from the event loop that logged,
/// a futex wake and two context switches each time, right in the path of the reply: a W3
/// hand-off (a FAILURE unlock, logged at INFO) was about 25 µs slower for its log line.
const GATHER: Duration = Duration::from_millis(10);

/// The writer thread's batch buffer is kept between batches up to this size.
const KEPT_TEXT_BYTES: usize = 64 * 1024;

/// The drop counter of the queue behind the process's logger, once [`to_stderr`] has made it.
static PROCESS_QUEUE_DROPS: OnceLock<Arc<AtomicU64>> = OnceLock::new();

/// Lines dropped so far because the process's log queue was full.
pub(crate) fn lines_dropped() -> u64 {
    PROCESS_QUEUE_DROPS.get().map_or(0, |dropped| dropped.load(Ordering::Relaxed))
}

#[derive(Default)]
struct Queue {
    lines: VecDeque<Vec<u8>>,
    /// Bytes queued plus those taken by the writer thread and not yet written.
    bytes: usize,
    closed: bool,
    /// The writer thread waits for a first line, and is to be woken by it.
    writer_idle: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    ready: Condvar,
    limit_bytes: usize,
    dropped: Arc<AtomicU64>,
}

/// The `MakeWriter` handed to `tracing_subscriber`: each write is one formatted event.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Inner>,
}

/// Owns the writer thread; dropping it writes what is queued (waiting at most a second, so a
/// stuck stderr cannot hold the process at exit).
pub struct LogThread {
    inner: Arc<Inner>,
    finished: mpsc::Receiver<()>,
}

/// A bounded queue in front of stderr; its drops are what INFO reports.
pub fn to_stderr() -> (LogWriter, LogThread) {
    let (writer, thread) = bounded(io::stderr(), LOG_QUEUE_BYTES);
    let _ = PROCESS_QUEUE_DROPS.set(Arc::clone(&writer.inner.dropped));
    (writer, thread)
}

fn bounded(mut output: impl Write + Send + 'static, limit_bytes: usize) -> (LogWriter, LogThread) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(Queue::default()),
        ready: Condvar::new(),
        limit_bytes,
        dropped: Arc::new(AtomicU64::new(0)),
    });
    let (finished_tx, finished) = mpsc::channel();
    let shared = Arc::clone(&inner);
    thread::Builder::new()
        .name("baton-log".to_owned())
        .spawn(move || {
            shared.write_until_closed(&mut output);
            let _ = finished_tx.send(());
        })
        .unwrap_or_else(|error| panic!("cannot start the logging thread: {error}"));
    (LogWriter { inner: Arc::clone(&inner) }, LogThread { inner, finished })
}

impl Inner {
    fn push(&self, line: &[u8]) {
        let mut queue = self.queue.lock();
        if queue.bytes + line.len() > self.limit_bytes {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.bytes += line.len();
        queue.lines.push_back(line.to_vec());
        let wake = std::mem::take(&mut queue.writer_idle);
        drop(queue);
        if wake {
            self.ready.notify_one();
        }
    }

    fn write_until_closed(&self, output: &mut impl Write) {
        let mut text = Vec::new();
        loop {
            let batch = {
                let mut queue = self.queue.lock();
                while queue.lines.is_empty() && !queue.closed {
                    queue.writer_idle = true;
                    self.ready.wait(&mut queue);
                }
                queue.writer_idle = false;
                if queue.lines.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.lines)
            };
            text.clear();
            for line in &batch {
                text.extend_from_slice(line);
            }
            // Lines that cannot be written (stderr closed) are lost like dropped ones.
            if output.write_all(&text).and_then(|()| output.flush()).is_err() {
                self.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            if text.capacity() > KEPT_TEXT_BYTES {
                // A burst must not keep its batch's buffer.
                text = Vec::new();
            }
            let mut queue = self.queue.lock();
            queue.bytes -= batch.iter().map(Vec::len).sum::<usize>();
            if !queue.closed {
                // Only closing wakes the thread early: what it gathers meanwhile goes out at exit.
                let _ = self.ready.wait_for(&mut queue, GATHER);
            }
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.inner.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

impl Drop for LogThread {
    fn drop(&mut self) {
        self.inner.queue.lock().closed = true;
        self.inner.ready.notify_one();
        let _ = self.finished.recv_timeout(FLUSH_AT_EXIT);
    }
}

/// Lets through at most one line per interval about an event that may recur in a flood (a
/// failed authentication, a refused cluster peer), each line carrying how many events it stands
/// for: a brute force shows as one line per interval with its rate. Time is handed in.
#[derive(Debug, Default)]
pub(crate) struct LineThrottle {
    last_written: Option<Instant>,
    unreported: u64,
}

impl LineThrottle {
    /// Counts one event at `now`. Returns how many events the line to write now reports, or None
    /// while less than `interval` has passed since the last line.
    pub(crate) fn count(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        self.unreported += 1;
        if self.last_written.is_some_and(|last| now.saturating_duration_since(last) < interval) {
            return None;
        }
        self.last_written = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }

    #[cfg(test)]
    pub(crate) fn unreported(&self) -> u64 {
        self.unreported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that takes nothing until the test opens it, like a stderr nobody reads.
    struct Gated {
        open: mpsc::Receiver<()>,
        written: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut written = self.written.lock().unwrap();
            if written.is_empty() {
                let _ = self.open.recv();
            }
            written.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_bounds_the_queue_in_bytes_and_counts_what_is_dropped() {
        let (open, gate) = mpsc::channel();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let output = Gated { open: gate, written: Arc::clone(&written) };
        let (mut writer, thread) = bounded(output, 1_000);
        let lines: Vec<String> = (0..200).map(|n| format!("line {n:03} of a flood\n")).collect();
        for line in &lines {
            writer.write_all(line.as_bytes()).unwrap();
        }
        let queued = writer.inner.queue.lock().bytes;
        assert!(queued <= 1_000, "{queued} bytes queued");
        let dropped = writer.inner.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 200 - 1_000 / lines[0].len() as u64, "{dropped} dropped");
        open.send(()).unwrap();
        drop(thread);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let kept: Vec<&str> = text.lines().collect();
        assert_eq!(kept.len() as u64 + dropped, 200, "every line is written or counted as dropped");
        // What is kept is whole lines, in order.
        let mut later = lines.iter().map(|line| line.trim_end());
        for line in kept {
            assert!(later.any(|sent| sent == line), "{line:?} out of order or mangled");
        }
    }

    /// Lines logged while the writer thread gathers do not wake it: it must come back for them.
    #[test]
    fn a_line_logged_while_the_writer_gathers_is_written_without_waiting_for_exit() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (open, gate) = mpsc::channel();
        open.send(()).unwrap();
        let (mut writer, _thread) = bounded(Gated { open: gate, written: Arc::clone(&written) }, 1 << 20);
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in 0..3 {
            writeln!(writer, "{n}").unwrap();
            while written.lock().unwrap().iter().filter(|&&byte| byte == b'\n').count() <= n {
                assert!(Instant::now() < deadline, "line {n} never written");
                thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(&written.lock().unwrap()[..], b"0\n1\n2\n");
    }

    #[test]
    fn lines_that_fit_are_all_written_in_order_before_exit() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (open, gate) = mpsc::channel();
        open.send(()).unwrap();
        let (mut writer, thread) = bounded(Gated { open: gate, written: Arc::clone(&written) }, 1 << 20);
        for n in 0..1_000 {
            writeln!(writer, "{n}").unwrap();
        }
        drop(thread);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let numbers: Vec<u32> = text.lines().map(|line| line.parse().unwrap()).collect();
        assert_eq!(numbers, (0..1_000).collect::<Vec<_>>());
        assert_eq!(writer.inner.dropped.load(Ordering::Relaxed), 0);
    }
}
