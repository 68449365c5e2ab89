//! The call driver: the one tokio task that owns the [`Switchboard`], feeds it
//! what arrives on the channels (SIP events, the media thread's events, the
//! API's requests, fetched clips) and its timers, and carries out the actions
//! it hands back. It owns the media handle, the reply channels and the clock;
//! it holds no rule of its own and no lock but the registry's, taken for one
//! input at a time so the API sees records and callbacks change together.
//! [`SwitchboardHandle`] is the API's side of it.

use super::outbound::{outbound_target, OutboundTarget};
use super::{
    Action, ApiRequest, AudioRequest, AudioTarget, ConferenceChange, Input, MemberChange, Now,
    OutgoingRequest, PortPool, Reply, RequestId, RtpPorts, Shared, Switchboard,
};
use super::{Busy, CallError};
use crate::audio::{AudioError, Clip, Library, Source};
use crate::conference::{CallState, MemberOptions};
use crate::config::Config;
use crate::media::{Command, MediaHandle};
use crate::net::wakeup::Wakeup;
use crate::sip::transport::SipHandle;
use crate::sip::SipEvent;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot, watch};

/// How often the driver drains the media plane's event queue if it cannot
/// wait for the media thread's ring (the eventfd could not join tokio's epoll).
const MEDIA_EVENT_POLL: Duration = Duration::from_millis(20);
/// How long shutdown waits for the BYEs it sent to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// While media commands wait in the backlog, it is offered to the media
/// thread this often (it takes a batch every 20 ms tick).
const MEDIA_BACKLOG_RETRY: Duration = Duration::from_millis(10);
/// Requests from the API waiting for the driver.
const API_QUEUE_LEN: usize = 256;

type Responder = oneshot::Sender<Result<Reply, CallError>>;

/// The API's way to the switchboard.
#[derive(Clone)]
pub struct SwitchboardHandle {
    requests: mpsc::Sender<(ApiRequest, Responder)>,
    /// For the one check a speech request needs before it is queued.
    library: Arc<Library>,
    /// `sip.outbound.proxy`, for outbound targets that are numbers.
    outbound_proxy: Option<String>,
}

impl std::fmt::Debug for SwitchboardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchboardHandle").finish_non_exhaustive()
    }
}

const STOPPING: CallError = CallError::Busy(Busy::Stopping);

impl SwitchboardHandle {
    async fn ask(&self, request: ApiRequest) -> Result<Reply, CallError> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send((request, reply)).await.is_err() {
            return Err(STOPPING);
        }
        answer.await.unwrap_or(Err(STOPPING))
    }

    async fn ask_done(&self, request: ApiRequest) -> Result<(), CallError> {
        self.ask(request).await.map(|_| ())
    }

    async fn ask_created(&self, request: ApiRequest) -> Result<String, CallError> {
        match self.ask(request).await? {
            Reply::Created(id) => Ok(id),
            Reply::Done => {
                tracing::error!("the switchboard made nothing for a request that makes something");
                Err(STOPPING)
            }
        }
    }

    /// Adds an answered call to a conference; returns the member id.
    pub async fn add_member(
        &self,
        conference_id: String,
        call_id: String,
        options: MemberOptions,
    ) -> Result<String, CallError> {
        self.ask_created(ApiRequest::AddMember {
            conference_id,
            call_id,
            options,
        })
        .await
    }

    pub async fn update_member(
        &self,
        member_id: String,
        change: MemberChange,
    ) -> Result<(), CallError> {
        self.ask_done(ApiRequest::UpdateMember { member_id, change })
            .await
    }

    pub async fn update_conference(
        &self,
        conference_id: String,
        change: ConferenceChange,
    ) -> Result<(), CallError> {
        self.ask_done(ApiRequest::UpdateConference {
            conference_id,
            change,
        })
        .await
    }

    /// Places an outbound call; returns its id at once (it rings afterwards).
    /// A `to` that cannot be called is refused before anything else is checked.
    pub async fn create_call(&self, call: OutgoingRequest) -> Result<String, CallError> {
        let target = outbound_target(&call.to, self.outbound_proxy.as_deref())
            .await
            .map_err(CallError::BadTarget)?;
        self.ask_created(ApiRequest::CreateCall { call, target })
            .await
    }

    pub async fn audio(&self, target: AudioTarget, request: AudioRequest) -> Result<(), CallError> {
        let speech_missing = match &request.source {
            Some(Source::Speech { .. }) => self
                .library
                .speaker
                .check_available()
                .err()
                .map(|e| e.to_string()),
            _ => None,
        };
        self.ask_done(ApiRequest::Audio {
            target,
            request,
            speech_missing,
        })
        .await
    }

    pub async fn set_call_state(&self, call_id: String, state: CallState) -> Result<(), CallError> {
        self.ask_done(ApiRequest::SetCallState { call_id, state })
            .await
    }
}

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

/// The task: the switchboard and everything it talks to.
pub struct Driver {
    switchboard: Switchboard,
    shared: Arc<Shared>,
    sip: SipHandle,
    media: MediaHandle,
    library: Arc<Library>,
    api: mpsc::Receiver<(ApiRequest, Responder)>,
    replies: HashMap<RequestId, Responder>,
    next_request: RequestId,
    clips_tx: mpsc::UnboundedSender<(u64, Result<Clip, AudioError>)>,
    clips: mpsc::UnboundedReceiver<(u64, Result<Clip, AudioError>)>,
    /// Cascade links' URIs, resolved.
    link_targets_tx: mpsc::UnboundedSender<(usize, Result<OutboundTarget, String>)>,
    link_targets: mpsc::UnboundedReceiver<(usize, Result<OutboundTarget, String>)>,
    outbound_proxy: Option<String>,
}

impl Driver {
    /// The driver and the handle the API uses to reach it.
    pub fn new(
        config: Arc<Config>,
        sip: SipHandle,
        media: MediaHandle,
        shared: Arc<Shared>,
    ) -> (Driver, SwitchboardHandle) {
        // With media.shared_port the media thread bound the one pair every call uses.
        let ports = match media.shared_port() {
            Some(port) => PortPool::shared(port),
            None => PortPool::new(config.media.bind_address, config.media.rtp_ports.clone()),
        }
        .advertising(config.media.address);
        let ports: Box<dyn RtpPorts> = Box::new(ports);
        let library = Arc::new(Library::new(&config.audio));
        let (api_tx, api) = mpsc::channel(API_QUEUE_LEN);
        let (clips_tx, clips) = mpsc::unbounded_channel();
        let (link_targets_tx, link_targets) = mpsc::unbounded_channel();
        let handle = SwitchboardHandle {
            requests: api_tx,
            library: library.clone(),
            outbound_proxy: config.sip.outbound.proxy.clone(),
        };
        let outbound_proxy = config.sip.outbound.proxy.clone();
        let driver = Driver {
            switchboard: Switchboard::new(config, ports, Now::current())
                .with_pin_stats(shared.pins.clone())
                .with_link_stats(shared.links.clone())
                .with_soundcard(shared.soundcard.clone()),
            shared,
            sip,
            media,
            library,
            api,
            replies: HashMap::new(),
            next_request: 0,
            clips_tx,
            clips,
            link_targets_tx,
            link_targets,
            outbound_proxy,
        };
        (driver, handle)
    }

    /// Runs until `shutdown` turns true, then hangs up every call and returns
    /// once they are gone (or the grace period is over).
    pub async fn run(
        mut self,
        mut sip_events: mpsc::Receiver<SipEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // SAFETY: the registration owns an `Arc` of the eventfd, which stays
        // open until the last `Arc` is dropped, so after the registration.
        let wakeup =
            unsafe { AsyncFd::register_with_interest(self.media.wakeup(), Interest::READABLE) }
                .map_err(|e| tracing::error!("polling media events every 20 ms: {e}"))
                .ok();
        loop {
            let timer = self.switchboard.poll_timeout();
            let deadline = timer.map(tokio::time::Instant::from_std);
            tokio::select! {
                event = sip_events.recv() => match event {
                    Some(event) => self.handle(Input::Sip(event)).await,
                    None => break,
                },
                () = media_rang(wakeup.as_ref()) => {
                    while let Some(event) = self.media.poll_event() {
                        self.handle(Input::Media(event)).await;
                    }
                }
                Some((call, reply)) = self.api.recv() => {
                    self.next_request += 1;
                    let request = self.next_request;
                    self.replies.insert(request, reply);
                    self.handle(Input::Api { request, call }).await;
                }
                Some((id, result)) = self.clips.recv() => {
                    self.handle(Input::Clip { id, result }).await;
                }
                Some((index, target)) = self.link_targets.recv() => {
                    self.handle(Input::LinkTarget { index, target }).await;
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.handle(Input::Timeout).await;
                }
                () = tokio::time::sleep(MEDIA_BACKLOG_RETRY), if self.media.has_backlog() => {
                    self.media.flush_backlog();
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        let answered = self.switchboard.answered_calls();
        self.handle(Input::Shutdown).await;
        // Let the BYE transactions finish so phones are told, within a bound.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut pending = answered;
        while pending > 0 {
            match tokio::time::timeout_at(deadline, sip_events.recv()).await {
                Ok(Some(SipEvent::Ended { .. })) => pending -= 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        // Commands still waiting go first (the removals of the calls just
        // hung up), within a bound in case the media thread stopped.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.media.flush_backlog() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(MEDIA_BACKLOG_RETRY).await;
        }
        let _ = self.media.send(Command::Shutdown);
    }

    /// Hands `input` to the switchboard and carries out what it asks, and
    /// what the answers to that ask in turn (an INVITE's key).
    async fn handle(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let actions = self.take_actions(input);
            for action in actions {
                match action {
                    Action::Sip(command) => {
                        self.sip.send(command).await;
                    }
                    Action::Invite { call_id, call } => {
                        let key = self.sip.invite(*call).await;
                        inputs.push_back(Input::Invited { call_id, key });
                    }
                    Action::Media(command) => {
                        if self.media.send(command).is_err() {
                            tracing::error!(
                                "the media thread takes no commands: its queue and backlog are full"
                            );
                        }
                    }
                    Action::Fetch { id, source } => {
                        let library = self.library.clone();
                        let clips = self.clips_tx.clone();
                        tokio::spawn(async move {
                            let result = library.clip(&source).await;
                            let _ = clips.send((id, result));
                        });
                    }
                    Action::ResolveLink { index, uri } => {
                        let proxy = self.outbound_proxy.clone();
                        let targets = self.link_targets_tx.clone();
                        tokio::spawn(async move {
                            let target = outbound_target(&uri, proxy.as_deref()).await;
                            let _ = targets.send((index, target));
                        });
                    }
                    Action::Reply { request, result } => {
                        if let Some(reply) = self.replies.remove(&request) {
                            let _ = reply.send(result);
                        }
                    }
                    // Queued under the registry's lock in `take_actions`.
                    Action::Callback(_) => {}
                }
            }
        }
    }

    /// One input under the registry's lock: the records change, the callbacks
    /// they cause are queued in the same order, and the other actions are
    /// returned to be carried out without the lock.
    fn take_actions(&mut self, input: Input) -> Vec<Action> {
        let mut registry = self.shared.registry();
        self.switchboard
            .handle(Now::current(), &mut registry, input);
        let mut actions = Vec::new();
        while let Some(action) = self.switchboard.poll_action() {
            match action {
                Action::Callback(callback) => callback.queue(&self.shared.events),
                other => actions.push(other),
            }
        }
        actions
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
