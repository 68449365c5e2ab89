//! Calls and their routing: an incoming INVITE to a room number is answered and
//! joined to that room's conference; the call's life (hold, hang-up, RTP
//! timeout) is carried to the conference records and the media plane.
//!
//! The [`Manager`] runs as one tokio task. It consumes [`SipEvent`]s and media
//! [`Event`]s and is the only place that turns them into commands for the other
//! plane, so every rule of `DESIGN.md` "Call routing" lives here.

mod ports;

pub use ports::PortPool;

use crate::conference::{new_id, Registry};
use crate::config::{Config, Room};
use crate::media::{self, AddMember, Command, Event, MediaHandle, MemberFlags, MemberKey};
use crate::sip::sdp::{self, Offer};
use crate::sip::transport::{SipCommand, SipHandle};
use crate::sip::{CallKey, EndReason, SipEvent};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// How often the manager drains the media plane's event queue.
const MEDIA_EVENT_POLL: Duration = Duration::from_millis(20);
/// How long shutdown waits for the BYEs it sent to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// One call the bridge answered.
#[derive(Debug)]
struct Call {
    id: String,
    room: String,
    conference_id: String,
    member_id: String,
    media: MemberKey,
    mix: u32,
    rtp_port: u16,
    media_address: IpAddr,
    negotiated: sdp::Negotiated,
    session: sdp::SdpSession,
    held: bool,
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

/// The state shared with readers of records (the API later).
pub struct Shared {
    pub registry: Mutex<Registry>,
}

/// Routes calls to rooms and keeps records and media in step with SIP.
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
    /// Calls ringing before they are answered (rooms with `answer_delay_ms`).
    ringing: HashMap<CallKey, Ringing>,
    answer_due_tx: mpsc::UnboundedSender<CallKey>,
    answer_due_rx: Option<mpsc::UnboundedReceiver<CallKey>>,
}

/// A call that rings before it is answered.
struct Ringing {
    room: Room,
    from: String,
    offer: Offer,
    source: SocketAddr,
}

impl Manager {
    pub fn new(
        config: Arc<Config>,
        sip: SipHandle,
        media: MediaHandle,
        shared: Arc<Shared>,
    ) -> Manager {
        let ports = PortPool::new(config.media.bind_address, config.media.rtp_ports.clone());
        let mixes = MixPool::new(media.capacity());
        let media = Mutex::new(media);
        let (answer_due_tx, answer_due_rx) = mpsc::unbounded_channel();
        Manager {
            ringing: HashMap::new(),
            answer_due_tx,
            answer_due_rx: Some(answer_due_rx),
            config,
            sip,
            media,
            shared,
            ports,
            mixes,
            calls: HashMap::new(),
            by_media: HashMap::new(),
        }
    }

    /// Runs until `shutdown` turns true, then hangs up every call and returns
    /// once they are gone (or the grace period is over).
    pub async fn run(
        mut self,
        mut sip_events: mpsc::Receiver<SipEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(mut answer_due) = self.answer_due_rx.take() else {
            return;
        };
        let mut poll = tokio::time::interval(MEDIA_EVENT_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = sip_events.recv() => match event {
                    Some(event) => self.on_sip_event(event).await,
                    None => break,
                },
                _ = poll.tick() => self.drain_media_events().await,
                Some(call) = answer_due.recv() => {
                    if let Some(ringing) = self.ringing.remove(&call) {
                        self.answer(call, ringing).await;
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        self.hang_up_all(&mut sip_events).await;
        let _ = self.media().send(Command::Shutdown);
    }

    async fn hang_up_all(&mut self, sip_events: &mut mpsc::Receiver<SipEvent>) {
        if self.calls.is_empty() {
            return;
        }
        tracing::info!(calls = self.calls.len(), "hanging up every call");
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        let mut pending = keys.len();
        for key in keys {
            self.sip.send(SipCommand::Hangup(key)).await;
            self.end_call(key, "shutdown");
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
                offer,
                source,
                ..
            } => self.on_incoming(call, &user, &from, &offer, source).await,
            SipEvent::Confirmed { call } => {
                if let Some(c) = self.calls.get(&call) {
                    tracing::debug!(call = %c.id, "call confirmed by ACK");
                }
            }
            SipEvent::Reoffer { call, offer } => self.on_reoffer(call, &offer).await,
            SipEvent::Cancelled { call } => {
                self.ringing.remove(&call);
                self.end_call(call, "cancelled");
            }
            SipEvent::Ended { call, reason } => {
                self.ringing.remove(&call);
                let why = match reason {
                    EndReason::RemoteBye => "caller hung up",
                    EndReason::LocalBye => "hung up by the bridge",
                    EndReason::AckTimeout => "no ACK",
                    EndReason::Cancelled => "cancelled",
                    EndReason::Rejected => "rejected",
                };
                self.end_call(call, why);
            }
            // Outbound calls: the API engineer wires these to POST /calls.
            event @ (SipEvent::Progress { .. }
            | SipEvent::Answered { .. }
            | SipEvent::Failed { .. }) => {
                tracing::debug!(?event, "outbound call event not handled yet");
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
        offer: &Offer,
        source: SocketAddr,
    ) {
        let Some(room) = self.room(user) else {
            tracing::info!(%from, number = user, "no room with this number: 404");
            self.reject(call, 404, "Not Found").await;
            return;
        };
        if let Err(e) = sdp::negotiate(offer) {
            tracing::info!(%from, "no common codec ({e}): 488");
            self.reject(call, 488, "Not Acceptable Here").await;
            return;
        }
        let active_in_room = {
            let registry = self.shared.registry.lock().expect("registry lock");
            registry
                .room_conference(&room.number)
                .map(|c| c.active_members)
                .unwrap_or(0)
        };
        if active_in_room >= room.max_members {
            tracing::info!(room = %room.number, "room is full: 486");
            self.reject(call, 486, "Busy Here (room full)").await;
            return;
        }
        if room.answer_delay.is_zero() {
            let ringing = Ringing {
                room,
                from: from.to_string(),
                offer: offer.clone(),
                source,
            };
            self.answer(call, ringing).await;
            return;
        }
        self.sip.send(SipCommand::Ring(call)).await;
        let due = self.answer_due_tx.clone();
        let delay = room.answer_delay;
        self.ringing.insert(
            call,
            Ringing {
                room,
                from: from.to_string(),
                offer: offer.clone(),
                source,
            },
        );
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = due.send(call);
        });
    }

    /// Answers a routed call: media slot, RTP ports, member record, 200 OK.
    async fn answer(&mut self, call: CallKey, ringing: Ringing) {
        let Ringing {
            room,
            from,
            offer,
            source,
        } = ringing;
        let negotiated = match sdp::negotiate(&offer) {
            Ok(n) => n,
            Err(e) => {
                self.reject(call, 488, &format!("Not Acceptable Here ({e})"))
                    .await;
                return;
            }
        };
        let Some(media_key) = self.media().allocate() else {
            tracing::warn!("every media slot is taken: 486");
            self.reject(call, 486, "Busy Here (bridge full)").await;
            return;
        };
        let Some((rtp_port, rtp, rtcp)) = self.ports.bind_pair() else {
            self.media().release(media_key);
            tracing::warn!("no free RTP port in media.rtp_ports: 503");
            self.reject(call, 503, "Service Unavailable (no RTP port)")
                .await;
            return;
        };
        let now = SystemTime::now();
        let call_id = new_id("c-");
        let (conference_id, member_id) = {
            let mut registry = self.shared.registry.lock().expect("registry lock");
            let conference_id = match registry.room_conference(&room.number) {
                Some(c) => c.id.clone(),
                None => {
                    let id = registry
                        .create_conference(
                            &room.number,
                            Some(room.name.clone()),
                            Some(&room.number),
                            now,
                        )
                        .id
                        .clone();
                    tracing::info!(conference = %id, room = %room.number, "conference created");
                    id
                }
            };
            let joined = registry
                .add_member(&conference_id, &call_id, room.max_members, now)
                .map(|m| m.id.clone());
            (conference_id, joined)
        };
        let member_id = match member_id {
            Ok(id) => id,
            Err(e) => {
                self.media().release(media_key);
                self.ports.release(rtp_port);
                tracing::info!("cannot join: {e}: 486");
                self.reject(call, 486, "Busy Here").await;
                return;
            }
        };
        let Some(mix) = self.mixes.get_or_assign(&conference_id) else {
            self.media().release(media_key);
            self.ports.release(rtp_port);
            let _ = self
                .shared
                .registry
                .lock()
                .expect("registry lock")
                .complete_member(&member_id, now);
            self.reject(call, 486, "Busy Here (bridge full)").await;
            return;
        };
        let media_address = self
            .config
            .media
            .address
            .unwrap_or_else(|| local_address_towards(source.ip()));
        let held = offer.is_hold();
        let mut negotiated = negotiated;
        negotiated.direction = answer_direction(&offer);
        let remote_rtp = negotiated.remote_rtp_addr;
        tracing::info!(conference = %conference_id, member = %member_id, "member joined");
        let add = AddMember {
            key: media_key,
            mix,
            rtp,
            rtcp,
            remote_rtp,
            remote_rtcp: SocketAddr::new(remote_rtp.ip(), remote_rtp.port().wrapping_add(1)),
            codec: media_codec(negotiated.codec),
            telephone_event_pt: negotiated.telephone_event_pt,
            flags: MemberFlags {
                held,
                ..MemberFlags::default()
            },
        };
        if self
            .media()
            .send(Command::AddMember(Box::new(add)))
            .is_err()
        {
            self.media().release(media_key);
            self.ports.release(rtp_port);
            let _ = self
                .shared
                .registry
                .lock()
                .expect("registry lock")
                .complete_member(&member_id, now);
            self.release_mix_if_done(&conference_id);
            tracing::error!("media command queue full: 503");
            self.reject(call, 503, "Service Unavailable (media busy)")
                .await;
            return;
        }
        use rand::Rng;
        let record = Call {
            id: call_id,
            room: room.number.clone(),
            conference_id,
            member_id,
            media: media_key,
            mix,
            rtp_port,
            media_address,
            negotiated,
            session: sdp::SdpSession::new(rand::rng().random_range(1..u32::MAX as u64)),
            held,
        };
        let answer = sdp::build_answer(
            record.session,
            SocketAddr::new(record.media_address, record.rtp_port),
            &record.negotiated,
        );
        tracing::info!(call = %record.id, room = %record.room, %from, codec = ?record.negotiated.codec, "call answered");
        self.by_media.insert(media_key, call);
        self.calls.insert(call, record);
        self.sip.send(SipCommand::Accept(call, answer)).await;
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
        let member = call.member_id.clone();
        let media_key = call.media;
        let answer = sdp::build_answer(
            call.session,
            SocketAddr::new(call.media_address, call.rtp_port),
            &call.negotiated,
        );
        tracing::info!(call = %call.id, held, "re-offer");
        let flags = {
            let mut registry = self.shared.registry.lock().expect("registry lock");
            let (mute, deaf) = registry
                .member(&member)
                .map(|m| (m.mute, m.deaf))
                .unwrap_or_default();
            let _ = registry.set_member_flags(&member, mute, held, deaf);
            MemberFlags {
                muted: mute,
                deaf,
                held,
            }
        };
        if !held {
            let _ = self.media().send(Command::SetRemote {
                key: media_key,
                remote_rtp,
                remote_rtcp: SocketAddr::new(remote_rtp.ip(), remote_rtp.port().wrapping_add(1)),
            });
        }
        let _ = self.media().send(Command::SetFlags {
            key: media_key,
            flags,
        });
        self.sip.send(SipCommand::AcceptReoffer(key, answer)).await;
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
                        self.end_call(call, "RTP timeout");
                    }
                }
                Event::Talking { .. } => {}
                Event::QueueFull => tracing::warn!("media event queue overflowed"),
            }
        }
    }

    /// Removes a call everywhere: media slot, port, member record (and the
    /// conference when it was the last member). Idempotent.
    fn end_call(&mut self, key: CallKey, why: &str) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        self.by_media.remove(&call.media);
        let removed = self.media().send(Command::RemoveMember { key: call.media });
        if removed.is_err() {
            tracing::error!(call = %call.id, "media command queue full: slot not freed");
        } else {
            self.media().release(call.media);
        }
        self.ports.release(call.rtp_port);
        let completed = self
            .shared
            .registry
            .lock()
            .expect("registry lock")
            .complete_member(&call.member_id, SystemTime::now())
            .unwrap_or(false);
        if completed {
            tracing::info!(conference = %call.conference_id, "conference completed: last member left");
        }
        self.release_mix_if_done(&call.conference_id);
        tracing::info!(call = %call.id, member = %call.member_id, mix = call.mix, "call ended: {why}");
    }

    fn release_mix_if_done(&mut self, conference_id: &str) {
        let active = self
            .shared
            .registry
            .lock()
            .expect("registry lock")
            .conference(conference_id)
            .map(|c| c.active_members)
            .unwrap_or(0);
        if active == 0 {
            self.mixes.release(conference_id);
        }
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

/// The local address the kernel would use to reach `remote` (no packet is sent:
/// connecting a UDP socket only looks up the route).
pub fn local_address_towards(remote: IpAddr) -> IpAddr {
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
