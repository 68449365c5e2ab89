//! Per-source limits on SIP requests (docs/security.md, "Per-source limits"):
//! who may send requests at all (`[sip] allow` / `deny`), a token bucket of
//! requests per source IP, and each source's share of the transaction table.
//! The endpoint asks [`SourceGuard::screen`] about every request that is not
//! an ACK and not within a call it knows, so calls that are up can always
//! hang up and re-INVITE, whatever their source has sent.
//!
//! Owns: the buckets and transaction counts per IP, bounded, and the counters
//! `/metrics` reads. Never touches: sockets, the clock (time comes in as
//! `now`), calls (the cap on unanswered INVITEs counts the endpoint's calls).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Sources whose buckets are remembered at most. When full, the buckets that
/// have refilled (their state is a fresh source's, so forgetting them loses
/// nothing) are forgotten; if none has, the fullest one, so a flooder's empty
/// bucket is the last to go. A flood from many addresses cannot grow memory
/// without bound.
pub const MAX_SOURCES: usize = 4096;

/// A range of addresses, `192.168.1.0/24` or `2001:db8::/32`; a bare address
/// is the range of that one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a text is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("`{0}` is not an address or a range like \"192.168.1.0/24\" or \"2001:db8::/32\"")]
    Malformed(String),
    #[error("`{0}`: the prefix length is longer than the address ({1} bits)")]
    PrefixTooLong(String, u8),
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let malformed = || CidrError::Malformed(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| malformed())?;
        let bits = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix_len = match prefix {
            Some(prefix) => prefix.trim().parse::<u8>().map_err(|_| malformed())?,
            None => bits,
        };
        if prefix_len > bits {
            return Err(CidrError::PrefixTooLong(text.to_owned(), bits));
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

impl Cidr {
    /// Whether `ip` is in the range. An IPv4 range never holds an IPv6
    /// address: the transport hands IPv4 peers of a dual-stack socket over as
    /// the IPv4 addresses they are.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => same_prefix(
                network.to_bits().into(),
                ip.to_bits().into(),
                32,
                self.prefix_len,
            ),
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                same_prefix(network.to_bits(), ip.to_bits(), 128, self.prefix_len)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, bits: u32, prefix_len: u8) -> bool {
    let host_bits = bits - u32::from(prefix_len);
    host_bits >= bits || (a ^ b) >> host_bits == 0
}

/// The limits, from `[sip]` (see config.rs for the keys and defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceLimits {
    /// Requests may come only from these ranges; empty: from anywhere.
    pub allow: Vec<Cidr>,
    /// Requests from these ranges are dropped, even when `allow` holds them.
    pub deny: Vec<Cidr>,
    /// Tokens a source's bucket gains per second: its sustained request rate.
    pub requests_per_s: u32,
    /// Tokens a bucket holds at most: the burst a quiet source may send at once.
    pub request_burst: u32,
    /// Server transactions not part of a call (OPTIONS, refused INVITEs,
    /// stray BYEs) one source may hold at once.
    pub transactions_per_ip: usize,
    /// INVITEs answered but not yet ACKed, or not yet answered, per source IP
    /// and in all: each holds an RTP port pair.
    pub pending_invites_per_ip: usize,
    pub pending_invites: usize,
}

impl Default for SourceLimits {
    /// The shipped defaults (config/sipconf.toml).
    fn default() -> Self {
        SourceLimits {
            allow: Vec::new(),
            deny: Vec::new(),
            requests_per_s: 200,
            request_burst: 400,
            transactions_per_ip: 256,
            pending_invites_per_ip: 32,
            pending_invites: 128,
        }
    }
}

/// Counters for `/metrics`, shared with the API.
#[derive(Debug, Default)]
pub struct LimitStats {
    /// Requests dropped: from a denied source (or one not allowed).
    pub denied: AtomicU64,
    /// Requests dropped: their source's bucket was empty.
    pub over_rate: AtomicU64,
    /// Requests refused or dropped: their source held its share of the
    /// transaction table.
    pub over_transactions: AtomicU64,
    /// INVITEs refused with 503: too many unanswered or unACKed INVITEs from
    /// their source, or in all.
    pub over_pending_invites: AtomicU64,
    /// Sources whose buckets are remembered now.
    pub sources_tracked: AtomicU64,
}

/// What kind of request is screened: OPTIONS (pings and scanners) is never
/// answered over a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Options,
    Other,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Send nothing: a denied source, or one over its rate (answering a
    /// flood doubles it; a real phone retransmits and gets in when its
    /// bucket has refilled).
    Drop,
    /// Answer 503 with Retry-After and keep no state.
    Refuse,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

#[derive(Debug)]
pub struct SourceGuard {
    limits: SourceLimits,
    buckets: HashMap<IpAddr, Bucket>,
    /// Server transactions held per source that count against its share;
    /// an address leaves the map when its count drops to zero, so the map is
    /// no bigger than the transaction table.
    transactions: HashMap<IpAddr, usize>,
    stats: Arc<LimitStats>,
}

impl SourceGuard {
    pub fn new(limits: SourceLimits, stats: Arc<LimitStats>) -> SourceGuard {
        SourceGuard {
            limits,
            buckets: HashMap::new(),
            transactions: HashMap::new(),
            stats,
        }
    }

    pub fn limits(&self) -> &SourceLimits {
        &self.limits
    }

    /// Whether `ip` may send requests at all: deny wins over allow.
    pub fn admits(&self, ip: IpAddr) -> bool {
        !self.limits.deny.iter().any(|range| range.contains(ip))
            && (self.limits.allow.is_empty()
                || self.limits.allow.iter().any(|range| range.contains(ip)))
    }

    /// The verdict on a request from `ip` at `now` that is neither an ACK nor
    /// within a known call; a passing request takes a token from its bucket.
    pub fn screen(&mut self, now: Instant, ip: IpAddr, kind: RequestKind) -> Verdict {
        if !self.admits(ip) {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        if !self.take_token(now, ip) {
            self.stats.over_rate.fetch_add(1, Ordering::Relaxed);
            return Verdict::Drop;
        }
        if self.transactions.get(&ip).copied().unwrap_or(0) >= self.limits.transactions_per_ip {
            self.stats.over_transactions.fetch_add(1, Ordering::Relaxed);
            return match kind {
                RequestKind::Options => Verdict::Drop,
                RequestKind::Other => Verdict::Refuse,
            };
        }
        Verdict::Pass
    }

    /// An INVITE refused because too many are pending: counted here.
    pub fn refused_pending_invite(&self) {
        self.stats
            .over_pending_invites
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A server transaction charged to `ip` was opened.
    pub fn transaction_opened(&mut self, ip: IpAddr) {
        *self.transactions.entry(ip).or_insert(0) += 1;
    }

    /// A server transaction charged to `ip` ended.
    pub fn transaction_closed(&mut self, ip: IpAddr) {
        if let Some(count) = self.transactions.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.transactions.remove(&ip);
            }
        }
    }

    /// Server transactions charged to `ip` now.
    pub fn transactions_of(&self, ip: IpAddr) -> usize {
        self.transactions.get(&ip).copied().unwrap_or(0)
    }

    fn take_token(&mut self, now: Instant, ip: IpAddr) -> bool {
        let burst = f64::from(self.limits.request_burst);
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_SOURCES {
            self.forget_sources(now);
        }
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            refilled_at: now,
        });
        let elapsed_s = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed_s * f64::from(self.limits.requests_per_s)).min(burst);
        bucket.refilled_at = bucket.refilled_at.max(now);
        let taken = bucket.tokens >= 1.0;
        if taken {
            bucket.tokens -= 1.0;
        }
        self.stats
            .sources_tracked
            .store(self.buckets.len() as u64, Ordering::Relaxed);
        taken
    }

    /// Makes room for a new source: forgets every bucket that has refilled by
    /// `now`, or, when none has, the fullest.
    fn forget_sources(&mut self, now: Instant) {
        let (rate, burst) = (
            f64::from(self.limits.requests_per_s),
            f64::from(self.limits.request_burst),
        );
        let tokens_at_now = |bucket: &Bucket| {
            let elapsed_s = now
                .saturating_duration_since(bucket.refilled_at)
                .as_secs_f64();
            bucket.tokens + elapsed_s * rate
        };
        self.buckets
            .retain(|_, bucket| tokens_at_now(bucket) < burst);
        if self.buckets.len() >= MAX_SOURCES {
            let fullest = self
                .buckets
                .iter()
                .max_by(|(_, a), (_, b)| tokens_at_now(a).total_cmp(&tokens_at_now(b)))
                .map(|(ip, _)| *ip);
            if let Some(ip) = fullest {
                self.buckets.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("cidr")
    }

    fn guard(limits: SourceLimits) -> SourceGuard {
        SourceGuard::new(limits, Arc::new(LimitStats::default()))
    }

    #[test]
    fn ranges_hold_their_addresses_in_both_families() {
        assert!(cidr("192.168.1.0/24").contains(ip("192.168.1.200")));
        assert!(!cidr("192.168.1.0/24").contains(ip("192.168.2.1")));
        assert!(cidr("10.0.0.7").contains(ip("10.0.0.7")));
        assert!(!cidr("10.0.0.7").contains(ip("10.0.0.8")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(cidr("::/0").contains(ip("::1")));
        assert!(cidr("::1/128").contains(ip("::1")));
    }

    #[test]
    fn malformed_ranges_say_what_is_wrong() {
        assert!(matches!(
            "192.168.1/24".parse::<Cidr>(),
            Err(CidrError::Malformed(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Malformed(_))
        ));
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong("10.0.0.0/33".to_owned(), 32))
        );
        assert!("2001:db8::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn deny_wins_over_allow_and_an_allow_list_keeps_everyone_else_out() {
        let guard = guard(SourceLimits {
            allow: vec![cidr("10.0.0.0/8")],
            deny: vec![cidr("10.9.0.0/16")],
            ..SourceLimits::default()
        });
        assert!(guard.admits(ip("10.1.2.3")));
        assert!(
            !guard.admits(ip("10.9.2.3")),
            "denied inside the allowed range"
        );
        assert!(!guard.admits(ip("192.0.2.1")), "outside the allow list");
        let open = super::SourceGuard::new(SourceLimits::default(), Arc::default());
        assert!(open.admits(ip("192.0.2.1")), "no allow list: everyone");
    }

    #[test]
    fn a_denied_source_is_dropped_and_counted() {
        let mut guard = guard(SourceLimits {
            deny: vec![cidr("127.0.0.2")],
            ..SourceLimits::default()
        });
        let now = Instant::now();
        assert_eq!(
            guard.screen(now, ip("127.0.0.2"), RequestKind::Other),
            Verdict::Drop
        );
        assert_eq!(
            guard.screen(now, ip("127.0.0.1"), RequestKind::Other),
            Verdict::Pass
        );
        assert_eq!(guard.stats.denied.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let mut guard = guard(SourceLimits {
            requests_per_s: 10,
            request_burst: 5,
            ..SourceLimits::default()
        });
        let start = Instant::now();
        let flood = ip("192.0.2.66");
        let passed = (0..100)
            .filter(|_| guard.screen(start, flood, RequestKind::Other) == Verdict::Pass)
            .count();
        assert_eq!(passed, 5, "the burst");
        assert_eq!(guard.stats.over_rate.load(Ordering::Relaxed), 95);
        // 10 per second: one more every 100 ms.
        let later = start + Duration::from_millis(300);
        let passed = (0..100)
            .filter(|_| guard.screen(later, flood, RequestKind::Other) == Verdict::Pass)
            .count();
        assert_eq!(passed, 3);
        assert_eq!(
            guard.screen(later, ip("192.0.2.7"), RequestKind::Other),
            Verdict::Pass,
            "another source has its own bucket"
        );
    }

    #[test]
    fn a_source_over_its_share_of_transactions_gets_503_and_options_get_nothing() {
        let mut guard = guard(SourceLimits {
            transactions_per_ip: 2,
            ..SourceLimits::default()
        });
        let now = Instant::now();
        let busy = ip("192.0.2.66");
        guard.transaction_opened(busy);
        guard.transaction_opened(busy);
        assert_eq!(guard.screen(now, busy, RequestKind::Other), Verdict::Refuse);
        assert_eq!(guard.screen(now, busy, RequestKind::Options), Verdict::Drop);
        assert_eq!(
            guard.screen(now, ip("192.0.2.7"), RequestKind::Options),
            Verdict::Pass
        );
        guard.transaction_closed(busy);
        assert_eq!(guard.screen(now, busy, RequestKind::Other), Verdict::Pass);
        guard.transaction_closed(busy);
        guard.transaction_closed(busy);
        assert_eq!(guard.transactions_of(busy), 0);
        assert!(
            guard.transactions.is_empty(),
            "no entry left for a quiet source"
        );
    }

    #[test]
    fn buckets_of_many_sources_stay_bounded_and_a_flooder_keeps_its_empty_one() {
        let mut guard = guard(SourceLimits {
            requests_per_s: 1,
            request_burst: 2,
            ..SourceLimits::default()
        });
        let now = Instant::now();
        let flood = ip("192.0.2.66");
        while guard.screen(now, flood, RequestKind::Other) == Verdict::Pass {}
        // Many addresses, each once: their buckets are not full (each took
        // a token), so the fullest are forgotten one by one, never the
        // flooder's empty one, and never more than MAX_SOURCES are kept.
        for n in 0..3 * MAX_SOURCES as u32 {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            guard.screen(now, source, RequestKind::Other);
            assert!(guard.buckets.len() <= MAX_SOURCES);
        }
        assert_eq!(
            guard.stats.sources_tracked.load(Ordering::Relaxed),
            MAX_SOURCES as u64
        );
        assert_eq!(
            guard.screen(now, flood, RequestKind::Other),
            Verdict::Drop,
            "the flooder's bucket is still empty"
        );
        // Buckets that have refilled are forgotten all at once, losing nothing.
        let much_later = now + Duration::from_secs(10);
        assert_eq!(
            guard.screen(much_later, ip("198.51.100.1"), RequestKind::Other),
            Verdict::Pass
        );
        assert_eq!(guard.buckets.len(), 1);
    }
}
