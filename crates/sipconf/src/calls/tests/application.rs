//! Calls for the application and what the API, the phone and the keypad change.

use super::*;

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
    assert_eq!(reply, Err(CallError::CallInConference(call_id, conference)));
}

#[test]
fn a_member_the_store_cannot_write_is_refused_and_never_mixed_while_room_callers_still_join() {
    use crate::conference::fixtures::FullableStore;
    let config = format!("{APPLICATION}{ROOM}");
    let mut bridge = Bridge::new(&config);
    let store = Arc::new(FullableStore::default());
    bridge.records = Registry::open(store.clone(), bridge.now.wall, 100)
        .unwrap()
        .0;
    bridge.invite(1, "5551234");
    let call_id = the_call_id(&bridge, 1);
    answer_for_the_application(&mut bridge, &call_id);
    let conference = bridge
        .records
        .create_conference("5551234", None, None, bridge.now.wall)
        .id
        .clone();
    store.set_full(true);
    let (reply, actions) = bridge.api(ApiRequest::AddMember {
        conference_id: conference.clone(),
        call_id: call_id.clone(),
        options: MemberOptions::default(),
    });
    assert!(
        matches!(reply, Err(CallError::Record(RecordError::NotStored(_)))),
        "{reply:?}"
    );
    assert!(media_commands(&actions).is_empty(), "nothing is mixed");
    assert!(callbacks(&actions).is_empty());
    assert!(bridge.records.members_of(&conference).is_empty());
    // A caller dialling a room is answered and joins all the same.
    let actions = bridge.invite(2, "1000");
    added(&actions);
    assert_eq!(bridge.room_conference("1000").active_members, 1);
    assert!(bridge.records.unsaved() > 0);
    // Space returns: the application may add its call now.
    store.set_full(false);
    let (reply, _) = bridge.api(ApiRequest::AddMember {
        conference_id: conference,
        call_id,
        options: MemberOptions::default(),
    });
    assert!(matches!(reply, Ok(Reply::Created(_))), "{reply:?}");
    assert_eq!(bridge.records.retry_unsaved(100), 0);
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
        Err(CallError::CallInvalidState(_, CallState::Completed))
    ));
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

/// A re-offer of `payloads` (an `m=` line's types and their rtpmap lines).
fn reoffer_of(media: &str, rtpmaps: &str) -> sdp::Offer {
    let text = format!(
        "v=0\r\no=- 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio 4002 RTP/AVP {media}\r\n{rtpmaps}a=sendrecv\r\n"
    );
    sdp::parse_offer(text.as_bytes()).expect("valid offer")
}

fn codecs_set(actions: &[Action]) -> Vec<(MemberKey, crate::media::Codec, u8)> {
    media_commands(actions)
        .into_iter()
        .filter_map(|c| match c {
            Command::SetCodec {
                key,
                codec,
                payload_type,
                ..
            } => Some((*key, *codec, *payload_type)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_reoffer_keeps_a_codec_it_still_carries_and_moves_the_media_to_a_new_one() {
    let mut bridge = Bridge::new(ROOM);
    let (_, media) = room_member(&mut bridge, 1);
    // PCMU is still offered (after G.722): kept, nothing for the media plane.
    let actions = bridge.sip(SipEvent::Reoffer {
        call: CallKey(1),
        offer: reoffer_of("9 0 101", "a=rtpmap:101 telephone-event/8000\r\n"),
    });
    assert!(
        matches!(
            sip_commands(&actions)[..],
            [SipCommand::AcceptReoffer(CallKey(1), answer)] if answer.contains(" RTP/AVP 0 101\r\n")
        ),
        "{actions:?}"
    );
    assert_eq!(codecs_set(&actions), []);
    // G.722 only: the answer and the media plane move to it.
    let actions = bridge.sip(SipEvent::Reoffer {
        call: CallKey(1),
        offer: reoffer_of("9 101", "a=rtpmap:101 telephone-event/8000\r\n"),
    });
    assert!(
        matches!(
            sip_commands(&actions)[..],
            [SipCommand::AcceptReoffer(CallKey(1), answer)] if answer.contains(" RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n")
        ),
        "{actions:?}"
    );
    assert_eq!(
        codecs_set(&actions),
        [(media, crate::media::Codec::G722, 9)]
    );
    // Nothing we take: refused, the call stays on G.722.
    let actions = bridge.sip(SipEvent::Reoffer {
        call: CallKey(1),
        offer: reoffer_of("18", ""),
    });
    assert!(
        matches!(
            sip_commands(&actions)[..],
            [SipCommand::RejectReoffer(CallKey(1), 488, reason)] if reason.contains("no common codec")
        ),
        "{actions:?}"
    );
    assert_eq!(codecs_set(&actions), []);
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
fn a_session_refresh_is_a_sign_of_life_for_the_media_plane() {
    let mut bridge = Bridge::new(ROOM);
    let (_, media) = room_member(&mut bridge, 1);
    let actions = bridge.sip(SipEvent::Refreshed { call: CallKey(1) });
    assert!(matches!(
        media_commands(&actions)[..],
        [Command::SignOfLife { key }] if *key == media
    ));
    // A refresh of a call that is gone asks nothing.
    assert!(bridge
        .sip(SipEvent::Refreshed { call: CallKey(9) })
        .is_empty());
}

#[test]
fn an_expired_session_completes_the_member() {
    let mut bridge = Bridge::new(ROOM);
    let (member, _) = room_member(&mut bridge, 1);
    bridge.sip(SipEvent::Ended {
        call: CallKey(1),
        reason: EndReason::SessionExpired,
    });
    assert_eq!(
        bridge.records.member(&member).expect("member").state,
        MemberState::Completed
    );
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
