//! The cap on open connections: tonic has none, so the listener's stream of accepted
//! connections is wrapped here.
//!
//! Each accepted connection holds a permit of one semaphore until the connection is dropped
//! (hyper drops it when the connection ends, whoever ends it). When every permit is held the
//! server does not call `accept` at all: new connections wait in the kernel's listen backlog,
//! costing the process no file descriptor and no memory, and are served in order as permits
//! come back. Closing them at once instead would cost an accept and a close each, and turn a
//! full server into a reconnect storm from clients that retry; a connection that waits longer
//! than its client's connect deadline fails on the client's side, as from any busy server.
//!
//! The cap should stay below the open-file limit, since an `accept` that fails with `EMFILE`
//! leaves the connection in the backlog and fails again at once: [`fd_headroom`] says how
//! many connections the limit leaves room for. After a failed `accept` the next one waits a
//! moment, so that such an error is not a busy loop.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Stream, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::Connected;
use tracing::warn;

/// How long `accept` rests after it failed (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How often, at most, the server logs that it is at its connection cap.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// An accepted connection that counts against the cap while it exists.
#[derive(Debug)]
pub(crate) struct Limited<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
}

/// The connections of `incoming`, at most `max` open at a time: the next one is accepted
/// only when fewer than `max` of those already accepted are still open.
pub(crate) fn limit<S, IO, E>(incoming: S, max: usize) -> impl Stream<Item = Result<Limited<IO>, E>>
where
    S: Stream<Item = Result<IO, E>> + Unpin,
{
    let permits = Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)));
    let state = (incoming, permits, false, None::<tokio::time::Instant>);
    futures_util::stream::unfold(state, move |(mut incoming, permits, failed, mut warned)| async move {
        if failed {
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
        }
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if warned.is_none_or(|at| at.elapsed() >= FULL_WARNING_INTERVAL) {
                    warn!(
                        max_connections = max,
                        "at the connection cap: new connections wait in the listen backlog"
                    );
                    warned = Some(tokio::time::Instant::now());
                }
                permits.clone().acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        let accepted = incoming.next().await?.map(|io| Limited { io, _permit: permit });
        let failed = accepted.is_err();
        Some((accepted, (incoming, permits, failed, warned)))
    })
}

/// How many connections the open-file limit leaves room for, besides the `open` files the
/// process has now and `reserve` more for the log's segments, the metrics endpoint and
/// peers; `None` when the limit is unknown or unlimited.
pub(crate) fn fd_headroom(reserve: usize) -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let limit = open_files_soft_limit(&limits)?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(limit.saturating_sub(open).saturating_sub(reserve))
}

/// The soft "Max open files" of a `/proc/<pid>/limits` text (`None` if unlimited).
fn open_files_soft_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The connection's own information (its peer address), so that the layers that read it
/// (`auth`) see the same types as without the cap.
impl<IO: Connected> Connected for Limited<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    #[tokio::test]
    async fn the_connection_past_the_cap_is_accepted_only_when_one_closes() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, ()>>();
        for id in 0..3 {
            tx.send(Ok(id)).unwrap();
        }
        let mut limited = Box::pin(limit(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), 2));
        let first = limited.next().await.unwrap().unwrap();
        let second = limited.next().await.unwrap().unwrap();
        assert_eq!((first.io, second.io), (0, 1));
        // The third is waiting to be accepted, but two are open.
        assert!(limited.next().now_or_never().is_none(), "a third connection was accepted");
        drop(first);
        let third = limited.next().now_or_never().expect("accepted once one closed").unwrap().unwrap();
        assert_eq!(third.io, 2);
        drop((second, tx));
        drop(third);
        assert!(limited.next().await.is_none(), "the stream ends with the listener");
    }

    #[tokio::test]
    async fn a_failed_accept_returns_its_permit() {
        let incoming = futures_util::stream::iter([Err("EMFILE"), Ok(1), Ok(2)]);
        let mut limited = Box::pin(limit(incoming, 1));
        assert_eq!(limited.next().await.unwrap().unwrap_err(), "EMFILE");
        let one = limited.next().await.unwrap().unwrap();
        assert_eq!(one.io, 1);
    }

    #[test]
    fn the_soft_open_files_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(open_files_soft_limit(limits), Some(1024));
        let unlimited = "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(open_files_soft_limit(unlimited), None);
        assert!(fd_headroom(0).is_some(), "this test runs on Linux, with /proc");
    }
}
