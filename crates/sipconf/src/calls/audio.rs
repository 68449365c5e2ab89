//! Audio requests of the API (files, speech, stop) and the tones of joining
//! and leaving members, carried from the records to the mixer and back as
//! `started` / `done` events.
//!
//! A request is fetched or spoken in a task of its own; when its clip is ready
//! the manager plays it unless a newer request (or a stop) for the same
//! conference or call came in meanwhile. Every clip the media plane holds is
//! also held here until its `ClipDone`, so the media thread never frees one.

use super::{Manager, Shared, NORMAL_CLEARING};
use crate::audio::{self, AudioError, Clip, Source};
use crate::conference::CallState;
use crate::conference::{ConferenceState, MemberState, RecordError};
use crate::media::{ClipEnd, ClipTarget, Command};
use crate::sip::transport::SipCommand;
use crate::sip::CallKey;

/// Where an audio request of the API plays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AudioTarget {
    /// Into the whole conference.
    Conference(String),
    /// To one member only; its call gets the events.
    Member(String),
    /// To one call (it must be in a conference, see the README).
    Call(String),
}

/// An audio request: `source` `None` stops what plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioRequest {
    pub source: Option<Source>,
    pub looped: bool,
    pub tag: Option<String>,
}

/// Who is told about a clip, and with which words.
#[derive(Debug, Clone)]
pub(super) struct Notify {
    /// A conference (`conference-playback`) or a call (`playback`).
    owner: Owner,
    kind: &'static str,
    tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Conference(String),
    Call(String),
}

/// A request being fetched or spoken.
#[derive(Debug)]
pub(super) struct Pending {
    owner: Owner,
    looped: bool,
    notify: Option<Notify>,
    after: After,
}

/// A clip the media plane plays; kept alive here until its `ClipDone`.
#[derive(Debug)]
pub(super) struct Playing {
    _clip: Clip,
    notify: Option<Notify>,
    after: After,
}

/// What happens once a clip is done (played, stopped, replaced or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    Nothing,
    /// The PIN prompt's "goodbye": hang the call up.
    HangUp(CallKey),
}

/// A fetched or spoken clip, back from its task.
#[derive(Debug)]
pub struct AudioReady {
    id: u64,
    result: Result<Clip, AudioError>,
}

impl Shared {
    fn audio_event(&self, notify: &Notify, status: &str) {
        let registry = self.registry();
        let tag = notify.tag.as_deref();
        match &notify.owner {
            Owner::Conference(id) => {
                if let Some(c) = registry.conference(id) {
                    self.events.conference_audio(&c, notify.kind, status, tag);
                }
            }
            Owner::Call(id) => {
                if let Some(call) = registry.call(id) {
                    self.events.call_audio(&call, notify.kind, status, tag);
                }
            }
        }
    }
}

impl Manager {
    fn next_clip_id(&mut self) -> u64 {
        self.audio.next_id += 1;
        self.audio.next_id
    }

    /// `POST .../audio`: checks the target, then stops, or starts fetching or speaking.
    pub(super) fn api_audio(
        &mut self,
        target: AudioTarget,
        request: AudioRequest,
    ) -> Result<(), RecordError> {
        let owner = self.audio_owner(&target)?;
        let id = self.next_clip_id();
        let Some(source) = request.source else {
            // Whatever was asked before for this conference or call is
            // superseded: nothing is current for it now.
            self.audio.latest.remove(&owner);
            if let Some(media_target) = self.clip_target(&owner) {
                if self
                    .media()
                    .send(Command::StopClip {
                        target: media_target,
                    })
                    .is_err()
                {
                    tracing::error!("media command queue full: clip not stopped");
                }
            }
            return Ok(());
        };
        let notify = Notify {
            owner: owner.clone(),
            kind: source.event_kind(),
            tag: request.tag,
        };
        if let Source::Speech { .. } = source {
            if let Err(e) = self.audio.library.speaker.check_available() {
                tracing::error!("cannot speak: {e}");
                // It still supersedes what was asked before.
                self.audio.latest.remove(&owner);
                self.shared.audio_event(&notify, "done");
                return Err(RecordError::SpeechUnavailable(e.to_string()));
            }
        }
        // Whatever was asked before for this conference or call is superseded.
        self.audio.latest.insert(owner.clone(), id);
        self.fetch_and_play(
            id,
            owner,
            source,
            request.looped,
            Some(notify),
            After::Nothing,
        );
        Ok(())
    }

    /// Says `sentence` to one call in the default voice, for the bridge's own
    /// prompts (no events); then does `after`.
    pub(super) fn speak_to_call(&mut self, call_id: &str, sentence: &str, after: After) {
        let id = self.next_clip_id();
        let owner = Owner::Call(call_id.to_string());
        self.audio.latest.insert(owner.clone(), id);
        let voice = audio::espeak_voice(None, None, None).expect("the default voice exists");
        let source = Source::Speech {
            sentence: sentence.to_string(),
            voice,
        };
        self.fetch_and_play(id, owner, source, false, None, after);
    }

    fn fetch_and_play(
        &mut self,
        id: u64,
        owner: Owner,
        source: Source,
        looped: bool,
        notify: Option<Notify>,
        after: After,
    ) {
        self.audio.pending.insert(
            id,
            Pending {
                owner,
                looped,
                notify,
                after,
            },
        );
        let library = self.audio.library.clone();
        let ready = self.audio.ready_tx.clone();
        tokio::spawn(async move {
            let result = library.clip(&source).await;
            let _ = ready.send(AudioReady { id, result });
        });
    }

    /// The conference or call a target's events and replacement rules belong to.
    fn audio_owner(&self, target: &AudioTarget) -> Result<Owner, RecordError> {
        let registry = self.shared.registry();
        match target {
            AudioTarget::Conference(id) => {
                let c = registry
                    .conference(id)
                    .ok_or_else(|| RecordError::ConferenceNotFound(id.clone()))?;
                if c.state == ConferenceState::Completed {
                    return Err(RecordError::ConferenceCompleted);
                }
                Ok(Owner::Conference(id.clone()))
            }
            AudioTarget::Member(id) => {
                let m = registry
                    .member(id)
                    .ok_or_else(|| RecordError::MemberNotFound(id.clone()))?;
                if m.state == MemberState::Completed {
                    return Err(RecordError::ConferenceCompleted);
                }
                Ok(Owner::Call(m.call_id.clone()))
            }
            AudioTarget::Call(id) => {
                registry
                    .call(id)
                    .ok_or_else(|| RecordError::CallNotFound(id.clone()))?;
                let live = self
                    .by_id
                    .get(id)
                    .is_some_and(|key| self.calls.contains_key(key));
                if !live {
                    return Err(RecordError::CallUnavailable(id.clone()));
                }
                Ok(Owner::Call(id.clone()))
            }
        }
    }

    /// Where the owner's audio goes in the mixer now, if anywhere.
    fn clip_target(&self, owner: &Owner) -> Option<ClipTarget> {
        match owner {
            Owner::Conference(id) => self
                .mixes
                .by_conference
                .get(id)
                .map(|&m| ClipTarget::Mix(m)),
            Owner::Call(id) => {
                let call = self.calls.get(self.by_id.get(id)?)?;
                let in_conference = call.joined.as_ref().map(|j| j.media);
                let in_lobby = call.lobby.as_ref().map(|l| l.media);
                in_conference.or(in_lobby).map(ClipTarget::Member)
            }
        }
    }

    /// A clip is ready (or failed): play it unless it was superseded.
    pub(super) async fn on_audio_ready(&mut self, ready: AudioReady) {
        let Some(pending) = self.audio.pending.remove(&ready.id) else {
            return;
        };
        let current = self.audio.latest.get(&pending.owner) == Some(&ready.id);
        if current {
            // Settled: an owner's entry lives only while its newest request
            // is pending, so the map does not grow with every call.
            self.audio.latest.remove(&pending.owner);
        }
        let outcome = match (ready.result, self.clip_target(&pending.owner)) {
            (Err(e), _) => Err(format!("cannot play audio: {e}")),
            (Ok(_), _) if !current => Err("audio request replaced before it was ready".into()),
            (Ok(_), None) => Err("audio ready but nobody to play it to".into()),
            (Ok(clip), Some(target)) => Ok((clip, target)),
        };
        match outcome {
            Ok((clip, target)) => {
                self.play_clip(target, clip, pending.looped, pending.notify, pending.after)
            }
            Err(why) => {
                tracing::warn!("{why}");
                if let Some(notify) = &pending.notify {
                    self.shared.audio_event(notify, "done");
                }
                self.after_clip(pending.after).await;
            }
        }
    }

    async fn after_clip(&mut self, after: After) {
        if let After::HangUp(key) = after {
            self.sip.send(SipCommand::Hangup(key)).await;
            self.finish(key, CallState::Completed, NORMAL_CLEARING, "wrong PIN");
        }
    }

    /// Hands a clip to the mixer; `notify` gets `started` now and `done` at its end.
    pub(super) fn play_clip(
        &mut self,
        target: ClipTarget,
        clip: Clip,
        looped: bool,
        notify: Option<Notify>,
        after: After,
    ) {
        let id = self.next_clip_id();
        // The clip this one replaces is done now, so `done` precedes the new `started`.
        if let Some(replaced) = self.audio.by_target.insert(target, id) {
            if let Some(notify) = self
                .audio
                .playing
                .get_mut(&replaced)
                .and_then(|p| p.notify.take())
            {
                self.shared.audio_event(&notify, "done");
            }
        }
        let command = Command::PlayClip {
            target,
            clip: clip.clone(),
            looped,
            id,
        };
        if self.media().send(command).is_err() {
            tracing::error!("media command queue full: clip not played");
            if let Some(notify) = &notify {
                self.shared.audio_event(notify, "done");
            }
            if let After::HangUp(key) = after {
                // Not now (this is not async): as soon as the manager can.
                let _ = self.due_tx.send((key, super::Due::HangUp));
            }
            return;
        }
        if let Some(notify) = &notify {
            self.shared.audio_event(notify, "started");
        }
        self.audio.playing.insert(
            id,
            Playing {
                _clip: clip,
                notify,
                after,
            },
        );
    }

    /// `Event::ClipDone`: the clip may be freed, and its owner is told.
    pub(super) async fn on_clip_done(&mut self, id: u64, end: ClipEnd) {
        let Some(playing) = self.audio.playing.remove(&id) else {
            return;
        };
        self.audio
            .by_target
            .retain(|_, playing_id| *playing_id != id);
        tracing::debug!(clip = id, ?end, "clip done");
        if let Some(notify) = &playing.notify {
            self.shared.audio_event(notify, "done");
        }
        self.after_clip(playing.after).await;
    }

    /// A member with `joinTone` joined, or one with `leavingTone` left: a
    /// short tone for everyone in the conference.
    pub(super) fn play_tone(&mut self, conference_id: &str, tone: Clip) {
        if let Some(&mix) = self.mixes.by_conference.get(conference_id) {
            self.play_clip(ClipTarget::Mix(mix), tone, false, None, After::Nothing);
        }
    }
}

/// The manager's audio state.
pub(super) struct AudioState {
    pub(super) library: std::sync::Arc<audio::Library>,
    next_id: u64,
    latest: std::collections::HashMap<Owner, u64>,
    pending: std::collections::HashMap<u64, Pending>,
    playing: std::collections::HashMap<u64, Playing>,
    /// The clip each mixer target plays now.
    by_target: std::collections::HashMap<ClipTarget, u64>,
    ready_tx: tokio::sync::mpsc::UnboundedSender<AudioReady>,
    pub(super) join_tone: Clip,
    pub(super) leaving_tone: Clip,
}

impl AudioState {
    pub(super) fn new(
        settings: &audio::AudioSettings,
    ) -> (AudioState, tokio::sync::mpsc::UnboundedReceiver<AudioReady>) {
        let (ready_tx, ready_rx) = tokio::sync::mpsc::unbounded_channel();
        let state = AudioState {
            library: std::sync::Arc::new(audio::Library::new(settings)),
            next_id: 0,
            latest: Default::default(),
            pending: Default::default(),
            playing: Default::default(),
            by_target: Default::default(),
            ready_tx,
            join_tone: audio::join_tone(),
            leaving_tone: audio::leaving_tone(),
        };
        (state, ready_rx)
    }
}
