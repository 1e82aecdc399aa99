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

/// Runs `lanes` concurrent loops, each a task making `per_lane` round trips
/// with its own `lane(index)`; returns round trips per second.
pub async fn throughput<F, L, Fut>(lanes: u64, per_lane: u64, mut lane: F) -> f64
where
    F: FnMut(u64) -> L,
    L: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let lanes: Vec<L> = (0..lanes).map(&mut lane).collect();
    let count = lanes.len() as u64 * per_lane;
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
    count as f64 / start.elapsed().as_secs_f64()
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
        let rate = throughput(4, 10, |_| |_| async {}).await;
        assert!(rate > 0.0);
        let a = Figures::new(&histogram, rate);
        let text = report("t", &a, &a);
        assert!(
            text.contains("busrpc/raw: p50 1.00x, p99 1.00x, throughput 1.00x"),
            "{text}"
        );
    }
}
