//! The RFC 4733 telephone-event receiver: turns the packets of the negotiated
//! event payload type into press start and end events, counting each press
//! once (docs/dtmf.md, "RFC 4733"):
//!
//! - one press per (SSRC, RTP timestamp, event), whatever the sequence numbers;
//! - the end packet, usually sent three times, ends the press once;
//! - a long press split into segments (§2.5.1.3) is one press;
//! - lost end packets: the press ends after three expected update intervals
//!   without a packet;
//! - events quieter than -55 dBm0 (volume field > 55) are ignored.
//!
//! Times are the receiver's 8 kHz sample clock, passed in by the caller.
//! Timestamps and durations in the packets count the event's own RTP clock
//! (8000 Hz, or 48000 Hz beside Opus, RFC 4733 §2.5.1.1): they are compared
//! in those units and converted to 8 kHz samples where they become times.

use heapless::Deque;

use super::{ToneEvent, DIGITS_BY_EVENT};

/// Size of one event block (RFC 4733 §2.3).
pub const EVENT_PAYLOAD_BYTES: usize = 4;
/// Volume field values above this are quieter than -55 dBm0 and not a press.
pub const QUIETEST_VOLUME: u8 = 55;
/// Update interval assumed until two packets show the sender's (RFC 4733 §2.5.1.2 suggests 50 ms).
const DEFAULT_UPDATE_INTERVAL_SAMPLES: u64 = 400;
/// Bounds for a measured update interval, 10 ms to 100 ms.
const UPDATE_INTERVAL_RANGE: (u64, u64) = (80, 800);
/// A press ends when this many update intervals pass without a packet.
const LOST_END_INTERVALS: u64 = 3;
/// A new segment's timestamp may differ from the previous segment's end by this much.
const SEGMENT_TOLERANCE_SAMPLES: u32 = 160;
/// Finished (SSRC, timestamp, event) keys remembered, so late and repeated packets are not new presses.
const REMEMBERED_KEYS: usize = 8;

/// What was wrong with a telephone-event payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("telephone-event payload of {0} bytes is shorter than 4")]
    TooShort(usize),
}

/// One event block, read from a payload (RFC 4733 §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0..=63).
    pub volume: u8,
    /// In RTP timestamp units since the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first event block of `payload`; more blocks (RFC 2198 style) are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, EventError> {
        let [event, flags, duration_high, duration_low, ..] = *payload else {
            return Err(EventError::TooShort(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([duration_high, duration_low]),
        })
    }

    /// Writes the block into `out[..4]`, for tests and tools that send events.
    pub fn write(&self, out: &mut [u8; EVENT_PAYLOAD_BYTES]) {
        let [high, low] = self.duration.to_be_bytes();
        *out = [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            high,
            low,
        ];
    }
}

/// The RTP identity of one press segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegmentKey {
    ssrc: u32,
    timestamp: u32,
    event: u8,
}

#[derive(Clone, Copy, Debug)]
struct Press {
    key: SegmentKey,
    digit: char,
    /// Receiver clock when the first packet arrived.
    start: u64,
    /// Duration of the segments before the current one, in event clock units.
    earlier_segments: u64,
    segment_duration: u16,
    last_packet_at: u64,
    update_interval: u64,
}

impl Press {
    fn duration(&self) -> u64 {
        self.earlier_segments + u64::from(self.segment_duration)
    }
}

/// The receiver's clock rate; an event clock is a whole multiple of it.
const RECEIVER_RATE_HZ: u32 = 8000;

/// One member's telephone-event receiver.
pub struct Rfc4733Receiver {
    /// Event clock units per 8 kHz sample (1, or 6 at 48000 Hz).
    ticks_per_sample: u32,
    press: Option<Press>,
    finished: [Option<SegmentKey>; REMEMBERED_KEYS],
    next_finished: usize,
    events: Deque<ToneEvent, 8>,
}

impl Default for Rfc4733Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Rfc4733Receiver {
    pub fn new() -> Self {
        Rfc4733Receiver {
            ticks_per_sample: 1,
            press: None,
            finished: [None; REMEMBERED_KEYS],
            next_finished: 0,
            events: Deque::new(),
        }
    }

    /// Forgets every press (a new member in the slot).
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Forgets every press and counts the events' timestamps and durations
    /// at `event_rate_hz` (a multiple of 8000; anything else counts as 8000).
    pub fn reset_at(&mut self, event_rate_hz: u32) {
        *self = Self::new();
        if event_rate_hz >= RECEIVER_RATE_HZ && event_rate_hz.is_multiple_of(RECEIVER_RATE_HZ) {
            self.ticks_per_sample = event_rate_hz / RECEIVER_RATE_HZ;
        }
    }

    /// A press is in progress.
    pub fn active(&self) -> bool {
        self.press.is_some()
    }

    /// Takes one telephone-event payload that arrived at `now`.
    pub fn on_packet(
        &mut self,
        now: u64,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), EventError> {
        let packet = TelephoneEvent::parse(payload)?;
        let Some(&digit) = DIGITS_BY_EVENT.get(usize::from(packet.event)) else {
            return Ok(()); // not a DTMF event (§3.2 defines 0-15 only)
        };
        if packet.volume > QUIETEST_VOLUME {
            return Ok(());
        }
        let key = SegmentKey {
            ssrc,
            timestamp,
            event: packet.event,
        };
        if self.finished.contains(&Some(key)) {
            return Ok(()); // a repeated end packet, or a late update of a finished press
        }
        if let Some(press) = self.press.as_mut() {
            let same_stream = press.key.ssrc == ssrc && press.key.event == packet.event;
            let segment_end = press
                .key
                .timestamp
                .wrapping_add(u32::from(press.segment_duration));
            if same_stream && press.key.timestamp == timestamp {
                if packet.duration > press.segment_duration {
                    let step = u64::from(packet.duration - press.segment_duration)
                        / u64::from(self.ticks_per_sample);
                    press.update_interval =
                        step.clamp(UPDATE_INTERVAL_RANGE.0, UPDATE_INTERVAL_RANGE.1);
                    press.segment_duration = packet.duration;
                }
                press.last_packet_at = now;
            } else if same_stream
                && timestamp
                    .wrapping_sub(segment_end)
                    .min(segment_end.wrapping_sub(timestamp))
                    <= SEGMENT_TOLERANCE_SAMPLES * self.ticks_per_sample
            {
                // §2.5.1.3: a long event goes on under a new timestamp.
                let previous = press.key;
                press.earlier_segments += u64::from(press.segment_duration);
                press.segment_duration = packet.duration;
                press.key = key;
                press.last_packet_at = now;
                self.remember(previous);
            } else {
                // Another press began before this one's end arrived: its end was lost.
                self.finish();
                self.begin(key, digit, now, packet.duration);
            }
        } else {
            self.begin(key, digit, now, packet.duration);
        }
        if packet.end {
            self.finish();
        }
        Ok(())
    }

    /// Ends a press whose end packets were lost, once three update intervals pass silently.
    pub fn poll_timeout(&mut self, now: u64) {
        if let Some(press) = self.press {
            let silent_for = now.saturating_sub(press.last_packet_at);
            if silent_for >= LOST_END_INTERVALS * press.update_interval {
                self.finish();
            }
        }
    }

    /// The next start or end event, oldest first.
    pub fn poll_event(&mut self) -> Option<ToneEvent> {
        self.events.pop_front()
    }

    fn begin(&mut self, key: SegmentKey, digit: char, now: u64, duration: u16) {
        self.press = Some(Press {
            key,
            digit,
            start: now,
            earlier_segments: 0,
            segment_duration: duration,
            last_packet_at: now,
            update_interval: DEFAULT_UPDATE_INTERVAL_SAMPLES,
        });
        let _ = self.events.push_back(ToneEvent::Start { digit, at: now });
    }

    fn finish(&mut self) {
        let Some(press) = self.press.take() else {
            return;
        };
        self.remember(press.key);
        let _ = self.events.push_back(ToneEvent::End {
            digit: press.digit,
            start: press.start,
            end: press.start + press.duration() / u64::from(self.ticks_per_sample),
        });
    }

    fn remember(&mut self, key: SegmentKey) {
        self.finished[self.next_finished] = Some(key);
        self.next_finished = (self.next_finished + 1) % REMEMBERED_KEYS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
        let mut out = [0; 4];
        TelephoneEvent {
            event,
            end,
            volume,
            duration,
        }
        .write(&mut out);
        out
    }

    fn drain(receiver: &mut Rfc4733Receiver) -> Vec<ToneEvent> {
        std::iter::from_fn(|| receiver.poll_event()).collect()
    }

    #[test]
    fn parse_reads_the_fields_and_refuses_short_payloads() {
        let event = TelephoneEvent::parse(&[11, 0x8A, 0x03, 0x20]).expect("valid");
        assert_eq!(
            event,
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(TelephoneEvent::parse(&[1, 2]), Err(EventError::TooShort(2)));
    }

    #[test]
    fn durations_on_a_48_khz_event_clock_count_in_its_units() {
        // Beside Opus the event clock is 48000 Hz: 80 ms is 3840 units, and
        // a press whose updates come every 20 ms (960 units) still times out
        // after three of them, not eighteen.
        let mut receiver = Rfc4733Receiver::new();
        receiver.reset_at(48_000);
        let mut now = 1000;
        for duration in [960, 1920, 2880] {
            receiver
                .on_packet(now, 7, 48_000, &payload(5, false, 10, duration))
                .expect("ok");
            now += 160;
        }
        receiver
            .on_packet(now, 7, 48_000, &payload(5, true, 10, 3840))
            .expect("ok");
        assert_eq!(
            drain(&mut receiver),
            [
                ToneEvent::Start {
                    digit: '5',
                    at: 1000
                },
                ToneEvent::End {
                    digit: '5',
                    start: 1000,
                    end: 1000 + 640
                }
            ]
        );
        receiver
            .on_packet(now, 7, 96_000, &payload(6, false, 10, 960))
            .expect("ok");
        receiver
            .on_packet(now + 160, 7, 96_000, &payload(6, false, 10, 1920))
            .expect("ok");
        receiver.poll_timeout(now + 160 + 3 * 160);
        assert!(matches!(
            drain(&mut receiver)[..],
            [ToneEvent::Start { .. }, ToneEvent::End { .. }]
        ));
    }

    #[test]
    fn a_press_with_three_end_packets_is_reported_once() {
        let mut receiver = Rfc4733Receiver::new();
        let mut now = 1000;
        for duration in [160, 320, 480] {
            receiver
                .on_packet(now, 7, 5000, &payload(5, false, 10, duration))
                .expect("ok");
            now += 160;
        }
        for _ in 0..3 {
            receiver
                .on_packet(now, 7, 5000, &payload(5, true, 10, 640))
                .expect("ok");
        }
        assert_eq!(
            drain(&mut receiver),
            [
                ToneEvent::Start {
                    digit: '5',
                    at: 1000
                },
                ToneEvent::End {
                    digit: '5',
                    start: 1000,
                    end: 1640
                }
            ]
        );
    }

    #[test]
    fn quiet_events_and_non_dtmf_events_are_ignored() {
        let mut receiver = Rfc4733Receiver::new();
        receiver
            .on_packet(0, 7, 0, &payload(5, true, 56, 800))
            .expect("ok");
        receiver
            .on_packet(0, 7, 800, &payload(16, true, 10, 800))
            .expect("ok");
        assert_eq!(drain(&mut receiver), []);
    }
}
