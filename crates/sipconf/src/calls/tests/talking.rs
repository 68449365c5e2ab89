//! Talking changes as `conference-member` events: only for conferences
//! that asked (`talkingEvents`), at most one per member per
//! `TALKING_EVENT_INTERVAL`, the last state always told.

use super::*;
use crate::calls::talking::TALKING_EVENT_INTERVAL;

/// The `talking` of each `conference-member` event among `actions`.
fn talking_told(actions: &[Action]) -> Vec<bool> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Callback(callback) => match &**callback {
                CallbackEvent::Member { member, .. } => Some(member.talking),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn talking(key: MemberKey, talking: bool) -> Event {
    Event::Talking { key, talking }
}

/// A room caller in a conference with a callback URL, `talkingEvents` as given.
fn member_of_a_room(talking_events: bool) -> (Bridge, String, MemberKey) {
    let mut bridge = Bridge::new(ROOM);
    let (member, media) = room_member(&mut bridge, 1);
    let conference = bridge.room_conference("1000").id;
    bridge
        .records
        .update_conference_stored(&conference, |c| {
            c.callback.url = Some("http://app.example/conf".into());
            c.talking_events = talking_events;
        })
        .expect("updated");
    (bridge, member, media)
}

#[test]
fn a_conference_that_asked_is_told_each_talking_change() {
    let (mut bridge, member, media) = member_of_a_room(true);
    assert_eq!(talking_told(&bridge.media(talking(media, true))), [true]);
    assert!(bridge.records.member(&member).expect("member").talking);
    bridge.advance(Duration::from_secs(2));
    assert_eq!(talking_told(&bridge.media(talking(media, false))), [false]);
    assert!(!bridge.records.member(&member).expect("member").talking);
}

#[test]
fn a_conference_that_did_not_ask_gets_no_talking_events_but_the_record_follows() {
    let (mut bridge, member, media) = member_of_a_room(false);
    assert!(callbacks(&bridge.media(talking(media, true))).is_empty());
    assert!(bridge.records.member(&member).expect("member").talking);
    bridge.advance(Duration::from_secs(2));
    assert!(callbacks(&bridge.media(talking(media, false))).is_empty());
}

#[test]
fn a_chattering_member_is_told_at_most_once_per_interval_ending_in_its_last_state() {
    let (mut bridge, _, media) = member_of_a_room(true);
    let mut told = talking_told(&bridge.media(talking(media, true)));
    // Ten changes 40 ms apart (400 ms): all within one interval.
    for change in 0..10 {
        bridge.advance(Duration::from_millis(40));
        told.extend(talking_told(&bridge.media(talking(media, change % 2 == 1))));
    }
    assert_eq!(told, [true], "the rest waits for the interval");
    // The interval ends: the state now (true: the last change) equals what
    // was told, so nothing is sent.
    told.extend(talking_told(&bridge.advance(TALKING_EVENT_INTERVAL)));
    assert_eq!(told, [true]);
    // A stop within the next interval is told when it ends, once.
    bridge.advance(Duration::from_millis(600));
    told.extend(talking_told(&bridge.media(talking(media, false))));
    told.extend(talking_told(&bridge.media(talking(media, true))));
    told.extend(talking_told(&bridge.media(talking(media, false))));
    assert_eq!(told, [true, false], "told at once: the interval had passed");
    bridge.advance(Duration::from_millis(100));
    told.extend(talking_told(&bridge.media(talking(media, true))));
    assert_eq!(told, [true, false]);
    told.extend(talking_told(&bridge.advance(TALKING_EVENT_INTERVAL)));
    assert_eq!(told, [true, false, true]);
}
