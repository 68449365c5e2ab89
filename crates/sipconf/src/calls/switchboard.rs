//! The call core: a sans-IO state machine that holds every rule of a call's
//! life (docs/architecture.md "Call routing": rooms, the PIN lobby, `incomingcall`, the
//! API's requests, outbound calls, playback bookkeeping).
//!
//! Everything that happens is an [`Input`] handed to [`Switchboard::handle`]
//! at a [`Now`], with the records to change; everything the switchboard wants
//! done is an [`Action`] taken out with [`Switchboard::poll_action`], and its
//! next timer is [`Switchboard::poll_timeout`]. It owns the tables of live
//! calls, the media member keys and mixes, and the playback tables. It never
//! touches a socket, a channel, the clock, SQLite or an HTTP client: the
//! driver (`calls::driver`) does, and tests drive it on a fake clock.
//!
//! ```text
//!   SIP events ──┐                       ┌── SIP answers and requests
//!   media events ┤                       ├── media commands
//!   API requests ┼─> Switchboard::handle ┼── callbacks (record snapshots)
//!   clips, time ─┘   (&mut Registry)     ├── fetches, INVITEs to place
//!                                        └── API replies
//! ```
//!
//! This file holds the state machine and the rules of SIP's events (a call
//! rings, is answered, held, hung up), of timers and of shutdown; the rules
//! for members, the API's requests and audio are in `membership.rs`,
//! `requests.rs` and `audio.rs`.

use super::cascade::{bridge_ids, cascades, Cascade, LinkStats};
use super::membership::{effective_flags, set_codec, usable_codecs};
use super::pin_guard::{PinGuard, PinStats};
use super::playback::Playback;
use super::ports::RtpPorts;
use super::table::{Call, CallTable, Link, MixPool, Outgoing, Ringing, Route};
use super::{
    Action, Input, Now, RequestId, CALL_REJECTED, NORMAL_CLEARING, NO_ANSWER, ORIGINATOR_CANCEL,
    USER_BUSY,
};
use crate::audio::{self, Clip};
use crate::conference::{CallDirection, CallState, Durability, MemberOptions, Registry};
use crate::config::{Config, Room};
use crate::events::CallbackEvent;
use crate::media::srtp::{MasterKey, MASTER_KEY_BYTES, MASTER_SALT_BYTES};
use crate::media::{Command, MemberKeys};
use crate::sip::sdp::{self, Offer};
use crate::sip::transport::SipCommand;
use crate::sip::{CallKey, EndReason, SipEvent};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a timer set for a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// A room's `answer_delay_ms` is over.
    Answer,
    /// Nobody answered within `application.answer_timeout`: 480.
    GiveUp,
    /// An outbound call's `callTimeout` is over: CANCEL.
    CallTimeout,
    /// A caller who entered a wrong PIN has waited its address's delay:
    /// it may try again.
    PinRetry,
    /// A member's talking may be told again (`talking.rs`).
    TalkingEvent,
}

/// What a timer is for: a call's, or a cascade link's next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Call(CallKey, Due),
    /// Dial `[[room]] cascade` entry number this again.
    Redial(usize),
    /// See that the room's sound card is in its room (`calls/soundcard.rs`).
    Soundcard,
}

/// An outbound call whose INVITE the endpoint is being asked to send.
#[derive(Debug)]
pub(super) struct Placing {
    /// The API request to answer; `None` for a cascade link.
    pub request: Option<RequestId>,
    pub outgoing: Outgoing,
    pub call_timeout: Duration,
}

/// Routes calls to rooms and applications and keeps records and media in step with SIP.
pub struct Switchboard {
    pub(super) config: Arc<Config>,
    /// `media.codecs` less those this bridge cannot run (Opus without libopus).
    pub(super) codecs: Vec<sdp::SdpCodec>,
    pub(super) ports: Box<dyn RtpPorts>,
    pub(super) keys: MemberKeys,
    pub(super) mixes: MixPool,
    pub(super) calls: CallTable,
    /// Outbound calls waiting for their key, by `c-` id.
    pub(super) placing: HashMap<String, Placing>,
    pub(super) playback: Playback,
    /// Wrong PINs per source address.
    pub(super) pin_guard: PinGuard,
    pub(super) join_tone: Clip,
    pub(super) leaving_tone: Clip,
    /// Due instants, in order (a sequence number keeps equal instants apart).
    timers: BTreeMap<(Instant, u64), Timer>,
    timer_seq: u64,
    /// The links `[[room]] cascade` asks this bridge to keep up.
    pub(super) cascades: Vec<Cascade>,
    /// This bridge's id in `X-Sipconf-Link` (`sip.bridge_id`).
    pub(super) bridge_id: String,
    /// Shutdown began: links are not dialled again.
    pub(super) stopping: bool,
    pub(super) link_stats: Arc<LinkStats>,
    /// `[soundcard]`'s rings: the room's speakerphone, kept in its room.
    pub(super) soundcard: Option<crate::media::local::LocalPort>,
    /// The time of the input being handled.
    pub(super) now: Now,
    actions: VecDeque<Action>,
}

impl Switchboard {
    /// A switchboard for `config`'s rooms and `max_members` media slots, with
    /// its RTP ports from `ports`.
    pub fn new(config: Arc<Config>, ports: Box<dyn RtpPorts>, now: Now) -> Switchboard {
        let capacity = config.media.max_members;
        let pin_limits = config.pin;
        let cascades = cascades(&config);
        let bridge_id = config.sip.bridge_id();
        let codecs = usable_codecs(&config.media);
        let mut switchboard = Switchboard {
            codecs,
            config,
            ports,
            keys: MemberKeys::new(capacity),
            mixes: MixPool::new(capacity),
            calls: CallTable::default(),
            placing: HashMap::new(),
            playback: Playback::default(),
            pin_guard: PinGuard::new(pin_limits, Arc::new(PinStats::default())),
            join_tone: audio::join_tone(),
            leaving_tone: audio::leaving_tone(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            cascades,
            bridge_id,
            stopping: false,
            link_stats: Arc::new(LinkStats::default()),
            soundcard: None,
            now,
            actions: VecDeque::new(),
        };
        // Every link is dialled at once: a room that cascades is joined to
        // its other bridges for as long as this one runs.
        for index in 0..switchboard.cascades.len() {
            switchboard.set_redial_timer(Duration::ZERO, index);
        }
        switchboard
    }

    /// Counts cascade links into `stats` (the API's `/metrics`).
    pub fn with_link_stats(mut self, stats: Arc<LinkStats>) -> Switchboard {
        self.link_stats = stats;
        self
    }

    /// Counts wrong PINs and lockouts into `stats` (the API's `/metrics`).
    pub fn with_pin_stats(mut self, stats: Arc<PinStats>) -> Switchboard {
        self.pin_guard = PinGuard::new(self.config.pin, stats);
        self
    }

    /// Handles one input at `now`, changing `records` and queuing actions.
    pub fn handle(&mut self, now: Now, records: &mut Registry, input: Input) {
        self.now = now;
        match input {
            Input::Sip(event) => self.on_sip_event(records, event),
            Input::Media(event) => self.on_media_event(records, event),
            Input::Api { request, call } => self.on_api(records, request, call),
            Input::Invited { call_id, key } => self.on_invited(records, &call_id, key),
            Input::Clip { id, result } => self.on_clip_ready(records, id, result),
            Input::LinkTarget { index, target } => self.on_link_target(records, index, target),
            Input::Timeout => self.on_timeout(records),
            Input::Shutdown => self.hang_up_all(records),
        }
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When `Input::Timeout` is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Calls alive now (ringing, answered or outgoing).
    pub fn live_calls(&self) -> usize {
        self.calls.by_id.len()
    }

    /// Answered calls: those a shutdown sends a BYE to.
    pub fn answered_calls(&self) -> usize {
        self.calls.answered.len()
    }

    pub(super) fn act(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    pub(super) fn callback(&mut self, event: CallbackEvent) {
        self.act(Action::Callback(Box::new(event)));
    }

    pub(super) fn sip(&mut self, command: SipCommand) {
        self.act(Action::Sip(command));
    }

    pub(super) fn media(&mut self, command: Command) {
        self.act(Action::Media(command));
    }

    pub(super) fn reject(&mut self, call: CallKey, code: u16, reason: &str) {
        self.sip(SipCommand::Reject(call, code, reason.to_string()));
    }

    /// A caller in a PIN lobby may try again after `after`.
    pub(super) fn set_pin_retry(&mut self, after: Duration, call: CallKey) {
        self.set_call_timer(after, call, Due::PinRetry);
    }

    pub(super) fn set_call_timer(&mut self, after: Duration, call: CallKey, due: Due) {
        self.timer_seq += 1;
        self.timers.insert(
            (self.now.instant + after, self.timer_seq),
            Timer::Call(call, due),
        );
    }

    pub(super) fn set_soundcard_timer(&mut self, after: Duration) {
        self.timer_seq += 1;
        self.timers
            .insert((self.now.instant + after, self.timer_seq), Timer::Soundcard);
    }

    pub(super) fn set_redial_timer(&mut self, after: Duration, index: usize) {
        self.timer_seq += 1;
        self.timers.insert(
            (self.now.instant + after, self.timer_seq),
            Timer::Redial(index),
        );
    }

    /// An outbound call is cancelled if nobody answers within `timeout`.
    pub(super) fn set_call_timeout(&mut self, call: CallKey, timeout: Duration) {
        self.set_call_timer(timeout, call, Due::CallTimeout);
    }

    /// Queues the `conference-member` event for a member as it is now.
    pub(super) fn member_event(&mut self, records: &Registry, member_id: &str) {
        let Some(member) = records.member(member_id) else {
            return;
        };
        if let Some(conference) = records.conference(&member.conference_id) {
            self.callback(CallbackEvent::Member {
                conference: conference.into_owned(),
                member: member.into_owned(),
            });
        }
    }

    /// Queues the `conference` event for a conference as it is now.
    pub(super) fn conference_event(&mut self, records: &Registry, conference_id: &str) {
        if let Some(conference) = records.conference(conference_id) {
            self.callback(CallbackEvent::Conference(conference.into_owned()));
        }
    }

    /// Queues a call event (`answer`, `hangup`) for a call as it is now.
    fn call_event(&mut self, records: &Registry, call_id: &str, event_type: &'static str) {
        if let Some(call) = records.call(call_id) {
            self.callback(CallbackEvent::Call {
                call: call.into_owned(),
                event_type,
            });
        }
    }

    fn on_sip_event(&mut self, records: &mut Registry, event: SipEvent) {
        match event {
            SipEvent::IncomingCall {
                call,
                user,
                from,
                to,
                offer,
                source,
                link,
                ..
            } => {
                let incoming = Incoming {
                    user: &user,
                    from: &from,
                    to: &to,
                    source,
                    link: link.as_deref(),
                };
                self.on_incoming(records, call, incoming, offer)
            }
            SipEvent::Confirmed { call } => {
                if let Some(c) = self.calls.answered.get(&call) {
                    tracing::debug!(call = %c.id, "call confirmed by ACK");
                }
            }
            SipEvent::Reoffer { call, offer } => self.on_reoffer(records, call, &offer),
            // A far end that refreshes its session is alive, RTP or not.
            SipEvent::Refreshed { call } => {
                let Some(c) = self.calls.answered.get(&call) else {
                    return;
                };
                tracing::debug!(call = %c.id, "session refreshed");
                if let Some(key) = c.media() {
                    self.media(Command::SignOfLife { key });
                }
            }
            SipEvent::Cancelled { call } => {
                self.finish(
                    records,
                    call,
                    CallState::Completed,
                    ORIGINATOR_CANCEL,
                    "cancelled",
                );
            }
            SipEvent::Ended { call, reason } => {
                let (why, cause) = match reason {
                    EndReason::RemoteBye => ("caller hung up", NORMAL_CLEARING),
                    EndReason::LocalBye => ("hung up by the bridge", NORMAL_CLEARING),
                    EndReason::AckTimeout => ("no ACK", NORMAL_CLEARING),
                    EndReason::Cancelled => ("cancelled", ORIGINATOR_CANCEL),
                    EndReason::Rejected => ("rejected", CALL_REJECTED),
                    EndReason::SessionExpired => ("session expired (no refresh)", NORMAL_CLEARING),
                    EndReason::RefreshFailed => ("session refresh failed", NORMAL_CLEARING),
                };
                self.finish(records, call, CallState::Completed, cause, why);
            }
            SipEvent::Progress { call, code } => {
                if let Some(o) = self.calls.outgoing.get(&call) {
                    tracing::info!(call = %o.id, code, "outbound call progressing");
                }
            }
            SipEvent::Answered { call, answer, link } => {
                self.on_outgoing_answered(records, call, &answer, link.as_deref())
            }
            SipEvent::Established { call, dialog } => {
                // Kept with the record, so a run after a crash can end the call.
                if let Some(c) = self.calls.answered.get(&call) {
                    records.set_dialog(&c.id, &super::dialogs::stored(&dialog));
                }
            }
            SipEvent::Failed { call, code, reason } => {
                let timed_out = self.calls.outgoing.get(&call).is_some_and(|o| o.timed_out);
                let (state, cause) = match code {
                    _ if timed_out => (CallState::Completed, NO_ANSWER),
                    486 | 600 => (CallState::Rejected, USER_BUSY),
                    408 | 480 => (CallState::Completed, NO_ANSWER),
                    487 => (CallState::Completed, ORIGINATOR_CANCEL),
                    _ => (CallState::Rejected, CALL_REJECTED),
                };
                let why = format!("outbound call failed: {code} {reason}");
                self.finish(records, call, state, cause, &why);
            }
        }
    }

    /// The room a Request-URI user reaches: the room of the registration
    /// whose contact user it is (docs/pbx.md), else the room of that number.
    pub(super) fn room(&self, user: &str) -> Option<Room> {
        let number = self
            .config
            .registrations
            .iter()
            .find(|r| r.contact_user == user)
            .map_or(user, |r| r.room.as_str());
        self.config
            .rooms
            .iter()
            .find(|r| r.number == number)
            .cloned()
    }

    /// A new INVITE: to a room, to the application, or 404.
    fn on_incoming(
        &mut self,
        records: &mut Registry,
        call: CallKey,
        incoming: Incoming<'_>,
        offer: Offer,
    ) {
        let Incoming {
            user,
            from,
            to,
            source,
            link,
        } = incoming;
        let room = self.room(user);
        let link = match link.map(|header| self.incoming_link(header, room.as_ref())) {
            None => None,
            Some(Ok(link)) => Some(link),
            Some(Err((code, reason))) => {
                tracing::info!(%from, number = user, code, "cascade link refused: {reason}");
                self.reject(call, code, &reason);
                return;
            }
        };
        let application = self.config.application.incoming_call_url.clone();
        if room.is_none() && application.is_none() {
            tracing::info!(%from, number = user, "no room with this number: 404");
            self.reject(call, 404, "Not Found");
            return;
        }
        if let Err(e) = sdp::negotiate(
            &offer,
            &self.codecs,
            self.config.media.srtp,
            fresh_master_key(),
        ) {
            tracing::info!(%from, "offer not acceptable ({e}): 488");
            self.reject(call, 488, &format!("Not Acceptable Here ({e})"));
            return;
        }
        if let Some(room) = room.as_ref().filter(|room| room.pin.is_some()) {
            if let Some(until) = self.pin_guard.locked_until(source.ip(), self.now.instant) {
                let for_s = until.saturating_duration_since(self.now.instant).as_secs();
                tracing::info!(%from, ip = %source.ip(), room = %room.number, for_s, "locked out for wrong PINs: 403");
                self.pin_guard.refused();
                self.reject(call, 403, "Forbidden (too many wrong PINs)");
                return;
            }
        }
        if let Some(room) = room.as_ref().filter(|_| link.is_none()) {
            if self.people_in_room(records, &room.number) >= room.max_members {
                tracing::info!(room = %room.number, "room is full: 486");
                self.reject(call, 486, "Busy Here (room full)");
                return;
            }
        }
        let id = records
            .create_call(CallDirection::In, from, to, self.now.wall)
            .id
            .clone();
        if let (None, Some(url)) = (&room, application) {
            if let Some(record) = records.call(&id) {
                self.callback(CallbackEvent::IncomingCall {
                    url,
                    call: record.into_owned(),
                });
            }
        }
        self.calls.by_id.insert(id.clone(), call);
        let ringing = Ringing {
            id,
            route: room.clone().map_or(Route::Application, Route::Room),
            from: from.to_string(),
            offer,
            source,
            link,
        };
        let (delay, due) = match &room {
            Some(room) if room.answer_delay.is_zero() || ringing.link.is_some() => {
                self.answer_room_call(records, call, ringing);
                return;
            }
            Some(room) => (room.answer_delay, Due::Answer),
            None => (self.config.application.answer_timeout, Due::GiveUp),
        };
        tracing::info!(call = %ringing.id, number = user, %from, "ringing");
        self.sip(SipCommand::Ring(call));
        self.calls.ringing.insert(call, ringing);
        self.set_call_timer(delay, call, due);
    }

    fn on_timeout(&mut self, records: &mut Registry) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now.instant {
                break;
            }
            match entry.remove() {
                Timer::Call(call, due) => self.on_due(records, call, due),
                Timer::Redial(index) => self.redial(index),
                Timer::Soundcard => self.keep_soundcard_in_room(records),
            }
        }
    }

    fn on_due(&mut self, records: &mut Registry, call: CallKey, due: Due) {
        match due {
            Due::Answer => {
                if let Some(ringing) = self.calls.ringing.remove(&call) {
                    self.answer_room_call(records, call, ringing);
                }
            }
            Due::GiveUp => {
                if self.calls.ringing.contains_key(&call) {
                    tracing::info!("nobody answered within application.answer_timeout: 480");
                    self.reject(call, 480, "Temporarily Unavailable");
                    self.finish(
                        records,
                        call,
                        CallState::Completed,
                        NO_ANSWER,
                        "not answered",
                    );
                }
            }
            Due::PinRetry => self.pin_retry(call),
            Due::TalkingEvent => self.on_talking_due(records, call),
            Due::CallTimeout => {
                if let Some(o) = self.calls.outgoing.get_mut(&call) {
                    tracing::info!(call = %o.id, "outbound call not answered within callTimeout: CANCEL");
                    o.timed_out = true;
                    self.sip(SipCommand::Hangup(call));
                }
            }
        }
    }

    /// Answers a ringing call: RTP ports, 200 OK with SDP, the call record.
    /// On failure the call is refused and finished; returns whether it was answered.
    pub(super) fn answer(
        &mut self,
        records: &mut Registry,
        call: CallKey,
        ringing: &Ringing,
    ) -> bool {
        let offer = &ringing.offer;
        let failure = match sdp::negotiate(
            offer,
            &self.codecs,
            self.config.media.srtp,
            fresh_master_key(),
        ) {
            Err(e) => Some((488, format!("Not Acceptable Here ({e})"))),
            Ok(mut negotiated) => match self.ports.bind_pair(self.now.instant) {
                None => {
                    tracing::warn!("no free RTP port in media.rtp_ports: 503");
                    Some((503, "Service Unavailable (no RTP port)".to_string()))
                }
                Some(ports) => {
                    let media_address = self.ports.media_address_towards(ringing.source.ip());
                    negotiated.direction = answer_direction(offer);
                    let record = Call {
                        id: ringing.id.clone(),
                        ports,
                        media_address,
                        signalling_ip: ringing.source.ip(),
                        negotiated,
                        session: new_sdp_session(),
                        held: offer.is_hold(),
                        joined: None,
                        room_call: matches!(ringing.route, Route::Room(_)),
                        lobby: None,
                        link: ringing.link.clone(),
                    };
                    let answer = sdp::build_answer(
                        record.session,
                        SocketAddr::new(record.media_address, record.ports.rtp_port),
                        &record.negotiated,
                    );
                    tracing::info!(call = %record.id, from = %ringing.from, codec = ?record.negotiated.codec, link = record.link.is_some(), "call answered");
                    let link_header = record.link.as_ref().map(|l| self.link_header(&l.room));
                    self.calls.answered.insert(call, record);
                    match link_header {
                        Some(header) => self.sip(SipCommand::AcceptLink(call, answer, header)),
                        None => self.sip(SipCommand::Accept(call, answer)),
                    }
                    records.answer_call(&ringing.id, self.now.wall);
                    self.call_event(records, &ringing.id, "answer");
                    None
                }
            },
        };
        match failure {
            None => true,
            Some((code, reason)) => {
                self.reject(call, code, &reason);
                self.end_record(
                    records,
                    &ringing.id,
                    CallState::Rejected,
                    CALL_REJECTED,
                    &reason,
                );
                false
            }
        }
    }

    /// Answers a call to a room; it asks for the room's PIN first if it has
    /// one, else joins the room's conference at once.
    pub(super) fn answer_room_call(
        &mut self,
        records: &mut Registry,
        call: CallKey,
        ringing: Ringing,
    ) {
        let Route::Room(room) = &ringing.route else {
            return;
        };
        let room = room.clone();
        if !self.answer(records, call, &ringing) {
            return;
        }
        if room.pin.is_some() && ringing.link.is_none() {
            if let Err(e) = self.enter_lobby(call, room) {
                tracing::warn!(call = %ringing.id, "cannot ask for the PIN: {e}");
                self.sip(SipCommand::Hangup(call));
                self.finish(records, call, CallState::Completed, NORMAL_CLEARING, e);
            }
            return;
        }
        self.join_room(records, call, &room);
        if ringing.link.is_some() {
            self.drop_crossed_link(records, &room.number);
        }
    }

    /// Ends a call everywhere: ringing state, mixer, ports, records, and the
    /// `hangup` event. Idempotent.
    pub(super) fn finish(
        &mut self,
        records: &mut Registry,
        key: CallKey,
        state: CallState,
        cause: &str,
        why: &str,
    ) {
        let (id, link) = if let Some(outgoing) = self.calls.outgoing.remove(&key) {
            self.ports.release(&outgoing.ports, self.now.instant);
            (outgoing.id, outgoing.link)
        } else if let Some(ringing) = self.calls.ringing.remove(&key) {
            (ringing.id, ringing.link)
        } else if self.calls.answered.contains_key(&key) {
            self.detach(records, key, why);
            self.leave_lobby(key);
            let Some(call) = self.calls.answered.remove(&key) else {
                return;
            };
            self.ports.release(&call.ports, self.now.instant);
            (call.id, call.link)
        } else {
            return;
        };
        self.end_record(records, &id, state, cause, why);
        self.link_down(link.as_ref(), &id);
    }

    /// Ends a call's record (once) and queues its `hangup` event.
    pub(super) fn end_record(
        &mut self,
        records: &mut Registry,
        id: &str,
        state: CallState,
        cause: &str,
        why: &str,
    ) {
        self.calls.by_id.remove(id);
        if records.end_call(id, state, cause, self.now.wall) {
            self.call_event(records, id, "hangup");
        }
        tracing::info!(call = %id, "call ended: {why}");
    }

    /// Hangs a call up (BYE, or CANCEL while ours rings) and ends it.
    pub(super) fn hang_up(&mut self, records: &mut Registry, key: CallKey, cause: &str, why: &str) {
        self.sip(SipCommand::Hangup(key));
        self.finish(records, key, CallState::Completed, cause, why);
    }

    /// A re-INVITE: hold, resume, a new address, or a new codec. The codec
    /// stays while the re-offer still carries it (a hold and resume change
    /// nothing in the media); else the best the re-offer carries is taken.
    fn on_reoffer(&mut self, records: &Registry, key: CallKey, offer: &Offer) {
        let Some(call) = self.calls.answered.get_mut(&key) else {
            self.sip(SipCommand::RejectReoffer(
                key,
                481,
                "Call/Transaction Does Not Exist".into(),
            ));
            return;
        };
        let current = call.negotiated.codec;
        let chosen = match sdp::choose_codec(offer, std::slice::from_ref(&current))
            .or_else(|_| sdp::choose_codec(offer, &self.codecs))
        {
            Ok(chosen) => chosen,
            Err(e) => {
                tracing::info!(call = %call.id, "re-offer refused: {e}");
                self.sip(SipCommand::RejectReoffer(
                    key,
                    488,
                    format!("Not Acceptable Here ({e})"),
                ));
                return;
            }
        };
        // The media slot keeps the SRTP contexts it was given: a re-offer
        // must go on with the same key and suite (only the tag may change),
        // and cannot turn SRTP on or off.
        let srtp = match call.negotiated.srtp {
            Some(keys) => offer
                .crypto
                .iter()
                .find(|crypto| crypto.suite == keys.suite && crypto.key == keys.remote)
                .map(|crypto| {
                    Some(sdp::SrtpKeys {
                        tag: crypto.tag,
                        ..keys
                    })
                })
                .ok_or("SRTP re-keying is not supported"),
            None if offer.secure_profile => Err("SRTP cannot start in a re-INVITE"),
            None => Ok(None),
        };
        let srtp = match srtp {
            Ok(srtp) => srtp,
            Err(why) => {
                tracing::info!(call = %call.id, "re-offer refused: {why}");
                self.sip(SipCommand::RejectReoffer(
                    key,
                    488,
                    format!("Not Acceptable Here ({why})"),
                ));
                return;
            }
        };
        call.negotiated.srtp = srtp;
        call.negotiated.secure_profile = srtp.is_some() && offer.secure_profile;
        let held = offer.is_hold();
        call.held = held;
        let codec_changed = (chosen.codec, chosen.codec_pt, chosen.telephone_event_pt)
            != (
                current,
                call.negotiated.codec_pt,
                call.negotiated.telephone_event_pt,
            );
        call.negotiated.codec = chosen.codec;
        call.negotiated.codec_pt = chosen.codec_pt;
        call.negotiated.telephone_event_pt = chosen.telephone_event_pt;
        call.negotiated.telephone_event_rate_hz = chosen.telephone_event_rate_hz;
        call.negotiated.direction = answer_direction(offer);
        if !offer.connection_addr.is_unspecified() {
            call.negotiated.remote_rtp_addr = offer.remote_rtp_addr();
        }
        call.session.bump_version();
        let remote_rtp = call.negotiated.remote_rtp_addr;
        let remote_rtcp = call.remote_rtcp();
        let joined = call.joined.as_ref().map(|j| (j.member_id.clone(), j.media));
        let answer = sdp::build_answer(
            call.session,
            SocketAddr::new(call.media_address, call.ports.rtp_port),
            &call.negotiated,
        );
        let set_codec = joined
            .as_ref()
            .filter(|_| codec_changed)
            .map(|(_, media_key)| set_codec(call, *media_key, &self.config.media));
        tracing::info!(call = %call.id, held, codec = ?call.negotiated.codec, "re-offer");
        if let Some(set_codec) = set_codec {
            self.media(set_codec);
        }
        if let Some((member, media_key)) = joined {
            let flags = effective_flags(records, &member, held);
            if !held {
                self.media(Command::SetRemote {
                    key: media_key,
                    remote_rtp,
                    remote_rtcp,
                });
            }
            self.media(Command::SetFlags {
                key: media_key,
                flags,
            });
        }
        self.sip(SipCommand::AcceptReoffer(key, answer));
    }

    /// An outbound call was answered: media as the answer says, the record,
    /// the `answer` event, and the conference it was placed for.
    fn on_outgoing_answered(
        &mut self,
        records: &mut Registry,
        key: CallKey,
        answer: &Offer,
        link_header: Option<&str>,
    ) {
        let Some(outgoing) = self.calls.outgoing.remove(&key) else {
            return;
        };
        let negotiated = match sdp::negotiate_answer(answer, &self.codecs, outgoing.srtp_key) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(call = %outgoing.id, "unusable answer ({e}): hanging up");
                self.sip(SipCommand::Hangup(key));
                self.ports.release(&outgoing.ports, self.now.instant);
                self.end_record(
                    records,
                    &outgoing.id,
                    CallState::Completed,
                    NORMAL_CLEARING,
                    "unusable answer",
                );
                self.link_down(outgoing.link.as_ref(), &outgoing.id);
                return;
            }
        };
        let id = outgoing.id.clone();
        tracing::info!(call = %id, codec = ?negotiated.codec, "outbound call answered");
        let link = outgoing.link.map(|mut link| {
            link.far = link_header.map(bridge_ids).unwrap_or_default();
            link
        });
        self.calls.answered.insert(
            key,
            Call {
                id: outgoing.id,
                ports: outgoing.ports,
                media_address: outgoing.media_address,
                signalling_ip: outgoing.signalling_ip,
                negotiated,
                session: outgoing.session,
                held: answer.is_hold(),
                joined: None,
                room_call: link.is_some(),
                lobby: None,
                link: link.clone(),
            },
        );
        records.answer_call(&id, self.now.wall);
        self.call_event(records, &id, "answer");
        if let Some(link) = link {
            self.link_up(&link);
            match self.room(&link.room) {
                Some(room) => self.join_room(records, key, &room),
                None => self.hang_up(records, key, NORMAL_CLEARING, "room gone"),
            }
            self.drop_crossed_link(records, &link.room);
            return;
        }
        if let Some(conference_id) = outgoing.conference_id {
            let options = MemberOptions::default();
            let joined = self.join(
                records,
                key,
                &conference_id,
                options,
                Durability::BestEffort,
            );
            if let Err(e) = joined {
                tracing::warn!(call = %id, conference = %conference_id, "answered but cannot join: {e}");
            }
        }
    }

    /// Stopping: every call is hung up (BYE, CANCEL, or 503 while it rings)
    /// and its records completed.
    fn hang_up_all(&mut self, records: &mut Registry) {
        self.stopping = true;
        let outgoing: Vec<CallKey> = self.calls.outgoing.keys().copied().collect();
        for key in outgoing {
            self.hang_up(records, key, NORMAL_CLEARING, "shutdown");
        }
        let ringing: Vec<CallKey> = self.calls.ringing.keys().copied().collect();
        for key in ringing {
            self.reject(key, 503, "Service Unavailable");
            self.finish(
                records,
                key,
                CallState::Completed,
                NORMAL_CLEARING,
                "shutdown",
            );
        }
        if !self.calls.answered.is_empty() {
            tracing::info!(calls = self.calls.answered.len(), "hanging up every call");
        }
        let answered: Vec<CallKey> = self.calls.answered.keys().copied().collect();
        for key in answered {
            self.hang_up(records, key, NORMAL_CLEARING, "shutdown");
        }
    }
}

/// A new SRTP master key and salt from the operating system's generator,
/// for the `a=crypto` of one answer (RFC 4568 8.1: a fresh key per session).
pub(super) fn fresh_master_key() -> MasterKey {
    let mut bytes = [0u8; MASTER_KEY_BYTES + MASTER_SALT_BYTES];
    // Linux's getrandom(2) fails only before the pool is first seeded at
    // boot, long before a call; `rand::rng()` makes the same assumption.
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    MasterKey::from_concatenated(&bytes).expect("30 bytes are a key and a salt")
}

/// A new INVITE as the switchboard needs it.
struct Incoming<'a> {
    user: &'a str,
    from: &'a str,
    to: &'a str,
    source: SocketAddr,
    /// Its `X-Sipconf-Link`: a cascade link from another bridge.
    link: Option<&'a str>,
}

impl Switchboard {
    /// A cascade link's INVITE: the link it makes, or the refusal. It must
    /// not name this bridge (482: a circle), and joins a room without a PIN
    /// (the header is no credential).
    fn incoming_link(&self, header: &str, room: Option<&Room>) -> Result<Link, (u16, String)> {
        let far = bridge_ids(header);
        if far.contains(&self.bridge_id) {
            self.link_stats
                .loops_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err((
                482,
                format!(
                    "Loop Detected (bridge {} is in this cascade)",
                    self.bridge_id
                ),
            ));
        }
        let Some(room) = room else {
            return Err((404, "Not Found (a cascade link needs a room)".to_string()));
        };
        if room.pin.is_some() {
            return Err((
                403,
                "Forbidden (a cascade link cannot enter a PIN)".to_string(),
            ));
        }
        Ok(Link {
            room: room.number.clone(),
            dialled: None,
            far,
        })
    }
}

/// A fresh SDP session (RFC 4566 5.2: the id is random).
pub(super) fn new_sdp_session() -> sdp::SdpSession {
    use rand::Rng;
    sdp::SdpSession::new(rand::rng().random_range(1..u32::MAX as u64))
}

/// The direction we answer with: the RFC 3264 §6.1 mirror of the offer, and
/// `recvonly` for the RFC 2543 hold (`c=0.0.0.0`), where we must not send.
fn answer_direction(offer: &Offer) -> sdp::Direction {
    match offer.direction.answer_to() {
        sdp::Direction::SendRecv if offer.connection_addr.is_unspecified() => {
            sdp::Direction::RecvOnly
        }
        sdp::Direction::SendOnly if offer.connection_addr.is_unspecified() => {
            sdp::Direction::Inactive
        }
        direction => direction,
    }
}
