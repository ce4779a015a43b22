//! The time limit on Lua. Every entry into Lua on a thread (a phase call, each poll of a phase that
//! yields, a timer callback, a schema check, loading a plugin) is a stretch that must end within
//! `plugin_time_limit`; time spent waiting in `ngx.sleep` or `resty.http` does not count. The VM's
//! instruction-count hook calls [`overdue`] and stops the code that overran.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

thread_local! {
    /// When the stretch of Lua running on this thread must end.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Whether the stretch of Lua running on this thread is past its deadline.
pub(crate) fn overdue() -> bool {
    DEADLINE
        .with(Cell::get)
        .is_some_and(|deadline| Instant::now() > deadline)
}

/// A stretch of Lua under a deadline; dropping it ends the stretch.
pub(crate) struct Stretch {
    previous: Option<Instant>,
}

/// Starts a stretch of Lua that must end within `limit`.
pub(crate) fn start(limit: Duration) -> Stretch {
    let deadline = Instant::now().checked_add(limit);
    Stretch {
        previous: DEADLINE.with(|d| d.replace(deadline)),
    }
}

impl Drop for Stretch {
    fn drop(&mut self) {
        DEADLINE.with(|d| d.set(self.previous));
    }
}

pin_project_lite::pin_project! {
    /// A future whose every poll is a stretch of Lua under the time limit.
    pub(crate) struct Limited<F> {
        limit: Duration,
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for Limited<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _stretch = start(*this.limit);
        this.inner.poll(cx)
    }
}

/// Runs every poll of `inner` as a stretch of Lua limited to `limit`.
pub(crate) fn limited<F: Future>(limit: Duration, inner: F) -> Limited<F> {
    Limited { limit, inner }
}
