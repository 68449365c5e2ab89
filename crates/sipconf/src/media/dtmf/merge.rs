//! Counts a press once when a phone sends it both as RFC 4733 events and as
//! in-band tones (docs/dtmf.md, "RFC 4733"): an in-band press of the same digit
//! within 200 ms of an RFC 4733 press is dropped, and RFC 4733 is preferred.
//!
//! Once a phone has sent RFC 4733 events ("negotiated and arriving"), an
//! in-band press waits up to 200 ms for its RFC 4733 twin before it counts. A
//! phone that negotiated telephone-event but has sent none is taken at its
//! tones at once; should a twin still come, it is the one dropped. It sees
//! presses only, never audio or packets.

use heapless::Deque;

use super::{DigitPress, DigitSource, ToneEvent};

/// Presses of the same digit closer than this (8 kHz samples: 200 ms) are one press.
pub const SAME_PRESS_SAMPLES: u64 = 1600;
/// Presses remembered per source for the comparison.
const REMEMBERED: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    digit: char,
    start: u64,
    end: u64,
}

impl Span {
    fn near(&self, other: &Span) -> bool {
        self.digit == other.digit
            && self.start <= other.end + SAME_PRESS_SAMPLES
            && other.start <= self.end + SAME_PRESS_SAMPLES
    }
}

/// A few recent presses, newest overwriting oldest.
#[derive(Clone, Copy, Debug, Default)]
struct Recent {
    spans: [Option<Span>; REMEMBERED],
    next: usize,
}

impl Recent {
    fn remember(&mut self, span: Span) {
        self.spans[self.next] = Some(span);
        self.next = (self.next + 1) % REMEMBERED;
    }

    fn any_near(&self, span: &Span) -> bool {
        self.spans.iter().flatten().any(|recent| recent.near(span))
    }
}

/// One member's merge of its two receivers.
pub struct Merger {
    rfc4733_negotiated: bool,
    /// The phone has sent at least one RFC 4733 event.
    rfc4733_arriving: bool,
    /// An RFC 4733 press in progress: its digit and start.
    rfc4733_active: Option<Span>,
    rfc4733_recent: Recent,
    inband_recent: Recent,
    /// An in-band press waiting for its RFC 4733 twin, and when it stops waiting.
    pending: Option<(Span, u64)>,
    out: Deque<DigitPress, 8>,
}

impl Merger {
    pub fn new(rfc4733_negotiated: bool) -> Self {
        Merger {
            rfc4733_negotiated,
            rfc4733_arriving: false,
            rfc4733_active: None,
            rfc4733_recent: Recent::default(),
            inband_recent: Recent::default(),
            pending: None,
            out: Deque::new(),
        }
    }

    pub fn reset(&mut self, rfc4733_negotiated: bool) {
        *self = Self::new(rfc4733_negotiated);
    }

    /// An event from the RFC 4733 receiver.
    pub fn on_rfc4733(&mut self, event: ToneEvent) {
        self.rfc4733_arriving = true;
        match event {
            ToneEvent::Start { digit, at } => {
                let span = Span {
                    digit,
                    start: at,
                    end: at,
                };
                self.rfc4733_active = Some(span);
                self.drop_pending_near(&span);
            }
            ToneEvent::End { digit, start, end } => {
                self.rfc4733_active = None;
                let span = Span { digit, start, end };
                self.drop_pending_near(&span);
                self.rfc4733_recent.remember(span);
                if !self.inband_recent.any_near(&span) {
                    self.emit(span, DigitSource::Rfc4733);
                }
            }
        }
    }

    /// An event from the in-band detector; `now` is the receiver's clock.
    pub fn on_inband(&mut self, event: ToneEvent, now: u64) {
        let ToneEvent::End { digit, start, end } = event else {
            return;
        };
        let span = Span { digit, start, end };
        let twin_active = self.rfc4733_active.is_some_and(|active| {
            active.digit == digit && active.start <= end + SAME_PRESS_SAMPLES
        });
        if twin_active || self.rfc4733_recent.any_near(&span) {
            return;
        }
        if self.rfc4733_negotiated && self.rfc4733_arriving {
            if let Some((waiting, _)) = self.pending.take() {
                self.emit_inband(waiting);
            }
            self.pending = Some((span, now + SAME_PRESS_SAMPLES));
        } else {
            self.emit_inband(span);
        }
    }

    /// The next press that counts, once its time has come.
    pub fn poll(&mut self, now: u64) -> Option<DigitPress> {
        if let Some((span, deadline)) = self.pending {
            if now >= deadline {
                self.pending = None;
                self.emit_inband(span);
            }
        }
        self.out.pop_front()
    }

    fn drop_pending_near(&mut self, span: &Span) {
        if self.pending.is_some_and(|(waiting, _)| waiting.near(span)) {
            self.pending = None;
        }
    }

    fn emit_inband(&mut self, span: Span) {
        self.inband_recent.remember(span);
        self.emit(span, DigitSource::InBand);
    }

    fn emit(&mut self, span: Span, source: DigitSource) {
        let _ = self.out.push_back(DigitPress {
            digit: span.digit,
            start: span.start,
            end: span.end,
            source,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(digit: char, start: u64, end: u64) -> ToneEvent {
        ToneEvent::End { digit, start, end }
    }

    fn drain(merger: &mut Merger, now: u64) -> Vec<(char, DigitSource)> {
        std::iter::from_fn(|| merger.poll(now))
            .map(|press| (press.digit, press.source))
            .collect()
    }

    #[test]
    fn rfc4733_first_then_inband_counts_once() {
        let mut merger = Merger::new(true);
        merger.on_rfc4733(ToneEvent::Start {
            digit: '5',
            at: 1000,
        });
        merger.on_inband(end('5', 1200, 1900), 1950);
        merger.on_rfc4733(end('5', 1000, 1800));
        assert_eq!(drain(&mut merger, 10_000), [('5', DigitSource::Rfc4733)]);
    }

    /// A phone that has already sent one RFC 4733 press.
    fn merger_with_rfc4733_arriving() -> Merger {
        let mut merger = Merger::new(true);
        merger.on_rfc4733(end('1', 0, 400));
        assert_eq!(drain(&mut merger, 500), [('1', DigitSource::Rfc4733)]);
        merger
    }

    #[test]
    fn inband_first_then_rfc4733_counts_once_and_prefers_rfc4733() {
        let mut merger = merger_with_rfc4733_arriving();
        merger.on_inband(end('7', 10_000, 10_800), 10_850);
        assert_eq!(drain(&mut merger, 10_900), []);
        merger.on_rfc4733(ToneEvent::Start {
            digit: '7',
            at: 11_000,
        });
        merger.on_rfc4733(end('7', 11_000, 11_800));
        assert_eq!(drain(&mut merger, 20_000), [('7', DigitSource::Rfc4733)]);
    }

    #[test]
    fn inband_alone_counts_after_the_wait_once_rfc4733_is_arriving() {
        let mut merger = merger_with_rfc4733_arriving();
        merger.on_inband(end('#', 10_000, 10_800), 10_850);
        assert_eq!(drain(&mut merger, 10_850 + SAME_PRESS_SAMPLES - 1), []);
        assert_eq!(
            drain(&mut merger, 10_850 + SAME_PRESS_SAMPLES),
            [('#', DigitSource::InBand)]
        );
        let mut plain = Merger::new(false);
        plain.on_inband(end('#', 1000, 1800), 1850);
        assert_eq!(drain(&mut plain, 1850), [('#', DigitSource::InBand)]);
    }

    #[test]
    fn inband_counts_at_once_while_no_rfc4733_has_arrived_and_a_late_twin_is_dropped() {
        let mut merger = Merger::new(true);
        merger.on_inband(end('9', 1000, 1800), 1850);
        assert_eq!(drain(&mut merger, 1850), [('9', DigitSource::InBand)]);
        merger.on_rfc4733(end('9', 1000, 1800));
        assert_eq!(drain(&mut merger, 10_000), []);
    }

    #[test]
    fn different_digits_or_presses_far_apart_both_count() {
        let mut merger = Merger::new(false);
        merger.on_rfc4733(end('1', 0, 800));
        merger.on_inband(end('2', 100, 900), 950);
        merger.on_inband(end('1', 800 + SAME_PRESS_SAMPLES + 1, 4000), 4050);
        assert_eq!(
            drain(&mut merger, 5000),
            [
                ('1', DigitSource::Rfc4733),
                ('2', DigitSource::InBand),
                ('1', DigitSource::InBand)
            ]
        );
    }
}
