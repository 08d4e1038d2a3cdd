//! Tickets: how a caller waits for an append, blocking or as a future.

use std::{
    future::{Future, IntoFuture},
    pin::Pin,
    task::{Context, Poll},
};

use crate::error::{Error, Result};

/// A pending append; [`wait`](AppendTicket::wait) for it or `.await` it.
#[must_use = "an append is acknowledged through its ticket"]
pub struct AppendTicket {
    pub(super) rx: oneshot::Receiver<Result<u64>>,
}

impl AppendTicket {
    /// Blocks until the append completes; returns the first offset.
    pub fn wait(self) -> Result<u64> {
        self.rx.recv().unwrap_or(Err(Error::Closed))
    }
}

/// Entries handed to [`Log::append_entries`](crate::Log::append_entries): completes once they
/// are readable.
#[must_use = "entries are readable only once the ticket completes"]
pub struct Published {
    pub(super) rx: Vec<oneshot::Receiver<Result<()>>>,
}

impl Published {
    /// Blocks until the entries are readable (or the append failed).
    pub fn wait(self) -> Result<()> {
        for rx in self.rx {
            rx.recv().unwrap_or(Err(Error::Closed))?;
        }
        Ok(())
    }
}

impl IntoFuture for Published {
    type Output = Result<()>;
    type IntoFuture = PublishedFuture;
    fn into_future(self) -> PublishedFuture {
        PublishedFuture { rx: self.rx.into_iter().map(IntoFuture::into_future).collect() }
    }
}

/// The future of a [`Published`] ticket.
pub struct PublishedFuture {
    rx: std::collections::VecDeque<oneshot::AsyncReceiver<Result<()>>>,
}

impl Future for PublishedFuture {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while let Some(rx) = self.rx.front_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    self.rx.pop_front();
                    result.unwrap_or(Err(Error::Closed))?;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl IntoFuture for AppendTicket {
    type Output = Result<u64>;
    type IntoFuture = AppendFuture;
    fn into_future(self) -> AppendFuture {
        AppendFuture { rx: self.rx.into_future() }
    }
}

/// The future of an [`AppendTicket`].
pub struct AppendFuture {
    rx: oneshot::AsyncReceiver<Result<u64>>,
}

impl Future for AppendFuture {
    type Output = Result<u64>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(Error::Closed)))
    }
}
