//! Members whose audio stays inside the process: the room's own sound card
//! (`audio/soundcard.rs`, cargo feature `soundcard`). Their "sockets" are two
//! single-producer single-consumer rings of samples at the member's rate,
//! one each way, which the media thread reads and writes without ever
//! waiting: a ring it finds empty or full is counted (`LocalStats`), and the
//! tick goes on.
//!
//! The rings are built on atomics alone (no lock, no `unsafe`): each sample
//! is an `AtomicI16`, written with a relaxed store and published by a
//! release store of the writing position, which the reader acquires. The
//! same ring carries the device's samples between the sound card's callbacks
//! and its thread, so the callbacks never lock nor allocate either.
//!
//! Owns: the rings and their counters. Never touches: a device, the clock,
//! a slot (the engine wraps each frame as the member's RTP, so the member
//! goes through the same jitter buffer, gate, keys and mix as a phone).

use std::sync::atomic::{AtomicBool, AtomicI16, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::media::codec::Codec;

/// The codec a local member's frames are carried in between the media
/// thread's ring and its slot: the rate of the rings follows from it. One
/// constant to change when the mix offers a wideband codec.
pub const LOCAL_CODEC: Codec = Codec::Pcmu;

/// Samples per second in a local member's rings.
pub fn local_rate_hz() -> u32 {
    LOCAL_CODEC.sample_rate_hz()
}

/// A bounded ring of samples for one writer and one reader, each of which
/// may be on its own thread. Both ends take `&self`; which thread writes and
/// which reads is the owner's promise (two writers would garble the audio,
/// never memory).
#[derive(Debug)]
pub struct SampleRing {
    samples: Box<[AtomicI16]>,
    /// Samples ever written and ever read; `written - read` are waiting.
    written: AtomicUsize,
    read: AtomicUsize,
}

impl SampleRing {
    /// A ring of `capacity` samples (at least one), allocated now.
    pub fn new(capacity: usize) -> SampleRing {
        SampleRing {
            samples: (0..capacity.max(1)).map(|_| AtomicI16::new(0)).collect(),
            written: AtomicUsize::new(0),
            read: AtomicUsize::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.samples.len()
    }

    /// Samples waiting to be read.
    pub fn len(&self) -> usize {
        let written = self.written.load(Ordering::Acquire);
        written.wrapping_sub(self.read.load(Ordering::Acquire))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples ever written (wrapping): a reader that sees it stand still
    /// knows its writer stopped.
    pub fn total_written(&self) -> usize {
        self.written.load(Ordering::Acquire)
    }

    /// Writer: appends what fits of `samples`; returns how many did.
    pub fn push(&self, samples: &[i16]) -> usize {
        let written = self.written.load(Ordering::Relaxed);
        let waiting = written.wrapping_sub(self.read.load(Ordering::Acquire));
        let count = samples.len().min(self.capacity() - waiting);
        for (offset, &sample) in samples[..count].iter().enumerate() {
            let at = written.wrapping_add(offset) % self.capacity();
            self.samples[at].store(sample, Ordering::Relaxed);
        }
        self.written
            .store(written.wrapping_add(count), Ordering::Release);
        count
    }

    /// Writer: appends `count` samples that `sample(i)` gives, as far as
    /// they fit; returns how many did. For callbacks that convert as they copy.
    pub fn push_with(&self, count: usize, mut sample: impl FnMut(usize) -> i16) -> usize {
        let written = self.written.load(Ordering::Relaxed);
        let waiting = written.wrapping_sub(self.read.load(Ordering::Acquire));
        let count = count.min(self.capacity() - waiting);
        for offset in 0..count {
            let at = written.wrapping_add(offset) % self.capacity();
            self.samples[at].store(sample(offset), Ordering::Relaxed);
        }
        self.written
            .store(written.wrapping_add(count), Ordering::Release);
        count
    }

    /// Reader: takes up to `out.len()` samples, oldest first; returns how many.
    pub fn pop(&self, out: &mut [i16]) -> usize {
        let read = self.read.load(Ordering::Relaxed);
        let waiting = self.written.load(Ordering::Acquire).wrapping_sub(read);
        let count = out.len().min(waiting);
        for (offset, slot) in out[..count].iter_mut().enumerate() {
            let at = read.wrapping_add(offset) % self.capacity();
            *slot = self.samples[at].load(Ordering::Relaxed);
        }
        self.read.store(read.wrapping_add(count), Ordering::Release);
        count
    }

    /// Reader: drops up to `count` waiting samples; returns how many.
    pub fn skip(&self, count: usize) -> usize {
        let read = self.read.load(Ordering::Relaxed);
        let waiting = self.written.load(Ordering::Acquire).wrapping_sub(read);
        let count = count.min(waiting);
        self.read.store(read.wrapping_add(count), Ordering::Release);
        count
    }
}

/// Counters of the local members and their device, for `/metrics`; read
/// with `Ordering::Relaxed`.
#[derive(Debug, Default)]
pub struct LocalStats {
    /// Ticks that found less than a frame captured: the member sent silence.
    pub capture_underruns: AtomicU64,
    /// Captured samples dropped for a full ring (the device's, or the
    /// media thread's).
    pub capture_overruns: AtomicU64,
    /// Device periods the playback callback could not fill (played silence).
    pub playback_underruns: AtomicU64,
    /// Frames (from the media thread) or blocks (to the device) of the
    /// room's playback dropped for a full ring.
    pub playback_overruns: AtomicU64,
    /// The device was opened (the first time, and after each loss).
    pub device_opens: AtomicU64,
    /// The device failed or could not be opened.
    pub device_errors: AtomicU64,
    /// The device is open and running.
    pub device_up: AtomicBool,
    /// Rate corrections now applied against clock drift, in parts per
    /// million (positive: more samples made than the nominal ratio).
    pub capture_correction_ppm: AtomicI64,
    pub playback_correction_ppm: AtomicI64,
}

/// A local member's two rings and counters (`MemberSockets::Local`).
/// Cloning shares them: the sound card's thread keeps one clone, and the
/// member that joins the room takes another each time it joins.
#[derive(Clone, Debug)]
pub struct LocalPort {
    /// Written by the sound card, read by the media thread: what the room's
    /// microphone picked up, at `local_rate_hz`.
    pub capture: Arc<SampleRing>,
    /// Written by the media thread, read by the sound card: what the room hears.
    pub playback: Arc<SampleRing>,
    pub stats: Arc<LocalStats>,
}

/// Each ring holds this many 20 ms frames: enough for the sound card's
/// thread to run late by a few ticks without losing audio.
pub const LOCAL_RING_FRAMES: usize = 8;

impl LocalPort {
    /// Two empty rings of `LOCAL_RING_FRAMES` frames at the local rate.
    pub fn new() -> LocalPort {
        let frames = LOCAL_RING_FRAMES * (local_rate_hz() as usize / 50);
        LocalPort {
            capture: Arc::new(SampleRing::new(frames)),
            playback: Arc::new(SampleRing::new(frames)),
            stats: Arc::new(LocalStats::default()),
        }
    }
}

impl Default for LocalPort {
    fn default() -> Self {
        LocalPort::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_gives_back_what_was_pushed_in_order_across_its_end() {
        let ring = SampleRing::new(5);
        let mut out = [0i16; 5];
        for round in 0..4i16 {
            assert_eq!(ring.push(&[round, round + 1, round + 2]), 3);
            assert_eq!(ring.len(), 3);
            assert_eq!(ring.pop(&mut out[..2]), 2);
            assert_eq!(out[..2], [round, round + 1]);
            assert_eq!(ring.pop(&mut out), 1);
            assert_eq!(out[0], round + 2);
        }
        assert!(ring.is_empty());
    }

    #[test]
    fn a_full_ring_takes_what_fits_and_an_empty_one_gives_nothing() {
        let ring = SampleRing::new(4);
        assert_eq!(ring.push(&[1, 2, 3, 4, 5, 6]), 4);
        assert_eq!(ring.push_with(2, |_| 9), 0);
        assert_eq!(ring.skip(3), 3);
        let mut out = [0i16; 4];
        assert_eq!(ring.pop(&mut out), 1);
        assert_eq!(out[0], 4);
        assert_eq!(ring.pop(&mut out), 0);
    }

    #[test]
    fn one_writer_and_one_reader_on_two_threads_lose_nothing() {
        let ring = Arc::new(SampleRing::new(64));
        let writer = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                let mut next = 0i16;
                while next < 10_000 {
                    let want = 7.min(10_000 - next) as usize;
                    let pushed = ring.push_with(want, |i| next + i as i16);
                    next += pushed as i16;
                    std::hint::spin_loop();
                }
            })
        };
        let mut expected = 0i16;
        let mut out = [0i16; 13];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while expected < 10_000 && std::time::Instant::now() < deadline {
            let got = ring.pop(&mut out);
            for &sample in &out[..got] {
                assert_eq!(sample, expected);
                expected += 1;
            }
        }
        writer.join().expect("writer");
        assert!(expected >= 10_000);
    }
}
