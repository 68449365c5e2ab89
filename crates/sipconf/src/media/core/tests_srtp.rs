//! SRTP members in the core (issue 16): decrypted before they are heard,
//! encrypted per member after the shared frame, forgeries counted.

use super::*;

/// A phone that speaks SRTP with the core, and one that does not, in one
/// conference: each hears the other, the SRTP phone's packets are checked
/// and decrypted on the way in and encrypted per member on the way out, and
/// forged or replayed packets are dropped and counted.
#[test]
fn an_srtp_member_and_a_plain_member_hear_each_other_and_forgeries_are_counted() {
    use crate::media::srtp::{Context, MasterKey, MemberSrtp, Suite};
    let phone_key = MasterKey {
        key: [7; 16],
        salt: [9; 14],
    };
    let bridge_key = MasterKey {
        key: [21; 16],
        salt: [4; 14],
    };
    let suite = Suite::AesCm128HmacSha1_80;
    let mut room = Room::with_members(2);
    room.add(MemberFlags::default(), false);
    let secure = MemberKey {
        slot: 1,
        generation: 1,
    };
    let secure_address = phone_address(1);
    let add = AddMember {
        key: secure,
        mix: 0,
        sockets: MemberSockets::Shared,
        remote_rtp: secure_address,
        remote_rtcp: SocketAddr::new(secure_address.ip(), secure_address.port() + 1),
        signalling_ip: Some(secure_address.ip()),
        codec: Codec::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(EVENT_PT),
        telephone_event_rate_hz: 8000,
        flags: MemberFlags::default(),
        keypad: false,
        opus: None,
        srtp: Some(Box::new(MemberSrtp::new(suite, &phone_key, &bridge_key))),
        link: false,
    };
    assert!(matches!(
        room.command(Command::AddMember(Box::new(add))),
        Applied::Started { .. }
    ));
    let mut phone_sends = Context::new(suite, &phone_key);
    let mut phone_hears = Context::new(suite, &bridge_key);
    let mut secure_heard: Vec<i16> = Vec::new();
    let mut secure_rtcp: Vec<Vec<u8>> = Vec::new();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let far_voice_hz = 700.0;
    for tick in 0..60u32 {
        // The plain phone talks at VOICE_HZ, the SRTP phone at 700 Hz.
        room.send(0, Sound::Sine(VOICE_HZ));
        let mut payload = [0u8; FRAME];
        Codec::Pcmu.encode(
            &frame_of(Sound::Sine(far_voice_hz), tick * 160),
            &mut payload,
        );
        let mut packet = rtp(0, 5000 + tick as u16, tick * 160, &payload);
        let len = packet.len();
        packet.resize(len + 10, 0);
        let len = phone_sends.protect_rtp(&mut packet, len).expect("room");
        packet.truncate(len);
        room.receive_from(secure_address, &packet);
        sent.push(packet);
        let now = room.now();
        let Room { core, phones, .. } = &mut room;
        core.tick(now, 0, &mut |t: Transmit<'_>| {
            if t.member != secure {
                return deliver(phones, t);
            }
            let mut bytes = t.contents.to_vec();
            match t.stream {
                Stream::Rtp => {
                    let len = phone_hears
                        .unprotect_rtp(&mut bytes)
                        .expect("the core protects with the bridge's key");
                    let packet = RtpPacket::new_checked(&bytes[..len]).expect("RTP");
                    let mut pcm = vec![0i16; packet.payload().len()];
                    Codec::Pcmu.decode(packet.payload(), &mut pcm);
                    secure_heard.extend(pcm);
                }
                Stream::Rtcp => secure_rtcp.push(bytes),
            }
        });
        room.ticks += 1;
    }
    // Each hears the other's voice, not its own.
    let plain_heard = last_frames(&room.phones[0], 25);
    let secure_heard = &secure_heard[secure_heard.len() - 25 * FRAME..];
    let full = (25.0 * FRAME as f64 * VOICE_AMPLITUDE / 2.0).powi(2);
    assert!(db(tone_power(plain_heard, far_voice_hz) / full) > -3.0);
    assert!(db(tone_power(plain_heard, VOICE_HZ) / full) < -40.0);
    assert!(db(tone_power(secure_heard, VOICE_HZ) / full) > -3.0);
    assert!(db(tone_power(secure_heard, far_voice_hz) / full) < -40.0);
    assert_eq!(room.counter(|s| &s.srtp_auth_failed), 0);
    assert_eq!(room.counter(|s| &s.srtp_replayed), 0);

    // A changed byte, plain RTP from the phone's address, a replay.
    let mut forged = sent[59].clone();
    forged[2..4].copy_from_slice(&6000u16.to_be_bytes());
    room.receive_from(secure_address, &forged);
    let plain = rtp(0, 6001, 6001 * 160, &[0xFF; FRAME]);
    room.receive_from(secure_address, &plain);
    room.receive_from(secure_address, &sent[58]);
    room.tick();
    assert_eq!(room.counter(|s| &s.srtp_auth_failed), 2);
    assert_eq!(room.counter(|s| &s.srtp_replayed), 1);

    // Its reports, down to the BYE as it leaves, are SRTCP the phone reads.
    let now = room.now();
    room.core.command(
        Command::RemoveMember { key: secure },
        now,
        0,
        &mut |t: Transmit<'_>| {
            assert_eq!(t.stream, Stream::Rtcp);
            secure_rtcp.push(t.contents.to_vec());
        },
    );
    let mut bye = secure_rtcp.last().expect("a BYE").clone();
    let len = phone_hears.unprotect_rtcp(&mut bye).expect("SRTCP");
    assert!(check_rtcp(&bye[..len]).expect("a valid report").has_bye);
}
