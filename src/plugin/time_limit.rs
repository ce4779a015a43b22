//! The time limit on Lua. Every entry into Lua on a thread (a phase call, each poll of a phase that
//! yields, a timer callback, a schema check, loading a plugin) is a stretch that must end within
//! `plugin_time_limit`; time spent waiting in `ngx.sleep` or `resty.http` does not count. The VM's
//! instruction-count hook calls [`overdue`] and stops the code that overran.
//!
//! A stretch reads the clock only when the hook first checks it: most stretches end before the hook
//! runs at all, and the few thousand instructions before that first check are well inside any limit.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The deadline of the stretch of Lua running on a thread.
#[derive(Clone, Copy)]
enum Deadline {
    /// No stretch is running.
    None,
    /// A stretch with this limit started and has not been checked yet.
    Starting(Duration),
    /// The stretch must end by then.
    At(Instant),
    /// The limit is too large to be a point in time.
    Never,
}

thread_local! {
    static DEADLINE: Cell<Deadline> = const { Cell::new(Deadline::None) };
}

/// Whether the stretch of Lua running on this thread is past its deadline.
pub(crate) fn overdue() -> bool {
    DEADLINE.with(|d| match d.get() {
        Deadline::None | Deadline::Never => false,
        Deadline::Starting(limit) => {
            d.set(
                Instant::now()
                    .checked_add(limit)
                    .map_or(Deadline::Never, Deadline::At),
            );
            false
        }
        Deadline::At(deadline) => Instant::now() > deadline,
    })
}

/// A stretch of Lua under a deadline; dropping it ends the stretch.
pub(crate) struct Stretch {
    previous: Deadline,
}

/// Starts a stretch of Lua that must end within `limit`.
pub(crate) fn start(limit: Duration) -> Stretch {
    Stretch {
        previous: DEADLINE.with(|d| d.replace(Deadline::Starting(limit))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretch_counts_its_limit_from_the_first_check() {
        assert!(!overdue(), "no stretch, no deadline");
        let outer = start(Duration::ZERO);
        assert!(!overdue(), "the first check starts the clock");
        std::thread::sleep(Duration::from_millis(2));
        assert!(overdue());
        {
            let _inner = start(Duration::from_secs(3600));
            assert!(!overdue());
            assert!(!overdue());
        }
        assert!(overdue(), "the outer stretch's deadline is back");
        drop(outer);
        assert!(!overdue());
    }

    #[test]
    fn a_limit_too_large_for_the_clock_never_expires() {
        let _stretch = start(Duration::MAX);
        assert!(!overdue());
        assert!(!overdue());
    }
}
