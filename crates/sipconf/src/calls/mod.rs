//! Calls and their routing: an incoming INVITE to a room number is answered and
//! joined to that room's conference; an INVITE to any other number becomes a
//! Catapult Call that the application answers, rejects and adds to conferences
//! through the API. The call's life (hold, hang-up, RTP timeout) is carried to
//! the records, the callbacks and the media plane.
//!
//! The [`Manager`] runs as one tokio task. It consumes [`SipEvent`]s, media
//! [`Event`]s and [`ApiRequest`]s and is the only place that turns them into
//! commands for the other plane, so every rule of `DESIGN.md` "Call routing"
//! lives here.

mod audio;
mod pin;
mod ports;

pub use audio::{AudioRequest, AudioTarget};
pub use ports::{CallPorts, PortPool};

use crate::conference::{
    CallDirection, CallState, Conference, ConferenceState, Member, MemberOptions, Profile,
    RecordError, Registry,
};
use crate::config::{Config, Room};
use crate::events::Events;
use crate::media::{self, AddMember, Command, Event, MediaHandle, MemberFlags, MemberKey};
use crate::net::wakeup::Wakeup;
use crate::sip::sdp::{self, Offer};
use crate::sip::transport::{SipCommand, SipHandle};
use crate::sip::{CallKey, EndReason, SipEvent};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot, watch};

/// How often the manager drains the media plane's event queue if it cannot
/// wait for the media thread's ring (the eventfd could not join tokio's epoll).
const MEDIA_EVENT_POLL: Duration = Duration::from_millis(20);
/// How long shutdown waits for the BYEs it sent to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// While media commands wait in the backlog, it is offered to the media
/// thread this often (it takes a batch every 20 ms tick).
const MEDIA_BACKLOG_RETRY: Duration = Duration::from_millis(10);
/// Requests from the API waiting for the manager.
const API_QUEUE_LEN: usize = 256;

/// Hangup causes (API.md "Calls").
pub const NORMAL_CLEARING: &str = "NORMAL_CLEARING";
pub const ORIGINATOR_CANCEL: &str = "ORIGINATOR_CANCEL";
pub const USER_BUSY: &str = "USER_BUSY";
pub const NO_ANSWER: &str = "NO_ANSWER";
pub const CALL_REJECTED: &str = "CALL_REJECTED";

/// Completes when the media thread has rung (it queued events), after
/// answering the ring; without the eventfd, every `MEDIA_EVENT_POLL`.
async fn media_rang(wakeup: Option<&AsyncFd<Arc<Wakeup>>>) {
    let Some(wakeup) = wakeup else {
        return tokio::time::sleep(MEDIA_EVENT_POLL).await;
    };
    match wakeup.readable().await {
        Ok(mut ready) => {
            // Answer before draining, so a ring during the drain is not lost.
            ready.clear_ready();
            wakeup.get_ref().clear();
        }
        Err(_) => tokio::time::sleep(MEDIA_EVENT_POLL).await,
    }
}

/// One answered call.
#[derive(Debug)]
struct Call {
    id: String,
    ports: CallPorts,
    media_address: IpAddr,
    negotiated: sdp::Negotiated,
    session: sdp::SdpSession,
    /// On hold by the phone (SIP re-offer).
    held: bool,
    joined: Option<Joined>,
    /// Dialled a room number: no application controls this call, so it is hung
    /// up when the API removes it from its conference (there is nowhere else
    /// for it to go) instead of being left up in silence.
    room_call: bool,
    /// Waiting for its room's PIN.
    lobby: Option<pin::Lobby>,
}

/// A call's place in a conference and the mixer.
#[derive(Debug)]
struct Joined {
    conference_id: String,
    member_id: String,
    media: MemberKey,
    mix: u32,
}

/// Conference mixes in the media plane: one index per active conference.
#[derive(Debug)]
struct MixPool {
    free: Vec<u32>,
    by_conference: HashMap<String, u32>,
}

impl MixPool {
    fn new(capacity: usize) -> MixPool {
        MixPool {
            free: (0..capacity as u32).rev().collect(),
            by_conference: HashMap::new(),
        }
    }

    fn get_or_assign(&mut self, conference_id: &str) -> Option<u32> {
        if let Some(&mix) = self.by_conference.get(conference_id) {
            return Some(mix);
        }
        let mix = self.free.pop()?;
        self.by_conference.insert(conference_id.to_string(), mix);
        Some(mix)
    }

    fn release(&mut self, conference_id: &str) {
        if let Some(mix) = self.by_conference.remove(conference_id) {
            self.free.push(mix);
        }
    }
}

/// The records and the callback queue, shared by the manager and the API.
/// Record changes and the events they cause are made under the one registry
/// lock, so events leave in the order the records changed.
pub struct Shared {
    pub registry: Mutex<Registry>,
    pub events: Events,
}

impl Shared {
    pub fn new(registry: Registry, events: Events) -> Shared {
        Shared {
            registry: Mutex::new(registry),
            events,
        }
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues the `conference-member` event for a member as it is now.
    pub fn member_event(&self, registry: &Registry, member_id: &str) {
        if let Some((c, m)) = conference_and_member(registry, member_id) {
            self.events.member(&c, &m);
        }
    }

    /// Queues the `conference` event for a conference as it is now.
    pub fn conference_event(&self, registry: &Registry, conference_id: &str) {
        if let Some(c) = registry.conference(conference_id) {
            self.events.conference(&c);
        }
    }

    /// Queues a call event (`answer`, `hangup`) for a call as it is now.
    pub fn call_event(&self, registry: &Registry, call_id: &str, event_type: &str) {
        if let Some(call) = registry.call(call_id) {
            self.events.call(&call, event_type);
        }
    }
}

fn conference_and_member<'r>(
    registry: &'r Registry,
    member_id: &str,
) -> Option<(Cow<'r, Conference>, Cow<'r, Member>)> {
    let m = registry.member(member_id)?;
    Some((registry.conference(&m.conference_id)?, m))
}

/// A change to a member asked for through the API; `None` leaves a field as is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberChange {
    pub remove: bool,
    pub mute: Option<bool>,
    pub hold: Option<bool>,
    pub join_tone: Option<bool>,
    pub leaving_tone: Option<bool>,
}

/// A change to a conference's state or flags asked for through the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConferenceChange {
    pub complete: bool,
    pub mute: Option<bool>,
    pub hold: Option<bool>,
}

/// What the API asks of the manager: everything that touches SIP or the mixer.
#[derive(Debug)]
pub enum ApiRequest {
    AddMember {
        conference_id: String,
        call_id: String,
        options: MemberOptions,
        reply: oneshot::Sender<Result<String, RecordError>>,
    },
    UpdateMember {
        member_id: String,
        change: MemberChange,
        reply: oneshot::Sender<Result<(), RecordError>>,
    },
    UpdateConference {
        conference_id: String,
        change: ConferenceChange,
        reply: oneshot::Sender<Result<(), RecordError>>,
    },
    /// Places an outbound call; replies with its id.
    CreateCall {
        call: OutgoingRequest,
        reply: oneshot::Sender<Result<String, RecordError>>,
    },
    /// Answer (`Active`), reject (`Rejected`) or hang up (`Completed`).
    SetCallState {
        call_id: String,
        state: CallState,
        reply: oneshot::Sender<Result<(), RecordError>>,
    },
    /// Play a file or a sentence, or stop (`POST .../audio`).
    Audio {
        target: AudioTarget,
        request: AudioRequest,
        reply: oneshot::Sender<Result<(), RecordError>>,
    },
}

/// `POST /calls` as the manager needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// A number or a `sip:` URI; our From.
    pub from: String,
    /// A `sip:` URI, or a number reached through `sip.outbound.proxy`.
    pub to: String,
    pub callback_url: Option<String>,
    /// Join this conference once answered.
    pub conference_id: Option<String>,
    /// Give up (CANCEL) when not answered within this.
    pub call_timeout: Duration,
    pub tag: Option<String>,
}

/// The default `callTimeout` of outbound calls.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The API's way to the manager.
#[derive(Clone, Debug)]
pub struct ManagerHandle {
    requests: mpsc::Sender<ApiRequest>,
}

impl ManagerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, RecordError>>) -> ApiRequest,
    ) -> Result<T, RecordError> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(make(reply)).await.is_err() {
            return Err(RecordError::Busy("the bridge is stopping"));
        }
        answer
            .await
            .unwrap_or(Err(RecordError::Busy("the bridge is stopping")))
    }

    /// Adds an answered call to a conference; returns the member id.
    pub async fn add_member(
        &self,
        conference_id: String,
        call_id: String,
        options: MemberOptions,
    ) -> Result<String, RecordError> {
        self.ask(|reply| ApiRequest::AddMember {
            conference_id,
            call_id,
            options,
            reply,
        })
        .await
    }

    pub async fn update_member(
        &self,
        member_id: String,
        change: MemberChange,
    ) -> Result<(), RecordError> {
        self.ask(|reply| ApiRequest::UpdateMember {
            member_id,
            change,
            reply,
        })
        .await
    }

    pub async fn update_conference(
        &self,
        conference_id: String,
        change: ConferenceChange,
    ) -> Result<(), RecordError> {
        self.ask(|reply| ApiRequest::UpdateConference {
            conference_id,
            change,
            reply,
        })
        .await
    }

    /// Places an outbound call; returns its id at once (it rings afterwards).
    pub async fn create_call(&self, call: OutgoingRequest) -> Result<String, RecordError> {
        self.ask(|reply| ApiRequest::CreateCall { call, reply })
            .await
    }

    pub async fn audio(
        &self,
        target: AudioTarget,
        request: AudioRequest,
    ) -> Result<(), RecordError> {
        self.ask(|reply| ApiRequest::Audio {
            target,
            request,
            reply,
        })
        .await
    }

    pub async fn set_call_state(
        &self,
        call_id: String,
        state: CallState,
    ) -> Result<(), RecordError> {
        self.ask(|reply| ApiRequest::SetCallState {
            call_id,
            state,
            reply,
        })
        .await
    }
}

/// Where a ringing call goes once answered.
#[derive(Debug, Clone)]
enum Route {
    Room(Room),
    /// An application answers it through the API.
    Application,
}

/// A call that rings before it is answered.
struct Ringing {
    id: String,
    route: Route,
    from: String,
    offer: Offer,
    source: SocketAddr,
}

/// An outbound call waiting for its answer.
struct Outgoing {
    id: String,
    ports: CallPorts,
    media_address: IpAddr,
    session: sdp::SdpSession,
    conference_id: Option<String>,
    /// Set when our `callTimeout` cancelled it, so the cause is NO_ANSWER.
    timed_out: bool,
}

/// What a timer set for a ringing call asks for.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// A room's `answer_delay_ms` is over.
    Answer,
    /// Nobody answered within `application.answer_timeout`: 480.
    GiveUp,
    /// An outbound call's `callTimeout` is over: CANCEL.
    CallTimeout,
    /// Hang up an answered call (a wrong PIN's goodbye could not be played).
    HangUp,
}

/// Routes calls to rooms and applications and keeps records and media in step with SIP.
pub struct Manager {
    config: Arc<Config>,
    sip: SipHandle,
    /// Behind a mutex only so the manager's futures are `Send`; one task uses it.
    media: Mutex<MediaHandle>,
    shared: Arc<Shared>,
    ports: PortPool,
    mixes: MixPool,
    calls: HashMap<CallKey, Call>,
    by_media: HashMap<MemberKey, CallKey>,
    /// Every live call (ringing or answered) by its `c-` id.
    by_id: HashMap<String, CallKey>,
    ringing: HashMap<CallKey, Ringing>,
    outgoing: HashMap<CallKey, Outgoing>,
    due_tx: mpsc::UnboundedSender<(CallKey, Due)>,
    due_rx: Option<mpsc::UnboundedReceiver<(CallKey, Due)>>,
    api_rx: Option<mpsc::Receiver<ApiRequest>>,
    audio: audio::AudioState,
    audio_rx: Option<mpsc::UnboundedReceiver<audio::AudioReady>>,
}

impl Manager {
    /// The manager and the handle the API uses to reach it.
    pub fn new(
        config: Arc<Config>,
        sip: SipHandle,
        media: MediaHandle,
        shared: Arc<Shared>,
    ) -> (Manager, ManagerHandle) {
        // With media.shared_port the media thread bound the one pair every call uses.
        let ports = match media.shared_port() {
            Some(port) => PortPool::shared(port),
            None => PortPool::new(config.media.bind_address, config.media.rtp_ports.clone()),
        };
        let mixes = MixPool::new(media.capacity());
        let media = Mutex::new(media);
        let (due_tx, due_rx) = mpsc::unbounded_channel();
        let (api_tx, api_rx) = mpsc::channel(API_QUEUE_LEN);
        let (audio, audio_rx) = audio::AudioState::new(&config.audio);
        let manager = Manager {
            audio,
            audio_rx: Some(audio_rx),
            ringing: HashMap::new(),
            outgoing: HashMap::new(),
            due_tx,
            due_rx: Some(due_rx),
            api_rx: Some(api_rx),
            config,
            sip,
            media,
            shared,
            ports,
            mixes,
            calls: HashMap::new(),
            by_media: HashMap::new(),
            by_id: HashMap::new(),
        };
        (manager, ManagerHandle { requests: api_tx })
    }

    /// Runs until `shutdown` turns true, then hangs up every call and returns
    /// once they are gone (or the grace period is over).
    pub async fn run(
        mut self,
        mut sip_events: mpsc::Receiver<SipEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (Some(mut due), Some(mut api), Some(mut audio_ready)) =
            (self.due_rx.take(), self.api_rx.take(), self.audio_rx.take())
        else {
            return;
        };
        // SAFETY: the registration owns an `Arc` of the eventfd, which stays
        // open until the last `Arc` is dropped, so after the registration.
        let wakeup =
            unsafe { AsyncFd::register_with_interest(self.media().wakeup(), Interest::READABLE) }
                .map_err(|e| tracing::error!("polling media events every 20 ms: {e}"))
                .ok();
        loop {
            tokio::select! {
                event = sip_events.recv() => match event {
                    Some(event) => self.on_sip_event(event).await,
                    None => break,
                },
                () = media_rang(wakeup.as_ref()) => self.drain_media_events().await,
                Some((call, what)) = due.recv() => self.on_due(call, what).await,
                Some(request) = api.recv() => self.on_api(request).await,
                Some(ready) = audio_ready.recv() => self.on_audio_ready(ready).await,
                () = tokio::time::sleep(MEDIA_BACKLOG_RETRY), if self.media().has_backlog() => {
                    self.media().flush_backlog();
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        self.hang_up_all(&mut sip_events).await;
        // Commands still waiting go first (the removals of the calls just
        // hung up), within a bound in case the media thread stopped.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.media().flush_backlog() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(MEDIA_BACKLOG_RETRY).await;
        }
        let _ = self.media().send(Command::Shutdown);
    }

    async fn hang_up_all(&mut self, sip_events: &mut mpsc::Receiver<SipEvent>) {
        let outgoing: Vec<CallKey> = self.outgoing.keys().copied().collect();
        for key in outgoing {
            self.sip.send(SipCommand::Hangup(key)).await;
            self.finish(key, CallState::Completed, NORMAL_CLEARING, "shutdown");
        }
        let ringing: Vec<CallKey> = self.ringing.keys().copied().collect();
        for key in ringing {
            self.reject(key, 503, "Service Unavailable").await;
            self.finish(key, CallState::Completed, NORMAL_CLEARING, "shutdown");
        }
        if self.calls.is_empty() {
            return;
        }
        tracing::info!(calls = self.calls.len(), "hanging up every call");
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        let mut pending = keys.len();
        for key in keys {
            self.sip.send(SipCommand::Hangup(key)).await;
            self.finish(key, CallState::Completed, NORMAL_CLEARING, "shutdown");
        }
        // Let the BYE transactions finish so phones are told, within a bound.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while pending > 0 {
            match tokio::time::timeout_at(deadline, sip_events.recv()).await {
                Ok(Some(SipEvent::Ended { .. })) => pending -= 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    async fn on_sip_event(&mut self, event: SipEvent) {
        match event {
            SipEvent::IncomingCall {
                call,
                user,
                from,
                to,
                offer,
                source,
                ..
            } => {
                self.on_incoming(call, &user, &from, &to, &offer, source)
                    .await
            }
            SipEvent::Confirmed { call } => {
                if let Some(c) = self.calls.get(&call) {
                    tracing::debug!(call = %c.id, "call confirmed by ACK");
                }
            }
            SipEvent::Reoffer { call, offer } => self.on_reoffer(call, &offer).await,
            SipEvent::Cancelled { call } => {
                self.finish(call, CallState::Completed, ORIGINATOR_CANCEL, "cancelled");
            }
            SipEvent::Ended { call, reason } => {
                let (why, cause) = match reason {
                    EndReason::RemoteBye => ("caller hung up", NORMAL_CLEARING),
                    EndReason::LocalBye => ("hung up by the bridge", NORMAL_CLEARING),
                    EndReason::AckTimeout => ("no ACK", NORMAL_CLEARING),
                    EndReason::Cancelled => ("cancelled", ORIGINATOR_CANCEL),
                    EndReason::Rejected => ("rejected", CALL_REJECTED),
                };
                self.finish(call, CallState::Completed, cause, why);
            }
            SipEvent::Progress { call, code } => {
                if let Some(o) = self.outgoing.get(&call) {
                    tracing::info!(call = %o.id, code, "outbound call progressing");
                }
            }
            SipEvent::Answered { call, answer } => self.on_outgoing_answered(call, &answer).await,
            SipEvent::Failed { call, code, reason } => {
                let timed_out = self.outgoing.get(&call).is_some_and(|o| o.timed_out);
                let (state, cause) = match code {
                    _ if timed_out => (CallState::Completed, NO_ANSWER),
                    486 | 600 => (CallState::Rejected, USER_BUSY),
                    408 | 480 => (CallState::Completed, NO_ANSWER),
                    487 => (CallState::Completed, ORIGINATOR_CANCEL),
                    _ => (CallState::Rejected, CALL_REJECTED),
                };
                self.finish(
                    call,
                    state,
                    cause,
                    &format!("outbound call failed: {code} {reason}"),
                );
            }
        }
    }

    async fn reject(&self, call: CallKey, code: u16, reason: &str) {
        self.sip
            .send(SipCommand::Reject(call, code, reason.to_string()))
            .await;
    }

    fn room(&self, number: &str) -> Option<Room> {
        self.config
            .rooms
            .iter()
            .find(|r| r.number == number)
            .cloned()
    }

    async fn on_incoming(
        &mut self,
        call: CallKey,
        user: &str,
        from: &str,
        to: &str,
        offer: &Offer,
        source: SocketAddr,
    ) {
        let room = self.room(user);
        let application = self.config.application.incoming_call_url.clone();
        if room.is_none() && application.is_none() {
            tracing::info!(%from, number = user, "no room with this number: 404");
            self.reject(call, 404, "Not Found").await;
            return;
        }
        if let Err(e) = sdp::negotiate(offer) {
            tracing::info!(%from, "no common codec ({e}): 488");
            self.reject(call, 488, "Not Acceptable Here").await;
            return;
        }
        if let Some(room) = &room {
            let active_in_room = self
                .shared
                .registry()
                .room_conference(&room.number)
                .map(|c| c.active_members)
                .unwrap_or(0);
            if active_in_room >= room.max_members {
                tracing::info!(room = %room.number, "room is full: 486");
                self.reject(call, 486, "Busy Here (room full)").await;
                return;
            }
        }
        let id = {
            let mut registry = self.shared.registry();
            let id = registry
                .create_call(CallDirection::In, from, to, SystemTime::now())
                .id
                .clone();
            if let (None, Some(url)) = (&room, &application) {
                if let Some(record) = registry.call(&id) {
                    self.shared.events.incoming_call(url, &record);
                }
            }
            id
        };
        self.by_id.insert(id.clone(), call);
        let ringing = Ringing {
            id,
            route: room.clone().map_or(Route::Application, Route::Room),
            from: from.to_string(),
            offer: offer.clone(),
            source,
        };
        let (delay, due) = match &room {
            Some(room) if room.answer_delay.is_zero() => {
                self.answer_room_call(call, ringing).await;
                return;
            }
            Some(room) => (room.answer_delay, Due::Answer),
            None => (self.config.application.answer_timeout, Due::GiveUp),
        };
        tracing::info!(call = %ringing.id, number = user, %from, "ringing");
        self.sip.send(SipCommand::Ring(call)).await;
        self.ringing.insert(call, ringing);
        let due_tx = self.due_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = due_tx.send((call, due));
        });
    }

    async fn on_due(&mut self, call: CallKey, due: Due) {
        match due {
            Due::Answer => {
                if let Some(ringing) = self.ringing.remove(&call) {
                    self.answer_room_call(call, ringing).await;
                }
            }
            Due::GiveUp => {
                if self.ringing.contains_key(&call) {
                    tracing::info!("nobody answered within application.answer_timeout: 480");
                    self.reject(call, 480, "Temporarily Unavailable").await;
                    self.finish(call, CallState::Completed, NO_ANSWER, "not answered");
                }
            }
            Due::HangUp => {
                if self.calls.contains_key(&call) {
                    self.sip.send(SipCommand::Hangup(call)).await;
                    self.finish(call, CallState::Completed, NORMAL_CLEARING, "wrong PIN");
                }
            }
            Due::CallTimeout => {
                if let Some(o) = self.outgoing.get_mut(&call) {
                    tracing::info!(call = %o.id, "outbound call not answered within callTimeout: CANCEL");
                    o.timed_out = true;
                    self.sip.send(SipCommand::Hangup(call)).await;
                }
            }
        }
    }

    /// Answers a ringing call: RTP ports, 200 OK with SDP, the call record.
    /// On failure the call is refused and finished; returns whether it was answered.
    async fn answer(&mut self, call: CallKey, ringing: &Ringing) -> bool {
        let offer = &ringing.offer;
        let refuse = |code: u16, reason: String| (code, reason);
        let failure = match sdp::negotiate(offer) {
            Err(e) => Some(refuse(488, format!("Not Acceptable Here ({e})"))),
            Ok(negotiated) => match self.ports.bind_pair() {
                None => {
                    tracing::warn!("no free RTP port in media.rtp_ports: 503");
                    Some(refuse(503, "Service Unavailable (no RTP port)".into()))
                }
                Some(ports) => {
                    let media_address = self
                        .config
                        .media
                        .address
                        .unwrap_or_else(|| local_address_towards(ringing.source.ip()));
                    let mut negotiated = negotiated;
                    negotiated.direction = answer_direction(offer);
                    use rand::Rng;
                    let record = Call {
                        id: ringing.id.clone(),
                        ports,
                        media_address,
                        negotiated,
                        session: sdp::SdpSession::new(rand::rng().random_range(1..u32::MAX as u64)),
                        held: offer.is_hold(),
                        joined: None,
                        room_call: matches!(ringing.route, Route::Room(_)),
                        lobby: None,
                    };
                    let answer = sdp::build_answer(
                        record.session,
                        SocketAddr::new(record.media_address, record.ports.rtp_port),
                        &record.negotiated,
                    );
                    tracing::info!(call = %record.id, from = %ringing.from, codec = ?record.negotiated.codec, "call answered");
                    self.calls.insert(call, record);
                    self.sip.send(SipCommand::Accept(call, answer)).await;
                    let mut registry = self.shared.registry();
                    registry.answer_call(&ringing.id, SystemTime::now());
                    self.shared.call_event(&registry, &ringing.id, "answer");
                    None
                }
            },
        };
        match failure {
            None => true,
            Some((code, reason)) => {
                self.reject(call, code, &reason).await;
                self.end_record(&ringing.id, CallState::Rejected, CALL_REJECTED, &reason);
                false
            }
        }
    }

    /// Answers a call to a room; it asks for the room's PIN first if it has
    /// one, else joins the room's conference at once.
    async fn answer_room_call(&mut self, call: CallKey, ringing: Ringing) {
        let Route::Room(room) = &ringing.route else {
            return;
        };
        let room = room.clone();
        if !self.answer(call, &ringing).await {
            return;
        }
        if room.pin.is_some() {
            if let Err(e) = self.enter_lobby(call, room) {
                tracing::warn!(call = %ringing.id, "cannot ask for the PIN: {e}");
                self.sip.send(SipCommand::Hangup(call)).await;
                self.finish(call, CallState::Completed, NORMAL_CLEARING, e);
            }
            return;
        }
        self.join_room(call, &room).await;
    }

    /// Joins an answered call to its room's conference, creating one when none is active.
    async fn join_room(&mut self, call: CallKey, room: &Room) {
        let Some(call_id) = self.calls.get(&call).map(|c| c.id.clone()) else {
            return;
        };
        let (conference_id, others) = {
            let mut registry = self.shared.registry();
            match registry.room_conference(&room.number) {
                Some(c) => (c.id.clone(), c.active_members),
                None => {
                    let id = registry
                        .create_conference(
                            &room.number,
                            Some(room.name.clone()),
                            Some(&room.number),
                            SystemTime::now(),
                        )
                        .id
                        .clone();
                    self.shared.conference_event(&registry, &id);
                    tracing::info!(conference = %id, room = %room.number, "conference created");
                    (id, 0)
                }
            }
        };
        match self.join(call, &conference_id, MemberOptions::default()) {
            Ok(_) if room.announce_count => self.announce_count(&call_id, others as u64),
            Ok(_) => {}
            Err(e) => {
                // Answered already: the caller hears why it cannot join only as a hang-up.
                tracing::info!(call = %call_id, "cannot join room {}: {e}", room.number);
                self.sip.send(SipCommand::Hangup(call)).await;
                self.finish(call, CallState::Completed, USER_BUSY, "room full");
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
    fn join(
        &mut self,
        key: CallKey,
        conference_id: &str,
        options: MemberOptions,
    ) -> Result<String, RecordError> {
        let Some(call) = self.calls.get(&key) else {
            return Err(RecordError::Busy("the call is gone"));
        };
        if let Some(joined) = &call.joined {
            return Err(RecordError::CallInConference(
                call.id.clone(),
                joined.conference_id.clone(),
            ));
        }
        let (max_members, keypad) = {
            let registry = self.shared.registry();
            let conference = registry
                .conference(conference_id)
                .ok_or_else(|| RecordError::ConferenceNotFound(conference_id.to_string()))?;
            let keypad = conference.profile == Profile::InterpretDigits;
            if conference.state == ConferenceState::Completed {
                return Err(RecordError::ConferenceCompleted);
            }
            let max = self.max_members(&conference);
            if conference.active_members >= max {
                return Err(RecordError::ConferenceFull(max));
            }
            (max, keypad)
        };
        let Ok(sockets) = call.ports.member_sockets(call.media_address) else {
            return Err(RecordError::Busy("cannot share the RTP socket"));
        };
        let call_id = call.id.clone();
        let remote_rtp = call.negotiated.remote_rtp_addr;
        let codec = media_codec(call.negotiated.codec);
        let telephone_event_pt = call.negotiated.telephone_event_pt;
        let sip_held = call.held;
        let Some(media_key) = self.media().allocate() else {
            tracing::warn!("every media slot is taken");
            return Err(RecordError::Busy("every media slot is taken"));
        };
        let Some(mix) = self.mixes.get_or_assign(conference_id) else {
            self.media().release(media_key);
            return Err(RecordError::Busy("every conference mix is taken"));
        };
        let now = SystemTime::now();
        let (member_id, flags) = {
            let mut registry = self.shared.registry();
            let added = registry
                .add_member_with(conference_id, &call_id, options, max_members, now)
                .map(|m| m.id.clone());
            match added {
                Ok(id) => {
                    let flags = effective_flags(&registry, &id, sip_held);
                    (id, flags)
                }
                Err(e) => {
                    drop(registry);
                    self.media().release(media_key);
                    self.release_mix_if_done(conference_id);
                    return Err(e);
                }
            }
        };
        let add = AddMember {
            key: media_key,
            mix,
            sockets,
            remote_rtp,
            remote_rtcp: SocketAddr::new(remote_rtp.ip(), remote_rtp.port().wrapping_add(1)),
            codec,
            telephone_event_pt,
            flags,
            keypad,
        };
        if self
            .media()
            .send(Command::AddMember(Box::new(add)))
            .is_err()
        {
            self.media().release(media_key);
            let mut registry = self.shared.registry();
            registry.set_removed_reason(&member_id, "the media plane was busy");
            let _ = registry.complete_member(&member_id, now);
            drop(registry);
            self.release_mix_if_done(conference_id);
            tracing::error!("media command queue full");
            return Err(RecordError::Busy("the media plane is busy"));
        }
        {
            let registry = self.shared.registry();
            self.shared.member_event(&registry, &member_id);
        }
        tracing::info!(conference = %conference_id, member = %member_id, call = %call_id, "member joined");
        if options.join_tone {
            self.play_tone(conference_id, self.audio.join_tone.clone());
        }
        self.by_media.insert(media_key, key);
        if let Some(call) = self.calls.get_mut(&key) {
            call.joined = Some(Joined {
                conference_id: conference_id.to_string(),
                member_id: member_id.clone(),
                media: media_key,
                mix,
            });
        }
        Ok(member_id)
    }

    /// Takes a call out of its conference's mix and completes its member record
    /// (and the conference when it was the last); the call itself stays up.
    fn detach(&mut self, key: CallKey, reason: &str) {
        let Some(joined) = self.calls.get_mut(&key).and_then(|c| c.joined.take()) else {
            return;
        };
        self.by_media.remove(&joined.media);
        if self
            .media()
            .send(Command::RemoveMember { key: joined.media })
            .is_err()
        {
            tracing::error!(member = %joined.member_id, "media command queue full: slot not freed");
        } else {
            self.media().release(joined.media);
        }
        let leaving_tone = {
            let mut registry = self.shared.registry();
            registry.set_removed_reason(&joined.member_id, reason);
            let completed = registry
                .complete_member(&joined.member_id, SystemTime::now())
                .unwrap_or(false);
            self.shared.member_event(&registry, &joined.member_id);
            if completed {
                tracing::info!(conference = %joined.conference_id, "conference completed: last member left");
                self.shared
                    .conference_event(&registry, &joined.conference_id);
            }
            !completed
                && registry
                    .member(&joined.member_id)
                    .is_some_and(|m| m.leaving_tone)
        };
        if leaving_tone {
            self.play_tone(&joined.conference_id, self.audio.leaving_tone.clone());
        }
        self.release_mix_if_done(&joined.conference_id);
        tracing::info!(member = %joined.member_id, mix = joined.mix, "member left: {reason}");
    }

    /// Ends a call everywhere: ringing state, mixer, ports, records, and the
    /// `hangup` event. Idempotent.
    fn finish(&mut self, key: CallKey, state: CallState, cause: &str, why: &str) {
        let id = if let Some(outgoing) = self.outgoing.remove(&key) {
            self.ports.release(&outgoing.ports);
            outgoing.id
        } else if let Some(ringing) = self.ringing.remove(&key) {
            ringing.id
        } else if self.calls.contains_key(&key) {
            self.detach(key, why);
            self.leave_lobby(key);
            let Some(call) = self.calls.remove(&key) else {
                return;
            };
            self.ports.release(&call.ports);
            call.id
        } else {
            return;
        };
        self.end_record(&id, state, cause, why);
    }

    /// Ends a call's record (once) and queues its `hangup` event.
    fn end_record(&mut self, id: &str, state: CallState, cause: &str, why: &str) {
        self.by_id.remove(id);
        let mut registry = self.shared.registry();
        if registry.end_call(id, state, cause, SystemTime::now()) {
            self.shared.call_event(&registry, id, "hangup");
        }
        tracing::info!(call = %id, "call ended: {why}");
    }

    async fn on_reoffer(&mut self, key: CallKey, offer: &Offer) {
        let Some(call) = self.calls.get_mut(&key) else {
            self.sip
                .send(SipCommand::RejectReoffer(
                    key,
                    481,
                    "Call/Transaction Does Not Exist".into(),
                ))
                .await;
            return;
        };
        // The codec stays what was first negotiated (the media slot is set up for
        // it); a re-offer that no longer carries it is refused.
        let Some(payload) = offer.payloads.iter().find(|p| {
            p.encoding_name
                .eq_ignore_ascii_case(call.negotiated.codec.encoding_name())
        }) else {
            self.sip
                .send(SipCommand::RejectReoffer(
                    key,
                    488,
                    "Not Acceptable Here".into(),
                ))
                .await;
            return;
        };
        let held = offer.is_hold();
        call.held = held;
        call.negotiated.codec_pt = payload.pt;
        call.negotiated.direction = answer_direction(offer);
        if !offer.connection_addr.is_unspecified() {
            call.negotiated.remote_rtp_addr = offer.remote_rtp_addr();
        }
        call.session.bump_version();
        let remote_rtp = call.negotiated.remote_rtp_addr;
        let joined = call.joined.as_ref().map(|j| (j.member_id.clone(), j.media));
        let answer = sdp::build_answer(
            call.session,
            SocketAddr::new(call.media_address, call.ports.rtp_port),
            &call.negotiated,
        );
        tracing::info!(call = %call.id, held, "re-offer");
        if let Some((member, media_key)) = joined {
            let flags = effective_flags(&self.shared.registry(), &member, held);
            if !held {
                let _ = self.media().send(Command::SetRemote {
                    key: media_key,
                    remote_rtp,
                    remote_rtcp: SocketAddr::new(
                        remote_rtp.ip(),
                        remote_rtp.port().wrapping_add(1),
                    ),
                });
            }
            let _ = self.media().send(Command::SetFlags {
                key: media_key,
                flags,
            });
        }
        self.sip.send(SipCommand::AcceptReoffer(key, answer)).await;
    }

    async fn on_api(&mut self, request: ApiRequest) {
        match request {
            ApiRequest::AddMember {
                conference_id,
                call_id,
                options,
                reply,
            } => {
                let result = self.api_add_member(&conference_id, &call_id, options);
                let _ = reply.send(result);
            }
            ApiRequest::UpdateMember {
                member_id,
                change,
                reply,
            } => {
                let result = self.api_update_member(&member_id, change);
                let _ = reply.send(result);
                self.hang_up_detached_room_calls().await;
            }
            ApiRequest::UpdateConference {
                conference_id,
                change,
                reply,
            } => {
                let result = self.api_update_conference(&conference_id, change);
                let _ = reply.send(result);
                self.hang_up_detached_room_calls().await;
            }
            ApiRequest::CreateCall { call, reply } => {
                let result = self.api_create_call(call).await;
                let _ = reply.send(result);
            }
            ApiRequest::SetCallState {
                call_id,
                state,
                reply,
            } => {
                let result = self.api_set_call_state(&call_id, state).await;
                let _ = reply.send(result);
            }
            ApiRequest::Audio {
                target,
                request,
                reply,
            } => {
                let result = self.api_audio(target, request);
                let _ = reply.send(result);
            }
        }
    }

    /// Room callers the API removed from their conference are hung up (BYE).
    async fn hang_up_detached_room_calls(&mut self) {
        let detached: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, call)| call.room_call && call.joined.is_none())
            .map(|(key, _)| *key)
            .collect();
        for key in detached {
            self.sip.send(SipCommand::Hangup(key)).await;
            self.finish(
                key,
                CallState::Completed,
                NORMAL_CLEARING,
                "removed from the room",
            );
        }
    }

    /// Places an outbound call: RTP ports, an offer, the INVITE, the record.
    async fn api_create_call(&mut self, request: OutgoingRequest) -> Result<String, RecordError> {
        let target = outbound_target(&request.to, self.config.sip.outbound.proxy.as_deref())
            .await
            .map_err(RecordError::BadTarget)?;
        if let Some(conference_id) = &request.conference_id {
            let registry = self.shared.registry();
            let c = registry
                .conference(conference_id)
                .ok_or_else(|| RecordError::ConferenceNotFound(conference_id.clone()))?;
            if c.state == ConferenceState::Completed {
                return Err(RecordError::ConferenceCompleted);
            }
        }
        let Some(ports) = self.ports.bind_pair() else {
            return Err(RecordError::Busy("no free RTP port"));
        };
        let media_address = self
            .config
            .media
            .address
            .unwrap_or_else(|| local_address_towards(target.destination.ip()));
        use rand::Rng;
        let session = sdp::SdpSession::new(rand::rng().random_range(1..u32::MAX as u64));
        let offer_sdp = sdp::build_offer(
            session,
            SocketAddr::new(media_address, ports.rtp_port),
            OFFERED_TELEPHONE_EVENT_PT,
        );
        let from_uri = outbound_from_uri(&request.from, media_address);
        let outbound = &self.config.sip.outbound;
        let credentials = (!outbound.username.is_empty()).then(|| crate::sip::Credentials {
            username: outbound.username.clone(),
            password: outbound.password.clone(),
        });
        let id = {
            let mut registry = self.shared.registry();
            let id = registry
                .create_call(
                    CallDirection::Out,
                    &request.from,
                    &request.to,
                    SystemTime::now(),
                )
                .id
                .clone();
            let _ = registry.update_call(&id, |c| {
                c.callback_url = request.callback_url.clone();
                c.tag = request.tag.clone();
            });
            id
        };
        let invite = crate::sip::OutgoingCall {
            request_uri: target.request_uri.clone(),
            from_uri,
            from_display: None,
            destination: target.destination,
            transport: target.transport,
            offer_sdp,
            credentials,
        };
        let Some(key) = self.sip.invite(invite).await else {
            self.ports.release(&ports);
            self.shared.registry().end_call(
                &id,
                CallState::Rejected,
                CALL_REJECTED,
                SystemTime::now(),
            );
            return Err(RecordError::Busy("the SIP call table is full"));
        };
        tracing::info!(call = %id, to = %target.request_uri, via = %target.destination, "outbound call placed");
        self.by_id.insert(id.clone(), key);
        self.outgoing.insert(
            key,
            Outgoing {
                id: id.clone(),
                ports,
                media_address,
                session,
                conference_id: request.conference_id,
                timed_out: false,
            },
        );
        let due_tx = self.due_tx.clone();
        let timeout = request.call_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let _ = due_tx.send((key, Due::CallTimeout));
        });
        Ok(id)
    }

    /// An outbound call was answered: media as the answer says, the record,
    /// the `answer` event, and the conference it was placed for.
    async fn on_outgoing_answered(&mut self, key: CallKey, answer: &Offer) {
        let Some(outgoing) = self.outgoing.remove(&key) else {
            return;
        };
        let negotiated = match sdp::negotiate_answer(answer) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(call = %outgoing.id, "unusable answer ({e}): hanging up");
                self.sip.send(SipCommand::Hangup(key)).await;
                self.ports.release(&outgoing.ports);
                self.end_record(
                    &outgoing.id,
                    CallState::Completed,
                    NORMAL_CLEARING,
                    "unusable answer",
                );
                return;
            }
        };
        let id = outgoing.id.clone();
        tracing::info!(call = %id, codec = ?negotiated.codec, "outbound call answered");
        self.calls.insert(
            key,
            Call {
                id: outgoing.id,
                ports: outgoing.ports,
                media_address: outgoing.media_address,
                negotiated,
                session: outgoing.session,
                held: answer.is_hold(),
                joined: None,
                room_call: false,
                lobby: None,
            },
        );
        {
            let mut registry = self.shared.registry();
            registry.answer_call(&id, SystemTime::now());
            self.shared.call_event(&registry, &id, "answer");
        }
        if let Some(conference_id) = outgoing.conference_id {
            if let Err(e) = self.join(key, &conference_id, MemberOptions::default()) {
                tracing::warn!(call = %id, conference = %conference_id, "answered but cannot join: {e}");
            }
        }
    }

    fn api_add_member(
        &mut self,
        conference_id: &str,
        call_id: &str,
        options: MemberOptions,
    ) -> Result<String, RecordError> {
        {
            let registry = self.shared.registry();
            if registry.conference(conference_id).is_none() {
                return Err(RecordError::ConferenceNotFound(conference_id.to_string()));
            }
            let Some(record) = registry.call(call_id) else {
                return Err(RecordError::CallNotFound(call_id.to_string()));
            };
            if record.state != CallState::Active {
                return Err(RecordError::CallUnavailable(call_id.to_string()));
            }
        }
        let Some(&key) = self.by_id.get(call_id) else {
            return Err(RecordError::CallUnavailable(call_id.to_string()));
        };
        if !self.calls.contains_key(&key) {
            return Err(RecordError::CallUnavailable(call_id.to_string()));
        }
        self.join(key, conference_id, options)
    }

    fn api_update_member(
        &mut self,
        member_id: &str,
        change: MemberChange,
    ) -> Result<(), RecordError> {
        let (call_id, state) = {
            let registry = self.shared.registry();
            let member = registry
                .member(member_id)
                .ok_or_else(|| RecordError::MemberNotFound(member_id.to_string()))?;
            (member.call_id.clone(), member.state)
        };
        if state == crate::conference::MemberState::Completed {
            // Removing a removed member does nothing (API.md, decision).
            return if change.remove {
                Ok(())
            } else {
                Err(RecordError::ConferenceCompleted)
            };
        }
        let key = self.by_id.get(&call_id).copied();
        if change.remove {
            match key {
                Some(key) => self.detach(key, "removed through the API"),
                None => {
                    let mut registry = self.shared.registry();
                    registry.set_removed_reason(member_id, "removed through the API");
                    let completed = registry.complete_member(member_id, SystemTime::now())?;
                    self.shared.member_event(&registry, member_id);
                    if completed {
                        if let Some(c) = registry.member(member_id).map(|m| m.conference_id.clone())
                        {
                            self.shared.conference_event(&registry, &c);
                        }
                    }
                }
            }
            return Ok(());
        }
        let flags_changed = change.mute.is_some() || change.hold.is_some();
        {
            let mut registry = self.shared.registry();
            registry.update_member(member_id, |m| {
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
                self.shared.member_event(&registry, member_id);
            }
        }
        if flags_changed {
            if let Some(key) = key {
                self.apply_flags(key);
            }
        }
        Ok(())
    }

    /// Sends a call's effective flags (member OR conference OR SIP hold) to the mixer.
    fn apply_flags(&mut self, key: CallKey) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let Some(joined) = &call.joined else {
            return;
        };
        let flags = effective_flags(&self.shared.registry(), &joined.member_id, call.held);
        let media_key = joined.media;
        if self
            .media()
            .send(Command::SetFlags {
                key: media_key,
                flags,
            })
            .is_err()
        {
            tracing::error!("media command queue full: flags not applied");
        }
    }

    fn api_update_conference(
        &mut self,
        conference_id: &str,
        change: ConferenceChange,
    ) -> Result<(), RecordError> {
        let members: Vec<String> = {
            let mut registry = self.shared.registry();
            registry.update_conference(conference_id, |c| {
                if let Some(mute) = change.mute {
                    c.mute = mute;
                }
                if let Some(hold) = change.hold {
                    c.hold = hold;
                }
            })?;
            registry
                .members_of(conference_id)
                .into_iter()
                .filter(|m| m.state == crate::conference::MemberState::Active)
                .map(|m| m.call_id.clone())
                .collect()
        };
        let keys: Vec<CallKey> = members
            .iter()
            .filter_map(|id| self.by_id.get(id).copied())
            .collect();
        if change.mute.is_some() || change.hold.is_some() {
            for key in &keys {
                self.apply_flags(*key);
            }
        }
        if change.complete {
            self.shared
                .registry()
                .set_completed_reason(conference_id, "completed through the API");
            for key in keys {
                self.detach(key, "the conference was completed");
            }
            let mut registry = self.shared.registry();
            // Members without a live call (none in practice) and conferences
            // that never had members complete here.
            let leftovers: Vec<String> = registry
                .members_of(conference_id)
                .into_iter()
                .filter(|m| m.state == crate::conference::MemberState::Active)
                .map(|m| m.id.clone())
                .collect();
            for member in leftovers {
                if registry.complete_member(&member, SystemTime::now())? {
                    self.shared.conference_event(&registry, conference_id);
                }
                self.shared.member_event(&registry, &member);
            }
            // Detaching the last member completed it (and queued its event);
            // a conference that never had members completes here.
            let open = registry
                .conference(conference_id)
                .is_some_and(|c| c.state != ConferenceState::Completed);
            if open {
                registry.complete_conference(conference_id, SystemTime::now())?;
                self.shared.conference_event(&registry, conference_id);
            }
            drop(registry);
            self.mixes.release(conference_id);
        }
        Ok(())
    }

    async fn api_set_call_state(
        &mut self,
        call_id: &str,
        state: CallState,
    ) -> Result<(), RecordError> {
        let current = self
            .shared
            .registry()
            .call(call_id)
            .map(|c| c.state)
            .ok_or_else(|| RecordError::CallNotFound(call_id.to_string()))?;
        let key = self.by_id.get(call_id).copied();
        if let Some(key) = key.filter(|k| self.outgoing.contains_key(k)) {
            // Our own call, still ringing: only hanging up (CANCEL) makes sense.
            return match state {
                CallState::Completed => {
                    self.sip.send(SipCommand::Hangup(key)).await;
                    self.finish(
                        key,
                        CallState::Completed,
                        ORIGINATOR_CANCEL,
                        "cancelled through the API",
                    );
                    Ok(())
                }
                _ => Err(RecordError::CallInvalidState(
                    call_id.to_string(),
                    "started",
                )),
            };
        }
        match (state, current, key) {
            (CallState::Active, CallState::Active, _) => Ok(()),
            (CallState::Active, CallState::Started, Some(key)) => {
                let Some(ringing) = self.ringing.remove(&key) else {
                    return Err(RecordError::CallInvalidState(
                        call_id.to_string(),
                        "started",
                    ));
                };
                match ringing.route {
                    Route::Room(_) => self.answer_room_call(key, ringing).await,
                    Route::Application => {
                        self.answer(key, &ringing).await;
                    }
                }
                Ok(())
            }
            (CallState::Rejected, CallState::Started, Some(key)) => {
                self.reject(key, 603, "Decline").await;
                self.finish(
                    key,
                    CallState::Rejected,
                    CALL_REJECTED,
                    "rejected through the API",
                );
                Ok(())
            }
            (CallState::Completed, CallState::Started, Some(key)) => {
                self.reject(key, 480, "Temporarily Unavailable").await;
                self.finish(
                    key,
                    CallState::Completed,
                    NORMAL_CLEARING,
                    "hung up through the API",
                );
                Ok(())
            }
            (CallState::Completed, CallState::Active, Some(key)) => {
                self.sip.send(SipCommand::Hangup(key)).await;
                self.finish(
                    key,
                    CallState::Completed,
                    NORMAL_CLEARING,
                    "hung up through the API",
                );
                Ok(())
            }
            (CallState::Completed, CallState::Completed | CallState::Rejected, _) => Ok(()),
            (_, current, _) => Err(RecordError::CallInvalidState(
                call_id.to_string(),
                current.as_str(),
            )),
        }
    }

    fn media(&self) -> std::sync::MutexGuard<'_, MediaHandle> {
        self.media
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn drain_media_events(&mut self) {
        loop {
            let Some(event) = self.media().poll_event() else {
                break;
            };
            match event {
                Event::RtpTimeout { key } => {
                    if let Some(&call) = self.by_media.get(&key) {
                        tracing::info!(
                            "no RTP for {:?}: hanging up",
                            self.config.media.rtp_timeout
                        );
                        self.sip.send(SipCommand::Hangup(call)).await;
                        self.finish(call, CallState::Completed, NORMAL_CLEARING, "RTP timeout");
                    }
                }
                Event::Talking { key, talking } => {
                    let member = self
                        .by_media
                        .get(&key)
                        .and_then(|call| self.calls.get(call))
                        .and_then(|call| call.joined.as_ref())
                        .map(|j| j.member_id.clone());
                    if let Some(member) = member {
                        self.shared.registry().set_talking(&member, talking);
                    }
                }
                Event::ClipDone { id, end } => self.on_clip_done(id, end).await,
                Event::Digit { key, digit, .. } if self.in_lobby(key) => {
                    self.on_pin_digit(key, digit).await
                }
                Event::Digit {
                    key,
                    digit,
                    duration_ms,
                    ..
                } => self.on_digit(key, digit, duration_ms),
                Event::FlagsChanged { key, flags } => self.on_keypad_flags(key, flags),
                Event::Leave { key } => {
                    if let Some(&call) = self.by_media.get(&key) {
                        tracing::info!("the caller pressed # to leave");
                        self.sip.send(SipCommand::Hangup(call)).await;
                        self.finish(call, CallState::Completed, NORMAL_CLEARING, "left with #");
                    }
                }
                Event::QueueFull => tracing::warn!("media event queue overflowed"),
            }
        }
    }

    /// The member of a media slot, with its call id.
    fn member_of(&self, key: MemberKey) -> Option<(CallKey, String, String)> {
        let call_key = *self.by_media.get(&key)?;
        let call = self.calls.get(&call_key)?;
        let joined = call.joined.as_ref()?;
        Some((call_key, call.id.clone(), joined.member_id.clone()))
    }

    /// A key pressed: in a `passthru_digits` conference it goes to the
    /// application as a `dtmf` event (the keypad already acted otherwise).
    fn on_digit(&mut self, key: MemberKey, digit: char, duration_ms: u32) {
        let Some((_, call_id, member_id)) = self.member_of(key) else {
            return;
        };
        let registry = self.shared.registry();
        let Some((conference, _)) = conference_and_member(&registry, &member_id) else {
            return;
        };
        if conference.profile != Profile::PassthruDigits {
            return;
        }
        if let Some(call) = registry.call(&call_id) {
            self.shared
                .events
                .dtmf(&call, &conference, digit, duration_ms);
        }
    }

    /// The caller changed mute or deaf with the keypad: the record follows, and
    /// the conference's own mute/hold are applied on top again.
    fn on_keypad_flags(&mut self, key: MemberKey, flags: MemberFlags) {
        let Some((call_key, _, member_id)) = self.member_of(key) else {
            return;
        };
        {
            let mut registry = self.shared.registry();
            let changed = registry
                .member(&member_id)
                .is_some_and(|m| m.mute != flags.muted || m.deaf != flags.deaf);
            if !changed {
                return;
            }
            let _ = registry.update_member(&member_id, |m| {
                m.mute = flags.muted;
                m.deaf = flags.deaf;
            });
            self.shared.member_event(&registry, &member_id);
        }
        self.apply_flags(call_key);
    }

    fn release_mix_if_done(&mut self, conference_id: &str) {
        let active = self
            .shared
            .registry()
            .conference(conference_id)
            .map(|c| c.active_members)
            .unwrap_or(0);
        if active == 0 {
            self.mixes.release(conference_id);
        }
    }
}

/// The telephone-event payload type we offer on outbound calls.
const OFFERED_TELEPHONE_EVENT_PT: u8 = 101;

/// Where an outbound INVITE goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OutboundTarget {
    request_uri: String,
    destination: SocketAddr,
    transport: crate::sip::Transport,
}

/// `to` as a Request-URI and next hop: a `sip:` URI goes to its own host
/// (`;transport=tcp` honoured), a number goes to `sip.outbound.proxy`.
async fn outbound_target(to: &str, proxy: Option<&str>) -> Result<OutboundTarget, String> {
    let to = to.trim();
    let (request_uri, hostport, params) = match to.strip_prefix("sip:") {
        Some(rest) => {
            let (address, params) = rest.split_once(';').unwrap_or((rest, ""));
            let hostport = address.rsplit_once('@').map_or(address, |(_, h)| h);
            (to.to_string(), hostport.to_string(), params.to_string())
        }
        None => {
            let Some(proxy) = proxy else {
                return Err(format!(
                    "{to} is not a sip: URI and no sip.outbound.proxy is configured"
                ));
            };
            if to.is_empty()
                || !to
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
            {
                return Err(format!("{to} is neither a sip: URI nor a number"));
            }
            (
                format!("sip:{to}@{proxy}"),
                proxy.to_string(),
                String::new(),
            )
        }
    };
    let transport = if params
        .split(';')
        .any(|p| p.trim().eq_ignore_ascii_case("transport=tcp"))
    {
        crate::sip::Transport::Tcp
    } else {
        crate::sip::Transport::Udp
    };
    let with_port = if hostport.starts_with('[') {
        if hostport.contains("]:") {
            hostport.clone()
        } else {
            format!("{hostport}:5060")
        }
    } else if hostport.contains(':') {
        hostport.clone()
    } else {
        format!("{hostport}:5060")
    };
    let destination = tokio::net::lookup_host(&with_port)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| format!("cannot resolve {hostport}"))?;
    Ok(OutboundTarget {
        request_uri,
        destination,
        transport,
    })
}

/// What the mixer applies to a member: its own flags, its conference's, and a
/// hold from the phone itself (DESIGN.md "Mute, hold, deaf").
fn effective_flags(registry: &Registry, member_id: &str, sip_held: bool) -> MemberFlags {
    let Some((conference, member)) = conference_and_member(registry, member_id) else {
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

fn media_codec(codec: sdp::SdpCodec) -> media::Codec {
    match codec {
        sdp::SdpCodec::Pcmu => media::Codec::Pcmu,
        sdp::SdpCodec::Pcma => media::Codec::Pcma,
    }
}

/// The From URI of an outbound call: `from` as given when it is a SIP URI,
/// else a number at our address (an IPv6 host in brackets, RFC 3261 25.1).
fn outbound_from_uri(from: &str, host: IpAddr) -> String {
    if from.starts_with("sip:") {
        return from.to_string();
    }
    format!("sip:{from}@{}", crate::sip::uri_host(host))
}

/// The local address the kernel would use to reach `remote` (no packet is sent:
/// connecting a UDP socket only looks up the route).
pub fn local_address_towards(remote: IpAddr) -> IpAddr {
    // ::ffff:a.b.c.d is an IPv4 peer: answer with the IPv4 address it reaches.
    let remote = remote.to_canonical();
    let unspecified: IpAddr = if remote.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    UdpSocket::bind((unspecified, 0))
        .and_then(|s| {
            s.connect((remote, 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbound_from_is_a_number_at_our_address_or_the_uri_given() {
        let v4 = IpAddr::from([192, 0, 2, 7]);
        let v6 = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7]);
        assert_eq!(
            outbound_from_uri("+15551234", v4),
            "sip:+15551234@192.0.2.7"
        );
        assert_eq!(
            outbound_from_uri("+15551234", v6),
            "sip:+15551234@[2001:db8::7]"
        );
        assert_eq!(
            outbound_from_uri("sip:desk@example.com", v6),
            "sip:desk@example.com"
        );
    }

    #[test]
    fn an_ipv4_peer_seen_through_a_dual_stack_socket_is_answered_in_ipv4() {
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(local_address_towards(loopback), loopback);
        let mapped = IpAddr::from(std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(local_address_towards(mapped), loopback);
    }
}
