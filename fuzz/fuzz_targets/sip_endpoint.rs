//! A conversation with the sans-IO SIP endpoint: datagrams from a few
//! sources, time passing, and a call layer that answers, rejects, rings,
//! places and hangs up calls. It fuzzes what happens after parsing: the
//! transaction and dialog tables, re-offers, session timers, CANCEL, digest
//! challenges. Whatever comes in:
//!
//! - everything the endpoint sends is well formed, and what it originates
//!   (requests, 1xx and 2xx answers) reads back with our own parser;
//! - the tables stay within their configured bounds;
//! - every call announced (`IncomingCall`, or placed with `invite`) gets at
//!   most one `Ended`, and nothing after it; once the call layer hangs up
//!   and time runs on, every call has ended and the tables are empty.
//!
//! Input: steps separated by `\n~~\n`, each one control byte and a datagram.
//! Control byte: bits 0-1 the source, bits 2-4 what the call layer does with
//! what happened, bits 5-7 how much time passes first. In the datagram,
//! `$TAG`, `$BRANCH`, `$CALLID` and `$FTAG` stand for our last To tag and
//! our last request's branch, Call-ID and From tag, so the fuzzer can reach
//! the states behind a dialog.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipconf::sip::message::Message;
use sipconf::sip::sdp::{self, SdpSession};
use sipconf::sip::session_timer::TimerSettings;
use sipconf::sip::{
    CallKey, Credentials, Endpoint, EndpointConfig, OutgoingCall, SipEvent, Transport,
};
use sipconf_fuzz::{assert_lexically_well_formed, assert_well_formed_sip};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MAX_TRANSACTIONS: usize = 16;
const MAX_DIALOGS: usize = 4;
const STEP_SEPARATOR: &[u8] = b"\n~~\n";
const ADVANCE_MS: [u64; 8] = [0, 10, 500, 2_000, 8_000, 32_000, 64_000, 200_000];

fn sources() -> [(Transport, SocketAddr); 4] {
    [
        (Transport::Udp, SocketAddr::from(([192, 0, 2, 7], 5062))),
        (Transport::Udp, SocketAddr::from(([192, 0, 2, 8], 5060))),
        (Transport::Tcp, SocketAddr::from(([192, 0, 2, 7], 5062))),
        (
            Transport::Udp,
            SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], 5062)),
        ),
    ]
}

/// What the fuzzer may quote back to the endpoint.
#[derive(Default)]
struct Quotes {
    to_tag: String,
    branch: String,
    call_id: String,
    from_tag: String,
}

/// The call layer's view: calls announced, and which have ended.
#[derive(Default)]
struct Calls {
    ended: HashMap<CallKey, bool>,
    /// Calls waiting for accept/reject, and calls with a re-offer pending.
    offered: Vec<CallKey>,
    reoffered: Vec<CallKey>,
}

struct Harness {
    endpoint: Endpoint,
    now: Instant,
    quotes: Quotes,
    calls: Calls,
    answer_sdp: String,
}

impl Harness {
    fn check_tables(&self) {
        let stats = self.endpoint.stats();
        assert!(stats.transactions_in_use <= MAX_TRANSACTIONS, "{stats:?}");
        assert!(stats.calls_in_use <= MAX_DIALOGS, "{stats:?}");
    }

    /// Sends out what is queued, remembering what the fuzzer may quote.
    fn send(&mut self) {
        while let Some(transmit) = self.endpoint.poll_transmit() {
            match check_sent(&transmit.bytes) {
                Some(Message::Request(request)) => {
                    self.quotes.branch = request.branch.clone();
                    self.quotes.call_id = request.call_id.clone();
                    self.quotes.from_tag = request.from_tag.clone().unwrap_or_default();
                }
                Some(Message::Response(response)) => {
                    if let Some(tag) = &response.to_tag {
                        self.quotes.to_tag = tag.clone();
                    }
                }
                None => {}
            }
        }
        self.check_tables();
    }

    fn events(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            let call = match &event {
                SipEvent::IncomingCall { call, .. } => {
                    assert!(
                        self.calls.ended.insert(*call, false).is_none(),
                        "{call:?} announced twice"
                    );
                    self.calls.offered.push(*call);
                    *call
                }
                SipEvent::Reoffer { call, .. } => {
                    self.calls.reoffered.push(*call);
                    *call
                }
                SipEvent::Confirmed { call }
                | SipEvent::Cancelled { call }
                | SipEvent::Refreshed { call }
                | SipEvent::Progress { call, .. }
                | SipEvent::Answered { call, .. }
                | SipEvent::Failed { call, .. }
                | SipEvent::Established { call, .. } => *call,
                SipEvent::Ended { call, .. } => {
                    let ended = self.calls.ended.get_mut(call);
                    assert_eq!(
                        ended.as_deref(),
                        Some(&false),
                        "Ended for {call:?} twice or unknown"
                    );
                    *ended.expect("known") = true;
                    *call
                }
            };
            assert_eq!(
                self.calls.ended.get(&call),
                Some(&matches!(event, SipEvent::Ended { .. })),
                "{event:?} for a call that ended or was never announced"
            );
        }
    }

    /// The call layer's answer to what happened, chosen by the fuzzer.
    fn act(&mut self, action: u8, source: (Transport, SocketAddr)) {
        let now = self.now;
        match action {
            0 => {
                for call in std::mem::take(&mut self.calls.offered) {
                    self.endpoint.accept(now, call, self.answer_sdp.clone());
                }
                for call in std::mem::take(&mut self.calls.reoffered) {
                    self.endpoint
                        .accept_reoffer(now, call, self.answer_sdp.clone());
                }
            }
            1 => {
                for call in std::mem::take(&mut self.calls.offered) {
                    self.endpoint.reject(now, call, 486, "Busy Here");
                }
                for call in std::mem::take(&mut self.calls.reoffered) {
                    self.endpoint
                        .reject_reoffer(now, call, 488, "Not Acceptable Here");
                }
            }
            2 => {
                for &call in &self.calls.offered {
                    self.endpoint.ring(now, call);
                }
            }
            3 => {
                let newest = self.calls.ended.keys().max_by_key(|c| c.0).copied();
                if let Some(call) = newest {
                    self.endpoint.hangup(now, call);
                }
            }
            4 => {
                let (transport, destination) = source;
                let placed = self.endpoint.invite(
                    now,
                    OutgoingCall {
                        request_uri: format!("sip:alice@{destination}"),
                        from_uri: "sip:1000@bridge".to_owned(),
                        from_display: Some("Room \"1\"".to_owned()),
                        destination,
                        transport,
                        offer_sdp: self.answer_sdp.clone(),
                        credentials: Some(Credentials {
                            username: "bridge".to_owned(),
                            password: "secret".to_owned(),
                        }),
                        link: None,
                    },
                );
                if let Ok(call) = placed {
                    assert!(self.calls.ended.insert(call, false).is_none());
                }
            }
            _ => {} // leave everything pending: the endpoint's own timers decide
        }
    }

    fn step(&mut self, control: u8, datagram: &[u8]) {
        self.now += Duration::from_millis(ADVANCE_MS[usize::from(control >> 5)]);
        self.endpoint.handle_timeout(self.now);
        self.send();
        self.events();
        let source = sources()[usize::from(control & 3)];
        let datagram = self.quote(datagram);
        self.endpoint
            .handle_datagram(self.now, source.0, source.1, &datagram);
        self.send();
        self.events();
        self.act((control >> 2) & 7, source);
        self.send();
        self.events();
    }

    fn quote(&self, datagram: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(datagram) else {
            return datagram.to_vec();
        };
        text.replace("$TAG", &self.quotes.to_tag)
            .replace("$BRANCH", &self.quotes.branch)
            .replace("$CALLID", &self.quotes.call_id)
            .replace("$FTAG", &self.quotes.from_tag)
            .into_bytes()
    }

    /// The call layer hangs up everything; time runs until nothing is left to do.
    fn wind_down(&mut self) {
        let calls: Vec<CallKey> = self.calls.ended.keys().copied().collect();
        for call in calls {
            self.endpoint.hangup(self.now, call);
        }
        self.send();
        self.events();
        for _ in 0..1_000 {
            let Some(at) = self.endpoint.poll_timeout() else {
                break;
            };
            self.now = self.now.max(at);
            self.endpoint.handle_timeout(self.now);
            self.send();
            self.events();
            // Calls still coming up (a re-offer answered late) are hung up again.
            let open: Vec<CallKey> = self
                .calls
                .ended
                .iter()
                .filter(|(_, ended)| !**ended)
                .map(|(call, _)| *call)
                .collect();
            for call in open {
                self.endpoint.hangup(self.now, call);
            }
        }
        assert_eq!(self.endpoint.poll_timeout(), None, "timers never settle");
        let stats = self.endpoint.stats();
        assert_eq!(stats.calls_in_use, 0, "{stats:?}");
        assert_eq!(stats.transactions_in_use, 0, "{stats:?}");
        for (call, ended) in &self.calls.ended {
            assert!(ended, "{call:?} never ended");
        }
    }
}

/// Lexically well formed always; parsed when it is something we originate.
fn check_sent(bytes: &[u8]) -> Option<Message> {
    let text = std::str::from_utf8(bytes).expect("what we write is UTF-8");
    let originated = !text.starts_with("SIP/2.0 ")
        || text.starts_with("SIP/2.0 1")
        || text.starts_with("SIP/2.0 2");
    if originated {
        Some(assert_well_formed_sip(bytes))
    } else {
        assert_lexically_well_formed(bytes);
        sipconf::sip::message::parse(bytes, sipconf_fuzz::source()).ok()
    }
}

fuzz_target!(|data: &[u8]| {
    let local = SocketAddr::from(([192, 0, 2, 1], 5060));
    let mut harness = Harness {
        endpoint: Endpoint::new(EndpointConfig {
            local_addr: local,
            user_agent: "sipconf-fuzz".to_owned(),
            max_transactions: MAX_TRANSACTIONS,
            max_dialogs: MAX_DIALOGS,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            session_timer: TimerSettings::default(),
            limits: sipconf::sip::source_guard::SourceLimits::default(),
            limit_stats: std::sync::Arc::default(),
            tls_port: None,
        }),
        now: Instant::now(),
        quotes: Quotes::default(),
        calls: Calls::default(),
        answer_sdp: sdp::build_offer(
            SdpSession::new(1),
            SocketAddr::from(([192, 0, 2, 1], 20_000)),
            &sdp::SdpCodec::DEFAULT_ORDER,
            101,
            None,
        ),
    };
    let mut rest = data;
    let mut steps = 0;
    while !rest.is_empty() && steps < 64 {
        let (step, after) = match find(rest, STEP_SEPARATOR) {
            Some(at) => (&rest[..at], &rest[at + STEP_SEPARATOR.len()..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        steps += 1;
        if let Some((&control, datagram)) = step.split_first() {
            harness.step(control, datagram);
        }
    }
    harness.wind_down();
});

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
