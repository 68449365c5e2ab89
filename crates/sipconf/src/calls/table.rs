//! The switchboard's tables of live calls: ringing, answered and outgoing,
//! found by SIP key, by `c-` id or by media slot; and the pool of conference
//! mixes. Plain data with lookups: the rules that move a call from one table
//! to another are the switchboard's.

use super::lobby::Lobby;
use crate::config::Room;
use crate::media::MemberKey;
use crate::sip::sdp::{self, Offer};
use crate::sip::CallKey;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::ports::CallPorts;

/// One answered call.
#[derive(Debug)]
pub struct Call {
    pub id: String,
    pub ports: CallPorts,
    /// The address our SDP named for its media.
    pub media_address: IpAddr,
    /// Where its signalling came from (or went, for a call we placed): the
    /// media plane may learn its RTP from another port at this IP (a NAT).
    pub signalling_ip: IpAddr,
    pub negotiated: sdp::Negotiated,
    pub session: sdp::SdpSession,
    /// On hold by the phone (SIP re-offer).
    pub held: bool,
    pub joined: Option<Joined>,
    /// Dialled a room number: no application controls this call, so it is hung
    /// up when the API removes it from its conference (there is nowhere else
    /// for it to go) instead of being left up in silence.
    pub room_call: bool,
    /// Waiting for its room's PIN.
    pub lobby: Option<Lobby>,
    /// A cascade link to another bridge, not a person.
    pub link: Option<Link>,
}

/// What marks a call as a cascade link (docs/scaling.md "Cascading").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The room it joins.
    pub room: String,
    /// The `[[room]] cascade` entry this bridge keeps up with it, by its
    /// index in the switchboard's list; `None` for a link the far end placed.
    pub dialled: Option<usize>,
    /// The bridges on the far side, the far end's own id first: from the
    /// INVITE's `X-Sipconf-Link`, or the 2xx's for a link we placed.
    pub far: Vec<String>,
}

impl Call {
    /// Where the phone's RTCP goes: the port above its RTP (RFC 3550 §11).
    pub fn remote_rtcp(&self) -> SocketAddr {
        let rtp = self.negotiated.remote_rtp_addr;
        SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
    }

    /// The call's media slot now: in its conference, or in its lobby.
    pub fn media(&self) -> Option<MemberKey> {
        let in_conference = self.joined.as_ref().map(|j| j.media);
        in_conference.or(self.lobby.as_ref().map(|l| l.media))
    }
}

/// A call's place in a conference and the mixer.
#[derive(Debug)]
pub struct Joined {
    pub conference_id: String,
    pub member_id: String,
    pub media: MemberKey,
    pub mix: u32,
    /// What the application was last told of the member's talking.
    pub talking_notice: super::talking::TalkingNotice,
}

/// Where a ringing call goes once answered.
#[derive(Debug, Clone)]
pub enum Route {
    Room(Room),
    /// An application answers it through the API.
    Application,
}

/// A call that rings before it is answered.
#[derive(Debug)]
pub struct Ringing {
    pub id: String,
    pub route: Route,
    pub from: String,
    pub offer: Offer,
    pub source: SocketAddr,
    /// A cascade link from another bridge.
    pub link: Option<Link>,
}

/// An outbound call waiting for its answer.
#[derive(Debug)]
pub struct Outgoing {
    pub id: String,
    pub ports: CallPorts,
    pub media_address: IpAddr,
    /// The INVITE's next hop.
    pub signalling_ip: IpAddr,
    pub session: sdp::SdpSession,
    pub conference_id: Option<String>,
    /// Set when our `callTimeout` cancelled it, so the cause is NO_ANSWER.
    pub timed_out: bool,
    /// The key our offer's `a=crypto` carried, when it offered SRTP.
    pub srtp_key: Option<crate::media::srtp::MasterKey>,
    /// A cascade link this bridge dials.
    pub link: Option<Link>,
}

/// Every live call, by SIP key, with the indices that find one.
#[derive(Debug, Default)]
pub struct CallTable {
    pub answered: HashMap<CallKey, Call>,
    pub ringing: HashMap<CallKey, Ringing>,
    pub outgoing: HashMap<CallKey, Outgoing>,
    /// Every live call (ringing, answered or outgoing) by its `c-` id.
    pub by_id: HashMap<String, CallKey>,
    /// Answered calls by the media slot they have (in a conference or a lobby).
    pub by_media: HashMap<MemberKey, CallKey>,
}

impl CallTable {
    /// The answered call with this `c-` id.
    pub fn answered_by_id(&self, id: &str) -> Option<(CallKey, &Call)> {
        let key = *self.by_id.get(id)?;
        self.answered.get(&key).map(|call| (key, call))
    }

    /// The call of a media slot, and its member id when it is in a conference.
    pub fn member_of(&self, media: MemberKey) -> Option<(CallKey, &Call, &Joined)> {
        let key = *self.by_media.get(&media)?;
        let call = self.answered.get(&key)?;
        let joined = call.joined.as_ref().filter(|j| j.media == media)?;
        Some((key, call, joined))
    }

    /// Whether a media slot is a call waiting in its lobby.
    pub fn in_lobby(&self, media: MemberKey) -> bool {
        self.by_media
            .get(&media)
            .and_then(|key| self.answered.get(key))
            .and_then(|call| call.lobby.as_ref())
            .is_some_and(|lobby| lobby.media == media)
    }
}

/// Conference mixes in the media plane: one index per active conference (or lobby).
#[derive(Debug)]
pub struct MixPool {
    free: Vec<u32>,
    by_conference: HashMap<String, u32>,
}

impl MixPool {
    pub fn new(capacity: usize) -> MixPool {
        MixPool {
            free: (0..capacity as u32).rev().collect(),
            by_conference: HashMap::new(),
        }
    }

    /// The conference's mix, if it has one now.
    pub fn get(&self, conference_id: &str) -> Option<u32> {
        self.by_conference.get(conference_id).copied()
    }

    pub fn get_or_assign(&mut self, conference_id: &str) -> Option<u32> {
        if let Some(&mix) = self.by_conference.get(conference_id) {
            return Some(mix);
        }
        let mix = self.free.pop()?;
        self.by_conference.insert(conference_id.to_string(), mix);
        Some(mix)
    }

    pub fn release(&mut self, conference_id: &str) {
        if let Some(mix) = self.by_conference.remove(conference_id) {
            self.free.push(mix);
        }
    }

    /// Mixes assigned now.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.by_conference.len()
    }
}
