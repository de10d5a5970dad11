//! Percentiles of latency samples, and the JSON shape they are written in.

use std::time::Duration;

use serde_json::{Value, json};

/// p50/p95/max (and the sample count) in milliseconds; `null` figures when
/// there are no samples.
pub fn latency_ms(samples: &[Duration]) -> Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "p50": percentile(&ms, 0.50),
        "p95": percentile(&ms, 0.95),
        "max": ms.last().copied(),
        "samples": ms.len(),
    })
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        let j = latency_ms(&[Duration::from_millis(3), Duration::from_millis(1)]);
        assert_eq!(j["max"], 3.0);
        assert_eq!(j["samples"], 2);
    }
}
