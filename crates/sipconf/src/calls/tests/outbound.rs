//! Calls the API places, and what stopping the bridge does to every call.

use super::*;

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
        link: None,
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
        Err(CallError::CallInvalidState(_, CallState::Started))
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
    assert!(matches!(
        reply,
        Some(Err(CallError::Busy(Busy::SipTablesFull)))
    ));
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
fn an_outbound_call_over_tls_offers_srtp_and_joins_with_the_answerers_key() {
    let mut bridge = Bridge::new("");
    let conference = bridge
        .records
        .create_conference("x", None, None, bridge.now.wall)
        .id
        .clone();
    let (_, actions) = bridge.api_deferred(ApiRequest::CreateCall {
        call: OutgoingRequest {
            from: "+15550000".into(),
            to: "sips:alice@192.0.2.20".into(),
            conference_id: Some(conference),
            call_timeout: Duration::from_secs(30),
            ..OutgoingRequest::default()
        },
        target: OutboundTarget {
            request_uri: "sips:alice@192.0.2.20".into(),
            destination: SocketAddr::from(([192, 0, 2, 20], 5061)),
            transport: Transport::Tls,
        },
    });
    let [Action::Invite { call_id, call }] = &actions[..] else {
        panic!("one INVITE: {actions:?}");
    };
    assert!(call.offer_sdp.contains("RTP/SAVP"), "{}", call.offer_sdp);
    let ours = sdp::parse_offer(call.offer_sdp.as_bytes()).expect("our offer");
    assert_eq!(ours.crypto.len(), 1, "one a=crypto line");
    let call_id = call_id.clone();
    bridge.handle(Input::Invited {
        call_id,
        key: Some(CallKey(7)),
    });
    let answer = "v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n\
                  m=audio 6000 RTP/SAVP 0\r\n\
                  a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd\r\n";
    let actions = bridge.sip(SipEvent::Answered {
        call: CallKey(7),
        answer: sdp::parse_answer(answer.as_bytes()).expect("answer"),
        link: None,
    });
    let srtp = media_commands(&actions).into_iter().find_map(|c| match c {
        Command::AddMember(add) => Some(add.srtp.is_some()),
        _ => None,
    });
    assert_eq!(srtp, Some(true), "the member joins with SRTP contexts");
}
