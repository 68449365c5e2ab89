//! How well a member's stream arrives: packets received and lost (RFC 3550
//! §6.4.1, cumulative, from sequence numbers) and interarrival jitter (RFC
//! 3550 §6.4.1 and A.8), and the table of atomics the media thread publishes
//! them in, so the API reads them (the member resource's `packetsReceived`,
//! `packetsLost`, `jitterMs`) without waiting on the media thread.
//!
//! Owns: the jitter estimator of one stream, the per-slot table. Never
//! touches: a socket, the clock (arrival times come in), a lock.

use crate::media::MemberKey;
use std::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Interarrival jitter of one RTP stream, RFC 3550 A.8: the mean deviation
/// of the transit time, smoothed over 16 packets, in RTP timestamp units.
/// Arrival times are given in the same units, counted by the tick (the
/// engine reads its sockets once a tick): the figure resolves what a jitter
/// buffer cares about (tens of milliseconds), not single milliseconds, and
/// a packet costs a few additions.
#[derive(Clone, Copy, Debug, Default)]
pub struct Interarrival {
    /// The last packet's transit time (arrival minus its timestamp),
    /// wrapping like the timestamps.
    last_transit: Option<u32>,
    /// Jitter times 16 (A.8 keeps it scaled).
    jitter_x16: u64,
}

impl Interarrival {
    /// Accounts one audio packet carrying `rtp_timestamp` that arrived at
    /// `arrival`, both on the stream's RTP clock.
    #[inline]
    pub fn on_packet(&mut self, arrival: u32, rtp_timestamp: u32) {
        let transit = arrival.wrapping_sub(rtp_timestamp);
        if let Some(last) = self.last_transit {
            // Wrapping differences: a timestamp wrap is no jitter.
            let deviation = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            self.jitter_x16 = self.jitter_x16 + deviation - ((self.jitter_x16 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// The jitter in timestamp units, as an RTCP report block carries it.
    pub fn jitter_units(&self) -> u32 {
        (self.jitter_x16 >> 4).min(u64::from(u32::MAX)) as u32
    }

    /// The jitter in microseconds, on a `clock_hz` RTP clock.
    pub fn jitter_us(&self, clock_hz: u32) -> u32 {
        if clock_hz == 0 {
            return 0;
        }
        (u64::from(self.jitter_units()) * 1_000_000 / u64::from(clock_hz)).min(u64::from(u32::MAX))
            as u32
    }
}

/// One member's reception figures as last published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quality {
    /// RTP packets received from the member (duplicates included, RFC 3550 §6.4.1).
    pub packets_received: u64,
    /// Packets expected from the sequence numbers but not received:
    /// negative when duplicates outnumber losses.
    pub packets_lost: i64,
    /// Interarrival jitter (see `Interarrival`).
    pub jitter_us: u32,
}

/// A generation no member has: the slot's figures belong to nobody.
const NOBODY: u32 = u32::MAX;

#[derive(Debug)]
struct SlotQuality {
    generation: AtomicU32,
    packets_received: AtomicU64,
    packets_lost: AtomicI64,
    jitter_us: AtomicU32,
}

/// Every slot's figures, written by the media thread, read by anyone.
/// Sized once when the media core starts; empty until then.
#[derive(Debug, Default)]
pub struct QualityTable {
    slots: OnceLock<Box<[SlotQuality]>>,
}

impl QualityTable {
    /// Makes room for `slots` members (the first call wins; later ones do nothing).
    pub fn size_for(&self, slots: usize) {
        self.slots.get_or_init(|| {
            (0..slots)
                .map(|_| SlotQuality {
                    generation: AtomicU32::new(NOBODY),
                    packets_received: AtomicU64::new(0),
                    packets_lost: AtomicI64::new(0),
                    jitter_us: AtomicU32::new(0),
                })
                .collect()
        });
    }

    /// Publishes `key`'s figures (the media thread).
    pub fn publish(&self, key: MemberKey, quality: Quality) {
        let Some(slot) = self.slot(key) else {
            return;
        };
        // Figures first, then whose they are: a reader that sees the
        // generation sees these figures or newer ones of the same member.
        slot.generation.store(NOBODY, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.packets_received
            .store(quality.packets_received, Ordering::Relaxed);
        slot.packets_lost
            .store(quality.packets_lost, Ordering::Relaxed);
        slot.jitter_us.store(quality.jitter_us, Ordering::Relaxed);
        slot.generation.store(key.generation, Ordering::Release);
    }

    /// `key`'s figures, if they were published since it started and its
    /// slot has not served anyone else since.
    pub fn read(&self, key: MemberKey) -> Option<Quality> {
        let slot = self.slot(key)?;
        if slot.generation.load(Ordering::Acquire) != key.generation {
            return None;
        }
        let quality = Quality {
            packets_received: slot.packets_received.load(Ordering::Relaxed),
            packets_lost: slot.packets_lost.load(Ordering::Relaxed),
            jitter_us: slot.jitter_us.load(Ordering::Relaxed),
        };
        // A seqlock's second look: the figures were not being rewritten.
        fence(Ordering::Acquire);
        (slot.generation.load(Ordering::Relaxed) == key.generation).then_some(quality)
    }

    fn slot(&self, key: MemberKey) -> Option<&SlotQuality> {
        self.slots.get()?.get(usize::try_from(key.slot).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds on an 8 kHz clock.
    fn ms(ms: u32) -> u32 {
        8 * ms
    }

    #[test]
    fn packets_on_a_steady_clock_have_no_jitter() {
        let mut stream = Interarrival::default();
        for n in 0..100u32 {
            stream.on_packet(ms(20 * n + 7), 160 * n);
        }
        assert_eq!(stream.jitter_us(8000), 0);
    }

    #[test]
    fn packets_alternating_20_ms_early_and_late_converge_on_20_ms() {
        // Every other packet a tick late: each transit differs from the
        // last by 20 ms, and A.8's estimate tends to that deviation.
        let mut stream = Interarrival::default();
        for n in 0..400u32 {
            let late = if n % 2 == 1 { 20 } else { 0 };
            stream.on_packet(ms(20 * n + late), 160 * n);
        }
        assert!(
            (19_000..=20_000).contains(&stream.jitter_us(8000)),
            "{}",
            stream.jitter_us(8000)
        );
    }

    #[test]
    fn a_timestamp_wrap_is_not_jitter() {
        let mut stream = Interarrival::default();
        let start = u32::MAX - 160 * 5;
        for n in 0..10u32 {
            stream.on_packet(ms(20 * n), start.wrapping_add(160 * n));
        }
        assert_eq!(stream.jitter_us(8000), 0);
    }

    #[test]
    fn a_slot_reused_by_another_member_reads_nothing_for_the_first() {
        let table = QualityTable::default();
        let first = MemberKey {
            slot: 1,
            generation: 4,
        };
        assert_eq!(table.read(first), None, "not sized yet");
        table.size_for(2);
        assert_eq!(table.read(first), None, "not published yet");
        let figures = Quality {
            packets_received: 95,
            packets_lost: 5,
            jitter_us: 1250,
        };
        table.publish(first, figures);
        assert_eq!(table.read(first), Some(figures));
        table.publish(
            MemberKey {
                generation: 5,
                ..first
            },
            Quality::default(),
        );
        assert_eq!(table.read(first), None);
        assert_eq!(
            table.read(MemberKey {
                slot: 9,
                generation: 4
            }),
            None,
            "beyond the table"
        );
    }
}
