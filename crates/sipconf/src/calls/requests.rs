//! The switchboard's rules for the API's requests (docs/api.md "Conferences" and
//! "Calls"): add, change and remove members, change or complete a
//! conference, answer, reject or hang up a call, and place an outbound call.
//! Each request gets exactly one [`Action::Reply`]; an outbound call's comes
//! once the SIP endpoint took its INVITE ([`Input::Invited`]). Parsing the
//! request and wording its errors are the API's, never this file's.
//!
//! [`Input::Invited`]: super::Input::Invited

use super::outbound::{outbound_from_uri, OutboundTarget, OFFERED_TELEPHONE_EVENT_PT};
use super::switchboard::{fresh_master_key, new_sdp_session, Placing, Switchboard};
use super::table::{Link, Outgoing, Route};
use super::{
    Action, ApiRequest, ConferenceChange, MemberChange, OutgoingRequest, Reply, RequestId,
    CALL_REJECTED, NORMAL_CLEARING, ORIGINATOR_CANCEL,
};
use super::{Busy, CallError};
use crate::conference::{
    CallDirection, CallState, ConferenceState, Durability, MemberOptions, MemberState, RecordError,
    Registry,
};
use crate::sip::sdp;
use crate::sip::{CallKey, Credentials, OutgoingCall, Transport};
use std::net::SocketAddr;

impl Switchboard {
    pub(super) fn on_api(&mut self, records: &mut Registry, request: RequestId, call: ApiRequest) {
        let result = match call {
            ApiRequest::AddMember {
                conference_id,
                call_id,
                options,
            } => self
                .add_member(records, &conference_id, &call_id, options)
                .map(Reply::Created),
            ApiRequest::UpdateMember { member_id, change } => {
                let result = self.update_member(records, &member_id, change);
                self.reply(request, result.map(|()| Reply::Done));
                self.hang_up_detached_room_calls(records);
                return;
            }
            ApiRequest::UpdateConference {
                conference_id,
                change,
            } => {
                let result = self.update_conference(records, &conference_id, change);
                self.reply(request, result.map(|()| Reply::Done));
                self.hang_up_detached_room_calls(records);
                return;
            }
            ApiRequest::CreateCall { call, target } => {
                match self.place_call(records, request, call, target) {
                    // The reply waits for the endpoint's key (`on_invited`).
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            ApiRequest::SetCallState { call_id, state } => self
                .set_call_state(records, &call_id, state)
                .map(|()| Reply::Done),
            ApiRequest::Audio {
                target,
                request: audio,
                speech_missing,
            } => self
                .audio_request(records, target, audio, speech_missing)
                .map(|()| Reply::Done),
        };
        self.reply(request, result);
    }

    fn reply(&mut self, request: RequestId, result: Result<Reply, CallError>) {
        self.act(Action::Reply { request, result });
    }

    fn add_member(
        &mut self,
        records: &mut Registry,
        conference_id: &str,
        call_id: &str,
        options: MemberOptions,
    ) -> Result<String, CallError> {
        if records.conference(conference_id).is_none() {
            return Err(RecordError::ConferenceNotFound(conference_id.to_string()).into());
        }
        let Some(record) = records.call(call_id) else {
            return Err(RecordError::CallNotFound(call_id.to_string()).into());
        };
        if record.state != CallState::Active {
            return Err(CallError::CallUnavailable(call_id.to_string()));
        }
        let Some((key, _)) = self.calls.answered_by_id(call_id) else {
            return Err(CallError::CallUnavailable(call_id.to_string()));
        };
        self.join(records, key, conference_id, options, Durability::Required)
    }

    fn update_member(
        &mut self,
        records: &mut Registry,
        member_id: &str,
        change: MemberChange,
    ) -> Result<(), CallError> {
        let member = records
            .member(member_id)
            .ok_or_else(|| RecordError::MemberNotFound(member_id.to_string()))?;
        let (call_id, state) = (member.call_id.clone(), member.state);
        if state == MemberState::Completed {
            // Removing a removed member does nothing (docs/api.md "Members").
            return if change.remove {
                Ok(())
            } else {
                Err(RecordError::ConferenceCompleted.into())
            };
        }
        let key = self.calls.by_id.get(&call_id).copied();
        if change.remove {
            match key {
                Some(key) => self.detach(records, key, "removed through the API"),
                None => {
                    records.set_removed_reason(member_id, "removed through the API");
                    let completed = records.complete_member(member_id, self.now.wall)?;
                    self.member_event(records, member_id);
                    if completed {
                        if let Some(c) = records.member(member_id).map(|m| m.conference_id.clone())
                        {
                            self.conference_event(records, &c);
                        }
                    }
                }
            }
            return Ok(());
        }
        let flags_changed = change.mute.is_some() || change.hold.is_some();
        records.update_member(member_id, |m| {
            if let Some(mute) = change.mute {
                m.mute = mute;
            }
            if let Some(hold) = change.hold {
                m.hold = hold;
            }
            if let Some(tone) = change.join_tone {
                m.join_tone = tone;
            }
            if let Some(tone) = change.leaving_tone {
                m.leaving_tone = tone;
            }
        })?;
        if flags_changed {
            self.member_event(records, member_id);
            if let Some(key) = key {
                self.apply_flags(records, key);
            }
        }
        Ok(())
    }

    fn update_conference(
        &mut self,
        records: &mut Registry,
        conference_id: &str,
        change: ConferenceChange,
    ) -> Result<(), CallError> {
        records.update_conference(conference_id, |c| {
            if let Some(mute) = change.mute {
                c.mute = mute;
            }
            if let Some(hold) = change.hold {
                c.hold = hold;
            }
        })?;
        let keys: Vec<CallKey> = records
            .members_of(conference_id)
            .into_iter()
            .filter(|m| m.state == MemberState::Active)
            .filter_map(|m| self.calls.by_id.get(&m.call_id).copied())
            .collect();
        if change.mute.is_some() || change.hold.is_some() {
            for key in &keys {
                self.apply_flags(records, *key);
            }
        }
        if !change.complete {
            return Ok(());
        }
        records.set_completed_reason(conference_id, "completed through the API");
        for key in keys {
            self.detach(records, key, "the conference was completed");
        }
        // Members without a live call (none in practice) and conferences
        // that never had members complete here.
        let leftovers: Vec<String> = records
            .members_of(conference_id)
            .into_iter()
            .filter(|m| m.state == MemberState::Active)
            .map(|m| m.id.clone())
            .collect();
        for member in leftovers {
            if records.complete_member(&member, self.now.wall)? {
                self.conference_event(records, conference_id);
            }
            self.member_event(records, &member);
        }
        // Detaching the last member completed it (and queued its event);
        // a conference that never had members completes here.
        let open = records
            .conference(conference_id)
            .is_some_and(|c| c.state != ConferenceState::Completed);
        if open {
            records.complete_conference(conference_id, self.now.wall)?;
            self.conference_event(records, conference_id);
        }
        self.mixes.release(conference_id);
        Ok(())
    }

    /// Room callers the API removed from their conference are hung up (BYE).
    fn hang_up_detached_room_calls(&mut self, records: &mut Registry) {
        let detached: Vec<CallKey> = self
            .calls
            .answered
            .iter()
            .filter(|(_, call)| call.room_call && call.joined.is_none())
            .map(|(key, _)| *key)
            .collect();
        for key in detached {
            self.hang_up(records, key, NORMAL_CLEARING, "removed from the room");
        }
    }

    fn set_call_state(
        &mut self,
        records: &mut Registry,
        call_id: &str,
        state: CallState,
    ) -> Result<(), CallError> {
        let current = records
            .call(call_id)
            .map(|c| c.state)
            .ok_or_else(|| RecordError::CallNotFound(call_id.to_string()))?;
        let key = self.calls.by_id.get(call_id).copied();
        if let Some(key) = key.filter(|k| self.calls.outgoing.contains_key(k)) {
            // Our own call, still ringing: only hanging up (CANCEL) makes sense.
            return match state {
                CallState::Completed => {
                    self.hang_up(records, key, ORIGINATOR_CANCEL, "cancelled through the API");
                    Ok(())
                }
                _ => Err(CallError::CallInvalidState(
                    call_id.to_string(),
                    CallState::Started,
                )),
            };
        }
        match (state, current, key) {
            (CallState::Active, CallState::Active, _) => Ok(()),
            (CallState::Active, CallState::Started, Some(key)) => {
                let Some(ringing) = self.calls.ringing.remove(&key) else {
                    return Err(CallError::CallInvalidState(
                        call_id.to_string(),
                        CallState::Started,
                    ));
                };
                match ringing.route {
                    Route::Room(_) => self.answer_room_call(records, key, ringing),
                    Route::Application => {
                        self.answer(records, key, &ringing);
                    }
                }
                Ok(())
            }
            (CallState::Rejected, CallState::Started, Some(key)) => {
                self.reject(key, 603, "Decline");
                self.finish(
                    records,
                    key,
                    CallState::Rejected,
                    CALL_REJECTED,
                    "rejected through the API",
                );
                Ok(())
            }
            (CallState::Completed, CallState::Started, Some(key)) => {
                self.reject(key, 480, "Temporarily Unavailable");
                self.finish(
                    records,
                    key,
                    CallState::Completed,
                    NORMAL_CLEARING,
                    "hung up through the API",
                );
                Ok(())
            }
            (CallState::Completed, CallState::Active, Some(key)) => {
                self.hang_up(records, key, NORMAL_CLEARING, "hung up through the API");
                Ok(())
            }
            (CallState::Completed, CallState::Completed | CallState::Rejected, _) => Ok(()),
            (_, current, _) => Err(CallError::CallInvalidState(call_id.to_string(), current)),
        }
    }

    /// Places an outbound call: RTP ports, an offer, the record, and the
    /// INVITE for the driver to hand the endpoint.
    fn place_call(
        &mut self,
        records: &mut Registry,
        request: RequestId,
        call: OutgoingRequest,
        target: OutboundTarget,
    ) -> Result<(), CallError> {
        self.invite(records, Some(request), call, target, None)
            .map(|_| ())
    }

    /// Places an outbound call (for an API request, or a cascade link);
    /// returns its id. It is live once the endpoint took it (`on_invited`).
    pub(super) fn invite(
        &mut self,
        records: &mut Registry,
        request: Option<RequestId>,
        call: OutgoingRequest,
        target: OutboundTarget,
        link: Option<Link>,
    ) -> Result<String, CallError> {
        if let Some(conference_id) = &call.conference_id {
            let c = records
                .conference(conference_id)
                .ok_or_else(|| RecordError::ConferenceNotFound(conference_id.clone()))?;
            if c.state == ConferenceState::Completed {
                return Err(RecordError::ConferenceCompleted.into());
            }
        }
        let Some(ports) = self.ports.bind_pair(self.now.instant) else {
            return Err(CallError::Busy(Busy::NoRtpPort));
        };
        let media_address = self.ports.media_address_towards(target.destination.ip());
        let session = new_sdp_session();
        // SRTP keys in clear SDP protect nothing, so plain calls stay plain
        // unless SRTP is required.
        let offers_srtp = match self.config.media.srtp {
            sdp::SrtpPolicy::Off => false,
            sdp::SrtpPolicy::Offer => target.transport == Transport::Tls,
            sdp::SrtpPolicy::Require => true,
        };
        let srtp_key = offers_srtp.then(fresh_master_key);
        // A cascade link carries a whole room's mix: G.722's ADPCM, coded
        // twice on the way, leaves products 38 dB under the tones, heard as
        // echo; links stay on G.711 (docs/scaling.md "Cascading").
        let link_codecs = [sdp::SdpCodec::Pcmu, sdp::SdpCodec::Pcma];
        let codecs: &[sdp::SdpCodec] = if link.is_some() {
            &link_codecs
        } else {
            &self.codecs
        };
        let offer_sdp = sdp::build_offer(
            session,
            SocketAddr::new(media_address, ports.rtp_port),
            codecs,
            OFFERED_TELEPHONE_EVENT_PT,
            srtp_key.as_ref(),
        );
        let outbound = &self.config.sip.outbound;
        let credentials = (!outbound.username.is_empty()).then(|| Credentials {
            username: outbound.username.clone(),
            password: outbound.password.clone(),
        });
        let created = records.create_call_stored(
            CallDirection::Out,
            &call.from,
            &call.to,
            self.now.wall,
            |c| {
                c.callback_url = call.callback_url.clone();
                c.tag = call.tag.clone();
            },
        );
        let id = match created {
            Ok(record) => record.id.clone(),
            Err(e) => {
                self.ports.release(&ports, self.now.instant);
                return Err(e.into());
            }
        };
        let invite = OutgoingCall {
            request_uri: target.request_uri.clone(),
            from_uri: outbound_from_uri(&call.from, media_address),
            from_display: None,
            destination: target.destination,
            transport: target.transport,
            offer_sdp,
            credentials,
            link: link.as_ref().map(|l| self.link_header(&l.room)),
        };
        tracing::info!(call = %id, to = %target.request_uri, via = %target.destination, link = link.is_some(), "placing an outbound call");
        self.placing.insert(
            id.clone(),
            Placing {
                request,
                outgoing: Outgoing {
                    id: id.clone(),
                    ports,
                    media_address,
                    signalling_ip: target.destination.ip(),
                    session,
                    conference_id: call.conference_id,
                    timed_out: false,
                    srtp_key,
                    link,
                },
                call_timeout: call.call_timeout,
            },
        );
        self.act(Action::Invite {
            call_id: id.clone(),
            call: Box::new(invite),
        });
        Ok(id)
    }

    /// The endpoint took the outbound call's INVITE (`Some` key) or its
    /// tables were full.
    pub(super) fn on_invited(
        &mut self,
        records: &mut Registry,
        call_id: &str,
        key: Option<CallKey>,
    ) {
        let Some(placing) = self.placing.remove(call_id) else {
            return;
        };
        let Some(key) = key else {
            self.ports
                .release(&placing.outgoing.ports, self.now.instant);
            records.end_call(call_id, CallState::Rejected, CALL_REJECTED, self.now.wall);
            if let Some(request) = placing.request {
                self.reply(request, Err(CallError::Busy(Busy::SipTablesFull)));
            }
            self.link_down(placing.outgoing.link.as_ref(), call_id);
            return;
        };
        tracing::info!(call = %call_id, "outbound call placed");
        self.calls.by_id.insert(call_id.to_string(), key);
        self.calls.outgoing.insert(key, placing.outgoing);
        self.set_call_timeout(key, placing.call_timeout);
        if let Some(request) = placing.request {
            self.reply(request, Ok(Reply::Created(call_id.to_string())));
        }
    }
}
