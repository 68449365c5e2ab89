//! Outbound registration driven with literal SIP text and fake instants: the
//! registrar's responses are written here by hand from the REGISTERs the
//! endpoint sends.

use super::uac_tests::{branch, header, headers, reply, sent, sent_one, start_line};
use super::*;
use crate::sip::auth;
use crate::sip::registration::{RegistrationConfig, RegistrationState, RegistrationStats};
use crate::sip::session_timer::TimerSettings;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const T1: Duration = Duration::from_millis(500);
const CHALLENGE: &str = "WWW-Authenticate: Digest realm=\"pbx.example\", nonce=\"6b7e1f\", qop=\"auth\", algorithm=MD5\r\n";

fn registrar() -> SocketAddr {
    "192.0.2.50:5060".parse().expect("addr")
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
        limits: crate::sip::source_guard::SourceLimits::default(),
        limit_stats: Arc::default(),
        tls_port: None,
    })
}

fn config() -> RegistrationConfig {
    RegistrationConfig {
        registrar_uri: "sip:pbx.example".to_owned(),
        aor: "sip:2000@pbx.example".to_owned(),
        destination: registrar(),
        transport: Transport::Udp,
        auth_user: "2000".to_owned(),
        password: "s3cret".to_owned(),
        realm: None,
        expires_s: 3600,
        contact_user: "conf2000".to_owned(),
    }
}

const OUR_CONTACT: &str = "<sip:conf2000@192.0.2.1:5060>";

fn feed(endpoint: &mut Endpoint, now: Instant, text: &str) {
    endpoint.handle_datagram(now, Transport::Udp, registrar(), text.as_bytes());
}

/// Starts registering; returns the stats and the first REGISTER.
fn start(
    endpoint: &mut Endpoint,
    now: Instant,
) -> (RegistrationKey, Arc<RegistrationStats>, String) {
    let stats = Arc::new(RegistrationStats::default());
    let key = endpoint.register(now, config(), stats.clone());
    let register = sent_one(endpoint, registrar());
    (key, stats, register)
}

/// The `name="value"` or `name=value` parameter of a digest header value.
fn param<'a>(value: &'a str, name: &str) -> &'a str {
    value
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('"'))
        .unwrap_or_else(|| panic!("no {name} in {value}"))
}

/// The response a registrar expects for this Authorization, from RFC 2617's definition.
fn expected_response(authorization: &str, password: &str) -> String {
    auth::digest_response(
        param(authorization, "Digest username"),
        password,
        param(authorization, "realm"),
        param(authorization, "nonce"),
        "REGISTER",
        param(authorization, "uri"),
        Some(auth::QopAuth {
            nc: param(authorization, "nc"),
            cnonce: param(authorization, "cnonce"),
        }),
    )
}

/// REGISTER, 401, REGISTER with credentials, 200 granting `granted`; returns
/// the stats and the authenticated REGISTER.
fn registered(
    endpoint: &mut Endpoint,
    now: Instant,
    granted: &str,
) -> (RegistrationKey, Arc<RegistrationStats>, String) {
    let (key, stats, first) = start(endpoint, now);
    feed(
        endpoint,
        now,
        &reply(&first, 401, "Unauthorized", Some("r1"), CHALLENGE),
    );
    let second = sent_one(endpoint, registrar());
    feed(
        endpoint,
        now,
        &reply(&second, 200, "OK", Some("r1"), granted),
    );
    assert!(sent(endpoint).is_empty());
    (key, stats, second)
}

#[test]
fn first_register_binds_our_contact_to_the_aor() {
    let mut endpoint = endpoint();
    let (_, stats, register) = start(&mut endpoint, Instant::now());
    assert_eq!(start_line(&register), "REGISTER sip:pbx.example SIP/2.0");
    assert!(header(&register, "Via").starts_with("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"));
    assert!(header(&register, "From").starts_with("<sip:2000@pbx.example>;tag="));
    assert_eq!(header(&register, "To"), "<sip:2000@pbx.example>");
    assert_eq!(header(&register, "CSeq"), "1 REGISTER");
    assert_eq!(header(&register, "Contact"), OUR_CONTACT);
    assert_eq!(header(&register, "Expires"), "3600");
    assert!(!register.contains("Authorization"), "{register}");
    assert_eq!(stats.state(), RegistrationState::Registering);
    assert_eq!(stats.requests_total.load(Ordering::Relaxed), 1);
}

#[test]
fn challenge_is_answered_with_md5_qop_auth_and_the_200_registers() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (key, stats, first) = start(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(&first, 401, "Unauthorized", Some("r1"), CHALLENGE),
    );
    let second = sent_one(&mut endpoint, registrar());
    assert_eq!(header(&second, "CSeq"), "2 REGISTER");
    assert_eq!(header(&second, "Call-ID"), header(&first, "Call-ID"));
    assert_eq!(header(&second, "From"), header(&first, "From"));
    assert_ne!(branch(&second), branch(&first));
    let authorization = header(&second, "Authorization");
    assert_eq!(param(authorization, "Digest username"), "2000");
    assert_eq!(param(authorization, "realm"), "pbx.example");
    assert_eq!(param(authorization, "uri"), "sip:pbx.example");
    assert_eq!(param(authorization, "qop"), "auth");
    assert_eq!(param(authorization, "nc"), "00000001");
    assert_eq!(
        param(authorization, "response"),
        expected_response(authorization, "s3cret")
    );

    let granted =
        format!("Contact: <sip:other@192.0.2.77>;expires=50, {OUR_CONTACT};expires=1800\r\n");
    feed(
        &mut endpoint,
        now,
        &reply(&second, 200, "OK", Some("r1"), &granted),
    );
    assert_eq!(stats.state(), RegistrationState::Registered);
    assert_eq!(
        stats.expires_s.load(Ordering::Relaxed),
        1800,
        "our Contact's expires, not another's"
    );
    assert_eq!(stats.failures_total.load(Ordering::Relaxed), 0);
    assert_eq!(
        endpoint.registration(key).map(|r| r.state()),
        Some(RegistrationState::Registered)
    );
}

#[test]
fn refresh_comes_a_minute_before_expiry_with_the_nonce_counted_up() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, _, second) = registered(
        &mut endpoint,
        now,
        &format!("Contact: {OUR_CONTACT};expires=3600\r\n"),
    );
    let refresh_at = now + Duration::from_secs(3540);
    assert_eq!(endpoint.poll_timeout(), Some(refresh_at));
    endpoint.handle_timeout(refresh_at - Duration::from_millis(1));
    assert!(
        sent(&mut endpoint).is_empty(),
        "nothing before the refresh is due"
    );

    endpoint.handle_timeout(refresh_at);
    let refresh = sent_one(&mut endpoint, registrar());
    assert_eq!(header(&refresh, "CSeq"), "3 REGISTER");
    assert_eq!(header(&refresh, "Call-ID"), header(&second, "Call-ID"));
    let authorization = header(&refresh, "Authorization");
    assert_eq!(
        param(authorization, "nonce"),
        "6b7e1f",
        "the nonce is used again"
    );
    assert_eq!(
        param(authorization, "nc"),
        "00000002",
        "with the next count"
    );
    assert_ne!(
        param(authorization, "cnonce"),
        param(header(&second, "Authorization"), "cnonce")
    );
    assert_eq!(
        param(authorization, "response"),
        expected_response(authorization, "s3cret")
    );
}

#[test]
fn a_short_grant_is_refreshed_at_half_and_the_expires_header_counts_without_a_contact() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, _) = registered(&mut endpoint, now, "Expires: 100\r\n");
    assert_eq!(stats.expires_s.load(Ordering::Relaxed), 100);
    assert_eq!(endpoint.poll_timeout(), Some(now + Duration::from_secs(50)));
}

#[test]
fn a_stale_nonce_at_refresh_is_answered_and_the_state_stays_registered() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, _) = registered(&mut endpoint, now, "Expires: 100\r\n");
    let later = now + Duration::from_secs(50);
    endpoint.handle_timeout(later);
    let refresh = sent_one(&mut endpoint, registrar());
    let stale = "WWW-Authenticate: Digest realm=\"pbx.example\", nonce=\"a9a9\", qop=\"auth\", stale=true\r\n";
    feed(
        &mut endpoint,
        later,
        &reply(&refresh, 401, "Unauthorized", Some("r2"), stale),
    );
    let again = sent_one(&mut endpoint, registrar());
    let authorization = header(&again, "Authorization");
    assert_eq!(param(authorization, "nonce"), "a9a9");
    assert_eq!(
        param(authorization, "nc"),
        "00000001",
        "a new nonce counts from one"
    );
    feed(
        &mut endpoint,
        later,
        &reply(&again, 200, "OK", Some("r2"), "Expires: 100\r\n"),
    );
    assert_eq!(stats.state(), RegistrationState::Registered);
    assert_eq!(stats.failures_total.load(Ordering::Relaxed), 0);
}

#[test]
fn a_wrong_password_backs_off_thirty_seconds_then_doubling() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, first) = start(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(&first, 401, "Unauthorized", Some("r1"), CHALLENGE),
    );
    let second = sent_one(&mut endpoint, registrar());
    let fresh = "WWW-Authenticate: Digest realm=\"pbx.example\", nonce=\"0d0d\", qop=\"auth\"\r\n";
    feed(
        &mut endpoint,
        now,
        &reply(&second, 401, "Unauthorized", Some("r1"), fresh),
    );
    assert!(
        sent(&mut endpoint).is_empty(),
        "refused credentials are not sent again at once"
    );
    assert_eq!(stats.state(), RegistrationState::BackingOff);
    assert_eq!(stats.failures_total.load(Ordering::Relaxed), 1);
    assert_eq!(stats.last_failure_code.load(Ordering::Relaxed), 401);
    assert_eq!(endpoint.poll_timeout(), Some(now + Duration::from_secs(30)));

    // The next try answers the newest challenge, and fails the same way: 60 s.
    let retry_at = now + Duration::from_secs(30);
    endpoint.handle_timeout(retry_at);
    let retry = sent_one(&mut endpoint, registrar());
    assert_eq!(param(header(&retry, "Authorization"), "nonce"), "0d0d");
    feed(
        &mut endpoint,
        retry_at,
        &reply(&retry, 401, "Unauthorized", Some("r3"), fresh),
    );
    let answered = sent_one(&mut endpoint, registrar());
    feed(
        &mut endpoint,
        retry_at,
        &reply(&answered, 401, "Unauthorized", Some("r3"), fresh),
    );
    assert_eq!(stats.failures_total.load(Ordering::Relaxed), 2);
    assert_eq!(
        endpoint.poll_timeout(),
        Some(retry_at + Duration::from_secs(60))
    );
    assert_eq!(stats.requests_total.load(Ordering::Relaxed), 4);
}

#[test]
fn a_challenge_of_another_realm_than_configured_is_not_answered() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let stats = Arc::new(RegistrationStats::default());
    let mut config = config();
    config.realm = Some("other.example".to_owned());
    endpoint.register(now, config, stats.clone());
    let first = sent_one(&mut endpoint, registrar());
    feed(
        &mut endpoint,
        now,
        &reply(&first, 401, "Unauthorized", Some("r1"), CHALLENGE),
    );
    assert!(sent(&mut endpoint).is_empty());
    assert_eq!(stats.state(), RegistrationState::BackingOff);
}

#[test]
fn interval_too_brief_raises_the_expiry_to_min_expires() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, first) = start(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(
            &first,
            423,
            "Interval Too Brief",
            Some("r1"),
            "Min-Expires: 7200\r\n",
        ),
    );
    let second = sent_one(&mut endpoint, registrar());
    assert_eq!(header(&second, "Expires"), "7200");
    feed(
        &mut endpoint,
        now,
        &reply(&second, 200, "OK", Some("r1"), "Expires: 7200\r\n"),
    );
    assert_eq!(stats.state(), RegistrationState::Registered);
    assert_eq!(
        endpoint.poll_timeout(),
        Some(now + Duration::from_secs(7140))
    );

    // A Min-Expires no larger than ours is a failure, not a loop.
    let mut endpoint = self::endpoint();
    let (_, stats, first) = start(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(
            &first,
            423,
            "Interval Too Brief",
            Some("r1"),
            "Min-Expires: 60\r\n",
        ),
    );
    assert!(sent(&mut endpoint).is_empty());
    assert_eq!(stats.last_failure_code.load(Ordering::Relaxed), 423);
}

#[test]
fn a_silent_registrar_is_retransmitted_to_then_backed_off_with_408() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, first) = start(&mut endpoint, now);
    endpoint.handle_timeout(now + T1);
    assert_eq!(
        sent_one(&mut endpoint, registrar()),
        first,
        "UDP retransmission"
    );
    let mut at = now + T1;
    for _ in 0..64 {
        match endpoint.poll_timeout() {
            Some(next) if next <= now + 64 * T1 => at = next,
            _ => break,
        }
        endpoint.handle_timeout(at);
    }
    let _ = sent(&mut endpoint);
    assert_eq!(stats.state(), RegistrationState::BackingOff);
    assert_eq!(stats.last_failure_code.load(Ordering::Relaxed), 408);
    assert_eq!(endpoint.poll_timeout(), Some(at + Duration::from_secs(30)));
}

#[test]
fn service_unavailable_waits_as_long_as_retry_after_asks() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, _, first) = start(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(
            &first,
            503,
            "Service Unavailable",
            Some("r1"),
            "Retry-After: 120\r\n",
        ),
    );
    assert_eq!(
        endpoint.poll_timeout(),
        Some(now + Duration::from_secs(120))
    );
}

#[test]
fn unregister_all_removes_the_binding_with_expires_zero() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, _) = registered(&mut endpoint, now, "Expires: 3600\r\n");
    endpoint.unregister_all(now);
    assert!(!endpoint.registrations_settled());
    let removal = sent_one(&mut endpoint, registrar());
    assert_eq!(header(&removal, "Expires"), "0");
    assert_eq!(header(&removal, "Contact"), OUR_CONTACT);
    assert_eq!(param(header(&removal, "Authorization"), "nc"), "00000002");
    feed(
        &mut endpoint,
        now,
        &reply(&removal, 200, "OK", Some("r1"), ""),
    );
    assert!(endpoint.registrations_settled());
    assert_eq!(stats.state(), RegistrationState::Unregistered);
    assert_eq!(
        endpoint.poll_timeout(),
        None,
        "no refresh after the removal"
    );
}

#[test]
fn unregister_while_backing_off_sends_nothing() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, first) = start(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(&first, 403, "Forbidden", Some("r1"), ""),
    );
    endpoint.unregister_all(now);
    assert!(sent(&mut endpoint).is_empty());
    assert!(endpoint.registrations_settled());
    assert_eq!(stats.state(), RegistrationState::Unregistered);
}

#[test]
fn a_register_in_flight_at_shutdown_is_followed_by_the_removal() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, first) = start(&mut endpoint, now);
    endpoint.unregister_all(now);
    assert!(sent(&mut endpoint).is_empty());
    feed(
        &mut endpoint,
        now,
        &reply(&first, 200, "OK", Some("r1"), "Expires: 3600\r\n"),
    );
    let removal = sent_one(&mut endpoint, registrar());
    assert_eq!(header(&removal, "Expires"), "0");
    feed(
        &mut endpoint,
        now,
        &reply(&removal, 200, "OK", Some("r1"), ""),
    );
    assert_eq!(stats.state(), RegistrationState::Unregistered);
    assert!(endpoint.registrations_settled());
}

#[test]
fn over_tcp_the_contact_says_so_and_nothing_is_retransmitted() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let mut config = config();
    config.transport = Transport::Tcp;
    endpoint.register(now, config, Arc::new(RegistrationStats::default()));
    let transmit = endpoint.poll_transmit().expect("REGISTER");
    assert_eq!(transmit.transport, Transport::Tcp);
    let register = String::from_utf8(transmit.bytes.to_vec()).expect("utf8");
    assert!(header(&register, "Via").starts_with("SIP/2.0/TCP "));
    assert_eq!(
        header(&register, "Contact"),
        "<sip:conf2000@192.0.2.1:5060;transport=tcp>"
    );
    endpoint.handle_timeout(now + T1);
    assert!(sent(&mut endpoint).is_empty());
    assert_eq!(headers(&register, "Expires"), vec!["3600"]);
}

#[test]
fn a_proxy_challenge_is_answered_with_proxy_authorization() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (_, stats, first) = start(&mut endpoint, now);
    let challenge = CHALLENGE.replace("WWW-Authenticate", "Proxy-Authenticate");
    feed(
        &mut endpoint,
        now,
        &reply(
            &first,
            407,
            "Proxy Authentication Required",
            Some("p1"),
            &challenge,
        ),
    );
    let second = sent_one(&mut endpoint, registrar());
    assert!(!second.contains("\r\nAuthorization:"), "{second}");
    let authorization = header(&second, "Proxy-Authorization");
    assert_eq!(
        param(authorization, "response"),
        expected_response(authorization, "s3cret")
    );
    feed(
        &mut endpoint,
        now,
        &reply(&second, 200, "OK", Some("p1"), "Expires: 600\r\n"),
    );
    assert_eq!(stats.state(), RegistrationState::Registered);
}

#[test]
fn a_moved_registrar_gets_the_next_try() {
    let mut endpoint = endpoint();
    let now = Instant::now();
    let (key, stats, first) = start(&mut endpoint, now);
    feed(
        &mut endpoint,
        now,
        &reply(&first, 503, "Service Unavailable", Some("r1"), ""),
    );
    assert_eq!(stats.state(), RegistrationState::BackingOff);
    let moved: SocketAddr = "192.0.2.51:5060".parse().expect("addr");
    endpoint.move_registrar(key, moved);
    endpoint.handle_timeout(now + Duration::from_secs(30));
    let retry = sent_one(&mut endpoint, moved);
    assert_eq!(header(&retry, "CSeq"), "2 REGISTER");
    assert_eq!(header(&retry, "Call-ID"), header(&first, "Call-ID"));
}
