//! The switchboard's rules, driven in memory on a fake clock: SIP events,
//! media events and API requests in; the SIP commands, media commands,
//! callbacks and replies it hands out are what each test checks. No socket,
//! no sleep, no thread. This file is the harness; the tests are grouped by
//! the rules they pin: `rooms` (routing, the PIN lobby), `application`
//! (incoming calls for the application, the API's changes to members and
//! conferences, what the phone and the keypad do), `outbound` (calls the
//! API places, and shutdown), `audio`.

mod application;
mod audio;
mod cascade;
mod outbound;
mod rooms;
mod talking;

use super::*;
use crate::conference::{Conference, ConferenceState, MemberState, Profile};
use crate::config::Config;
use crate::media::{ClipEnd, ClipTarget, DigitSource, MemberFlags, MemberKey};
use crate::sip::sdp;
use crate::sip::{EndReason, Transport};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const PHONE: ([u8; 4], u16) = ([192, 0, 2, 10], 5060);
const APP: &str = "http://app.example/calls";

/// RTP ports with no sockets, counted so a test can see them given back.
struct FakePorts {
    next: u16,
    in_use: Arc<AtomicUsize>,
    /// The ports left; `None`: as many as asked for.
    left: Option<usize>,
}

impl RtpPorts for FakePorts {
    fn bind_pair(&mut self, _now: std::time::Instant) -> Option<CallPorts> {
        if let Some(left) = &mut self.left {
            *left = left.checked_sub(1)?;
        }
        self.next += 2;
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Some(CallPorts::shared(self.next))
    }

    fn release(&mut self, _ports: &CallPorts, _now: std::time::Instant) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }

    fn media_address_towards(&self, _remote: std::net::IpAddr) -> std::net::IpAddr {
        std::net::IpAddr::from([192, 0, 2, 1])
    }
}

/// The switchboard with its records, on a clock the test moves.
struct Bridge {
    switchboard: Switchboard,
    records: Registry,
    now: Now,
    next_request: RequestId,
    ports_in_use: Arc<AtomicUsize>,
}

impl Bridge {
    /// A bridge with `config` (TOML, like the file) and as many RTP ports as asked for.
    fn new(config: &str) -> Bridge {
        Bridge::with_ports(config, None)
    }

    fn with_ports(config: &str, ports: Option<usize>) -> Bridge {
        let config = Config::parse(config, "test").expect("valid test config");
        let ports_in_use = Arc::new(AtomicUsize::new(0));
        let ports = FakePorts {
            next: 20_000,
            in_use: ports_in_use.clone(),
            left: ports,
        };
        let now = Now::current();
        Bridge {
            switchboard: Switchboard::new(Arc::new(config), Box::new(ports), now),
            records: Registry::new(),
            now,
            next_request: 0,
            ports_in_use,
        }
    }

    /// Hands one input over and takes out everything it caused.
    fn handle(&mut self, input: Input) -> Vec<Action> {
        self.switchboard.handle(self.now, &mut self.records, input);
        std::iter::from_fn(|| self.switchboard.poll_action()).collect()
    }

    fn sip(&mut self, event: SipEvent) -> Vec<Action> {
        self.handle(Input::Sip(event))
    }

    fn media(&mut self, event: Event) -> Vec<Action> {
        self.handle(Input::Media(event))
    }

    /// An INVITE from a phone to `user`, as the endpoint reports it.
    fn invite(&mut self, key: u64, user: &str) -> Vec<Action> {
        self.invite_from(key, user, SocketAddr::from(PHONE))
    }

    /// An INVITE to `user` whose signalling came from `source`.
    fn invite_from(&mut self, key: u64, user: &str, source: SocketAddr) -> Vec<Action> {
        self.sip(SipEvent::IncomingCall {
            call: CallKey(key),
            user: user.to_string(),
            from: format!("sip:caller{key}@192.0.2.10"),
            to: format!("sip:{user}@192.0.2.1"),
            offer: offer(4000 + 2 * key as u16, "sendrecv"),
            source,
            transport: Transport::Udp,
            link: None,
        })
    }

    /// An API request; returns its reply (which must come at once) and the rest.
    fn api(&mut self, call: ApiRequest) -> (Result<Reply, CallError>, Vec<Action>) {
        let (reply, rest) = self.api_deferred(call);
        (reply.expect("the reply comes at once"), rest)
    }

    fn api_deferred(
        &mut self,
        call: ApiRequest,
    ) -> (Option<Result<Reply, CallError>>, Vec<Action>) {
        self.next_request += 1;
        let request = self.next_request;
        let actions = self.handle(Input::Api { request, call });
        split_reply(request, actions)
    }

    /// Moves the clock on by `by`, firing what fell due.
    fn advance(&mut self, by: Duration) -> Vec<Action> {
        self.now = self.now.after(by);
        match self.switchboard.poll_timeout() {
            Some(due) if due <= self.now.instant => self.handle(Input::Timeout),
            _ => Vec::new(),
        }
    }

    /// The call record made for the `n`th call (1-based) this bridge saw.
    fn call_record(&self, call_id: &str) -> crate::conference::CallRecord {
        self.records
            .call(call_id)
            .expect("call record")
            .into_owned()
    }

    fn room_conference(&self, room: &str) -> Conference {
        self.records
            .room_conference(room)
            .expect("the room has a conference")
            .clone()
    }
}

fn split_reply(
    request: RequestId,
    actions: Vec<Action>,
) -> (Option<Result<Reply, CallError>>, Vec<Action>) {
    let mut reply = None;
    let mut rest = Vec::new();
    for action in actions {
        match action {
            Action::Reply { request: r, result } if r == request => reply = Some(result),
            other => rest.push(other),
        }
    }
    (reply, rest)
}

/// An SDP offer of PCMU with telephone-event, receiving at 192.0.2.10:`port`.
fn offer(port: u16, direction: &str) -> sdp::Offer {
    let text = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    );
    sdp::parse_offer(text.as_bytes()).expect("valid offer")
}

fn sip_commands(actions: &[Action]) -> Vec<&SipCommand> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Sip(command) => Some(command),
            _ => None,
        })
        .collect()
}

fn media_commands(actions: &[Action]) -> Vec<&Command> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Media(command) => Some(command),
            _ => None,
        })
        .collect()
}

/// The callbacks an action list queues, each as `eventType` plus what tells
/// it apart (`conference:created`, `conference-member:active`,
/// `hangup:USER_BUSY`...).
fn callbacks(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Callback(callback) => Some(describe(callback)),
            _ => None,
        })
        .collect()
}

fn describe(callback: &CallbackEvent) -> String {
    match callback {
        CallbackEvent::Conference(c) => format!("conference:{}", c.state.as_str()),
        CallbackEvent::Member { member, .. } => {
            format!("conference-member:{}", member.state.as_str())
        }
        CallbackEvent::Call { call, event_type } => match (&call.cause, *event_type) {
            (Some(cause), "hangup") => format!("hangup:{cause}"),
            (_, event_type) => event_type.to_string(),
        },
        CallbackEvent::Dtmf { digit, .. } => format!("dtmf:{digit}"),
        CallbackEvent::ConferenceAudio { kind, status, .. } => {
            format!("conference-{kind}:{status}")
        }
        CallbackEvent::CallAudio { kind, status, .. } => format!("{kind}:{status}"),
        CallbackEvent::IncomingCall { .. } => "incomingcall".to_string(),
    }
}

/// The member key of the `AddMember` among `actions`.
fn added(actions: &[Action]) -> (MemberKey, u32, bool) {
    media_commands(actions)
        .into_iter()
        .find_map(|c| match c {
            Command::AddMember(add) => Some((add.key, add.mix, add.keypad)),
            _ => None,
        })
        .expect("an AddMember command")
}

fn fetches(actions: &[Action]) -> Vec<(u64, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Fetch { id, source } => Some((
                *id,
                match source {
                    Source::Speech { sentence, .. } => sentence.clone(),
                    Source::File { url } => url.clone(),
                },
            )),
            _ => None,
        })
        .collect()
}

fn press(key: MemberKey, digit: char) -> Event {
    Event::Digit {
        key,
        digit,
        duration_ms: 100,
        source: DigitSource::Rfc4733,
    }
}

const ROOM: &str = "[[room]]\nnumber = \"1000\"\nname = \"Standup\"\nmax_members = 3\n";
const APPLICATION: &str = "[application]\nincoming_call_url = \"http://app.example/calls\"\n";

/// The application answers a ringing call through the API.
fn answer_for_the_application(bridge: &mut Bridge, call_id: &str) {
    let (reply, _) = bridge.api(ApiRequest::SetCallState {
        call_id: call_id.to_string(),
        state: CallState::Active,
    });
    assert_eq!(reply, Ok(Reply::Done));
}

fn the_call_id(bridge: &Bridge, key: u64) -> String {
    bridge
        .switchboard
        .calls
        .by_id
        .iter()
        .find(|(_, k)| **k == CallKey(key))
        .map(|(id, _)| id.clone())
        .expect("a live call with this key")
}

/// A room caller joined; returns its member id and media key.
fn room_member(bridge: &mut Bridge, key: u64) -> (String, MemberKey) {
    let actions = bridge.invite(key, "1000");
    let (media, _, _) = added(&actions);
    let member = bridge
        .switchboard
        .calls
        .member_of(media)
        .map(|(_, _, joined)| joined.member_id.clone())
        .expect("joined");
    (member, media)
}

fn flags_sent(actions: &[Action]) -> Vec<(MemberKey, MemberFlags)> {
    media_commands(actions)
        .into_iter()
        .filter_map(|c| match c {
            Command::SetFlags { key, flags } => Some((*key, *flags)),
            _ => None,
        })
        .collect()
}

/// An outbound call placed and taken by the endpoint under `key`.
fn placed(bridge: &mut Bridge, key: u64, timeout: Duration) -> String {
    let (_, actions) = bridge.api_deferred(ApiRequest::CreateCall {
        call: OutgoingRequest {
            from: "1000".into(),
            to: "sip:bob@192.0.2.30".into(),
            call_timeout: timeout,
            ..OutgoingRequest::default()
        },
        target: OutboundTarget {
            request_uri: "sip:bob@192.0.2.30".into(),
            destination: SocketAddr::from(([192, 0, 2, 30], 5060)),
            transport: Transport::Udp,
        },
    });
    let Some(Action::Invite { call_id, .. }) = actions.first() else {
        panic!("an INVITE: {actions:?}");
    };
    let call_id = call_id.clone();
    bridge.handle(Input::Invited {
        call_id: call_id.clone(),
        key: Some(CallKey(key)),
    });
    call_id
}
