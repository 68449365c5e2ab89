//! The switchboard's rules for a call's place in a conference (docs/architecture.md
//! "Call routing" and "Mute, hold and deaf"): joining a room or a conference,
//! leaving it, the flags the mixer applies, what the media plane reports
//! about a member (keys, talking, `#`, RTP timeout), and the PIN lobby a
//! caller waits in before it joins. It only asks the media plane, through
//! commands; it never sees a slot's state.

use super::lobby::{Lobby, Pin, PIN_FAILED, PIN_LOCKED_OUT, WRONG_PIN};
use super::pin_guard::Failure;
use super::playback::After;
use super::switchboard::Switchboard;
use super::table::{Call, Joined};
use super::{Busy, CallError};
use super::{NORMAL_CLEARING, USER_BUSY};
use crate::conference::{
    CallState, Conference, ConferenceState, Durability, MemberOptions, Profile, RecordError,
    Registry,
};
use crate::config::Room;
use crate::events::CallbackEvent;
use crate::media::{self, AddMember, Command, Event, MemberFlags, MemberKey, MemberSockets};
use crate::sip::sdp;
use crate::sip::transport::SipCommand;
use crate::sip::CallKey;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Switchboard {
    /// Joins an answered call to its room's conference, creating one when none is active.
    pub(super) fn join_room(&mut self, records: &mut Registry, call: CallKey, room: &Room) {
        let Some((call_id, link)) = self
            .calls
            .answered
            .get(&call)
            .map(|c| (c.id.clone(), c.link.is_some()))
        else {
            return;
        };
        let others = self.people_in_room(records, &room.number);
        let (conference_id, others) = match records.room_conference(&room.number) {
            Some(c) => (c.id.clone(), others),
            None => {
                let id = records
                    .create_conference(
                        &room.number,
                        Some(room.name.clone()),
                        Some(&room.number),
                        self.now.wall,
                    )
                    .id
                    .clone();
                self.conference_event(records, &id);
                tracing::info!(conference = %id, room = %room.number, "conference created");
                (id, 0)
            }
        };
        let options = MemberOptions::default();
        match self.join(
            records,
            call,
            &conference_id,
            options,
            Durability::BestEffort,
        ) {
            Ok(_) if room.announce_count && !link => self.announce_count(&call_id, others as u64),
            Ok(_) => {}
            Err(e) => {
                // Answered already: the caller hears why it cannot join only as a hang-up.
                tracing::info!(call = %call_id, "cannot join room {}: {e}", room.number);
                self.sip(SipCommand::Hangup(call));
                self.finish(records, call, CallState::Completed, USER_BUSY, "room full");
            }
        }
    }

    /// The most members a conference may have: its room's limit, else the mixer's.
    fn max_members(&self, conference: &Conference) -> usize {
        conference
            .room
            .as_deref()
            .and_then(|r| self.room(r))
            .map_or(self.config.media.max_members, |r| r.max_members)
    }

    /// Puts an answered call into a conference's mix; returns the member id.
    /// `durability`: whether the member must be stored before it joins
    /// (the API's request) or not (a room's caller).
    pub(super) fn join(
        &mut self,
        records: &mut Registry,
        key: CallKey,
        conference_id: &str,
        options: MemberOptions,
        durability: Durability,
    ) -> Result<String, CallError> {
        let Some(call) = self.calls.answered.get(&key) else {
            return Err(CallError::Busy(Busy::CallGone));
        };
        if let Some(joined) = &call.joined {
            return Err(CallError::CallInConference(
                call.id.clone(),
                joined.conference_id.clone(),
            ));
        }
        let conference = records
            .conference(conference_id)
            .ok_or_else(|| RecordError::ConferenceNotFound(conference_id.to_string()))?;
        let link = call.link.is_some();
        let keypad = conference.profile == Profile::InterpretDigits && !link;
        if conference.state == ConferenceState::Completed {
            return Err(RecordError::ConferenceCompleted.into());
        }
        // Links are not people: they do not count against the room's size,
        // and a link is never refused for it (the media slots bound it).
        let max_members = self.max_members(&conference);
        let links = self.links_in(conference_id);
        let people = conference.active_members.saturating_sub(links);
        if people >= max_members && !link {
            return Err(RecordError::ConferenceFull(max_members).into());
        }
        let record_limit = if link {
            usize::MAX
        } else {
            max_members + links
        };
        let Ok(sockets) = call.ports.member_sockets(call.media_address) else {
            return Err(CallError::Busy(Busy::SocketNotShared));
        };
        let call_id = call.id.clone();
        let sip_held = call.held;
        let media = &self.config.media;
        let add = |key, mix, flags| add_member(call, media, sockets, key, mix, flags, keypad, link);
        let Some(media_key) = self.keys.allocate() else {
            tracing::warn!("every media slot is taken");
            return Err(CallError::Busy(Busy::NoMediaSlot));
        };
        let Some(mix) = self.mixes.get_or_assign(conference_id) else {
            self.keys.release(media_key);
            return Err(CallError::Busy(Busy::NoMix));
        };
        let member_id = match records
            .add_member_with(
                conference_id,
                &call_id,
                options,
                record_limit,
                self.now.wall,
                durability,
            )
            .map(|m| m.id.clone())
        {
            Ok(id) => id,
            Err(e) => {
                self.keys.release(media_key);
                self.release_mix_if_done(records, conference_id);
                return Err(e.into());
            }
        };
        records.set_media(&member_id, media_key);
        let flags = effective_flags(records, &member_id, sip_held);
        self.media(Command::AddMember(Box::new(add(media_key, mix, flags))));
        self.member_event(records, &member_id);
        tracing::info!(conference = %conference_id, member = %member_id, call = %call_id, link, "member joined");
        if link {
            self.link_stats.up.fetch_add(1, Ordering::Relaxed);
        }
        if options.join_tone {
            let tone = self.join_tone.clone();
            self.play_tone(records, conference_id, tone);
        }
        self.calls.by_media.insert(media_key, key);
        if let Some(call) = self.calls.answered.get_mut(&key) {
            call.joined = Some(Joined {
                conference_id: conference_id.to_string(),
                member_id: member_id.clone(),
                media: media_key,
                mix,
                talking_notice: Default::default(),
            });
        }
        Ok(member_id)
    }

    /// Takes a call out of its conference's mix and completes its member record
    /// (and the conference when it was the last); the call itself stays up.
    pub(super) fn detach(&mut self, records: &mut Registry, key: CallKey, reason: &str) {
        let Some((joined, link)) = self
            .calls
            .answered
            .get_mut(&key)
            .and_then(|c| c.joined.take().map(|j| (j, c.link.is_some())))
        else {
            return;
        };
        if link {
            self.link_stats.up.fetch_sub(1, Ordering::Relaxed);
        }
        self.calls.by_media.remove(&joined.media);
        self.media(Command::RemoveMember { key: joined.media });
        self.keys.release(joined.media);
        records.set_removed_reason(&joined.member_id, reason);
        let completed = records
            .complete_member(&joined.member_id, self.now.wall)
            .unwrap_or(false);
        self.member_event(records, &joined.member_id);
        if completed {
            tracing::info!(conference = %joined.conference_id, "conference completed: last member left");
            self.conference_event(records, &joined.conference_id);
        }
        let leaving_tone = !completed
            && records
                .member(&joined.member_id)
                .is_some_and(|m| m.leaving_tone);
        if leaving_tone {
            let tone = self.leaving_tone.clone();
            self.play_tone(records, &joined.conference_id, tone);
        }
        self.release_mix_if_done(records, &joined.conference_id);
        tracing::info!(member = %joined.member_id, mix = joined.mix, "member left: {reason}");
    }

    /// Sends a call's effective flags (member OR conference OR SIP hold) to the mixer.
    pub(super) fn apply_flags(&mut self, records: &Registry, key: CallKey) {
        let Some(call) = self.calls.answered.get(&key) else {
            return;
        };
        let Some(joined) = &call.joined else {
            return;
        };
        let flags = effective_flags(records, &joined.member_id, call.held);
        let media_key = joined.media;
        self.media(Command::SetFlags {
            key: media_key,
            flags,
        });
    }

    pub(super) fn release_mix_if_done(&mut self, records: &Registry, conference_id: &str) {
        let active = records
            .conference(conference_id)
            .map(|c| c.active_members)
            .unwrap_or(0);
        if active == 0 {
            self.mixes.release(conference_id);
        }
    }

    pub(super) fn on_media_event(&mut self, records: &mut Registry, event: Event) {
        match event {
            Event::RtpTimeout { key } => {
                if let Some(&call) = self.calls.by_media.get(&key) {
                    tracing::info!(
                        "no RTP, RTCP or session refresh for {:?}: hanging up",
                        self.config.media.rtp_timeout.unwrap_or_default()
                    );
                    self.hang_up(records, call, NORMAL_CLEARING, "RTP timeout");
                }
            }
            Event::Talking { key, talking } => self.on_talking(records, key, talking),
            Event::ClipDone { id, end } => self.on_clip_done(records, id, end),
            Event::Digit { key, digit, .. } if self.calls.in_lobby(key) => {
                self.on_pin_digit(records, key, digit)
            }
            Event::Digit {
                key,
                digit,
                duration_ms,
                ..
            } => self.on_digit(records, key, digit, duration_ms),
            Event::FlagsChanged { key, flags } => self.on_keypad_flags(records, key, flags),
            Event::Leave { key } => {
                if let Some(&call) = self.calls.by_media.get(&key) {
                    tracing::info!("the caller pressed # to leave");
                    self.hang_up(records, call, NORMAL_CLEARING, "left with #");
                }
            }
            Event::QueueFull => tracing::warn!("media event queue overflowed"),
        }
    }

    /// A key pressed: in a `passthru_digits` conference it goes to the
    /// application as a `dtmf` event (the keypad already acted otherwise).
    fn on_digit(&mut self, records: &Registry, key: MemberKey, digit: char, duration_ms: u32) {
        let Some((_, call, joined)) = self.calls.member_of(key) else {
            return;
        };
        let Some(conference) = records.conference(&joined.conference_id) else {
            return;
        };
        if conference.profile != Profile::PassthruDigits {
            return;
        }
        if let Some(record) = records.call(&call.id) {
            self.callback(CallbackEvent::Dtmf {
                call: record.into_owned(),
                conference: conference.into_owned(),
                digit,
                duration_ms,
            });
        }
    }

    /// The caller changed mute or deaf with the keypad: the record follows, and
    /// the conference's own mute/hold are applied on top again.
    fn on_keypad_flags(&mut self, records: &mut Registry, key: MemberKey, flags: MemberFlags) {
        let Some((call_key, _, joined)) = self.calls.member_of(key) else {
            return;
        };
        let member_id = joined.member_id.clone();
        let changed = records
            .member(&member_id)
            .is_some_and(|m| m.mute != flags.muted || m.deaf != flags.deaf);
        if !changed {
            return;
        }
        let _ = records.update_member(&member_id, |m| {
            m.mute = flags.muted;
            m.deaf = flags.deaf;
        });
        self.member_event(records, &member_id);
        self.apply_flags(records, call_key);
    }

    /// Puts an answered call to a PIN room into its lobby and prompts for the PIN.
    pub(super) fn enter_lobby(&mut self, key: CallKey, room: Room) -> Result<(), &'static str> {
        let Some(call) = self.calls.answered.get(&key) else {
            return Err("the call is gone");
        };
        let Ok(sockets) = call.ports.member_sockets(call.media_address) else {
            return Err("cannot share the RTP socket");
        };
        let call_id = call.id.clone();
        let flags = MemberFlags {
            held: call.held,
            ..MemberFlags::default()
        };
        // Keys are the PIN here, never keypad commands.
        let media = &self.config.media;
        let add = |key, mix| add_member(call, media, sockets, key, mix, flags, false, false);
        let Some(media) = self.keys.allocate() else {
            return Err("every media slot is taken");
        };
        let mix_name = format!("lobby:{call_id}");
        let Some(mix) = self.mixes.get_or_assign(&mix_name) else {
            self.keys.release(media);
            return Err("every conference mix is taken");
        };
        self.media(Command::AddMember(Box::new(add(media, mix))));
        self.calls.by_media.insert(media, key);
        let prompt = room.pin_prompt.clone();
        if let Some(call) = self.calls.answered.get_mut(&key) {
            call.lobby = Some(Lobby::new(media, mix_name, room));
        }
        tracing::info!(call = %call_id, "waiting for the room PIN");
        self.speak_to_call(&call_id, &prompt, After::Nothing);
        Ok(())
    }

    /// A key pressed in the lobby.
    fn on_pin_digit(&mut self, records: &mut Registry, media: MemberKey, digit: char) {
        let Some(&key) = self.calls.by_media.get(&media) else {
            return;
        };
        let Some(call) = self.calls.answered.get_mut(&key) else {
            return;
        };
        let call_id = call.id.clone();
        let ip = call.signalling_ip;
        let Some(lobby) = call.lobby.as_mut() else {
            return;
        };
        let now = self.now.instant;
        if digit == '#' && self.pin_guard.locked_until(ip, now).is_some() {
            // Whatever was entered: the address may not try now.
            lobby.pause();
            self.pin_guard.refused();
            tracing::info!(call = %call_id, %ip, "PIN tried from a locked-out address");
            self.speak_to_call(&call_id, PIN_LOCKED_OUT, After::HangUp(key));
            return;
        }
        let verdict = lobby.press(digit);
        if matches!(verdict, Pin::Wrong { .. } | Pin::Refused) {
            lobby.pause();
        }
        match verdict {
            Pin::Entering => {}
            Pin::Right => {
                let room = lobby.room.clone();
                tracing::info!(call = %call_id, "right PIN");
                self.pin_guard.succeeded(ip);
                self.leave_lobby(key);
                self.join_room(records, key, &room);
            }
            Pin::Wrong { tries } => match self.pin_guard.failed(ip, now) {
                Failure::Delay(wait) => {
                    let wait_ms = wait.as_millis() as u64;
                    tracing::info!(call = %call_id, %ip, tries, wait_ms, "wrong PIN");
                    self.set_pin_retry(wait, key);
                }
                Failure::LockedOut { until } => self.lock_out(key, &call_id, ip, until),
            },
            Pin::Refused => match self.pin_guard.failed(ip, now) {
                Failure::Delay(_) => {
                    tracing::info!(call = %call_id, %ip, "wrong PIN, no tries left");
                    self.speak_to_call(&call_id, PIN_FAILED, After::HangUp(key));
                }
                Failure::LockedOut { until } => self.lock_out(key, &call_id, ip, until),
            },
        }
    }

    /// The caller's address entered its last wrong PIN: it is locked out
    /// until `until`, and this caller is told so and hung up.
    fn lock_out(&mut self, key: CallKey, call_id: &str, ip: IpAddr, until: Instant) {
        let for_s = until.saturating_duration_since(self.now.instant).as_secs();
        tracing::warn!(call = %call_id, %ip, for_s, "too many wrong PINs: address locked out");
        self.speak_to_call(call_id, PIN_LOCKED_OUT, After::HangUp(key));
    }

    /// A caller who entered a wrong PIN waited long enough: it is asked
    /// again, and its keys count from now on.
    pub(super) fn pin_retry(&mut self, key: CallKey) {
        let Some(call) = self.calls.answered.get_mut(&key) else {
            return;
        };
        let Some(lobby) = call.lobby.as_mut() else {
            return;
        };
        lobby.resume();
        let call_id = call.id.clone();
        self.speak_to_call(&call_id, WRONG_PIN, After::Nothing);
    }

    /// Takes a call out of its lobby (it joins, or it ended).
    pub(super) fn leave_lobby(&mut self, key: CallKey) {
        let Some(lobby) = self
            .calls
            .answered
            .get_mut(&key)
            .and_then(|c| c.lobby.take())
        else {
            return;
        };
        self.calls.by_media.remove(&lobby.media);
        self.media(Command::RemoveMember { key: lobby.media });
        self.keys.release(lobby.media);
        self.mixes.release(&lobby.mix_name);
    }

    /// After joining a room with `announce_count`: how many were there before.
    fn announce_count(&mut self, call_id: &str, others: u64) {
        let sentence = match others {
            0 => "You are the first person in the conference.".to_string(),
            1 => "There is one other person in the conference.".to_string(),
            n => format!("There are {n} other people in the conference."),
        };
        self.speak_to_call(call_id, &sentence, After::Nothing);
    }
}

/// The media plane's order to serve an answered call in slot `media` of mix `mix`.
#[allow(clippy::too_many_arguments)]
fn add_member(
    call: &Call,
    settings: &crate::config::MediaSettings,
    sockets: MemberSockets,
    media: MemberKey,
    mix: u32,
    flags: MemberFlags,
    keypad: bool,
    link: bool,
) -> AddMember {
    let codec = media_codec(call.negotiated.codec);
    AddMember {
        key: media,
        mix,
        sockets,
        remote_rtp: call.negotiated.remote_rtp_addr,
        remote_rtcp: call.remote_rtcp(),
        signalling_ip: Some(call.signalling_ip),
        codec,
        opus: opus_states(codec, settings),
        payload_type: call.negotiated.codec_pt,
        // A link's keys are nobody's: its telephone-events are dropped.
        telephone_event_pt: call.negotiated.telephone_event_pt.filter(|_| !link),
        telephone_event_rate_hz: call.negotiated.telephone_event_rate_hz,
        flags,
        keypad,
        srtp: call.negotiated.srtp.map(|keys| {
            Box::new(media::srtp::MemberSrtp::new(
                keys.suite,
                &keys.remote,
                &keys.local,
            ))
        }),
        link,
    }
}

/// What the mixer applies to a member: its own flags, its conference's, and a
/// hold from the phone itself (docs/architecture.md "Mute, hold and deaf").
pub(super) fn effective_flags(records: &Registry, member_id: &str, sip_held: bool) -> MemberFlags {
    let member = records.member(member_id);
    let conference = member
        .as_ref()
        .and_then(|m| records.conference(&m.conference_id));
    let (Some(member), Some(conference)) = (member, conference) else {
        return MemberFlags {
            held: sip_held,
            ..MemberFlags::default()
        };
    };
    MemberFlags {
        muted: member.mute || conference.mute,
        deaf: member.deaf,
        held: member.hold || conference.hold || sip_held,
    }
}

/// The media plane's codec for an SDP one, when the media plane can serve
/// it in this build (`CodecState::available`).
fn media_codec(codec: sdp::SdpCodec) -> media::Codec {
    match codec {
        sdp::SdpCodec::Pcmu => media::Codec::Pcmu,
        sdp::SdpCodec::Pcma => media::Codec::Pcma,
        sdp::SdpCodec::G722 => media::Codec::G722,
        sdp::SdpCodec::Opus => media::Codec::Opus,
    }
}

/// The media plane's order to carry on with the codec a re-offer settled.
pub(super) fn set_codec(
    call: &Call,
    media: MemberKey,
    settings: &crate::config::MediaSettings,
) -> Command {
    let codec = media_codec(call.negotiated.codec);
    Command::SetCodec {
        key: media,
        codec,
        opus: opus_states(codec, settings),
        payload_type: call.negotiated.codec_pt,
        // A link's keys are nobody's, as when it joined.
        telephone_event_pt: call
            .negotiated
            .telephone_event_pt
            .filter(|_| call.link.is_none()),
        telephone_event_rate_hz: call.negotiated.telephone_event_rate_hz,
    }
}

/// An Opus member's libopus states, built here on the signalling side (the
/// media thread never allocates them); None for other codecs. Should
/// libopus refuse after loading, the media plane refuses the member and
/// says so in its dropped-command count; this logs why.
pub(super) fn opus_states(
    codec: media::Codec,
    settings: &crate::config::MediaSettings,
) -> Option<Box<media::codec::OpusStates>> {
    if codec != media::Codec::Opus {
        return None;
    }
    media::codec::OpusStates::new(settings.opus_bitrate_bps, settings.opus_complexity)
        .inspect_err(|e| tracing::warn!("an Opus member cannot be served: {e}"))
        .ok()
}

/// `media.codecs` less what this bridge cannot run.
pub(super) fn usable_codecs(media: &crate::config::MediaSettings) -> Vec<sdp::SdpCodec> {
    media
        .codecs
        .iter()
        .copied()
        .filter(|&codec| media::codec::CodecState::available(media_codec(codec)).is_ok())
        .collect()
}
