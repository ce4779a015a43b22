//! Timeouts that cost little to start and to cancel, for the data plane's workers.
//!
//! Almost every timeout a proxy starts is cancelled: the upstream answers, the client sends its next
//! request. tokio's timer inserts each one into its wheel and takes it out again, and with two such
//! timeouts per request (hyper's wait for the next request head, the upstream exchange) that was
//! about 7% of a plain request's CPU. Here each worker keeps its timeouts in a thread-local queue
//! ordered by deadline, and one driver task per worker sleeps on a single tokio timer until the
//! earliest live one. Starting a timeout is a push onto that queue and cancelling one frees its
//! slot; the driver's timer moves only when a timeout earlier than every other one starts.
//! Cancelled entries leave the queue when they reach its front, or all at once when they outnumber
//! the live ones.
//!
//! A timeout polled on a thread without a driver (outside the workers) sleeps on a tokio timer.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The queue is compacted when it holds this many more entries than twice the live timeouts.
const COMPACT_SLACK: usize = 1024;

thread_local! {
    static TABLE: RefCell<Table> = const { RefCell::new(Table::new()) };
}

/// Numbers the threads' tables, so that a timeout never touches another thread's slots.
static NEXT_TABLE_ID: AtomicU64 = AtomicU64::new(1);

/// A future that completes at its deadline. Dropping it, or setting a new deadline, cancels it.
pub(crate) struct Timeout {
    deadline: Deadline,
    state: State,
}

#[derive(Clone, Copy)]
enum Deadline {
    At(Instant),
    /// This long after the first poll: the clock is read only when something waits.
    After(Duration),
}

enum State {
    /// Not registered anywhere yet: registration waits for the first poll.
    Idle,
    /// In this thread's table.
    Started(Key),
    Elapsed,
    /// On a thread without a driver.
    Tokio(Pin<Box<tokio::time::Sleep>>),
}

impl Timeout {
    /// A timeout that completes at `deadline`.
    pub(crate) fn at(deadline: Instant) -> Timeout {
        Timeout {
            deadline: Deadline::At(deadline),
            state: State::Idle,
        }
    }

    /// A timeout that completes `duration` after it is first polled. Polled after the operation it
    /// bounds, as in `select!`-like loops, it counts from the moment that operation first waits.
    pub(crate) fn after(duration: Duration) -> Timeout {
        Timeout {
            deadline: Deadline::After(duration),
            state: State::Idle,
        }
    }

    /// Cancels the timeout and sets it to complete at `deadline` instead.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = Deadline::At(deadline);
    }

    /// Cancels the timeout and sets it to complete `duration` after its next poll instead.
    pub(crate) fn reset_after(&mut self, duration: Duration) {
        self.cancel();
        self.deadline = Deadline::After(duration);
    }

    /// The deadline, fixed from now if it was relative.
    fn fix_deadline(&mut self) -> Instant {
        let at = match self.deadline {
            Deadline::At(at) => at,
            Deadline::After(duration) => deadline_after(duration),
        };
        self.deadline = Deadline::At(at);
        at
    }

    fn cancel(&mut self) {
        if let State::Started(key) = std::mem::replace(&mut self.state, State::Idle) {
            // The table is gone only while the thread exits, and its slots with it. The waker is
            // dropped after the table is released: dropping it may drop a task, and its timeouts.
            let waker = TABLE.try_with(|table| table.borrow_mut().cancel(key));
            drop(waker);
        }
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Future for Timeout {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Elapsed => return Poll::Ready(()),
                State::Tokio(sleep) => return sleep.as_mut().poll(cx),
                State::Started(key) => {
                    let key = *key;
                    let mut replaced = None;
                    let fired = TABLE.with(|table| {
                        table
                            .borrow_mut()
                            .poll_started(key, cx.waker(), &mut replaced)
                    });
                    drop(replaced);
                    match fired {
                        Some(false) => return Poll::Pending,
                        Some(true) => {
                            this.cancel();
                            this.state = State::Elapsed;
                            return Poll::Ready(());
                        }
                        // The driver ended: start again, on a tokio timer.
                        None => this.cancel(),
                    }
                }
                State::Idle => {
                    let deadline = this.fix_deadline();
                    let started =
                        TABLE.with(|table| table.borrow_mut().start(deadline, cx.waker()));
                    match started {
                        Some((key, driver)) => {
                            this.state = State::Started(key);
                            if let Some(driver) = driver {
                                driver.wake();
                            }
                            return Poll::Pending;
                        }
                        None => {
                            let deadline = tokio::time::Instant::from_std(deadline);
                            this.state = State::Tokio(Box::pin(tokio::time::sleep_until(deadline)));
                        }
                    }
                }
            }
        }
    }
}

impl hyper::rt::Sleep for Timeout {}

/// hyper's timer for connections served on a worker: its sleeps are [`Timeout`]s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WorkerTimer;

impl hyper::rt::Timer for WorkerTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Timeout::after(duration))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Timeout::at(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Timeout>() {
            Some(mut timeout) => timeout.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// Runs this thread's timeouts for as long as it is polled: spawned once on each worker. Until its
/// first poll, and after it is dropped, timeouts on the thread use tokio timers.
pub(crate) async fn drive() {
    let _running = Running;
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    let mut armed = None;
    let mut woken = Vec::new();
    std::future::poll_fn(|cx| {
        loop {
            let now = Instant::now();
            let (next, replaced) = TABLE.with(|table| {
                let mut table = table.borrow_mut();
                let replaced = table.set_driver(cx.waker());
                table.fire(now, &mut woken);
                (table.next_deadline(), replaced)
            });
            drop(replaced);
            for waker in woken.drain(..) {
                waker.wake();
            }
            let Some(next) = next else {
                return Poll::Pending;
            };
            if armed != Some(next) {
                timer.as_mut().reset(tokio::time::Instant::from_std(next));
                armed = Some(next);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

/// Marks the driver gone when it is dropped, and wakes every waiting timeout so that each moves to
/// a tokio timer.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok((driver, waiting)) = TABLE.try_with(|table| table.borrow_mut().stop()) {
            drop(driver);
            for waker in waiting {
                waker.wake();
            }
        }
    }
}

/// `duration` from now; one too large to add means no deadline in practice.
fn deadline_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A started timeout's place in its thread's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    table: u64,
    index: u32,
    generation: u32,
}

/// One thread's timeouts.
struct Table {
    /// Which thread's table this is; numbered when a driver first runs here.
    id: u64,
    /// The driver's waker; `None` while no driver runs on this thread.
    driver: Option<Waker>,
    /// The deadline the driver sleeps until; `None` while it waits for a first timeout.
    wakes_at: Option<Instant>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Started timeouts by deadline, cancelled ones included until they are dropped from it.
    queue: BinaryHeap<Reverse<Entry>>,
    /// Slots in use.
    used: usize,
}

/// A started timeout; its generation changes each time the slot is freed.
struct Slot {
    generation: u32,
    waker: Option<Waker>,
    fired: bool,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deadline: Instant,
    index: u32,
    generation: u32,
}

impl Table {
    const fn new() -> Table {
        Table {
            id: 0,
            driver: None,
            wakes_at: None,
            slots: Vec::new(),
            free: Vec::new(),
            queue: BinaryHeap::new(),
            used: 0,
        }
    }

    /// Registers a timeout; `None` when no driver runs here. Also returns the driver's waker when
    /// the driver has to wake earlier than it planned.
    fn start(&mut self, deadline: Instant, waker: &Waker) -> Option<(Key, Option<Waker>)> {
        self.driver.as_ref()?;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Slot {
                    generation: 0,
                    waker: None,
                    fired: false,
                });
                index
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.waker = Some(waker.clone());
        slot.fired = false;
        let generation = slot.generation;
        self.queue.push(Reverse(Entry {
            deadline,
            index,
            generation,
        }));
        self.used += 1;
        let earlier = self.wakes_at.is_none_or(|at| deadline < at);
        let driver = earlier.then(|| {
            self.wakes_at = Some(deadline);
            self.driver.clone()
        });
        let key = Key {
            table: self.id,
            index,
            generation,
        };
        Some((key, driver.flatten()))
    }

    fn slot(&mut self, key: Key) -> Option<&mut Slot> {
        if key.table != self.id {
            return None;
        }
        self.slots
            .get_mut(key.index as usize)
            .filter(|slot| slot.generation == key.generation)
    }

    /// Whether a started timeout fired; `None` when it is not here or the driver is gone. A waker
    /// it replaces goes to `replaced`.
    fn poll_started(
        &mut self,
        key: Key,
        waker: &Waker,
        replaced: &mut Option<Waker>,
    ) -> Option<bool> {
        let running = self.driver.is_some();
        let slot = self.slot(key)?;
        if slot.fired {
            return Some(true);
        }
        if !running {
            return None;
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *replaced = slot.waker.replace(waker.clone());
        }
        Some(false)
    }

    /// Frees a started timeout's slot; returns its waker.
    fn cancel(&mut self, key: Key) -> Option<Waker> {
        let slot = self.slot(key)?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.fired = false;
        let waker = slot.waker.take();
        self.free.push(key.index);
        self.used -= 1;
        if self.queue.len() > 2 * self.used + COMPACT_SLACK {
            let slots = &self.slots;
            self.queue.retain(|Reverse(entry)| is_live(slots, entry));
        }
        waker
    }

    /// Records the driver's waker; returns the one it replaces.
    fn set_driver(&mut self, waker: &Waker) -> Option<Waker> {
        if self.id == 0 {
            self.id = NEXT_TABLE_ID.fetch_add(1, Ordering::Relaxed);
        }
        if self.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return None;
        }
        self.driver.replace(waker.clone())
    }

    /// Marks every live timeout due by `now` fired, collecting their wakers.
    fn fire(&mut self, now: Instant, woken: &mut Vec<Waker>) {
        while let Some(Reverse(entry)) = self.queue.peek() {
            if entry.deadline > now {
                break;
            }
            let (index, generation) = (entry.index, entry.generation);
            self.queue.pop();
            if let Some(slot) = self.slots.get_mut(index as usize)
                && slot.generation == generation
            {
                slot.fired = true;
                woken.extend(slot.waker.take());
            }
        }
    }

    /// The earliest live deadline, which the driver sleeps until. Cancelled entries in front of it
    /// are dropped from the queue.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse(entry)) = self.queue.peek() {
            if is_live(&self.slots, entry) {
                self.wakes_at = Some(entry.deadline);
                return self.wakes_at;
            }
            self.queue.pop();
        }
        self.wakes_at = None;
        None
    }

    /// The driver is gone: returns its waker and those of the timeouts still waiting.
    fn stop(&mut self) -> (Option<Waker>, Vec<Waker>) {
        self.wakes_at = None;
        self.queue.clear();
        let waiting = self
            .slots
            .iter_mut()
            .filter_map(|slot| slot.waker.take())
            .collect();
        (self.driver.take(), waiting)
    }
}

/// Whether a queue entry belongs to a timeout still waiting.
fn is_live(slots: &[Slot], entry: &Entry) -> bool {
    slots
        .get(entry.index as usize)
        .is_some_and(|slot| slot.generation == entry.generation && !slot.fired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime")
    }

    /// Runs `test` on a worker-like thread: a current-thread runtime, a LocalSet and the driver.
    fn on_worker<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
        let runtime = runtime();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            tokio::task::spawn_local(drive());
            tokio::task::yield_now().await;
            test().await;
        });
    }

    /// Polls `fut` once, in the calling task's context.
    async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
    }

    fn queue_len() -> usize {
        TABLE.with(|table| table.borrow().queue.len())
    }

    fn used() -> usize {
        TABLE.with(|table| table.borrow().used)
    }

    #[test]
    fn a_timeout_completes_at_its_deadline_and_not_before() {
        on_worker(|| async {
            let started = Instant::now();
            Timeout::after(Duration::from_millis(60)).await;
            let waited = started.elapsed();
            assert!(waited >= Duration::from_millis(60), "{waited:?}");
            assert!(waited < Duration::from_millis(1000), "{waited:?}");
            assert_eq!(used(), 0, "a completed timeout frees its slot");
        });
    }

    #[test]
    fn a_later_timeout_started_first_does_not_hold_back_an_earlier_one() {
        on_worker(|| async {
            let mut late = Timeout::after(Duration::from_secs(30));
            assert!(poll_once(&mut late).await.is_pending());
            let started = Instant::now();
            Timeout::after(Duration::from_millis(40)).await;
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(poll_once(&mut late).await.is_pending());
        });
    }

    #[test]
    fn cancelled_timeouts_never_fire_and_do_not_pile_up() {
        on_worker(|| async {
            let mut fired = 0;
            for _ in 0..20_000 {
                let mut timeout = Timeout::after(Duration::from_millis(1));
                if poll_once(&mut timeout).await.is_ready() {
                    fired += 1;
                }
            }
            assert_eq!(fired, 0, "each was cancelled before its deadline");
            assert_eq!(used(), 0);
            assert!(queue_len() <= COMPACT_SLACK + 1, "queue {}", queue_len());
            // Still ordered and working after all that.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let started = Instant::now();
            Timeout::after(Duration::from_millis(20)).await;
            assert!(started.elapsed() >= Duration::from_millis(20));
        });
    }

    #[test]
    fn reset_moves_the_deadline_both_ways() {
        on_worker(|| async {
            let mut timeout = Timeout::after(Duration::from_secs(60));
            assert!(poll_once(&mut timeout).await.is_pending());
            let started = Instant::now();
            timeout.reset_after(Duration::from_millis(30));
            (&mut timeout).await;
            assert!(started.elapsed() >= Duration::from_millis(30));
            assert!(started.elapsed() < Duration::from_secs(5));
            assert!(poll_once(&mut timeout).await.is_ready(), "stays elapsed");
            timeout.reset_after(Duration::from_secs(60));
            assert!(poll_once(&mut timeout).await.is_pending(), "armed again");
        });
    }

    #[test]
    fn hyper_resets_a_sleep_in_place() {
        use hyper::rt::Timer;
        on_worker(|| async {
            let mut sleep = WorkerTimer.sleep(Duration::from_secs(60));
            assert!(poll_once(&mut sleep).await.is_pending());
            let started = Instant::now();
            WorkerTimer.reset(&mut sleep, Instant::now() + Duration::from_millis(20));
            sleep.await;
            assert!(started.elapsed() >= Duration::from_millis(20));
            assert_eq!(used(), 0);
        });
    }

    #[test]
    fn without_a_driver_a_timeout_sleeps_on_tokio() {
        let runtime = runtime();
        runtime.block_on(async {
            let started = Instant::now();
            Timeout::after(Duration::from_millis(30)).await;
            assert!(started.elapsed() >= Duration::from_millis(30));
            assert_eq!(used(), 0, "nothing registered without a driver");
        });
    }

    #[test]
    fn waiting_timeouts_survive_the_driver() {
        let runtime = runtime();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let driver = tokio::task::spawn_local(drive());
            tokio::task::yield_now().await;
            let mut timeout = Timeout::after(Duration::from_millis(40));
            assert!(poll_once(&mut timeout).await.is_pending());
            assert_eq!(used(), 1);
            driver.abort();
            let _ = driver.await;
            let started = Instant::now();
            timeout.await;
            assert!(started.elapsed() < Duration::from_secs(5));
        });
    }
}
