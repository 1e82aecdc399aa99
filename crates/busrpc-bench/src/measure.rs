//! Measuring round trips the same way for every broker, so that a raw
//! ping-pong and a busrpc call measured in the same run can be compared.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one side (raw or busrpc) measured.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    /// Median round trip at 1 in flight.
    pub p50: Duration,
    /// 99th percentile at 1 in flight.
    pub p99: Duration,
    /// 99.9th percentile at 1 in flight.
    pub p999: Duration,
    /// Round trips per second with many in flight.
    pub per_second: f64,
}

impl Figures {
    /// Figures from a latency histogram (nanoseconds) and a rate.
    pub fn new(latencies: &Histogram<u64>, per_second: f64) -> Self {
        let at = |q| Duration::from_nanos(latencies.value_at_quantile(q));
        Figures {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            per_second,
        }
    }
}

/// Records `samples` sequential round trips of `one` (after a tenth as
/// many to warm up), in a task on the current runtime's workers, where a
/// service's callers run.
pub async fn latencies<F, Fut>(samples: u64, mut one: F) -> Histogram<u64>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let task = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new(3).expect("3 significant figures is valid");
        for n in 0..samples / 10 {
            one(n).await;
        }
        for n in 0..samples {
            let start = Instant::now();
            one(n).await;
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            // Not saturating_record: on an auto-resizing histogram it clamps
            // to the current maximum instead of growing.
            histogram
                .record(nanos)
                .expect("an auto-resizing histogram takes any value");
        }
        histogram
    });
    task.await.expect("the sampling task does not panic")
}

/// Records `samples` round trips of a baseline and of busrpc taken in turn
/// (baseline, busrpc, baseline, ...), after a tenth as many of each to warm
/// up, in one task on the current runtime's workers. Load that comes and
/// goes on a shared machine then falls on both sides alike, where two runs
/// one after the other would each catch a different part of it. Returns
/// the baseline's latencies and busrpc's (nanoseconds).
pub async fn paired_latencies<FA, FutA, FB, FutB>(
    samples: u64,
    mut baseline: FA,
    mut busrpc: FB,
) -> (Histogram<u64>, Histogram<u64>)
where
    FA: FnMut(u64) -> FutA + Send + 'static,
    FutA: Future<Output = ()> + Send,
    FB: FnMut(u64) -> FutB + Send + 'static,
    FutB: Future<Output = ()> + Send,
{
    let task = tokio::spawn(async move {
        let new = || Histogram::<u64>::new(3).expect("3 significant figures is valid");
        let (mut a, mut b) = (new(), new());
        for n in 0..samples / 10 {
            baseline(n).await;
            busrpc(n).await;
        }
        for n in 0..samples {
            for (side, histogram) in [(true, &mut a), (false, &mut b)] {
                let start = Instant::now();
                if side {
                    baseline(n).await;
                } else {
                    busrpc(n).await;
                }
                let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                histogram
                    .record(nanos)
                    .expect("an auto-resizing histogram takes any value");
            }
        }
        (a, b)
    });
    task.await.expect("the sampling task does not panic")
}

/// Runs `lanes` concurrent loops, each a task on the current runtime's
/// workers making `per_lane` round trips with its own `lane(index)`;
/// returns how long they took together. For a harness that wants the time
/// itself (criterion's `iter_custom`); [`throughput`] turns it into a rate.
pub async fn lanes<F, L, Fut>(lanes: u64, per_lane: u64, mut lane: F) -> Duration
where
    F: FnMut(u64) -> L,
    L: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    // Every lane is built before the clock starts: building one may connect.
    let lanes: Vec<L> = (0..lanes).map(&mut lane).collect();
    let start = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .map(|mut one| {
            tokio::spawn(async move {
                for n in 0..per_lane {
                    one(n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a lane does not panic");
    }
    start.elapsed()
}

/// Runs [`lanes`] and returns round trips per second.
pub async fn throughput<F, L, Fut>(lanes: u64, per_lane: u64, lane: F) -> f64
where
    F: FnMut(u64) -> L,
    L: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let elapsed = self::lanes(lanes, per_lane, lane).await;
    (lanes * per_lane) as f64 / elapsed.as_secs_f64()
}

/// Throughput of a baseline and of busrpc measured in `rounds` alternating
/// rounds (baseline, busrpc, baseline, ...), each as [`throughput`]; returns
/// the median rate of each. On a shared machine, load that comes and goes
/// then falls on both sides alike, and one disturbed round does not decide
/// the ratio.
pub async fn paired_throughput<FA, LA, FutA, FB, LB, FutB>(
    rounds: u64,
    lanes: u64,
    per_lane: u64,
    mut baseline: FA,
    mut busrpc: FB,
) -> (f64, f64)
where
    FA: FnMut(u64) -> LA,
    LA: FnMut(u64) -> FutA + Send + 'static,
    FutA: Future<Output = ()> + Send,
    FB: FnMut(u64) -> LB,
    LB: FnMut(u64) -> FutB + Send + 'static,
    FutB: Future<Output = ()> + Send,
{
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        a.push(throughput(lanes, per_lane, &mut baseline).await);
        b.push(throughput(lanes, per_lane, &mut busrpc).await);
    }
    (median(a), median(b))
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    let mid = rates.len() / 2;
    if rates.len().is_multiple_of(2) {
        (rates[mid - 1] + rates[mid]) / 2.0
    } else {
        rates[mid]
    }
}

/// Makes `calls` round trips with `concurrency` of them in flight, each lane a
/// task running `lane(index)`; records every round trip's latency and
/// calls `progress` after each. Returns the latencies and round trips per second.
pub async fn under_load<F, L, Fut>(
    calls: u64,
    concurrency: u64,
    mut lane: F,
    progress: impl Fn() + Send + Sync + 'static,
) -> (Histogram<u64>, f64)
where
    F: FnMut(u64) -> L,
    L: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let concurrency = concurrency.clamp(1, calls.max(1));
    let progress = std::sync::Arc::new(progress);
    let lanes: Vec<L> = (0..concurrency).map(&mut lane).collect();
    let start = Instant::now();
    let tasks: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(index, mut one)| {
            let progress = progress.clone();
            // Spread the calls: the first lanes take one more when they do not divide evenly.
            let share = calls / concurrency + u64::from((index as u64) < calls % concurrency);
            tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new(3).expect("3 significant figures is valid");
                for n in 0..share {
                    let begun = Instant::now();
                    one(n).await;
                    let nanos = u64::try_from(begun.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    histogram
                        .record(nanos)
                        .expect("an auto-resizing histogram takes any value");
                    progress();
                }
                histogram
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    for task in tasks {
        all.add(task.await.expect("a lane does not panic"))
            .expect("histograms of one precision add up");
    }
    let per_second = all.len() as f64 / start.elapsed().as_secs_f64();
    (all, per_second)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A table of raw against busrpc, and their ratios, as text.
pub fn report(title: &str, raw: &Figures, busrpc: &Figures) -> String {
    let mut out = format!("{title}\n");
    out += &format!(
        "{:<8} {:>10} {:>10} {:>10} {:>12}\n",
        "", "p50 (us)", "p99 (us)", "p99.9 (us)", "calls/s"
    );
    for (name, f) in [("raw", raw), ("busrpc", busrpc)] {
        out += &format!(
            "{name:<8} {:>10.1} {:>10.1} {:>10.1} {:>12.0}\n",
            us(f.p50),
            us(f.p99),
            us(f.p999),
            f.per_second
        );
    }
    out += &format!(
        "busrpc/raw: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x; overhead per call (p50 difference) {:.1} us\n",
        us(busrpc.p50) / us(raw.p50),
        us(busrpc.p99) / us(raw.p99),
        busrpc.per_second / raw.per_second,
        us(busrpc.p50) - us(raw.p50),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measures_and_reports() {
        let histogram = latencies(100, |_| tokio::time::sleep(Duration::from_millis(2))).await;
        assert_eq!(histogram.len(), 100, "warm-up rounds are not recorded");
        // A lower bound only (sleeps never end early by a whole millisecond).
        assert!(
            histogram.value_at_quantile(0.5) >= 1_000_000,
            "slept 2 ms each"
        );
        // Each side in its own histogram, the warm-ups in neither.
        let (fast, slow) = paired_latencies(
            20,
            |_| async {},
            |_| tokio::time::sleep(Duration::from_millis(2)),
        )
        .await;
        assert_eq!((fast.len(), slow.len()), (20, 20));
        assert!(
            slow.min() >= 1_000_000 && fast.max() < slow.min(),
            "{} vs {}",
            fast.max(),
            slow.min()
        );
        let rate = throughput(4, 10, |_| |_| async {}).await;
        assert!(rate > 0.0);
        // Four lanes of five 2 ms sleeps run side by side: about 10 ms, not 40.
        let took = lanes(4, 5, |_| |_| tokio::time::sleep(Duration::from_millis(2))).await;
        assert!(took >= Duration::from_millis(10), "{took:?}");
        // The slow side is slower whatever the rounds' order.
        let (fast, slow) = paired_throughput(
            3,
            2,
            5,
            |_| |_| async {},
            |_| |_| tokio::time::sleep(Duration::from_millis(2)),
        )
        .await;
        assert!(fast > slow && slow < 1_000.0, "{fast} vs {slow}");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let (loaded, per_second) = under_load(10, 3, |_| |_| async {}, || {}).await;
        assert_eq!(
            loaded.len(),
            10,
            "every call recorded, the calls spread over the lanes"
        );
        assert!(per_second > 0.0);
        let a = Figures::new(&histogram, rate);
        let text = report("t", &a, &a);
        assert!(
            text.contains("busrpc/raw: p50 1.00x, p99 1.00x, throughput 1.00x"),
            "{text}"
        );
    }
}
