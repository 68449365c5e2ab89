//! The switchboard's rules for audio: the API's audio requests (docs/api.md
//! "Audio"), the bridge's own prompts (the PIN, the count of people
//! present), the join and leave tones, and the `started` / `done` events.
//! The tables are [`Playback`](super::playback::Playback)'s; fetching and
//! speaking are the driver's ([`Action::Fetch`]): nothing here fetches,
//! decodes or runs a program.

use super::playback::{After, AudioRequest, AudioTarget, Notify, Owner};
use super::switchboard::Switchboard;
use super::CallError;
use super::{Action, NORMAL_CLEARING};
use crate::audio::{self, AudioError, Clip, Source};
use crate::conference::{ConferenceState, MemberState, RecordError, Registry};
use crate::events::CallbackEvent;
use crate::media::{ClipEnd, ClipTarget, Command};

impl Switchboard {
    /// `POST .../audio`: checks the target, then stops, or starts fetching or speaking.
    pub(super) fn audio_request(
        &mut self,
        records: &Registry,
        target: AudioTarget,
        request: AudioRequest,
        speech_missing: Option<String>,
    ) -> Result<(), CallError> {
        let owner = self.audio_owner(records, &target)?;
        let Some(source) = request.source else {
            // Whatever was asked before for this conference or call is
            // superseded: nothing is current for it now.
            self.playback.supersede(&owner);
            if let Some(target) = self.clip_target(&owner) {
                self.media(Command::StopClip { target });
            }
            return Ok(());
        };
        let notify = Notify {
            owner: owner.clone(),
            kind: source.event_kind(),
            tag: request.tag,
        };
        if let (Source::Speech { .. }, Some(missing)) = (&source, speech_missing) {
            tracing::error!("cannot speak: {missing}");
            // It still supersedes what was asked before.
            self.playback.supersede(&owner);
            self.audio_event(records, &notify, "done");
            return Err(CallError::SpeechUnavailable(missing));
        }
        let id = self
            .playback
            .request(owner, request.looped, Some(notify), After::Nothing);
        self.act(Action::Fetch { id, source });
        Ok(())
    }

    /// The conference or call a target's events and replacement rules belong to.
    fn audio_owner(&self, records: &Registry, target: &AudioTarget) -> Result<Owner, CallError> {
        match target {
            AudioTarget::Conference(id) => {
                let c = records
                    .conference(id)
                    .ok_or_else(|| RecordError::ConferenceNotFound(id.clone()))?;
                if c.state == ConferenceState::Completed {
                    return Err(RecordError::ConferenceCompleted.into());
                }
                Ok(Owner::Conference(id.clone()))
            }
            AudioTarget::Member(id) => {
                let m = records
                    .member(id)
                    .ok_or_else(|| RecordError::MemberNotFound(id.clone()))?;
                if m.state == MemberState::Completed {
                    return Err(RecordError::ConferenceCompleted.into());
                }
                Ok(Owner::Call(m.call_id.clone()))
            }
            AudioTarget::Call(id) => {
                records
                    .call(id)
                    .ok_or_else(|| RecordError::CallNotFound(id.clone()))?;
                if self.calls.answered_by_id(id).is_none() {
                    return Err(CallError::CallUnavailable(id.clone()));
                }
                Ok(Owner::Call(id.clone()))
            }
        }
    }

    /// Says `sentence` to one call in the default voice, for the bridge's own
    /// prompts (no events); then does `after`.
    pub(super) fn speak_to_call(&mut self, call_id: &str, sentence: &str, after: After) {
        let owner = Owner::Call(call_id.to_string());
        let id = self.playback.request(owner, false, None, after);
        let voice = audio::espeak_voice(None, None, None).expect("the default voice exists");
        let source = Source::Speech {
            sentence: sentence.to_string(),
            voice,
        };
        self.act(Action::Fetch { id, source });
    }

    /// Queues `started` or `done` for whoever a clip's events go to.
    pub(super) fn audio_event(
        &mut self,
        records: &Registry,
        notify: &Notify,
        status: &'static str,
    ) {
        let tag = notify.tag.clone();
        let callback = match &notify.owner {
            Owner::Conference(id) => {
                records
                    .conference(id)
                    .map(|c| CallbackEvent::ConferenceAudio {
                        conference: c.into_owned(),
                        kind: notify.kind,
                        status,
                        tag,
                    })
            }
            Owner::Call(id) => records.call(id).map(|call| CallbackEvent::CallAudio {
                call: call.into_owned(),
                kind: notify.kind,
                status,
                tag,
            }),
        };
        if let Some(callback) = callback {
            self.callback(callback);
        }
    }

    /// Where an owner's audio goes in the mixer now, if anywhere.
    pub(super) fn clip_target(&self, owner: &Owner) -> Option<ClipTarget> {
        match owner {
            Owner::Conference(id) => self.mixes.get(id).map(ClipTarget::Mix),
            Owner::Call(id) => {
                let (_, call) = self.calls.answered_by_id(id)?;
                call.media().map(ClipTarget::Member)
            }
        }
    }

    /// A clip is ready (or failed): play it unless it was superseded.
    pub(super) fn on_clip_ready(
        &mut self,
        records: &mut Registry,
        id: u64,
        result: Result<Clip, AudioError>,
    ) {
        let Some(ready) = self.playback.ready(id) else {
            return;
        };
        let pending = ready.pending;
        let outcome = match (result, self.clip_target(&pending.owner)) {
            (Err(e), _) => Err(format!("cannot play audio: {e}")),
            (Ok(_), _) if !ready.current => {
                Err("audio request replaced before it was ready".to_string())
            }
            (Ok(_), None) => Err("audio ready but nobody to play it to".to_string()),
            (Ok(clip), Some(target)) => Ok((clip, target)),
        };
        match outcome {
            Ok((clip, target)) => self.play_clip(
                records,
                target,
                clip,
                pending.looped,
                pending.notify,
                pending.after,
            ),
            Err(why) => {
                tracing::warn!("{why}");
                if let Some(notify) = &pending.notify {
                    self.audio_event(records, notify, "done");
                }
                self.after_clip(records, pending.after);
            }
        }
    }

    fn after_clip(&mut self, records: &mut Registry, after: After) {
        if let After::HangUp(key) = after {
            self.hang_up(records, key, NORMAL_CLEARING, "wrong PIN");
        }
    }

    /// Hands a clip to the mixer; `notify` gets `started` now and `done` at its end.
    fn play_clip(
        &mut self,
        records: &Registry,
        target: ClipTarget,
        clip: Clip,
        looped: bool,
        notify: Option<Notify>,
        after: After,
    ) {
        let (id, replaced) = self
            .playback
            .start(target, clip.clone(), notify.clone(), after);
        // The clip this one replaces is done now, so `done` precedes the new `started`.
        if let Some(replaced) = &replaced {
            self.audio_event(records, replaced, "done");
        }
        self.media(Command::PlayClip {
            target,
            clip,
            looped,
            id,
        });
        if let Some(notify) = &notify {
            self.audio_event(records, notify, "started");
        }
    }

    /// `Event::ClipDone`: the clip may be freed, and its owner is told.
    pub(super) fn on_clip_done(&mut self, records: &mut Registry, id: u64, end: ClipEnd) {
        let Some(playing) = self.playback.done(id) else {
            return;
        };
        tracing::debug!(clip = id, ?end, "clip done");
        if let Some(notify) = &playing.notify {
            self.audio_event(records, notify, "done");
        }
        self.after_clip(records, playing.after);
    }

    /// A member with `joinTone` joined, or one with `leavingTone` left: a
    /// short tone for everyone in the conference.
    pub(super) fn play_tone(&mut self, records: &Registry, conference_id: &str, tone: Clip) {
        if let Some(mix) = self.mixes.get(conference_id) {
            let target = ClipTarget::Mix(mix);
            self.play_clip(records, target, tone, false, None, After::Nothing);
        }
    }
}
