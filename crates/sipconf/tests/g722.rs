//! G.722 proven bit-exact: the sub-band coders against the ITU-T G.722
//! Appendix II digital test sequences (mode 1), and the whole codec, QMFs
//! included, against ffmpeg's independent implementation on test signals.
//! The files and where they came from: `tests/data/g722/README.md`. Also: a
//! 20 ms frame encodes and decodes without touching the heap.

use sipconf::media::codec::g722::{G722Decoder, G722Encoder};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/g722")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An Appendix II sequence: 16-bit big-endian words (the ITU's `g722-ts-be` form).
fn words(name: &str) -> Vec<u16> {
    read(name)
        .chunks_exact(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect()
}

/// A word with bit 0 set asks for a reset of the codec (Appendix II, II.3);
/// the reference output for it is the same word.
const RESET_WORD: u16 = 0x0001;

/// Configuration 1: each input word's top 15 bits go to both sub-band coders;
/// the octet sits in the top byte of the output word.
fn encode_sequence(input: &[u16]) -> Vec<u16> {
    let mut encoder = G722Encoder::new();
    input
        .iter()
        .map(|&word| {
            if word & 1 != 0 {
                encoder.reset();
                return RESET_WORD;
            }
            let sample = (word as i16) >> 1;
            u16::from(encoder.encode_sub_bands(sample, sample)) << 8
        })
        .collect()
}

/// Configuration 2: each code word's top byte decoded; the lower and higher
/// sub-band outputs, each shifted left one, as two sequences.
fn decode_sequence(codes: &[u16]) -> (Vec<u16>, Vec<u16>) {
    let mut decoder = G722Decoder::new();
    codes
        .iter()
        .map(|&word| {
            if word & 1 != 0 {
                decoder.reset();
                return (RESET_WORD, RESET_WORD);
            }
            let (low, high) = decoder.decode_sub_bands((word >> 8) as u8);
            ((low << 1) as u16, (high << 1) as u16)
        })
        .unzip()
}

fn assert_same(got: &[u16], expected: &[u16], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
        panic!(
            "{what}: first difference at word {i}: {:04x}, expected {:04x}",
            got[i], expected[i]
        );
    }
}

#[test]
fn the_encoder_reproduces_the_appendix_ii_code_sequences() {
    for (input, expected) in [("bt1c1.xmt", "bt2r1.cod"), ("bt1c2.xmt", "bt2r2.cod")] {
        let got = encode_sequence(&words(input));
        assert_same(&got, &words(expected), &format!("{input} -> {expected}"));
    }
}

#[test]
fn the_decoder_reproduces_the_appendix_ii_mode_1_outputs() {
    for (codes, low, high) in [
        ("bt2r1.cod", "bt3l1.rc1", "bt3h1.rc0"),
        ("bt2r2.cod", "bt3l2.rc1", "bt3h2.rc0"),
        ("bt1d3.cod", "bt3l3.rc1", "bt3h3.rc0"),
    ] {
        let (got_low, got_high) = decode_sequence(&words(codes));
        assert_same(&got_low, &words(low), &format!("{codes} -> {low}"));
        assert_same(&got_high, &words(high), &format!("{codes} -> {high}"));
    }
}

/// Little-endian 16-bit PCM, as ffmpeg's `s16le` writes it.
fn pcm(name: &str) -> Vec<i16> {
    read(name)
        .chunks_exact(2)
        .map(|s| i16::from_le_bytes([s[0], s[1]]))
        .collect()
}

/// Each test signal: the 16 kHz input, ffmpeg's G.722 encoding of it, and
/// ffmpeg's decoding of that encoding (commands in the data README).
const SIGNALS: [&str; 5] = ["sweep", "noise", "square_half", "square", "silence"];

/// A full-scale square drives the transmit QMF's output past the sub-band
/// coders' 15-bit range, where the Recommendation's reference code limits it
/// (`qmf_tx`: `limit()`) and ffmpeg's `g722enc` does not; every other input
/// codes identically.
const BEYOND_THE_QMF_LIMIT: &str = "square";

/// Encodes in 20 ms frames, as the bridge calls it.
fn encode_frames(input: &[i16]) -> Vec<u8> {
    let mut encoder = G722Encoder::new();
    let mut octets = vec![0u8; input.len() / 2];
    for (frame, out) in input.chunks(320).zip(octets.chunks_mut(160)) {
        encoder.encode(frame, out);
    }
    octets
}

fn decode_frames(octets: &[u8]) -> Vec<i16> {
    let mut decoder = G722Decoder::new();
    let mut samples = vec![0i16; octets.len() * 2];
    for (frame, out) in octets.chunks(160).zip(samples.chunks_mut(320)) {
        decoder.decode(frame, out);
    }
    samples
}

#[test]
fn the_encoder_matches_ffmpeg_octet_for_octet() {
    for signal in SIGNALS.into_iter().filter(|&s| s != BEYOND_THE_QMF_LIMIT) {
        let input = pcm(&format!("{signal}.s16"));
        let expected = read(&format!("{signal}.g722"));
        let got = encode_frames(&input);
        assert_eq!(got.len(), expected.len(), "{signal}: length");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
            panic!(
                "{signal}: first different octet at {i}: {:02x}, ffmpeg {:02x}",
                got[i], expected[i]
            );
        }
    }
}

#[test]
fn the_decoder_matches_ffmpeg_sample_for_sample() {
    for signal in SIGNALS {
        let octets = read(&format!("{signal}.g722"));
        let expected = pcm(&format!("{signal}.dec.s16"));
        let got = decode_frames(&octets);
        assert_eq!(got.len(), expected.len(), "{signal}: length");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
            panic!(
                "{signal}: first different sample at {i}: {}, ffmpeg {}",
                got[i], expected[i]
            );
        }
    }
}

/// The signal-to-noise ratio of `heard` against `sent`, `heard` being later
/// by the two QMFs' delay.
fn snr_db(sent: &[i16], heard: &[i16]) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (&s, &h) in sent.iter().zip(&heard[QMF_PAIR_DELAY..]) {
        signal += f64::from(s).powi(2);
        noise += (f64::from(h) - f64::from(s)).powi(2);
    }
    10.0 * (signal / noise.max(1.0)).log10()
}

/// Samples between the encoder's input and the decoder's output: the
/// transmit and receive QMFs, 24 taps each at 16 kHz.
const QMF_PAIR_DELAY: usize = 22;

#[test]
fn beyond_the_qmf_limit_the_encoding_is_at_least_as_faithful_as_ffmpegs() {
    let input = pcm(&format!("{BEYOND_THE_QMF_LIMIT}.s16"));
    let ours = snr_db(&input, &decode_frames(&encode_frames(&input)));
    let theirs = snr_db(
        &input,
        &decode_frames(&read(&format!("{BEYOND_THE_QMF_LIMIT}.g722"))),
    );
    assert!(
        ours >= theirs - 0.1,
        "ours {ours:.2} dB, ffmpeg's {theirs:.2} dB"
    );
    assert!(ours > 10.0, "{ours:.2} dB");
}

/// Counts this thread's heap allocations, so the test below sees only its own.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn a_frame_encodes_and_decodes_without_allocating() {
    let input: [i16; 320] = std::array::from_fn(|n| ((n as f64 * 0.39).sin() * 12_000.0) as i16);
    let mut encoder = G722Encoder::new();
    let mut decoder = G722Decoder::new();
    let mut octets = [0u8; 160];
    let mut output = [0i16; 320];
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..50 {
        assert_eq!(encoder.encode(&input, &mut octets), 160);
        assert_eq!(decoder.decode(&octets, &mut output), 320);
        let forked = encoder; // a state copy is a plain copy
        std::hint::black_box(forked);
    }
    assert_eq!(ALLOCATIONS.with(Cell::get), before);
}
