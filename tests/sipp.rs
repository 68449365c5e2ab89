//! Interop with a real SIP peer: sipp (Debian `sip-tester`) places calls against
//! the daemon, with RTP replayed from pcap files, and a CANCEL before answer.
//! A test phone in the same room checks that sipp's audio went through the mixer.

mod common;

use common::sipp::scenario;
use common::{require_tool, tempdir::TempDir, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::meter::tone_amplitude;
use sipconf_testkit::testphone::{Phone, PhoneOptions, Signal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The tone in the pcaps this test writes, and its peak amplitude.
const PCAP_TONE_HZ: f64 = 1000.0;
const PCAP_TONE_AMPLITUDE: f64 = 8000.0;

/// Writes a pcap of `seconds` of a 1 kHz sine as RTP with `codec`.
fn write_tone_pcap(path: &Path, codec: Codec, seconds: u32) {
    let samples: Vec<i16> = (0..seconds as usize * 8000)
        .map(|n| {
            (PCAP_TONE_AMPLITUDE
                * (2.0 * std::f64::consts::PI * PCAP_TONE_HZ * n as f64 / 8000.0).sin())
                as i16
        })
        .collect();
    write_audio_pcap(path, codec, &samples);
}

/// Writes a pcap (Ethernet/IPv4/UDP/RTP) of `samples` (8 kHz) as RTP with
/// `codec`, one packet per 20 ms, for sipp's `play_pcap_audio`.
fn write_audio_pcap(path: &Path, codec: Codec, samples: &[i16]) {
    let mut out = Vec::new();
    // pcap global header: magic, v2.4, GMT offset, accuracy, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let frames = (samples.len() / 160) as u32;
    let mut pcm = [0i16; 160];
    for frame in 0..frames {
        let start = frame as usize * 160;
        pcm.copy_from_slice(&samples[start..start + 160]);
        let mut rtp = vec![0x80, g711_payload_type(codec)];
        rtp.extend_from_slice(&(frame as u16).to_be_bytes());
        rtp.extend_from_slice(&(frame * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5150_0001u32.to_be_bytes());
        let mut payload = [0u8; 160];
        codec.encode(&pcm, &mut payload);
        rtp.extend_from_slice(&payload);

        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut ip = vec![
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
        ];
        ip.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        let checksum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        let mut packet = vec![0u8; 12];
        packet.extend_from_slice(&[0x08, 0x00]);
        packet.extend_from_slice(&ip);
        packet.extend_from_slice(&6000u16.to_be_bytes());
        packet.extend_from_slice(&6000u16.to_be_bytes());
        packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
        packet.extend_from_slice(&0u16.to_be_bytes());
        packet.extend_from_slice(&rtp);

        let usec = frame * 20_000;
        out.extend_from_slice(&(usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        out.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        out.extend_from_slice(&packet);
    }
    std::fs::write(path, out).expect("write pcap");
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Runs sipp as a UAC against the daemon: one call, bounded in time.
fn run_sipp(
    bridge: SocketAddr,
    dir: &TempDir,
    scenario_file: &Path,
    service: &str,
) -> (bool, String) {
    common::sipp::run_uac(bridge, dir, scenario_file, service, 30)
}

/// sipp calls room 1000 and plays `pcap`; a test phone in the room listens.
/// Returns the phone's recording and sipp's outcome.
async fn sipp_call_with_listener(pcap: PathBuf, pt: u8, seconds: u32) -> (Vec<i16>, bool, String) {
    let daemon = Daemon::with_rooms();
    let dir = TempDir::new("sipconf-sipp");
    let mut listener = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("listener joins");
    // sipp takes no injected values in play_pcap_audio: fill the template instead.
    let template = std::fs::read_to_string(scenario("uac_pcap.xml")).expect("scenario");
    let filled = template
        .replace("@PT@", &pt.to_string())
        .replace("@PCAP@", &pcap.display().to_string())
        .replace("@PAUSE_MS@", &(seconds * 1000).to_string());
    let scenario_file = dir.path().join("uac_pcap.xml");
    std::fs::write(&scenario_file, filled).expect("write scenario");
    let bridge = daemon.sip;
    let sipp = tokio::task::spawn_blocking(move || {
        let r = run_sipp(bridge, &dir, &scenario_file, "1000");
        drop(dir);
        r
    });
    let recording = listener
        .stream(
            &Signal::Silence,
            Duration::from_millis(u64::from(seconds) * 1000 + 1500),
        )
        .await
        .expect("listener media");
    let (ok, log) = sipp.await.expect("sipp task");
    listener.hangup().await.expect("listener bye");
    drop(daemon);
    (recording.samples, ok, log)
}

/// sipp calls with a 1 kHz tone pcap in `codec`; the listener must hear the
/// tone at the level it was sent (within 1 dB) in its loudest half second.
async fn sipp_plays_a_tone_the_room_hears(codec: Codec, test: &str) {
    if !require_tool("sipp", test) {
        return;
    }
    let dir = TempDir::new("sipconf-pcap");
    let pcap = dir.path().join("tone.pcap");
    write_tone_pcap(&pcap, codec, 3);
    let (heard, ok, log) = sipp_call_with_listener(pcap, g711_payload_type(codec), 3).await;
    assert!(ok, "sipp failed:\n{log}");
    let loudest = heard
        .chunks(4000)
        .map(|window| tone_amplitude(window, PCAP_TONE_HZ))
        .fold(0.0f64, f64::max);
    let level_db = 20.0 * (loudest / PCAP_TONE_AMPLITUDE).log10();
    assert!(
        level_db.abs() <= 1.0,
        "{codec:?}: the listener heard sipp's 1 kHz tone at {level_db:.2} dB relative to the pcap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_with_pcmu_rtp_and_the_room_hears_it() {
    sipp_plays_a_tone_the_room_hears(
        Codec::Pcmu,
        "sipp_calls_with_pcmu_rtp_and_the_room_hears_it",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_with_pcma_rtp_and_the_room_hears_it() {
    sipp_plays_a_tone_the_room_hears(
        Codec::Pcma,
        "sipp_calls_with_pcma_rtp_and_the_room_hears_it",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_cancel_before_answer_gets_487() {
    if !require_tool("sipp", "sipp_cancel_before_answer_gets_487") {
        return;
    }
    let daemon = Daemon::start("", "[[room]]\nnumber = \"3000\"\nanswer_delay_ms = 2000\n");
    let dir = TempDir::new("sipconf-sipp");
    let bridge = daemon.sip;
    let (ok, log) = tokio::task::spawn_blocking(move || {
        let r = run_sipp(bridge, &dir, &scenario("uac_cancel.xml"), "3000");
        drop(dir);
        r
    })
    .await
    .expect("sipp task");
    drop(daemon);
    assert!(ok, "sipp cancel scenario failed:\n{log}");
}

/// sipp plays a keypress pcap into room 1000; the bridge must hang the call
/// up with BYE, which is what the keypad's `#` does.
async fn sipp_presses_hash(pcap: PathBuf, pt: u8, test: &str) {
    if !require_tool("sipp", test) {
        return;
    }
    let daemon = Daemon::with_rooms();
    let dir = TempDir::new("sipconf-sipp-keys");
    let template = std::fs::read_to_string(scenario("uac_keys.xml")).expect("scenario");
    let filled = template
        .replace("@PT@", &pt.to_string())
        .replace("@PCAP@", &pcap.display().to_string());
    let scenario_file = dir.path().join("uac_keys.xml");
    std::fs::write(&scenario_file, filled).expect("write scenario");
    let bridge = daemon.sip;
    let (ok, log) = tokio::task::spawn_blocking(move || {
        let r = run_sipp(bridge, &dir, &scenario_file, "1000");
        drop(dir);
        r
    })
    .await
    .expect("sipp task");
    assert!(ok, "{test}: sipp got no BYE after its # key:\n{log}");
    assert!(daemon.logged("left with #"), "{test}: the bridge saw #");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_rfc4733_hash_from_the_shipped_pcap_ends_the_call() {
    let pcap = PathBuf::from("/usr/share/sip-tester/dtmf_2833_pound.pcap");
    if require_tool(
        "sipp",
        "sipp_rfc4733_hash_from_the_shipped_pcap_ends_the_call",
    ) {
        assert!(pcap.exists(), "{} ships with sip-tester", pcap.display());
    }
    sipp_presses_hash(
        pcap,
        0,
        "sipp_rfc4733_hash_from_the_shipped_pcap_ends_the_call",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_in_band_hash_from_a_wav_ends_the_call() {
    use sipconf::audio::wav::read_wav_8k;
    use sipconf::media::dtmf::key_tones_hz;
    use sipconf_testkit::wav::wav_pcm16;
    // A WAV of silence, # (941 + 1477 Hz at -6 dBm0 per tone, 120 ms), silence,
    // read back as the bridge's own `sipconf dtmf` would, then put in a pcap.
    let dir = TempDir::new("sipconf-inband");
    let (low, high) = key_tones_hz('#').expect("# is a key");
    let amplitude = 22_930.0 * 10f64.powf(-6.0 / 20.0);
    let samples: Vec<i16> = (0..8000 * 2)
        .map(|n| {
            let t = n as f64 / 8000.0;
            if (0.5..0.62).contains(&t) {
                let phase = 2.0 * std::f64::consts::PI * t;
                (amplitude * ((phase * low).sin() + (phase * high).sin())) as i16
            } else {
                0
            }
        })
        .collect();
    let wav_path = dir.path().join("hash.wav");
    std::fs::write(&wav_path, wav_pcm16(&samples, 1, 8000)).expect("write wav");
    let from_wav = read_wav_8k(&wav_path).expect("read wav");
    let pcap = dir.path().join("hash_inband.pcap");
    write_audio_pcap(&pcap, Codec::Pcmu, &from_wav);
    sipp_presses_hash(pcap, 0, "sipp_in_band_hash_from_a_wav_ends_the_call").await;
}

/// sipp plays G.711 here: its static payload type (RFC 3551 table 4).
fn g711_payload_type(codec: Codec) -> u8 {
    codec.static_payload_type().expect("a G.711 codec")
}
