//! Who is talking, for the applications that ask (`talkingEvents`,
//! docs/api.md "Who is talking"): the media plane's talking changes update
//! the member record, and in such a conference become `conference-member`
//! events carrying `talking`. A member that chatters cannot flood the
//! callback queue: one such event per member per `TALKING_EVENT_INTERVAL`
//! at most; changes in between are folded, and the state last reached is
//! always told.

use super::switchboard::{Due, Switchboard};
use crate::conference::Registry;
use crate::media::MemberKey;
use crate::sip::CallKey;
use std::time::{Duration, Instant};

/// The least time between two talking events of one member.
pub const TALKING_EVENT_INTERVAL: Duration = Duration::from_millis(500);

/// What a member's application was last told about its talking.
#[derive(Debug, Default, Clone, Copy)]
pub struct TalkingNotice {
    told: bool,
    told_at: Option<Instant>,
    /// A timer is set to tell the state then.
    waiting: bool,
}

impl Switchboard {
    /// The media plane says the member started or stopped talking.
    pub(super) fn on_talking(&mut self, records: &mut Registry, media: MemberKey, talking: bool) {
        let Some((call, _, joined)) = self.calls.member_of(media) else {
            return;
        };
        let member_id = joined.member_id.clone();
        records.set_talking(&member_id, talking);
        let asked = records
            .member(&member_id)
            .and_then(|m| records.conference(&m.conference_id))
            .is_some_and(|c| c.talking_events && c.callback.url.is_some());
        if asked {
            self.tell_talking(records, call);
        }
    }

    /// The interval after a talking event is over: tell what changed since.
    pub(super) fn on_talking_due(&mut self, records: &Registry, call: CallKey) {
        if let Some(joined) = self
            .calls
            .answered
            .get_mut(&call)
            .and_then(|c| c.joined.as_mut())
        {
            joined.talking_notice.waiting = false;
        }
        self.tell_talking(records, call);
    }

    /// Sends the member's talking state if it is not what was last told, now
    /// or, within the interval of the last event, when the interval ends.
    fn tell_talking(&mut self, records: &Registry, call: CallKey) {
        let now = self.now.instant;
        let Some(joined) = self
            .calls
            .answered
            .get_mut(&call)
            .and_then(|c| c.joined.as_mut())
        else {
            return;
        };
        let Some(talking) = records.member(&joined.member_id).map(|m| m.talking) else {
            return;
        };
        let notice = &mut joined.talking_notice;
        if talking == notice.told || notice.waiting {
            return;
        }
        let next = notice.told_at.map(|at| at + TALKING_EVENT_INTERVAL);
        match next.filter(|&next| next > now) {
            Some(next) => {
                notice.waiting = true;
                self.set_call_timer(next - now, call, Due::TalkingEvent);
            }
            None => {
                notice.told = talking;
                notice.told_at = Some(now);
                let member_id = joined.member_id.clone();
                self.member_event(records, &member_id);
            }
        }
    }
}
