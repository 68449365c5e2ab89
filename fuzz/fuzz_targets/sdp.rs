//! An SDP body from a caller: an offer we accept, written out again in the
//! plainest form, reads back as the same offer; and when we can negotiate,
//! our answer reads back with the codec, telephone-event type, port, address
//! and direction we chose.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipconf::sip::sdp::{self, Offer, SdpSession};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Every codec, in the default order of preference.
const ALL: &[sdp::SdpCodec] = &sdp::SdpCodec::DEFAULT_ORDER;

/// The offer as SDP: only the lines the parser reads.
fn write_offer(offer: &Offer) -> String {
    let addr_type = if offer.connection_addr.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    };
    let profile = if offer.secure_profile {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let mut text = format!(
        "v=0\r\nc=IN {addr_type} {}\r\nm=audio {} {profile}",
        offer.connection_addr, offer.audio_port
    );
    for payload in &offer.payloads {
        let _ = write!(text, " {}", payload.pt);
    }
    text.push_str("\r\n");
    for payload in &offer.payloads {
        let _ = write!(
            text,
            "a=rtpmap:{} {}/{}/{}\r\n",
            payload.pt, payload.encoding_name, payload.clock_rate_hz, payload.channels
        );
    }
    if let Some(ptime_ms) = offer.ptime_ms {
        let _ = write!(text, "a=ptime:{ptime_ms}\r\n");
    }
    for crypto in &offer.crypto {
        sdp::write_crypto(&mut text, crypto.tag, crypto.suite, &crypto.key);
    }
    let _ = write!(text, "a={}\r\n", offer.direction.as_str());
    text
}

fuzz_target!(|body: &[u8]| {
    let Ok(offer) = sdp::parse_offer(body) else {
        return;
    };
    let written = write_offer(&offer);
    let again = sdp::parse_offer(written.as_bytes())
        .unwrap_or_else(|e| panic!("{e}: our rewrite of {offer:?} does not parse: {written:?}"));
    // Payloads the offer listed twice appear once per listing; the first rtpmap wins.
    // Crypto lines we could not use are not written, so the reason one was skipped is not either.
    let expected = Offer {
        crypto_skipped: None,
        ..offer.clone()
    };
    assert_eq!(again, expected, "{written:?}");
    if let Some(ptime_ms) = offer.ptime_ms {
        assert!(ptime_ms > 0);
    }

    let key = sipconf::media::srtp::MasterKey::from_concatenated(&[7; 30]).expect("30 bytes");
    let Ok(negotiated) = sdp::negotiate(&offer, ALL, sdp::SrtpPolicy::Offer, key) else {
        return;
    };
    assert_eq!(negotiated.remote_rtp_addr, offer.remote_rtp_addr());
    let local = SocketAddr::new(IpAddr::from([192, 0, 2, 1]), 40_000);
    let answer_text = sdp::build_answer(SdpSession::new(7), local, &negotiated);
    let answer = sdp::parse_answer(answer_text.as_bytes()).expect("our answer parses");
    assert_eq!(answer.remote_rtp_addr(), local);
    assert_eq!(answer.direction, negotiated.direction);
    assert_eq!(
        answer.telephone_event_at(negotiated.telephone_event_rate_hz),
        negotiated.telephone_event_pt
    );
    // Read back as the answer to an offer of ours that carried no key.
    let agreed = sdp::negotiate_answer(&answer, ALL, None).expect("our answer names our codec");
    assert_eq!(agreed.codec, negotiated.codec);
    assert_eq!(agreed.codec_pt, negotiated.codec_pt);
    assert_eq!(agreed.direction, negotiated.direction.answer_to());
});
