//! When each request is sent: the open-loop schedule, the pacer thread that follows it, and
//! the closed-loop alternative.
//!
//! Open loop: request `k` (counted over the whole run, all workers) is *intended* to go out
//! at `start + k / rate`. Latency is measured from that intended time, not from when the
//! request actually left, so a server that stalls is charged for every request that should
//! have been sent during the stall (no coordinated omission). Request `k` belongs to worker
//! `k % workers`, so each worker sees an evenly spaced share.
//!
//! The pacer is one OS thread with `thread::sleep` (tens of microseconds late on Linux),
//! because tokio's timer has a 1 ms granularity, which would be most of a 1 ms latency
//! budget. When it wakes late it sends every request that is due at once.

use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since the first call in this process: the one clock that producers (which
/// embed it in values) and consumers (which subtract it) share.
pub fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// An open-loop schedule: `rate` requests per second from `start_ns` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    start_ns: u64,
    rate_per_s: u64,
}

impl Schedule {
    /// A schedule of `rate_per_s` (at least 1) requests per second from `start_ns`.
    pub fn new(start_ns: u64, rate_per_s: u64) -> Schedule {
        assert!(rate_per_s > 0, "an open-loop rate must be positive");
        Schedule { start_ns, rate_per_s }
    }

    /// When request `k` is intended to be sent.
    pub fn intended_ns(&self, k: u64) -> u64 {
        self.start_ns + (u128::from(k) * 1_000_000_000 / u128::from(self.rate_per_s)) as u64
    }
}

/// How many requests a run sends: a count, or as many as fit in a duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Exactly this many requests over all workers.
    Requests(u64),
    /// Requests until this long after the start.
    Duration(Duration),
}

/// Where a worker gets its next request: the send time to measure from, or `None` when the
/// run is over.
pub enum Source {
    /// Closed loop: a request whenever the worker is ready, until the shared budget or the
    /// deadline runs out; measured from now.
    Closed {
        /// Requests left to claim (over all workers), when the run is counted.
        left: Option<Arc<AtomicU64>>,
        /// When the run ends, when it is timed.
        deadline_ns: Option<u64>,
    },
    /// Open loop: intended send times from the pacer.
    Open(mpsc::Receiver<u64>),
}

impl Source {
    /// The next request's send time (intended, in open loop).
    pub async fn next(&mut self) -> Option<u64> {
        match self {
            Source::Closed { left, deadline_ns } => {
                if let Some(left) = left
                    && left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err()
                {
                    return None;
                }
                let now = now_ns();
                match deadline_ns {
                    Some(deadline) if now >= *deadline => None,
                    _ => Some(now),
                }
            }
            Source::Open(rx) => rx.recv().await,
        }
    }
}

/// Sources for `workers` workers: closed loop when `rate_per_s` is `None`, otherwise fed
/// by a pacer thread (returned) that follows the schedule from `start_ns`.
pub fn sources(
    workers: usize,
    limit: Limit,
    rate_per_s: Option<u64>,
    start_ns: u64,
) -> (Vec<Source>, Option<std::thread::JoinHandle<()>>) {
    let deadline_ns = match limit {
        Limit::Duration(d) => Some(start_ns + d.as_nanos() as u64),
        Limit::Requests(_) => None,
    };
    let Some(rate) = rate_per_s else {
        let left = match limit {
            Limit::Requests(n) => Some(Arc::new(AtomicU64::new(n))),
            Limit::Duration(_) => None,
        };
        let sources = (0..workers).map(|_| Source::Closed { left: left.clone(), deadline_ns }).collect();
        return (sources, None);
    };
    let schedule = Schedule::new(start_ns, rate);
    // Deep enough that a worker's queue absorbs a stall of about a second: past that the
    // pacer blocks, and the delay still counts, because latency is taken from the
    // intended time.
    let depth = (rate as usize / workers.max(1)).clamp(64, 1 << 16);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(depth)).unzip();
    let count = match limit {
        Limit::Requests(n) => n,
        Limit::Duration(_) => u64::MAX,
    };
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || pace(&schedule, count, deadline_ns, &senders))
        .expect("spawning the pacer thread");
    (receivers.into_iter().map(Source::Open).collect(), Some(pacer))
}

/// Hands request `k` to worker `k % workers` at its intended time, until `count` requests
/// or the deadline. Dropping the senders at the end tells the workers the run is over.
fn pace(schedule: &Schedule, count: u64, deadline_ns: Option<u64>, senders: &[mpsc::Sender<u64>]) {
    for k in 0..count {
        let intended = schedule.intended_ns(k);
        if deadline_ns.is_some_and(|deadline| intended >= deadline) {
            return;
        }
        let now = now_ns();
        if intended > now {
            std::thread::sleep(Duration::from_nanos(intended - now));
        }
        if senders[(k % senders.len() as u64) as usize].blocking_send(intended).is_err() {
            return; // a worker failed; the run reports its error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced_from_the_start() {
        let schedule = Schedule::new(1_000, 10_000); // one every 100 µs
        assert_eq!(schedule.intended_ns(0), 1_000);
        assert_eq!(schedule.intended_ns(1), 101_000);
        assert_eq!(schedule.intended_ns(10_000), 1_000_000_000 + 1_000);
    }

    #[test]
    fn rates_that_do_not_divide_a_second_do_not_drift() {
        let schedule = Schedule::new(0, 3);
        assert_eq!(schedule.intended_ns(1), 333_333_333);
        assert_eq!(schedule.intended_ns(3), 1_000_000_000);
        assert_eq!(schedule.intended_ns(3_000_000), 1_000_000 * 1_000_000_000);
    }

    #[tokio::test]
    async fn closed_sources_share_a_request_budget() {
        let (mut sources, pacer) = sources(3, Limit::Requests(10), None, now_ns());
        assert!(pacer.is_none());
        let mut claimed = 0;
        for source in &mut sources {
            while source.next().await.is_some() {
                claimed += 1;
            }
        }
        assert_eq!(claimed, 10);
    }

    #[tokio::test]
    async fn the_pacer_deals_requests_round_robin_in_schedule_order() {
        let start = now_ns();
        let (sources, pacer) = sources(2, Limit::Requests(5), Some(1_000_000), start);
        let schedule = Schedule::new(start, 1_000_000);
        let mut got = Vec::new();
        for mut source in sources {
            let mut times = Vec::new();
            while let Some(t) = source.next().await {
                times.push(t);
            }
            got.push(times);
        }
        pacer.unwrap().join().unwrap();
        let want = |ks: &[u64]| ks.iter().map(|&k| schedule.intended_ns(k)).collect::<Vec<_>>();
        assert_eq!(got, vec![want(&[0, 2, 4]), want(&[1, 3])]);
    }

    #[tokio::test]
    async fn a_timed_open_run_stops_at_its_deadline() {
        let start = now_ns();
        let (sources, pacer) = sources(1, Limit::Duration(Duration::from_millis(20)), Some(1_000), start);
        let mut source = sources.into_iter().next().unwrap();
        let mut n = 0;
        while source.next().await.is_some() {
            n += 1;
        }
        pacer.unwrap().join().unwrap();
        assert_eq!(n, 20); // requests at 0, 1, ..., 19 ms
    }
}
