//! An accepted connection of the gRPC or HTTP port: it holds its place under the port's
//! connection cap (a semaphore permit, released when the connection closes) and, when given
//! an idle timeout, fails with `TimedOut` once nothing was read or written for that long.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// A capped (and optionally idle-bounded) TCP connection.
pub struct Conn {
    io: TcpStream,
    idle: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Wraps `io`, holding `permit` until it closes; with `idle_timeout`, it fails once that
    /// long passed without a byte either way.
    pub fn new(
        io: TcpStream,
        permit: OwnedSemaphorePermit,
        idle_timeout: Option<Duration>,
    ) -> Conn {
        Conn {
            io,
            idle: idle_timeout.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            _permit: permit,
        }
    }

    /// Records traffic: the idle deadline moves.
    fn active(&mut self) {
        if let Some((d, sleep)) = &mut self.idle {
            sleep.as_mut().reset(tokio::time::Instant::now() + *d);
        }
    }

    /// Whether the idle deadline passed (registers for the wake-up when it has not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle
            .as_mut()
            .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready())
    }

    /// `polled`, after recording traffic, or the idle error when the deadline passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.active();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no traffic on the connection for the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.watch(cx, polled)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The gRPC door serves `Conn`s: tonic asks each connection for its peer's address.
#[cfg(feature = "grpc")]
impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
