//! One outbound registration (RFC 3261 section 10): the bridge binds a Contact
//! of its own to an address of record at a registrar, answers the registrar's
//! digest challenge, refreshes the binding before it expires, backs off when
//! the registrar refuses or does not answer, and removes the binding when the
//! bridge stops.
//!
//! Sans-IO like the rest of `sip/`: it writes REGISTER requests and reads
//! their final responses, with the time as an argument; the endpoint gives it
//! branches and a transaction (`endpoint_reg.rs`). Its state is published in
//! atomics for `/metrics`, as the media plane's counters are.

use super::auth::{self, Challenge};
use super::endpoint::{contact_header, ALLOW};
use super::message::{self, OutgoingRequest, Response};
use super::Transport;
use bytes::Bytes;
use ezk_sip_types::Name;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The shortest expiry we ask for: RFC 3261 10.2.1.1 lets a registrar refuse
/// less than an hour, but every one we know takes a minute.
pub const MIN_EXPIRES_S: u32 = 60;
/// The longest expiry we ask for, and the highest 423 Min-Expires we follow.
pub const MAX_EXPIRES_S: u32 = 86_400;
/// The first wait after a failure; it doubles with each failure in a row.
pub const RETRY_FIRST: Duration = Duration::from_secs(30);
/// The longest wait between tries.
pub const RETRY_MAX: Duration = Duration::from_secs(600);
/// How long before the binding expires we refresh it (at most; half the
/// granted expiry when that is shorter).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// What the REGISTER of one registration says and where it goes.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// Request-URI: `sip:pbx.example.com`.
    pub registrar_uri: String,
    /// Address of record, in From and To: `sip:2000@pbx.example.com`.
    pub aor: String,
    /// The registrar's address, looked up by the transport shell's caller.
    pub destination: SocketAddr,
    pub transport: Transport,
    pub auth_user: String,
    pub password: String,
    /// Answer only challenges of this realm.
    pub realm: Option<String>,
    pub expires_s: u32,
    /// Our Contact's user part: calls to it arrive on this registration.
    pub contact_user: String,
}

impl std::fmt::Debug for RegistrationConfig {
    // The password must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationConfig")
            .field("registrar_uri", &self.registrar_uri)
            .field("aor", &self.aor)
            .field("destination", &self.destination)
            .field("transport", &self.transport)
            .field("auth_user", &self.auth_user)
            .field("expires_s", &self.expires_s)
            .field("contact_user", &self.contact_user)
            .finish_non_exhaustive()
    }
}

/// Where a registration stands, as `/metrics` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RegistrationState {
    /// The first REGISTER, or the one after a back-off, is on its way.
    Registering = 0,
    /// The registrar holds our binding; refreshes keep this state.
    Registered = 1,
    /// The last try failed (refused, wrong credentials, no answer); the next
    /// waits `RETRY_FIRST`, doubling up to `RETRY_MAX`.
    BackingOff = 2,
    /// Removed at shutdown (or never registered when the bridge stopped).
    Unregistered = 3,
}

impl RegistrationState {
    pub const ALL: [RegistrationState; 4] = [
        RegistrationState::Registering,
        RegistrationState::Registered,
        RegistrationState::BackingOff,
        RegistrationState::Unregistered,
    ];

    /// The `state` label of `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            RegistrationState::Registering => "registering",
            RegistrationState::Registered => "registered",
            RegistrationState::BackingOff => "backing_off",
            RegistrationState::Unregistered => "unregistered",
        }
    }

    fn from_u8(value: u8) -> RegistrationState {
        match value {
            1 => RegistrationState::Registered,
            2 => RegistrationState::BackingOff,
            3 => RegistrationState::Unregistered,
            _ => RegistrationState::Registering,
        }
    }
}

/// A registration's state and counters, written by the SIP task, read by `/metrics`.
#[derive(Debug, Default)]
pub struct RegistrationStats {
    state: AtomicU8,
    /// REGISTER requests sent (challenge answers and refreshes included;
    /// retransmissions not).
    pub requests_total: AtomicU64,
    /// Tries that ended in failure: a final response other than 2xx that we
    /// could not answer, or no answer at all.
    pub failures_total: AtomicU64,
    /// The status of the last failure (408 for no answer); 0 before any.
    pub last_failure_code: AtomicU64,
    /// The expiry the registrar granted last; 0 while not registered.
    pub expires_s: AtomicU64,
}

impl RegistrationStats {
    pub fn state(&self) -> RegistrationState {
        RegistrationState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: RegistrationState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }
}

/// The challenge we answer on every REGISTER until the registrar sends a new
/// one: refreshes then need no 401 round trip (RFC 2617 3.2.2, the nonce
/// count goes up by one per request).
#[derive(Clone, Debug)]
struct Answering {
    /// `Authorization` or `Proxy-Authorization`.
    header: &'static str,
    challenge: Challenge,
    nonce_count: u32,
}

/// What the endpoint does after a final response or a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send the next REGISTER now (a challenge answered, a 423 followed, the
    /// unregistration that waited for a REGISTER in flight).
    SendNow,
    /// Nothing until `due()`.
    Wait,
}

/// Why a try failed, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Failure {
    code: u16,
    reason: String,
}

#[derive(Debug)]
pub struct Registration {
    config: RegistrationConfig,
    stats: std::sync::Arc<RegistrationStats>,
    call_id: String,
    from_tag: String,
    cseq: u32,
    state: RegistrationState,
    /// The expiry we ask for: the configured one, raised by a 423's Min-Expires.
    requested_s: u32,
    /// When the next REGISTER (refresh or retry) is due; `None` while one is
    /// in flight, or once stopped.
    due: Option<Instant>,
    in_flight: bool,
    /// The REGISTER in flight removes the binding (expires 0).
    removing: bool,
    /// The bridge is stopping: no more REGISTERs but the removal.
    stopping: bool,
    answering: Option<Answering>,
    /// This try answered a fresh challenge already; a second one means our
    /// credentials were refused (RFC 3261 22.2), unless only the nonce was stale.
    answered_this_try: bool,
    stale_retried: bool,
    failures_in_a_row: u32,
    /// The last failure logged, so a registrar that keeps refusing is logged once.
    last_logged_failure: Option<Failure>,
}

impl Registration {
    /// A registration whose first REGISTER is due at `now`; `call_id` and
    /// `from_tag` stay for its life (RFC 3261 10.2.4: refreshes reuse the Call-ID).
    pub fn new(
        now: Instant,
        config: RegistrationConfig,
        stats: std::sync::Arc<RegistrationStats>,
        call_id: String,
        from_tag: String,
    ) -> Registration {
        stats.set_state(RegistrationState::Registering);
        Registration {
            requested_s: config.expires_s,
            config,
            stats,
            call_id,
            from_tag,
            cseq: 0,
            state: RegistrationState::Registering,
            due: Some(now),
            in_flight: false,
            removing: false,
            stopping: false,
            answering: None,
            answered_this_try: false,
            stale_retried: false,
            failures_in_a_row: 0,
            last_logged_failure: None,
        }
    }

    pub fn config(&self) -> &RegistrationConfig {
        &self.config
    }

    /// The registrar's name resolves to `address` now.
    pub fn move_to(&mut self, address: SocketAddr) {
        if self.config.destination != address {
            tracing::info!(aor = %self.config.aor, from = %self.config.destination, to = %address, "registrar moved");
            self.config.destination = address;
        }
    }

    pub fn state(&self) -> RegistrationState {
        self.state
    }

    /// When the next REGISTER is due.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Our Contact, `<sip:contact_user@local_addr>` (the one calls are placed to).
    fn contact(&self, local_addr: SocketAddr) -> String {
        contact_header(local_addr, &self.config.contact_user, self.config.transport)
    }

    /// Writes the next REGISTER (a removal once stopping) and counts it.
    /// `branch` and `cnonce` are fresh random tokens from the endpoint.
    pub fn request(
        &mut self,
        local_addr: SocketAddr,
        user_agent: &str,
        branch: &str,
        cnonce: &str,
    ) -> Bytes {
        self.cseq += 1;
        self.due = None;
        self.in_flight = true;
        self.removing = self.stopping;
        self.stats.requests_total.fetch_add(1, Ordering::Relaxed);
        let via = format!(
            "SIP/2.0/{} {local_addr};branch={branch};rport",
            self.config.transport.via_token()
        );
        let from = format!("<{}>;tag={}", self.config.aor, self.from_tag);
        let to = format!("<{}>", self.config.aor);
        let contact = self.contact(local_addr);
        let expires = if self.removing {
            "0".to_owned()
        } else {
            self.requested_s.to_string()
        };
        let authorization = self.answering.as_mut().map(|answering| {
            answering.nonce_count += 1;
            let value = auth::authorization(
                &answering.challenge,
                &self.config.auth_user,
                &self.config.password,
                "REGISTER",
                &self.config.registrar_uri,
                cnonce,
                answering.nonce_count,
            );
            (answering.header, value)
        });
        let mut extra: Vec<(&str, &str)> = vec![
            ("Contact", contact.as_str()),
            ("Expires", expires.as_str()),
            ("Allow", ALLOW),
        ];
        if let Some((header, value)) = &authorization {
            extra.push((header, value.as_str()));
        }
        message::write_request(&OutgoingRequest {
            method: "REGISTER",
            request_uri: &self.config.registrar_uri,
            via: &via,
            routes: &[],
            from: &from,
            to: &to,
            call_id: &self.call_id,
            cseq: self.cseq,
            extra: &extra,
            body: None,
            user_agent,
        })
    }

    /// The final response to our REGISTER.
    pub fn on_response(
        &mut self,
        now: Instant,
        local_addr: SocketAddr,
        response: &Response,
    ) -> Next {
        self.in_flight = false;
        if response.code < 300 {
            return self.on_success(now, local_addr, response);
        }
        if !self.removing {
            if matches!(response.code, 401 | 407) && self.answer(response) {
                return Next::SendNow;
            }
            if response.code == 423 && self.raise_expiry(response) {
                return Next::SendNow;
            }
        }
        let retry_after = header_seconds(response, &Name::RETRY_AFTER);
        self.fail(
            now,
            Failure {
                code: response.code,
                reason: response.reason.clone(),
            },
            retry_after,
        );
        Next::Wait
    }

    /// Our REGISTER got no final response (timer F).
    pub fn on_timeout(&mut self, now: Instant) {
        self.in_flight = false;
        self.fail(
            now,
            Failure {
                code: 408,
                reason: "no answer from the registrar".to_owned(),
            },
            None,
        );
    }

    /// The bridge stops: remove the binding if there may be one. `SendNow`
    /// when the removal goes now; a REGISTER in flight is followed by it.
    pub fn stop(&mut self) -> Next {
        self.stopping = true;
        if self.in_flight {
            return Next::Wait;
        }
        self.due = None;
        if self.state == RegistrationState::Registered {
            Next::SendNow
        } else {
            self.set_state(RegistrationState::Unregistered);
            Next::Wait
        }
    }

    fn on_success(&mut self, now: Instant, local_addr: SocketAddr, response: &Response) -> Next {
        self.answered_this_try = false;
        self.stale_retried = false;
        self.failures_in_a_row = 0;
        self.last_logged_failure = None;
        if self.removing || self.stopping {
            if !self.removing {
                // A REGISTER crossed the shutdown: remove what it just bound.
                return Next::SendNow;
            }
            self.stats.expires_s.store(0, Ordering::Relaxed);
            tracing::info!(aor = %self.config.aor, "registration removed");
            self.set_state(RegistrationState::Unregistered);
            return Next::Wait;
        }
        let ours = self.contact(local_addr);
        let granted_s =
            granted_expiry(response, ours.trim_matches(['<', '>'])).unwrap_or(self.requested_s);
        if granted_s == 0 {
            // Our binding listed with expires=0: the registrar did not keep it.
            self.fail(
                now,
                Failure {
                    code: response.code,
                    reason: "the registrar's 200 grants our Contact no time".to_owned(),
                },
                None,
            );
            return Next::Wait;
        }
        let granted = Duration::from_secs(u64::from(granted_s));
        self.due = Some(now + granted - REFRESH_MARGIN.min(granted / 2));
        self.stats
            .expires_s
            .store(u64::from(granted_s), Ordering::Relaxed);
        if self.state != RegistrationState::Registered {
            tracing::info!(
                aor = %self.config.aor,
                registrar = %self.config.registrar_uri,
                expires_s = granted_s,
                "registered"
            );
        } else {
            tracing::debug!(aor = %self.config.aor, expires_s = granted_s, "registration refreshed");
        }
        self.set_state(RegistrationState::Registered);
        Next::Wait
    }

    /// Takes the challenge of a 401 or 407 for the next REGISTER; `false` when
    /// we cannot answer it or our answer to this try's challenge was refused.
    fn answer(&mut self, response: &Response) -> bool {
        let (challenge_header, answer_header) = match response.code {
            401 => (Name::WWW_AUTHENTICATE, "Authorization"),
            _ => (Name::PROXY_AUTHENTICATE, "Proxy-Authorization"),
        };
        for value in response.header_values(&challenge_header) {
            let challenge = match auth::parse_challenge(&value) {
                Ok(challenge) => challenge,
                Err(error) => {
                    tracing::debug!(aor = %self.config.aor, %error, "registrar challenge not answered");
                    continue;
                }
            };
            if self
                .config
                .realm
                .as_ref()
                .is_some_and(|realm| *realm != challenge.realm)
            {
                continue;
            }
            let refused = self.answered_this_try && (!challenge.stale || self.stale_retried);
            self.stale_retried |= self.answered_this_try;
            self.answered_this_try = true;
            // Kept even when refused: the retry answers the newest nonce.
            self.answering = Some(Answering {
                header: answer_header,
                challenge,
                nonce_count: 0,
            });
            return !refused;
        }
        false
    }

    /// 423 Interval Too Brief: ask again with the registrar's Min-Expires
    /// (RFC 3261 10.2.8), once per larger value and never beyond `MAX_EXPIRES_S`.
    fn raise_expiry(&mut self, response: &Response) -> bool {
        match header_seconds(response, &Name::MIN_EXPIRES) {
            Some(min) if min > self.requested_s && min <= MAX_EXPIRES_S => {
                tracing::info!(aor = %self.config.aor, from_s = self.requested_s, to_s = min, "registrar wants a longer expiry");
                self.requested_s = min;
                true
            }
            _ => false,
        }
    }

    fn fail(&mut self, now: Instant, failure: Failure, retry_after_s: Option<u32>) {
        self.answered_this_try = false;
        self.stale_retried = false;
        self.stats.failures_total.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_failure_code
            .store(u64::from(failure.code), Ordering::Relaxed);
        self.stats.expires_s.store(0, Ordering::Relaxed);
        if self.removing || self.stopping {
            tracing::info!(aor = %self.config.aor, code = failure.code, reason = %failure.reason, "registration not removed");
            self.due = None;
            self.set_state(RegistrationState::Unregistered);
            return;
        }
        let wait = retry_wait(self.failures_in_a_row, retry_after_s);
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        self.due = Some(now + wait);
        if self.last_logged_failure.as_ref() != Some(&failure) {
            tracing::warn!(
                aor = %self.config.aor,
                registrar = %self.config.registrar_uri,
                code = failure.code,
                reason = %failure.reason,
                retry_in_s = wait.as_secs(),
                "registration failed"
            );
        } else {
            tracing::debug!(aor = %self.config.aor, code = failure.code, retry_in_s = wait.as_secs(), "registration failed again");
        }
        self.last_logged_failure = Some(failure);
        self.set_state(RegistrationState::BackingOff);
    }

    fn set_state(&mut self, state: RegistrationState) {
        self.state = state;
        self.stats.set_state(state);
    }
}

/// How long to wait after `failures_before` failures in a row (and this
/// one): `RETRY_FIRST` doubling up to `RETRY_MAX`, longer when the registrar
/// asked with Retry-After (bounded by `RETRY_MAX` too).
pub fn retry_wait(failures_before: u32, retry_after_s: Option<u32>) -> Duration {
    let doubled = RETRY_FIRST.saturating_mul(1u32 << failures_before.min(16));
    let asked = Duration::from_secs(u64::from(retry_after_s.unwrap_or(0)));
    doubled.max(asked).min(RETRY_MAX)
}

/// The leading number of a header such as `Min-Expires: 3600` or
/// `Retry-After: 120 (maintenance)`.
fn header_seconds(response: &Response, name: &Name) -> Option<u32> {
    let value = response.header_values(name).into_iter().next()?;
    let digits: String = value
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The expiry the registrar granted our binding (RFC 3261 10.2.4): the
/// `expires` parameter of the Contact that is ours, else the Expires header.
/// A registrar behind which we are NATed may list our Contact rewritten to
/// the address it saw (Asterisk's `rewrite_contact`): then the Contact with
/// our user part is ours. A 200 that lists no Contact of ours still says
/// the REGISTER succeeded; its Expires header, if any, is the grant.
fn granted_expiry(response: &Response, ours: &str) -> Option<u32> {
    let contacts: Vec<(String, String)> = response
        .header_values(&Name::CONTACT)
        .iter()
        .flat_map(|value| message::split_commas(value))
        .map(|contact| {
            let (uri, params) = match contact.split_once('<') {
                Some((_, rest)) => rest.split_once('>').unwrap_or((rest, "")),
                None => contact.split_once(';').unwrap_or((&contact, "")),
            };
            (uri.trim().to_owned(), params.to_owned())
        })
        .collect();
    let mine = contacts
        .iter()
        .find(|(uri, _)| same_contact(uri, ours))
        .or_else(|| {
            contacts
                .iter()
                .find(|(uri, _)| uri_user(uri) == uri_user(ours))
        });
    mine.and_then(|(_, params)| {
        params.split(';').find_map(|param| {
            let (name, value) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("expires")
                .then(|| value.trim().trim_matches('"').parse::<u32>().ok())?
        })
    })
    .or_else(|| header_seconds(response, &Name::EXPIRES))
}

/// The user part of a SIP URI, empty if none.
fn uri_user(uri: &str) -> &str {
    let rest = uri.split_once(':').map_or(uri, |(_, rest)| rest);
    rest.split_once('@').map_or("", |(user, _)| user)
}

/// Whether two Contact URIs name the same binding: scheme, user, host and
/// port, ignoring case of the host and the URI parameters.
fn same_contact(listed: &str, ours: &str) -> bool {
    let base = |uri: &str| {
        uri.trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    base(listed) == base(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_thirty_seconds_doubling_to_ten_minutes() {
        let waits: Vec<u64> = (0..7).map(|n| retry_wait(n, None).as_secs()).collect();
        assert_eq!(waits, vec![30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(retry_wait(40, None), RETRY_MAX);
        assert_eq!(retry_wait(0, Some(120)).as_secs(), 120);
        assert_eq!(retry_wait(0, Some(100_000)), RETRY_MAX);
    }

    fn ok(contacts: &str) -> Response {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n\
             From: <sip:2000@pbx>;tag=a\r\nTo: <sip:2000@pbx>;tag=b\r\nCall-ID: c\r\n\
             CSeq: 2 REGISTER\r\n{contacts}Content-Length: 0\r\n\r\n"
        );
        match message::parse(text.as_bytes(), "192.0.2.50:5060".parse().expect("addr")) {
            Ok(message::Message::Response(response)) => *response,
            other => panic!("not a response: {other:?}"),
        }
    }

    #[test]
    fn the_grant_is_our_contacts_even_when_the_registrar_rewrote_its_address() {
        let ours = "sip:conf@192.168.1.20:5060";
        let listed =
            "Contact: <sip:conf@192.168.1.20:5060>;expires=1200, <sip:x@192.0.2.9>;expires=60\r\n";
        assert_eq!(granted_expiry(&ok(listed), ours), Some(1200));
        // Asterisk's rewrite_contact: our Contact as the NAT showed it.
        let rewritten = "Contact: <sip:x@192.0.2.9>;expires=60\r\nContact: <sip:conf@203.0.113.5:40112>;expires=900\r\n";
        assert_eq!(granted_expiry(&ok(rewritten), ours), Some(900));
        // Nothing of ours listed: the Expires header, else nothing known.
        let others = "Contact: <sip:x@192.0.2.9>;expires=60\r\nExpires: 300\r\n";
        assert_eq!(granted_expiry(&ok(others), ours), Some(300));
        assert_eq!(
            granted_expiry(&ok("Contact: <sip:x@192.0.2.9>;expires=60\r\n"), ours),
            None
        );
        assert_eq!(
            granted_expiry(
                &ok("Contact: <sip:conf@192.168.1.20:5060>;expires=0\r\n"),
                ours
            ),
            Some(0)
        );
    }

    #[test]
    fn contacts_compare_without_parameters_and_host_case() {
        assert!(same_contact(
            "sip:conf@192.0.2.1:5060;transport=udp",
            "sip:conf@192.0.2.1:5060"
        ));
        assert!(same_contact(
            "SIP:conf@Bridge.example:5060",
            "sip:conf@bridge.example:5060"
        ));
        assert!(!same_contact(
            "sip:conf@192.0.2.1:5061",
            "sip:conf@192.0.2.1:5060"
        ));
        assert!(!same_contact(
            "sip:other@192.0.2.1:5060",
            "sip:conf@192.0.2.1:5060"
        ));
    }
}
