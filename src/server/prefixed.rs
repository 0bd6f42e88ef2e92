//! A stream that replays bytes already read from it. The accept loop reads a connection's
//! first bytes itself, under the header-read timeout (hyper's own timer only starts once some
//! bytes have arrived, so a silent connection would otherwise be held forever), then hands
//! hyper the stream with those bytes put back in front.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// `prefix` first, then `inner`.
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
    async fn silent_peers_time_out() {
        let (_client, server) = tokio::io::duplex(64);
        let r = first_bytes(server, std::time::Duration::from_millis(20)).await.unwrap();
        assert!(r.is_none());
    }
}
