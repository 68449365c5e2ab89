//! The keypad table of the README ("The keypad") as a
//! sans-IO state machine per member, and the short confirmation tones the
//! presser alone hears. Gains and gate steps are table look-ups, the tones a
//! recursive oscillator: nothing here allocates or calls `powf` on the tick.
//!
//! | key | effect |
//! |---|---|
//! | 1 / 2 / 3 | talk gain -3 dB / 0 dB / +3 dB, bounded to -12..+12 dB |
//! | 4 / 5 / 6 | receive gain -3 dB / 0 dB / +3 dB, bounded to -12..+12 dB |
//! | 7 / 8 / 9 | gate threshold -3 dB (more sensitive) / configured / +3 dB, four steps each way |
//! | 0 | toggle mute |
//! | * | if not both deaf and muted: deaf and mute; else neither |
//! | # | leave |

use crate::media::MemberFlags;

/// Steps either side of the default: 4 x 3 dB = 12 dB.
pub const MAX_STEPS: i8 = 4;
/// Size of one step in dB, for gains and the gate alike.
pub const STEP_DB: f32 = 3.0;
/// `10^(3*step/20)` for steps -4..=4: the linear factor of each gain step.
pub const GAIN_BY_STEP: [f32; 9] = [
    0.251_188_64,
    0.354_813_4,
    0.501_187_2,
    0.707_945_8,
    1.0,
    1.412_537_5,
    1.995_262_3,
    2.818_383,
    3.981_071_7,
];

/// The linear factor of a gain step in -4..=4.
pub fn gain_of_step(step: i8) -> f32 {
    GAIN_BY_STEP[(step.clamp(-MAX_STEPS, MAX_STEPS) + MAX_STEPS) as usize]
}

/// Which confirmation a press earns; each sounds different.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirmation {
    Up,
    Down,
    Reset,
    AtLimit,
    MuteOn,
    MuteOff,
}

/// What one press did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyOutcome {
    pub confirmation: Option<Confirmation>,
    /// New flags, when the press changed mute or deaf.
    pub flags: Option<MemberFlags>,
    /// The gate threshold moved.
    pub gate_changed: bool,
    /// `#`: the member asked to leave.
    pub leave: bool,
}

/// One member's keypad settings, as steps of 3 dB from the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keypad {
    pub talk_step: i8,
    pub receive_step: i8,
    /// Negative: lower threshold, more sensitive.
    pub gate_step: i8,
}

impl Keypad {
    /// Carries out one key of the table against the member's current flags.
    pub fn press(&mut self, digit: char, flags: MemberFlags) -> KeyOutcome {
        let mut outcome = KeyOutcome::default();
        match digit {
            '1' => outcome.confirmation = Some(step(&mut self.talk_step, -1)),
            '2' => outcome.confirmation = Some(reset(&mut self.talk_step)),
            '3' => outcome.confirmation = Some(step(&mut self.talk_step, 1)),
            '4' => outcome.confirmation = Some(step(&mut self.receive_step, -1)),
            '5' => outcome.confirmation = Some(reset(&mut self.receive_step)),
            '6' => outcome.confirmation = Some(step(&mut self.receive_step, 1)),
            // 7 makes the microphone more sensitive: the threshold goes down.
            '7' | '8' | '9' => {
                let before = self.gate_step;
                let confirmation = match digit {
                    '7' => step(&mut self.gate_step, -1),
                    '8' => reset(&mut self.gate_step),
                    _ => step(&mut self.gate_step, 1),
                };
                // "Up" and "down" speak of sensitivity, which is what the caller hears change.
                outcome.confirmation = Some(match confirmation {
                    Confirmation::Up => Confirmation::Down,
                    Confirmation::Down => Confirmation::Up,
                    other => other,
                });
                outcome.gate_changed = self.gate_step != before;
            }
            '0' => {
                let muted = !flags.muted;
                outcome.flags = Some(MemberFlags { muted, ..flags });
                outcome.confirmation = Some(if muted {
                    Confirmation::MuteOn
                } else {
                    Confirmation::MuteOff
                });
            }
            '*' => {
                let both = !(flags.deaf && flags.muted);
                outcome.flags = Some(MemberFlags {
                    muted: both,
                    deaf: both,
                    ..flags
                });
                outcome.confirmation = Some(if both {
                    Confirmation::MuteOn
                } else {
                    Confirmation::MuteOff
                });
            }
            '#' => outcome.leave = true,
            _ => {} // A-D: no meaning on a desk phone
        }
        outcome
    }

    pub fn talk_gain(&self) -> f32 {
        gain_of_step(self.talk_step)
    }

    pub fn receive_gain(&self) -> f32 {
        gain_of_step(self.receive_step)
    }
}

fn step(value: &mut i8, direction: i8) -> Confirmation {
    let next = *value + direction;
    if !(-MAX_STEPS..=MAX_STEPS).contains(&next) {
        return Confirmation::AtLimit;
    }
    *value = next;
    if direction > 0 {
        Confirmation::Up
    } else {
        Confirmation::Down
    }
}

fn reset(value: &mut i8) -> Confirmation {
    *value = 0;
    Confirmation::Reset
}

/// One note of a confirmation: a frequency (0 for a pause) and a length.
#[derive(Clone, Copy, Debug)]
struct Note {
    frequency_hz: f32,
    duration_ms: u32,
}

const fn note(frequency_hz: f32, duration_ms: u32) -> Note {
    Note {
        frequency_hz,
        duration_ms,
    }
}

/// Up rises, down falls, reset is one middle note, the limit is three low
/// pips, mute on two low beeps, mute off two high ones. None is a DTMF pair,
/// so a phone echoing it back cannot press a key.
const NOTES: [[Note; 5]; 6] = [
    [
        note(660.0, 60),
        note(990.0, 60),
        note(0.0, 0),
        note(0.0, 0),
        note(0.0, 0),
    ],
    [
        note(990.0, 60),
        note(660.0, 60),
        note(0.0, 0),
        note(0.0, 0),
        note(0.0, 0),
    ],
    [
        note(800.0, 120),
        note(0.0, 0),
        note(0.0, 0),
        note(0.0, 0),
        note(0.0, 0),
    ],
    [
        note(400.0, 40),
        note(0.0, 30),
        note(400.0, 40),
        note(0.0, 30),
        note(400.0, 40),
    ],
    [
        note(500.0, 70),
        note(0.0, 40),
        note(500.0, 70),
        note(0.0, 0),
        note(0.0, 0),
    ],
    [
        note(1100.0, 70),
        note(0.0, 40),
        note(1100.0, 70),
        note(0.0, 0),
        note(0.0, 0),
    ],
];

fn notes_of(confirmation: Confirmation) -> &'static [Note; 5] {
    &NOTES[match confirmation {
        Confirmation::Up => 0,
        Confirmation::Down => 1,
        Confirmation::Reset => 2,
        Confirmation::AtLimit => 3,
        Confirmation::MuteOn => 4,
        Confirmation::MuteOff => 5,
    }]
}

/// Peak of a confirmation note: about -15 dBm0, clearly heard, never loud.
const TONE_PEAK: f32 = 4000.0;
/// Fade in and out over this many samples (4 ms at 8 kHz), so notes do not click.
const RAMP_SAMPLES: u32 = 32;

/// Plays one confirmation into a member's own output, a frame at a time.
#[derive(Clone, Debug, Default)]
pub struct ConfirmationPlayer {
    notes: Option<&'static [Note; 5]>,
    note: usize,
    /// Samples of the current note played.
    position: u32,
    length: u32,
    /// Oscillator `y[n] = c*y[n-1] - y[n-2]` for the current note.
    coefficient: f32,
    previous: f32,
    before_previous: f32,
    rate_hz: u32,
}

impl ConfirmationPlayer {
    /// Starts `confirmation` from its first note, cutting any one still playing.
    pub fn start(&mut self, confirmation: Confirmation, rate_hz: u32) {
        self.notes = Some(notes_of(confirmation));
        self.rate_hz = rate_hz;
        self.begin_note(0);
    }

    pub fn stop(&mut self) {
        self.notes = None;
    }

    pub fn is_playing(&self) -> bool {
        self.notes.is_some()
    }

    fn begin_note(&mut self, index: usize) {
        let Some(notes) = self.notes else {
            return;
        };
        match notes.get(index) {
            Some(next) if next.duration_ms > 0 => {
                let omega = 2.0 * std::f32::consts::PI * next.frequency_hz / self.rate_hz as f32;
                self.note = index;
                self.position = 0;
                self.length = next.duration_ms * self.rate_hz / 1000;
                self.coefficient = 2.0 * omega.cos();
                // Start at phase zero: y[-1] = -sin(w), y[-2] = -sin(2w).
                self.previous = -omega.sin();
                self.before_previous = -(2.0 * omega).sin();
            }
            _ => self.notes = None,
        }
    }

    /// Adds the next `out.len()` samples of the confirmation to `out`, saturating.
    pub fn mix_into(&mut self, out: &mut [i16]) {
        for sample in out.iter_mut() {
            let Some(notes) = self.notes else {
                return;
            };
            let current = notes[self.note];
            let value = self.coefficient * self.previous - self.before_previous;
            self.before_previous = self.previous;
            self.previous = value;
            if current.frequency_hz > 0.0 {
                let from_edge = self.position.min(self.length - 1 - self.position);
                let envelope = (from_edge as f32 / RAMP_SAMPLES as f32).min(1.0);
                let tone = value * TONE_PEAK * envelope;
                *sample = (f32::from(*sample) + tone).clamp(-32768.0, 32767.0) as i16;
            }
            self.position += 1;
            if self.position >= self.length {
                self.begin_note(self.note + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gain_table_is_three_db_per_step() {
        for step in -MAX_STEPS..=MAX_STEPS {
            let expected = 10f32.powf(f32::from(step) * STEP_DB / 20.0);
            assert!((gain_of_step(step) / expected - 1.0).abs() < 1e-5, "{step}");
        }
    }

    #[test]
    fn talk_gain_stops_at_plus_12_db_and_then_says_so() {
        let mut keypad = Keypad::default();
        let flags = MemberFlags::default();
        for _ in 0..4 {
            assert_eq!(
                keypad.press('3', flags).confirmation,
                Some(Confirmation::Up)
            );
        }
        assert_eq!(keypad.talk_step, 4);
        assert_eq!(
            keypad.press('3', flags).confirmation,
            Some(Confirmation::AtLimit)
        );
        assert_eq!(keypad.talk_step, 4);
        assert_eq!(
            keypad.press('2', flags).confirmation,
            Some(Confirmation::Reset)
        );
        assert_eq!(keypad.talk_step, 0);
    }

    #[test]
    fn zero_toggles_mute_and_star_toggles_deaf_and_mute_together() {
        let mut keypad = Keypad::default();
        let plain = MemberFlags::default();
        let muted = keypad.press('0', plain).flags.expect("flags");
        assert!(muted.muted && !muted.deaf);
        assert!(!keypad.press('0', muted).flags.expect("flags").muted);
        let both = keypad.press('*', muted).flags.expect("flags");
        assert!(both.muted && both.deaf);
        let neither = keypad.press('*', both).flags.expect("flags");
        assert!(!neither.muted && !neither.deaf);
    }

    #[test]
    fn each_confirmation_has_its_own_sound() {
        let kinds = [
            Confirmation::Up,
            Confirmation::Down,
            Confirmation::Reset,
            Confirmation::AtLimit,
            Confirmation::MuteOn,
            Confirmation::MuteOff,
        ];
        let rendered: Vec<Vec<i16>> = kinds
            .iter()
            .map(|&kind| {
                let mut player = ConfirmationPlayer::default();
                player.start(kind, 8000);
                let mut out = vec![0i16; 2400];
                player.mix_into(&mut out);
                assert!(!player.is_playing(), "{kind:?} ends within 300 ms");
                out
            })
            .collect();
        for (a, first) in rendered.iter().enumerate() {
            assert!(first.iter().any(|&s| s.abs() > 3000));
            for second in &rendered[a + 1..] {
                assert_ne!(first, second);
            }
        }
    }
}
