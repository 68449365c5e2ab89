//! A fixed-capacity jitter buffer for one member's incoming audio, indexed by
//! RTP timestamp: packets of any length (10, 20, 30, 40 ms...) go in where
//! their timestamp says, and one 20 ms frame comes out per tick, in order.
//!
//! Keying on the timestamp rather than the sequence number means packets that
//! carry no audio (RFC 4733 events, which reuse the stream's sequence numbers
//! but not its audio clock) take no place in the audio, and a pause in the
//! far end's audio adds no delay. In byte mode (G.711, G.722) it assumes one
//! payload byte per RTP clock tick (RFC 3551 §4.5.2), so packets of any
//! length fill frames byte-wise. In packet mode (Opus, `reset_packets`) each
//! packet is one 20 ms frame of variable length, kept whole with its length
//! for the decoder, and a lost frame's successor can be read (`peek_next`)
//! for its in-band FEC.
//!
//! Sans-IO: the caller pushes what arrived and pops once per tick; wall time is
//! never read.

/// Largest frame: 20 ms of G.711 or G.722 (160 bytes).
pub const FRAME_BYTES_MAX: usize = 160;

/// Largest packet kept in packet mode: 20 ms of Opus voice at up to
/// 160 kbit/s. libopus allows 1275 bytes, but nothing a phone sends for
/// voice comes near; a bigger packet is refused as `Oversize` rather than
/// every slot carrying room for it.
pub const PACKET_BYTES_MAX: usize = 400;

/// Frames the buffer can hold; 320 ms of reordering or delay.
pub const CAPACITY_FRAMES: usize = 16;

/// A timestamp this many frames away from the playout point restarts the
/// stream instead of being treated as loss (RFC 3550 A.1 uses a similar
/// "dropout" test).
const RESYNC_JUMP_FRAMES: i64 = 50;

/// After this many ticks (1 s) with more than a frame of slack beyond the
/// playout delay, one frame is dropped: a burst after a stall on either side
/// must not leave the call with extra delay for good.
const SHRINK_AFTER_POPS: u32 = 50;

/// After this many ticks (10 s) in which every pop found at least one frame
/// beyond the playout delay, one frame is given back: an underrun (a packet
/// that came after its tick) makes the buffer a frame deeper by itself, and a
/// stream that has since arrived clear of the tick for this long no longer
/// needs it. A stream that still straddles the tick keeps it.
const GIVE_BACK_AFTER_POPS: u32 = 500;

/// A frame is tracked in this many segments, so packets of 5 ms multiples
/// (all common packet times) fill whole segments.
const SEGMENTS_PER_FRAME: usize = 4;

/// What happened to a pushed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Stored,
    /// Stored after discarding the buffer: new SSRC, or a big timestamp jump.
    Resynced,
    /// Everything it carries is already buffered.
    Duplicate,
    /// Its playout time has passed.
    Late,
    /// Longer than the buffer can hold.
    Oversize,
}

/// What the current tick plays.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<'a> {
    /// A whole frame; parts no packet covered hold the codec's silence.
    Frame(&'a [u8]),
    /// The frame due now is missing but later ones arrived: conceal it.
    Lost,
    /// Nothing buffered: not started, refilling after an underrun, or the far end paused.
    Empty,
}

/// Which frame an entry holds and which of its segments arrived. Kept apart
/// from the payloads, so finding what is buffered reads two cache lines
/// rather than sixteen.
#[derive(Clone, Copy, Default)]
struct Tag {
    /// The frame number this entry holds (valid while `segments != 0`).
    frame: u32,
    /// Bit `i` set: segment `i` of the frame arrived (all of them at once
    /// in packet mode).
    segments: u8,
    /// Packet mode: the packet's length in bytes.
    len: u16,
}

/// Every segment of a frame: a packet-mode frame arrives whole.
const WHOLE_FRAME: u8 = (1 << SEGMENTS_PER_FRAME) - 1;

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
    /// Frames dropped to bring a buffer that stayed too full back to its delay.
    pub shrunk: u64,
}

pub struct JitterBuffer {
    tags: Box<[Tag]>,
    /// Byte mode uses the first `frame_samples` bytes of an entry; packet
    /// mode up to `PACKET_BYTES_MAX`.
    payloads: Box<[[u8; PACKET_BYTES_MAX]]>,
    playout_delay_frames: usize,
    frame_samples: u32,
    silence_byte: u8,
    /// Each packet is one frame of any length (Opus), not one byte per tick.
    packet_mode: bool,
    ssrc: Option<u32>,
    /// RTP timestamp of the frame the next pop plays.
    next_timestamp: u32,
    /// Frame number of the frame the next pop plays (entries are tagged with it).
    next_frame: u32,
    /// Playing; false while (re)filling to the playout delay.
    playing: bool,
    played_since_resync: bool,
    /// Consecutive pops that found more than a frame of slack beyond the delay.
    excess_pops: u32,
    /// Consecutive pops that found at least a frame of slack beyond the delay.
    spare_pops: u32,
    pub stats: JitterStats,
}

impl JitterBuffer {
    /// `playout_delay_frames` frames are buffered before the first one plays (clamped
    /// to 1..capacity); `frame_samples` is the RTP timestamp step of one frame.
    pub fn new(playout_delay_frames: usize, frame_samples: u32) -> Self {
        JitterBuffer {
            tags: vec![Tag::default(); CAPACITY_FRAMES].into_boxed_slice(),
            payloads: vec![[0; PACKET_BYTES_MAX]; CAPACITY_FRAMES].into_boxed_slice(),
            playout_delay_frames: playout_delay_frames.clamp(1, CAPACITY_FRAMES - 1),
            frame_samples: frame_samples.clamp(SEGMENTS_PER_FRAME as u32, FRAME_BYTES_MAX as u32),
            silence_byte: 0,
            packet_mode: false,
            ssrc: None,
            next_timestamp: 0,
            next_frame: 0,
            playing: false,
            played_since_resync: false,
            excess_pops: 0,
            spare_pops: 0,
            stats: JitterStats::default(),
        }
    }

    /// Forgets the stream (a new member in a reused slot); gaps inside a
    /// frame play as `silence_byte`.
    pub fn reset(&mut self, frame_samples: u32, silence_byte: u8) {
        self.clear();
        self.ssrc = None;
        self.frame_samples = frame_samples.clamp(SEGMENTS_PER_FRAME as u32, FRAME_BYTES_MAX as u32);
        self.silence_byte = silence_byte;
        self.packet_mode = false;
        self.stats = JitterStats::default();
    }

    /// Forgets the stream and keeps whole packets from now on, one per
    /// frame of `frame_ticks` RTP units (960 for 20 ms of Opus).
    pub fn reset_packets(&mut self, frame_ticks: u32) {
        self.clear();
        self.ssrc = None;
        self.frame_samples = frame_ticks.max(1);
        self.packet_mode = true;
        self.stats = JitterStats::default();
    }

    fn clear(&mut self) {
        for tag in self.tags.iter_mut() {
            tag.segments = 0;
        }
        self.playing = false;
        self.played_since_resync = false;
    }

    fn frame_len(&self) -> i64 {
        i64::from(self.frame_samples)
    }

    fn entry_index(frame: u32) -> usize {
        frame as usize % CAPACITY_FRAMES
    }

    /// Whether frame `frame` has arrived (in whole or in part).
    fn holds(&self, frame: u32) -> bool {
        let tag = &self.tags[Self::entry_index(frame)];
        tag.segments != 0 && tag.frame == frame
    }

    /// Frames buffered now, at or after the playout point.
    pub fn buffered_frames(&self) -> usize {
        (0..CAPACITY_FRAMES as u32)
            .filter(|&k| self.holds(self.next_frame.wrapping_add(k)))
            .count()
    }

    /// Moves the playout point by whole frames (either way).
    fn shift_playout(&mut self, frames: i64) {
        self.next_frame = self.next_frame.wrapping_add(frames as u32);
        self.next_timestamp = self
            .next_timestamp
            .wrapping_add((frames * self.frame_len()) as u32);
    }

    fn resync(&mut self, ssrc: u32, timestamp: u32) {
        self.clear();
        self.ssrc = Some(ssrc);
        self.next_timestamp = timestamp;
        self.stats.resyncs += 1;
    }

    pub fn push(&mut self, timestamp: u32, ssrc: u32, payload: &[u8]) -> Push {
        let frame = self.frame_len();
        // The RTP units the payload covers.
        let len = if self.packet_mode {
            if payload.len() > PACKET_BYTES_MAX {
                self.stats.oversize += 1;
                return Push::Oversize;
            }
            frame
        } else {
            payload.len() as i64
        };
        if len > (CAPACITY_FRAMES as i64 - 1) * frame {
            self.stats.oversize += 1;
            return Push::Oversize;
        }
        let jump = RESYNC_JUMP_FRAMES * frame;
        let mut offset = i64::from(timestamp.wrapping_sub(self.next_timestamp) as i32);
        if self.packet_mode {
            // A packet is a whole frame: one a little off the frame grid
            // belongs to the nearest frame.
            offset = (offset + frame / 2).div_euclid(frame) * frame;
        }
        let mut outcome = Push::Stored;
        if self.ssrc != Some(ssrc) || offset >= jump || offset + len <= -jump {
            self.resync(ssrc, timestamp);
            offset = 0;
            outcome = Push::Resynced;
        } else if !self.playing && offset < 0 && !self.played_since_resync {
            // Reordered before playout began: start from the earlier packet, if
            // everything buffered still fits.
            let frames_back = offset.div_euclid(frame);
            if self.span_after(frames_back) {
                self.shift_playout(frames_back);
                offset -= frames_back * frame;
            }
        } else if !self.playing && self.buffered_frames() == 0 && offset >= frame {
            // The far end paused (silence suppression, or a keypress sent only as
            // RFC 4733): resume where its audio resumes; the pause is no loss.
            let frames_ahead = offset.div_euclid(frame);
            self.shift_playout(frames_ahead);
            offset -= frames_ahead * frame;
        }
        if offset + len <= 0 {
            self.stats.late += 1;
            return Push::Late;
        }
        let capacity = CAPACITY_FRAMES as i64 * frame;
        while offset + len > capacity {
            if self.holds(self.next_frame) {
                self.stats.overflowed += 1;
            }
            self.shift_playout(1);
            offset -= frame;
        }
        let added = if self.packet_mode {
            self.write_packet(offset, payload)
        } else {
            let skip = (-offset).max(0);
            self.write(offset + skip, &payload[skip as usize..])
        };
        if !added {
            self.stats.duplicates += 1;
            return Push::Duplicate;
        }
        self.stats.stored += 1;
        outcome
    }

    /// Whether moving the playout point `frames` (negative) back keeps every
    /// buffered frame inside the window.
    fn span_after(&self, frames: i64) -> bool {
        let last = (0..CAPACITY_FRAMES as u32)
            .rev()
            .find(|&k| self.holds(self.next_frame.wrapping_add(k)))
            .map_or(0, i64::from);
        last - frames < CAPACITY_FRAMES as i64
    }

    /// Packet mode: keeps `packet` as the frame `offset` (>= 0, a whole
    /// number of frames) clock ticks after the playout point; returns
    /// whether it was new.
    fn write_packet(&mut self, offset: i64, packet: &[u8]) -> bool {
        let frame = self
            .next_frame
            .wrapping_add((offset / self.frame_len()) as u32);
        let index = Self::entry_index(frame);
        let tag = &mut self.tags[index];
        if tag.segments != 0 && tag.frame == frame {
            return false;
        }
        *tag = Tag {
            frame,
            segments: WHOLE_FRAME,
            len: packet.len() as u16,
        };
        self.payloads[index][..packet.len()].copy_from_slice(packet);
        true
    }

    /// Packet mode: the packet of the frame the next pop plays, if it has
    /// arrived, left in place. After `Pop::Lost` it is the lost frame's
    /// successor, whose in-band FEC may carry the lost one.
    pub fn peek_next(&self) -> Option<&[u8]> {
        let frame = self.next_frame;
        if !self.packet_mode || !self.holds(frame) {
            return None;
        }
        let index = Self::entry_index(frame);
        Some(&self.payloads[index][..usize::from(self.tags[index].len)])
    }

    /// Writes `bytes` starting `offset` (>= 0) clock ticks after the playout
    /// point; returns whether any segment was new.
    fn write(&mut self, offset: i64, bytes: &[u8]) -> bool {
        let frame_len = self.frame_len();
        let segment_len = frame_len / SEGMENTS_PER_FRAME as i64;
        let mut added = false;
        let mut at = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let frame = self.next_frame.wrapping_add((at / frame_len) as u32);
            let within = (at % frame_len) as usize;
            let take = rest.len().min(frame_len as usize - within);
            let silence = self.silence_byte;
            let index = Self::entry_index(frame);
            let (tag, payload) = (&mut self.tags[index], &mut self.payloads[index]);
            if tag.segments == 0 || tag.frame != frame {
                tag.frame = frame;
                tag.segments = 0;
                payload[..frame_len as usize].fill(silence);
            }
            let first = within as i64 / segment_len;
            let last = (within + take - 1) as i64 / segment_len;
            let mut mask = 0u8;
            for segment in first..=last.min(SEGMENTS_PER_FRAME as i64 - 1) {
                mask |= 1 << segment;
            }
            if mask & !tag.segments != 0 {
                added = true;
                payload[within..within + take].copy_from_slice(&rest[..take]);
                tag.segments |= mask;
            }
            at += take as i64;
            rest = &rest[take..];
        }
        added
    }

    /// The frame for this tick.
    pub fn pop(&mut self) -> Pop<'_> {
        let buffered = self.buffered_frames();
        if !self.playing {
            if buffered < self.playout_delay_frames {
                return Pop::Empty;
            }
            self.playing = true;
        }
        if buffered == 0 {
            // Underrun: refill to the playout delay before playing again.
            self.playing = false;
            return Pop::Empty;
        }
        if buffered > self.playout_delay_frames + 1 {
            self.excess_pops += 1;
        } else {
            self.excess_pops = 0;
        }
        if buffered > self.playout_delay_frames {
            self.spare_pops += 1;
        } else {
            self.spare_pops = 0;
        }
        if self.excess_pops >= SHRINK_AFTER_POPS || self.spare_pops >= GIVE_BACK_AFTER_POPS {
            // Drop the oldest frame instead of playing it.
            self.excess_pops = 0;
            self.spare_pops = 0;
            let oldest = self.next_frame;
            if self.holds(oldest) {
                self.tags[Self::entry_index(oldest)].segments = 0;
            }
            self.shift_playout(1);
            self.stats.shrunk += 1;
        }
        let frame = self.next_frame;
        let frame_len = self.frame_samples as usize;
        self.shift_playout(1);
        self.played_since_resync = true;
        if self.holds(frame) {
            let index = Self::entry_index(frame);
            let tag = &mut self.tags[index];
            tag.segments = 0;
            let len = if self.packet_mode {
                usize::from(tag.len)
            } else {
                frame_len
            };
            Pop::Frame(&self.payloads[index][..len])
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
    /// Frames of 8 bytes (a 1 ms "frame" at 8 kHz) keep the tests readable.
    const FRAME: u32 = 8;

    /// A frame whose bytes all carry `n`.
    fn frame_of(n: u8) -> [u8; FRAME as usize] {
        [n; FRAME as usize]
    }

    /// Pushes frame number `n` (timestamp continuous across the 32-bit wrap).
    fn push(buffer: &mut JitterBuffer, n: u32) -> Push {
        let timestamp = (u32::MAX - 20 * FRAME).wrapping_add(n * FRAME);
        buffer.push(timestamp, SSRC, &frame_of(n as u8))
    }

    fn pop_frame(buffer: &mut JitterBuffer) -> Option<u8> {
        match buffer.pop() {
            Pop::Frame(payload) => {
                assert!(payload.iter().all(|&b| b == payload[0]), "{payload:?}");
                Some(payload[0])
            }
            Pop::Lost | Pop::Empty => None,
        }
    }

    fn buffer(delay: usize) -> JitterBuffer {
        let mut buffer = JitterBuffer::new(delay, FRAME);
        buffer.reset(FRAME, 0xFF);
        buffer
    }

    #[test]
    fn waits_for_the_playout_delay_then_plays_in_order() {
        let mut buffer = buffer(2);
        assert_eq!(push(&mut buffer, 10), Push::Resynced);
        assert_eq!(buffer.pop(), Pop::Empty);
        assert_eq!(push(&mut buffer, 11), Push::Stored);
        assert_eq!(pop_frame(&mut buffer), Some(10));
        push(&mut buffer, 12);
        assert_eq!(pop_frame(&mut buffer), Some(11));
        assert_eq!(pop_frame(&mut buffer), Some(12));
    }

    #[test]
    fn reordered_packets_come_out_in_order() {
        let mut buffer = buffer(3);
        for n in [101, 100, 103, 102] {
            push(&mut buffer, n);
        }
        let played: Vec<_> = (0..4).map(|_| pop_frame(&mut buffer)).collect();
        assert_eq!(played, [Some(100), Some(101), Some(102), Some(103)]);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut buffer = buffer(2);
        push(&mut buffer, 5);
        assert_eq!(push(&mut buffer, 5), Push::Duplicate);
        assert_eq!(buffer.buffered_frames(), 1);
        assert_eq!(buffer.stats.duplicates, 1);
    }

    #[test]
    fn late_packets_are_dropped() {
        let mut buffer = buffer(1);
        push(&mut buffer, 5);
        push(&mut buffer, 7);
        assert_eq!(pop_frame(&mut buffer), Some(5));
        assert_eq!(buffer.pop(), Pop::Lost);
        assert_eq!(push(&mut buffer, 6), Push::Late);
        assert_eq!(push(&mut buffer, 5), Push::Late);
        assert_eq!(pop_frame(&mut buffer), Some(7));
        assert_eq!(buffer.stats.late, 2);
    }

    #[test]
    fn a_gap_with_later_frames_buffered_is_a_loss() {
        let mut buffer = buffer(1);
        push(&mut buffer, 1);
        push(&mut buffer, 3);
        assert_eq!(pop_frame(&mut buffer), Some(1));
        assert_eq!(buffer.pop(), Pop::Lost);
        assert_eq!(pop_frame(&mut buffer), Some(3));
        assert_eq!(buffer.stats.lost, 1);
    }

    #[test]
    fn an_underrun_refills_to_the_playout_delay_without_counting_loss() {
        let mut buffer = buffer(2);
        push(&mut buffer, 1);
        push(&mut buffer, 2);
        assert_eq!(pop_frame(&mut buffer), Some(1));
        assert_eq!(pop_frame(&mut buffer), Some(2));
        assert_eq!(buffer.pop(), Pop::Empty);
        push(&mut buffer, 3);
        assert_eq!(buffer.pop(), Pop::Empty);
        push(&mut buffer, 4);
        assert_eq!(pop_frame(&mut buffer), Some(3));
        assert_eq!(buffer.stats.lost, 0);
    }

    #[test]
    fn a_pause_in_the_far_end_audio_adds_no_delay() {
        // Frames 1-2, then nothing for 6 frames (a keypress sent only as RFC
        // 4733), then audio again from frame 9: it plays after the usual
        // playout delay, not after the length of the pause.
        let mut buffer = buffer(2);
        push(&mut buffer, 1);
        push(&mut buffer, 2);
        assert_eq!(pop_frame(&mut buffer), Some(1));
        assert_eq!(pop_frame(&mut buffer), Some(2));
        for _ in 0..6 {
            assert_eq!(buffer.pop(), Pop::Empty);
        }
        push(&mut buffer, 9);
        push(&mut buffer, 10);
        assert_eq!(pop_frame(&mut buffer), Some(9));
        assert_eq!(pop_frame(&mut buffer), Some(10));
        assert_eq!(buffer.stats.lost, 0);
        assert_eq!(buffer.stats.resyncs, 1);
    }

    #[test]
    fn timestamps_wrap_at_2_pow_32() {
        let mut buffer = buffer(2);
        // push() starts 20 frames before the wrap.
        for n in [19, 21, 20, 22] {
            assert_ne!(push(&mut buffer, n), Push::Late);
        }
        let played: Vec<_> = (0..4).map(|_| pop_frame(&mut buffer)).collect();
        assert_eq!(played, [Some(19), Some(20), Some(21), Some(22)]);
    }

    #[test]
    fn a_new_ssrc_resynchronises() {
        let mut buffer = buffer(1);
        push(&mut buffer, 100);
        push(&mut buffer, 101);
        assert_eq!(buffer.push(7, SSRC + 1, &frame_of(7)), Push::Resynced);
        assert_eq!(buffer.buffered_frames(), 1);
        assert_eq!(pop_frame(&mut buffer), Some(7));
    }

    #[test]
    fn a_big_timestamp_jump_either_way_resynchronises() {
        let mut buffer = buffer(1);
        push(&mut buffer, 100);
        assert_eq!(pop_frame(&mut buffer), Some(100));
        assert_eq!(push(&mut buffer, 30_000), Push::Resynced);
        assert_eq!(pop_frame(&mut buffer), Some(30_000u32 as u8));
        // A jump backwards is a restart too, not a late packet.
        assert_eq!(push(&mut buffer, 20_000), Push::Resynced);
        assert_eq!(buffer.stats.resyncs, 3);
    }

    #[test]
    fn running_far_ahead_drops_the_oldest_frames() {
        let mut buffer = buffer(2);
        for n in 0..20 {
            push(&mut buffer, n);
        }
        assert_eq!(buffer.buffered_frames(), CAPACITY_FRAMES);
        assert_eq!(buffer.stats.overflowed, 4);
        assert_eq!(pop_frame(&mut buffer), Some(4));
    }

    #[test]
    fn thirty_ms_packets_play_as_continuous_twenty_ms_frames() {
        // 160-sample frames fed 240-sample packets: 3 frames per 2 packets.
        let mut buffer = JitterBuffer::new(2, 160);
        buffer.reset(160, 0xFF);
        let mut next_byte = 0u8;
        let mut played = Vec::new();
        for packet in 0..20u32 {
            let payload: Vec<u8> = (0..240)
                .map(|_| {
                    next_byte = next_byte.wrapping_add(1);
                    next_byte
                })
                .collect();
            assert_ne!(buffer.push(1000 + packet * 240, SSRC, &payload), Push::Late);
            // 1.5 ticks per packet.
            let ticks = if packet % 2 == 0 { 1 } else { 2 };
            for _ in 0..ticks {
                if let Pop::Frame(frame) = buffer.pop() {
                    played.extend_from_slice(frame);
                }
            }
        }
        assert!(played.len() >= 160 * 25, "played {} bytes", played.len());
        // Every byte in order, none lost or repeated.
        for pair in played.windows(2) {
            assert_eq!(pair[1], pair[0].wrapping_add(1));
        }
        assert_eq!(buffer.stats.lost, 0);
    }

    #[test]
    fn ten_ms_packets_fill_a_frame_in_two_halves() {
        let mut buffer = JitterBuffer::new(1, 160);
        buffer.reset(160, 0xFF);
        assert_eq!(buffer.push(0, SSRC, &[1; 80]), Push::Resynced);
        assert_eq!(buffer.push(80, SSRC, &[2; 80]), Push::Stored);
        assert_eq!(buffer.push(80, SSRC, &[2; 80]), Push::Duplicate);
        match buffer.pop() {
            Pop::Frame(frame) => {
                assert!(frame[..80].iter().all(|&b| b == 1));
                assert!(frame[80..].iter().all(|&b| b == 2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_half_frame_plays_as_silence() {
        let mut buffer = JitterBuffer::new(1, 160);
        buffer.reset(160, 0xFF);
        buffer.push(0, SSRC, &[1; 80]);
        match buffer.pop() {
            Pop::Frame(frame) => {
                assert!(frame[..80].iter().all(|&b| b == 1));
                assert!(frame[80..].iter().all(|&b| b == 0xFF));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_buffer_left_too_full_by_a_burst_shrinks_back_to_its_delay() {
        // A stall, then eight frames at once: the buffer runs eight frames
        // deep. Steady arrivals afterwards would keep it there for good; it
        // drops a frame after each second of excess instead.
        let mut buffer = buffer(2);
        for n in 0..8 {
            push(&mut buffer, n);
        }
        for n in 8..8 + SHRINK_AFTER_POPS * 8 {
            push(&mut buffer, n);
            assert!(pop_frame(&mut buffer).is_some());
        }
        assert!(
            buffer.buffered_frames() <= 3,
            "{} frames buffered",
            buffer.buffered_frames()
        );
        assert!(buffer.stats.shrunk >= 5);
        assert_eq!(buffer.stats.lost, 0);
    }

    #[test]
    fn a_frame_gained_by_an_underrun_is_given_back_after_ten_quiet_seconds() {
        let mut buffer = buffer(1);
        push(&mut buffer, 0);
        assert_eq!(pop_frame(&mut buffer), Some(0));
        // Frame 1 comes after its tick: the tick plays nothing, and from then
        // on every tick finds a frame to spare.
        assert_eq!(buffer.pop(), Pop::Empty);
        push(&mut buffer, 1);
        let mut given_back_at = None;
        for n in 2..2 + GIVE_BACK_AFTER_POPS + 10 {
            push(&mut buffer, n);
            let before = buffer.stats.shrunk;
            assert!(pop_frame(&mut buffer).is_some());
            if buffer.stats.shrunk > before && given_back_at.is_none() {
                given_back_at = Some(n);
            }
        }
        assert_eq!(given_back_at, Some(1 + GIVE_BACK_AFTER_POPS));
        assert_eq!(
            buffer.buffered_frames(),
            0,
            "back to playing what arrives each tick"
        );
        assert_eq!(buffer.stats.lost, 0);
    }

    #[test]
    fn a_stream_that_still_comes_late_now_and_then_keeps_its_spare_frame() {
        let mut buffer = buffer(1);
        push(&mut buffer, 0);
        assert_eq!(buffer.pop(), Pop::Frame(&frame_of(0)));
        assert_eq!(buffer.pop(), Pop::Empty);
        push(&mut buffer, 1);
        // Every fifth packet is just after its tick: that tick finds no spare.
        let mut next_push = 2;
        for tick in 0..3 * GIVE_BACK_AFTER_POPS {
            let late = tick % 5 == 0;
            if !late {
                push(&mut buffer, next_push);
                next_push += 1;
            }
            assert!(pop_frame(&mut buffer).is_some(), "tick {tick}");
            if late {
                push(&mut buffer, next_push);
                next_push += 1;
            }
        }
        assert_eq!(buffer.stats.shrunk, 0);
        assert_eq!(buffer.stats.lost, 0);
    }

    #[test]
    fn oversize_payloads_are_refused() {
        let mut buffer = buffer(1);
        let big = vec![0u8; CAPACITY_FRAMES * FRAME as usize];
        assert_eq!(buffer.push(0, SSRC, &big), Push::Oversize);
        assert_eq!(buffer.buffered_frames(), 0);
    }

    /// Opus-like frames: 960 RTP units, packets of any length.
    const OPUS_FRAME: u32 = 960;

    fn packet_buffer(delay: usize) -> JitterBuffer {
        let mut buffer = JitterBuffer::new(delay, FRAME);
        buffer.reset_packets(OPUS_FRAME);
        buffer
    }

    /// Packet `n`: `n + 1` bytes, all `n`, timestamp continuous across the wrap.
    fn push_packet(buffer: &mut JitterBuffer, n: u32) -> Push {
        let timestamp = (u32::MAX - 20 * OPUS_FRAME).wrapping_add(n * OPUS_FRAME);
        buffer.push(timestamp, SSRC, &vec![n as u8; n as usize + 1])
    }

    #[test]
    fn packet_mode_plays_each_packet_whole_with_its_own_length() {
        let mut buffer = packet_buffer(2);
        for n in [10, 12, 11] {
            push_packet(&mut buffer, n);
        }
        for n in 10..13u8 {
            assert_eq!(buffer.pop(), Pop::Frame(&vec![n; usize::from(n) + 1][..]));
        }
    }

    #[test]
    fn packet_mode_lets_a_lost_frame_read_its_successor_for_fec() {
        let mut buffer = packet_buffer(1);
        push_packet(&mut buffer, 1);
        push_packet(&mut buffer, 3);
        assert_eq!(buffer.pop(), Pop::Frame(&[1, 1][..]));
        assert_eq!(buffer.pop(), Pop::Lost);
        assert_eq!(buffer.peek_next(), Some(&[3, 3, 3, 3][..]));
        assert_eq!(buffer.pop(), Pop::Frame(&[3, 3, 3, 3][..]));
        assert_eq!(buffer.peek_next(), None);
        assert_eq!(buffer.stats.lost, 1);
    }

    #[test]
    fn packet_mode_drops_duplicates_late_and_oversize_packets() {
        let mut buffer = packet_buffer(1);
        push_packet(&mut buffer, 5);
        assert_eq!(push_packet(&mut buffer, 5), Push::Duplicate);
        assert!(matches!(buffer.pop(), Pop::Frame(_)));
        assert_eq!(push_packet(&mut buffer, 4), Push::Late);
        let big = vec![0u8; PACKET_BYTES_MAX + 1];
        let timestamp = (u32::MAX - 20 * OPUS_FRAME).wrapping_add(6 * OPUS_FRAME);
        assert_eq!(buffer.push(timestamp, SSRC, &big), Push::Oversize);
        let most = vec![7u8; PACKET_BYTES_MAX];
        assert_eq!(buffer.push(timestamp, SSRC, &most), Push::Stored);
        assert_eq!(buffer.pop(), Pop::Frame(&most[..]));
        let stats = buffer.stats;
        assert_eq!((stats.duplicates, stats.late, stats.oversize), (1, 1, 1));
    }

    #[test]
    fn packet_mode_puts_a_packet_slightly_off_the_grid_in_the_nearest_frame() {
        let mut buffer = packet_buffer(2);
        push_packet(&mut buffer, 0);
        let timestamp = (u32::MAX - 20 * OPUS_FRAME).wrapping_add(OPUS_FRAME + 10);
        assert_eq!(buffer.push(timestamp, SSRC, &[9]), Push::Stored);
        assert!(matches!(buffer.pop(), Pop::Frame(_)));
        assert_eq!(buffer.pop(), Pop::Frame(&[9][..]));
    }

    #[test]
    fn back_in_byte_mode_after_packet_mode_frames_fill_byte_wise_again() {
        let mut buffer = packet_buffer(1);
        push_packet(&mut buffer, 2);
        buffer.reset(FRAME, 0xFF);
        assert_eq!(push(&mut buffer, 1), Push::Resynced);
        assert_eq!(pop_frame(&mut buffer), Some(1));
    }
}
