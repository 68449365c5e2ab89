//! The room's own speakerphone (`[soundcard]`) as a member of its room's
//! conference. It is an answered call like a phone's, with no SIP dialog
//! and the sound card's in-process rings for ports (`CallPorts::local`),
//! so joining, the member record, the API's mute, deaf and hold, and
//! leaving are a phone's rules, unchanged. The switchboard looks every
//! `CHECK_EVERY` that it is in its room, and puts it back when it is not
//! (the API removed it): the speakerphone stays in the room for as long as
//! the bridge runs, and the room's conference with it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::ports::CallPorts;
use super::switchboard::{new_sdp_session, Switchboard};
use super::table::Call;
use crate::conference::{CallDirection, Registry};
use crate::media::local::LocalPort;
use crate::sip::{sdp, CallKey};

/// The sound card's call: a key the SIP endpoint never hands out (it
/// counts up from 1), so what the switchboard asks of it (a BYE) the
/// endpoint finds no dialog for and ignores.
pub(super) const SOUNDCARD_CALL: CallKey = CallKey(u64::MAX);

/// How often the switchboard looks that the sound card is in its room.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Where the sound card's stream "comes from" for the media plane's latch;
/// nothing is ever sent there (the engine hands its frames to the rings).
const NOWHERE: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));

impl Switchboard {
    /// Keeps `[soundcard]`'s member, whose audio goes through `port`, in its
    /// room from the first timeout on.
    pub fn with_soundcard(mut self, port: Option<LocalPort>) -> Switchboard {
        if port.is_some() && self.config.soundcard.is_some() {
            self.soundcard = port;
            self.set_soundcard_timer(Duration::ZERO);
        }
        self
    }

    /// Joins the sound card to its room's conference unless it is in it
    /// already (or the bridge is stopping); looks again in `CHECK_EVERY`.
    pub(super) fn keep_soundcard_in_room(&mut self, records: &mut Registry) {
        if self.stopping {
            return;
        }
        self.set_soundcard_timer(CHECK_EVERY);
        if self.calls.answered.contains_key(&SOUNDCARD_CALL) {
            return;
        }
        let (Some(port), Some(card)) = (self.soundcard.clone(), self.config.soundcard.clone())
        else {
            return;
        };
        let Some(room) = self.room(&card.room) else {
            return;
        };
        let wall = self.now.wall;
        let id = records
            .create_call(CallDirection::In, &card.name, &room.number, wall)
            .id
            .clone();
        records.answer_call(&id, wall);
        let call = Call {
            id: id.clone(),
            ports: CallPorts::local(port),
            media_address: NOWHERE.ip(),
            signalling_ip: NOWHERE.ip(),
            negotiated: sdp::Negotiated {
                // `media::local::LOCAL_CODEC`, as the SDP names it.
                codec: sdp::SdpCodec::Pcmu,
                codec_pt: 0,
                telephone_event_pt: None,
                telephone_event_rate_hz: 8000,
                remote_rtp_addr: NOWHERE,
                direction: sdp::Direction::SendRecv,
                secure_profile: false,
                srtp: None,
            },
            session: new_sdp_session(),
            held: false,
            joined: None,
            // Removed through the API, it is "hung up" (its record
            // completed) and joins again at the next look.
            room_call: true,
            lobby: None,
            link: None,
        };
        self.calls.by_id.insert(id.clone(), SOUNDCARD_CALL);
        self.calls.answered.insert(SOUNDCARD_CALL, call);
        self.join_room(records, SOUNDCARD_CALL, &room);
        if let Some(joined) = self
            .calls
            .answered
            .get(&SOUNDCARD_CALL)
            .and_then(|c| c.joined.as_ref())
        {
            tracing::info!(call = %id, member = %joined.member_id, room = %room.number, "the sound card joined its room");
        }
    }
}
