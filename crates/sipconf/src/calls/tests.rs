//! The switchboard's rules, driven in memory on a fake clock: SIP events,
//! media events and API requests in; the SIP commands, media commands,
//! callbacks and replies it hands out are what each test checks. No socket,
//! no sleep, no thread.

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
    fn bind_pair(&mut self) -> Option<CallPorts> {
        if let Some(left) = &mut self.left {
            *left = left.checked_sub(1)?;
        }
        self.next += 2;
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Some(CallPorts::shared(self.next))
    }

    fn release(&mut self, _ports: &CallPorts) {
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
        self.sip(SipEvent::IncomingCall {
            call: CallKey(key),
            user: user.to_string(),
            from: format!("sip:caller{key}@192.0.2.10"),
            to: format!("sip:{user}@192.0.2.1"),
            offer: offer(4000 + 2 * key as u16, "sendrecv"),
            source: SocketAddr::from(PHONE),
            transport: Transport::Udp,
        })
    }

    /// An API request; returns its reply (which must come at once) and the rest.
    fn api(&mut self, call: ApiRequest) -> (Result<Reply, RecordError>, Vec<Action>) {
        let (reply, rest) = self.api_deferred(call);
        (reply.expect("the reply comes at once"), rest)
    }

    fn api_deferred(
        &mut self,
        call: ApiRequest,
    ) -> (Option<Result<Reply, RecordError>>, Vec<Action>) {
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
) -> (Option<Result<Reply, RecordError>>, Vec<Action>) {
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

#[test]
fn a_caller_to_a_room_number_is_answered_into_the_rooms_conference() {
    let mut bridge = Bridge::new(ROOM);
    let actions = bridge.invite(1, "1000");
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::Accept(CallKey(1), _)]
    ));
    let (_, mix, keypad) = added(&actions);
    assert!(keypad, "a room's conference interprets keys by default");
    assert_eq!(
        callbacks(&actions),
        ["answer", "conference:created", "conference-member:active"]
    );
    let conference = bridge.room_conference("1000");
    assert_eq!(conference.active_members, 1);
    assert_eq!(conference.tag.as_deref(), Some("Standup"));

    // The second caller joins the same conference, in the same mix.
    let actions = bridge.invite(2, "1000");
    let (_, second_mix, _) = added(&actions);
    assert_eq!(second_mix, mix);
    assert_eq!(bridge.room_conference("1000").id, conference.id);
    assert_eq!(bridge.room_conference("1000").active_members, 2);
}

#[test]
fn a_number_that_is_no_room_without_an_application_is_not_found() {
    let mut bridge = Bridge::new(ROOM);
    let actions = bridge.invite(1, "2000");
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(CallKey(1), 404, "Not Found".into())]
    );
    assert_eq!(bridge.switchboard.live_calls(), 0);
}

#[test]
fn a_full_room_refuses_the_next_caller_with_486_and_keeps_no_record() {
    let mut bridge = Bridge::new(ROOM);
    for key in 1..=3 {
        bridge.invite(key, "1000");
    }
    let actions = bridge.invite(4, "1000");
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(
            CallKey(4),
            486,
            "Busy Here (room full)".into()
        )]
    );
    assert!(callbacks(&actions).is_empty());
    assert_eq!(bridge.switchboard.live_calls(), 3);
}

#[test]
fn an_offer_without_a_common_codec_is_refused_with_488() {
    let mut bridge = Bridge::new(ROOM);
    let mut offer = offer(4000, "sendrecv");
    offer.payloads.retain(|p| p.pt == 101);
    let actions = bridge.sip(SipEvent::IncomingCall {
        call: CallKey(1),
        user: "1000".into(),
        from: "sip:a@192.0.2.10".into(),
        to: "sip:1000@192.0.2.1".into(),
        offer,
        source: SocketAddr::from(PHONE),
        transport: Transport::Udp,
    });
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(
            CallKey(1),
            488,
            "Not Acceptable Here".into()
        )]
    );
}

#[test]
fn a_room_with_an_answer_delay_rings_first_and_answers_when_it_is_over() {
    let mut bridge = Bridge::new(&format!("{ROOM}answer_delay_ms = 2000\n"));
    let actions = bridge.invite(1, "1000");
    assert_eq!(sip_commands(&actions), [&SipCommand::Ring(CallKey(1))]);
    assert!(bridge.advance(Duration::from_millis(1999)).is_empty());
    let actions = bridge.advance(Duration::from_millis(1));
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::Accept(CallKey(1), _)]
    ));
}

#[test]
fn no_free_rtp_port_refuses_the_call_with_503_and_ends_its_record() {
    let mut bridge = Bridge::with_ports(ROOM, Some(0));
    let actions = bridge.invite(1, "1000");
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(
            CallKey(1),
            503,
            "Service Unavailable (no RTP port)".into()
        )]
    );
    assert_eq!(callbacks(&actions), ["hangup:CALL_REJECTED"]);
}

const PIN_ROOM: &str = "[[room]]\nnumber = \"1000\"\npin = \"4321\"\n";

/// A caller answered into a PIN room's lobby: its lobby slot and the prompt's fetch.
fn into_the_lobby(bridge: &mut Bridge, key: u64) -> MemberKey {
    let actions = bridge.invite(key, "1000");
    let (lobby, _, keypad) = added(&actions);
    assert!(!keypad, "keys are the PIN in the lobby, never commands");
    assert_eq!(
        fetches(&actions)
            .into_iter()
            .map(|(_, what)| what)
            .collect::<Vec<_>>(),
        [crate::config::DEFAULT_PIN_PROMPT]
    );
    assert!(bridge.records.room_conference("1000").is_none());
    lobby
}

fn enter(bridge: &mut Bridge, lobby: MemberKey, keys: &str) -> Vec<Action> {
    keys.chars()
        .flat_map(|digit| bridge.media(press(lobby, digit)))
        .collect()
}

#[test]
fn the_right_pin_takes_the_caller_from_its_lobby_into_the_room() {
    let mut bridge = Bridge::new(PIN_ROOM);
    let lobby = into_the_lobby(&mut bridge, 1);
    let actions = enter(&mut bridge, lobby, "4321#");
    let commands = media_commands(&actions);
    assert!(matches!(commands[0], Command::RemoveMember { key } if *key == lobby));
    let (member, _, keypad) = added(&actions);
    assert!(keypad);
    assert_ne!(member, lobby);
    assert_eq!(
        callbacks(&actions),
        ["conference:created", "conference-member:active"]
    );
    assert_eq!(bridge.room_conference("1000").active_members, 1);
}

#[test]
fn a_wrong_pin_is_said_so_and_the_third_says_goodbye_and_hangs_up() {
    let mut bridge = Bridge::new(PIN_ROOM);
    let lobby = into_the_lobby(&mut bridge, 1);
    let call_id = the_call_id(&bridge, 1);
    for _ in 0..2 {
        let actions = enter(&mut bridge, lobby, "1111#");
        let said: Vec<String> = fetches(&actions).into_iter().map(|(_, s)| s).collect();
        assert_eq!(said, [WRONG_PIN]);
        assert!(sip_commands(&actions).is_empty());
    }
    let actions = enter(&mut bridge, lobby, "1#");
    let [(goodbye, said)] = &fetches(&actions)[..] else {
        panic!("one prompt: {actions:?}");
    };
    assert_eq!(said, PIN_FAILED);
    // The goodbye plays to the caller, and its end hangs up.
    let clip: Clip = vec![0i16; 800].into();
    let actions = bridge.handle(Input::Clip {
        id: *goodbye,
        result: Ok(clip),
    });
    let played = media_commands(&actions)
        .into_iter()
        .find_map(|c| match c {
            Command::PlayClip { target, id, .. } => Some((*target, *id)),
            _ => None,
        })
        .expect("the goodbye plays");
    assert_eq!(played.0, ClipTarget::Member(lobby));
    let actions = bridge.media(Event::ClipDone {
        id: played.1,
        end: ClipEnd::Finished,
    });
    assert_eq!(sip_commands(&actions), [&SipCommand::Hangup(CallKey(1))]);
    assert_eq!(bridge.call_record(&call_id).state, CallState::Completed);
    assert!(bridge.records.room_conference("1000").is_none());
    // Keys after the last try do nothing.
    assert!(enter(&mut bridge, lobby, "4321#").is_empty());
}

#[test]
fn an_incoming_call_for_the_application_rings_and_the_application_is_told() {
    let mut bridge = Bridge::new(APPLICATION);
    let actions = bridge.invite(1, "5551234");
    assert_eq!(sip_commands(&actions), [&SipCommand::Ring(CallKey(1))]);
    assert_eq!(callbacks(&actions), ["incomingcall"]);
    let Some(CallbackEvent::IncomingCall { url, call }) = actions.iter().find_map(|a| match a {
        Action::Callback(event) => Some(&**event),
        _ => None,
    }) else {
        panic!("an incomingcall");
    };
    assert_eq!(url, APP);
    assert_eq!(call.state, CallState::Started);
}

#[test]
fn the_application_answers_and_adds_the_call_to_a_conference() {
    let mut bridge = Bridge::new(APPLICATION);
    bridge.invite(1, "5551234");
    let call_id = the_call_id(&bridge, 1);
    let (reply, actions) = bridge.api(ApiRequest::SetCallState {
        call_id: call_id.clone(),
        state: CallState::Active,
    });
    assert_eq!(reply, Ok(Reply::Done));
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::Accept(CallKey(1), _)]
    ));
    assert_eq!(callbacks(&actions), ["answer"]);

    let conference = bridge
        .records
        .create_conference("5551234", None, None, bridge.now.wall)
        .id
        .clone();
    let (reply, actions) = bridge.api(ApiRequest::AddMember {
        conference_id: conference.clone(),
        call_id: call_id.clone(),
        options: MemberOptions::default(),
    });
    let Ok(Reply::Created(member)) = reply else {
        panic!("a member id: {reply:?}");
    };
    added(&actions);
    assert_eq!(callbacks(&actions), ["conference-member:active"]);
    assert_eq!(
        bridge.records.member(&member).expect("member").call_id,
        call_id
    );
    // A call can be in one conference at a time.
    let (reply, _) = bridge.api(ApiRequest::AddMember {
        conference_id: conference.clone(),
        call_id: call_id.clone(),
        options: MemberOptions::default(),
    });
    assert_eq!(
        reply,
        Err(RecordError::CallInConference(call_id, conference))
    );
}

#[test]
fn the_application_rejects_a_call_with_603() {
    let mut bridge = Bridge::new(APPLICATION);
    bridge.invite(1, "5551234");
    let call_id = the_call_id(&bridge, 1);
    let (reply, actions) = bridge.api(ApiRequest::SetCallState {
        call_id: call_id.clone(),
        state: CallState::Rejected,
    });
    assert_eq!(reply, Ok(Reply::Done));
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(CallKey(1), 603, "Decline".into())]
    );
    assert_eq!(bridge.call_record(&call_id).state, CallState::Rejected);
    assert_eq!(callbacks(&actions), ["hangup:CALL_REJECTED"]);
}

#[test]
fn a_call_the_application_never_answers_gets_480_at_the_answer_timeout() {
    let mut bridge = Bridge::new(&format!("{APPLICATION}answer_timeout = 10\n"));
    bridge.invite(1, "5551234");
    let call_id = the_call_id(&bridge, 1);
    assert!(bridge.advance(Duration::from_millis(9_999)).is_empty());
    let actions = bridge.advance(Duration::from_millis(1));
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(
            CallKey(1),
            480,
            "Temporarily Unavailable".into()
        )]
    );
    assert_eq!(callbacks(&actions), ["hangup:NO_ANSWER"]);
    assert_eq!(bridge.switchboard.live_calls(), 0);
    // Answering it now is too late.
    let (reply, _) = bridge.api(ApiRequest::SetCallState {
        call_id,
        state: CallState::Active,
    });
    assert!(matches!(
        reply,
        Err(RecordError::CallInvalidState(_, "completed"))
    ));
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

#[test]
fn the_api_mutes_and_holds_a_member_and_the_mixer_is_told() {
    let mut bridge = Bridge::new(ROOM);
    let (member, media) = room_member(&mut bridge, 1);
    let (reply, actions) = bridge.api(ApiRequest::UpdateMember {
        member_id: member.clone(),
        change: MemberChange {
            mute: Some(true),
            ..MemberChange::default()
        },
    });
    assert_eq!(reply, Ok(Reply::Done));
    let muted = MemberFlags {
        muted: true,
        ..MemberFlags::default()
    };
    assert_eq!(flags_sent(&actions), [(media, muted)]);
    assert_eq!(callbacks(&actions), ["conference-member:active"]);
    assert!(bridge.records.member(&member).expect("member").mute);

    let (_, actions) = bridge.api(ApiRequest::UpdateMember {
        member_id: member.clone(),
        change: MemberChange {
            hold: Some(true),
            ..MemberChange::default()
        },
    });
    let held = MemberFlags {
        muted: true,
        held: true,
        ..MemberFlags::default()
    };
    assert_eq!(flags_sent(&actions), [(media, held)]);
}

#[test]
fn a_conference_mute_applies_to_every_member_on_top_of_its_own() {
    let mut bridge = Bridge::new(ROOM);
    let (_, first) = room_member(&mut bridge, 1);
    let (_, second) = room_member(&mut bridge, 2);
    let conference = bridge.room_conference("1000").id;
    let (reply, actions) = bridge.api(ApiRequest::UpdateConference {
        conference_id: conference,
        change: ConferenceChange {
            mute: Some(true),
            ..ConferenceChange::default()
        },
    });
    assert_eq!(reply, Ok(Reply::Done));
    let mut sent = flags_sent(&actions);
    sent.sort_by_key(|(key, _)| key.slot);
    let muted = MemberFlags {
        muted: true,
        ..MemberFlags::default()
    };
    let mut expected = vec![(first, muted), (second, muted)];
    expected.sort_by_key(|(key, _)| key.slot);
    assert_eq!(sent, expected);
}

#[test]
fn removing_a_room_caller_through_the_api_hangs_it_up() {
    let mut bridge = Bridge::new(ROOM);
    let (member, media) = room_member(&mut bridge, 1);
    let (reply, actions) = bridge.api(ApiRequest::UpdateMember {
        member_id: member.clone(),
        change: MemberChange {
            remove: true,
            ..MemberChange::default()
        },
    });
    assert_eq!(reply, Ok(Reply::Done));
    assert!(
        matches!(media_commands(&actions)[..], [Command::RemoveMember { key }] if *key == media)
    );
    assert_eq!(sip_commands(&actions), [&SipCommand::Hangup(CallKey(1))]);
    assert_eq!(
        callbacks(&actions),
        [
            "conference-member:completed",
            "conference:completed",
            "hangup:NORMAL_CLEARING"
        ]
    );
    // Removing it again is no error and does nothing.
    let (reply, actions) = bridge.api(ApiRequest::UpdateMember {
        member_id: member,
        change: MemberChange {
            remove: true,
            ..MemberChange::default()
        },
    });
    assert_eq!(reply, Ok(Reply::Done));
    assert!(actions.is_empty());
}

#[test]
fn removing_an_application_call_leaves_it_up_for_the_application() {
    let mut bridge = Bridge::new(APPLICATION);
    bridge.invite(1, "5551234");
    let call_id = the_call_id(&bridge, 1);
    answer_for_the_application(&mut bridge, &call_id);
    let conference = bridge
        .records
        .create_conference("x", None, None, bridge.now.wall)
        .id
        .clone();
    let (reply, _) = bridge.api(ApiRequest::AddMember {
        conference_id: conference,
        call_id: call_id.clone(),
        options: MemberOptions::default(),
    });
    let Ok(Reply::Created(member)) = reply else {
        panic!("{reply:?}");
    };
    let (_, actions) = bridge.api(ApiRequest::UpdateMember {
        member_id: member,
        change: MemberChange {
            remove: true,
            ..MemberChange::default()
        },
    });
    assert!(sip_commands(&actions).is_empty());
    assert_eq!(bridge.call_record(&call_id).state, CallState::Active);
}

#[test]
fn completing_a_conference_removes_every_member_then_completes_it() {
    let mut bridge = Bridge::new(ROOM);
    room_member(&mut bridge, 1);
    room_member(&mut bridge, 2);
    let conference = bridge.room_conference("1000").id;
    let (reply, actions) = bridge.api(ApiRequest::UpdateConference {
        conference_id: conference.clone(),
        change: ConferenceChange {
            complete: true,
            ..ConferenceChange::default()
        },
    });
    assert_eq!(reply, Ok(Reply::Done));
    let events = callbacks(&actions);
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "conference-member:completed")
            .count(),
        2
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "conference:completed")
            .count(),
        1
    );
    // Room callers have nowhere else to go: both are hung up.
    assert_eq!(sip_commands(&actions).len(), 2);
    let record = bridge.records.conference(&conference).expect("record");
    assert_eq!(record.state, ConferenceState::Completed);
    // The next caller of the room starts a new conference.
    room_member(&mut bridge, 3);
    assert_ne!(bridge.room_conference("1000").id, conference);
}

#[test]
fn the_phone_holding_the_call_holds_its_member_and_is_answered() {
    let mut bridge = Bridge::new(ROOM);
    let (_, media) = room_member(&mut bridge, 1);
    let actions = bridge.sip(SipEvent::Reoffer {
        call: CallKey(1),
        offer: offer(4002, "sendonly"),
    });
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::AcceptReoffer(CallKey(1), answer)] if answer.contains("a=recvonly")
    ));
    let held = MemberFlags {
        held: true,
        ..MemberFlags::default()
    };
    assert_eq!(flags_sent(&actions), [(media, held)]);
    // Resumed: the remote address is set again and the hold lifted.
    let actions = bridge.sip(SipEvent::Reoffer {
        call: CallKey(1),
        offer: offer(4002, "sendrecv"),
    });
    assert!(media_commands(&actions)
        .iter()
        .any(|c| matches!(c, Command::SetRemote { .. })));
    assert_eq!(flags_sent(&actions), [(media, MemberFlags::default())]);
}

#[test]
fn a_reoffer_for_an_unknown_call_gets_481() {
    let mut bridge = Bridge::new(ROOM);
    let actions = bridge.sip(SipEvent::Reoffer {
        call: CallKey(9),
        offer: offer(4000, "sendrecv"),
    });
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::RejectReoffer(CallKey(9), 481, _)]
    ));
}

#[test]
fn no_rtp_for_the_timeout_hangs_the_call_up_and_completes_the_room() {
    let mut bridge = Bridge::new(ROOM);
    let (member, media) = room_member(&mut bridge, 1);
    let actions = bridge.media(Event::RtpTimeout { key: media });
    assert_eq!(sip_commands(&actions), [&SipCommand::Hangup(CallKey(1))]);
    assert_eq!(
        bridge.records.member(&member).expect("member").state,
        MemberState::Completed
    );
    assert_eq!(bridge.ports_in_use.load(Ordering::Relaxed), 0);
    assert_eq!(bridge.switchboard.keys.in_use(), 0);
    assert_eq!(bridge.switchboard.mixes.in_use(), 0);
}

#[test]
fn pound_on_the_keypad_leaves_and_hangs_up() {
    let mut bridge = Bridge::new(ROOM);
    let (_, media) = room_member(&mut bridge, 1);
    let actions = bridge.media(Event::Leave { key: media });
    assert_eq!(sip_commands(&actions), [&SipCommand::Hangup(CallKey(1))]);
    // The phone's BYE transaction ends later: nothing more happens.
    let actions = bridge.sip(SipEvent::Ended {
        call: CallKey(1),
        reason: EndReason::LocalBye,
    });
    assert!(actions.is_empty());
}

#[test]
fn a_keypad_mute_is_written_to_the_member_and_the_application_told() {
    let mut bridge = Bridge::new(ROOM);
    let (member, media) = room_member(&mut bridge, 1);
    let muted = MemberFlags {
        muted: true,
        ..MemberFlags::default()
    };
    let actions = bridge.media(Event::FlagsChanged {
        key: media,
        flags: muted,
    });
    assert_eq!(callbacks(&actions), ["conference-member:active"]);
    assert!(bridge.records.member(&member).expect("member").mute);
    // The same flags again change nothing.
    assert!(bridge
        .media(Event::FlagsChanged {
            key: media,
            flags: muted
        })
        .is_empty());
}

#[test]
fn keys_in_a_passthru_conference_go_to_the_application() {
    let mut bridge = Bridge::new(APPLICATION);
    bridge.invite(1, "5551234");
    let call_id = the_call_id(&bridge, 1);
    answer_for_the_application(&mut bridge, &call_id);
    let conference = bridge
        .records
        .create_conference_with(
            "x",
            None,
            None,
            Profile::PassthruDigits,
            Default::default(),
            bridge.now.wall,
        )
        .id
        .clone();
    let (_, actions) = bridge.api(ApiRequest::AddMember {
        conference_id: conference,
        call_id,
        options: MemberOptions::default(),
    });
    let (media, _, keypad) = added(&actions);
    assert!(!keypad);
    let actions = bridge.media(press(media, '7'));
    assert_eq!(callbacks(&actions), ["dtmf:7"]);
}

#[test]
fn an_outbound_call_is_placed_answered_and_joins_its_conference() {
    let mut bridge = Bridge::new("");
    let conference = bridge
        .records
        .create_conference("x", None, None, bridge.now.wall)
        .id
        .clone();
    let (reply, actions) = bridge.api_deferred(ApiRequest::CreateCall {
        call: OutgoingRequest {
            from: "+15550000".into(),
            to: "sip:alice@192.0.2.20".into(),
            conference_id: Some(conference.clone()),
            call_timeout: Duration::from_secs(30),
            ..OutgoingRequest::default()
        },
        target: OutboundTarget {
            request_uri: "sip:alice@192.0.2.20".into(),
            destination: SocketAddr::from(([192, 0, 2, 20], 5060)),
            transport: Transport::Udp,
        },
    });
    assert!(reply.is_none(), "the reply waits for the endpoint's key");
    let [Action::Invite { call_id, call }] = &actions[..] else {
        panic!("one INVITE: {actions:?}");
    };
    assert_eq!(call.from_uri, "sip:+15550000@192.0.2.1");
    assert!(call.offer_sdp.contains("m=audio 20002 RTP/AVP"));
    let call_id = call_id.clone();
    let actions = bridge.handle(Input::Invited {
        call_id: call_id.clone(),
        key: Some(CallKey(7)),
    });
    let (reply, _) = split_reply(1, actions);
    assert_eq!(reply, Some(Ok(Reply::Created(call_id.clone()))));

    let answer = offer(6000, "sendrecv");
    let actions = bridge.sip(SipEvent::Answered {
        call: CallKey(7),
        answer,
    });
    assert_eq!(callbacks(&actions), ["answer", "conference-member:active"]);
    added(&actions);
    assert_eq!(bridge.call_record(&call_id).state, CallState::Active);
    assert_eq!(
        bridge
            .records
            .conference(&conference)
            .expect("conference")
            .active_members,
        1
    );
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

#[test]
fn an_outbound_call_nobody_answers_is_cancelled_at_its_call_timeout() {
    let mut bridge = Bridge::new("");
    let call_id = placed(&mut bridge, 7, Duration::from_secs(20));
    assert!(bridge.advance(Duration::from_secs(19)).is_empty());
    let actions = bridge.advance(Duration::from_secs(1));
    assert_eq!(sip_commands(&actions), [&SipCommand::Hangup(CallKey(7))]);
    // The endpoint's CANCEL ends the INVITE with 487: the cause is our timeout.
    let actions = bridge.sip(SipEvent::Failed {
        call: CallKey(7),
        code: 487,
        reason: "Request Terminated".into(),
    });
    assert_eq!(callbacks(&actions), ["hangup:NO_ANSWER"]);
    assert_eq!(bridge.call_record(&call_id).state, CallState::Completed);
    assert_eq!(bridge.ports_in_use.load(Ordering::Relaxed), 0);
}

#[test]
fn an_outbound_call_cancelled_through_the_api_is_originator_cancel() {
    let mut bridge = Bridge::new("");
    let call_id = placed(&mut bridge, 7, Duration::from_secs(30));
    let (reply, actions) = bridge.api(ApiRequest::SetCallState {
        call_id: call_id.clone(),
        state: CallState::Completed,
    });
    assert_eq!(reply, Ok(Reply::Done));
    assert_eq!(sip_commands(&actions), [&SipCommand::Hangup(CallKey(7))]);
    assert_eq!(callbacks(&actions), ["hangup:ORIGINATOR_CANCEL"]);
    // Answering our own ringing call makes no sense.
    let call_id = placed(&mut bridge, 8, Duration::from_secs(30));
    let (reply, _) = bridge.api(ApiRequest::SetCallState {
        call_id,
        state: CallState::Active,
    });
    assert!(matches!(
        reply,
        Err(RecordError::CallInvalidState(_, "started"))
    ));
}

#[test]
fn a_busy_far_end_rejects_the_outbound_call_as_user_busy() {
    let mut bridge = Bridge::new("");
    let call_id = placed(&mut bridge, 7, Duration::from_secs(30));
    let actions = bridge.sip(SipEvent::Failed {
        call: CallKey(7),
        code: 486,
        reason: "Busy Here".into(),
    });
    assert_eq!(callbacks(&actions), ["hangup:USER_BUSY"]);
    assert_eq!(bridge.call_record(&call_id).state, CallState::Rejected);
}

#[test]
fn an_outbound_call_the_endpoint_has_no_room_for_is_refused_and_its_ports_given_back() {
    let mut bridge = Bridge::new("");
    let (_, actions) = bridge.api_deferred(ApiRequest::CreateCall {
        call: OutgoingRequest {
            from: "1000".into(),
            to: "sip:bob@192.0.2.30".into(),
            call_timeout: Duration::from_secs(30),
            ..OutgoingRequest::default()
        },
        target: OutboundTarget {
            request_uri: "sip:bob@192.0.2.30".into(),
            destination: SocketAddr::from(([192, 0, 2, 30], 5060)),
            transport: Transport::Udp,
        },
    });
    let Some(Action::Invite { call_id, .. }) = actions.first() else {
        panic!("an INVITE");
    };
    let call_id = call_id.clone();
    let actions = bridge.handle(Input::Invited {
        call_id: call_id.clone(),
        key: None,
    });
    let (reply, _) = split_reply(1, actions);
    assert!(matches!(reply, Some(Err(RecordError::Busy(_)))));
    assert_eq!(bridge.call_record(&call_id).state, CallState::Rejected);
    assert_eq!(bridge.ports_in_use.load(Ordering::Relaxed), 0);
}

#[test]
fn stopping_hangs_up_every_call_and_completes_every_record() {
    let mut bridge = Bridge::new(&format!("{ROOM}{APPLICATION}"));
    room_member(&mut bridge, 1);
    room_member(&mut bridge, 2);
    bridge.invite(3, "5551234");
    let outbound = placed(&mut bridge, 4, Duration::from_secs(30));
    let ids: Vec<String> = (1..=3).map(|key| the_call_id(&bridge, key)).collect();
    assert_eq!(bridge.switchboard.answered_calls(), 2);

    let actions = bridge.handle(Input::Shutdown);
    let mut commands: Vec<String> = sip_commands(&actions)
        .into_iter()
        .map(|c| format!("{c:?}"))
        .collect();
    commands.sort();
    assert_eq!(
        commands,
        [
            "Hangup(CallKey(1))",
            "Hangup(CallKey(2))",
            "Hangup(CallKey(4))",
            "Reject(CallKey(3), 503, \"Service Unavailable\")",
        ]
    );
    assert_eq!(bridge.switchboard.live_calls(), 0);
    for id in ids.iter().chain([&outbound]) {
        assert_eq!(bridge.call_record(id).state, CallState::Completed, "{id}");
    }
    assert!(bridge.records.room_conference("1000").is_none());
    assert_eq!(bridge.ports_in_use.load(Ordering::Relaxed), 0);
    assert_eq!(bridge.switchboard.keys.in_use(), 0);
}

#[test]
fn audio_into_a_conference_is_fetched_played_and_reported() {
    let mut bridge = Bridge::new(ROOM);
    room_member(&mut bridge, 1);
    let conference = bridge.room_conference("1000").id;
    let request = |url: &str| ApiRequest::Audio {
        target: AudioTarget::Conference(conference.clone()),
        request: AudioRequest {
            source: Some(Source::File { url: url.into() }),
            looped: false,
            tag: Some("intro".into()),
        },
        speech_missing: None,
    };
    let (reply, actions) = bridge.api(request("http://files.example/a.wav"));
    assert_eq!(reply, Ok(Reply::Done));
    let [(first, _)] = &fetches(&actions)[..] else {
        panic!("one fetch");
    };
    // A second request while the first is still fetched replaces it.
    let (_, actions) = bridge.api(request("http://files.example/b.wav"));
    let [(second, _)] = &fetches(&actions)[..] else {
        panic!("one fetch");
    };
    let clip: Clip = vec![0i16; 1600].into();
    let actions = bridge.handle(Input::Clip {
        id: *first,
        result: Ok(clip.clone()),
    });
    assert!(
        media_commands(&actions).is_empty(),
        "the first was replaced"
    );
    assert_eq!(callbacks(&actions), ["conference-playback:done"]);
    let actions = bridge.handle(Input::Clip {
        id: *second,
        result: Ok(clip),
    });
    assert_eq!(callbacks(&actions), ["conference-playback:started"]);
    let Some(Command::PlayClip { id, target, .. }) = media_commands(&actions).first().copied()
    else {
        panic!("the clip plays");
    };
    assert!(matches!(target, ClipTarget::Mix(_)));
    let actions = bridge.media(Event::ClipDone {
        id: *id,
        end: ClipEnd::Finished,
    });
    assert_eq!(callbacks(&actions), ["conference-playback:done"]);
    assert_eq!(bridge.switchboard.playback.counts(), (0, 0));
}

#[test]
fn a_sentence_without_text_to_speech_is_refused_and_reported_done() {
    let mut bridge = Bridge::new(ROOM);
    room_member(&mut bridge, 1);
    let conference = bridge.room_conference("1000").id;
    let voice = crate::audio::espeak_voice(None, None, None).expect("default voice");
    let (reply, actions) = bridge.api(ApiRequest::Audio {
        target: AudioTarget::Conference(conference),
        request: AudioRequest {
            source: Some(Source::Speech {
                sentence: "hello".into(),
                voice,
            }),
            looped: false,
            tag: None,
        },
        speech_missing: Some("espeak-ng is not installed".into()),
    });
    assert_eq!(
        reply,
        Err(RecordError::SpeechUnavailable(
            "espeak-ng is not installed".into()
        ))
    );
    assert!(fetches(&actions).is_empty());
    assert_eq!(callbacks(&actions), ["conference-speak:done"]);
}

#[test]
fn audio_for_a_conference_that_does_not_exist_is_not_found() {
    let mut bridge = Bridge::new(ROOM);
    let (reply, actions) = bridge.api(ApiRequest::Audio {
        target: AudioTarget::Conference("conf-none".into()),
        request: AudioRequest {
            source: None,
            looped: false,
            tag: None,
        },
        speech_missing: None,
    });
    assert_eq!(
        reply,
        Err(RecordError::ConferenceNotFound("conf-none".into()))
    );
    assert!(actions.is_empty());
}

#[test]
fn a_join_tone_plays_into_the_conference_when_a_member_with_one_joins() {
    let mut bridge = Bridge::new(&format!("{ROOM}{APPLICATION}"));
    room_member(&mut bridge, 1);
    let conference = bridge.room_conference("1000").id;
    bridge.invite(2, "5551234");
    let call_id = the_call_id(&bridge, 2);
    answer_for_the_application(&mut bridge, &call_id);
    let (_, actions) = bridge.api(ApiRequest::AddMember {
        conference_id: conference,
        call_id,
        options: MemberOptions {
            join_tone: true,
            ..MemberOptions::default()
        },
    });
    assert!(media_commands(&actions).iter().any(|c| matches!(
        c,
        Command::PlayClip {
            target: ClipTarget::Mix(_),
            looped: false,
            ..
        }
    )));
}
