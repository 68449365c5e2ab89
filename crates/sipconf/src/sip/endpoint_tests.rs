//! Endpoint behaviour driven with literal SIP text and fake instants.

use super::*;
use crate::sip::session_timer::TimerSettings;
use crate::sip::source_guard::SourceLimits;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n\
    m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const ANSWER: &str =
    "v=0\r\no=sipconf 1 1 IN IP4 192.0.2.1\r\ns=sipconf\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
    m=audio 20000 RTP/AVP 0 101\r\na=sendrecv\r\n";
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

fn phone() -> SocketAddr {
    "192.0.2.7:5062".parse().expect("addr")
}

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        local_addr: "192.0.2.1:5060".parse().expect("addr"),
        user_agent: "sipconf-test".to_owned(),
        max_transactions: 16,
        max_dialogs: 4,
        t1: T1,
        t2: T2,
        session_timer: TimerSettings::default(),
        limits: SourceLimits::default(),
        limit_stats: Arc::default(),
        tls_port: Some(5061),
    })
}

/// A request from the phone. `to_tag` makes it in-dialog.
fn request(method: &str, branch: &str, cseq: u32, to_tag: Option<&str>, body: &str) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let content_type = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".to_owned()
    };
    format!(
        "{method} sip:1000@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Alice\" <sip:alice@192.0.2.7>;tag=alice-tag\r\n\
         To: <sip:1000@192.0.2.1>{to_tag}\r\n\
         Call-ID: call-1@192.0.2.7\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@192.0.2.7:5062>\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn feed(endpoint: &mut Endpoint, now: Instant, text: &str) {
    endpoint.handle_datagram(now, Transport::Udp, phone(), text.as_bytes());
}

fn sent(endpoint: &mut Endpoint) -> Vec<String> {
    std::iter::from_fn(|| endpoint.poll_transmit())
        .map(|t| {
            assert_eq!(t.destination, phone());
            String::from_utf8(t.bytes.to_vec()).expect("utf8")
        })
        .collect()
}

fn events(endpoint: &mut Endpoint) -> Vec<SipEvent> {
    std::iter::from_fn(|| endpoint.poll_event()).collect()
}

fn status_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

fn to_tag(message: &str) -> String {
    let to = message
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("To header");
    to.split(";tag=").nth(1).expect("to tag").to_owned()
}

/// INVITE, 100, IncomingCall; returns the call.
fn incoming_call(endpoint: &mut Endpoint, now: Instant) -> CallKey {
    feed(endpoint, now, &request("INVITE", "inv1", 1, None, OFFER));
    let out = sent(endpoint);
    assert_eq!(out.len(), 1);
    assert_eq!(status_line(&out[0]), "SIP/2.0 100 Trying");
    match events(endpoint).as_slice() {
        [SipEvent::IncomingCall { call, .. }] => *call,
        other => panic!("expected IncomingCall, got {other:?}"),
    }
}

/// Up to the confirmed state; returns the call and our To tag.
fn confirmed_call(endpoint: &mut Endpoint, now: Instant) -> (CallKey, String) {
    let call = incoming_call(endpoint, now);
    endpoint.accept(now, call, ANSWER.to_owned());
    let ok = sent(endpoint).remove(0);
    let tag = to_tag(&ok);
    feed(endpoint, now, &request("ACK", "ack1", 1, Some(&tag), ""));
    assert_eq!(events(endpoint), vec![SipEvent::Confirmed { call }]);
    (call, tag)
}

#[test]
fn invite_gets_100_trying_and_incoming_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    feed(
        &mut endpoint,
        now,
        &request("INVITE", "inv1", 1, None, OFFER),
    );
    let out = sent(&mut endpoint);
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with("SIP/2.0 100 Trying\r\n"));
    assert!(out[0].contains("received=192.0.2.7"));
    assert!(out[0].contains("rport=5062"));
    match events(&mut endpoint).as_slice() {
        [SipEvent::IncomingCall {
            user,
            from,
            to,
            offer,
            source,
            transport,
            ..
        }] => {
            assert_eq!(user, "1000");
            assert_eq!(from, "sip:alice@192.0.2.7");
            assert_eq!(to, "sip:1000@192.0.2.1");
            assert_eq!(offer.telephone_event_pt, Some(101));
            assert_eq!(*source, phone());
            assert_eq!(*transport, Transport::Udp);
        }
        other => panic!("expected IncomingCall, got {other:?}"),
    }
}

#[test]
fn accepted_200_is_retransmitted_doubling_to_t2_until_ack() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let call = incoming_call(&mut endpoint, start);
    endpoint.ring(start, call);
    assert_eq!(status_line(&sent(&mut endpoint)[0]), "SIP/2.0 180 Ringing");
    endpoint.accept(start, call, ANSWER.to_owned());
    let ok = sent(&mut endpoint).remove(0);
    assert_eq!(status_line(&ok), "SIP/2.0 200 OK");
    assert!(ok.contains("Content-Type: application/sdp\r\n"));
    assert!(ok.contains("Contact: <sip:1000@192.0.2.1:5060>\r\n"));
    assert!(ok.ends_with(ANSWER));

    let mut resent_at = Vec::new();
    for _ in 0..6 {
        let at = endpoint.poll_timeout().expect("timer");
        endpoint.handle_timeout(at);
        let out = sent(&mut endpoint);
        assert_eq!(out, vec![ok.clone()]);
        resent_at.push(at - start);
    }
    let ms = |n| Duration::from_millis(n);
    assert_eq!(
        resent_at,
        vec![ms(500), ms(1500), ms(3500), ms(7500), ms(11500), ms(15500)]
    );

    let tag = to_tag(&ok);
    feed(
        &mut endpoint,
        start + ms(16000),
        &request("ACK", "ack1", 1, Some(&tag), ""),
    );
    assert_eq!(events(&mut endpoint), vec![SipEvent::Confirmed { call }]);
    // Only transaction cleanup timers remain: nothing more is sent.
    while let Some(at) = endpoint.poll_timeout() {
        endpoint.handle_timeout(at);
        assert!(sent(&mut endpoint).is_empty());
    }
}

#[test]
fn no_ack_within_64_t1_sends_bye_and_ends_with_ack_timeout() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let call = incoming_call(&mut endpoint, start);
    endpoint.accept(start, call, ANSWER.to_owned());
    sent(&mut endpoint);
    let deadline = start + T1 * 64;
    endpoint.handle_timeout(deadline);
    let out = sent(&mut endpoint);
    let bye = out.last().expect("BYE");
    assert!(bye.starts_with("BYE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"));
    assert!(bye.contains("CSeq: 1 BYE\r\n"));
    assert!(bye.contains("To: \"Alice\" <sip:alice@192.0.2.7>;tag=alice-tag\r\n"));
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::AckTimeout
        }]
    );
    assert_eq!(endpoint.stats().calls_in_use, 0);
}

#[test]
fn invite_retransmission_is_absorbed() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let call = incoming_call(&mut endpoint, now);
    let invite = request("INVITE", "inv1", 1, None, OFFER);
    feed(&mut endpoint, now, &invite);
    assert_eq!(status_line(&sent(&mut endpoint)[0]), "SIP/2.0 100 Trying");
    assert!(events(&mut endpoint).is_empty());

    endpoint.accept(now, call, ANSWER.to_owned());
    let ok = sent(&mut endpoint).remove(0);
    feed(&mut endpoint, now, &invite);
    assert_eq!(sent(&mut endpoint), vec![ok]);
    assert!(events(&mut endpoint).is_empty());
    assert_eq!(endpoint.stats().calls_in_use, 1);
}

#[test]
fn cancel_before_answer_gets_200_and_487() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let call = incoming_call(&mut endpoint, now);
    feed(&mut endpoint, now, &request("CANCEL", "inv1", 1, None, ""));
    let out = sent(&mut endpoint);
    assert_eq!(out.len(), 2);
    assert_eq!(status_line(&out[0]), "SIP/2.0 200 OK");
    assert!(out[0].contains("CSeq: 1 CANCEL"));
    assert_eq!(status_line(&out[1]), "SIP/2.0 487 Request Terminated");
    assert!(out[1].contains("CSeq: 1 INVITE"));
    assert_eq!(
        events(&mut endpoint),
        vec![
            SipEvent::Cancelled { call },
            SipEvent::Ended {
                call,
                reason: EndReason::Cancelled
            }
        ]
    );
    // 487 is retransmitted until the ACK (same branch as the INVITE) arrives.
    endpoint.handle_timeout(now + T1);
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 487 Request Terminated"
    );
    let tag = to_tag(&out[1]);
    feed(
        &mut endpoint,
        now + T1,
        &request("ACK", "inv1", 1, Some(&tag), ""),
    );
    endpoint.handle_timeout(now + T1 * 3);
    assert!(sent(&mut endpoint).is_empty());
}

#[test]
fn cancel_for_unknown_invite_gets_481() {
    let mut endpoint = endpoint();
    feed(
        &mut endpoint,
        Instant::now(),
        &request("CANCEL", "nope", 1, None, ""),
    );
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
}

#[test]
fn bye_from_caller_gets_200_and_ends_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag) = confirmed_call(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &request("BYE", "bye1", 2, Some(&tag), ""),
    );
    let out = sent(&mut endpoint);
    assert_eq!(out.len(), 1);
    assert_eq!(status_line(&out[0]), "SIP/2.0 200 OK");
    assert_eq!(to_tag(&out[0]), tag);
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::RemoteBye
        }]
    );
    // A retransmitted BYE is answered again from its transaction, without a new event.
    feed(
        &mut endpoint,
        now,
        &request("BYE", "bye1", 2, Some(&tag), ""),
    );
    assert_eq!(status_line(&sent(&mut endpoint)[0]), "SIP/2.0 200 OK");
    assert!(events(&mut endpoint).is_empty());
}

#[test]
fn bye_for_unknown_dialog_gets_481() {
    let mut endpoint = endpoint();
    feed(
        &mut endpoint,
        Instant::now(),
        &request("BYE", "b", 2, Some("nobody"), ""),
    );
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
}

#[test]
fn hangup_sends_bye_retransmitted_until_200() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag) = confirmed_call(&mut endpoint, now);
    endpoint.hangup(now, call);
    let bye = sent(&mut endpoint).remove(0);
    assert!(bye.starts_with("BYE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"));
    assert!(bye.contains(&format!("From: <sip:1000@192.0.2.1>;tag={tag}\r\n")));
    endpoint.handle_timeout(now + T1);
    assert_eq!(sent(&mut endpoint), vec![bye.clone()]);
    assert!(events(&mut endpoint).is_empty());

    let via = bye
        .lines()
        .find(|l| l.starts_with("Via:"))
        .expect("via")
        .to_owned();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{via}\r\nFrom: <sip:1000@192.0.2.1>;tag={tag}\r\n\
         To: \"Alice\" <sip:alice@192.0.2.7>;tag=alice-tag\r\nCall-ID: call-1@192.0.2.7\r\n\
         CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    feed(&mut endpoint, now + T1, &ok);
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::LocalBye
        }]
    );
    endpoint.handle_timeout(now + T1 * 10);
    assert!(sent(&mut endpoint).is_empty());
}

#[test]
fn unanswered_bye_ends_call_at_timer_f() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, _) = confirmed_call(&mut endpoint, now);
    endpoint.hangup(now, call);
    sent(&mut endpoint);
    endpoint.handle_timeout(now + T1 * 64);
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::LocalBye
        }]
    );
}

#[test]
fn reinvite_sendonly_is_reported_as_hold_reoffer() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag) = confirmed_call(&mut endpoint, now);
    let hold = OFFER.replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
    feed(
        &mut endpoint,
        now,
        &request("INVITE", "inv2", 2, Some(&tag), &hold),
    );
    assert_eq!(status_line(&sent(&mut endpoint)[0]), "SIP/2.0 100 Trying");
    let offer = match events(&mut endpoint).as_slice() {
        [SipEvent::Reoffer { call: c, offer }] if *c == call => offer.clone(),
        other => panic!("expected Reoffer, got {other:?}"),
    };
    assert_eq!(offer.direction, sdp::Direction::SendOnly);
    assert!(offer.is_hold());

    let answer = ANSWER.replace("sendrecv", "recvonly");
    endpoint.accept_reoffer(now, call, answer.clone());
    let ok = sent(&mut endpoint).remove(0);
    assert_eq!(status_line(&ok), "SIP/2.0 200 OK");
    assert!(ok.contains("CSeq: 2 INVITE"));
    assert!(ok.ends_with(&answer));
    feed(
        &mut endpoint,
        now,
        &request("ACK", "ack2", 2, Some(&tag), ""),
    );
    // The 200 was a session refresh; the re-INVITE's ACK stops retransmission
    // but does not confirm the call again.
    assert_eq!(events(&mut endpoint), vec![SipEvent::Refreshed { call }]);
    endpoint.handle_timeout(now + T1);
    assert!(sent(&mut endpoint).is_empty());
}

#[test]
fn update_with_offer_is_reported_and_answered() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag) = confirmed_call(&mut endpoint, now);
    let inactive = OFFER.replace("a=rtpmap:101", "a=inactive\r\na=rtpmap:101");
    feed(
        &mut endpoint,
        now,
        &request("UPDATE", "upd1", 2, Some(&tag), &inactive),
    );
    assert!(sent(&mut endpoint).is_empty());
    match events(&mut endpoint).as_slice() {
        [SipEvent::Reoffer { offer, .. }] => {
            assert_eq!(offer.direction, sdp::Direction::Inactive)
        }
        other => panic!("expected Reoffer, got {other:?}"),
    }
    endpoint.accept_reoffer(now, call, ANSWER.replace("sendrecv", "inactive"));
    let ok = sent(&mut endpoint).remove(0);
    assert_eq!(status_line(&ok), "SIP/2.0 200 OK");
    assert!(ok.contains("CSeq: 2 UPDATE"));
    assert!(ok.contains("a=inactive"));
}

#[test]
fn rejected_reoffer_keeps_the_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag) = confirmed_call(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &request("INVITE", "inv2", 2, Some(&tag), OFFER),
    );
    sent(&mut endpoint);
    events(&mut endpoint);
    endpoint.reject_reoffer(now, call, 488, "Not Acceptable Here");
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 488 Not Acceptable Here"
    );
    assert_eq!(endpoint.stats().calls_in_use, 1);
}

#[test]
fn reject_sends_final_response_and_ends_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let call = incoming_call(&mut endpoint, now);
    endpoint.reject(now, call, 486, "Busy Here");
    let busy = sent(&mut endpoint).remove(0);
    assert_eq!(status_line(&busy), "SIP/2.0 486 Busy Here");
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::Rejected
        }]
    );
    endpoint.handle_timeout(now + T1);
    assert_eq!(sent(&mut endpoint), vec![busy]);
}

#[test]
fn options_gets_200_with_allow_accept_supported() {
    let mut endpoint = endpoint();
    feed(
        &mut endpoint,
        Instant::now(),
        &request("OPTIONS", "opt1", 1, None, ""),
    );
    let ok = sent(&mut endpoint).remove(0);
    assert_eq!(status_line(&ok), "SIP/2.0 200 OK");
    assert!(ok.contains("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n"));
    assert!(ok.contains("Accept: application/sdp\r\n"));
    assert!(ok.contains("Supported: timer\r\n"));
    assert!(ok.contains("Server: sipconf-test\r\n"));
}

#[test]
fn register_gets_405_and_unknown_method_501() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    feed(&mut endpoint, now, &request("REGISTER", "r1", 1, None, ""));
    let out = sent(&mut endpoint).remove(0);
    assert_eq!(status_line(&out), "SIP/2.0 405 Method Not Allowed");
    assert!(out.contains("Allow: INVITE"));
    feed(&mut endpoint, now, &request("FOO", "f1", 1, None, ""));
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 501 Not Implemented"
    );
}

#[test]
fn missing_call_id_gets_400_naming_it() {
    let mut endpoint = endpoint();
    let text = request("OPTIONS", "o1", 1, None, "").replace("Call-ID: call-1@192.0.2.7\r\n", "");
    feed(&mut endpoint, Instant::now(), &text);
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 400 Missing Call-ID header"
    );
    assert_eq!(endpoint.stats().malformed_total, 1);
}

#[test]
fn content_length_mismatch_gets_400() {
    let mut endpoint = endpoint();
    let text =
        request("INVITE", "i1", 1, None, OFFER).replace("Content-Length: ", "Content-Length: 9");
    feed(&mut endpoint, Instant::now(), &text);
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 400 Content-Length mismatch"
    );
    assert!(events(&mut endpoint).is_empty());
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let invite = request("INVITE", "g", 1, None, OFFER);
    let inputs: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\x00\x01\x02\xff".to_vec(),
        b"hello world\r\n\r\n".to_vec(),
        vec![b'A'; 70_000],
    ];
    for input in inputs {
        endpoint.handle_datagram(now, Transport::Udp, phone(), &input);
    }
    for cut in 0..invite.len() {
        endpoint.handle_datagram(now, Transport::Udp, phone(), &invite.as_bytes()[..cut]);
    }
    for out in sent(&mut endpoint) {
        assert!(out.starts_with("SIP/2.0 400") || out.starts_with("SIP/2.0 100"));
    }
    assert!(endpoint.stats().malformed_total >= 4);
}

#[test]
fn compact_header_names_work() {
    let mut endpoint = endpoint();
    let text = format!(
        "INVITE sip:1000@192.0.2.1 SIP/2.0\r\n\
         v: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKcompact\r\n\
         f: <sip:alice@192.0.2.7>;tag=a\r\n\
         t: <sip:1000@192.0.2.1>\r\n\
         i: compact@192.0.2.7\r\n\
         CSeq: 1 INVITE\r\n\
         m: <sip:alice@192.0.2.7:5062>\r\n\
         c: application/sdp\r\n\
         l: {}\r\n\r\n{OFFER}",
        OFFER.len()
    );
    feed(&mut endpoint, Instant::now(), &text);
    assert_eq!(status_line(&sent(&mut endpoint)[0]), "SIP/2.0 100 Trying");
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::IncomingCall { .. }]
    ));
}

#[test]
fn full_transaction_table_answers_503_and_keeps_nothing() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    // 16 transactions, the last 2 (an eighth) kept for requests within calls.
    for i in 0..14 {
        feed(
            &mut endpoint,
            now,
            &request("OPTIONS", &format!("o{i}"), 1, None, ""),
        );
    }
    assert_eq!(endpoint.stats().transactions_in_use, 14);
    sent(&mut endpoint);
    feed(
        &mut endpoint,
        now,
        &request("INVITE", "late", 1, None, OFFER),
    );
    let out = sent(&mut endpoint).remove(0);
    assert_eq!(status_line(&out), "SIP/2.0 503 Service Unavailable");
    assert!(out.contains("Retry-After: 5\r\n"));
    assert!(events(&mut endpoint).is_empty());
    assert_eq!(endpoint.stats().transactions_in_use, 14);
    assert_eq!(endpoint.stats().overload_rejections_total, 1);
    // Timer J frees the table again.
    endpoint.handle_timeout(now + T1 * 64);
    assert_eq!(endpoint.stats().transactions_in_use, 0);
}

/// New calls fill the table to its last eighth; a call that is up can still
/// hang up, and only then is the table full for it too.
#[test]
fn a_call_that_is_up_can_hang_up_when_new_requests_get_503() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag) = confirmed_call(&mut endpoint, now);
    let mut refused = None;
    for i in 0..16 {
        feed(
            &mut endpoint,
            now,
            &request("OPTIONS", &format!("o{i}"), 1, None, ""),
        );
        if status_line(&sent(&mut endpoint)[0]) == "SIP/2.0 503 Service Unavailable" {
            refused = Some(i);
            break;
        }
    }
    assert!(
        refused.is_some(),
        "new requests are refused before the table is full"
    );
    assert_eq!(endpoint.stats().transactions_in_use, 14);
    feed(
        &mut endpoint,
        now,
        &request("BYE", "bye1", 2, Some(&tag), ""),
    );
    assert_eq!(status_line(&sent(&mut endpoint)[0]), "SIP/2.0 200 OK");
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::RemoteBye
        }]
    );
}

#[test]
fn dialog_limit_answers_503() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    for i in 0..4 {
        let text = request("INVITE", &format!("i{i}"), 1, None, OFFER)
            .replace("call-1@", &format!("call-{i}@"));
        feed(&mut endpoint, now, &text);
    }
    sent(&mut endpoint);
    feed(
        &mut endpoint,
        now,
        &request("INVITE", "i9", 1, None, OFFER).replace("call-1@", "call-9@"),
    );
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 503 Service Unavailable"
    );
}

#[test]
fn bad_sdp_gets_488_and_no_call() {
    let mut endpoint = endpoint();
    let offer = OFFER.replace("m=audio", "m=video");
    feed(
        &mut endpoint,
        Instant::now(),
        &request("INVITE", "v", 1, None, &offer),
    );
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 488 Not Acceptable Here (no active audio m= line)"
    );
    assert!(events(&mut endpoint).is_empty());
}

#[test]
fn tcp_bye_is_not_retransmitted() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let invite = request("INVITE", "tcp1", 1, None, OFFER).replace("UDP", "TCP");
    endpoint.handle_datagram(now, Transport::Tcp, phone(), invite.as_bytes());
    let call = match events(&mut endpoint).as_slice() {
        [SipEvent::IncomingCall {
            call, transport, ..
        }] => {
            assert_eq!(*transport, Transport::Tcp);
            *call
        }
        other => panic!("expected IncomingCall, got {other:?}"),
    };
    endpoint.accept(now, call, ANSWER.to_owned());
    let ok = sent(&mut endpoint).remove(1);
    assert!(ok.contains("Contact: <sip:1000@192.0.2.1:5060;transport=tcp>"));
    let ack = request("ACK", "tcpack", 1, Some(&to_tag(&ok)), "").replace("UDP", "TCP");
    endpoint.handle_datagram(now, Transport::Tcp, phone(), ack.as_bytes());
    endpoint.hangup(now, call);
    let bye = sent(&mut endpoint).remove(0);
    assert!(bye.contains("Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK"));
    endpoint.handle_timeout(now + T1 * 2);
    assert!(sent(&mut endpoint).is_empty());
}

#[test]
fn a_call_over_tls_is_answered_with_our_tls_port_in_contact_and_via() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let invite = request("INVITE", "tls1", 1, None, OFFER)
        .replace("UDP", "TLS")
        .replace(
            "INVITE sip:1000@192.0.2.1 ",
            "INVITE sips:1000@192.0.2.1:5061 ",
        );
    endpoint.handle_datagram(now, Transport::Tls, phone(), invite.as_bytes());
    let call = match events(&mut endpoint).as_slice() {
        [SipEvent::IncomingCall {
            call, transport, ..
        }] => {
            assert_eq!(*transport, Transport::Tls);
            *call
        }
        other => panic!("expected IncomingCall, got {other:?}"),
    };
    endpoint.accept(now, call, ANSWER.to_owned());
    let ok = sent(&mut endpoint).remove(1);
    assert!(
        ok.contains("Contact: <sip:1000@192.0.2.1:5061;transport=tls>"),
        "{ok}"
    );
    let ack = request("ACK", "tlsack", 1, Some(&to_tag(&ok)), "").replace("UDP", "TLS");
    endpoint.handle_datagram(now, Transport::Tls, phone(), ack.as_bytes());
    endpoint.hangup(now, call);
    let bye = sent(&mut endpoint).remove(0);
    assert!(
        bye.contains("Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK"),
        "{bye}"
    );
    // TLS is reliable: no retransmission.
    endpoint.handle_timeout(now + T1 * 2);
    assert!(sent(&mut endpoint).is_empty());
}

#[test]
fn tel_request_uri_gets_416() {
    let mut endpoint = endpoint();
    let text = request("INVITE", "tel", 1, None, OFFER).replace(
        "INVITE sip:1000@192.0.2.1 SIP/2.0",
        "INVITE tel:+15551000 SIP/2.0",
    );
    feed(&mut endpoint, Instant::now(), &text);
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 416 Unsupported URI Scheme"
    );
    assert!(events(&mut endpoint).is_empty());
}

#[test]
fn ipv6_via_is_answered_with_received() {
    let mut endpoint = endpoint();
    let source: SocketAddr = "[2001:db8::7]:5062".parse().expect("addr");
    let text = request("OPTIONS", "v6", 1, None, "")
        .replace("192.0.2.7:5062;branch", "[2001:db8::7]:5062;branch");
    endpoint.handle_datagram(Instant::now(), Transport::Udp, source, text.as_bytes());
    let out = endpoint.poll_transmit().expect("answer");
    assert_eq!(out.destination, source);
    let text = String::from_utf8(out.bytes.to_vec()).expect("utf8");
    assert!(
        text.contains("Via: SIP/2.0/UDP [2001:db8::7]:5062;branch=z9hG4bKv6;rport=5062;received=2001:db8::7\r\n"),
        "{text}"
    );
}

#[test]
fn mutated_messages_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3261);
    let mut endpoint = endpoint();
    let now = Instant::now();
    let seeds = [
        request("INVITE", "m", 1, None, OFFER),
        request("BYE", "m", 2, Some("x"), ""),
        request("OPTIONS", "m", 1, None, ""),
    ];
    for round in 0..3000 {
        let mut bytes = seeds[round % seeds.len()].clone().into_bytes();
        for _ in 0..rng.random_range(1..8) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..3) {
                0 => bytes[at] = rng.random(),
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(
                    at,
                    *b":;,<>\r\n \"@="
                        .get(rng.random_range(0..12))
                        .unwrap_or(&b'x'),
                ),
            }
        }
        endpoint.handle_datagram(now, Transport::Udp, phone(), &bytes);
        while endpoint.poll_transmit().is_some() {}
        while endpoint.poll_event().is_some() {}
    }
    endpoint.handle_timeout(now + T1 * 64);
}

#[test]
fn cancelled_reinvite_gets_487_and_keeps_the_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag) = confirmed_call(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &request("INVITE", "inv2", 2, Some(&tag), OFFER),
    );
    sent(&mut endpoint);
    events(&mut endpoint);
    feed(
        &mut endpoint,
        now,
        &request("CANCEL", "inv2", 2, Some(&tag), ""),
    );
    let out = sent(&mut endpoint);
    assert_eq!(status_line(&out[0]), "SIP/2.0 200 OK");
    assert_eq!(status_line(&out[1]), "SIP/2.0 487 Request Terminated");
    endpoint.accept_reoffer(now, call, ANSWER.to_owned());
    assert!(sent(&mut endpoint).is_empty());
    assert!(events(&mut endpoint).is_empty());
    assert_eq!(endpoint.stats().calls_in_use, 1);
}

#[test]
fn unanswered_call_is_refused_with_480() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let call = incoming_call(&mut endpoint, now);
    assert_eq!(endpoint.poll_timeout(), Some(now + UNANSWERED_CALL_TIMEOUT));
    endpoint.handle_timeout(now + UNANSWERED_CALL_TIMEOUT);
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 480 Temporarily Unavailable"
    );
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::Rejected
        }]
    );
}

#[test]
fn unanswered_reoffer_is_refused_and_call_stays() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, tag) = confirmed_call(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &request("UPDATE", "u", 2, Some(&tag), OFFER),
    );
    events(&mut endpoint);
    endpoint.handle_timeout(now + T1 * 64);
    assert_eq!(
        status_line(&sent(&mut endpoint)[0]),
        "SIP/2.0 500 Offer Not Answered"
    );
    assert_eq!(endpoint.stats().calls_in_use, 1);
}
