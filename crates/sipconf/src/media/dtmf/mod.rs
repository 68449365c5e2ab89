//! The DTMF receiver: in-band tones (a Goertzel bank and a detector of our
//! own) and RFC 4733 telephone-events, merged so a press counts once. It meets
//! the numbers in docs/dtmf.md; the tests in `tests/dtmf_requirements.rs` measure them.
//!
//! Sans-IO: decoded 8 kHz samples and event payloads go in, presses come out,
//! all timed on the receiver's sample clock. Nothing here allocates after
//! construction except `decode_digits`, for whole recordings.

pub mod detector;
pub mod goertzel;
pub mod merge;
pub mod rfc4733;

pub use detector::InbandDetector;
pub use merge::Merger;
pub use rfc4733::{EventError, Rfc4733Receiver, TelephoneEvent};

/// Peak of a 0 dBm0 sine in 16-bit linear (docs/dtmf.md, "Levels").
pub const DBM0_PEAK: f32 = 22_930.0;
/// Receiver samples per millisecond.
const SAMPLES_PER_MS: u64 = 8;

/// The keypad by row (697, 770, 852, 941 Hz) and column (1209, 1336, 1477, 1633 Hz).
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// RFC 4733 §3.2 event codes 0-15.
pub const DIGITS_BY_EVENT: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// The key at a row and column of the keypad.
pub fn key_at(row: usize, column: usize) -> char {
    KEYPAD[row & 3][column & 3]
}

/// The row and column tone frequencies of a key, if it is one.
pub fn key_tones_hz(digit: char) -> Option<(f64, f64)> {
    KEYPAD.iter().enumerate().find_map(|(row, keys)| {
        let column = keys.iter().position(|&key| key == digit)?;
        Some((goertzel::TONE_HZ[row], goertzel::TONE_HZ[column + 4]))
    })
}

/// The RFC 4733 event code of a key, if it is one.
pub fn event_code(digit: char) -> Option<u8> {
    DIGITS_BY_EVENT
        .iter()
        .position(|&key| key == digit)
        .map(|code| code as u8)
}

/// One edge of a press, from either receiver, on the receiver's sample clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToneEvent {
    Start { digit: char, at: u64 },
    End { digit: char, start: u64, end: u64 },
}

/// How a press reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigitSource {
    /// Tones in the audio.
    InBand,
    /// RFC 4733 telephone-event packets.
    Rfc4733,
}

/// A whole press that counts, after the merge; times are 8 kHz samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigitPress {
    pub digit: char,
    pub start: u64,
    pub end: u64,
    pub source: DigitSource,
}

impl DigitPress {
    pub fn duration_ms(&self) -> u32 {
        u32::try_from(self.end.saturating_sub(self.start) / SAMPLES_PER_MS).unwrap_or(u32::MAX)
    }
}

/// One member's receiver: the in-band detector and the RFC 4733 receiver,
/// merged. Its clock is the count of audio samples fed through `on_audio`.
pub struct DtmfReceiver {
    inband: InbandDetector,
    rfc4733: Rfc4733Receiver,
    merger: Merger,
}

impl DtmfReceiver {
    pub fn new(rfc4733_negotiated: bool) -> Self {
        DtmfReceiver {
            inband: InbandDetector::new(),
            rfc4733: Rfc4733Receiver::new(),
            merger: Merger::new(rfc4733_negotiated),
        }
    }

    /// Starts over for a new member; `keys`: whether its audio can carry
    /// keys at all (not a cascade link's).
    pub fn reset(&mut self, rfc4733_negotiated: bool, keys: bool) {
        self.reset_at(rfc4733_negotiated, 8000, keys);
    }

    /// `reset`, with telephone-events on an RTP clock of `event_rate_hz`
    /// (8000, or 48000 beside Opus).
    pub fn reset_at(&mut self, rfc4733_negotiated: bool, event_rate_hz: u32, keys: bool) {
        self.inband.reset(0);
        self.inband.listen(keys);
        self.rfc4733.reset_at(event_rate_hz);
        self.merger.reset(rfc4733_negotiated);
    }

    /// The receiver's clock: 8 kHz samples of audio fed so far.
    pub fn clock(&self) -> u64 {
        self.inband.clock()
    }

    /// Feeds decoded 8 kHz audio (any number of samples).
    pub fn on_audio(&mut self, samples: &[i16]) {
        self.inband.process(samples);
        let now = self.inband.clock();
        while let Some(event) = self.inband.poll_event() {
            self.merger.on_inband(event, now);
        }
    }

    /// Takes the payload of one packet of the negotiated telephone-event type.
    pub fn on_telephone_event(
        &mut self,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), EventError> {
        let outcome = self
            .rfc4733
            .on_packet(self.inband.clock(), ssrc, timestamp, payload);
        self.forward_rfc4733();
        outcome
    }

    /// A key's tones are being heard right now (for holding them out of the mix).
    pub fn tone_present(&self) -> bool {
        self.inband.tone_present()
    }

    /// A key's tones may be starting in the audio last fed, or are being heard
    /// (see `InbandDetector::tone_suspected`).
    pub fn tone_suspected(&self) -> bool {
        self.inband.tone_suspected()
    }

    /// The next press that counts; call after feeding each frame.
    pub fn poll_press(&mut self) -> Option<DigitPress> {
        let now = self.inband.clock();
        self.rfc4733.poll_timeout(now);
        self.forward_rfc4733();
        self.merger.poll(now)
    }

    fn forward_rfc4733(&mut self) {
        while let Some(event) = self.rfc4733.poll_event() {
            self.merger.on_rfc4733(event);
        }
    }
}

/// One press found in a recording: `DIGIT START_MS END_MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigitReport {
    pub digit: char,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Silence fed after the end of a recording so a press still sounding there ends.
const FLUSH_SAMPLES: usize = 800;

/// The presses the in-band receiver hears in 8 kHz audio.
pub fn decode_digits(samples: &[i16]) -> Vec<DigitReport> {
    let mut detector = InbandDetector::new();
    let mut reports = Vec::new();
    let silence = [0i16; FLUSH_SAMPLES];
    for chunk in samples.chunks(160).chain(std::iter::once(&silence[..])) {
        detector.process(chunk);
        while let Some(event) = detector.poll_event() {
            if let ToneEvent::End { digit, start, end } = event {
                reports.push(DigitReport {
                    digit,
                    start_ms: start / SAMPLES_PER_MS,
                    end_ms: end / SAMPLES_PER_MS,
                });
            }
        }
    }
    reports
}

/// `sipconf dtmf` output: one `DIGIT START_MS END_MS` line per press, then
/// `digits: ...`; every line ends with a newline.
pub fn format_report(reports: &[DigitReport]) -> String {
    let mut out = String::new();
    for report in reports {
        out.push_str(&format!(
            "{} {} {}\n",
            report.digit, report.start_ms, report.end_ms
        ));
    }
    let digits: String = reports.iter().map(|report| report.digit).collect();
    out.push_str(&format!("digits: {digits}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_tones_and_event_codes() {
        assert_eq!(key_tones_hz('1'), Some((697.0, 1209.0)));
        assert_eq!(key_tones_hz('#'), Some((941.0, 1477.0)));
        assert_eq!(key_tones_hz('D'), Some((941.0, 1633.0)));
        assert_eq!(key_tones_hz('x'), None);
        assert_eq!(event_code('0'), Some(0));
        assert_eq!(event_code('#'), Some(11));
        assert_eq!(key_at(3, 1), '0');
    }

    #[test]
    fn format_report_lists_presses_then_the_digits() {
        let reports = [
            DigitReport {
                digit: '1',
                start_ms: 100,
                end_ms: 180,
            },
            DigitReport {
                digit: '#',
                start_ms: 300,
                end_ms: 390,
            },
        ];
        assert_eq!(
            format_report(&reports),
            "1 100 180\n# 300 390\ndigits: 1#\n"
        );
        assert_eq!(format_report(&[]), "digits: \n");
    }
}
