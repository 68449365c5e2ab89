//! A fixed-capacity jitter buffer for one member's incoming audio: packets go in
//! by RTP sequence number, one 20 ms frame comes out per tick, in order.
//!
//! Sans-IO: the caller pushes what arrived and pops once per tick; wall time is
//! never read. It assumes one packet carries one frame (ptime 20 ms).

/// Largest payload one frame may carry: 20 ms of G.711 or G.722 (160 bytes).
pub const FRAME_BYTES_MAX: usize = 160;

/// Frames the buffer can hold; 320 ms of reordering or delay.
pub const CAPACITY_FRAMES: usize = 16;

/// A sequence or timestamp jump at least this many frames restarts the stream
/// instead of being treated as loss (RFC 3550 A.1 uses a similar "dropout" test).
const RESYNC_JUMP_FRAMES: i64 = 50;

/// What happened to a pushed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Stored,
    /// Stored after discarding the buffer: new SSRC, or a big sequence/timestamp jump.
    Resynced,
    /// Already buffered.
    Duplicate,
    /// Its playout time has passed.
    Late,
    /// Payload longer than `FRAME_BYTES_MAX`.
    Oversize,
}

/// What the current tick plays.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<'a> {
    Frame(&'a [u8]),
    /// The frame due now is missing but later ones arrived: conceal it.
    Lost,
    /// Nothing buffered: not started, refilling after an underrun, or the far end paused.
    Empty,
}

#[derive(Clone)]
struct Entry {
    occupied: bool,
    sequence: u16,
    len_bytes: u16,
    payload: [u8; FRAME_BYTES_MAX],
}

/// Counters a caller may export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub stored: u64,
    pub duplicates: u64,
    pub late: u64,
    pub oversize: u64,
    pub lost: u64,
    pub resyncs: u64,
    /// Frames discarded unplayed because the buffer overflowed.
    pub overflowed: u64,
}

pub struct JitterBuffer {
    entries: Box<[Entry]>,
    playout_delay_frames: usize,
    frame_samples: u32,
    ssrc: Option<u32>,
    /// Sequence number of the frame the next pop plays.
    next_sequence: u16,
    /// Last accepted packet, to spot timestamp jumps.
    last_sequence: u16,
    /// Highest sequence number buffered since the last resync.
    highest_sequence: u16,
    played_since_resync: bool,
    last_timestamp: u32,
    buffered: usize,
    /// Playing; false while (re)filling to the playout delay.
    playing: bool,
    pub stats: JitterStats,
}

impl JitterBuffer {
    /// `playout_delay_frames` frames are buffered before the first one plays (clamped
    /// to 1..capacity); `frame_samples` is the RTP timestamp step of one frame.
    pub fn new(playout_delay_frames: usize, frame_samples: u32) -> Self {
        let empty = Entry {
            occupied: false,
            sequence: 0,
            len_bytes: 0,
            payload: [0; FRAME_BYTES_MAX],
        };
        JitterBuffer {
            entries: vec![empty; CAPACITY_FRAMES].into_boxed_slice(),
            playout_delay_frames: playout_delay_frames.clamp(1, CAPACITY_FRAMES - 1),
            frame_samples,
            ssrc: None,
            next_sequence: 0,
            last_sequence: 0,
            highest_sequence: 0,
            played_since_resync: false,
            last_timestamp: 0,
            buffered: 0,
            playing: false,
            stats: JitterStats::default(),
        }
    }

    /// Forgets the stream (a new member in a reused slot).
    pub fn reset(&mut self, frame_samples: u32) {
        self.clear();
        self.ssrc = None;
        self.frame_samples = frame_samples;
        self.stats = JitterStats::default();
    }

    fn clear(&mut self) {
        for entry in self.entries.iter_mut() {
            entry.occupied = false;
        }
        self.buffered = 0;
        self.playing = false;
        self.played_since_resync = false;
    }

    fn index(sequence: u16) -> usize {
        usize::from(sequence) % CAPACITY_FRAMES
    }

    /// Frames buffered now.
    pub fn buffered_frames(&self) -> usize {
        self.buffered
    }

    pub fn push(&mut self, sequence: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Push {
        if payload.len() > FRAME_BYTES_MAX {
            self.stats.oversize += 1;
            return Push::Oversize;
        }
        let outcome = if self.ssrc != Some(ssrc) || self.is_jump(sequence, timestamp) {
            self.clear();
            self.ssrc = Some(ssrc);
            self.next_sequence = sequence;
            self.highest_sequence = sequence;
            self.stats.resyncs += 1;
            Push::Resynced
        } else {
            let ahead = i32::from(sequence.wrapping_sub(self.next_sequence) as i16);
            if ahead < 0 {
                if !self.can_start_earlier(sequence) {
                    self.stats.late += 1;
                    return Push::Late;
                }
                // Reordered before playout began: start from the earlier packet.
                self.next_sequence = sequence;
            } else if ahead as usize >= CAPACITY_FRAMES {
                self.overflow_to(sequence);
            }
            let entry = &self.entries[Self::index(sequence)];
            if entry.occupied && entry.sequence == sequence {
                self.stats.duplicates += 1;
                return Push::Duplicate;
            }
            Push::Stored
        };
        let entry = &mut self.entries[Self::index(sequence)];
        if !entry.occupied {
            self.buffered += 1;
        }
        entry.occupied = true;
        entry.sequence = sequence;
        entry.len_bytes = payload.len() as u16;
        entry.payload[..payload.len()].copy_from_slice(payload);
        if (sequence.wrapping_sub(self.highest_sequence) as i16) > 0 {
            self.highest_sequence = sequence;
        }
        self.last_sequence = sequence;
        self.last_timestamp = timestamp;
        self.stats.stored += 1;
        outcome
    }

    /// Holds the place of a packet that carries no audio (an RFC 4733 event): it
    /// plays as an empty frame. Its timestamp (the event start) is not audio
    /// time, so it takes no part in jump detection.
    pub fn push_placeholder(&mut self, sequence: u16, ssrc: u32) -> Push {
        if self.ssrc != Some(ssrc) {
            return Push::Late;
        }
        let ahead = i32::from(sequence.wrapping_sub(self.next_sequence) as i16);
        if ahead < 0 || ahead as usize >= CAPACITY_FRAMES {
            self.stats.late += u64::from(ahead < 0);
            return Push::Late;
        }
        let entry = &mut self.entries[Self::index(sequence)];
        if entry.occupied && entry.sequence == sequence {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        if !entry.occupied {
            self.buffered += 1;
        }
        entry.occupied = true;
        entry.sequence = sequence;
        entry.len_bytes = 0;
        if (sequence.wrapping_sub(self.highest_sequence) as i16) > 0 {
            self.highest_sequence = sequence;
        }
        Push::Stored
    }

    /// A sequence or timestamp far from where the stream was heading.
    fn is_jump(&self, sequence: u16, timestamp: u32) -> bool {
        let sequence_step = i64::from(sequence.wrapping_sub(self.last_sequence) as i16);
        let expected_timestamp = self
            .last_timestamp
            .wrapping_add((sequence_step as u32).wrapping_mul(self.frame_samples));
        let timestamp_error = i64::from(timestamp.wrapping_sub(expected_timestamp) as i32);
        let limit = RESYNC_JUMP_FRAMES;
        sequence_step.abs() >= limit
            || timestamp_error.abs() >= limit * i64::from(self.frame_samples.max(1))
    }

    /// Until the first frame plays, an earlier packet may become the start if
    /// everything buffered still fits in the window.
    fn can_start_earlier(&self, sequence: u16) -> bool {
        !self.played_since_resync
            && usize::from(self.highest_sequence.wrapping_sub(sequence)) < CAPACITY_FRAMES
    }

    /// A packet beyond the window: drop the oldest frames so it fits.
    fn overflow_to(&mut self, sequence: u16) {
        let new_start = sequence.wrapping_sub(CAPACITY_FRAMES as u16 - 1);
        while self.next_sequence != new_start {
            let entry = &mut self.entries[Self::index(self.next_sequence)];
            if entry.occupied && entry.sequence == self.next_sequence {
                entry.occupied = false;
                self.buffered -= 1;
                self.stats.overflowed += 1;
            }
            self.next_sequence = self.next_sequence.wrapping_add(1);
        }
    }

    /// The frame for this tick.
    pub fn pop(&mut self) -> Pop<'_> {
        if !self.playing {
            if self.buffered < self.playout_delay_frames {
                return Pop::Empty;
            }
            self.playing = true;
        }
        if self.buffered == 0 {
            // Underrun: refill to the playout delay before playing again, and keep
            // waiting for the same sequence number (a pause is not a loss).
            self.playing = false;
            return Pop::Empty;
        }
        let sequence = self.next_sequence;
        self.next_sequence = sequence.wrapping_add(1);
        self.played_since_resync = true;
        let entry = &mut self.entries[Self::index(sequence)];
        if entry.occupied && entry.sequence == sequence {
            entry.occupied = false;
            self.buffered -= 1;
            Pop::Frame(&entry.payload[..usize::from(entry.len_bytes)])
        } else {
            self.stats.lost += 1;
            Pop::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0xA1;

    fn frame_of(sequence: u16) -> [u8; 4] {
        sequence
            .to_be_bytes()
            .repeat(2)
            .try_into()
            .expect("four bytes")
    }

    fn push(buffer: &mut JitterBuffer, sequence: u16) -> Push {
        // Continuous across the sequence wrap, as a real sender's clock is.
        let timestamp = u32::from(sequence.wrapping_sub(60_000)) * 160;
        buffer.push(sequence, timestamp, SSRC, &frame_of(sequence))
    }

    fn pop_sequence(buffer: &mut JitterBuffer) -> Option<u16> {
        match buffer.pop() {
            Pop::Frame(payload) => Some(u16::from_be_bytes([payload[0], payload[1]])),
            Pop::Lost | Pop::Empty => None,
        }
    }

    #[test]
    fn waits_for_the_playout_delay_then_plays_in_order() {
        let mut buffer = JitterBuffer::new(2, 160);
        assert_eq!(push(&mut buffer, 10), Push::Resynced);
        assert_eq!(buffer.pop(), Pop::Empty);
        assert_eq!(push(&mut buffer, 11), Push::Stored);
        assert_eq!(pop_sequence(&mut buffer), Some(10));
        push(&mut buffer, 12);
        assert_eq!(pop_sequence(&mut buffer), Some(11));
        assert_eq!(pop_sequence(&mut buffer), Some(12));
    }

    #[test]
    fn reordered_packets_come_out_in_sequence() {
        let mut buffer = JitterBuffer::new(3, 160);
        for sequence in [101, 100, 103, 102] {
            push(&mut buffer, sequence);
        }
        let played: Vec<_> = (0..4).map(|_| pop_sequence(&mut buffer)).collect();
        assert_eq!(played, [Some(100), Some(101), Some(102), Some(103)]);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut buffer = JitterBuffer::new(2, 160);
        push(&mut buffer, 5);
        assert_eq!(push(&mut buffer, 5), Push::Duplicate);
        assert_eq!(buffer.buffered_frames(), 1);
        assert_eq!(buffer.stats.duplicates, 1);
    }

    #[test]
    fn late_packets_are_dropped() {
        let mut buffer = JitterBuffer::new(1, 160);
        push(&mut buffer, 5);
        push(&mut buffer, 7);
        assert_eq!(pop_sequence(&mut buffer), Some(5));
        assert_eq!(buffer.pop(), Pop::Lost);
        assert_eq!(push(&mut buffer, 6), Push::Late);
        assert_eq!(push(&mut buffer, 5), Push::Late);
        assert_eq!(pop_sequence(&mut buffer), Some(7));
        assert_eq!(buffer.stats.late, 2);
    }

    #[test]
    fn a_gap_with_later_frames_buffered_is_a_loss() {
        let mut buffer = JitterBuffer::new(1, 160);
        push(&mut buffer, 1);
        push(&mut buffer, 3);
        assert_eq!(pop_sequence(&mut buffer), Some(1));
        assert_eq!(buffer.pop(), Pop::Lost);
        assert_eq!(pop_sequence(&mut buffer), Some(3));
        assert_eq!(buffer.stats.lost, 1);
    }

    #[test]
    fn an_underrun_refills_to_the_playout_delay_without_counting_loss() {
        let mut buffer = JitterBuffer::new(2, 160);
        push(&mut buffer, 1);
        push(&mut buffer, 2);
        assert_eq!(pop_sequence(&mut buffer), Some(1));
        assert_eq!(pop_sequence(&mut buffer), Some(2));
        assert_eq!(buffer.pop(), Pop::Empty);
        push(&mut buffer, 3);
        assert_eq!(buffer.pop(), Pop::Empty);
        push(&mut buffer, 4);
        assert_eq!(pop_sequence(&mut buffer), Some(3));
        assert_eq!(buffer.stats.lost, 0);
    }

    #[test]
    fn sequence_numbers_wrap_at_65535() {
        let mut buffer = JitterBuffer::new(2, 160);
        for sequence in [65534, 0, 65535, 1] {
            assert_ne!(push(&mut buffer, sequence), Push::Late);
        }
        let played: Vec<_> = (0..4).map(|_| pop_sequence(&mut buffer)).collect();
        assert_eq!(played, [Some(65534), Some(65535), Some(0), Some(1)]);
    }

    #[test]
    fn a_new_ssrc_resynchronises() {
        let mut buffer = JitterBuffer::new(1, 160);
        push(&mut buffer, 100);
        push(&mut buffer, 101);
        assert_eq!(buffer.push(7, 0, SSRC + 1, &frame_of(7)), Push::Resynced);
        assert_eq!(buffer.buffered_frames(), 1);
        assert_eq!(pop_sequence(&mut buffer), Some(7));
    }

    #[test]
    fn a_big_sequence_jump_resynchronises() {
        let mut buffer = JitterBuffer::new(1, 160);
        push(&mut buffer, 100);
        assert_eq!(pop_sequence(&mut buffer), Some(100));
        assert_eq!(push(&mut buffer, 30_000), Push::Resynced);
        assert_eq!(pop_sequence(&mut buffer), Some(30_000));
        // A jump backwards is a restart too, not a late packet.
        assert_eq!(push(&mut buffer, 20_000), Push::Resynced);
    }

    #[test]
    fn a_big_timestamp_jump_resynchronises() {
        let mut buffer = JitterBuffer::new(1, 160);
        buffer.push(1, 160, SSRC, &[0]);
        buffer.push(2, 320, SSRC, &[0]);
        // One frame later by sequence but 10 s later by timestamp (silence suppression).
        assert_eq!(buffer.push(3, 320 + 80_000, SSRC, &[0]), Push::Resynced);
        assert_eq!(buffer.stats.resyncs, 2);
    }

    #[test]
    fn running_far_ahead_drops_the_oldest_frames() {
        let mut buffer = JitterBuffer::new(2, 160);
        for sequence in 0..20 {
            push(&mut buffer, sequence);
        }
        assert_eq!(buffer.buffered_frames(), CAPACITY_FRAMES);
        assert_eq!(buffer.stats.overflowed, 4);
        assert_eq!(pop_sequence(&mut buffer), Some(4));
    }

    #[test]
    fn a_placeholder_plays_as_an_empty_frame_in_sequence() {
        let mut buffer = JitterBuffer::new(1, 160);
        push(&mut buffer, 1);
        assert_eq!(buffer.push_placeholder(2, SSRC), Push::Stored);
        push(&mut buffer, 3);
        assert_eq!(pop_sequence(&mut buffer), Some(1));
        assert_eq!(buffer.pop(), Pop::Frame(&[]));
        assert_eq!(pop_sequence(&mut buffer), Some(3));
        assert_eq!(buffer.push_placeholder(9, SSRC + 1), Push::Late);
    }

    #[test]
    fn oversize_payloads_are_refused() {
        let mut buffer = JitterBuffer::new(1, 160);
        let big = [0u8; FRAME_BYTES_MAX + 1];
        assert_eq!(buffer.push(1, 0, SSRC, &big), Push::Oversize);
        assert_eq!(buffer.buffered_frames(), 0);
    }
}
