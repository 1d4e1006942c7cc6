//! Telling a client that reads slowly from one that stopped reading. A deadline on a whole write
//! cut off a client reading steadily but slower than its replies came (at 1 MB/s it was cut off
//! after 12.8 MB); counting the bytes the socket takes lets a write wait as long as it moves.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Counts the bytes written to the stream it wraps. The count is shared because the write being
/// watched borrows the stream.
pub(crate) struct Counted<S> {
    inner: S,
    written: Arc<AtomicU64>,
}

/// No byte was written for a whole stall period.
#[derive(Debug)]
pub(crate) struct Stalled;

pub(crate) struct WriteWatch {
    written: Arc<AtomicU64>,
    stall: Duration,
}

impl WriteWatch {
    /// Wraps `stream` so that its writes are counted for this watch.
    pub(crate) fn new<S>(stream: S, stall: Duration) -> (Counted<S>, WriteWatch) {
        let written = Arc::new(AtomicU64::new(0));
        (Counted { inner: stream, written: Arc::clone(&written) }, WriteWatch { written, stall })
    }

    /// Bytes the stream has taken so far.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Runs `write` to the end unless a whole stall period passes in which the stream takes no
    /// byte; the client is then cut off between one and two periods after it stopped reading.
    pub(crate) async fn run<F: Future>(&self, write: F) -> Result<F::Output, Stalled> {
        tokio::pin!(write);
        let mut seen = self.written.load(Ordering::Relaxed);
        loop {
            if let Ok(output) = tokio::time::timeout(self.stall, &mut write).await {
                return Ok(output);
            }
            let now = self.written.load(Ordering::Relaxed);
            if now == seen {
                return Err(Stalled);
            }
            seen = now;
        }
    }
}

impl<S> Counted<S> {
    fn count(&self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(written)) = result {
            self.written.fetch_add(written as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Not vectored: the replies are one contiguous buffer, and tokio-util writes a single slice
/// with writev(2) when the stream says it takes vectors, which costs the kernel more than a
/// plain send(2).
impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const STALL: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn a_write_that_keeps_moving_outlasts_many_stall_periods() {
        let (near, mut far) = tokio::io::duplex(1024);
        let (mut counted, watch) = WriteWatch::new(near, STALL);
        let reader = tokio::spawn(async move {
            let mut chunk = [0u8; 512];
            let mut total = 0;
            loop {
                tokio::time::sleep(STALL / 2).await;
                match far.read(&mut chunk).await.unwrap() {
                    0 => return total,
                    read => total += read,
                }
            }
        });
        // 64 KiB through a 1 KiB pipe read 512 bytes per half period: 64 stall periods long.
        let written = watch.run(async {
            counted.write_all(&[7u8; 64 * 1024]).await?;
            counted.shutdown().await
        });
        assert!(written.await.is_ok(), "a slow but steady reader is not cut off");
        assert_eq!(reader.await.unwrap(), 64 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stops_moving_is_cut_off() {
        let (near, _far_never_read) = tokio::io::duplex(1024);
        let (mut counted, watch) = WriteWatch::new(near, STALL);
        let outcome = watch.run(counted.write_all(&[7u8; 64 * 1024])).await;
        assert!(outcome.is_err(), "a reader that stopped is cut off");
    }
}
