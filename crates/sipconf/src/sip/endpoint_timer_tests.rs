//! Record-Route and RFC 4028 session timers, driven with literal SIP text at
//! fake instants: a phone behind a record-routing proxy calls the bridge (UAS),
//! and the bridge calls out (UAC).

use super::uac_tests::{
    answered_call, branch, events, feed, header, headers, place_call, reply, reply_with_body, sent,
    ANSWER, CALLEE_CONTACT,
};
use super::*;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n\
    m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
const OUR_ANSWER: &str =
    "v=0\r\no=sipconf 1 1 IN IP4 192.0.2.1\r\ns=sipconf\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
    m=audio 20000 RTP/AVP 0 101\r\na=sendrecv\r\n";
/// Two proxies record-routed the phone's INVITE; the one next to us listens on 5080.
const RECORD_ROUTE: &str = "Record-Route: <sip:192.0.2.50:5080;lr;ftag=alice-tag>\r\n\
    Record-Route: <sip:edge.example.com;lr>\r\n";
const SECOND: Duration = Duration::from_secs(1);

fn endpoint() -> Endpoint {
    Endpoint::new(EndpointConfig {
        max_transactions: 64,
        max_dialogs: 8,
        ..EndpointConfig::new("192.0.2.1:5060".parse().expect("addr"))
    })
}

/// Where the proxy sent the phone's requests from.
fn proxy() -> SocketAddr {
    "192.0.2.50:5060".parse().expect("addr")
}

/// The proxy's next hop for our requests, from its Record-Route.
fn proxy_route() -> SocketAddr {
    "192.0.2.50:5080".parse().expect("addr")
}

/// A request from the phone as the proxy relays it: its Via on top of the phone's.
fn phone_request(
    method: &str,
    branch: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
    body: &str,
) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:1000@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKp{branch}\r\n\
         Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 69\r\n\
         From: \"Alice\" <sip:alice@192.0.2.7>;tag=alice-tag\r\n\
         To: <sip:1000@192.0.2.1>{to_tag}\r\n\
         Call-ID: timer-1@192.0.2.7\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@192.0.2.7:5062>\r\n\
         {extra}{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn from_proxy(endpoint: &mut Endpoint, now: Instant, text: &str) {
    endpoint.handle_datagram(now, Transport::Udp, proxy(), text.as_bytes());
}

fn to_tag_of(message: &str) -> String {
    header(message, "To")
        .split(";tag=")
        .nth(1)
        .expect("to tag")
        .to_owned()
}

/// The phone's INVITE with `extra` headers through the proxy, answered by the
/// call layer and ACKed. Returns the call, our tag and our 200.
fn call_through_proxy(
    endpoint: &mut Endpoint,
    now: Instant,
    extra: &str,
) -> (CallKey, String, String) {
    let invite = phone_request("INVITE", "inv", 1, None, extra, OFFER);
    from_proxy(endpoint, now, &invite);
    let trying = sent(endpoint);
    assert_eq!(trying.len(), 1, "{trying:?}");
    let call = match events(endpoint).as_slice() {
        [SipEvent::IncomingCall { call, .. }] => *call,
        other => panic!("expected IncomingCall, got {other:?}"),
    };
    endpoint.accept(now, call, OUR_ANSWER.to_owned());
    let (to, ok) = sent(endpoint).remove(0);
    assert_eq!(to, proxy(), "responses go back where the request came from");
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    let tag = to_tag_of(&ok);
    from_proxy(
        endpoint,
        now,
        &phone_request("ACK", "ack", 1, Some(&tag), "", ""),
    );
    assert_eq!(events(endpoint), vec![SipEvent::Confirmed { call }]);
    (call, tag, ok)
}

/// The one message sent, to `to`.
fn only(endpoint: &mut Endpoint, to: SocketAddr) -> String {
    let mut out = sent(endpoint);
    assert_eq!(out.len(), 1, "{out:?}");
    let (destination, text) = out.remove(0);
    assert_eq!(destination, to, "{text}");
    text
}

/// Runs every timer up to `until`, returning what was sent on the way.
fn run_until(endpoint: &mut Endpoint, until: Instant) -> Vec<(SocketAddr, String)> {
    let mut out = Vec::new();
    for _ in 0..1000 {
        match endpoint.poll_timeout() {
            Some(at) if at <= until => {
                endpoint.handle_timeout(at);
                out.extend(sent(endpoint));
            }
            _ => return out,
        }
    }
    panic!("timers kept firing before {until:?}");
}

fn requests<'a>(out: &'a [(SocketAddr, String)], method: &str) -> Vec<&'a (SocketAddr, String)> {
    let start = format!("{method} ");
    out.iter().filter(|(_, m)| m.starts_with(&start)).collect()
}

// ==== Record-Route and the route set ====

#[test]
fn the_180_and_200_carry_the_record_route_and_our_bye_follows_it() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let invite = phone_request("INVITE", "inv", 1, None, RECORD_ROUTE, OFFER);
    from_proxy(&mut endpoint, now, &invite);
    sent(&mut endpoint);
    let call = match events(&mut endpoint).as_slice() {
        [SipEvent::IncomingCall { call, .. }] => *call,
        other => panic!("expected IncomingCall, got {other:?}"),
    };
    let routes = [
        "<sip:192.0.2.50:5080;lr;ftag=alice-tag>",
        "<sip:edge.example.com;lr>",
    ];
    endpoint.ring(now, call);
    let ringing = only(&mut endpoint, proxy());
    assert_eq!(headers(&ringing, "Record-Route"), routes, "{ringing}");
    endpoint.accept(now, call, OUR_ANSWER.to_owned());
    let ok = only(&mut endpoint, proxy());
    assert_eq!(headers(&ok, "Record-Route"), routes, "{ok}");
    let tag = to_tag_of(&ok);
    from_proxy(
        &mut endpoint,
        now,
        &phone_request("ACK", "ack", 1, Some(&tag), "", ""),
    );

    endpoint.hangup(now, call);
    let bye = only(&mut endpoint, proxy_route());
    assert!(
        bye.starts_with("BYE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(headers(&bye, "Route"), routes, "{bye}");
}

#[test]
fn a_reinvite_is_answered_without_record_route_and_moves_the_remote_target() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, tag, _) = call_through_proxy(&mut endpoint, now, RECORD_ROUTE);
    let moved = phone_request("INVITE", "re1", 2, Some(&tag), "", OFFER).replace(
        "Contact: <sip:alice@192.0.2.7:5062>",
        "Contact: <sip:alice@192.0.2.8:5064>",
    );
    from_proxy(&mut endpoint, now, &moved);
    sent(&mut endpoint);
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::Reoffer { .. }]
    ));
    endpoint.accept_reoffer(now, call, OUR_ANSWER.to_owned());
    let ok = only(&mut endpoint, proxy());
    assert!(headers(&ok, "Record-Route").is_empty(), "{ok}");
    assert_eq!(events(&mut endpoint), vec![SipEvent::Refreshed { call }]);

    endpoint.hangup(now, call);
    let bye = only(&mut endpoint, proxy_route());
    assert!(
        bye.starts_with("BYE sip:alice@192.0.2.8:5064 SIP/2.0\r\n"),
        "{bye}"
    );
}

#[test]
fn a_strict_router_first_gets_the_request_uri_and_the_target_goes_last() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let strict = "Record-Route: <sip:192.0.2.50:5080>\r\nRecord-Route: <sip:192.0.2.60;lr>\r\n";
    let (call, _, _) = call_through_proxy(&mut endpoint, now, strict);
    endpoint.hangup(now, call);
    let bye = only(&mut endpoint, proxy_route());
    assert!(
        bye.starts_with("BYE sip:192.0.2.50:5080 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(
        headers(&bye, "Route"),
        ["<sip:192.0.2.60;lr>", "<sip:alice@192.0.2.7:5062>"]
    );
}

#[test]
fn a_placed_call_acks_and_byes_along_the_reversed_record_route() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (call, invite) = place_call(&mut endpoint, now);
    let rr = "Record-Route: <sip:192.0.2.61;lr>, <sip:192.0.2.60:5090;lr>\r\n";
    let ok = reply_with_body(
        &invite,
        200,
        "OK",
        Some("callee-tag"),
        &format!("{CALLEE_CONTACT}{rr}"),
        ANSWER,
    );
    feed(&mut endpoint, now, &ok);
    let first_hop: SocketAddr = "192.0.2.60:5090".parse().expect("addr");
    let ack = only(&mut endpoint, first_hop);
    assert!(
        ack.starts_with("ACK sip:alice@192.0.2.9:5071 SIP/2.0\r\n"),
        "{ack}"
    );
    let reversed = ["<sip:192.0.2.60:5090;lr>", "<sip:192.0.2.61;lr>"];
    assert_eq!(headers(&ack, "Route"), reversed);
    endpoint.hangup(now, call);
    let bye = only(&mut endpoint, first_hop);
    assert_eq!(headers(&bye, "Route"), reversed);
}

// ==== session timers as UAS ====

#[test]
fn a_timer_the_caller_refreshes_is_confirmed_and_its_lapse_ends_the_call_with_bye() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let asked = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    let (call, _, ok) = call_through_proxy(&mut endpoint, start, &format!("{RECORD_ROUTE}{asked}"));
    assert_eq!(header(&ok, "Session-Expires"), "90;refresher=uac");
    assert_eq!(header(&ok, "Require"), "timer");
    assert_eq!(header(&ok, "Supported"), "timer");
    // The caller never refreshes: BYE a little before the end (90 - 30 s).
    assert!(run_until(&mut endpoint, start + 59 * SECOND).is_empty());
    let out = run_until(&mut endpoint, start + 60 * SECOND);
    let byes = requests(&out, "BYE");
    assert_eq!(byes.len(), 1, "{out:?}");
    assert_eq!(byes[0].0, proxy_route());
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::SessionExpired
        }]
    );
}

#[test]
fn a_refresh_from_the_caller_is_answered_and_restarts_the_timer() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let asked = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    let (call, tag, _) = call_through_proxy(&mut endpoint, start, asked);
    let at = start + 45 * SECOND;
    let update = phone_request("UPDATE", "up1", 2, Some(&tag), asked, "");
    from_proxy(&mut endpoint, at, &update);
    let ok = only(&mut endpoint, proxy());
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert_eq!(header(&ok, "Session-Expires"), "90;refresher=uac");
    assert_eq!(events(&mut endpoint), vec![SipEvent::Refreshed { call }]);
    // No BYE at the first deadline; the new one is 60 s after the refresh.
    assert!(requests(&run_until(&mut endpoint, at + 59 * SECOND), "BYE").is_empty());
    assert_eq!(
        requests(&run_until(&mut endpoint, at + 60 * SECOND), "BYE").len(),
        1
    );
}

#[test]
fn asked_to_refresh_we_send_update_at_half_the_interval_along_the_route_set() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let asked = "Supported: timer\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n\
                 Session-Expires: 120;refresher=uas\r\nMin-SE: 90\r\n";
    let (call, _, ok) = call_through_proxy(&mut endpoint, start, &format!("{RECORD_ROUTE}{asked}"));
    assert_eq!(header(&ok, "Session-Expires"), "120;refresher=uas");
    assert!(run_until(&mut endpoint, start + 59 * SECOND).is_empty());
    let out = run_until(&mut endpoint, start + 60 * SECOND);
    let [(to, update)] = out.as_slice() else {
        panic!("expected one UPDATE, got {out:?}");
    };
    assert_eq!(*to, proxy_route());
    assert!(
        update.starts_with("UPDATE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"),
        "{update}"
    );
    assert_eq!(headers(update, "Route").len(), 2);
    assert_eq!(header(update, "Session-Expires"), "120;refresher=uac");
    assert_eq!(header(update, "Supported"), "timer");
    assert_eq!(header(update, "CSeq"), "1 UPDATE");
    assert!(update.ends_with("Content-Length: 0\r\n\r\n"), "{update}");

    let at = start + 60 * SECOND;
    let answer = "Session-Expires: 120;refresher=uac\r\nRequire: timer\r\n";
    endpoint.handle_datagram(
        at,
        Transport::Udp,
        proxy_route(),
        reply(update, 200, "OK", None, answer).as_bytes(),
    );
    assert_eq!(events(&mut endpoint), vec![SipEvent::Refreshed { call }]);
    assert!(run_until(&mut endpoint, at + 59 * SECOND).is_empty());
    let again = run_until(&mut endpoint, at + 60 * SECOND);
    assert_eq!(requests(&again, "UPDATE").len(), 1, "{again:?}");
}

#[test]
fn left_to_choose_we_refresh_by_reinvite_when_update_is_not_allowed() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (call, _, ok) = call_through_proxy(
        &mut endpoint,
        start,
        "Supported: timer\r\nSession-Expires: 100\r\n",
    );
    assert_eq!(header(&ok, "Session-Expires"), "100;refresher=uas");
    let out = run_until(&mut endpoint, start + 50 * SECOND);
    let [(_, reinvite)] = out.as_slice() else {
        panic!("expected one re-INVITE, got {out:?}");
    };
    assert!(
        reinvite.starts_with("INVITE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"),
        "{reinvite}"
    );
    // The same SDP again, same version: nothing about the session changes.
    assert!(reinvite.ends_with(OUR_ANSWER), "{reinvite}");
    let at = start + 50 * SECOND;
    endpoint.handle_datagram(
        at,
        Transport::Udp,
        proxy(),
        reply_with_body(
            reinvite,
            200,
            "OK",
            None,
            "Session-Expires: 100;refresher=uac\r\n",
            OFFER,
        )
        .as_bytes(),
    );
    let ack = only(&mut endpoint, proxy());
    assert!(
        ack.starts_with("ACK sip:alice@192.0.2.7:5062 SIP/2.0\r\n"),
        "{ack}"
    );
    assert_eq!(header(&ack, "CSeq"), "1 ACK");
    assert_eq!(events(&mut endpoint), vec![SipEvent::Refreshed { call }]);
}

#[test]
fn require_timer_is_honoured_and_other_extensions_still_get_420() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, _, ok) = call_through_proxy(
        &mut endpoint,
        now,
        "Require: timer\r\nSession-Expires: 600\r\n",
    );
    assert_eq!(header(&ok, "Session-Expires"), "600;refresher=uas");
    assert_eq!(header(&ok, "Require"), "timer");

    let other = phone_request(
        "INVITE",
        "inv2",
        1,
        None,
        "Require: timer, 100rel\r\n",
        OFFER,
    )
    .replace("timer-1@", "timer-2@");
    from_proxy(&mut endpoint, now, &other);
    let refused = only(&mut endpoint, proxy());
    assert!(
        refused.starts_with("SIP/2.0 420 Bad Extension\r\n"),
        "{refused}"
    );
    assert_eq!(header(&refused, "Unsupported"), "100rel");
}

#[test]
fn a_session_interval_below_min_se_gets_422_and_no_call() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let invite = phone_request(
        "INVITE",
        "inv",
        1,
        None,
        "Supported: timer\r\nSession-Expires: 60\r\n",
        OFFER,
    );
    from_proxy(&mut endpoint, now, &invite);
    let refused = only(&mut endpoint, proxy());
    assert!(
        refused.starts_with("SIP/2.0 422 Session Interval Too Small\r\n"),
        "{refused}"
    );
    assert_eq!(header(&refused, "Min-SE"), "90");
    assert!(events(&mut endpoint).is_empty());
    assert_eq!(endpoint.stats().calls_in_use, 0);
}

#[test]
fn a_caller_without_timer_support_gets_no_timer_and_a_long_ask_is_cut_to_ours() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, _, ok) = call_through_proxy(&mut endpoint, now, "");
    assert!(headers(&ok, "Session-Expires").is_empty(), "{ok}");
    assert!(headers(&ok, "Require").is_empty(), "{ok}");

    let mut endpoint = self::endpoint();
    let (_, _, ok) = call_through_proxy(
        &mut endpoint,
        now,
        "Supported: timer\r\nSession-Expires: 7200\r\n",
    );
    assert_eq!(header(&ok, "Session-Expires"), "1800;refresher=uas");
}

#[test]
fn a_refresh_answered_408_or_never_ends_the_call() {
    for answered in [true, false] {
        let mut endpoint = endpoint();
        let start = Instant::now();
        let asked = "Supported: timer\r\nAllow: UPDATE\r\nSession-Expires: 90;refresher=uas\r\n";
        let (call, _, _) = call_through_proxy(&mut endpoint, start, asked);
        let out = run_until(&mut endpoint, start + 45 * SECOND);
        let (_, update) = &requests(&out, "UPDATE")[0];
        let at = start + 46 * SECOND;
        if answered {
            let timeout = reply(update, 408, "Request Timeout", None, "");
            endpoint.handle_datagram(at, Transport::Udp, proxy(), timeout.as_bytes());
            assert_eq!(requests(&sent(&mut endpoint), "BYE").len(), 1);
        } else {
            // Timer F, 64*T1 after the UPDATE, long before the session expires.
            let out = run_until(&mut endpoint, start + 45 * SECOND + 32 * SECOND);
            assert_eq!(requests(&out, "BYE").len(), 1, "{out:?}");
        }
        assert_eq!(
            events(&mut endpoint),
            vec![SipEvent::Ended {
                call,
                reason: EndReason::RefreshFailed
            }],
            "answered: {answered}"
        );
    }
}

#[test]
fn a_422_to_our_refresh_asks_again_with_its_min_se_and_501_falls_back_to_reinvite() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let asked = "Supported: timer\r\nAllow: UPDATE\r\nSession-Expires: 90;refresher=uas\r\n";
    call_through_proxy(&mut endpoint, start, asked);
    let out = run_until(&mut endpoint, start + 45 * SECOND);
    let (_, update) = &requests(&out, "UPDATE")[0];
    let too_small = reply(
        update,
        422,
        "Session Interval Too Small",
        None,
        "Min-SE: 300\r\n",
    );
    endpoint.handle_datagram(
        start + 45 * SECOND,
        Transport::Udp,
        proxy(),
        too_small.as_bytes(),
    );
    let (_, again) = sent(&mut endpoint).remove(0);
    assert!(again.starts_with("UPDATE "), "{again}");
    assert_eq!(header(&again, "Session-Expires"), "300;refresher=uac");
    assert_eq!(header(&again, "CSeq"), "2 UPDATE");

    let not_implemented = reply(&again, 501, "Not Implemented", None, "");
    endpoint.handle_datagram(
        start + 45 * SECOND,
        Transport::Udp,
        proxy(),
        not_implemented.as_bytes(),
    );
    let (_, reinvite) = sent(&mut endpoint).remove(0);
    assert!(reinvite.starts_with("INVITE "), "{reinvite}");
    assert_eq!(header(&reinvite, "CSeq"), "3 INVITE");
    assert_eq!(header(&reinvite, "Session-Expires"), "300;refresher=uac");
}

#[test]
fn a_reinvite_crossing_our_refresh_reinvite_gets_491() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (_, tag, _) = call_through_proxy(
        &mut endpoint,
        start,
        "Supported: timer\r\nSession-Expires: 90\r\n",
    );
    let out = run_until(&mut endpoint, start + 45 * SECOND);
    assert_eq!(requests(&out, "INVITE").len(), 1, "{out:?}");
    let theirs = phone_request("INVITE", "re2", 2, Some(&tag), "", OFFER);
    from_proxy(&mut endpoint, start + 45 * SECOND, &theirs);
    let pending = only(&mut endpoint, proxy());
    assert!(
        pending.starts_with("SIP/2.0 491 Request Pending\r\n"),
        "{pending}"
    );
}

#[test]
fn a_refresh_due_while_the_callers_reinvite_is_open_waits_for_it() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let asked = "Supported: timer\r\nSession-Expires: 90\r\n";
    let (call, tag, _) = call_through_proxy(&mut endpoint, start, asked);
    // The caller re-INVITEs just before our refresh; the call layer has not answered.
    let at = start + 44 * SECOND;
    from_proxy(
        &mut endpoint,
        at,
        &phone_request("INVITE", "re3", 2, Some(&tag), asked, OFFER),
    );
    sent(&mut endpoint);
    assert!(matches!(
        events(&mut endpoint).as_slice(),
        [SipEvent::Reoffer { .. }]
    ));
    assert!(
        run_until(&mut endpoint, start + 46 * SECOND).is_empty(),
        "no crossing re-INVITE"
    );
    endpoint.accept_reoffer(start + 46 * SECOND, call, OUR_ANSWER.to_owned());
    let ok = sent(&mut endpoint);
    let ack = phone_request("ACK", "ack3", 2, Some(&tag), "", "");
    from_proxy(&mut endpoint, start + 46 * SECOND, &ack);
    assert_eq!(ok.len(), 1, "{ok:?}");
    // Answering it was itself a refresh: the next one is 45 s after it.
    assert!(requests(&run_until(&mut endpoint, start + 90 * SECOND), "INVITE").is_empty());
    let out = run_until(&mut endpoint, start + 91 * SECOND);
    assert_eq!(requests(&out, "INVITE").len(), 1, "{out:?}");
}

#[test]
fn a_call_we_hang_up_stops_its_session_timer() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (call, _, _) = call_through_proxy(
        &mut endpoint,
        start,
        "Supported: timer\r\nSession-Expires: 90\r\n",
    );
    endpoint.hangup(start, call);
    sent(&mut endpoint);
    // Only the BYE's own retransmissions, until timer F ends the call.
    let out = run_until(&mut endpoint, start + 120 * SECOND);
    assert!(out.iter().all(|(_, m)| m.starts_with("BYE ")), "{out:?}");
    assert_eq!(endpoint.poll_timeout(), None);
}

/// A far end that answers our refresh re-INVITE with 180 and never a final
/// response leaves no transaction behind once the call is over (an INVITE
/// transaction in Proceeding has no timer of its own; found by fuzzing).
#[test]
fn a_refresh_left_ringing_is_forgotten_when_its_call_ends() {
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (call, _, _) = call_through_proxy(
        &mut endpoint,
        start,
        "Supported: timer\r\nSession-Expires: 100\r\n",
    );
    let out = run_until(&mut endpoint, start + 50 * SECOND);
    let [(_, reinvite)] = out.as_slice() else {
        panic!("expected one re-INVITE, got {out:?}");
    };
    let at = start + 50 * SECOND;
    endpoint.handle_datagram(
        at,
        Transport::Udp,
        proxy(),
        reply(reinvite, 180, "Ringing", None, "").as_bytes(),
    );
    endpoint.hangup(at, call);
    run_until(&mut endpoint, start + 400 * SECOND);
    let stats = endpoint.stats();
    assert_eq!(stats.calls_in_use, 0, "{stats:?}");
    assert_eq!(stats.transactions_in_use, 0, "{stats:?}");
    assert_eq!(endpoint.poll_timeout(), None);
}

// ==== session timers as UAC ====

#[test]
fn our_invite_asks_for_a_timer_that_we_refresh() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, invite) = place_call(&mut endpoint, now);
    assert_eq!(header(&invite, "Supported"), "timer");
    assert_eq!(header(&invite, "Session-Expires"), "1800;refresher=uac");
    assert_eq!(header(&invite, "Min-SE"), "90");
}

#[test]
fn a_422_to_our_invite_is_asked_again_with_the_far_ends_min_se() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, invite) = place_call(&mut endpoint, now);
    let too_small = reply(
        &invite,
        422,
        "Session Interval Too Small",
        Some("t"),
        "Min-SE: 3600\r\n",
    );
    feed(&mut endpoint, now, &too_small);
    let out = sent(&mut endpoint);
    let again = &requests(&out, "INVITE")[0].1;
    assert_eq!(header(again, "CSeq"), "2 INVITE");
    assert_eq!(header(again, "Session-Expires"), "3600;refresher=uac");
    assert_eq!(header(again, "Min-SE"), "3600");
    assert_ne!(branch(again), branch(&invite));
    assert_eq!(requests(&out, "ACK").len(), 1, "the 422 is ACKed");
}

#[test]
fn the_answer_decides_who_refreshes_a_call_we_placed() {
    // The callee refreshes: we wait, and BYE when it does not.
    let mut endpoint = endpoint();
    let start = Instant::now();
    let (call, _) = answered_call(
        &mut endpoint,
        start,
        "Require: timer\r\nSession-Expires: 90;refresher=uas\r\n",
    );
    let out = run_until(&mut endpoint, start + 60 * SECOND);
    assert!(requests(&out, "INVITE").is_empty() && requests(&out, "UPDATE").is_empty());
    assert_eq!(requests(&out, "BYE").len(), 1, "{out:?}");
    assert_eq!(
        events(&mut endpoint),
        vec![SipEvent::Ended {
            call,
            reason: EndReason::SessionExpired
        }]
    );

    // A callee without timers: we refresh at half of what we asked.
    let mut endpoint = self::endpoint();
    let (_, _) = answered_call(&mut endpoint, start, "Allow: INVITE, ACK, BYE, UPDATE\r\n");
    assert!(run_until(&mut endpoint, start + 899 * SECOND).is_empty());
    let out = run_until(&mut endpoint, start + 900 * SECOND);
    let updates = requests(&out, "UPDATE");
    assert_eq!(updates.len(), 1, "{out:?}");
    let contact: SocketAddr = "192.0.2.9:5071".parse().expect("addr");
    assert_eq!(updates[0].0, contact, "to the callee's Contact");
}
