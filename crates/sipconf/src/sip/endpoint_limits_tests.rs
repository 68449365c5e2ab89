//! The per-source limits as the endpoint applies them, driven with literal
//! SIP from two sources and fake instants.

use super::*;
use crate::sip::source_guard::Cidr;
use crate::sip::source_guard::{LimitStats, SourceLimits};
use std::sync::atomic::Ordering;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n\
    m=audio 4000 RTP/AVP 0\r\n";
const ANSWER: &str = "v=0\r\no=sipconf 1 1 IN IP4 192.0.2.1\r\ns=sipconf\r\n\
    c=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0\r\n";

/// A source flooding the bridge, and a phone that is not.
fn flooder() -> SocketAddr {
    "198.51.100.66:5060".parse().expect("addr")
}

fn phone() -> SocketAddr {
    "192.0.2.7:5062".parse().expect("addr")
}

fn endpoint(limits: SourceLimits) -> (Endpoint, Arc<LimitStats>) {
    let stats = Arc::new(LimitStats::default());
    let config = EndpointConfig {
        max_transactions: 256,
        max_dialogs: 64,
        limits,
        limit_stats: Arc::clone(&stats),
        ..EndpointConfig::new("192.0.2.1:5060".parse().expect("addr"))
    };
    (Endpoint::new(config), stats)
}

/// A request from `source`; `call_id` tells calls apart, `to_tag` makes it
/// in-dialog.
fn request(source: SocketAddr, method: &str, call_id: &str, to_tag: Option<&str>) -> String {
    let body = if method == "INVITE" { OFFER } else { "" };
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:1000@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {source};branch=z9hG4bK{call_id}{method};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller@{source}>;tag=from-{call_id}\r\n\
         To: <sip:1000@192.0.2.1>{to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:caller@{source}>\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn feed(endpoint: &mut Endpoint, now: Instant, source: SocketAddr, text: &str) {
    endpoint.handle_datagram(now, Transport::Udp, source, text.as_bytes());
}

/// The status lines sent to `source` (everything sent is taken out).
fn answers_to(endpoint: &mut Endpoint, source: SocketAddr) -> Vec<String> {
    std::iter::from_fn(|| endpoint.poll_transmit())
        .filter(|t| t.destination == source)
        .map(|t| {
            let text = String::from_utf8(t.bytes.to_vec()).expect("utf8");
            text.lines().next().unwrap_or_default().to_owned()
        })
        .collect()
}

fn incoming_calls(endpoint: &mut Endpoint) -> Vec<CallKey> {
    std::iter::from_fn(|| endpoint.poll_event())
        .filter_map(|event| match event {
            SipEvent::IncomingCall { call, .. } => Some(call),
            _ => None,
        })
        .collect()
}

#[test]
fn invites_never_acked_are_capped_per_source_and_another_caller_gets_in() {
    let (mut endpoint, stats) = endpoint(SourceLimits {
        pending_invites_per_ip: 3,
        pending_invites: 8,
        ..SourceLimits::default()
    });
    let now = Instant::now();
    for n in 0..10 {
        feed(
            &mut endpoint,
            now,
            flooder(),
            &request(flooder(), "INVITE", &format!("flood{n}"), None),
        );
    }
    let calls = incoming_calls(&mut endpoint);
    assert_eq!(calls.len(), 3, "three may wait for their ACK");
    for call in &calls {
        endpoint.accept(now, *call, ANSWER.to_owned());
    }
    let answers = answers_to(&mut endpoint, flooder());
    assert_eq!(
        answers
            .iter()
            .filter(|a| *a == "SIP/2.0 503 Service Unavailable")
            .count(),
        7
    );
    assert_eq!(stats.over_pending_invites.load(Ordering::Relaxed), 7);

    // Answered but never ACKed, they still count; the phone is not held up.
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "INVITE", "flood10", None),
    );
    assert_eq!(
        answers_to(&mut endpoint, flooder()),
        vec!["SIP/2.0 503 Service Unavailable"]
    );
    feed(
        &mut endpoint,
        now,
        phone(),
        &request(phone(), "INVITE", "alice", None),
    );
    assert_eq!(
        answers_to(&mut endpoint, phone()),
        vec!["SIP/2.0 100 Trying"]
    );
    assert_eq!(incoming_calls(&mut endpoint).len(), 1);

    // After 64 x T1 without ACK the flood's calls end and their places free up.
    let later = now + Duration::from_secs(33);
    endpoint.handle_timeout(later);
    feed(
        &mut endpoint,
        later,
        flooder(),
        &request(flooder(), "INVITE", "flood11", None),
    );
    assert_eq!(incoming_calls(&mut endpoint).len(), 1);
}

#[test]
fn the_503_says_when_to_retry_and_keeps_no_transaction() {
    let (mut endpoint, _) = endpoint(SourceLimits {
        pending_invites_per_ip: 1,
        ..SourceLimits::default()
    });
    let now = Instant::now();
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "INVITE", "one", None),
    );
    let _ = answers_to(&mut endpoint, flooder());
    let before = endpoint.stats().transactions_in_use;
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "INVITE", "two", None),
    );
    let refusal = std::iter::from_fn(|| endpoint.poll_transmit())
        .map(|t| String::from_utf8(t.bytes.to_vec()).expect("utf8"))
        .next()
        .expect("a 503");
    assert!(
        refusal.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "{refusal}"
    );
    assert!(refusal.contains("\r\nRetry-After: 5\r\n"), "{refusal}");
    assert_eq!(endpoint.stats().transactions_in_use, before);
}

#[test]
fn the_total_cap_holds_across_sources() {
    let (mut endpoint, _) = endpoint(SourceLimits {
        pending_invites_per_ip: 2,
        pending_invites: 3,
        ..SourceLimits::default()
    });
    let now = Instant::now();
    for n in 0..2 {
        feed(
            &mut endpoint,
            now,
            flooder(),
            &request(flooder(), "INVITE", &format!("f{n}"), None),
        );
        feed(
            &mut endpoint,
            now,
            phone(),
            &request(phone(), "INVITE", &format!("p{n}"), None),
        );
    }
    assert_eq!(incoming_calls(&mut endpoint).len(), 3);
    assert_eq!(
        answers_to(&mut endpoint, phone()),
        vec!["SIP/2.0 100 Trying", "SIP/2.0 503 Service Unavailable"]
    );
}

#[test]
fn an_acked_call_no_longer_counts_as_pending() {
    let (mut endpoint, _) = endpoint(SourceLimits {
        pending_invites_per_ip: 1,
        ..SourceLimits::default()
    });
    let now = Instant::now();
    for n in 0..3 {
        let call_id = format!("call{n}");
        feed(
            &mut endpoint,
            now,
            phone(),
            &request(phone(), "INVITE", &call_id, None),
        );
        let [call] = incoming_calls(&mut endpoint)[..] else {
            panic!("call {n} was not let in");
        };
        endpoint.accept(now, call, ANSWER.to_owned());
        let tag = endpoint.dialog(call).expect("dialog").id.local_tag.clone();
        feed(
            &mut endpoint,
            now,
            phone(),
            &request(phone(), "ACK", &call_id, Some(&tag)),
        );
        let _ = answers_to(&mut endpoint, phone());
    }
}

#[test]
fn a_source_over_its_rate_is_dropped_silently_but_its_calls_can_hang_up() {
    let (mut endpoint, stats) = endpoint(SourceLimits {
        requests_per_s: 1,
        request_burst: 2,
        ..SourceLimits::default()
    });
    let now = Instant::now();
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "INVITE", "up", None),
    );
    let [call] = incoming_calls(&mut endpoint)[..] else {
        panic!("the first INVITE is let in");
    };
    endpoint.accept(now, call, ANSWER.to_owned());
    let tag = endpoint.dialog(call).expect("dialog").id.local_tag.clone();
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "ACK", "up", Some(&tag)),
    );
    for n in 0..20 {
        feed(
            &mut endpoint,
            now,
            flooder(),
            &request(flooder(), "OPTIONS", &format!("o{n}"), None),
        );
    }
    let answers = answers_to(&mut endpoint, flooder());
    assert_eq!(
        answers,
        vec!["SIP/2.0 100 Trying", "SIP/2.0 200 OK", "SIP/2.0 200 OK"],
        "the INVITE and one OPTIONS take the burst of 2 (the 200 OK before is the INVITE's)"
    );
    assert_eq!(stats.over_rate.load(Ordering::Relaxed), 19);
    // The bucket is empty, yet the BYE of the call that is up goes through.
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "BYE", "up", Some(&tag)),
    );
    assert_eq!(answers_to(&mut endpoint, flooder()), vec!["SIP/2.0 200 OK"]);
    // A BYE naming a dialog that does not exist is screened like any request.
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "BYE", "nocall", Some("x")),
    );
    assert!(answers_to(&mut endpoint, flooder()).is_empty());
    // Another source has its own bucket.
    feed(
        &mut endpoint,
        now,
        phone(),
        &request(phone(), "OPTIONS", "ping", None),
    );
    assert_eq!(answers_to(&mut endpoint, phone()), vec!["SIP/2.0 200 OK"]);
}

#[test]
fn options_over_the_source_share_of_transactions_go_unanswered_until_they_end() {
    let (mut endpoint, stats) = endpoint(SourceLimits {
        transactions_per_ip: 4,
        ..SourceLimits::default()
    });
    let now = Instant::now();
    for n in 0..10 {
        feed(
            &mut endpoint,
            now,
            flooder(),
            &request(flooder(), "OPTIONS", &format!("o{n}"), None),
        );
    }
    assert_eq!(answers_to(&mut endpoint, flooder()).len(), 4);
    assert_eq!(stats.over_transactions.load(Ordering::Relaxed), 6);
    // The table is not the flooder's: the phone's OPTIONS and call get in.
    feed(
        &mut endpoint,
        now,
        phone(),
        &request(phone(), "OPTIONS", "ping", None),
    );
    feed(
        &mut endpoint,
        now,
        phone(),
        &request(phone(), "INVITE", "call", None),
    );
    assert_eq!(
        answers_to(&mut endpoint, phone()),
        vec!["SIP/2.0 200 OK", "SIP/2.0 100 Trying"]
    );
    // An INVITE over the share gets a 503 rather than silence.
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "INVITE", "late", None),
    );
    assert_eq!(
        answers_to(&mut endpoint, flooder()),
        vec!["SIP/2.0 503 Service Unavailable"]
    );
    // Timer J ends the OPTIONS transactions (64 x T1) and gives the share back.
    let later = now + Duration::from_secs(33);
    endpoint.handle_timeout(later);
    assert_eq!(endpoint.guard.transactions_of(flooder().ip()), 0);
    feed(
        &mut endpoint,
        later,
        flooder(),
        &request(flooder(), "OPTIONS", "again", None),
    );
    assert_eq!(answers_to(&mut endpoint, flooder()), vec!["SIP/2.0 200 OK"]);
}

#[test]
fn a_denied_source_gets_silence_and_no_call() {
    let cidr = |text: &str| text.parse::<Cidr>().expect("cidr");
    let (mut endpoint, stats) = endpoint(SourceLimits {
        allow: vec![cidr("192.0.2.0/24"), cidr("198.51.100.0/24")],
        deny: vec![cidr("198.51.100.64/26")],
        ..SourceLimits::default()
    });
    let now = Instant::now();
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "INVITE", "no", None),
    );
    feed(
        &mut endpoint,
        now,
        flooder(),
        &request(flooder(), "OPTIONS", "no", None),
    );
    assert!(answers_to(&mut endpoint, flooder()).is_empty());
    assert!(incoming_calls(&mut endpoint).is_empty());
    let outsider: SocketAddr = "203.0.113.5:5060".parse().expect("addr");
    feed(
        &mut endpoint,
        now,
        outsider,
        &request(outsider, "INVITE", "out", None),
    );
    assert!(
        answers_to(&mut endpoint, outsider).is_empty(),
        "not on the allow list"
    );
    assert_eq!(stats.denied.load(Ordering::Relaxed), 3);
    feed(
        &mut endpoint,
        now,
        phone(),
        &request(phone(), "INVITE", "yes", None),
    );
    assert_eq!(
        answers_to(&mut endpoint, phone()),
        vec!["SIP/2.0 100 Trying"]
    );
}

#[test]
fn garbage_is_answered_400_only_within_the_source_limits() {
    let (mut endpoint, stats) = endpoint(SourceLimits {
        requests_per_s: 1,
        request_burst: 2,
        deny: vec!["203.0.113.0/24".parse().expect("cidr")],
        ..SourceLimits::default()
    });
    let now = Instant::now();
    let garbage = |source: SocketAddr| {
        format!(
            "OPTIONS sip:1000@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bKg\r\n\
             CSeq: x OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for _ in 0..5 {
        feed(&mut endpoint, now, flooder(), &garbage(flooder()));
    }
    let answers = answers_to(&mut endpoint, flooder());
    assert_eq!(answers.len(), 2, "the burst only: {answers:?}");
    assert!(
        answers.iter().all(|a| a.starts_with("SIP/2.0 400 ")),
        "{answers:?}"
    );
    assert_eq!(stats.over_rate.load(Ordering::Relaxed), 3);
    let denied: SocketAddr = "203.0.113.5:5060".parse().expect("addr");
    feed(&mut endpoint, now, denied, &garbage(denied));
    assert!(answers_to(&mut endpoint, denied).is_empty());
}
