//! Client-side pacing of AWS API calls: one evenly spaced schedule per
//! operation, so discovery stays within AWS's published request rates (e.g.
//! Organizations' ListAccounts, 8 requests/s per account) instead of relying
//! on being throttled. Throttling that still happens is retried by the SDK.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct Throttle {
    /// None: unpaced (a local fake, or a benchmark of the server alone).
    interval: Option<Duration>,
    /// Operations with a documented rate of their own (requests per second).
    rates: BTreeMap<&'static str, f64>,
    next: Mutex<BTreeMap<&'static str, Instant>>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Throttle {
    /// `per_second` requests per operation; 0 or less turns pacing off.
    pub fn new(per_second: f64) -> Self {
        Self {
            interval: (per_second > 0.0).then(|| Duration::from_secs_f64(1.0 / per_second)),
            rates: BTreeMap::new(),
            next: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// As `new`, with some operations at their own (lower) documented rates;
    /// those too are off when pacing is.
    pub fn with_rates(per_second: f64, rates: &[(&'static str, f64)]) -> Self {
        Self {
            rates: rates.iter().copied().collect(),
            ..Self::new(per_second)
        }
    }

    /// Waits for the operation's next slot and counts the call.
    pub async fn wait(&self, operation: &'static str) {
        *self.calls.lock().expect("calls lock").entry(operation).or_default() += 1;
        let Some(default) = self.interval else { return };
        let interval = match self.rates.get(operation) {
            Some(rate) if *rate > 0.0 => Duration::from_secs_f64(1.0 / rate).max(default),
            _ => default,
        };
        let slot = {
            let mut next = self.next.lock().expect("throttle lock");
            let now = Instant::now();
            let entry = next.entry(operation).or_insert(now);
            let slot = (*entry).max(now);
            *entry = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Calls made so far, per operation.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().expect("calls lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_of_one_operation_are_spaced_and_others_are_not_held_up() {
        let throttle = Throttle::new(8.0);
        let start = Instant::now();
        for _ in 0..9 {
            throttle.wait("ListAccountsForParent").await;
        }
        // Nine calls at 8/s: the ninth starts one second after the first.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        throttle.wait("ListRoots").await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(throttle.calls()["ListAccountsForParent"], 9);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_turns_pacing_off() {
        let throttle = Throttle::new(0.0);
        let start = Instant::now();
        for _ in 0..100 {
            throttle.wait("ListAccounts").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
