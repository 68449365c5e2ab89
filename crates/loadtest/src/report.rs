//! The load test's findings: per-stream RTP accounting (RFC 3550 A.1 and A.8),
//! fixed histograms for per-packet figures, and the report printed at the end
//! and written as JSON. It only counts and writes: it sends nothing and
//! judges nothing (the `--find-limit` search judges a run).

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// RTP clock ticks per nanosecond at 8 kHz, for the jitter estimator.
const RTP_UNITS_PER_NS: f64 = 8000.0 / 1e9;
/// Packets of a stream in the window its arrival-lateness baseline is taken
/// from (1 s), and before which none is reported.
const LATENESS_WINDOW_PACKETS: usize = 50;
/// Streams seen before a call's INVITE left that a phone remembers.
const FOREIGN_SSRCS: usize = 4;

/// What one phone received from the bridge.
#[derive(Clone, Debug)]
pub struct Reception {
    pub packets: u64,
    base_sequence: u32,
    max_sequence: u16,
    cycles: u32,
    pub duplicates_or_late: u64,
    /// RFC 3550 A.8 interarrival jitter, in RTP timestamp units.
    jitter: f64,
    last_transit: Option<f64>,
    /// The bridge's stream for this call: the SSRC of its first packet that
    /// arrived after our INVITE left.
    ssrc: Option<u32>,
    /// SSRCs of packets that arrived before our INVITE left, which the bridge
    /// cannot have sent for this call (the last few): never latched.
    foreign: [Option<u32>; FOREIGN_SSRCS],
    /// Packets of any stream but the call's (a call on this port that the
    /// bridge never ended, say): not counted as received, lost or late.
    pub strays: u64,
    /// `arrival - extended_sequence * 20 ms` of the last packets; their minimum
    /// is the stream's on-time line. Re-anchoring each second keeps a bridge
    /// that restarted its schedule (after falling far behind) from counting as
    /// late for the rest of the run.
    recent_on_grid_ns: [i64; LATENESS_WINDOW_PACKETS],
}

impl Default for Reception {
    fn default() -> Self {
        Reception {
            packets: 0,
            base_sequence: 0,
            max_sequence: 0,
            cycles: 0,
            duplicates_or_late: 0,
            ssrc: None,
            foreign: [None; FOREIGN_SSRCS],
            strays: 0,
            jitter: 0.0,
            last_transit: None,
            recent_on_grid_ns: [i64::MAX; LATENESS_WINDOW_PACKETS],
        }
    }
}

impl Reception {
    /// Whether a packet of stream `ssrc` that arrived at `arrival_ns` is the
    /// call's, whose INVITE left at `invited_ns` (both realtime); counts it as
    /// a stray if not. A packet that came before the INVITE left is another
    /// stream's, and so is any packet not of the stream latched first.
    pub fn is_ours(&mut self, ssrc: u32, arrival_ns: i64, invited_ns: i64) -> bool {
        let ours = if arrival_ns < invited_ns {
            if !self.foreign.contains(&Some(ssrc)) {
                self.foreign.rotate_right(1);
                self.foreign[0] = Some(ssrc);
            }
            false
        } else {
            match self.ssrc {
                Some(latched) => latched == ssrc,
                None if self.foreign.contains(&Some(ssrc)) => false,
                None => {
                    self.ssrc = Some(ssrc);
                    true
                }
            }
        };
        if !ours {
            self.strays += 1;
        }
        ours
    }

    /// Accounts one packet; returns how late it came against the stream's
    /// 20 ms grid (once the grid is known), in nanoseconds.
    pub fn on_packet(&mut self, sequence: u16, timestamp: u32, arrival_ns: i64) -> Option<i64> {
        if self.packets == 0 {
            self.base_sequence = sequence as u32;
            self.max_sequence = sequence;
        } else {
            let delta = sequence.wrapping_sub(self.max_sequence);
            if delta == 0 || delta > u16::MAX - 100 {
                self.duplicates_or_late += 1;
                self.packets += 1;
                return None;
            }
            if sequence < self.max_sequence {
                self.cycles += 1 << 16;
            }
            self.max_sequence = sequence;
        }
        self.packets += 1;
        let transit = arrival_ns as f64 * RTP_UNITS_PER_NS - timestamp as f64;
        if let Some(last) = self.last_transit {
            // Timestamps wrap at 2^32; transit differences stay small.
            let mut d = (transit - last).abs();
            if d > 2_147_483_648.0 {
                d = (d - 4_294_967_296.0).abs();
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
        let index = self.extended_max() as i64 - self.base_sequence as i64;
        let on_grid = arrival_ns - index * 20_000_000;
        self.recent_on_grid_ns[self.packets as usize % LATENESS_WINDOW_PACKETS] = on_grid;
        let baseline = self
            .recent_on_grid_ns
            .iter()
            .copied()
            .min()
            .unwrap_or(on_grid);
        (self.packets > LATENESS_WINDOW_PACKETS as u64).then_some(on_grid - baseline)
    }

    fn extended_max(&self) -> u32 {
        self.cycles + self.max_sequence as u32
    }

    /// Packets expected from the first to the highest sequence number seen.
    pub fn expected(&self) -> u64 {
        if self.packets == 0 {
            return 0;
        }
        (self.extended_max() as i64 - self.base_sequence as i64 + 1).max(0) as u64
    }

    /// RFC 3550 A.3 cumulative loss (never negative here).
    pub fn lost(&self) -> u64 {
        self.expected()
            .saturating_sub(self.packets - self.duplicates_or_late)
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter / 8.0
    }
}

/// A histogram of durations with 0.1 ms buckets up to 500 ms: per-packet
/// figures without storing every packet.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_ns: i64,
}

const BUCKET_NS: i64 = 100_000;
const BUCKETS: usize = 5000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS + 1],
            count: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, ns: i64) {
        let bucket = (ns.max(0) / BUCKET_NS) as usize;
        self.buckets[bucket.min(BUCKETS)] += 1;
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value below which `fraction` of the samples fall, in ms (bucket upper edge).
    pub fn quantile_ms(&self, fraction: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((fraction * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some((bucket as i64 + 1) as f64 * BUCKET_NS as f64 / 1e6);
            }
        }
        Some(self.max_ms())
    }

    pub fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }
}

/// Smallest, middle and largest of a set of per-member values.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &mut [f64]) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        values.sort_by(|a, b| a.total_cmp(b));
        Spread {
            min: values[0],
            median: percentile_sorted(values, 0.5),
            max: values[values.len() - 1],
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile_sorted(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Calls {
    pub attempted: u64,
    pub set_up: u64,
    pub failed: u64,
    /// Why calls failed: SIP status or "timeout", with counts.
    pub failures: BTreeMap<String, u64>,
    /// Calls the bridge hung up (BYE from the bridge) before the end.
    pub hung_up_by_bridge: u64,
    /// Our BYEs that got no 2xx.
    pub hangups_failed: u64,
    pub setup_ms_p50: f64,
    pub setup_ms_max: f64,
    /// From our BYE to its final answer, over the BYEs answered.
    pub hangup_ms_p50: f64,
    pub hangup_ms_max: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Rtp {
    pub sent_per_member: Spread,
    pub received_per_member: Spread,
    pub lost_per_member: Spread,
    pub lost_total: u64,
    /// Packets of streams that were not the member's call (arrived before its
    /// INVITE left, or another SSRC than the call's): a stream the bridge
    /// left running. Not in the received, lost or late figures.
    pub stray_packets: u64,
    /// Our sends the kernel refused (socket buffer full).
    pub send_refused: u64,
    /// RFC 3550 interarrival jitter of the bridge's streams at the end, ms.
    pub jitter_ms: Spread,
    /// How late the bridge's packets arrived against each stream's 20 ms grid,
    /// re-anchored each second: an upper bound of the bridge's tick lateness
    /// (it adds the variation of the member's place in the send loop), ms.
    pub arrival_lateness_ms_p50: f64,
    pub arrival_lateness_ms_p99: f64,
    pub arrival_lateness_ms_max: f64,
    /// Packets from the bridge that arrived in the window / (members set up x
    /// ticks): 100 when it served every member every tick. A member alone in
    /// its room gets one packet a second by design.
    pub member_ticks_delivered_percent: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Listeners {
    /// Members that do not talk, in rooms with at least one talker.
    pub count: u64,
    /// RMS level the listeners heard in the measurement window, dBFS.
    pub level_dbfs: Spread,
    /// The same, listener by listener (in member order), to 0.1 dB.
    pub levels_dbfs: Vec<f64>,
    /// Listeners whose level stayed below `hearing_threshold_dbfs`.
    pub silent: u64,
    pub hearing_threshold_dbfs: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Delay {
    /// Pip onsets detected at listeners and matched to a send.
    pub samples: u64,
    /// Pips sent times listeners: how many onsets we expected.
    pub expected: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Bridge {
    pub pid: u32,
    /// Bridge CPU time over the window / (members x 20 ms ticks in the window).
    pub cpu_us_per_member_tick: f64,
    /// Bridge CPU time over the window / packets it delivered to the phones in
    /// it: the same figure per tick actually served, which stays honest when a
    /// starved bridge skips ticks.
    pub cpu_us_per_packet_delivered: f64,
    /// Packets delivered in the window / (members x ticks): 100 when no tick was skipped.
    pub member_ticks_delivered_percent: f64,
    /// Bridge CPU as a share of one core over the window.
    pub cpu_percent_of_core: f64,
    pub rss_mb: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Generator {
    /// The load generator's own CPU over the window, share of one core.
    pub cpu_percent_of_core: f64,
    /// Send phases whose sends started more than 5 ms late, over the whole
    /// run (the ramp included), and in the measurement window.
    pub late_ticks: u64,
    pub late_ticks_in_window: u64,
    pub tick_lateness_ms_p99: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub target: String,
    pub codec: String,
    pub members: u64,
    pub rooms: u64,
    pub talkers_per_room: u64,
    /// The measurement window (all calls up, then `--duration`), seconds.
    pub window_s: f64,
    pub calls: Calls,
    pub rtp: Rtp,
    pub listeners: Listeners,
    /// Bridge-added delay of the marker pip, send to listener arrival.
    pub delay_ms: Option<Delay>,
    pub bridge: Option<Bridge>,
    pub generator: Generator,
    /// `--flood`: what the flood sent and what the bridge answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood: Option<crate::flood::FloodReport>,
}

impl Report {
    /// The report as a person reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let spread = |s: &Spread, digits: usize| {
            format!(
                "{:.d$} / {:.d$} / {:.d$}",
                s.min,
                s.median,
                s.max,
                d = digits
            )
        };
        let c = &self.calls;
        let _ = writeln!(
            out,
            "sipconf loadtest against {}: {} members in {} room(s), {} talker(s) per room, {}, window {:.1} s",
            self.target, self.members, self.rooms, self.talkers_per_room, self.codec, self.window_s
        );
        let _ = writeln!(
            out,
            "calls       set up {} of {}, failed {} {:?}, hung up by bridge {}, BYE failed {}",
            c.set_up, c.attempted, c.failed, c.failures, c.hung_up_by_bridge, c.hangups_failed
        );
        let _ = writeln!(
            out,
            "setup       p50 {:.1} ms, max {:.1} ms",
            c.setup_ms_p50, c.setup_ms_max
        );
        let _ = writeln!(
            out,
            "hang-up     p50 {:.1} ms, max {:.1} ms (BYE to its answer)",
            c.hangup_ms_p50, c.hangup_ms_max
        );
        let r = &self.rtp;
        let _ = writeln!(out, "rtp/member  min / median / max");
        let _ = writeln!(out, "  sent      {}", spread(&r.sent_per_member, 0));
        let _ = writeln!(out, "  received  {}", spread(&r.received_per_member, 0));
        let _ = writeln!(
            out,
            "  lost      {}  (total {}, sends refused {})",
            spread(&r.lost_per_member, 0),
            r.lost_total,
            r.send_refused
        );
        let _ = writeln!(
            out,
            "  strays    {} packets of streams not the member's call",
            r.stray_packets
        );
        let _ = writeln!(out, "  jitter    {} ms", spread(&r.jitter_ms, 2));
        let _ = writeln!(
            out,
            "  delivered {:.1} % of member-ticks in the window",
            r.member_ticks_delivered_percent
        );
        let _ = writeln!(
            out,
            "arrival lateness vs each stream's 20 ms grid: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            r.arrival_lateness_ms_p50, r.arrival_lateness_ms_p99, r.arrival_lateness_ms_max
        );
        let l = &self.listeners;
        let _ = writeln!(
            out,
            "listeners   {} hear {} dBFS (min / median / max); {} below {:.0} dBFS",
            l.count,
            spread(&l.level_dbfs, 1),
            l.silent,
            l.hearing_threshold_dbfs
        );
        match &self.delay_ms {
            Some(d) => {
                let _ = writeln!(
                    out,
                    "delay       min {:.1} ms, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} pips heard)",
                    d.min_ms,
                    d.p50_ms, d.p99_ms, d.max_ms, d.samples, d.expected
                );
            }
            None => {
                let _ = writeln!(out, "delay       not measured (no talker or no listener)");
            }
        }
        if let Some(flood) = &self.flood {
            out.push_str(&flood.to_text());
        }
        if let Some(b) = &self.bridge {
            let _ = writeln!(
                out,
                "bridge      pid {}: {:.2} us CPU per member per tick ({:.2} per packet delivered, {:.1} % of member-ticks delivered), {:.1} % of a core, RSS {:.1} MB",
                b.pid,
                b.cpu_us_per_member_tick,
                b.cpu_us_per_packet_delivered,
                b.member_ticks_delivered_percent,
                b.cpu_percent_of_core,
                b.rss_mb
            );
        }
        let g = &self.generator;
        let _ = writeln!(
            out,
            "generator   {:.1} % of a core, {} late ticks ({} in the window), tick lateness p99 {:.2} ms",
            g.cpu_percent_of_core, g.late_ticks, g.late_ticks_in_window, g.tick_lateness_ms_p99
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_in_sequence_numbers_counts_as_loss_across_the_wrap() {
        let mut r = Reception::default();
        let mut t = 0;
        for seq in [65534u16, 65535, 0, 2, 3] {
            r.on_packet(seq, 0, t);
            t += 20_000_000;
        }
        assert_eq!(r.expected(), 6);
        assert_eq!(r.lost(), 1);
    }

    /// Feeds a packet as the load generator does: only the call's stream is
    /// accounted.
    fn feed(r: &mut Reception, ssrc: u32, seq: u16, arrival_ns: i64, invited_ns: i64) {
        if r.is_ours(ssrc, arrival_ns, invited_ns) {
            r.on_packet(seq, seq as u32 * 160, arrival_ns);
        }
    }

    #[test]
    fn a_stream_that_came_before_the_invite_is_never_the_calls() {
        let invited = 1_000_000_000;
        let (stray, call) = (0xdead_beef, 0x1234);
        let mut r = Reception::default();
        let mut calls = 0;
        for n in 0..100u16 {
            let t = n as i64 * 20_000_000;
            // A stream left running toward this port, from before the INVITE
            // and on after it, with sequence numbers far from the call's.
            feed(&mut r, stray, 40_000 + n * 7, t, invited);
            if t > invited {
                feed(&mut r, call, n, t + 1_000, invited);
                calls += 1;
            }
        }
        assert_eq!(r.strays, 100);
        assert_eq!(r.packets, calls);
        assert_eq!((r.expected(), r.lost()), (calls, 0));
    }

    #[test]
    fn a_second_stream_after_the_call_latched_is_a_stray() {
        let mut r = Reception::default();
        for n in 0..50u16 {
            let t = n as i64 * 20_000_000;
            feed(&mut r, 7, n, t, 0);
            if n >= 10 {
                feed(&mut r, 8, 30_000 - n, t + 1_000, 0);
            }
        }
        assert_eq!((r.packets, r.strays, r.lost()), (50, 40, 0));
    }

    #[test]
    fn a_duplicate_is_not_loss_and_steady_pacing_has_no_jitter() {
        let mut r = Reception::default();
        for n in 0..100u16 {
            r.on_packet(n, n as u32 * 160, n as i64 * 20_000_000);
        }
        r.on_packet(99, 99 * 160, 100 * 20_000_000);
        assert_eq!(r.lost(), 0);
        assert_eq!(r.duplicates_or_late, 1);
        assert!(r.jitter_ms() < 0.01);
    }

    #[test]
    fn lateness_is_measured_against_the_earliest_on_time_packet() {
        let mut r = Reception::default();
        let mut late = None;
        for n in 0..60u16 {
            let extra = if n == 59 { 3_000_000 } else { 0 };
            late = r.on_packet(n, n as u32 * 160, n as i64 * 20_000_000 + extra);
        }
        assert_eq!(late, Some(3_000_000));
    }

    #[test]
    fn histogram_quantiles_round_up_to_the_bucket_edge() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(ms * 1_000_000 - 50_000);
        }
        assert_eq!(h.quantile_ms(0.5), Some(50.0));
        assert_eq!(h.quantile_ms(0.99), Some(99.0));
    }

    #[test]
    fn spread_of_values_is_min_median_max() {
        let s = Spread::of(&mut [3.0, 1.0, 2.0]);
        assert_eq!(
            s,
            Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            }
        );
    }
}
