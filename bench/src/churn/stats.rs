//! Latency percentiles.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Summary {
    /// Summarises `samples` (nearest-rank percentiles). Empty input gives
    /// zeros with `n == 0`.
    pub fn of(samples: &[Duration]) -> Self {
        let sorted = sorted_us(samples);
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sorted.iter().sum::<f64>() / sorted.len() as f64
        };
        Summary {
            n: sorted.len(),
            p50_us: percentile(&sorted, 50.0),
            p90_us: percentile(&sorted, 90.0),
            p99_us: percentile(&sorted, 99.0),
            max_us: sorted.last().copied().unwrap_or(0.0),
            mean_us: mean,
        }
    }
}

/// Samples in microseconds, in their order.
pub fn in_us(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| d.as_secs_f64() * 1e6).collect()
}

/// Samples in microseconds, ascending.
pub fn sorted_us(samples: &[Duration]) -> Vec<f64> {
    let mut us = in_us(samples);
    us.sort_by(f64::total_cmp);
    us
}

/// Nearest-rank percentile of ascending `sorted` (`q` in 0..=100): the
/// smallest sample such that at least q % of the samples are ≤ it.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| Duration::from_micros(x)).collect()
    }

    #[test]
    fn nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), 50.0);
        assert_eq!(percentile(&s, 90.0), 90.0);
        assert_eq!(percentile(&s, 99.0), 99.0);
        assert_eq!(percentile(&s, 100.0), 100.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let s = Summary::of(&us(&[30, 10, 20, 40]));
        assert_eq!(s.n, 4);
        assert_eq!(s.p50_us, 20.0);
        assert_eq!(s.p99_us, 40.0);
        assert_eq!(s.max_us, 40.0);
        assert_eq!(s.mean_us, 25.0);
        assert_eq!(Summary::of(&[]).n, 0);
    }
}
