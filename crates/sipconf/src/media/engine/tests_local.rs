//! A local member (the room's sound card, `media/local.rs`) in the engine,
//! beside a phone on its own sockets: each hears the other through the
//! rings and the sockets, and a sound card that falls behind is counted,
//! never waited for.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Continue, Engine, TICK};
use crate::media::codec::Codec;
use crate::media::core::tests::tone_power;
use crate::media::local::LocalPort;
use crate::media::rtp::{write_rtp, RtpHeader, RtpPacket};
use crate::media::{
    AddMember, Command, MediaConfig, MediaStats, MemberFlags, MemberKey, MemberSockets,
};

fn tone(frame: u32, hz: f64) -> [i16; 160] {
    std::array::from_fn(|n| {
        let t = f64::from(frame * 160 + n as u32) / 8000.0;
        (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
    })
}

fn member(slot: u32, sockets: MemberSockets, remote_rtp: SocketAddr) -> AddMember {
    AddMember {
        key: MemberKey {
            slot,
            generation: 1,
        },
        mix: 0,
        sockets,
        remote_rtp,
        remote_rtcp: SocketAddr::new(remote_rtp.ip(), remote_rtp.port() + 1),
        signalling_ip: Some(remote_rtp.ip()),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: None,
        telephone_event_rate_hz: 8000,
        flags: MemberFlags::default(),
        keypad: false,
        opus: None,
        srtp: None,
        link: false,
    }
}

#[test]
fn a_local_member_and_a_phone_hear_each_other_and_a_late_card_is_counted() {
    let (mut commands, commands_out) = rtrb::RingBuffer::new(16);
    let (events, _events_out) = rtrb::RingBuffer::new(64);
    let stats = Arc::new(MediaStats::default());
    let config = MediaConfig {
        max_members: 4,
        ..MediaConfig::default()
    };
    let mut engine = Engine::new(config, commands_out, events, stats).expect("engine");
    let phone = UdpSocket::bind("127.0.0.1:0").expect("bind");
    phone.set_nonblocking(true).expect("nonblocking");
    let bridge_rtp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let bridge = bridge_rtp.local_addr().expect("bound");
    let own = MemberSockets::Own {
        rtp: bridge_rtp,
        rtcp: UdpSocket::bind("127.0.0.1:0").expect("bind"),
        sdp_ip: None,
    };
    let card = LocalPort::new();
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 9));
    for add in [
        member(0, own, phone.local_addr().expect("bound")),
        member(1, MemberSockets::Local(card.clone()), nowhere),
    ] {
        commands
            .push(Command::AddMember(Box::new(add)))
            .expect("room");
    }

    let start = Instant::now();
    let mut heard_by_phone = Vec::new();
    let mut heard_by_card = Vec::new();
    let mut datagram = [0u8; 1500];
    for frame in 0..50u32 {
        // The card captures 1 kHz, except that it is late for ticks 20..25.
        if !(20..25).contains(&frame) {
            assert_eq!(card.capture.push(&tone(frame, 1000.0)), 160);
        }
        let mut payload = [0u8; 160];
        Codec::Pcmu.encode(&tone(frame, 400.0), &mut payload);
        let header = RtpHeader {
            payload_type: 0,
            marker: false,
            sequence: frame as u16,
            timestamp: frame * 160,
            ssrc: 7,
        };
        let len = write_rtp(&header, &payload, &mut datagram).expect("fits");
        phone.send_to(&datagram[..len], bridge).expect("send");
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(engine.tick(start + TICK * frame, 0), Continue::Running);
        while let Ok((len, _)) = phone.recv_from(&mut datagram) {
            let packet = RtpPacket::new_checked(&datagram[..len]).expect("RTP");
            let mut pcm = [0i16; 160];
            let got = Codec::Pcmu.decode(packet.payload(), &mut pcm);
            heard_by_phone.extend_from_slice(&pcm[..got]);
        }
        let mut pcm = [0i16; 160];
        let got = card.playback.pop(&mut pcm);
        heard_by_card.extend_from_slice(&pcm[..got]);
    }

    assert!(heard_by_phone.len() >= 160 * 40, "{}", heard_by_phone.len());
    assert!(tone_power(&heard_by_phone, 1000.0) > 1000.0 * tone_power(&heard_by_phone, 400.0));
    // One frame a tick reaches the card, heard or not.
    assert_eq!(heard_by_card.len(), 160 * 50);
    assert!(tone_power(&heard_by_card, 400.0) > 1000.0 * tone_power(&heard_by_card, 1000.0));
    let counted = &card.stats;
    assert_eq!(counted.capture_underruns.load(Ordering::Relaxed), 5);
    assert_eq!(counted.playback_overruns.load(Ordering::Relaxed), 0);
}
