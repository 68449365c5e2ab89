//! Outbound calls (UAC) driven with literal SIP text and fake instants: the far end's
//! responses are written here by hand from the requests the endpoint sends.

use super::*;
use crate::sip::session_timer::TimerSettings;
use crate::sip::source_guard::SourceLimits;
use md5::{Digest, Md5};

const T1: Duration = Duration::from_millis(500);
pub(super) const OFFER: &str =
    "v=0\r\no=sipconf 1 1 IN IP4 192.0.2.1\r\ns=sipconf\r\nc=IN IP4 192.0.2.1\r\n\
    t=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
pub(super) const ANSWER: &str =
    "v=0\r\no=- 5 5 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n\
    m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
pub(super) const CALLEE_CONTACT: &str = "Contact: <sip:alice@192.0.2.9:5071>\r\n";

pub(super) fn callee() -> SocketAddr {
    "192.0.2.9:5070".parse().expect("addr")
}

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        local_addr: "192.0.2.1:5060".parse().expect("addr"),
        user_agent: "sipconf-test".to_owned(),
        max_transactions: 16,
        max_dialogs: 4,
        t1: T1,
        t2: Duration::from_secs(4),
        session_timer: TimerSettings::default(),
        limits: SourceLimits::default(),
        limit_stats: Arc::default(),
        tls_port: None,
    })
}

pub(super) fn outgoing(credentials: Option<Credentials>) -> OutgoingCall {
    OutgoingCall {
        request_uri: "sip:alice@192.0.2.9:5070".to_owned(),
        from_uri: "sip:1000@bridge".to_owned(),
        from_display: Some("Room \"1000\"".to_owned()),
        destination: callee(),
        transport: Transport::Udp,
        offer_sdp: OFFER.to_owned(),
        credentials,
        link: None,
    }
}

fn credentials() -> Option<Credentials> {
    Some(Credentials {
        username: "bridge".to_owned(),
        password: "s3cret".to_owned(),
    })
}

/// Everything sent since the last call, with its destination.
pub(super) fn sent(endpoint: &mut Endpoint) -> Vec<(SocketAddr, String)> {
    std::iter::from_fn(|| endpoint.poll_transmit())
        .map(|t| {
            (
                t.destination,
                String::from_utf8(t.bytes.to_vec()).expect("utf8"),
            )
        })
        .collect()
}

/// Exactly one message, sent to `to`.
pub(super) fn sent_one(endpoint: &mut Endpoint, to: SocketAddr) -> String {
    let mut out = sent(endpoint);
    assert_eq!(out.len(), 1, "{out:?}");
    let (destination, text) = out.remove(0);
    assert_eq!(destination, to, "{text}");
    text
}

pub(super) fn events(endpoint: &mut Endpoint) -> Vec<SipEvent> {
    std::iter::from_fn(|| endpoint.poll_event()).collect()
}

pub(super) fn start_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

/// The value of the first header `name` (full name, as we write them).
pub(super) fn header<'a>(message: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    message
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

pub(super) fn headers<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name}: ");
    message
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect()
}

pub(super) fn branch(message: &str) -> &str {
    header(message, "Via")
        .split(";branch=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("branch")
}

/// The far end's response to `request`, written the way a phone would.
pub(super) fn reply(
    request: &str,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &str,
) -> String {
    reply_with_body(request, code, reason, to_tag, extra, "")
}

pub(super) fn reply_with_body(
    request: &str,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> String {
    let to = header(request, "To");
    let to = match to_tag {
        Some(tag) => format!("{to};tag={tag}"),
        None => to.to_owned(),
    };
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "SIP/2.0 {code} {reason}\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         {extra}{content_type}Content-Length: {}\r\n\r\n{body}",
        header(request, "Via"),
        header(request, "From"),
        header(request, "Call-ID"),
        header(request, "CSeq"),
        body.len()
    )
}

pub(super) fn feed(endpoint: &mut Endpoint, now: Instant, text: &str) {
    endpoint.handle_datagram(now, Transport::Udp, callee(), text.as_bytes());
}

/// INVITE sent; returns the call and the INVITE text.
pub(super) fn place_call(endpoint: &mut Endpoint, now: Instant) -> (CallKey, String) {
    let call = endpoint.invite(now, outgoing(None)).expect("invite");
    let invite = sent_one(endpoint, callee());
    (call, invite)
}

/// INVITE, 180, 200 with SDP, ACK; returns the call and the INVITE.
pub(super) fn answered_call(
    endpoint: &mut Endpoint,
    now: Instant,
    extra_2xx: &str,
) -> (CallKey, String) {
    let (call, invite) = place_call(endpoint, now);
    feed(
        endpoint,
        now,
        &reply(&invite, 180, "Ringing", Some("callee-tag"), ""),
    );
    let ok = reply_with_body(
        &invite,
        200,
        "OK",
        Some("callee-tag"),
        &format!("{CALLEE_CONTACT}{extra_2xx}"),
        ANSWER,
    );
    feed(endpoint, now, &ok);
    let _ack = sent(endpoint);
    let got = events(endpoint);
    assert!(
        matches!(got.last(), Some(SipEvent::Answered { .. })),
        "{got:?}"
    );
    (call, invite)
}

#[test]
fn invite_carries_offer_contact_and_a_tagged_from() {
    let mut endpoint = endpoint();
    let (_, invite) = place_call(&mut endpoint, Instant::now());
    assert_eq!(
        start_line(&invite),
        "INVITE sip:alice@192.0.2.9:5070 SIP/2.0"
    );
    assert!(header(&invite, "Via").starts_with("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"));
    assert!(
        header(&invite, "From").starts_with("\"Room 1000\" <sip:1000@bridge>;tag="),
        "{invite}"
    );
    assert_eq!(header(&invite, "To"), "<sip:alice@192.0.2.9:5070>");
    assert_eq!(header(&invite, "CSeq"), "1 INVITE");
    assert_eq!(header(&invite, "Contact"), "<sip:1000@192.0.2.1:5060>");
    assert_eq!(header(&invite, "Content-Type"), "application/sdp");
    assert!(invite.ends_with(OFFER));
}

#[test]
fn invite_is_resent_on_timer_a_until_a_provisional_then_progress_is_reported_once() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (call, invite) = place_call(&mut endpoint, start);
    assert_eq!(endpoint.poll_timeout(), Some(start + T1));
    endpoint.handle_timeout(start + T1);
    assert_eq!(sent_one(&mut endpoint, callee()), invite);
    // Timer A doubles: the next resend is 2*T1 later.
    assert_eq!(endpoint.poll_timeout(), Some(start + 3 * T1));
    endpoint.handle_timeout(start + 3 * T1);
    assert_eq!(sent_one(&mut endpoint, callee()), invite);

    let now = start + 4 * T1;
    feed(&mut endpoint, now, &reply(&invite, 100, "Trying", None, ""));
    assert_eq!(events(&mut endpoint), vec![]);
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 180, "Ringing", Some("t"), ""),
    );
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 180, "Ringing", Some("t"), ""),
    );
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 183, "Session Progress", Some("t"), ""),
    );
    assert_eq!(
        events(&mut endpoint),
        vec![
            SipEvent::Progress { call, code: 180 },
            SipEvent::Progress { call, code: 183 }
        ]
    );
    // Proceeding: no more resending and no timer B.
    assert_eq!(endpoint.poll_timeout(), None);
    endpoint.handle_timeout(start + Duration::from_secs(60));
    assert!(sent(&mut endpoint).is_empty());
}

#[test]
fn answer_is_acked_along_the_dialog_and_reported_once() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    let ok = reply_with_body(
        &invite,
        200,
        "OK",
        Some("callee-tag"),
        CALLEE_CONTACT,
        ANSWER,
    );
    feed(&mut endpoint, now, &ok);
    // No route set: the ACK goes to the callee's Contact.
    let contact: SocketAddr = "192.0.2.9:5071".parse().expect("addr");
    let ack = sent_one(&mut endpoint, contact);
    assert_eq!(start_line(&ack), "ACK sip:alice@192.0.2.9:5071 SIP/2.0");
    assert_eq!(header(&ack, "CSeq"), "1 ACK");
    assert_eq!(
        header(&ack, "To"),
        "<sip:alice@192.0.2.9:5070>;tag=callee-tag"
    );
    assert_eq!(header(&ack, "From"), header(&invite, "From"));
    assert_eq!(header(&ack, "Call-ID"), header(&invite, "Call-ID"));
    assert_ne!(
        branch(&ack),
        branch(&invite),
        "a 2xx ACK is its own transaction"
    );
    match events(&mut endpoint).as_slice() {
        [SipEvent::Answered {
            call: answered,
            answer,
            ..
        }] => {
            assert_eq!(*answered, call);
            assert_eq!(answer.audio_port, 30000);
            let negotiated =
                sdp::negotiate_answer(answer, &sdp::SdpCodec::DEFAULT_ORDER, None).expect("codec");
            assert_eq!(negotiated.codec, sdp::SdpCodec::Pcma);
        }
        other => panic!("expected Answered, got {other:?}"),
    }

    // The callee did not get our ACK and sends the 200 again: ACK again, no new event.
    feed(&mut endpoint, now + T1, &ok);
    assert_eq!(sent_one(&mut endpoint, contact), ack);
    assert_eq!(events(&mut endpoint), vec![]);
}

#[test]
fn busy_is_acked_in_the_invite_transaction_and_fails_the_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    let busy = reply(&invite, 486, "Busy Here", Some("callee-tag"), "");
    feed(&mut endpoint, now, &busy);
    let ack = sent_one(&mut endpoint, callee());
    assert_eq!(start_line(&ack), "ACK sip:alice@192.0.2.9:5070 SIP/2.0");
    assert_eq!(header(&ack, "Via"), header(&invite, "Via"));
    assert_eq!(header(&ack, "CSeq"), "1 ACK");
    assert_eq!(
        header(&ack, "To"),
        "<sip:alice@192.0.2.9:5070>;tag=callee-tag"
    );
    assert_eq!(
        events(&mut endpoint),
        vec![
            SipEvent::Failed {
                call,
                code: 486,
                reason: "Busy Here".to_owned()
            },
            SipEvent::Ended {
                call,
                reason: EndReason::Rejected
            }
        ]
    );
    // A retransmitted 486 gets the same ACK again (timer D keeps the transaction).
    feed(&mut endpoint, now + T1, &busy);
    assert_eq!(sent_one(&mut endpoint, callee()), ack);
    assert_eq!(events(&mut endpoint), vec![]);
    assert_eq!(endpoint.stats().calls_in_use, 0);
}

#[test]
fn no_response_at_all_fails_with_408_after_64_t1() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (call, _) = place_call(&mut endpoint, start);
    let mut invites_sent = 1;
    let failed_at = loop {
        let now = endpoint.poll_timeout().expect("timer running");
        endpoint.handle_timeout(now);
        invites_sent += sent(&mut endpoint).len();
        let got = events(&mut endpoint);
        if !got.is_empty() {
            assert_eq!(
                got,
                vec![
                    SipEvent::Failed {
                        call,
                        code: 408,
                        reason: "Request Timeout".to_owned()
                    },
                    SipEvent::Ended {
                        call,
                        reason: EndReason::Rejected
                    }
                ]
            );
            break now;
        }
    };
    assert_eq!(failed_at - start, 64 * T1);
    // Sent at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s.
    assert_eq!(invites_sent, 7);
    assert_eq!(endpoint.poll_timeout(), None);
}

/// The `name="value"` or `name=value` parameter of a Digest header value.
fn digest_param<'a>(value: &'a str, name: &str) -> &'a str {
    value
        .trim_start_matches("Digest ")
        .split(", ")
        .find_map(|param| param.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('"'))
        .unwrap_or_else(|| panic!("no {name} in {value}"))
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn www_authenticate_challenge_is_answered_once_with_cseq_2() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let call = endpoint
        .invite(now, outgoing(credentials()))
        .expect("invite");
    let invite = sent_one(&mut endpoint, callee());
    let challenge = "WWW-Authenticate: Digest realm=\"sip.example\", nonce=\"4f1b7c2a\", \
                     qop=\"auth\", opaque=\"op4que\", algorithm=MD5\r\n";
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 401, "Unauthorized", Some("c1"), challenge),
    );
    let mut out = sent(&mut endpoint);
    assert_eq!(out.len(), 2, "{out:?}");
    let (_, ack) = out.remove(0);
    let (to, second) = out.remove(0);
    assert_eq!(to, callee());
    assert_eq!(start_line(&ack), "ACK sip:alice@192.0.2.9:5070 SIP/2.0");
    assert_eq!(branch(&ack), branch(&invite));

    assert_eq!(start_line(&second), start_line(&invite));
    assert_eq!(header(&second, "CSeq"), "2 INVITE");
    assert_eq!(header(&second, "Call-ID"), header(&invite, "Call-ID"));
    assert_eq!(header(&second, "From"), header(&invite, "From"));
    assert_eq!(header(&second, "To"), "<sip:alice@192.0.2.9:5070>");
    assert_ne!(branch(&second), branch(&invite));

    let authorization = header(&second, "Authorization");
    assert_eq!(digest_param(authorization, "username"), "bridge");
    assert_eq!(digest_param(authorization, "realm"), "sip.example");
    assert_eq!(digest_param(authorization, "nonce"), "4f1b7c2a");
    assert_eq!(
        digest_param(authorization, "uri"),
        "sip:alice@192.0.2.9:5070"
    );
    assert_eq!(digest_param(authorization, "opaque"), "op4que");
    assert_eq!(digest_param(authorization, "qop"), "auth");
    let nc = digest_param(authorization, "nc");
    let cnonce = digest_param(authorization, "cnonce");
    assert_eq!(nc, "00000001");
    // RFC 2617 3.2.2.1, computed here from the definition.
    let ha1 = md5_hex("bridge:sip.example:s3cret");
    let ha2 = md5_hex("INVITE:sip:alice@192.0.2.9:5070");
    let expected = md5_hex(&format!("{ha1}:4f1b7c2a:{nc}:{cnonce}:auth:{ha2}"));
    assert_eq!(digest_param(authorization, "response"), expected);
    assert_eq!(events(&mut endpoint), vec![]);

    // The same realm refuses again: the call fails with that code.
    feed(
        &mut endpoint,
        now,
        &reply(&second, 401, "Unauthorized", Some("c2"), challenge),
    );
    let ack = sent_one(&mut endpoint, callee());
    assert_eq!(branch(&ack), branch(&second));
    assert_eq!(header(&ack, "CSeq"), "2 ACK");
    assert_eq!(
        events(&mut endpoint),
        vec![
            SipEvent::Failed {
                call,
                code: 401,
                reason: "Unauthorized".to_owned()
            },
            SipEvent::Ended {
                call,
                reason: EndReason::Rejected
            }
        ]
    );
}

#[test]
fn stale_nonce_is_retried_once_with_the_new_nonce() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let call = endpoint
        .invite(now, outgoing(credentials()))
        .expect("invite");
    let first = sent_one(&mut endpoint, callee());
    let challenge = |nonce: &str, stale: bool| {
        let stale = if stale { ", stale=true" } else { "" };
        format!("WWW-Authenticate: Digest realm=\"sip.example\", nonce=\"{nonce}\"{stale}\r\n")
    };
    feed(
        &mut endpoint,
        now,
        &reply(
            &first,
            401,
            "Unauthorized",
            Some("a"),
            &challenge("n1", false),
        ),
    );
    let second = sent(&mut endpoint).remove(1).1;
    feed(
        &mut endpoint,
        now,
        &reply(
            &second,
            401,
            "Unauthorized",
            Some("b"),
            &challenge("n2", true),
        ),
    );
    let third = sent(&mut endpoint).remove(1).1;
    assert_eq!(header(&third, "CSeq"), "3 INVITE");
    assert_eq!(digest_param(header(&third, "Authorization"), "nonce"), "n2");
    assert_eq!(events(&mut endpoint), vec![]);
    // Stale again: no endless loop, the call fails.
    feed(
        &mut endpoint,
        now,
        &reply(
            &third,
            401,
            "Unauthorized",
            Some("c"),
            &challenge("n3", true),
        ),
    );
    assert_eq!(sent(&mut endpoint).len(), 1, "only the ACK");
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::Failed { code: 401, .. }, SipEvent::Ended { call: ended, .. }] if *ended == call
    ));
}

#[test]
fn proxy_challenge_is_answered_with_proxy_authorization() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let call = endpoint
        .invite(now, outgoing(credentials()))
        .expect("invite");
    let invite = sent_one(&mut endpoint, callee());
    let challenge = "Proxy-Authenticate: Digest realm=\"proxy.example\", nonce=\"n0nce\"\r\n";
    feed(
        &mut endpoint,
        now,
        &reply(
            &invite,
            407,
            "Proxy Authentication Required",
            Some("p"),
            challenge,
        ),
    );
    let out = sent(&mut endpoint);
    assert_eq!(out.len(), 2, "{out:?}");
    let second = &out[1].1;
    assert_eq!(header(second, "CSeq"), "2 INVITE");
    assert!(headers(second, "Authorization").is_empty());
    let authorization = header(second, "Proxy-Authorization");
    assert_eq!(digest_param(authorization, "realm"), "proxy.example");
    // No qop in the challenge: RFC 2069 style response, no cnonce.
    let ha1 = md5_hex("bridge:proxy.example:s3cret");
    let ha2 = md5_hex("INVITE:sip:alice@192.0.2.9:5070");
    assert_eq!(
        digest_param(authorization, "response"),
        md5_hex(&format!("{ha1}:n0nce:{ha2}"))
    );
    assert!(!authorization.contains("cnonce"));

    // The proxy lets it through: the answer is reported as usual.
    let ok = reply_with_body(second, 200, "OK", Some("t"), CALLEE_CONTACT, ANSWER);
    feed(&mut endpoint, now, &ok);
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::Answered { call: answered, .. }] if *answered == call
    ));
}

#[test]
fn challenge_without_credentials_fails_the_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    let challenge = "WWW-Authenticate: Digest realm=\"sip.example\", nonce=\"n\"\r\n";
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 401, "Unauthorized", Some("c"), challenge),
    );
    assert_eq!(sent(&mut endpoint).len(), 1, "only the ACK");
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::Failed { code: 401, .. }, SipEvent::Ended { call: ended, .. }] if *ended == call
    ));
}

#[test]
fn hangup_after_ringing_cancels_and_487_fails_the_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 180, "Ringing", Some("callee-tag"), ""),
    );
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Progress { call, code: 180 }]
    );
    endpoint.hangup(now, call);
    let cancel = sent_one(&mut endpoint, callee());
    assert_eq!(
        start_line(&cancel),
        "CANCEL sip:alice@192.0.2.9:5070 SIP/2.0"
    );
    assert_eq!(header(&cancel, "Via"), header(&invite, "Via"));
    assert_eq!(header(&cancel, "CSeq"), "1 CANCEL");
    assert_eq!(header(&cancel, "To"), header(&invite, "To"));
    assert_eq!(header(&cancel, "From"), header(&invite, "From"));
    assert_eq!(events(&mut endpoint), vec![]);
    // A second hangup sends nothing more.
    endpoint.hangup(now, call);
    assert!(sent(&mut endpoint).is_empty());

    feed(
        &mut endpoint,
        now,
        &reply(&cancel, 200, "OK", Some("callee-tag"), ""),
    );
    assert!(sent(&mut endpoint).is_empty());
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 487, "Request Terminated", Some("callee-tag"), ""),
    );
    let ack = sent_one(&mut endpoint, callee());
    assert_eq!(start_line(&ack), "ACK sip:alice@192.0.2.9:5070 SIP/2.0");
    assert_eq!(branch(&ack), branch(&invite));
    assert_eq!(
        events(&mut endpoint),
        vec![
            SipEvent::Failed {
                call,
                code: 487,
                reason: "Request Terminated".to_owned()
            },
            SipEvent::Ended {
                call,
                reason: EndReason::Rejected
            }
        ]
    );
}

#[test]
fn hangup_before_any_provisional_cancels_once_one_arrives() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    endpoint.hangup(now, call);
    // RFC 3261 9.1: no CANCEL before a provisional response.
    assert!(sent(&mut endpoint).is_empty());
    feed(&mut endpoint, now, &reply(&invite, 100, "Trying", None, ""));
    let cancel = sent_one(&mut endpoint, callee());
    assert_eq!(
        start_line(&cancel),
        "CANCEL sip:alice@192.0.2.9:5070 SIP/2.0"
    );
    assert_eq!(branch(&cancel), branch(&invite));
}

#[test]
fn cancel_without_final_response_gives_up_after_64_t1() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (call, invite) = place_call(&mut endpoint, start);
    feed(
        &mut endpoint,
        start,
        &reply(&invite, 180, "Ringing", Some("t"), ""),
    );
    endpoint.hangup(start, call);
    let cancel = sent_one(&mut endpoint, callee());
    feed(
        &mut endpoint,
        start,
        &reply(&cancel, 200, "OK", Some("t"), ""),
    );
    let _ = events(&mut endpoint);
    endpoint.handle_timeout(start + 64 * T1);
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::Failed { code: 487, .. }, SipEvent::Ended { call: ended, reason: EndReason::Rejected }]
            if *ended == call
    ));
    assert_eq!(endpoint.stats().calls_in_use, 0);
}

#[test]
fn answer_crossing_our_cancel_is_acked_then_ended_with_bye() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 180, "Ringing", Some("t"), ""),
    );
    endpoint.hangup(now, call);
    let _cancel = sent_one(&mut endpoint, callee());
    let _ = events(&mut endpoint);
    let ok = reply_with_body(&invite, 200, "OK", Some("t"), CALLEE_CONTACT, ANSWER);
    feed(&mut endpoint, now, &ok);
    let out = sent(&mut endpoint);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        start_line(&out[0].1),
        "ACK sip:alice@192.0.2.9:5071 SIP/2.0"
    );
    let bye = &out[1].1;
    assert_eq!(start_line(bye), "BYE sip:alice@192.0.2.9:5071 SIP/2.0");
    assert_eq!(header(bye, "CSeq"), "2 BYE");
    // The call layer asked to hang up: no Answered, the end comes with the BYE's answer.
    assert_eq!(events(&mut endpoint), vec![]);
    feed(&mut endpoint, now, &reply(bye, 200, "OK", None, ""));
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::LocalBye
        }]
    );
}

#[test]
fn answer_from_a_second_fork_is_acked_and_ended() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = answered_call(&mut endpoint, now, "");
    let other_contact = "Contact: <sip:alice@192.0.2.10:5080>\r\n";
    let fork_ok = reply_with_body(&invite, 200, "OK", Some("fork-2"), other_contact, ANSWER);
    feed(&mut endpoint, now, &fork_ok);
    let fork: SocketAddr = "192.0.2.10:5080".parse().expect("addr");
    let out = sent(&mut endpoint);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, fork);
    assert_eq!(
        start_line(&out[0].1),
        "ACK sip:alice@192.0.2.10:5080 SIP/2.0"
    );
    assert_eq!(header(&out[0].1, "CSeq"), "1 ACK");
    assert_eq!(
        start_line(&out[1].1),
        "BYE sip:alice@192.0.2.10:5080 SIP/2.0"
    );
    assert!(header(&out[1].1, "To").ends_with(";tag=fork-2"));
    // The call itself is untouched.
    assert_eq!(events(&mut endpoint), vec![]);
    endpoint.hangup(now, call);
    let bye = sent_one(&mut endpoint, "192.0.2.9:5071".parse().expect("addr"));
    assert!(header(&bye, "To").ends_with(";tag=callee-tag"));
}

#[test]
fn bye_from_the_callee_gets_200_and_ends_the_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = answered_call(&mut endpoint, now, "");
    let our_tag = header(&invite, "From")
        .split(";tag=")
        .nth(1)
        .expect("our tag");
    let bye = format!(
        "BYE sip:1000@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.9:5071;branch=z9hG4bKbye1\r\n\
         From: <sip:alice@192.0.2.9:5070>;tag=callee-tag\r\n\
         To: {};tag={our_tag}\r\n\
         Call-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        header(&invite, "From").split(";tag=").next().expect("from"),
        header(&invite, "Call-ID"),
    );
    feed(&mut endpoint, now, &bye);
    let ok = sent_one(&mut endpoint, callee());
    assert_eq!(start_line(&ok), "SIP/2.0 200 OK");
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::RemoteBye
        }]
    );
}

#[test]
fn reinvite_from_the_callee_is_a_reoffer() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = answered_call(&mut endpoint, now, "");
    let our_tag = header(&invite, "From")
        .split(";tag=")
        .nth(1)
        .expect("our tag");
    let hold = ANSWER.replace("a=rtpmap", "a=sendonly\r\na=rtpmap");
    let reinvite = format!(
        "INVITE sip:1000@192.0.2.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.9:5071;branch=z9hG4bKre1\r\n\
         From: <sip:alice@192.0.2.9:5070>;tag=callee-tag\r\n\
         To: <sip:1000@bridge>;tag={our_tag}\r\n\
         Call-ID: {}\r\nCSeq: 2 INVITE\r\n{CALLEE_CONTACT}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{hold}",
        header(&invite, "Call-ID"),
        hold.len()
    );
    feed(&mut endpoint, now, &reinvite);
    assert_eq!(
        start_line(&sent_one(&mut endpoint, callee())),
        "SIP/2.0 100 Trying"
    );
    match events(&mut endpoint).as_slice() {
        [SipEvent::Reoffer {
            call: reoffered,
            offer,
        }] => {
            assert_eq!(*reoffered, call);
            assert!(offer.is_hold());
        }
        other => panic!("expected Reoffer, got {other:?}"),
    }
    endpoint.accept_reoffer(now, call, OFFER.to_owned());
    let ok = sent_one(&mut endpoint, callee());
    assert_eq!(start_line(&ok), "SIP/2.0 200 OK");
    assert_eq!(header(&ok, "Contact"), "<sip:1000@192.0.2.1:5060>");
}

#[test]
fn our_hangup_of_an_answered_call_sends_bye_along_the_route_set() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let record_route = "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n";
    let (call, invite) = answered_call(&mut endpoint, now, record_route);
    endpoint.hangup(now, call);
    // With a route set the next hop stays the one we sent the INVITE to.
    let bye = sent_one(&mut endpoint, callee());
    assert_eq!(start_line(&bye), "BYE sip:alice@192.0.2.9:5071 SIP/2.0");
    assert_eq!(
        headers(&bye, "Route"),
        vec!["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    );
    assert_eq!(header(&bye, "CSeq"), "2 BYE");
    assert_eq!(header(&bye, "From"), header(&invite, "From"));
    assert_eq!(
        header(&bye, "To"),
        "<sip:alice@192.0.2.9:5070>;tag=callee-tag"
    );
    assert_eq!(events(&mut endpoint), vec![]);
    feed(&mut endpoint, now, &reply(&bye, 200, "OK", None, ""));
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::LocalBye
        }]
    );
}

#[test]
fn answer_without_usable_sdp_is_acked_byed_and_failed() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(&invite, 200, "OK", Some("t"), CALLEE_CONTACT),
    );
    let out = sent(&mut endpoint);
    let methods: Vec<&str> = out.iter().map(|(_, m)| start_line(m)).collect();
    assert_eq!(
        methods,
        vec![
            "ACK sip:alice@192.0.2.9:5071 SIP/2.0",
            "BYE sip:alice@192.0.2.9:5071 SIP/2.0"
        ]
    );
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::Failed { code: 488, .. }, SipEvent::Ended { call: ended, reason: EndReason::Rejected }]
            if *ended == call
    ));
}

#[test]
fn invite_over_tcp_says_so_and_is_not_resent() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let tcp = OutgoingCall {
        transport: Transport::Tcp,
        ..outgoing(None)
    };
    endpoint.invite(start, tcp).expect("invite");
    let transmit = endpoint.poll_transmit().expect("INVITE");
    assert_eq!(transmit.transport, Transport::Tcp);
    let invite = String::from_utf8(transmit.bytes.to_vec()).expect("utf8");
    assert!(header(&invite, "Via").starts_with("SIP/2.0/TCP 192.0.2.1:5060;branch="));
    assert_eq!(
        header(&invite, "Contact"),
        "<sip:1000@192.0.2.1:5060;transport=tcp>"
    );
    // Reliable transport: no timer A, only timer B.
    assert_eq!(endpoint.poll_timeout(), Some(start + 64 * T1));
}

#[test]
fn full_call_table_refuses_new_calls() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    for _ in 0..4 {
        endpoint.invite(now, outgoing(None)).expect("room left");
    }
    assert_eq!(
        endpoint.invite(now, outgoing(None)),
        Err(InviteError::TableFull)
    );
}
