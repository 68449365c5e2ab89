//! The bookkeeping of audio played into conferences and to single calls:
//! which request is the newest for each conference or call (a newer one, or a
//! stop, supersedes it while it is still being fetched or spoken), which clip
//! each mixer target plays, and who is told `started` and `done`.
//!
//! It owns those tables and nothing else: it decides, and the switchboard
//! sends the commands and callbacks. Every clip the media plane holds is held
//! here too until its `ClipDone`, so the media thread never frees one.

use crate::audio::{Clip, Source};
use crate::media::ClipTarget;
use crate::sip::CallKey;
use std::collections::HashMap;

/// Where an audio request of the API plays.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AudioTarget {
    /// Into the whole conference.
    Conference(String),
    /// To one member only; its call gets the events.
    Member(String),
    /// To one call (it must be in a conference or a lobby).
    Call(String),
}

/// An audio request: `source` `None` stops what plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioRequest {
    pub source: Option<Source>,
    pub looped: bool,
    pub tag: Option<String>,
}

/// Whose audio it is: the conference (`conference-playback` events) or the
/// call (`playback` events); a newer request of the same owner supersedes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Conference(String),
    Call(String),
}

/// Who is told about a clip, and with which words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub owner: Owner,
    /// `playback` or `speak`.
    pub kind: &'static str,
    pub tag: Option<String>,
}

/// What happens once a clip is done (played, stopped, replaced or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// The PIN lobby's "goodbye": hang the call up.
    HangUp(CallKey),
}

/// A request being fetched or spoken.
#[derive(Debug)]
pub struct Pending {
    pub owner: Owner,
    pub looped: bool,
    pub notify: Option<Notify>,
    pub after: After,
}

/// A clip the media plane plays.
#[derive(Debug)]
pub struct Playing {
    _clip: Clip,
    pub notify: Option<Notify>,
    pub after: After,
}

/// A fetched or spoken clip came back: the request, and whether it is still
/// its owner's newest.
#[derive(Debug)]
pub struct Ready {
    pub pending: Pending,
    pub current: bool,
}

/// The tables. Ids are shared by requests and clips, so an id names one thing.
#[derive(Debug, Default)]
pub struct Playback {
    next_id: u64,
    /// The newest request of each owner, only while it is pending: the table
    /// does not grow with every call ever played to.
    latest: HashMap<Owner, u64>,
    pending: HashMap<u64, Pending>,
    playing: HashMap<u64, Playing>,
    /// The clip each mixer target plays now.
    by_target: HashMap<ClipTarget, u64>,
}

impl Playback {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Whatever was asked before for `owner` is superseded: nothing is
    /// current for it now (a stop, or a request refused).
    pub fn supersede(&mut self, owner: &Owner) {
        self.latest.remove(owner);
    }

    /// A new request, newest for its owner; returns the id its clip comes back under.
    pub fn request(
        &mut self,
        owner: Owner,
        looped: bool,
        notify: Option<Notify>,
        after: After,
    ) -> u64 {
        let id = self.next_id();
        self.latest.insert(owner.clone(), id);
        self.pending.insert(
            id,
            Pending {
                owner,
                looped,
                notify,
                after,
            },
        );
        id
    }

    /// The request whose clip came back, if it is still known; it is settled
    /// now (no longer the owner's newest).
    pub fn ready(&mut self, id: u64) -> Option<Ready> {
        let pending = self.pending.remove(&id)?;
        let current = self.latest.get(&pending.owner) == Some(&id);
        if current {
            self.latest.remove(&pending.owner);
        }
        Some(Ready { pending, current })
    }

    /// A clip starts at `target`, replacing what played there: returns the
    /// clip's id and who must be told the replaced one is done (before this
    /// one's `started`).
    pub fn start(
        &mut self,
        target: ClipTarget,
        clip: Clip,
        notify: Option<Notify>,
        after: After,
    ) -> (u64, Option<Notify>) {
        let id = self.next_id();
        let replaced = self
            .by_target
            .insert(target, id)
            .and_then(|replaced| self.playing.get_mut(&replaced))
            .and_then(|playing| playing.notify.take());
        self.playing.insert(
            id,
            Playing {
                _clip: clip,
                notify,
                after,
            },
        );
        (id, replaced)
    }

    /// The media plane is done with clip `id`: it may be freed.
    pub fn done(&mut self, id: u64) -> Option<Playing> {
        let playing = self.playing.remove(&id)?;
        self.by_target.retain(|_, playing_id| *playing_id != id);
        Some(playing)
    }

    /// Requests waiting for their clip, and clips playing (for tests and metrics).
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize) {
        (self.pending.len(), self.playing.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip() -> Clip {
        vec![0i16; 160].into()
    }

    fn notify(owner: &Owner) -> Option<Notify> {
        Some(Notify {
            owner: owner.clone(),
            kind: "playback",
            tag: None,
        })
    }

    #[test]
    fn a_newer_request_makes_the_older_one_stale_when_it_comes_back() {
        let mut playback = Playback::default();
        let owner = Owner::Conference("conf-1".into());
        let first = playback.request(owner.clone(), false, notify(&owner), After::Nothing);
        let second = playback.request(owner.clone(), false, notify(&owner), After::Nothing);
        assert!(!playback.ready(first).expect("known").current);
        assert!(playback.ready(second).expect("known").current);
        assert!(playback.ready(second).is_none(), "settled once");
    }

    #[test]
    fn a_stop_supersedes_a_pending_request_and_the_table_empties() {
        let mut playback = Playback::default();
        let owner = Owner::Call("c-1".into());
        let id = playback.request(owner.clone(), false, None, After::Nothing);
        playback.supersede(&owner);
        assert!(!playback.ready(id).expect("known").current);
        assert!(playback.latest.is_empty() && playback.pending.is_empty());
    }

    #[test]
    fn a_clip_replacing_another_hands_back_the_old_ones_notify_once() {
        let mut playback = Playback::default();
        let owner = Owner::Conference("conf-1".into());
        let target = ClipTarget::Mix(3);
        let (old, replaced) = playback.start(target, clip(), notify(&owner), After::Nothing);
        assert_eq!(replaced, None);
        let (new, replaced) = playback.start(target, clip(), notify(&owner), After::Nothing);
        assert_eq!(replaced, notify(&owner));
        // The old clip's ClipDone still frees it, with nobody left to tell.
        assert!(playback.done(old).expect("playing").notify.is_none());
        assert!(playback.done(new).expect("playing").notify.is_some());
        assert_eq!(playback.counts(), (0, 0));
        assert!(playback.by_target.is_empty());
    }
}
