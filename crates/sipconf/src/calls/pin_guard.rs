//! PIN guessing, slowed and then locked out per source address
//! (docs/security.md, "PIN guessing"): each wrong PIN from an address makes
//! that address wait before its next try, `[pin] delay_ms` at first and
//! twice as long each time; after `max_failures` wrong PINs the address is
//! locked out of every PIN room for `lockout_s`, then starts over. A source
//! quiet for `lockout_s` since its last wrong PIN starts over too, and the
//! right PIN clears its count. Callers from other addresses never notice.
//!
//! Owns: the count of wrong PINs per address and the counters `/metrics`
//! reads. Never touches: the lobby's digits, calls, timers or the clock
//! (time comes in as `now`; the switchboard keeps the timers).

use crate::config::PinLimits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Addresses remembered at most; beyond it the one quiet longest is
/// forgotten first (a flood of addresses cannot grow memory without bound).
const MAX_SOURCES: usize = 4096;

/// The longest wait between two tries, however many failures came before.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// Counters for `/metrics`, shared with the API.
#[derive(Debug, Default)]
pub struct PinStats {
    /// Wrong PINs entered.
    pub failures: AtomicU64,
    /// Times an address was locked out.
    pub lockouts: AtomicU64,
    /// Tries refused because the address was locked out.
    pub refused: AtomicU64,
    /// Addresses locked out now (updated as they come and go).
    pub locked_now: AtomicU64,
}

/// What one wrong PIN from an address leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The address's next try waits this long.
    Delay(Duration),
    /// The address is locked out until then.
    LockedOut { until: Instant },
}

#[derive(Clone, Copy, Debug)]
struct Source {
    failures: u32,
    last_failure_at: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct PinGuard {
    limits: PinLimits,
    sources: HashMap<IpAddr, Source>,
    stats: Arc<PinStats>,
}

impl PinGuard {
    pub fn new(limits: PinLimits, stats: Arc<PinStats>) -> PinGuard {
        PinGuard {
            limits,
            sources: HashMap::new(),
            stats,
        }
    }

    #[cfg(test)]
    pub fn stats(&self) -> Arc<PinStats> {
        Arc::clone(&self.stats)
    }

    /// Until when `ip` is locked out, if it is at `now`.
    pub fn locked_until(&mut self, ip: IpAddr, now: Instant) -> Option<Instant> {
        self.forget_expired(ip, now);
        self.sources.get(&ip)?.locked_until
    }

    /// A try from a locked-out address was refused.
    pub fn refused(&self) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A wrong PIN from `ip` at `now`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> Failure {
        self.forget_expired(ip, now);
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.forget_quietest();
        }
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let source = self.sources.entry(ip).or_insert(Source {
            failures: 0,
            last_failure_at: now,
            locked_until: None,
        });
        source.failures += 1;
        source.last_failure_at = now;
        if let Some(until) = source.locked_until {
            return Failure::LockedOut { until };
        }
        if source.failures >= self.limits.max_failures {
            let until = now + self.limits.lockout;
            source.locked_until = Some(until);
            self.stats.lockouts.fetch_add(1, Ordering::Relaxed);
            self.stats.locked_now.fetch_add(1, Ordering::Relaxed);
            return Failure::LockedOut { until };
        }
        let doublings = (source.failures - 1).min(16);
        let delay = self.limits.first_delay.saturating_mul(1 << doublings);
        Failure::Delay(delay.min(MAX_DELAY))
    }

    /// The right PIN from `ip`: its count starts over.
    pub fn succeeded(&mut self, ip: IpAddr) {
        if let Some(source) = self.sources.remove(&ip) {
            if source.locked_until.is_some() {
                self.stats.locked_now.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Forgets `ip` once its lockout is over, or when it has been quiet for
    /// `lockout` since its last wrong PIN.
    fn forget_expired(&mut self, ip: IpAddr, now: Instant) {
        let Some(source) = self.sources.get(&ip) else {
            return;
        };
        let over = match source.locked_until {
            Some(until) => now >= until,
            None => now.saturating_duration_since(source.last_failure_at) >= self.limits.lockout,
        };
        if over {
            self.succeeded(ip);
        }
    }

    fn forget_quietest(&mut self) {
        let quietest = self
            .sources
            .iter()
            .filter(|(_, source)| source.locked_until.is_none())
            .min_by_key(|(_, source)| source.last_failure_at)
            .or_else(|| {
                self.sources
                    .iter()
                    .min_by_key(|(_, source)| source.last_failure_at)
            })
            .map(|(ip, _)| *ip);
        if let Some(ip) = quietest {
            self.succeeded(ip);
        }
    }

    /// Addresses remembered now.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> PinGuard {
        PinGuard::new(
            PinLimits {
                first_delay: Duration::from_secs(1),
                max_failures: 4,
                lockout: Duration::from_secs(300),
            },
            Arc::new(PinStats::default()),
        )
    }

    const GUESSER: [u8; 4] = [198, 51, 100, 7];

    #[test]
    fn wrong_pins_double_the_wait_then_lock_the_address_out_until_the_lockout_ends() {
        let mut guard = guard();
        let ip = IpAddr::from(GUESSER);
        let start = Instant::now();
        let delays: Vec<Failure> = (0..3).map(|_| guard.failed(ip, start)).collect();
        let seconds = |s| Failure::Delay(Duration::from_secs(s));
        assert_eq!(delays, [seconds(1), seconds(2), seconds(4)]);
        let until = start + Duration::from_secs(300);
        assert_eq!(guard.failed(ip, start), Failure::LockedOut { until });
        assert_eq!(guard.locked_until(ip, start), Some(until));
        let almost = until - Duration::from_millis(1);
        assert_eq!(guard.locked_until(ip, almost), Some(until));
        let stats = guard.stats();
        assert_eq!(stats.failures.load(Ordering::Relaxed), 4);
        assert_eq!(stats.lockouts.load(Ordering::Relaxed), 1);
        assert_eq!(stats.locked_now.load(Ordering::Relaxed), 1);
        // Over: the address starts afresh.
        assert_eq!(guard.locked_until(ip, until), None);
        assert_eq!(stats.locked_now.load(Ordering::Relaxed), 0);
        assert_eq!(guard.failed(ip, until), seconds(1));
    }

    #[test]
    fn another_address_is_not_slowed_by_a_guesser() {
        let mut guard = guard();
        let now = Instant::now();
        for _ in 0..4 {
            guard.failed(IpAddr::from(GUESSER), now);
        }
        let colleague = IpAddr::from([192, 0, 2, 10]);
        assert_eq!(guard.locked_until(colleague, now), None);
        assert_eq!(
            guard.failed(colleague, now),
            Failure::Delay(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_right_pin_or_a_quiet_lockout_period_clears_the_count() {
        let mut guard = guard();
        let ip = IpAddr::from(GUESSER);
        let start = Instant::now();
        guard.failed(ip, start);
        guard.failed(ip, start);
        guard.succeeded(ip);
        assert_eq!(
            guard.failed(ip, start),
            Failure::Delay(Duration::from_secs(1))
        );
        let quiet = start + Duration::from_secs(300);
        assert_eq!(
            guard.failed(ip, quiet),
            Failure::Delay(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_flood_of_addresses_is_remembered_up_to_a_bound() {
        let mut guard = guard();
        let now = Instant::now();
        for n in 0..(MAX_SOURCES as u32 + 100) {
            guard.failed(IpAddr::from(n.to_be_bytes()), now);
        }
        assert_eq!(guard.sources(), MAX_SOURCES);
    }
}
