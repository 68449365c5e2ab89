//! Calls to room numbers: routing, a full room, the answer delay, the PIN lobby.

use super::*;

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
fn a_call_to_a_registrations_contact_user_joins_the_registrations_room() {
    let config = format!(
        "{ROOM}[[registration]]\nregistrar = \"sip:pbx.example\"\nuser = \"2000\"\n\
         password = \"pw\"\ncontact_user = \"conf-2000\"\nroom = \"1000\"\n"
    );
    let mut bridge = Bridge::new(&config);
    let actions = bridge.invite(1, "conf-2000");
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::Accept(CallKey(1), _)]
    ));
    assert_eq!(bridge.room_conference("1000").active_members, 1);
    // The extension number itself is no room when the contact user differs.
    let actions = bridge.invite(2, "2000");
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(CallKey(2), 404, "Not Found".into())]
    );
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
        link: None,
    });
    // The reason names what this bridge takes (Opus only where libopus loads).
    let commands = sip_commands(&actions);
    let [SipCommand::Reject(CallKey(1), 488, reason)] = commands.as_slice() else {
        panic!("{commands:?}");
    };
    assert!(
        reason.starts_with("Not Acceptable Here (no common codec (we take ")
            && reason.contains("PCMU, PCMA"),
        "{reason}"
    );
}

/// An INVITE to room 1000 with `text` as its SDP.
fn invite_with_sdp(bridge: &mut Bridge, key: u64, text: &str) -> Vec<Action> {
    bridge.sip(SipEvent::IncomingCall {
        call: CallKey(key),
        user: "1000".into(),
        from: format!("sip:caller{key}@192.0.2.10"),
        to: "sip:1000@192.0.2.1".into(),
        offer: sdp::parse_offer(text.as_bytes()).expect("valid offer"),
        source: SocketAddr::from(PHONE),
        transport: Transport::Udp,
        link: None,
    })
}

const SAVP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n\
    t=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n\
    a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n";

#[test]
fn with_srtp_required_a_plain_offer_gets_488_and_an_srtp_one_joins_encrypted() {
    let config = format!("[media]\nsrtp = \"require\"\n{ROOM}");
    let mut bridge = Bridge::new(&config);
    let actions = bridge.invite(1, "1000");
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(
            CallKey(1),
            488,
            "Not Acceptable Here (SRTP is required here: offer a=crypto with \
             AES_CM_128_HMAC_SHA1_80 or _32)"
                .into()
        )]
    );
    let actions = invite_with_sdp(&mut bridge, 2, SAVP_OFFER);
    let [SipCommand::Accept(CallKey(2), answer)] = sip_commands(&actions)[..] else {
        panic!("answered: {actions:?}");
    };
    let answer = sdp::parse_answer(answer.as_bytes()).expect("our answer parses");
    assert!(answer.secure_profile);
    assert_eq!(answer.crypto.len(), 1);
    assert_eq!(answer.crypto[0].tag, 1);
    let srtp = media_commands(&actions).into_iter().find_map(|c| match c {
        Command::AddMember(add) => Some(add.srtp.is_some()),
        _ => None,
    });
    assert_eq!(srtp, Some(true), "the member joins with SRTP contexts");
}

#[test]
fn with_srtp_off_an_savp_offer_gets_488_and_two_answers_never_share_a_key() {
    let mut bridge = Bridge::new(&format!("[media]\nsrtp = \"off\"\n{ROOM}"));
    let actions = invite_with_sdp(&mut bridge, 1, SAVP_OFFER);
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(
            CallKey(1),
            488,
            "Not Acceptable Here (SRTP is off here (media.srtp): offer RTP/AVP)".into()
        )]
    );
    let mut bridge = Bridge::new(ROOM);
    let keys: Vec<_> = (1..=2)
        .map(|key| {
            let actions = invite_with_sdp(&mut bridge, key, SAVP_OFFER);
            let [SipCommand::Accept(_, answer)] = sip_commands(&actions)[..] else {
                panic!("answered: {actions:?}");
            };
            sdp::parse_answer(answer.as_bytes()).expect("answer").crypto[0].key
        })
        .collect();
    assert_ne!(keys[0], keys[1], "a fresh key per call");
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
fn a_wrong_pin_is_said_so_after_a_doubling_wait_and_the_third_says_goodbye_and_hangs_up() {
    let mut bridge = Bridge::new(PIN_ROOM);
    let lobby = into_the_lobby(&mut bridge, 1);
    let call_id = the_call_id(&bridge, 1);
    for wait_s in [1, 2] {
        let actions = enter(&mut bridge, lobby, "1111#");
        assert!(fetches(&actions).is_empty(), "nothing said while it waits");
        assert!(sip_commands(&actions).is_empty());
        // Keys while it waits are dropped: even the right PIN.
        assert!(enter(&mut bridge, lobby, "4321#").is_empty());
        let almost = Duration::from_secs(wait_s) - Duration::from_millis(1);
        assert!(fetches(&bridge.advance(almost)).is_empty());
        let actions = bridge.advance(Duration::from_millis(1));
        let said: Vec<String> = fetches(&actions).into_iter().map(|(_, s)| s).collect();
        assert_eq!(said, [WRONG_PIN]);
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
fn a_guessing_address_is_locked_out_of_pin_rooms_while_another_gets_in() {
    let config = format!("{PIN_ROOM}\n[pin]\nmax_failures = 4\nlockout_s = 300\n");
    let mut bridge = Bridge::new(&config);
    let guesser = SocketAddr::from(([198, 51, 100, 7], 5060));
    let said = |actions: &[Action]| -> Vec<String> {
        fetches(actions).into_iter().map(|(_, s)| s).collect()
    };
    // Three wrong PINs on one call (its tries), then the fourth on the next.
    bridge.invite_from(1, "1000", guesser);
    bridge.invite_from(2, "1000", guesser);
    let lobby_of = |bridge: &Bridge, key: u64| {
        bridge.switchboard.calls.answered[&CallKey(key)]
            .lobby
            .as_ref()
            .expect("in its lobby")
            .media
    };
    let lobby = lobby_of(&bridge, 1);
    for _ in 0..2 {
        enter(&mut bridge, lobby, "1111#");
        bridge.advance(Duration::from_secs(60));
    }
    assert_eq!(said(&enter(&mut bridge, lobby, "1111#")), [PIN_FAILED]);
    let other_lobby = lobby_of(&bridge, 2);
    assert_eq!(
        said(&enter(&mut bridge, other_lobby, "9999#")),
        [PIN_LOCKED_OUT]
    );
    // Locked out: a new call from the address is refused before it is answered.
    let actions = bridge.invite_from(3, "1000", guesser);
    assert_eq!(
        sip_commands(&actions),
        [&SipCommand::Reject(
            CallKey(3),
            403,
            "Forbidden (too many wrong PINs)".into()
        )]
    );
    // A colleague with the right PIN gets in at once.
    let colleague = SocketAddr::from(([192, 0, 2, 20], 5060));
    let colleague_lobby = added(&bridge.invite_from(4, "1000", colleague)).0;
    let actions = enter(&mut bridge, colleague_lobby, "4321#");
    assert!(callbacks(&actions).contains(&"conference-member:active".to_string()));
    let pins = bridge.switchboard.pin_guard.stats();
    assert_eq!(pins.failures.load(Ordering::Relaxed), 4);
    assert_eq!(pins.lockouts.load(Ordering::Relaxed), 1);
    assert_eq!(pins.refused.load(Ordering::Relaxed), 1);
    // After the lockout the address may try again.
    bridge.advance(Duration::from_secs(300));
    let actions = bridge.invite_from(5, "1000", guesser);
    assert!(sip_commands(&actions)
        .iter()
        .any(|c| matches!(c, SipCommand::Accept(CallKey(5), _))));
}
