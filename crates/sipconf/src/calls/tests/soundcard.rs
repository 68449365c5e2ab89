//! The room's sound card as a member of its room (`calls/soundcard.rs`).

use super::*;
use crate::calls::soundcard::CHECK_EVERY;
use crate::media::MemberSockets;
use std::time::Duration;

const CARD: &str = "[[room]]\nnumber = \"1000\"\n[soundcard]\nroom = \"1000\"\nname = \"Table\"\n";

fn local_member_added(actions: &[Action]) -> Option<(MemberKey, u32)> {
    media_commands(actions)
        .into_iter()
        .find_map(|command| match command {
            Command::AddMember(add) => {
                matches!(add.sockets, MemberSockets::Local(_)).then_some((add.key, add.mix))
            }
            _ => None,
        })
}

#[test]
fn the_sound_card_joins_its_room_at_start_and_again_after_the_api_removes_it() {
    let mut bridge = Bridge::with_soundcard(CARD);
    let actions = bridge.advance(Duration::from_millis(1));
    let (card, mix) = local_member_added(&actions).expect("the card joins at once");
    let conference = bridge.room_conference("1000");
    assert_eq!(conference.active_members, 1);
    let (member, phone) = room_member(&mut bridge, 1);
    let phone_mix = bridge
        .switchboard
        .calls
        .member_of(phone)
        .map(|(_, _, joined)| joined.mix)
        .expect("joined");
    assert_eq!(
        phone_mix, mix,
        "the phone and the card share the room's mix"
    );

    let card_member = bridge
        .records
        .members_of(&conference.id)
        .into_iter()
        .find(|m| m.id != member)
        .map(|m| m.id.clone())
        .expect("the card's member");
    let (reply, actions) = bridge.api(ApiRequest::UpdateMember {
        member_id: card_member,
        change: MemberChange {
            remove: true,
            ..MemberChange::default()
        },
    });
    assert_eq!(reply, Ok(Reply::Done));
    assert!(media_commands(&actions)
        .iter()
        .any(|c| matches!(c, Command::RemoveMember { key } if *key == card)));
    let actions = bridge.advance(CHECK_EVERY);
    let (again, _) = local_member_added(&actions).expect("the card is back");
    assert_ne!(again, card, "a new member, a new key");
    assert_eq!(bridge.room_conference("1000").active_members, 2);
}

#[test]
fn without_a_soundcard_section_no_local_member_joins() {
    let mut bridge = Bridge::with_soundcard("[[room]]\nnumber = \"1000\"\n");
    let actions = bridge.advance(CHECK_EVERY * 2);
    assert!(local_member_added(&actions).is_none());
}

#[test]
fn the_api_mutes_and_holds_the_sound_card_like_a_phone() {
    let mut bridge = Bridge::with_soundcard(CARD);
    let actions = bridge.advance(Duration::from_millis(1));
    let (card, _) = local_member_added(&actions).expect("the card joins at once");
    let conference = bridge.room_conference("1000");
    let member = bridge
        .records
        .members_of(&conference.id)
        .into_iter()
        .map(|m| m.id.clone())
        .next()
        .expect("the card's member");
    let (reply, actions) = bridge.api(ApiRequest::UpdateMember {
        member_id: member.clone(),
        change: MemberChange {
            mute: Some(true),
            hold: Some(true),
            ..MemberChange::default()
        },
    });
    assert_eq!(reply, Ok(Reply::Done));
    let flags = MemberFlags {
        muted: true,
        held: true,
        ..MemberFlags::default()
    };
    assert_eq!(flags_sent(&actions), [(card, flags)]);
    let record = bridge.records.member(&member).expect("member");
    assert!(record.mute && record.hold);
}
