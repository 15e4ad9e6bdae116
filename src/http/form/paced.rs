//! [`Paced`]: the body stream under the minimum-rate and total-time limits.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures::Stream;

use super::parts::Trip;
use super::{FormLimits, RATE_WINDOW};

/// A body stream that fails (and marks `trip`) when it falls behind the
/// minimum rate in a [`RATE_WINDOW`] or runs past the total time; the
/// timer fires on its own, so a stalled client is answered on time.
pub(super) struct Paced<S> {
    inner: Pin<Box<S>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    end: tokio::time::Instant,
    window_end: tokio::time::Instant,
    window_bytes: u64,
    quota: u64,
    trip: Rc<Cell<Trip>>,
    done: bool,
}

impl<S> Paced<S> {
    pub(super) fn new(inner: S, limits: &FormLimits, trip: Rc<Cell<Trip>>) -> Self {
        let now = tokio::time::Instant::now();
        let end = now + limits.timeout;
        let (quota, window_end) = if limits.min_bytes_per_sec == 0 {
            (0, end)
        } else {
            (
                limits
                    .min_bytes_per_sec
                    .saturating_mul(RATE_WINDOW.as_secs()),
                now + RATE_WINDOW,
            )
        };
        Self {
            inner: Box::pin(inner),
            sleep: Box::pin(tokio::time::sleep_until(window_end.min(end))),
            end,
            window_end,
            window_bytes: 0,
            quota,
            trip,
            done: false,
        }
    }

    fn fail(&mut self, why: Trip) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.trip.set(why);
        self.done = true;
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the upload is too slow",
        )))))
    }
}

impl<S> Stream for Paced<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>>,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = tokio::time::Instant::now();
                if now >= self.end {
                    return self.fail(Trip::Late);
                }
                if self.quota > 0 {
                    if now >= self.window_end
                        && self.window_bytes + (chunk.len() as u64) < self.quota
                    {
                        return self.fail(Trip::Slow);
                    }
                    self.window_bytes += chunk.len() as u64;
                    if self.window_bytes >= self.quota {
                        // Quota met: a new window starts now.
                        self.window_bytes = 0;
                        self.window_end = now + RATE_WINDOW;
                        let deadline = self.window_end.min(self.end);
                        self.sleep.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                if self.sleep.as_mut().poll(cx).is_ready() {
                    let why = if tokio::time::Instant::now() >= self.end {
                        Trip::Late
                    } else {
                        Trip::Slow
                    };
                    return self.fail(why);
                }
                Poll::Pending
            }
        }
    }
}
