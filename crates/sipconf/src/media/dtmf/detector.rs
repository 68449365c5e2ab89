//! The in-band DTMF detector: decides, every 6.25 ms, whether the last 25 ms
//! hold one key's two tones and nothing much else, and turns those verdicts
//! into press start and end events with sample timestamps.
//!
//! A window passes when (docs/dtmf.md, "Design notes"): its energy is above the
//! floor; one row and one column tone dominate their groups; each tone's
//! frequency, measured from the phase advance between sub-blocks, is within
//! `MAX_FREQUENCY_ERROR` of nominal (Q.24: accept +/-1.5 %, reject beyond
//! +/-3.5 %); the twist is within limits; the key sounds in every sub-block;
//! and the two tones hold enough of the window's energy in the keypad band
//! (speech below 600 Hz does not count), the more the further they are off
//! frequency or tilted towards the low group, which is what speech fails. A
//! press starts after `CONFIRM_WINDOWS` passing windows of one key and ends
//! after `RELEASE_MISSES` windows in a row that no longer hold it.
//!
//! Sans-IO and allocation-free: samples and a sample clock in, events out.

use heapless::Deque;

use super::goertzel::{Complex, SubBlock, ToneBank, SUB_BLOCK_SAMPLES, TONE_HZ};
use super::{key_at, ToneEvent, DBM0_PEAK};

/// Sub-blocks summed into one detection window: 4 x 50 = 200 samples (25 ms),
/// long enough that neighbouring row tones leak about -20 dB into each other.
const WINDOW_SUB_BLOCKS: usize = 4;
const WINDOW_SAMPLES: usize = WINDOW_SUB_BLOCKS * SUB_BLOCK_SAMPLES;
/// Passing windows of one key, in a row, before a press starts. Three windows
/// 6.25 ms apart need about 30 ms of tone: docs/dtmf.md row 5 wants >= 40 ms
/// accepted and < 20 ms rejected.
const CONFIRM_WINDOWS: u32 = 3;
/// Windows in a row without the key before the press ends: 18.75 ms, so a
/// 10 ms break does not split a press and a 40 ms one does (row 6).
const RELEASE_MISSES: u32 = 3;
/// Share of the window's in-band energy the two tones must hold to start a
/// press when both are exactly on frequency and the twist is level. A key's
/// generator is accurate and flat; speech that happens to have two harmonics
/// near a key is neither, and tilts down with frequency. So the bar rises
/// with the summed frequency error of both tones (12 points per 1 %) and with
/// low-group excess (4 points per dB): a key inside speech at 10 dB S/N gets
/// through, a near miss of speech must be almost pure (rows 9 and 10).
const MIN_CONCENTRATION: f32 = 0.40;
const CONCENTRATION_PER_ERROR: f32 = 12.0;
const CONCENTRATION_PER_LOW_TWIST_DB: f32 = 0.04;
/// A, B, C and D (1633 Hz) never come from a desk phone's keypad but are what
/// female voices near 233 Hz imitate best (3rd/4th and 7th harmonics): they
/// must be cleaner still.
const CONCENTRATION_EXTRA_A_TO_D: f32 = 0.15;
/// Share needed to keep a press going (a dropout or a burst of noise).
const HOLD_CONCENTRATION: f32 = 0.35;
/// Below this no window starts or holds a press.
const LOWEST_CONCENTRATION: f32 = if HOLD_CONCENTRATION < MIN_CONCENTRATION {
    HOLD_CONCENTRATION
} else {
    MIN_CONCENTRATION
};
/// Largest relative frequency error accepted: halfway between Q.24's 1.5 % and 3.5 %.
const MAX_FREQUENCY_ERROR: f32 = 0.025;
/// While a press is on, a little more drift is tolerated.
const HOLD_FREQUENCY_ERROR: f32 = 0.035;
/// The strongest tone of a group must be this far (power ratio, 3 dB) above the next.
const GROUP_DOMINANCE: f32 = 2.0;
/// Low group louder than the high group by at most this (reverse twist; row 3 wants 8 dB).
const MAX_LOW_LOUDER_DB: f32 = 9.5;
/// High group louder than the low group by at most this (normal twist; row 3 wants 4 dB).
const MAX_HIGH_LOUDER_DB: f32 = 6.5;
/// Quietest tone accepted, per tone (row 4: accept -36 dBm0, reject below -55 dBm0).
const MIN_TONE_DBM0: f32 = -44.0;
/// Every sub-block of a starting window must hold the key at this share of its
/// full amplitude (-20 dB). With three windows to confirm, a press needs six
/// sub-blocks with the key, the outer two barely: about 27 ms (row 5).
const STEADY_PRESENCE: f32 = 0.1;
/// Early warning, judged on the two newest sub-blocks (12.5 ms) instead of a
/// window: the same key's row and column tone are each the strongest of their
/// group in both, each at least this far (-3 dB) below a window's floor...
const SUSPECT_ENERGY_SHARE: f32 = 0.5;
/// ...each advances in phase like its nominal frequency within this (the same
/// drift a press is held through)...
const SUSPECT_FREQUENCY_ERROR: f32 = HOLD_FREQUENCY_ERROR;
/// ...and together they hold this share of the newer sub-block's in-band energy.
const SUSPECT_CONCENTRATION: f32 = 0.8;
/// The twist may be this much wider than a press's (short blocks measure it roughly).
const SUSPECT_TWIST_SLACK_DB: f32 = 3.0;
/// How far a group's strongest tone leads the others in each sub-block.
const SUSPECT_DOMINANCE: f32 = 1.5;
/// A sub-block below this energy (RMS 20, about -64 dBFS) skips the tone
/// filters while nothing is being detected. Its power at any one frequency is
/// at most 50 times its energy (Cauchy-Schwarz), 1.0e6: under a tenth
/// (`STEADY_PRESENCE`) of the power of the quietest key tone accepted
/// (-44 dBm0 over 50 samples, 1.3e7), so it can neither start a key nor,
/// next to louder sub-blocks, pass a steadiness test its real values would fail.
const QUIET_SUB_BLOCK_ENERGY: i64 = SUB_BLOCK_SAMPLES as i64 * 20 * 20;
/// Events one call to `process` can leave queued.
const EVENT_QUEUE: usize = 8;

/// The energy of a whole sub-block, if it is too quiet to hold a key
/// (`QUIET_SUB_BLOCK_ENERGY`), so that it may skip the tone filters.
fn quiet_energy(block: &[i16]) -> Option<f32> {
    let energy: i64 = block.iter().map(|&x| i64::from(x) * i64::from(x)).sum();
    (energy < QUIET_SUB_BLOCK_ENERGY).then_some(energy as f32)
}

/// What one window holds, before the thresholds are applied.
#[derive(Clone, Copy, Debug)]
struct WindowAnalysis {
    row: usize,
    column: usize,
    /// Each winner's tone energy over the window, measured at its own frequency.
    row_energy: f32,
    column_energy: f32,
    row_frequency_error: f32,
    column_frequency_error: f32,
    /// (row + column energy) / window energy, both seen through the band filter.
    concentration: f32,
    dominant: bool,
    /// Per sub-block, the weaker of the two tones' power relative to its
    /// strongest sub-block in the window: the square of the share of the
    /// sub-block the key fills.
    presence: [f32; WINDOW_SUB_BLOCKS],
}

impl WindowAnalysis {
    /// The key sounds in every sub-block: no short blip passes as a 25 ms window.
    fn steady(&self) -> bool {
        self.presence
            .iter()
            .all(|&share| share >= STEADY_PRESENCE * STEADY_PRESENCE)
    }

    /// Where the key starts in this window, from the share of the first sub-block it fills.
    fn onset(&self, window_start: u64) -> u64 {
        let missing = 1.0 - self.presence[0].min(1.0).sqrt();
        window_start + (missing * SUB_BLOCK_SAMPLES as f32) as u64
    }

    /// Where the key ends in this window: the last sub-block it fills, and how much of it.
    fn end(&self, window_start: u64) -> u64 {
        let last = (0..WINDOW_SUB_BLOCKS)
            .rev()
            .find(|&k| self.presence[k] >= STEADY_PRESENCE * STEADY_PRESENCE)
            .unwrap_or(0);
        let filled = self.presence[last].min(1.0).sqrt() * SUB_BLOCK_SAMPLES as f32;
        window_start + (last * SUB_BLOCK_SAMPLES) as u64 + filled as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Passing windows of `digit` seen, not yet enough to call it a press.
    Candidate {
        digit: char,
        windows: u32,
        onset: u64,
    },
    On {
        digit: char,
        start: u64,
        /// Estimated end of the tone from the last window that held it.
        end: u64,
        misses: u32,
    },
}

/// One member's in-band receiver.
pub struct InbandDetector {
    bank: ToneBank,
    window: [SubBlock; WINDOW_SUB_BLOCKS],
    /// Next slot of `window` to write; the oldest sub-block sits there.
    next: usize,
    filled: usize,
    /// Sample index of the next sample fed to the bank.
    clock: u64,
    /// The bank takes pairs: an odd sample waits here for its partner.
    carried: Option<i16>,
    /// The start of a sub-block that a frame ended in the middle of, held
    /// (while nothing is being detected) until the block is whole, so the
    /// quiet test can spare its filters; the block's result comes when its
    /// last sample does either way. `waiting` samples are held.
    held: [i16; SUB_BLOCK_SAMPLES],
    waiting: usize,
    state: State,
    /// The last window passed the start checks: a tone is being heard.
    tone_in_window: bool,
    /// During the last `process`, two sub-blocks in a row looked like one key.
    suspected: bool,
    events: Deque<ToneEvent, EVENT_QUEUE>,
    /// `e^{-j*w*M*k}` for each tone and sub-block position: the coherent sum's phase reference.
    window_rotation: [[Complex; WINDOW_SUB_BLOCKS]; 8],
    /// `e^{-j*w*M}`: the advance a tone at exactly its nominal frequency makes per sub-block.
    step_rotation: [Complex; 8],
    omega_m: [f32; 8],
    /// The band filter's power gain at each tone, to compare tones with the band energy.
    band_gain: [f32; 8],
    min_tone_energy: f32,
    /// `min_tone_energy` while the detector listens for keys (`listen`).
    listening_min_tone_energy: f32,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl InbandDetector {
    pub fn new() -> Self {
        let mut window_rotation = [[Complex::ZERO; WINDOW_SUB_BLOCKS]; 8];
        let mut step_rotation = [Complex::ZERO; 8];
        let mut omega_m = [0.0; 8];
        for (tone, &frequency_hz) in TONE_HZ.iter().enumerate() {
            let omega = 2.0 * std::f64::consts::PI * frequency_hz / 8000.0;
            let step = omega * SUB_BLOCK_SAMPLES as f64;
            for (k, rotation) in window_rotation[tone].iter_mut().enumerate() {
                *rotation = Complex::from_angle(-step * k as f64);
            }
            step_rotation[tone] = Complex::from_angle(-step);
            omega_m[tone] = step as f32;
        }
        let amplitude = DBM0_PEAK * 10f32.powf(MIN_TONE_DBM0 / 20.0);
        let bank = ToneBank::new();
        let band_gain = TONE_HZ.map(|frequency_hz| bank.band_gain(frequency_hz) as f32);
        InbandDetector {
            bank,
            band_gain,
            window: [SubBlock::default(); WINDOW_SUB_BLOCKS],
            next: 0,
            filled: 0,
            clock: 0,
            carried: None,
            held: [0; SUB_BLOCK_SAMPLES],
            waiting: 0,
            state: State::Idle,
            tone_in_window: false,
            suspected: false,
            events: Deque::new(),
            window_rotation,
            step_rotation,
            omega_m,
            min_tone_energy: WINDOW_SAMPLES as f32 * amplitude * amplitude / 2.0,
            listening_min_tone_energy: WINDOW_SAMPLES as f32 * amplitude * amplitude / 2.0,
        }
    }

    /// Whether any audio can be a key: off, no tone is loud enough to be
    /// one, so nothing is detected or suspected (a cascade link's mix), at
    /// no cost on the tick's path.
    pub fn listen(&mut self, keys: bool) {
        self.min_tone_energy = if keys {
            self.listening_min_tone_energy
        } else {
            f32::INFINITY
        };
    }

    /// Forgets everything heard; the clock restarts at `clock`.
    pub fn reset(&mut self, clock: u64) {
        self.bank.clear();
        self.next = 0;
        self.filled = 0;
        self.clock = clock;
        self.carried = None;
        self.waiting = 0;
        self.state = State::Idle;
        self.tone_in_window = false;
        self.suspected = false;
        self.events.clear();
    }

    /// Samples taken into the analysis so far (one may still wait for its pair).
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Feeds 8 kHz samples, any number at a time. Events that do not fit the
    /// queue (more than `EVENT_QUEUE` unpolled) are dropped, oldest kept.
    pub fn process(&mut self, mut samples: &[i16]) {
        self.suspected = false;
        if let Some(first) = self.carried.take() {
            let Some((&second, rest)) = samples.split_first() else {
                self.carried = Some(first);
                return;
            };
            self.feed_pairs(&[first, second]);
            samples = rest;
        }
        let whole_pairs = samples.len() & !1;
        self.feed_pairs(&samples[..whole_pairs]);
        if let Some(&odd) = samples.get(whole_pairs) {
            self.carried = Some(odd);
        }
    }

    fn feed_pairs(&mut self, mut samples: &[i16]) {
        if self.waiting > 0 {
            let take = (SUB_BLOCK_SAMPLES - self.waiting).min(samples.len());
            self.held[self.waiting..self.waiting + take].copy_from_slice(&samples[..take]);
            self.waiting += take;
            self.clock += take as u64;
            samples = &samples[take..];
            if self.waiting < SUB_BLOCK_SAMPLES {
                return;
            }
            self.waiting = 0;
            let held = self.held;
            let block = match quiet_energy(&held) {
                Some(energy) => Some(self.bank.take_quiet(energy)),
                None => self.bank.feed(&held).1,
            };
            if let Some(block) = block {
                self.add_sub_block(block);
            }
        }
        while !samples.is_empty() {
            let may_skip = self.bank.between_blocks() && matches!(self.state, State::Idle);
            if may_skip && samples.len() < SUB_BLOCK_SAMPLES {
                self.held[..samples.len()].copy_from_slice(samples);
                self.waiting = samples.len();
                self.clock += samples.len() as u64;
                return;
            }
            let quiet = may_skip
                .then(|| quiet_energy(&samples[..SUB_BLOCK_SAMPLES]))
                .flatten();
            let (taken, block) = match quiet {
                Some(energy) => (SUB_BLOCK_SAMPLES, Some(self.bank.take_quiet(energy))),
                None => self.bank.feed(samples),
            };
            samples = &samples[taken..];
            self.clock += taken as u64;
            if let Some(block) = block {
                self.add_sub_block(block);
            }
        }
    }

    fn add_sub_block(&mut self, block: SubBlock) {
        self.window[self.next] = block;
        self.next = (self.next + 1) % WINDOW_SUB_BLOCKS;
        self.filled = (self.filled + 1).min(WINDOW_SUB_BLOCKS);
        if self.filled >= 2 && !self.suspected {
            self.suspected = self.newest_blocks_look_like_a_key();
        }
        if self.filled == WINDOW_SUB_BLOCKS {
            self.evaluate_window();
        }
    }

    /// The next start or end event, oldest first.
    pub fn poll_event(&mut self) -> Option<ToneEvent> {
        self.events.pop_front()
    }

    /// True while a key's tones are being heard (a press in progress or about
    /// to be confirmed): the engine holds the talker's audio back from the mix.
    pub fn tone_present(&self) -> bool {
        self.tone_in_window || matches!(self.state, State::On { misses: 0, .. })
    }

    /// True when a key's tones may be starting: during the samples of the last
    /// `process` call two sub-blocks in a row looked like one key (12.5 ms of
    /// it, well before a window of 25 ms can pass), or a key is being heard.
    /// Speech passes this looser test now and then; the engine then hears the
    /// member a frame late for a while, which costs nothing audible.
    pub fn tone_suspected(&self) -> bool {
        self.suspected || self.tone_present()
    }

    /// The looser test behind `tone_suspected`, on the two newest sub-blocks.
    fn newest_blocks_look_like_a_key(&self) -> bool {
        let newer = &self.window[(self.next + WINDOW_SUB_BLOCKS - 1) % WINDOW_SUB_BLOCKS];
        let older = &self.window[(self.next + WINDOW_SUB_BLOCKS - 2) % WINDOW_SUB_BLOCKS];
        let floor = SUSPECT_ENERGY_SHARE * self.min_tone_energy * SUB_BLOCK_SAMPLES as f32
            / WINDOW_SAMPLES as f32;
        if newer.band_energy < floor || older.band_energy < floor {
            return false;
        }
        let power = |block: &SubBlock, tone: usize| block.tones[tone].norm_sqr();
        let strongest_of = |block: &SubBlock, group: std::ops::Range<usize>| {
            group
                .clone()
                .max_by(|&a, &b| power(block, a).total_cmp(&power(block, b)))
                .unwrap_or(group.start)
        };
        let row = strongest_of(newer, 0..4);
        let column = strongest_of(newer, 4..8);
        if strongest_of(older, 0..4) != row || strongest_of(older, 4..8) != column {
            return false;
        }
        // Neighbouring tones leak about half their power into each other over
        // 50 samples, so a group's strongest need only lead its next by 1.5x.
        let dominates = |block: &SubBlock, tone: usize, group: std::ops::Range<usize>| {
            group
                .filter(|&other| other != tone)
                .all(|other| power(block, tone) >= SUSPECT_DOMINANCE * power(block, other))
        };
        if !dominates(newer, row, 0..4)
            || !dominates(newer, column, 4..8)
            || !dominates(older, row, 0..4)
            || !dominates(older, column, 4..8)
        {
            return false;
        }
        // A tone A*cos has |X|^2 = (N*A/2)^2 and energy N*A^2/2 over N samples.
        let energy =
            |block: &SubBlock, tone: usize| 2.0 * power(block, tone) / SUB_BLOCK_SAMPLES as f32;
        let loud_enough =
            |tone: usize| energy(newer, tone) >= floor && energy(older, tone) >= floor;
        if !loud_enough(row) || !loud_enough(column) {
            return false;
        }
        // Both tones of a key, not one tone and the other group's leakage of it.
        let twist_db = 10.0 * (energy(newer, row) / energy(newer, column)).log10();
        if !(-MAX_HIGH_LOUDER_DB - SUSPECT_TWIST_SLACK_DB
            ..=MAX_LOW_LOUDER_DB + SUSPECT_TWIST_SLACK_DB)
            .contains(&twist_db)
        {
            return false;
        }
        let on_frequency = |tone: usize| {
            let advance = newer.tones[tone] * older.tones[tone].conj() * self.step_rotation[tone];
            let offset = fast_atan2(advance.im, advance.re);
            (offset / self.omega_m[tone]).abs() <= SUSPECT_FREQUENCY_ERROR
        };
        if !on_frequency(row) || !on_frequency(column) {
            return false;
        }
        let in_band = energy(newer, row) * self.band_gain[row]
            + energy(newer, column) * self.band_gain[column];
        in_band >= SUSPECT_CONCENTRATION * newer.band_energy
    }

    fn push(&mut self, event: ToneEvent) {
        let _ = self.events.push_back(event);
    }

    fn evaluate_window(&mut self) {
        let window_end = self.clock;
        let window_start = window_end - WINDOW_SAMPLES as u64;
        let analysis = self.analyse();
        let passes = analysis.filter(|a| self.passes_start_checks(a));
        self.tone_in_window = passes.is_some();
        let passing_digit = passes.map(|a| key_at(a.row, a.column));
        let onset = |a: &WindowAnalysis| a.onset(window_start);
        self.state = match self.state {
            State::Idle => match passes {
                Some(a) => self.candidate(key_at(a.row, a.column), 1, onset(&a)),
                None => State::Idle,
            },
            State::Candidate {
                digit,
                windows,
                onset: first_onset,
            } => match passes {
                Some(_) if passing_digit == Some(digit) => {
                    self.candidate(digit, windows + 1, first_onset)
                }
                Some(a) => self.candidate(key_at(a.row, a.column), 1, onset(&a)),
                None => State::Idle,
            },
            State::On {
                digit,
                start,
                end,
                misses,
            } => {
                let held = analysis.filter(|a| self.holds(a, digit));
                match held {
                    Some(a) => State::On {
                        digit,
                        start,
                        end: a.end(window_start).max(end),
                        misses: 0,
                    },
                    None if misses + 1 < RELEASE_MISSES => State::On {
                        digit,
                        start,
                        end,
                        misses: misses + 1,
                    },
                    None => {
                        self.push(ToneEvent::End {
                            digit,
                            start,
                            end: end.max(start),
                        });
                        match passes {
                            Some(a) => self.candidate(key_at(a.row, a.column), 1, onset(&a)),
                            None => State::Idle,
                        }
                    }
                }
            }
        };
    }

    /// A candidate with `windows` passing windows; a press once there are enough.
    fn candidate(&mut self, digit: char, windows: u32, onset: u64) -> State {
        if windows < CONFIRM_WINDOWS {
            return State::Candidate {
                digit,
                windows,
                onset,
            };
        }
        self.push(ToneEvent::Start { digit, at: onset });
        State::On {
            digit,
            start: onset,
            end: self.clock,
            misses: 0,
        }
    }

    fn passes_start_checks(&self, a: &WindowAnalysis) -> bool {
        let cheap = a.dominant
            && a.steady()
            && a.row_energy >= self.min_tone_energy
            && a.column_energy >= self.min_tone_energy
            && a.row_frequency_error.abs() <= MAX_FREQUENCY_ERROR
            && a.column_frequency_error.abs() <= MAX_FREQUENCY_ERROR
            && a.concentration >= MIN_CONCENTRATION;
        if !cheap {
            return false;
        }
        let twist_db = 10.0 * (a.row_energy / a.column_energy).log10();
        let frequency_error = a.row_frequency_error.abs() + a.column_frequency_error.abs();
        let required = MIN_CONCENTRATION
            + CONCENTRATION_PER_ERROR * frequency_error
            + CONCENTRATION_PER_LOW_TWIST_DB * twist_db.max(0.0)
            + if a.column == 3 {
                CONCENTRATION_EXTRA_A_TO_D
            } else {
                0.0
            };
        a.concentration >= required && (-MAX_HIGH_LOUDER_DB..=MAX_LOW_LOUDER_DB).contains(&twist_db)
    }

    fn holds(&self, a: &WindowAnalysis, digit: char) -> bool {
        key_at(a.row, a.column) == digit
            && a.row_energy >= self.min_tone_energy / 2.0
            && a.column_energy >= self.min_tone_energy / 2.0
            && a.row_frequency_error.abs() <= HOLD_FREQUENCY_ERROR
            && a.column_frequency_error.abs() <= HOLD_FREQUENCY_ERROR
            && a.concentration >= HOLD_CONCENTRATION
    }

    /// The strongest row and column of the window, measured; None below the energy floor.
    fn analyse(&self) -> Option<WindowAnalysis> {
        let mut total_energy = 0.0;
        let mut band_energy = 0.0;
        for block in &self.window {
            total_energy += block.energy;
            band_energy += block.band_energy;
        }
        if total_energy < 2.0 * self.min_tone_energy {
            return None;
        }
        let mut nominal_power = [0.0f32; 8];
        for (tone, power) in nominal_power.iter_mut().enumerate() {
            let mut sum = Complex::ZERO;
            for k in 0..WINDOW_SUB_BLOCKS {
                let block = &self.window[(self.next + k) % WINDOW_SUB_BLOCKS];
                sum = sum + block.tones[tone] * self.window_rotation[tone][k];
            }
            *power = sum.norm_sqr();
        }
        let (row, row_dominant) = strongest(&nominal_power[..4]);
        let (column, column_dominant) = strongest(&nominal_power[4..]);
        // Cheap bound first: the tracked sum can hold at most K times the sum of
        // the sub-block powers (Cauchy-Schwarz). Speech and noise stop here.
        let bound = |tone: usize| {
            let mut power = 0.0;
            for block in &self.window {
                power += block.tones[tone].norm_sqr();
            }
            2.0 * WINDOW_SUB_BLOCKS as f32 * power / WINDOW_SAMPLES as f32 * self.band_gain[tone]
        };
        if bound(row) + bound(column + 4) < LOWEST_CONCENTRATION * band_energy {
            return None;
        }
        let (row_energy, row_frequency_error, row_presence) = self.tracked(row);
        let (column_energy, column_frequency_error, column_presence) = self.tracked(column + 4);
        let mut presence = [0.0; WINDOW_SUB_BLOCKS];
        for (k, share) in presence.iter_mut().enumerate() {
            *share = row_presence[k].min(column_presence[k]);
        }
        Some(WindowAnalysis {
            row,
            column,
            row_energy,
            column_energy,
            row_frequency_error,
            column_frequency_error,
            concentration: (row_energy * self.band_gain[row]
                + column_energy * self.band_gain[column + 4])
                / band_energy.max(1.0),
            dominant: row_dominant && column_dominant,
            presence,
        })
    }

    /// A tone's energy over the window measured at its actual frequency,
    /// that frequency's relative error, and its power per sub-block relative
    /// to the strongest. The phase advance between sub-blocks
    /// gives the offset from nominal (unambiguous within +/-80 Hz); the
    /// sub-blocks are then summed along that phase, so a tone 3 % off loses
    /// no energy to the window's narrow main lobe and the frequency test, not
    /// the level, decides.
    fn tracked(&self, tone: usize) -> (f32, f32, [f32; WINDOW_SUB_BLOCKS]) {
        let at = |k: usize| self.window[(self.next + k) % WINDOW_SUB_BLOCKS].tones[tone];
        let mut advance = Complex::ZERO;
        for k in 0..WINDOW_SUB_BLOCKS - 1 {
            advance = advance + at(k + 1) * at(k).conj();
        }
        let advance = advance * self.step_rotation[tone];
        let offset = fast_atan2(advance.im, advance.re);
        let magnitude = advance.norm_sqr().sqrt();
        let unit = if magnitude > 0.0 {
            let inverse = 1.0 / magnitude;
            Complex {
                re: advance.re * inverse,
                im: advance.im * inverse,
            }
        } else {
            Complex { re: 1.0, im: 0.0 }
        };
        // Sum X_k * e^{-j(w+d)Mk} = X_k * rotation_k * conj(unit)^k.
        let back = unit.conj();
        let mut turn = Complex { re: 1.0, im: 0.0 };
        let mut sum = Complex::ZERO;
        for k in 0..WINDOW_SUB_BLOCKS {
            sum = sum + at(k) * self.window_rotation[tone][k] * turn;
            turn = turn * back;
        }
        // A tone A*cos has |X|^2 = (N*A/2)^2 and energy N*A^2/2.
        let energy = 2.0 * sum.norm_sqr() / WINDOW_SAMPLES as f32;
        let mut presence = [0.0; WINDOW_SUB_BLOCKS];
        let mut strongest = 0.0f32;
        for (k, share) in presence.iter_mut().enumerate() {
            *share = at(k).norm_sqr();
            strongest = strongest.max(*share);
        }
        if strongest > 0.0 {
            let inverse = 1.0 / strongest;
            for share in presence.iter_mut() {
                *share *= inverse;
            }
        }
        (energy, offset / self.omega_m[tone], presence)
    }
}

/// `atan2(y, x)` within 0.004 rad (a rational approximation of atan on the
/// first octant): 0.02 % of a DTMF frequency, for a fraction of the cost.
fn fast_atan2(y: f32, x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, FRAC_PI_4, PI};
    let (ax, ay) = (x.abs(), y.abs());
    if ax == 0.0 && ay == 0.0 {
        return 0.0;
    }
    let (small, large) = if ax >= ay { (ay, ax) } else { (ax, ay) };
    let z = small / large;
    let mut angle = z * (FRAC_PI_4 + 0.273 * (1.0 - z));
    if ay > ax {
        angle = FRAC_PI_2 - angle;
    }
    if x < 0.0 {
        angle = PI - angle;
    }
    if y < 0.0 {
        -angle
    } else {
        angle
    }
}

/// Index of the largest of four powers, and whether it beats the rest by `GROUP_DOMINANCE`.
fn strongest(powers: &[f32]) -> (usize, bool) {
    let mut best = 0;
    for (index, &power) in powers.iter().enumerate() {
        if power > powers[best] {
            best = index;
        }
    }
    let dominant = powers
        .iter()
        .enumerate()
        .all(|(index, &power)| index == best || powers[best] >= GROUP_DOMINANCE * power);
    (best, dominant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tones(low_hz: f64, high_hz: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                let t = n as f64 / 8000.0;
                let phase = 2.0 * std::f64::consts::PI;
                (amplitude * ((phase * low_hz * t).sin() + (phase * high_hz * t).sin())) as i16
            })
            .collect()
    }

    fn events(detector: &mut InbandDetector) -> Vec<ToneEvent> {
        std::iter::from_fn(|| detector.poll_event()).collect()
    }

    #[test]
    fn a_key_gives_one_start_and_one_end_near_the_true_edges() {
        let mut detector = InbandDetector::new();
        let mut signal = vec![0i16; 400];
        signal.extend(tones(852.0, 1477.0, 8000.0, 800));
        signal.extend(vec![0i16; 800]);
        // Odd chunk sizes: the detector pairs samples across calls.
        for chunk in signal.chunks(77) {
            detector.process(chunk);
        }
        let got = events(&mut detector);
        assert_eq!(got.len(), 2, "{got:?}");
        let ToneEvent::Start { digit, at } = got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(digit, '9');
        assert!(at.abs_diff(400) <= 24, "start {at}");
        let ToneEvent::End { digit, start, end } = got[1] else {
            panic!("{got:?}")
        };
        assert_eq!((digit, start), ('9', at));
        assert!(end.abs_diff(1200) <= 24, "end {end}");
    }

    #[test]
    fn how_the_samples_are_split_changes_nothing_detected() {
        // 20 ms frames end inside sub-blocks, whose start is then held until
        // the block is whole (quiet ones skip the filters): the events and
        // their times are those of the same audio fed in one piece.
        let mut signal = vec![3i16; 437];
        signal.extend(tones(697.0, 1209.0, 6000.0, 720));
        signal.extend((0..963).map(|n| if n % 2 == 0 { 9 } else { -9 }));
        signal.extend(tones(941.0, 1633.0, 3000.0, 560));
        signal.extend(vec![0i16; 900]);
        let mut whole = InbandDetector::new();
        whole.process(&signal);
        let expected = events(&mut whole);
        assert_eq!(expected.len(), 4, "{expected:?}");
        for chunk_len in [160, 80, 77, 240, 49] {
            let mut split = InbandDetector::new();
            let mut got = Vec::new();
            for chunk in signal.chunks(chunk_len) {
                split.process(chunk);
                got.extend(events(&mut split));
            }
            assert_eq!(got, expected, "chunks of {chunk_len}");
            assert_eq!(split.clock(), whole.clock(), "chunks of {chunk_len}");
        }
    }

    #[test]
    fn fast_atan2_is_within_four_milliradians_all_round() {
        for step in 0..3600 {
            let angle = (f64::from(step) / 3600.0 * 2.0 - 1.0) * std::f64::consts::PI;
            let (y, x) = (angle.sin() as f32 * 7.0, angle.cos() as f32 * 7.0);
            let error = f64::from(fast_atan2(y, x)) - f64::from(y.atan2(x));
            let wrapped = (error + std::f64::consts::PI).rem_euclid(2.0 * std::f64::consts::PI)
                - std::f64::consts::PI;
            assert!(wrapped.abs() < 0.004, "{angle}: {error}");
        }
    }

    #[test]
    fn one_tone_alone_is_not_a_key() {
        let mut detector = InbandDetector::new();
        let lone: Vec<i16> = tones(852.0, 0.0, 8000.0, 2000);
        detector.process(&lone);
        assert_eq!(events(&mut detector), []);
        assert!(!detector.tone_present());
    }

    #[test]
    fn no_steady_single_tone_looks_like_a_key_starting() {
        // One loud tone leaks into the other group's bins, and over 50 samples
        // its phase advance can alias onto a key's; the twist test rules it out.
        for frequency_hz in (300..=3400).step_by(10) {
            let mut detector = InbandDetector::new();
            let lone = tones(f64::from(frequency_hz), 0.0, 16000.0, 1600);
            for frame in lone.chunks(160) {
                detector.process(frame);
                assert!(!detector.tone_suspected(), "{frequency_hz} Hz");
            }
        }
    }

    #[test]
    fn a_key_is_suspected_within_its_first_full_frame() {
        // Wherever the key starts, the first 20 ms frame it fills is flagged,
        // so only the frame it started in can reach the mix (docs/dtmf.md, "Bleed").
        for onset in (0..160).step_by(10) {
            let mut detector = InbandDetector::new();
            let mut samples = vec![0i16; 160 + onset];
            samples.extend(tones(770.0, 1336.0, 4000.0, 800));
            let mut flagged = None;
            for (frame, chunk) in samples.chunks(160).enumerate() {
                detector.process(chunk);
                if detector.tone_suspected() {
                    flagged = Some(frame);
                    break;
                }
            }
            let first_full_frame = (160 + onset).div_ceil(160);
            assert!(
                flagged.is_some_and(|frame| frame <= first_full_frame),
                "onset {onset}: flagged in frame {flagged:?}"
            );
        }
    }
}
