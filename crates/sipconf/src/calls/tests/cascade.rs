//! Cascade links (docs/scaling.md "One room across two bridges"): dialled
//! from `[[room]] cascade`, marked with `X-Sipconf-Link`, not people, circles
//! refused with 482, and dialled again after a drop.

use super::*;

const FAR: &str = "sip:1000@192.0.2.40:5060";

/// Bridge `id` with room 1000 (room for `max_members` people) cascading to
/// `FAR` when `dials`.
fn cascading(id: &str, max_members: usize, dials: bool) -> Bridge {
    let cascade = if dials {
        format!("cascade = [\"{FAR}\"]\n")
    } else {
        String::new()
    };
    Bridge::new(&format!(
        "[sip]\nbridge_id = \"{id}\"\n[[room]]\nnumber = \"1000\"\nmax_members = {max_members}\n{cascade}"
    ))
}

fn far_target() -> OutboundTarget {
    OutboundTarget {
        request_uri: FAR.into(),
        destination: SocketAddr::from(([192, 0, 2, 40], 5060)),
        transport: Transport::Udp,
    }
}

/// The link's time to dial comes: the URI is resolved and the INVITE
/// placed under `key`; returns the INVITE's `X-Sipconf-Link`.
fn dial(bridge: &mut Bridge, by: Duration, key: u64) -> Option<String> {
    let actions = bridge.advance(by);
    let [Action::ResolveLink { index: 0, uri }] = &actions[..] else {
        panic!("the link's URI to resolve: {actions:?}");
    };
    assert_eq!(uri, FAR);
    let actions = bridge.handle(Input::LinkTarget {
        index: 0,
        target: Ok(far_target()),
    });
    let [Action::Invite { call_id, call }] = &actions[..] else {
        panic!("one INVITE: {actions:?}");
    };
    assert_eq!(call.request_uri, FAR);
    let (call_id, link) = (call_id.clone(), call.link.clone());
    bridge.handle(Input::Invited {
        call_id,
        key: Some(CallKey(key)),
    });
    link
}

/// The far bridge answers the link placed under `key`, naming itself `far`.
fn answered(bridge: &mut Bridge, key: u64, far: &str) -> Vec<Action> {
    bridge.sip(SipEvent::Answered {
        call: CallKey(key),
        answer: offer(6000, "sendrecv"),
        link: Some(far.to_string()),
    })
}

/// A link INVITE from another bridge, with this `X-Sipconf-Link`.
fn link_invite(bridge: &mut Bridge, key: u64, header: &str) -> Vec<Action> {
    bridge.sip(SipEvent::IncomingCall {
        call: CallKey(key),
        user: "1000".into(),
        from: "sip:1000@192.0.2.40".into(),
        to: "sip:1000@192.0.2.1".into(),
        offer: offer(6100, "sendrecv"),
        source: SocketAddr::from(([192, 0, 2, 40], 5060)),
        transport: Transport::Udp,
        link: Some(header.to_string()),
    })
}

/// One of the switchboard's link counters (`/metrics`).
fn stat(bridge: &Bridge, counter: impl Fn(&LinkStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    counter(&bridge.switchboard.link_stats).load(Ordering::Relaxed)
}

fn link_member(actions: &[Action]) -> (bool, bool) {
    media_commands(actions)
        .into_iter()
        .find_map(|c| match c {
            Command::AddMember(add) => Some((add.link, add.keypad)),
            _ => None,
        })
        .expect("an AddMember command")
}

#[test]
fn a_cascaded_room_dials_its_link_marked_and_joins_it_as_a_link_not_a_person() {
    let mut bridge = cascading("a", 1, true);
    let header = dial(&mut bridge, Duration::ZERO, 50);
    assert_eq!(header.as_deref(), Some("a"), "the INVITE names this bridge");
    let actions = answered(&mut bridge, 50, "b");
    assert_eq!(
        link_member(&actions),
        (true, false),
        "a link member, no keypad"
    );
    assert_eq!(bridge.room_conference("1000").active_members, 1);
    // The room holds one person: the link does not take the place.
    let (_, _) = room_member(&mut bridge, 1);
    assert_eq!(bridge.room_conference("1000").active_members, 2);
    let actions = bridge.invite(2, "1000");
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::Reject(CallKey(2), 486, _)]
    ));
}

#[test]
fn an_incoming_link_is_answered_marked_and_not_counted_as_a_person() {
    let mut bridge = cascading("a", 1, false);
    let actions = link_invite(&mut bridge, 7, "b");
    let accepted = sip_commands(&actions)
        .into_iter()
        .find_map(|c| match c {
            SipCommand::AcceptLink(CallKey(7), _, header) => Some(header.clone()),
            _ => None,
        })
        .expect("the link answered with X-Sipconf-Link");
    assert_eq!(accepted, "a");
    assert_eq!(link_member(&actions), (true, false));
    room_member(&mut bridge, 1);
    let actions = bridge.invite(2, "1000");
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::Reject(CallKey(2), 486, _)]
    ));
}

#[test]
fn a_link_that_names_this_bridge_is_refused_with_482_loop_detected() {
    let mut bridge = cascading("a", 5, false);
    for header in ["a", "c, a", "b,c,a"] {
        let actions = link_invite(&mut bridge, 7, header);
        assert!(
            matches!(
                sip_commands(&actions)[..],
                [SipCommand::Reject(CallKey(7), 482, reason)] if reason.contains("Loop Detected")
            ),
            "{header}: {actions:?}"
        );
    }
    assert!(bridge.records.room_conference("1000").is_none());
    assert_eq!(stat(&bridge, |s| &s.loops_refused), 3);
}

#[test]
fn a_link_into_a_room_with_a_pin_is_refused() {
    let mut bridge = Bridge::new("[[room]]\nnumber = \"1000\"\npin = \"1234\"\n");
    let actions = link_invite(&mut bridge, 7, "b");
    assert!(matches!(
        sip_commands(&actions)[..],
        [SipCommand::Reject(CallKey(7), 403, _)]
    ));
}

#[test]
fn a_dropped_or_refused_link_is_dialled_again_after_a_pause_that_doubles() {
    let mut bridge = cascading("a", 5, true);
    dial(&mut bridge, Duration::ZERO, 50);
    answered(&mut bridge, 50, "b");
    assert_eq!(stat(&bridge, |s| &s.up), 1, "one link up, for /metrics");
    // The far end hangs up: one second later the link is dialled again.
    bridge.sip(SipEvent::Ended {
        call: CallKey(50),
        reason: EndReason::RemoteBye,
    });
    assert_eq!(
        (stat(&bridge, |s| &s.up), stat(&bridge, |s| &s.ended)),
        (0, 1)
    );
    assert!(bridge.advance(Duration::from_millis(999)).is_empty());
    dial(&mut bridge, Duration::from_millis(1), 51);
    // Refused: two seconds, then four.
    bridge.sip(SipEvent::Failed {
        call: CallKey(51),
        code: 482,
        reason: "Loop Detected".into(),
    });
    assert!(bridge.advance(Duration::from_millis(1999)).is_empty());
    dial(&mut bridge, Duration::from_millis(1), 52);
    bridge.sip(SipEvent::Failed {
        call: CallKey(52),
        code: 503,
        reason: "Service Unavailable".into(),
    });
    assert!(bridge.advance(Duration::from_millis(3999)).is_empty());
    dial(&mut bridge, Duration::from_millis(1), 53);
    // Up again: its next drop waits one second again.
    answered(&mut bridge, 53, "b");
    bridge.media(Event::RtpTimeout {
        key: bridge
            .switchboard
            .calls
            .answered
            .get(&CallKey(53))
            .and_then(|c| c.media())
            .expect("joined"),
    });
    dial(&mut bridge, Duration::from_secs(1), 54);
}

#[test]
fn the_pause_between_attempts_stops_growing_at_30_s() {
    let mut bridge = cascading("a", 5, true);
    let mut pause = Duration::ZERO;
    for key in 50..60 {
        dial(&mut bridge, pause, key);
        bridge.sip(SipEvent::Failed {
            call: CallKey(key),
            code: 408,
            reason: "Request Timeout".into(),
        });
        pause = if pause.is_zero() {
            Duration::from_secs(1)
        } else {
            (pause * 2).min(Duration::from_secs(30))
        };
    }
    assert_eq!(pause, Duration::from_secs(30));
}

#[test]
fn a_link_is_not_dialled_again_once_the_bridge_stops() {
    let mut bridge = cascading("a", 5, true);
    dial(&mut bridge, Duration::ZERO, 50);
    answered(&mut bridge, 50, "b");
    let actions = bridge.handle(Input::Shutdown);
    assert!(sip_commands(&actions).contains(&&SipCommand::Hangup(CallKey(50))));
    bridge.sip(SipEvent::Ended {
        call: CallKey(50),
        reason: EndReason::LocalBye,
    });
    assert!(bridge.advance(Duration::from_secs(60)).is_empty());
}

#[test]
fn a_further_link_names_every_bridge_the_room_already_spans() {
    let mut bridge = cascading("b", 5, true);
    link_invite(&mut bridge, 7, "a");
    let header = dial(&mut bridge, Duration::ZERO, 50);
    assert_eq!(header.as_deref(), Some("b,a"));
}

#[test]
fn of_two_links_crossed_between_two_bridges_the_greater_id_hangs_up_its_own() {
    // "b" dialled "a" while "a" dialled "b": both links came up.
    let mut bridge = cascading("b", 5, true);
    dial(&mut bridge, Duration::ZERO, 50);
    link_invite(&mut bridge, 7, "a");
    let actions = answered(&mut bridge, 50, "a");
    assert!(
        sip_commands(&actions).contains(&&SipCommand::Hangup(CallKey(50))),
        "{actions:?}"
    );
    assert!(!sip_commands(&actions).contains(&&SipCommand::Hangup(CallKey(7))));
    // Its next attempt names "a", which refuses it with 482.
    let header = dial(&mut bridge, Duration::from_secs(1), 51);
    assert_eq!(header.as_deref(), Some("b,a"));

    // The bridge with the smaller id keeps its own.
    let mut bridge = cascading("a", 5, true);
    dial(&mut bridge, Duration::ZERO, 50);
    link_invite(&mut bridge, 7, "b");
    let actions = answered(&mut bridge, 50, "b");
    assert!(sip_commands(&actions).is_empty(), "{actions:?}");
}
