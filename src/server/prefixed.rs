//! A stream that replays bytes already read from it, and ends idle connections. The accept loop
//! reads a connection's first bytes itself, under the header-read timeout (hyper's own timer
//! only starts once some bytes have arrived, so a silent connection would otherwise be held
//! forever), then hands hyper the stream with those bytes put back in front. Between requests
//! ([`Busy`] at zero) a connection that neither reads nor writes for the idle timeout reads as
//! closed, so idle keep-alive connections cannot pin connection slots. A write that makes no
//! progress for the same timeout fails (a client that never reads its response would otherwise
//! hold its connection, and its slot, for ever; the request-level timers stop once the handler
//! has returned and only the body is left to send).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests in progress on one connection; the idle timer only runs while it is zero.
pub type Busy = Arc<AtomicUsize>;

struct Idle {
    timeout: Duration,
    busy: Busy,
    /// Fires at or before `deadline`; moved forward only when it fires early, because
    /// resetting a timer on every request cost more than the rest of this wrapper.
    sleep: Pin<Box<Sleep>>,
    /// When the connection may be closed: `timeout` after it last went idle.
    deadline: Instant,
    armed: bool,
    /// Created on the first write that returns `Pending`, so writes that go straight through
    /// cost no timer; fires at or before `write_deadline` and is moved only when it fires early
    /// (resetting a timer at every stall of a large body cost throughput).
    write_stall: Option<Pin<Box<Sleep>>>,
    /// When the current stall fails the connection: `timeout` after it began.
    write_deadline: Instant,
    write_stalled: bool,
}

/// `prefix` first, then `inner`.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
    idle: Option<Idle>,
}

impl<S> Prefixed<S> {
    /// Ends the connection (reads report end of stream) after `timeout` without traffic while
    /// no request is in progress.
    pub fn with_idle_timeout(mut self, timeout: Duration, busy: Busy) -> Self {
        self.idle = Some(Idle {
            timeout,
            busy,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            deadline: Instant::now() + timeout,
            armed: false,
            write_stall: None,
            write_deadline: Instant::now() + timeout,
            write_stalled: false,
        });
        self
    }

    fn activity(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.armed = false;
        }
    }

    /// After a write made progress: any stall is over.
    fn wrote(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.armed = false;
            idle.write_stalled = false;
        }
    }

    /// After a write returned `Pending`: `Ready(Err)` once it has made no progress for the
    /// whole timeout (the peer stopped reading), else `Pending`.
    fn write_pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(idle) = &mut self.idle else {
            return Poll::Pending;
        };
        if !idle.write_stalled {
            idle.write_stalled = true;
            idle.write_deadline = Instant::now() + idle.timeout;
        }
        let deadline = idle.write_deadline;
        let sleep = idle
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= deadline => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer has not read any of the response for the idle timeout",
                    )))
                }
                // Set for an earlier stall: wait for this one's deadline.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }
}

/// Waits at most `timeout` for the first bytes of `stream`. `Ok(None)` if the peer closed or
/// stayed silent.
pub async fn first_bytes<S: AsyncRead + Unpin>(
    mut stream: S,
    timeout: std::time::Duration,
) -> io::Result<Option<Prefixed<S>>> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Err(_) => Ok(None),
        Ok(Ok(n)) => {
            buf.truncate(n);
            Ok(Some(Prefixed {
                prefix: Bytes::from(buf),
                inner: stream,
                idle: None,
            }))
        }
        Ok(Err(e)) => Err(e),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.activity();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(idle) = &mut self.idle else {
                    return Poll::Pending;
                };
                if idle.busy.load(Ordering::Acquire) > 0 {
                    idle.armed = false;
                    return Poll::Pending;
                }
                if !idle.armed {
                    idle.deadline = Instant::now() + idle.timeout;
                    idle.armed = true;
                    if idle.sleep.deadline() > idle.deadline {
                        idle.sleep.as_mut().reset(idle.deadline);
                    }
                }
                loop {
                    match idle.sleep.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        // Idle for the whole timeout. End of stream: hyper closes the
                        // connection quietly.
                        Poll::Ready(()) if Instant::now() >= idle.deadline => return Poll::Ready(Ok(())),
                        // Set for an earlier idle period: wait for this one's deadline.
                        Poll::Ready(()) => {
                            let deadline = idle.deadline;
                            idle.sleep.as_mut().reset(deadline);
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        match r {
            Poll::Ready(Ok(n)) if n > 0 => self.wrote(),
            Poll::Pending => return self.write_pending(cx),
            _ => {}
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        match r {
            Poll::Ready(Ok(n)) if n > 0 => self.wrote(),
            Poll::Pending => return self.write_pending(cx),
            _ => {}
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_pending(cx),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn replays_the_first_bytes_then_reads_on() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut s = first_bytes(server, std::time::Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        client.write_all(b"\r\n").await.unwrap();
        drop(client);
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn idle_connections_end_unless_a_request_is_in_progress() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"x").await.unwrap();
        let busy = Busy::default();
        let s = first_bytes(server, Duration::from_secs(5)).await.unwrap().unwrap();
        let mut s = s.with_idle_timeout(Duration::from_millis(50), busy.clone());
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        busy.fetch_add(1, Ordering::SeqCst);
        let r = tokio::time::timeout(Duration::from_millis(150), s.read(&mut one)).await;
        assert!(r.is_err(), "a busy connection is not ended");
        busy.fetch_sub(1, Ordering::SeqCst);
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut one))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "an idle connection reads as closed");
        drop(client);
    }

    /// Traffic pushes the close back by a whole timeout, even though the timer itself is only
    /// moved when it fires.
    #[tokio::test(start_paused = true)]
    async fn each_idle_period_gets_the_whole_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"x").await.unwrap();
        let s = first_bytes(server, Duration::from_secs(5)).await.unwrap().unwrap();
        let mut s = s.with_idle_timeout(Duration::from_secs(10), Busy::default());
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        for _ in 0..3 {
            // 8 s of silence, then a byte: never idle for 10 s, so never closed.
            let read = s.read(&mut one);
            let write = async {
                tokio::time::sleep(Duration::from_secs(8)).await;
                client.write_all(b"y").await.unwrap();
            };
            let (n, ()) = tokio::join!(read, write);
            assert_eq!(n.unwrap(), 1, "still open after 8 s idle");
        }
        let start = Instant::now();
        let n = s.read(&mut one).await.unwrap();
        assert_eq!(n, 0, "closed after a full idle timeout");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(11),
            "{waited:?}"
        );
    }

    /// A peer that stops reading makes the next write fail after the idle timeout, busy or not.
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_reads_fails_the_write() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"x").await.unwrap();
        let busy = Busy::default();
        let s = first_bytes(server, Duration::from_secs(5)).await.unwrap().unwrap();
        let mut s = s.with_idle_timeout(Duration::from_secs(10), busy.clone());
        busy.fetch_add(1, Ordering::SeqCst);
        assert_unread_write_fails_after(&mut s, Duration::from_secs(10)).await;
        drop(client);
    }

    /// Writes more than the pipe holds, nobody reading: the write fails with `TimedOut` a
    /// whole `timeout` (and no more than a second past it) after it began.
    async fn assert_unread_write_fails_after<S: AsyncWrite + Unpin>(s: &mut Prefixed<S>, timeout: Duration) {
        let start = Instant::now();
        let err = s
            .write_all(&vec![0u8; 64 << 10])
            .await
            .expect_err("a write nobody reads must fail");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(
            waited >= timeout && waited < timeout + Duration::from_secs(1),
            "{waited:?}"
        );
    }

    /// A stall that begins long after an earlier one still gets the whole timeout (the timer
    /// left from the earlier stall fires early and is moved, not taken as this one's end).
    #[tokio::test(start_paused = true)]
    async fn a_later_stall_gets_the_whole_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"x").await.unwrap();
        let s = first_bytes(server, Duration::from_secs(5)).await.unwrap().unwrap();
        let mut s = s.with_idle_timeout(Duration::from_secs(10), Busy::default());
        // A first stall, relieved after 1 s.
        let drain = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut buf = vec![0u8; 4096];
            let mut got = 0;
            while got < 4096 {
                got += client.read(&mut buf).await.unwrap();
            }
        };
        let (w, ()) = tokio::join!(s.write_all(&[0u8; 4096]), drain);
        w.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        // A second stall nobody relieves: it fails a whole timeout after it began.
        assert_unread_write_fails_after(&mut s, Duration::from_secs(10)).await;
        drop(client);
    }

    /// A slow reader that keeps taking bytes is never cut off.
    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_not_cut_off() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"x").await.unwrap();
        let s = first_bytes(server, Duration::from_secs(5)).await.unwrap().unwrap();
        let mut s = s.with_idle_timeout(Duration::from_secs(10), Busy::default());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut total = 0;
            while total < 16 << 10 {
                tokio::time::sleep(Duration::from_secs(8)).await;
                total += client.read(&mut buf).await.unwrap();
            }
            total
        });
        s.write_all(&vec![0u8; 16 << 10])
            .await
            .expect("a slow reader keeps the connection");
        assert!(reader.await.unwrap() >= 16 << 10);
    }

    #[tokio::test]
    async fn silent_peers_time_out() {
        let (_client, server) = tokio::io::duplex(64);
        let r = first_bytes(server, std::time::Duration::from_millis(20)).await.unwrap();
        assert!(r.is_none());
    }
}
