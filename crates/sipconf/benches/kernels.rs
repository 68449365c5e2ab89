//! The per-packet and per-frame kernels of the media and signalling paths, one
//! bench each: G.711 both laws both ways, G.722 both ways, the noise gate, the jitter buffer,
//! RTP parse and build, and SIP parse; and, for scale, the loopback socket
//! calls the engine makes per member per tick. The mixer tick with 10/100/1000 members
//! is `benches/mixer.rs` (`cargo bench --bench mixer`); it is not repeated here.
//! The Goertzel frame joins when the DTMF detector lands.
//!
//! Run: `cargo bench --bench kernels`.

use criterion::{criterion_group, criterion_main, Criterion};
use sipconf::media::codec::g722::{G722Decoder, G722Encoder};
use sipconf::media::jitter::{JitterBuffer, Pop};
use sipconf::media::mixer::NoiseGate;
use sipconf::media::rtp::{write_rtp, RtpHeader, RtpPacket, RtpSender, RTP_HEADER_BYTES};
use sipconf::media::Codec;
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};

const FRAME_SAMPLES: usize = 160;

/// One 20 ms frame of a 440 Hz tone over the whole 16-bit range of G.711 segments.
fn speech_frame() -> [i16; FRAME_SAMPLES] {
    let mut pcm = [0i16; FRAME_SAMPLES];
    for (n, sample) in pcm.iter_mut().enumerate() {
        let phase = 2.0 * std::f64::consts::PI * 440.0 * n as f64 / 8000.0;
        *sample = (12_000.0 * phase.sin()) as i16;
    }
    pcm
}

fn g711(criterion: &mut Criterion) {
    let pcm = speech_frame();
    for codec in Codec::G711 {
        let name = codec.encoding_name();
        let mut encoded = [0u8; FRAME_SAMPLES];
        criterion.bench_function(&format!("g711_encode_160/{name}"), |bench| {
            bench.iter(|| codec.encode(black_box(&pcm), &mut encoded))
        });
        let mut decoded = [0i16; FRAME_SAMPLES];
        criterion.bench_function(&format!("g711_decode_160/{name}"), |bench| {
            bench.iter(|| codec.decode(black_box(&encoded), &mut decoded))
        });
    }
}

/// 16 kHz samples in one 20 ms frame, and the G.722 octets they code to.
const WIDEBAND_FRAME_SAMPLES: usize = 320;
const G722_FRAME_OCTETS: usize = 160;

/// One 20 ms frame at 16 kHz: a 440 Hz tone plus a 5 kHz one, so both
/// sub-bands carry signal.
fn wideband_frame() -> [i16; WIDEBAND_FRAME_SAMPLES] {
    std::array::from_fn(|n| {
        let t = n as f64 / 16_000.0;
        let tau = 2.0 * std::f64::consts::PI;
        (9_000.0 * (tau * 440.0 * t).sin() + 3_000.0 * (tau * 5000.0 * t).sin()) as i16
    })
}

fn g722(criterion: &mut Criterion) {
    let pcm = wideband_frame();
    let mut encoder = G722Encoder::new();
    let mut encoded = [0u8; G722_FRAME_OCTETS];
    criterion.bench_function("g722_encode_320", |bench| {
        bench.iter(|| encoder.encode(black_box(&pcm), &mut encoded))
    });
    let mut decoder = G722Decoder::new();
    let mut decoded = [0i16; WIDEBAND_FRAME_SAMPLES];
    criterion.bench_function("g722_decode_320", |bench| {
        bench.iter(|| decoder.decode(black_box(&encoded), &mut decoded))
    });
}

fn noise_gate(criterion: &mut Criterion) {
    let pcm = speech_frame();
    let mut gate = NoiseGate::new(-55.0, 10);
    criterion.bench_function("noise_gate_update_160", |bench| {
        bench.iter(|| gate.update(black_box(&pcm)))
    });
}

fn jitter_buffer(criterion: &mut Criterion) {
    let payload = [0x55u8; FRAME_SAMPLES];
    let mut buffer = JitterBuffer::new(2, FRAME_SAMPLES as u32);
    let mut timestamp = 0u32;
    // Prime to the playout delay, so each iteration is one push and one played frame.
    for _ in 0..2 {
        buffer.push(timestamp, 7, &payload);
        timestamp = timestamp.wrapping_add(FRAME_SAMPLES as u32);
    }
    criterion.bench_function("jitter_push_pop", |bench| {
        bench.iter(|| {
            buffer.push(timestamp, 7, black_box(&payload));
            timestamp = timestamp.wrapping_add(FRAME_SAMPLES as u32);
            match buffer.pop() {
                Pop::Frame(frame) => frame.len(),
                Pop::Lost | Pop::Empty => 0,
            }
        })
    });
}

fn rtp(criterion: &mut Criterion) {
    let payload = [0x55u8; FRAME_SAMPLES];
    let header = RtpHeader {
        payload_type: 0,
        marker: false,
        sequence: 1234,
        timestamp: 160_000,
        ssrc: 0x1234_5678,
    };
    let mut packet = [0u8; RTP_HEADER_BYTES + FRAME_SAMPLES];
    write_rtp(&header, &payload, &mut packet).expect("fits");
    criterion.bench_function("rtp_parse", |bench| {
        bench.iter(|| {
            let parsed = RtpPacket::new_checked(black_box(&packet)).expect("valid");
            (
                parsed.sequence(),
                parsed.timestamp(),
                parsed.payload().len(),
            )
        })
    });
    let mut out = [0u8; RTP_HEADER_BYTES + FRAME_SAMPLES];
    criterion.bench_function("rtp_build", |bench| {
        bench.iter(|| write_rtp(black_box(&header), black_box(&payload), &mut out))
    });
    let mut sender = RtpSender::new(0x1234_5678, 1, 0);
    criterion.bench_function("rtp_sender_write_next", |bench| {
        bench.iter(|| sender.write_next(0, black_box(&payload), FRAME_SAMPLES as u32, &mut out))
    });
}

const INVITE: &str = "INVITE sip:1000@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:1000@192.0.2.10>\r\n\
From: \"Desk 12\" <sip:212@192.0.2.20>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@192.0.2.20\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:212@192.0.2.20:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY\r\n\
Supported: replaces, timer\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 253\r\n\
\r\n\
v=0\r\n\
o=- 20518 0 IN IP4 192.0.2.20\r\n\
s=SDP data\r\n\
c=IN IP4 192.0.2.20\r\n\
t=0 0\r\n\
m=audio 11796 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn sip_parse(criterion: &mut Criterion) {
    let source: SocketAddr = "192.0.2.20:5060".parse().expect("address");
    let datagram = INVITE.as_bytes();
    assert!(sipconf::sip::message::parse(datagram, source).is_ok());
    criterion.bench_function("sip_parse_invite", |bench| {
        bench.iter(|| sipconf::sip::message::parse(black_box(datagram), source))
    });
}

/// Not a kernel of ours but the floor under them: what the engine's socket
/// calls cost on this machine, per call. A read that finds nothing (`EAGAIN`)
/// is what the engine does twice per member per tick after the real read.
fn sockets(criterion: &mut Criterion) {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver.set_nonblocking(true).expect("nonblocking");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = receiver.local_addr().expect("address");
    let packet = [0x55u8; RTP_HEADER_BYTES + FRAME_SAMPLES];
    let mut buffer = [0u8; 1500];
    criterion.bench_function("udp_recv_from_would_block", |bench| {
        bench.iter(|| receiver.recv_from(&mut buffer).is_err())
    });
    criterion.bench_function("udp_send_and_recv_172_bytes_loopback", |bench| {
        bench.iter(|| {
            sender.send_to(black_box(&packet), to).expect("send");
            receiver.recv_from(&mut buffer).map(|(n, _)| n)
        })
    });
}

/// The same packets 64 at a time through one socket each way (`sendmmsg`,
/// `recvmmsg`, with `net::udp`'s batches), as a media thread with one
/// shared RTP socket would move them. Divide by 64 for the cost per packet.
fn socket_batches(criterion: &mut Criterion) {
    use sipconf::net::udp::{RawAddr, ReceiveBatch, SendBatch};
    use std::os::fd::AsRawFd;
    const BATCH: usize = 64;
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver.set_nonblocking(true).expect("nonblocking");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = RawAddr::new(receiver.local_addr().expect("address"));
    let mut out = SendBatch::new(BATCH);
    let mut into = ReceiveBatch::new(BATCH);
    criterion.bench_function("udp_sendmmsg_and_recvmmsg_64x172_bytes_loopback", |bench| {
        bench.iter(|| {
            for _ in 0..BATCH {
                out.push(&to, |buffer| {
                    buffer[..RTP_HEADER_BYTES + FRAME_SAMPLES].fill(0x55);
                    RTP_HEADER_BYTES + FRAME_SAMPLES
                });
            }
            let sent = out.send(sender.as_raw_fd());
            let mut received = 0;
            while received < sent {
                received += into.receive(receiver.as_raw_fd(), BATCH).expect("recvmmsg");
            }
            received
        })
    });
}

criterion_group!(
    benches,
    g711,
    g722,
    noise_gate,
    jitter_buffer,
    rtp,
    sip_parse,
    sockets,
    socket_batches
);
criterion_main!(benches);
